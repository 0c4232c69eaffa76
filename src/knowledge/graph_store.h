#pragma once
// The graph on RocksDB. A GraphBatch is one synced WriteBatch together with
// its source position, so after a crash the graph and the position agree:
// a pipeline resumes from position() with nothing lost or applied twice.
// Reads go through a Reader on a RocksDB snapshot, so a retrieval never sees
// half a transaction. Layout (keys, fields joined by '\0'):
//   "n" label key                  -> the node's properties
//   "o" from-label from-key type to-label to-key -> the edge's properties
//   "i" to-label to-key type from-label from-key -> "" (the in-adjacency)
//   "p" source                     -> its position
//   "x" name label key             -> "" (the name index, names.h)
// Deleting a node deletes its out-edges (they came from its row); edges of
// other nodes pointing at it stay (their rows still refer to it) and readers
// skip targets that do not exist.
#include <cstdint>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "knowledge/graph.h"

namespace rocksdb {
class DB;
class Snapshot;
}  // namespace rocksdb

namespace assistd::knowledge {

class GraphStore {
  public:
    static Result<std::unique_ptr<GraphStore>> open(const std::string& path);
    ~GraphStore();
    GraphStore(const GraphStore&) = delete;
    GraphStore& operator=(const GraphStore&) = delete;

    // Applies the batch and records its position, atomically and durably.
    Status apply(const GraphBatch& batch);
    // The position a source reached (nullopt: never applied anything).
    std::optional<std::string> position(std::string_view source) const;
    // Waits until `reached` holds for the sources' positions (checked now and
    // after each applied batch), at most `timeout_ms`; whether it held.
    bool wait_for(const std::function<bool(const std::map<std::string, std::string>&)>& reached, int64_t timeout_ms);

    // A consistent view of the graph at one moment.
    class Reader {
      public:
        ~Reader();
        Reader(Reader&&) noexcept;
        Reader& operator=(Reader&&) noexcept;
        Reader(const Reader&) = delete;
        std::optional<Node> node(const NodeRef& ref) const;
        // At most `limit` edges, in key order.
        std::vector<Edge> out_edges(const NodeRef& ref, size_t limit = SIZE_MAX) const;
        std::vector<Edge> in_edges(const NodeRef& ref, size_t limit = SIZE_MAX) const;  // properties not filled
        // Every node of a label (or of every label when empty), in key order.
        std::vector<Node> nodes(std::string_view label = {}) const;
        std::vector<Edge> edges() const;  // every edge, with its properties
        std::optional<std::string> position(std::string_view source) const;
        std::map<std::string, std::string> positions() const;  // every source's
        // The nodes with this name (name_of form) as their key or a property's value.
        std::vector<NodeRef> named(std::string_view name) const;

      private:
        friend class GraphStore;
        Reader(rocksdb::DB* db, const rocksdb::Snapshot* snapshot);
        rocksdb::DB* db_;
        const rocksdb::Snapshot* snapshot_;
    };
    Reader read() const;

  private:
    explicit GraphStore(rocksdb::DB* db);
    std::unique_ptr<rocksdb::DB> db_;
    std::mutex apply_mu_;
    std::mutex applied_mu_;
    std::condition_variable applied_;
    uint64_t applied_count_ = 0;
};

// The property encoding, public for tests: count, then name and value, each length-prefixed.
std::string encode_properties(const Properties& properties);
std::optional<Properties> decode_properties(std::string_view bytes);

}  // namespace assistd::knowledge
