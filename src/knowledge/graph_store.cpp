#include "knowledge/graph_store.h"

#include "knowledge/names.h"

#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/write_batch.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <set>

namespace assistd::knowledge {
namespace {

constexpr char kSep = '\0';

Error io_error(const rocksdb::Status& s, const std::string& what) {
    return make_error(ErrorCode::kIo, "graph store: " + what + ": " + s.ToString());
}

void put_length(std::string& out, size_t n) {
    // LEB128: short strings cost one byte.
    do {
        unsigned char b = n & 0x7f;
        n >>= 7;
        if (n) b |= 0x80;
        out.push_back(static_cast<char>(b));
    } while (n);
}

bool get_length(std::string_view& in, size_t& n) {
    n = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (in.empty()) return false;
        const auto b = static_cast<unsigned char>(in.front());
        in.remove_prefix(1);
        n |= static_cast<size_t>(b & 0x7f) << shift;
        if (!(b & 0x80)) return true;
    }
    return false;
}

bool get_string(std::string_view& in, std::string& out) {
    size_t n = 0;
    if (!get_length(in, n) || n > in.size()) return false;
    out.assign(in.substr(0, n));
    in.remove_prefix(n);
    return true;
}

std::string node_key(const NodeRef& n) {
    std::string k = "n";
    k += n.label;
    k += kSep;
    k += n.key;
    return k;
}

// "o"/"i" a-label a-key type b-label b-key
std::string adjacency_key(char kind, const NodeRef& a, const std::string& type, const NodeRef& b) {
    std::string k(1, kind);
    for (const std::string* part : {&a.label, &a.key, &type, &b.label, &b.key}) {
        k += *part;
        k += kSep;
    }
    k.pop_back();
    return k;
}

std::string adjacency_prefix(char kind, const NodeRef& a) {
    std::string k(1, kind);
    k += a.label;
    k += kSep;
    k += a.key;
    k += kSep;
    return k;
}

std::string position_key(std::string_view source) {
    std::string k = "p";
    k += source;
    return k;
}

// "x" name label key: the name index.
std::string name_key(const std::string& name, const NodeRef& ref) {
    std::string k = "x";
    k += name;
    k += kSep;
    k += ref.label;
    k += kSep;
    k += ref.key;
    return k;
}

// The names a node is found by: its key's and its properties'.
std::set<std::string> names_of(const NodeRef& ref, const Properties* props) {
    std::set<std::string> out;
    if (auto n = name_of(ref.key); !n.empty()) out.insert(std::move(n));
    if (props)
        for (const auto& [k, v] : *props)
            if (auto n = name_of(v); !n.empty()) out.insert(std::move(n));
    return out;
}

// The five fields of an adjacency key (after its kind byte).
bool split_adjacency(std::string_view key, NodeRef& a, std::string& type, NodeRef& b) {
    key.remove_prefix(1);
    std::string* parts[] = {&a.label, &a.key, &type, &b.label, &b.key};
    for (size_t i = 0; i < 5; ++i) {
        const size_t end = i == 4 ? key.size() : key.find(kSep);
        if (end == std::string_view::npos) return false;
        parts[i]->assign(key.substr(0, end));
        key.remove_prefix(i == 4 ? end : end + 1);
    }
    return true;
}

// Keys starting with `prefix`, in order, at most `limit` of them.
template <typename Fn>
void scan(rocksdb::DB* db, const rocksdb::Snapshot* snapshot, const std::string& prefix, Fn&& fn,
          size_t limit = SIZE_MAX) {
    rocksdb::ReadOptions ro;
    ro.snapshot = snapshot;
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(ro));
    size_t n = 0;
    for (it->Seek(prefix); n < limit && it->Valid() && it->key().starts_with(prefix); it->Next(), ++n)
        fn(std::string_view(it->key().data(), it->key().size()), std::string_view(it->value().data(), it->value().size()));
}

// What a batch has made of the nodes it touches: each node's properties and
// out-edges are read from the database the first time the batch touches it
// (one Get, one Seek), then kept here as the batch changes them, so every
// change sees the ones before it at the cost of a map lookup. The writes go
// to a plain WriteBatch as the changes come.
class BatchState {
  public:
    explicit BatchState(rocksdb::DB* db) : db_(db), it_(db->NewIterator(rocksdb::ReadOptions())) {}

    using OutEdges = std::map<std::string, std::map<NodeRef, Properties>>;  // type -> target -> properties

    std::optional<Properties>& node(const NodeRef& ref) {
        auto it = nodes_.find(ref);
        if (it != nodes_.end()) return it->second;
        std::optional<Properties> props;
        std::string value;
        if (db_->Get(rocksdb::ReadOptions(), node_key(ref), &value).ok()) props = decode_properties(value);
        return nodes_.emplace(ref, std::move(props)).first->second;
    }

    OutEdges& out(const NodeRef& ref) {
        auto found = out_.find(ref);
        if (found != out_.end()) return found->second;
        OutEdges edges;
        const std::string prefix = adjacency_prefix('o', ref);
        for (it_->Seek(prefix); it_->Valid() && it_->key().starts_with(prefix); it_->Next()) {
            NodeRef a, b;
            std::string type;
            if (!split_adjacency(std::string_view(it_->key().data(), it_->key().size()), a, type, b)) continue;
            edges[type][b] = decode_properties(std::string_view(it_->value().data(), it_->value().size()))
                                 .value_or(Properties{});
        }
        return out_.emplace(ref, std::move(edges)).first->second;
    }

    // The node's properties become `props` (nullopt: deleted), its names with them.
    void set_node(const NodeRef& ref, std::optional<Properties> props) {
        auto& current = node(ref);
        const auto before = current ? names_of(ref, &*current) : std::set<std::string>{};
        const auto after = props ? names_of(ref, &*props) : std::set<std::string>{};
        for (const auto& n : before)
            if (!after.count(n)) wb.Delete(name_key(n, ref));
        for (const auto& n : after)
            if (!before.count(n)) wb.Put(name_key(n, ref), "");
        if (props)
            wb.Put(node_key(ref), encode_properties(*props));
        else
            wb.Delete(node_key(ref));
        current = std::move(props);
    }

    void put_edge(const NodeRef& from, const std::string& type, const NodeRef& to, const Properties& props) {
        wb.Put(adjacency_key('o', from, type, to), encode_properties(props));
        wb.Put(adjacency_key('i', to, type, from), "");
        out(from)[type][to] = props;
    }
    void delete_edge(const NodeRef& from, const std::string& type, const NodeRef& to) {
        wb.Delete(adjacency_key('o', from, type, to));
        wb.Delete(adjacency_key('i', to, type, from));
        auto& edges = out(from);
        if (auto t = edges.find(type); t != edges.end()) t->second.erase(to);
    }
    void delete_node(const NodeRef& ref) {
        set_node(ref, std::nullopt);
        auto& edges = out(ref);
        for (const auto& [type, targets] : edges)
            for (const auto& [to, props] : targets) {
                wb.Delete(adjacency_key('o', ref, type, to));
                wb.Delete(adjacency_key('i', to, type, ref));
            }
        edges.clear();
    }
    // Every node of a label as the batch leaves it so far.
    std::vector<NodeRef> label_nodes(const std::string& label) {
        std::set<NodeRef> out;
        std::string prefix = "n";
        prefix += label;
        prefix += kSep;
        for (it_->Seek(prefix); it_->Valid() && it_->key().starts_with(prefix); it_->Next())
            out.insert({label, it_->key().ToString().substr(prefix.size())});
        for (const auto& [ref, props] : nodes_) {
            if (ref.label != label) continue;
            if (props)
                out.insert(ref);
            else
                out.erase(ref);
        }
        return {out.begin(), out.end()};
    }

    rocksdb::WriteBatch wb;

  private:
    rocksdb::DB* db_;
    std::unique_ptr<rocksdb::Iterator> it_;
    std::map<NodeRef, std::optional<Properties>> nodes_;
    std::map<NodeRef, OutEdges> out_;
};

}  // namespace

std::string encode_properties(const Properties& properties) {
    std::string out;
    put_length(out, properties.size());
    for (const auto& [name, value] : properties) {
        put_length(out, name.size());
        out += name;
        put_length(out, value.size());
        out += value;
    }
    return out;
}

std::optional<Properties> decode_properties(std::string_view bytes) {
    size_t n = 0;
    if (!get_length(bytes, n) || n > bytes.size()) return std::nullopt;
    Properties out;
    for (size_t i = 0; i < n; ++i) {
        std::string name, value;
        if (!get_string(bytes, name) || !get_string(bytes, value)) return std::nullopt;
        out.emplace(std::move(name), std::move(value));
    }
    if (!bytes.empty()) return std::nullopt;
    return out;
}

Result<std::unique_ptr<GraphStore>> GraphStore::open(const std::string& path) {
    rocksdb::Options opts;
    opts.create_if_missing = true;
    rocksdb::DB* db = nullptr;
    const auto s = rocksdb::DB::Open(opts, path, &db);
    if (!s.ok()) return io_error(s, "cannot open " + path);
    return std::unique_ptr<GraphStore>(new GraphStore(db));
}

GraphStore::GraphStore(rocksdb::DB* db) : db_(db) {}
GraphStore::~GraphStore() = default;

Status GraphStore::apply(const GraphBatch& batch) {
    std::lock_guard lock(apply_mu_);  // one batch at a time: each reads what the previous wrote
    BatchState state(db_.get());
    for (const auto& c : batch.changes) {
        switch (c.kind) {
            case GraphChange::Kind::kUpsertNode: {
                Properties props = c.node.properties;
                if (!c.keep.empty())
                    if (const auto& old = state.node(c.node.ref))
                        for (const auto& name : c.keep)
                            if (auto it = old->find(name); it != old->end()) props[name] = it->second;
                state.set_node(c.node.ref, std::move(props));
                break;
            }
            case GraphChange::Kind::kDeleteNode:
                state.delete_node(c.node.ref);
                break;
            case GraphChange::Kind::kSetEdges: {
                std::vector<NodeRef> stale;
                for (const auto& [to, props] : state.out(c.edge.from)[c.edge.type])
                    if (std::find(c.targets.begin(), c.targets.end(), to) == c.targets.end()) stale.push_back(to);
                for (const auto& to : stale) state.delete_edge(c.edge.from, c.edge.type, to);
                for (const auto& to : c.targets) state.put_edge(c.edge.from, c.edge.type, to, c.edge.properties);
                break;
            }
            case GraphChange::Kind::kUpsertEdge:
                state.put_edge(c.edge.from, c.edge.type, c.edge.to, c.edge.properties);
                break;
            case GraphChange::Kind::kDeleteEdge:
                state.delete_edge(c.edge.from, c.edge.type, c.edge.to);
                break;
            case GraphChange::Kind::kDeleteLabel:
                for (const auto& ref : state.label_nodes(c.node.ref.label)) state.delete_node(ref);
                break;
        }
    }
    rocksdb::WriteBatch& wb = state.wb;
    if (!batch.source.empty()) wb.Put(position_key(batch.source), batch.position);
    rocksdb::WriteOptions wo;
    wo.sync = true;
    const auto s = db_->Write(wo, &wb);
    if (!s.ok()) return io_error(s, "applying a transaction at " + batch.position);
    {
        std::lock_guard lk(applied_mu_);
        ++applied_count_;
    }
    applied_.notify_all();
    return {};
}

bool GraphStore::wait_for(const std::function<bool(const std::map<std::string, std::string>&)>& reached,
                          int64_t timeout_ms) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    for (;;) {
        uint64_t seen;
        {
            std::lock_guard lk(applied_mu_);
            seen = applied_count_;
        }
        if (reached(read().positions())) return true;
        std::unique_lock lk(applied_mu_);
        if (!applied_.wait_until(lk, until, [&] { return applied_count_ != seen; })) return false;
    }
}

std::optional<std::string> GraphStore::position(std::string_view source) const {
    std::string value;
    const auto s = db_->Get(rocksdb::ReadOptions(), position_key(source), &value);
    if (!s.ok()) return std::nullopt;
    return value;
}

GraphStore::Reader GraphStore::read() const {
    return Reader(db_.get(), db_->GetSnapshot());
}

GraphStore::Reader::Reader(rocksdb::DB* db, const rocksdb::Snapshot* snapshot) : db_(db), snapshot_(snapshot) {}

GraphStore::Reader::Reader(Reader&& o) noexcept : db_(o.db_), snapshot_(o.snapshot_) {
    o.snapshot_ = nullptr;
}

GraphStore::Reader& GraphStore::Reader::operator=(Reader&& o) noexcept {
    std::swap(db_, o.db_);
    std::swap(snapshot_, o.snapshot_);
    return *this;
}

GraphStore::Reader::~Reader() {
    if (snapshot_) db_->ReleaseSnapshot(snapshot_);
}

std::optional<Node> GraphStore::Reader::node(const NodeRef& ref) const {
    rocksdb::ReadOptions ro;
    ro.snapshot = snapshot_;
    std::string value;
    if (!db_->Get(ro, node_key(ref), &value).ok()) return std::nullopt;
    auto props = decode_properties(value);
    if (!props) return std::nullopt;
    return Node{ref, std::move(*props)};
}

std::vector<Edge> GraphStore::Reader::out_edges(const NodeRef& ref, size_t limit) const {
    std::vector<Edge> out;
    scan(
        db_, snapshot_, adjacency_prefix('o', ref),
        [&](std::string_view key, std::string_view value) {
            Edge e;
            if (!split_adjacency(key, e.from, e.type, e.to)) return;
            if (auto p = decode_properties(value)) e.properties = std::move(*p);
            out.push_back(std::move(e));
        },
        limit);
    return out;
}

std::vector<Edge> GraphStore::Reader::in_edges(const NodeRef& ref, size_t limit) const {
    std::vector<Edge> out;
    scan(
        db_, snapshot_, adjacency_prefix('i', ref),
        [&](std::string_view key, std::string_view) {
            Edge e;
            if (split_adjacency(key, e.to, e.type, e.from)) out.push_back(std::move(e));
        },
        limit);
    return out;
}

std::vector<Node> GraphStore::Reader::nodes(std::string_view label) const {
    std::vector<Node> out;
    std::string prefix = "n";
    if (!label.empty()) {
        prefix += label;
        prefix += kSep;
    }
    scan(db_, snapshot_, prefix, [&](std::string_view key, std::string_view value) {
        key.remove_prefix(1);
        const size_t sep = key.find(kSep);
        if (sep == std::string_view::npos) return;
        Node n;
        n.ref.label.assign(key.substr(0, sep));
        n.ref.key.assign(key.substr(sep + 1));
        if (auto p = decode_properties(value)) n.properties = std::move(*p);
        out.push_back(std::move(n));
    });
    return out;
}

std::vector<Edge> GraphStore::Reader::edges() const {
    std::vector<Edge> out;
    scan(db_, snapshot_, "o", [&](std::string_view key, std::string_view value) {
        Edge e;
        if (!split_adjacency(key, e.from, e.type, e.to)) return;
        if (auto p = decode_properties(value)) e.properties = std::move(*p);
        out.push_back(std::move(e));
    });
    return out;
}

std::vector<NodeRef> GraphStore::Reader::named(std::string_view name) const {
    std::vector<NodeRef> out;
    std::string prefix = "x";
    prefix += name;
    prefix += kSep;
    scan(db_, snapshot_, prefix, [&](std::string_view key, std::string_view) {
        key.remove_prefix(prefix.size());
        const size_t sep = key.find(kSep);
        if (sep != std::string_view::npos) out.push_back({std::string(key.substr(0, sep)), std::string(key.substr(sep + 1))});
    });
    return out;
}

std::map<std::string, std::string> GraphStore::Reader::positions() const {
    std::map<std::string, std::string> out;
    scan(db_, snapshot_, "p", [&](std::string_view key, std::string_view value) {
        out.emplace(std::string(key.substr(1)), std::string(value));
    });
    return out;
}

std::optional<std::string> GraphStore::Reader::position(std::string_view source) const {
    rocksdb::ReadOptions ro;
    ro.snapshot = snapshot_;
    std::string value;
    if (!db_->Get(ro, position_key(source), &value).ok()) return std::nullopt;
    return value;
}

}  // namespace assistd::knowledge
