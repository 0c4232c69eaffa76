#include "cdc/pipeline_config.h"

#include <yaml-cpp/yaml.h>

#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>

namespace assistd::cdc {
namespace {

// Parsing with errors that say where.
class Parser {
  public:
    explicit Parser(std::string file) : file_(std::move(file)) {}

    Error fail(const YAML::Node& at, const std::string& key, const std::string& what) const {
        const auto mark = at.Mark();
        return make_error(ErrorCode::kInvalidArgument,
                          file_ + ":" + std::to_string(mark.line + 1) + ": '" + key + "': " + what);
    }

    // Refuses keys outside `allowed`.
    Status only(const YAML::Node& map, const std::string& where, const std::set<std::string>& allowed) const {
        if (!map.IsMap()) return fail(map, where, "must be a mapping");
        for (const auto& kv : map) {
            const std::string k = kv.first.as<std::string>();
            if (!allowed.count(k)) {
                std::string list;
                for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
                return fail(kv.first, where.empty() ? k : where + "." + k, "unknown key (known: " + list + ")");
            }
        }
        return {};
    }

    Result<std::string> text(const YAML::Node& n, const std::string& key) const {
        if (!n.IsScalar()) return fail(n, key, "must be a string");
        return n.as<std::string>();
    }

    Result<int> integer(const YAML::Node& n, const std::string& key, int lo, int hi) const {
        if (!n.IsScalar()) return fail(n, key, "must be a number");
        try {
            const long v = std::stol(n.as<std::string>());
            if (v < lo || v > hi) throw std::out_of_range("");
            return static_cast<int>(v);
        } catch (...) {
            return fail(n, key, "must be a whole number from " + std::to_string(lo) + " to " + std::to_string(hi));
        }
    }

    Result<bool> boolean(const YAML::Node& n, const std::string& key) const {
        const auto t = text(n, key);
        if (!t.ok()) return t.error();
        if (*t == "true") return true;
        if (*t == "false") return false;
        return fail(n, key, "must be true or false");
    }

    // A list of strings, or one string of comma-separated items (Flink's `tables: "a.b,a.c"`).
    Result<std::vector<std::string>> list(const YAML::Node& n, const std::string& key) const {
        std::vector<std::string> out;
        if (n.IsScalar()) {
            std::stringstream ss(n.as<std::string>());
            for (std::string item; std::getline(ss, item, ',');) {
                while (!item.empty() && item.front() == ' ') item.erase(item.begin());
                while (!item.empty() && item.back() == ' ') item.pop_back();
                if (item.empty()) return fail(n, key, "has an empty item");
                out.push_back(item);
            }
            return out;
        }
        if (!n.IsSequence()) return fail(n, key, "must be a list of strings");
        for (const auto& item : n) {
            if (!item.IsScalar() || item.as<std::string>().empty())
                return fail(item, key, "must be a list of non-empty strings");
            out.push_back(item.as<std::string>());
        }
        return out;
    }

    Result<SourceConfig> source(const YAML::Node& n, const std::string& where) const {
        if (auto st = only(n, where,
                           {"type", "name", "hostname", "host", "hosts", "port", "database", "database-name", "username",
                            "password", "password-env", "password-file", "tables", "include_tables", "slot.name",
                            "publication.name", "decoding.plugin.name", "scan.startup.mode",
                            "scan.startup.specific-offset", "server-id", "server-time-zone"});
            !st.ok())
            return st.error();
        SourceConfig s;
        const auto type = n["type"];
        if (!type) return fail(n, where + ".type", "is required (postgres or mysql)");
        auto t = text(type, where + ".type");
        if (!t.ok()) return t.error();
        if (*t == "postgres" || *t == "postgresql") {
            s.type = SourceConfig::Type::kPostgres;
        } else if (*t == "mysql" || *t == "mariadb") {
            s.type = SourceConfig::Type::kMySql;
        } else {
            return fail(type, where + ".type", "must be postgres or mysql, not '" + *t + "'");
        }
        for (const char* k : {"hostname", "host"})
            if (n[k]) {
                auto v = text(n[k], where + "." + k);
                if (!v.ok()) return v.error();
                s.host = *v;
            }
        if (n["hosts"]) {
            auto hosts = list(n["hosts"], where + ".hosts");
            if (!hosts.ok()) return hosts.error();
            if (hosts->size() != 1)
                return fail(n["hosts"], where + ".hosts", "must name one server (a replica set's others are not used)");
            const std::string& h = hosts->front();
            const size_t colon = h.rfind(':');
            s.host = colon == std::string::npos ? h : h.substr(0, colon);
            if (colon != std::string::npos) {
                try {
                    s.port = std::stoi(h.substr(colon + 1));
                } catch (...) {
                    return fail(n["hosts"], where + ".hosts", "'" + h + "' is not host:port");
                }
            }
        }
        if (n["port"]) {
            auto p = integer(n["port"], where + ".port", 1, 65535);
            if (!p.ok()) return p.error();
            s.port = *p;
        }
        if (s.port == 0) s.port = s.type == SourceConfig::Type::kPostgres ? 5432 : 3306;
        for (const char* k : {"database", "database-name"})
            if (n[k]) {
                auto v = text(n[k], where + "." + k);
                if (!v.ok()) return v.error();
                s.database = *v;
            }
        if (n["username"]) {
            auto v = text(n["username"], where + ".username");
            if (!v.ok()) return v.error();
            s.username = *v;
        }
        int secrets = 0;
        if (n["password"]) {
            ++secrets;
            auto v = text(n["password"], where + ".password");
            if (!v.ok()) return v.error();
            s.password = *v;
        }
        if (n["password-env"]) {
            ++secrets;
            auto v = text(n["password-env"], where + ".password-env");
            if (!v.ok()) return v.error();
            const char* value = std::getenv(v->c_str());
            if (!value) return fail(n["password-env"], where + ".password-env", "the variable " + *v + " is not set");
            s.password = value;
        }
        if (n["password-file"]) {
            ++secrets;
            auto v = text(n["password-file"], where + ".password-file");
            if (!v.ok()) return v.error();
            std::ifstream f(*v);
            if (!f) return fail(n["password-file"], where + ".password-file", "cannot read " + *v);
            std::getline(f, s.password);
        }
        if (secrets > 1)
            return fail(n, where, "give one of password, password-env and password-file");
        for (const char* k : {"tables", "include_tables"})
            if (n[k]) {
                auto v = list(n[k], where + "." + k);
                if (!v.ok()) return v.error();
                for (auto& table : *v) s.tables.push_back(table);
            }
        if (n["slot.name"]) {
            auto v = text(n["slot.name"], where + ".slot.name");
            if (!v.ok()) return v.error();
            s.slot_name = *v;
        }
        if (n["publication.name"]) {
            auto v = text(n["publication.name"], where + ".publication.name");
            if (!v.ok()) return v.error();
            s.publication = *v;
        }
        if (n["decoding.plugin.name"]) {
            auto v = text(n["decoding.plugin.name"], where + ".decoding.plugin.name");
            if (!v.ok()) return v.error();
            if (*v != "pgoutput") return fail(n["decoding.plugin.name"], where + ".decoding.plugin.name", "only pgoutput is read");
        }
        if (n["scan.startup.mode"]) {
            auto v = text(n["scan.startup.mode"], where + ".scan.startup.mode");
            if (!v.ok()) return v.error();
            if (*v == "initial")
                s.startup = SourceConfig::StartupMode::kInitial;
            else if (*v == "latest-offset")
                s.startup = SourceConfig::StartupMode::kLatestOffset;
            else if (*v == "specific-offset")
                s.startup = SourceConfig::StartupMode::kSpecificOffset;
            else
                return fail(n["scan.startup.mode"], where + ".scan.startup.mode",
                            "must be initial, latest-offset or specific-offset, not '" + *v + "'");
        }
        if (n["scan.startup.specific-offset"]) {
            auto v = text(n["scan.startup.specific-offset"], where + ".scan.startup.specific-offset");
            if (!v.ok()) return v.error();
            s.startup_offset = *v;
        }
        if (s.startup == SourceConfig::StartupMode::kSpecificOffset && s.startup_offset.empty())
            return fail(n, where + ".scan.startup.specific-offset", "is required with scan.startup.mode specific-offset");
        for (const char* k : {"server-id", "server-time-zone"})
            if (n[k] && s.type == SourceConfig::Type::kPostgres)
                return fail(n[k], where + "." + k, "is for mysql sources");
        for (const char* k : {"slot.name", "publication.name", "decoding.plugin.name"})
            if (n[k] && s.type == SourceConfig::Type::kMySql)
                return fail(n[k], where + "." + k, "is for postgres sources");
        if (s.type == SourceConfig::Type::kMySql)
            return fail(type, where + ".type",
                        "the mysql/mariadb binlog source is not in this build yet (issue 15: PostgreSQL first); use postgres");
        if (s.database.empty()) return fail(n, where + ".database", "is required");
        if (s.username.empty()) return fail(n, where + ".username", "is required");
        if (s.slot_name.empty()) s.slot_name = "assistd";
        if (s.publication.empty()) s.publication = "assistd";
        if (n["name"]) {
            auto v = text(n["name"], where + ".name");
            if (!v.ok()) return v.error();
            s.name = *v;
        } else {
            s.name = std::string(s.type == SourceConfig::Type::kPostgres ? "postgres" : "mysql") + "@" + s.host + ":" +
                     std::to_string(s.port) + "/" + s.database;
        }
        return s;
    }

    Status graph(const YAML::Node& n, PipelineConfig& c) const {
        if (auto st = only(n, "graph", {"nodes", "edges", "foreign-keys", "map-all"}); !st.ok()) return st;
        if (n["foreign-keys"]) {
            auto v = boolean(n["foreign-keys"], "graph.foreign-keys");
            if (!v.ok()) return v.error();
            c.foreign_keys = *v;
        }
        if (n["map-all"]) {
            auto v = boolean(n["map-all"], "graph.map-all");
            if (!v.ok()) return v.error();
            c.map_all = *v;
        }
        if (const auto nodes = n["nodes"]) {
            if (!nodes.IsSequence()) return fail(nodes, "graph.nodes", "must be a list");
            for (size_t i = 0; i < nodes.size(); ++i) {
                const std::string where = "graph.nodes[" + std::to_string(i) + "]";
                const auto& m = nodes[i];
                if (auto st = only(m, where, {"table", "label", "key", "properties"}); !st.ok()) return st;
                TableMapping t;
                if (!m["table"]) return fail(m, where + ".table", "is required");
                auto table = text(m["table"], where + ".table");
                if (!table.ok()) return table.error();
                t.table = *table;
                if (m["label"]) {
                    auto v = text(m["label"], where + ".label");
                    if (!v.ok()) return v.error();
                    t.label = *v;
                }
                if (m["key"]) {
                    auto v = list(m["key"], where + ".key");
                    if (!v.ok()) return v.error();
                    t.key = *v;
                }
                if (m["properties"]) {
                    auto v = list(m["properties"], where + ".properties");
                    if (!v.ok()) return v.error();
                    t.properties = *v;
                }
                for (const auto& other : c.tables)
                    if (other.table == t.table) return fail(m["table"], where + ".table", "maps " + t.table + " twice");
                c.tables.push_back(std::move(t));
            }
        }
        if (const auto edges = n["edges"]) {
            if (!edges.IsSequence()) return fail(edges, "graph.edges", "must be a list");
            for (size_t i = 0; i < edges.size(); ++i) {
                const std::string where = "graph.edges[" + std::to_string(i) + "]";
                const auto& m = edges[i];
                if (auto st = only(m, where, {"table", "columns", "references", "type"}); !st.ok()) return st;
                for (const char* k : {"table", "columns", "references"})
                    if (!m[k]) return fail(m, where + "." + k, "is required");
                auto table = text(m["table"], where + ".table");
                if (!table.ok()) return table.error();
                ForeignKey fk;
                auto cols = list(m["columns"], where + ".columns");
                if (!cols.ok()) return cols.error();
                fk.columns = *cols;
                auto ref = text(m["references"], where + ".references");
                if (!ref.ok()) return ref.error();
                fk.ref_table = *ref;
                if (m["type"]) {
                    auto v = text(m["type"], where + ".type");
                    if (!v.ok()) return v.error();
                    fk.type = *v;
                }
                TableMapping* owner = nullptr;
                for (auto& t : c.tables)
                    if (t.table == *table) owner = &t;
                if (!owner) {
                    c.tables.push_back(TableMapping{*table, "", {}, {}, {}});
                    owner = &c.tables.back();
                }
                owner->edges.push_back(std::move(fk));
            }
        }
        return {};
    }

    Result<PipelineConfig> parse(const YAML::Node& root) const {
        if (!root.IsMap()) return fail(root, "(top)", "the file must be a mapping of source/sources, sink, graph, pipeline");
        if (auto st = only(root, "", {"source", "sources", "sink", "sinks", "route", "transform", "graph", "pipeline"});
            !st.ok())
            return st.error();
        PipelineConfig c;
        if (root["source"] && root["sources"]) return fail(root["sources"], "sources", "give source or sources, not both");
        if (const auto one = root["source"]) {
            auto s = source(one, "source");
            if (!s.ok()) return s.error();
            c.sources.push_back(std::move(*s));
        }
        if (const auto many = root["sources"]) {
            if (!many.IsSequence() || many.size() == 0) return fail(many, "sources", "must be a non-empty list");
            for (size_t i = 0; i < many.size(); ++i) {
                auto s = source(many[i], "sources[" + std::to_string(i) + "]");
                if (!s.ok()) return s.error();
                c.sources.push_back(std::move(*s));
            }
        }
        if (c.sources.empty()) return fail(root, "source", "is required");
        std::set<std::string> names;
        for (const auto& s : c.sources)
            if (!names.insert(s.name).second)
                return fail(root, "sources", "two sources are named " + s.name + ": give each a name");
        for (const char* k : {"sink", "sinks"}) {
            if (!root[k]) continue;
            const YAML::Node list = root[k].IsSequence() ? root[k] : YAML::Node();
            std::vector<YAML::Node> sinks;
            if (root[k].IsSequence())
                for (const auto& s : list) sinks.push_back(s);
            else
                sinks.push_back(root[k]);
            for (const auto& s : sinks) {
                if (auto st = only(s, k, {"type", "uri", "batch_size", "batch-size", "name"}); !st.ok()) return st.error();
                auto type = s["type"] ? text(s["type"], std::string(k) + ".type") : Result<std::string>(std::string());
                if (!type.ok()) return type.error();
                if (*type != "graph")
                    return fail(s, std::string(k) + ".type",
                                "'" + *type + "' is not a sink of this build: the graph is assistd's own (type: graph); "
                                "the neo4j Cypher sink is not built yet");
            }
        }
        for (const char* k : {"route", "transform"})
            if (root[k])
                return fail(root[k], k, "is not supported yet: map tables with the graph section");
        if (const auto g = root["graph"]) {
            if (auto st = graph(g, c); !st.ok()) return st.error();
        }
        if (const auto p = root["pipeline"]) {
            if (auto st = only(p, "pipeline", {"name", "parallelism", "schema.change.behavior", "state-dir"}); !st.ok())
                return st.error();
            if (p["name"]) {
                auto v = text(p["name"], "pipeline.name");
                if (!v.ok()) return v.error();
                c.name = *v;
            }
            if (p["parallelism"]) {
                auto v = integer(p["parallelism"], "pipeline.parallelism", 1, 1);
                if (!v.ok()) return v.error();
            }
            if (p["schema.change.behavior"]) {
                auto v = text(p["schema.change.behavior"], "pipeline.schema.change.behavior");
                if (!v.ok()) return v.error();
                if (*v != "lenient" && *v != "ignore" && *v != "exception")
                    return fail(p["schema.change.behavior"], "pipeline.schema.change.behavior",
                                "must be lenient, ignore or exception");
                c.schema_change = *v;
            }
            if (p["state-dir"]) {
                auto v = text(p["state-dir"], "pipeline.state-dir");
                if (!v.ok()) return v.error();
                c.state_dir = *v;
            }
        }
        return c;
    }

  private:
    std::string file_;
};

}  // namespace

Result<PipelineConfig> parse_pipeline_config(const std::string& text, const std::string& file) {
    YAML::Node root;
    try {
        root = YAML::Load(text);
    } catch (const YAML::Exception& e) {
        return make_error(ErrorCode::kInvalidArgument,
                          file + ":" + std::to_string(e.mark.line + 1) + ": not valid YAML: " + e.msg);
    }
    try {
        return Parser(file).parse(root);
    } catch (const YAML::Exception& e) {
        return make_error(ErrorCode::kInvalidArgument, file + ":" + std::to_string(e.mark.line + 1) + ": " + e.msg);
    }
}

Result<PipelineConfig> load_pipeline_config(const std::string& path) {
    std::ifstream f(path);
    if (!f) return make_error(ErrorCode::kNotFound, "cannot read the pipeline file " + path);
    std::stringstream ss;
    ss << f.rdbuf();
    return parse_pipeline_config(ss.str(), path);
}

}  // namespace assistd::cdc
