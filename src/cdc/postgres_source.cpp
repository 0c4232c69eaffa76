#include "cdc/postgres_source.h"

#include <libpq-fe.h>
#include <poll.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <map>

#include "cdc/pgoutput.h"

namespace assistd::cdc {
namespace {

using pg::Lsn;

struct ConnCloser {
    void operator()(PGconn* c) const { PQfinish(c); }
};
using Conn = std::unique_ptr<PGconn, ConnCloser>;
struct ResultCloser {
    void operator()(PGresult* r) const { PQclear(r); }
};
using PgResult = std::unique_ptr<PGresult, ResultCloser>;

// conninfo values are quoted: 'it''s' -> 'it\'s'.
std::string quoted(const std::string& v) {
    std::string out = "'";
    for (char c : v) {
        if (c == '\'' || c == '\\') out += '\\';
        out += c;
    }
    return out + "'";
}

std::string identifier(PGconn* c, const std::string& name) {
    char* e = PQescapeIdentifier(c, name.data(), name.size());
    std::string out = e ? e : "\"\"";
    PQfreemem(e);
    return out;
}

std::string literal(PGconn* c, const std::string& value) {
    char* e = PQescapeLiteral(c, value.data(), value.size());
    std::string out = e ? e : "''";
    PQfreemem(e);
    return out;
}

// "schema.table" -> (schema, table); a bare name is in public.
std::pair<std::string, std::string> split_table(const std::string& t) {
    const size_t dot = t.find('.');
    if (dot == std::string::npos) return {"public", t};
    return {t.substr(0, dot), t.substr(dot + 1)};
}

int64_t now_pg_us() {
    const int64_t unix_us =
        std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch())
            .count();
    return unix_us - pg::kPgEpochUnixUs;
}

}  // namespace

struct PostgresSource::Impl {
    SourceConfig config;
    std::string where;  // "postgres at host:port/db" for messages
    Conn sql;           // catalog queries, publication, snapshot
    Conn repl;          // the replication stream
    std::map<uint32_t, pg::Relation> relations;
    std::map<std::string, std::vector<std::string>> primary_keys;  // "schema.table" -> key columns
    std::vector<std::string> tables;                               // published, "schema.table"
    std::optional<SourceTransaction> snapshot;                     // handed out first
    std::optional<SourceTransaction> current;                      // between Begin and Commit
    Lsn resume = 0;       // transactions committed before this are in the graph already
    Lsn confirmed = 0;    // durably applied: reported as flushed
    Lsn received = 0;     // the stream's end so far
    std::chrono::steady_clock::time_point last_status{};

    Error fail(const std::string& what, PGconn* c = nullptr) const {
        std::string m = where + ": " + what;
        if (c) {
            std::string e = PQerrorMessage(c);
            while (!e.empty() && (e.back() == '\n' || e.back() == ' ')) e.pop_back();
            if (!e.empty()) m += ": " + e;
        }
        return make_error(ErrorCode::kIo, m);
    }

    Result<PgResult> query(PGconn* c, const std::string& q, ExecStatusType want = PGRES_TUPLES_OK) const {
        PgResult r(PQexec(c, q.c_str()));
        if (!r || PQresultStatus(r.get()) != want) {
            std::string e = r ? PQresultErrorMessage(r.get()) : PQerrorMessage(c);
            while (!e.empty() && (e.back() == '\n' || e.back() == ' ')) e.pop_back();
            return make_error(ErrorCode::kIo, where + ": " + e + " (in: " + q.substr(0, 120) + ")");
        }
        return r;
    }

    Result<Conn> connect(bool replication) const {
        std::string info = "host=" + quoted(config.host) + " port=" + std::to_string(config.port) +
                           " dbname=" + quoted(config.database) + " user=" + quoted(config.username) +
                           " connect_timeout=5 application_name=assistd";
        if (!config.password.empty()) info += " password=" + quoted(config.password);
        if (replication) info += " replication=database";
        Conn c(PQconnectdb(info.c_str()));
        if (!c || PQstatus(c.get()) != CONNECTION_OK) return fail("cannot connect", c.get());
        return c;
    }

    Status check_server() {
        auto r = query(sql.get(), "SHOW wal_level");
        if (!r.ok()) return r.error();
        const std::string level = PQgetvalue(r->get(), 0, 0);
        if (level != "logical")
            return make_error(ErrorCode::kInvalidArgument,
                              where + ": wal_level is '" + level +
                                  "'; logical replication needs wal_level = logical (postgresql.conf) and a restart");
        return {};
    }

    Status ensure_publication() {
        auto exists = query(sql.get(), "SELECT 1 FROM pg_publication WHERE pubname = " + literal(sql.get(), config.publication));
        if (!exists.ok()) return exists.error();
        if (PQntuples(exists->get()) == 0) {
            std::string q = "CREATE PUBLICATION " + identifier(sql.get(), config.publication);
            if (config.tables.empty()) {
                q += " FOR ALL TABLES";
            } else {
                q += " FOR TABLE ";
                for (size_t i = 0; i < config.tables.size(); ++i) {
                    const auto [schema, table] = split_table(config.tables[i]);
                    q += (i ? ", " : "") + identifier(sql.get(), schema) + "." + identifier(sql.get(), table);
                }
            }
            if (auto r = query(sql.get(), q, PGRES_COMMAND_OK); !r.ok()) return r.error();
            spdlog::info("cdc: {}: created publication {}", where, config.publication);
        }
        auto listed = query(sql.get(), "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = " +
                                           literal(sql.get(), config.publication) + " ORDER BY 1, 2");
        if (!listed.ok()) return listed.error();
        for (int i = 0; i < PQntuples(listed->get()); ++i)
            tables.push_back(std::string(PQgetvalue(listed->get(), i, 0)) + "." + PQgetvalue(listed->get(), i, 1));
        for (const auto& t : config.tables) {
            const auto [schema, table] = split_table(t);
            if (std::find(tables.begin(), tables.end(), schema + "." + table) == tables.end())
                return make_error(ErrorCode::kInvalidArgument,
                                  where + ": table " + schema + "." + table + " is not in publication " +
                                      config.publication + " (does it exist? is the publication another's?)");
        }
        return {};
    }

    Status load_keys(std::vector<std::pair<std::string, ForeignKey>>& foreign_keys) {
        auto pk = query(sql.get(),
                        "SELECT n.nspname, c.relname, a.attname FROM pg_index i "
                        "JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
                        "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY(i.indkey) "
                        "WHERE i.indisprimary ORDER BY 1, 2, array_position(i.indkey::int2[], a.attnum)");
        if (!pk.ok()) return pk.error();
        for (int i = 0; i < PQntuples(pk->get()); ++i)
            primary_keys[std::string(PQgetvalue(pk->get(), i, 0)) + "." + PQgetvalue(pk->get(), i, 1)].push_back(
                PQgetvalue(pk->get(), i, 2));
        for (const auto& t : tables)
            if (!primary_keys.count(t))
                return make_error(ErrorCode::kInvalidArgument,
                                  where + ": table " + t +
                                      " has no primary key: a row could not be told apart from its twin; add one, or "
                                      "leave the table out of the publication");
        auto fk = query(sql.get(),
                        "SELECT n.nspname || '.' || c.relname, a.attname, rn.nspname || '.' || rc.relname, ra.attname, "
                        "con.conname FROM pg_constraint con "
                        "JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
                        "JOIN pg_class rc ON rc.oid = con.confrelid JOIN pg_namespace rn ON rn.oid = rc.relnamespace "
                        "CROSS JOIN LATERAL unnest(con.conkey, con.confkey) WITH ORDINALITY AS k(col, refcol, ord) "
                        "JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.col "
                        "JOIN pg_attribute ra ON ra.attrelid = con.confrelid AND ra.attnum = k.refcol "
                        "WHERE con.contype = 'f' ORDER BY 1, con.conname, k.ord");
        if (!fk.ok()) return fk.error();
        std::map<std::pair<std::string, std::string>, std::pair<std::string, ForeignKey>> by_name;
        for (int i = 0; i < PQntuples(fk->get()); ++i) {
            const std::string table = PQgetvalue(fk->get(), i, 0);
            auto& [owner, key] = by_name[{table, PQgetvalue(fk->get(), i, 4)}];
            owner = table;
            key.columns.push_back(PQgetvalue(fk->get(), i, 1));
            key.ref_table = PQgetvalue(fk->get(), i, 2);
            key.ref_columns.push_back(PQgetvalue(fk->get(), i, 3));
        }
        for (auto& [name, entry] : by_name) {
            auto& [table, key] = entry;
            // The edge names the target by its primary key, in that key's order.
            const auto pk_of = primary_keys.find(key.ref_table);
            if (pk_of == primary_keys.end()) continue;
            std::vector<std::string> ordered;
            for (const auto& col : pk_of->second) {
                const auto at = std::find(key.ref_columns.begin(), key.ref_columns.end(), col);
                if (at == key.ref_columns.end()) break;
                ordered.push_back(key.columns[static_cast<size_t>(at - key.ref_columns.begin())]);
            }
            if (ordered.size() != pk_of->second.size()) continue;  // references a unique key, not the primary one
            key.columns = ordered;
            key.ref_columns = pk_of->second;
            if (std::find(tables.begin(), tables.end(), table) != tables.end()) foreign_keys.push_back(entry);
        }
        return {};
    }

    // The slot and where the stream starts; the initial snapshot when the startup mode asks for one.
    Status prepare_slot(std::optional<std::string> resume_text) {
        auto slot = query(sql.get(), "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = " +
                                         literal(sql.get(), config.slot_name));
        if (!slot.ok()) return slot.error();
        const bool exists = PQntuples(slot->get()) > 0;
        if (resume_text) {
            auto lsn = pg::parse_lsn(*resume_text);
            if (!lsn)
                return make_error(ErrorCode::kCorrupt, where + ": the graph's stored position '" + *resume_text +
                                                           "' is not an LSN");
            if (!exists)
                return make_error(ErrorCode::kNotFound,
                                  where + ": the replication slot '" + config.slot_name +
                                      "' is gone, so the changes after " + *resume_text +
                                      " cannot be read; rebuild the graph from a new snapshot: stop the pipeline, "
                                      "remove its state directory and run it again");
            resume = *lsn;
            return {};
        }
        if (config.startup == SourceConfig::StartupMode::kSpecificOffset) {
            auto lsn = pg::parse_lsn(config.startup_offset);
            if (!lsn)
                return make_error(ErrorCode::kInvalidArgument,
                                  where + ": scan.startup.specific-offset '" + config.startup_offset +
                                      "' is not an LSN (like 0/16B3748)");
            if (!exists) {
                if (auto st = create_slot(false); !st.ok()) return st;
            }
            resume = *lsn;
            return {};
        }
        // Nothing applied yet: a slot left by an earlier attempt that never
        // applied its snapshot is started over.
        if (exists) {
            if (auto r = query(repl.get(), "DROP_REPLICATION_SLOT " + identifier(repl.get(), config.slot_name),
                               PGRES_COMMAND_OK);
                !r.ok())
                return r.error();
        }
        return create_slot(config.startup == SourceConfig::StartupMode::kInitial);
    }

    Status create_slot(bool take_snapshot) {
        auto r = query(repl.get(), "CREATE_REPLICATION_SLOT " + identifier(repl.get(), config.slot_name) +
                                       " LOGICAL pgoutput (SNAPSHOT '" + (take_snapshot ? "export" : "nothing") + "')");
        if (!r.ok()) return r.error();
        auto lsn = pg::parse_lsn(PQgetvalue(r->get(), 0, 1));
        if (!lsn) return fail("the new slot's consistent point is not an LSN");
        resume = *lsn;
        spdlog::info("cdc: {}: created replication slot {} at {}", where, config.slot_name, pg::format_lsn(*lsn));
        if (take_snapshot) return read_snapshot(PQgetvalue(r->get(), 0, 2));
        return {};
    }

    // Every published row as of the slot's consistent point, as one transaction.
    Status read_snapshot(const std::string& snapshot_name) {
        SourceTransaction txn;
        txn.position = pg::format_lsn(resume);
        if (auto r = query(sql.get(), "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", PGRES_COMMAND_OK); !r.ok())
            return r.error();
        if (auto r = query(sql.get(), "SET TRANSACTION SNAPSHOT " + literal(sql.get(), snapshot_name), PGRES_COMMAND_OK);
            !r.ok())
            return r.error();
        for (const auto& t : tables) {
            const auto [schema, table] = split_table(t);
            auto rows = query(sql.get(), "SELECT * FROM " + identifier(sql.get(), schema) + "." + identifier(sql.get(), table));
            if (!rows.ok()) return rows.error();
            PGresult* res = rows->get();
            const int columns = PQnfields(res);
            for (int i = 0; i < PQntuples(res); ++i) {
                RowChange row;
                row.op = RowChange::Op::kInsert;
                row.schema = schema;
                row.table = table;
                row.key_columns = primary_keys[t];
                for (int c = 0; c < columns; ++c) {
                    ColumnValue v;
                    v.column = PQfname(res, c);
                    if (!PQgetisnull(res, i, c)) v.text = std::string(PQgetvalue(res, i, c), PQgetlength(res, i, c));
                    row.after.push_back(std::move(v));
                }
                txn.rows.push_back(std::move(row));
            }
        }
        if (auto r = query(sql.get(), "COMMIT", PGRES_COMMAND_OK); !r.ok()) return r.error();
        spdlog::info("cdc: {}: initial snapshot of {} rows at {}", where, txn.rows.size(), txn.position);
        snapshot = std::move(txn);
        return {};
    }

    Status start_stream() {
        const std::string q = "START_REPLICATION SLOT " + identifier(repl.get(), config.slot_name) + " LOGICAL " +
                              pg::format_lsn(resume) + " (proto_version '1', publication_names " +
                              literal(repl.get(), config.publication) + ")";
        if (auto r = query(repl.get(), q, PGRES_COPY_BOTH); !r.ok()) return r.error();
        confirmed = resume;
        return {};
    }

    std::vector<std::string> keys_of(const pg::Relation& rel) {
        const std::string name = rel.schema + "." + rel.name;
        if (auto it = primary_keys.find(name); it != primary_keys.end()) return it->second;
        std::vector<std::string> out;  // a table added later: the stream's key flags
        for (const auto& c : rel.columns)
            if (c.key) out.push_back(c.name);
        return out;
    }

    Result<std::vector<ColumnValue>> values(const pg::Relation& rel, const pg::Tuple& tuple) const {
        if (tuple.size() != rel.columns.size())
            return make_error(ErrorCode::kCorrupt, where + ": a row of " + rel.name + " has " +
                                                       std::to_string(tuple.size()) + " values for " +
                                                       std::to_string(rel.columns.size()) + " columns");
        std::vector<ColumnValue> out;
        for (size_t i = 0; i < tuple.size(); ++i) {
            ColumnValue v;
            v.column = rel.columns[i].name;
            if (tuple[i].kind == pg::TupleValue::Kind::kText) v.text = tuple[i].text;
            v.unchanged = tuple[i].kind == pg::TupleValue::Kind::kUnchangedToast;
            out.push_back(std::move(v));
        }
        return out;
    }

    // One pgoutput message; a finished transaction when it was a Commit.
    Result<std::optional<SourceTransaction>> on_message(std::string_view payload) {
        auto m = pg::decode_message(payload);
        if (!m.ok()) return m.error();
        auto relation = [&](uint32_t id) -> const pg::Relation* {
            auto it = relations.find(id);
            return it == relations.end() ? nullptr : &it->second;
        };
        auto row_of = [&](uint32_t id, RowChange::Op op) -> Result<RowChange> {
            const pg::Relation* rel = relation(id);
            if (!rel) return make_error(ErrorCode::kCorrupt, where + ": a row of an unannounced relation " + std::to_string(id));
            RowChange row;
            row.op = op;
            row.schema = rel->schema;
            row.table = rel->name;
            row.key_columns = keys_of(*rel);
            return row;
        };
        if (auto* b = std::get_if<pg::Begin>(&*m)) {
            current.emplace();
            current->commit_time_us = b->commit_time + pg::kPgEpochUnixUs;
        } else if (auto* c = std::get_if<pg::Commit>(&*m)) {
            if (!current) return make_error(ErrorCode::kCorrupt, where + ": a Commit without its Begin");
            SourceTransaction txn = std::move(*current);
            current.reset();
            txn.position = pg::format_lsn(c->end_lsn);
            if (c->end_lsn <= resume) return std::optional<SourceTransaction>();  // in the graph already
            return std::optional<SourceTransaction>(std::move(txn));
        } else if (auto* r = std::get_if<pg::Relation>(&*m)) {
            relations[r->id] = *r;  // a changed table is announced again before its next row
        } else if (auto* ins = std::get_if<pg::Insert>(&*m)) {
            auto row = row_of(ins->relation, RowChange::Op::kInsert);
            if (!row.ok()) return row.error();
            auto v = values(*relation(ins->relation), ins->row);
            if (!v.ok()) return v.error();
            row->after = std::move(*v);
            if (current) current->rows.push_back(std::move(*row));
        } else if (auto* up = std::get_if<pg::Update>(&*m)) {
            auto row = row_of(up->relation, RowChange::Op::kUpdate);
            if (!row.ok()) return row.error();
            auto v = values(*relation(up->relation), up->row);
            if (!v.ok()) return v.error();
            row->after = std::move(*v);
            if (up->old_kind) {
                auto old = values(*relation(up->relation), up->old_row);
                if (!old.ok()) return old.error();
                row->before = std::move(*old);
            }
            if (current) current->rows.push_back(std::move(*row));
        } else if (auto* del = std::get_if<pg::Delete>(&*m)) {
            auto row = row_of(del->relation, RowChange::Op::kDelete);
            if (!row.ok()) return row.error();
            auto old = values(*relation(del->relation), del->old_row);
            if (!old.ok()) return old.error();
            row->before = std::move(*old);
            if (current) current->rows.push_back(std::move(*row));
        } else if (auto* t = std::get_if<pg::Truncate>(&*m)) {
            for (uint32_t id : t->relations) {
                const pg::Relation* rel = relation(id);
                if (!rel) continue;
                RowChange row;
                row.op = RowChange::Op::kTruncate;
                row.schema = rel->schema;
                row.table = rel->name;
                if (current) current->rows.push_back(std::move(row));
            }
        }
        return std::optional<SourceTransaction>();
    }

    void send_status(bool reply_requested) {
        const std::string msg = pg::encode_standby_status(std::max(received, confirmed), confirmed, confirmed,
                                                          now_pg_us(), reply_requested);
        if (PQputCopyData(repl.get(), msg.data(), static_cast<int>(msg.size())) == 1) PQflush(repl.get());
        last_status = std::chrono::steady_clock::now();
    }
};

PostgresSource::PostgresSource(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
PostgresSource::~PostgresSource() = default;

Result<std::unique_ptr<PostgresSource>> PostgresSource::open(const SourceConfig& config, std::optional<std::string> resume) {
    auto impl = std::make_unique<Impl>();
    impl->config = config;
    impl->where = "postgres at " + config.host + ":" + std::to_string(config.port) + "/" + config.database;
    auto sql = impl->connect(false);
    if (!sql.ok()) return sql.error();
    impl->sql = std::move(*sql);
    if (auto st = impl->check_server(); !st.ok()) return st.error();
    auto repl = impl->connect(true);
    if (!repl.ok()) return repl.error();
    impl->repl = std::move(*repl);
    if (auto st = impl->ensure_publication(); !st.ok()) return st.error();
    std::vector<std::pair<std::string, ForeignKey>> fks;
    if (auto st = impl->load_keys(fks); !st.ok()) return st.error();
    if (auto st = impl->prepare_slot(std::move(resume)); !st.ok()) return st.error();
    if (auto st = impl->start_stream(); !st.ok()) return st.error();
    std::unique_ptr<PostgresSource> s(new PostgresSource(std::move(impl)));
    s->foreign_keys_ = std::move(fks);
    return s;
}

Result<std::optional<SourceTransaction>> PostgresSource::next(int timeout_ms) {
    Impl& s = *impl_;
    if (s.snapshot) {
        std::optional<SourceTransaction> out = std::move(s.snapshot);
        s.snapshot.reset();
        return out;
    }
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    for (;;) {
        if (std::chrono::steady_clock::now() - s.last_status > std::chrono::seconds(1)) s.send_status(false);
        char* buf = nullptr;
        const int n = PQgetCopyData(s.repl.get(), &buf, 1);
        if (n > 0) {
            const std::string_view bytes(buf, static_cast<size_t>(n));
            auto frame = pg::decode_copy_data(bytes);
            Result<std::optional<SourceTransaction>> out = std::optional<SourceTransaction>();
            if (!frame.ok()) {
                out = frame.error();
            } else if (auto* k = std::get_if<pg::Keepalive>(&*frame)) {
                s.received = std::max(s.received, k->wal_end);
                if (k->reply_requested) s.send_status(false);
            } else {
                const auto& x = std::get<pg::XLogData>(*frame);
                s.received = std::max(s.received, x.wal_end);
                out = s.on_message(x.payload);
            }
            PQfreemem(buf);
            if (!out.ok() || *out) return out;
            continue;
        }
        if (n == -1) {
            PgResult r(PQgetResult(s.repl.get()));
            return s.fail("the server ended the replication stream", s.repl.get());
        }
        if (n == -2) return s.fail("reading the replication stream", s.repl.get());
        // Nothing buffered: wait for the socket, bounded.
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
        if (left.count() <= 0) return std::optional<SourceTransaction>();
        pollfd p{PQsocket(s.repl.get()), POLLIN, 0};
        const int ready = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 1000)));
        if (ready < 0 && errno != EINTR) return s.fail("waiting for the replication stream");
        if (ready > 0 && !PQconsumeInput(s.repl.get())) return s.fail("reading the replication stream", s.repl.get());
    }
}

void PostgresSource::confirm(const std::string& position) {
    if (auto lsn = pg::parse_lsn(position); lsn && *lsn > impl_->confirmed) {
        impl_->confirmed = *lsn;
        impl_->send_status(false);
    }
}

}  // namespace assistd::cdc
