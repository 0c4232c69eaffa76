#pragma once
// The SessionStore of one node of a fleet, for the server: a read hears from
// enough nodes first that it sees every acknowledged change (and tells a new
// id from one this node lacks; Replicator::read), a change to a session not
// held here reads it first, and a change returns once it is durable here and
// acknowledged by sync_acks peers. Everything else is the local store's.
#include "cluster/driver.h"
#include "state/session_store.h"

namespace assistd::cluster {

class ReplicatedSessionStore final : public state::SessionStore {
  public:
    ReplicatedSessionStore(state::SessionStore& local, ReplicationDriver& driver,
                           int64_t ack_timeout_ms = 2000, int64_t fetch_timeout_ms = 1000)
        : local_(local),
          driver_(driver),
          ack_timeout_ms_(ack_timeout_ms),
          fetch_timeout_ms_(fetch_timeout_ms) {}

    Status create(std::string_view id, std::string_view tenant, std::string_view title) override;
    Result<state::Session> get(std::string_view id) override;
    Result<state::Message> append_message(std::string_view id,
                                          const state::MessageInput& message) override;
    Status update_metadata(std::string_view id, std::string_view key,
                           std::string_view value) override;
    Status add_usage(std::string_view id, int64_t prompt_tokens,
                     int64_t completion_tokens) override;
    Status set_summary(std::string_view id, std::string_view summary) override;
    Status remove(std::string_view id) override;
    // This node's sessions only: listing the fleet is not a per-node question.
    std::vector<std::string> list_by_tenant(std::string_view tenant) override {
        return local_.list_by_tenant(tenant);
    }

    Result<state::crdt::VersionVector> version(std::string_view id) override {
        return local_.version(id);
    }
    Result<std::string> changes_since(std::string_view id,
                                      const state::crdt::VersionVector& since) override {
        return local_.changes_since(id, since);
    }
    Status apply(std::string_view id, std::string_view delta) override {
        return local_.apply(id, delta);
    }
    std::vector<Status> apply_all(
        const std::vector<std::pair<std::string_view, std::string_view>>& items) override {
        return local_.apply_all(items);
    }
    bool deleted(std::string_view id) override { return local_.deleted(id); }
    std::vector<state::SessionVersion> list_versions() override { return local_.list_versions(); }
    uint64_t subscribe(Subscriber subscriber) override {
        return local_.subscribe(std::move(subscriber));
    }
    void unsubscribe(uint64_t subscription) override { local_.unsubscribe(subscription); }

  private:
    // Reads the session when it is not here; ok when it is here now (or was).
    Status ensure_local(std::string_view id);
    // Replicator::read; ok also when the session is absent or deleted (the local store says so).
    Status read(std::string_view id);
    // Waits for the replicas' acknowledgements of what is here now.
    Status replicated(std::string_view id);
    template <typename Fn>
    auto with_session(std::string_view id, Fn&& change) -> decltype(change());

    state::SessionStore& local_;
    ReplicationDriver& driver_;
    int64_t ack_timeout_ms_;
    int64_t fetch_timeout_ms_;
};

}  // namespace assistd::cluster
