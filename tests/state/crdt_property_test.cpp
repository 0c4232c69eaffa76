// Property test: 3 to 5 replicas edit every container type at random (with
// concurrent edits at one list position and one map key) and exchange deltas
// in random order with duplication and loss-then-retransmit. Every replica
// must converge to byte-identical encodings. Each case is replayable from its
// seed: ASSISTD_CRDT_SEED=<n> runs only that case; ASSISTD_CRDT_CASES sets the count.
#include <gtest/gtest.h>

#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "state/crdt/document.h"

namespace assistd::state::crdt {
namespace {

class Simulation {
public:
    explicit Simulation(uint64_t seed) : rng_(seed) {
        const size_t n = 3 + rng_() % 3;
        for (size_t i = 0; i < n; ++i) {
            // Replica ids from the seed; small ones often, so lamport ties hit both orders.
            ReplicaId id;
            do {
                id = rng_() % 2 ? 1 + rng_() % 16 : rng_();
            } while (id == 0 || std::find(ids_.begin(), ids_.end(), id) != ids_.end());
            ids_.push_back(id);
            docs_.push_back(std::make_unique<Document>(id));
            seen_.emplace_back(n);
        }
        Document& d0 = *docs_[0];
        (void)d0.map_set_object(d0.root(), "m", ObjType::kMap);
        (void)d0.map_set_object(d0.root(), "l", ObjType::kList);
        (void)d0.map_set_object(d0.root(), "t", ObjType::kText);
        (void)d0.map_set_object(d0.root(), "c", ObjType::kCounter);
        (void)d0.map_set_object(d0.root(), "r", ObjType::kRegister);
        const std::string init = d0.changes_since({});
        for (size_t i = 1; i < n; ++i) EXPECT_TRUE(docs_[i]->apply(init).ok());
        // Sometimes a container is created concurrently by several replicas: a conflict on "x".
        if (rng_() % 2) {
            for (size_t i = 0; i < n; ++i) {
                if (rng_() % 2) (void)docs_[i]->map_set_object(docs_[i]->root(), "x", ObjType::kText);
            }
        }
    }

    size_t size() const { return docs_.size(); }
    Document& doc(size_t i) { return *docs_[i]; }

    void random_step() {
        const uint64_t roll = rng_() % 100;
        if (roll < 55) local_edit(rng_() % docs_.size());
        else if (roll < 80) send();
        else if (roll < 97) deliver();
        else compact(rng_() % docs_.size());
    }

    // Deliver what is in flight (some lost), then anti-entropy until everyone has everything.
    void settle() {
        while (!net_.empty()) deliver();
        for (int round = 0; round < 3; ++round) {
            for (size_t a = 0; a < docs_.size(); ++a) {
                for (size_t b = 0; b < docs_.size(); ++b) {
                    if (a == b) continue;
                    ASSERT_TRUE(docs_[b]->apply(docs_[a]->changes_since(docs_[b]->version())).ok());
                }
            }
        }
        for (size_t a = 0; a < docs_.size(); ++a) {
            for (size_t b = 0; b < docs_.size(); ++b) docs_[b]->observe_peer_version(ids_[a], docs_[a]->version());
        }
    }

    void compact(size_t i) { docs_[i]->compact(docs_[i]->stable_version(ids_)); }

private:
    struct Message {
        size_t to;
        size_t from;
        VersionVector sender_version;  // piggy-backed acknowledgement
        std::string delta;
    };

    ObjId get(Document& d, const char* key) {
        auto v = d.map_get(d.root(), key);
        return v.ok() ? v->obj : ObjId{};
    }

    std::string random_text() {
        static const char* const kPieces[] = {"a", "b", "c", "é", "😀", " ", "\n", "z"};
        std::string s;
        const size_t n = 1 + rng_() % 4;
        for (size_t i = 0; i < n; ++i) s += kPieces[rng_() % 8];
        return s;
    }

    Value random_scalar() {
        switch (rng_() % 5) {
            case 0: return Value::null();
            case 1: return Value::boolean(rng_() % 2);
            case 2: return Value::integer(static_cast<int64_t>(rng_() % 1000) - 500);
            case 3: return Value::real(static_cast<double>(rng_() % 1000) / 8);
            default: return Value::string(random_text());
        }
    }

    // A position biased towards the ends and one "hot" spot, so concurrent
    // inserts at one position are common.
    uint64_t random_pos(uint64_t len) {
        switch (rng_() % 4) {
            case 0: return 0;
            case 1: return len;
            case 2: return std::min<uint64_t>(len, 2);
            default: return rng_() % (len + 1);
        }
    }

    void local_edit(size_t i) {
        Document& d = *docs_[i];
        switch (rng_() % 7) {
            case 0: {  // map: one hot key and a few others
                const ObjId m = get(d, "m");
                const std::string key = rng_() % 2 ? "hot" : std::string(1, static_cast<char>('a' + rng_() % 3));
                if (rng_() % 4 == 0) ASSERT_TRUE(d.map_delete(m, key).ok());
                else if (rng_() % 5 == 0) {
                    auto nested = d.map_set_object(m, key, ObjType::kMap);
                    ASSERT_TRUE(nested.ok());
                    ASSERT_TRUE(d.map_set(*nested, "k", random_scalar()).ok());
                } else ASSERT_TRUE(d.map_set(m, key, random_scalar()).ok());
                break;
            }
            case 1:
            case 2: {  // list
                const ObjId l = get(d, "l");
                const uint64_t len = d.length(l).value();
                if (len > 0 && rng_() % 3 == 0) {
                    const uint64_t pos = rng_() % len;
                    ASSERT_TRUE(d.list_delete(l, pos, 1 + rng_() % std::min<uint64_t>(3, len - pos)).ok());
                } else if (rng_() % 6 == 0) {
                    auto m = d.list_insert_object(l, random_pos(len), ObjType::kMap);
                    ASSERT_TRUE(m.ok());
                    ASSERT_TRUE(d.map_set(*m, "v", random_scalar()).ok());
                } else {
                    const uint64_t pos = random_pos(len);
                    const int run = 1 + static_cast<int>(rng_() % 3);  // typed runs
                    for (int k = 0; k < run; ++k) ASSERT_TRUE(d.list_insert(l, pos + k, random_scalar()).ok());
                }
                break;
            }
            case 3:
            case 4: {  // text (and sometimes the conflicted "x")
                const ObjId t = get(d, rng_() % 5 == 0 && d.map_get(d.root(), "x").ok() ? "x" : "t");
                const uint64_t len = d.length(t).value();
                if (len > 0 && rng_() % 3 == 0) {
                    const uint64_t pos = rng_() % len;
                    ASSERT_TRUE(d.text_delete(t, pos, 1 + rng_() % std::min<uint64_t>(4, len - pos)).ok());
                } else {
                    uint64_t pos = random_pos(len);
                    const int run = 1 + static_cast<int>(rng_() % 3);
                    for (int k = 0; k < run; ++k) {
                        const std::string s = random_text();
                        ASSERT_TRUE(d.text_insert(t, pos, s).ok());
                        pos = std::min<uint64_t>(pos + utf8_len(s), d.length(t).value());
                    }
                }
                break;
            }
            case 5: ASSERT_TRUE(d.counter_add(get(d, "c"), static_cast<int64_t>(rng_() % 11) - 5).ok()); break;
            default: ASSERT_TRUE(d.register_set(get(d, "r"), random_scalar()).ok()); break;
        }
    }

    static uint64_t utf8_len(const std::string& s) {
        uint64_t n = 0;
        for (char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
        return n;
    }

    void send() {
        const size_t from = rng_() % docs_.size();
        size_t to = rng_() % docs_.size();
        if (to == from) to = (to + 1) % docs_.size();
        // From what the sender believes the receiver has: sometimes stale, sometimes nothing.
        VersionVector since = rng_() % 4 == 0 ? VersionVector{} : seen_[from][to];
        net_.push_back(Message{to, from, docs_[from]->version(), docs_[from]->changes_since(since)});
        if (rng_() % 5 == 0) net_.push_back(net_.back());  // duplicated in flight
        seen_[from][to] = docs_[to]->version();
    }

    void deliver() {
        if (net_.empty()) return;
        const size_t k = rng_() % net_.size();
        Message m = std::move(net_[k]);
        net_.erase(net_.begin() + static_cast<ptrdiff_t>(k));
        if (rng_() % 6 == 0) return;  // lost; anti-entropy retransmits it later
        ASSERT_TRUE(docs_[m.to]->apply(m.delta).ok());
        docs_[m.to]->observe_peer_version(ids_[m.from], m.sender_version);
    }

    std::mt19937_64 rng_;
    std::vector<ReplicaId> ids_;
    std::vector<std::unique_ptr<Document>> docs_;
    std::vector<std::vector<VersionVector>> seen_;
    std::vector<Message> net_;
};

uint64_t env_or(const char* name, uint64_t fallback) {
    const char* v = std::getenv(name);
    return v ? std::strtoull(v, nullptr, 10) : fallback;
}

void run_case(uint64_t seed) {
    Simulation sim(seed);
    std::mt19937_64 rng(seed ^ 0xABCDEF);
    const int steps = 20 + static_cast<int>(rng() % 80);
    for (int s = 0; s < steps; ++s) {
        sim.random_step();
        if (::testing::Test::HasFatalFailure()) return;
    }
    sim.settle();
    if (::testing::Test::HasFatalFailure()) return;
    Document& d0 = sim.doc(0);
    const std::string full = d0.encode();
    const std::string json = d0.to_json();
    for (size_t i = 0; i < sim.size(); ++i) {
        ASSERT_EQ(sim.doc(i).pending_changes(), 0u);
        ASSERT_EQ(sim.doc(i).to_json(), json) << "replica " << i;
        ASSERT_EQ(sim.doc(i).encode(), full) << "replica " << i;
    }
    // Once everyone has seen everything, every tombstone goes, identically
    // everywhere (before that, replicas may have compacted different amounts).
    for (size_t i = 0; i < sim.size(); ++i) sim.compact(i);
    const std::string state = d0.encode_state();
    for (size_t i = 0; i < sim.size(); ++i) {
        ASSERT_EQ(sim.doc(i).encode_state(), state) << "replica " << i << " after compaction";
        ASSERT_EQ(sim.doc(i).tombstone_count(), 0u) << "replica " << i;
        ASSERT_EQ(sim.doc(i).to_json(), json);
    }
    // A snapshot decodes to the same document.
    auto copy = Document::decode(full, 999);
    ASSERT_TRUE(copy.ok()) << copy.error().message;
    ASSERT_EQ(copy->to_json(), json);
    copy->compact(copy->stable_version({999}));
    ASSERT_EQ(copy->encode_state(), state);
}

TEST(CrdtProperty, ReplicasConvergeToIdenticalEncodings) {
    const char* only = std::getenv("ASSISTD_CRDT_SEED");
    const uint64_t first = only ? std::strtoull(only, nullptr, 10) : 0;
    const uint64_t cases = only ? 1 : env_or("ASSISTD_CRDT_CASES", 3000);
    for (uint64_t seed = first; seed < first + cases; ++seed) {
        run_case(seed);
        if (::testing::Test::HasFailure()) {
            FAIL() << "failing seed " << seed << " (replay: ASSISTD_CRDT_SEED=" << seed << ")";
        }
    }
}

}  // namespace
}  // namespace assistd::state::crdt
