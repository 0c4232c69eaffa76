// `assistd bench sessions`: N sessions in the durable store, a mixed
// append/read workload from many threads; p50/p99 per operation, ops/s and
// resident memory, side by side with Redis (started here on loopback, driven
// through hiredis with the same workload: a list of messages per session).
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

#ifdef ASSISTD_HAVE_HIREDIS
#include <hiredis.h>
#endif

#include "cli/commands.h"
#include "common/clock.h"
#include "state/durable_session_store.h"

namespace assistd::cli {
namespace {

using Clk = std::chrono::steady_clock;

struct Params {
    size_t sessions = 100000;
    int threads = 16;
    size_t ops = 200000;       // total, across threads
    double seconds = 20;       // time bound per system
    double read_ratio = 0.5;
    std::string durability = "group";
    size_t cache_mib = 64;     // the store's document cache
    size_t memtable_mib = 64;  // each of the store's RocksDB memtables
    std::string dir;
    std::string redis_server = "/usr/bin/redis-server";
    bool no_redis = false;
    bool json = false;
    uint64_t seed = 1;
};

struct Figures {
    std::string name;
    double load_s = 0;
    double run_s = 0;
    size_t ops = 0;
    size_t errors = 0;
    double memory_mib = 0;  // resident memory holding the sessions after the run
    std::string note;       // what else the system reports about itself
    std::vector<double> append_us, read_us, all_us;
    double ops_per_s() const { return run_s > 0 ? static_cast<double>(ops) / run_s : 0; }
};

double pct(std::vector<double>& v, double p) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

// VmRSS of a process ("self" or a pid), in MiB; 0 if unreadable.
double resident_mib(const std::string& pid) {
    std::ifstream status("/proc/" + pid + "/status");
    std::string line;
    while (std::getline(status, line)) {
        if (line.starts_with("VmRSS:"))
            return std::stod(line.substr(6)) / 1024.0;  // the line is in kB
    }
    return 0;
}

std::string message_content(std::mt19937_64& rng) {
    std::string s(96, ' ');
    for (char& c : s) c = static_cast<char>('a' + rng() % 26);
    return s;
}

// Runs `op(thread, rng, is_read, session)` from p.threads threads until p.ops or p.seconds.
template <typename Op>
void drive(const Params& p, Figures& f, Op&& op) {
    std::atomic<size_t> issued{0};
    std::vector<std::vector<double>> appends(p.threads), reads(p.threads);
    std::vector<size_t> errors(p.threads, 0);
    const auto t0 = Clk::now();
    const auto deadline = t0 + std::chrono::duration_cast<Clk::duration>(std::chrono::duration<double>(p.seconds));
    std::vector<std::thread> pool;
    for (int t = 0; t < p.threads; ++t) {
        pool.emplace_back([&, t] {
            std::mt19937_64 rng(p.seed * 1000 + static_cast<uint64_t>(t));
            while (issued.fetch_add(1) < p.ops && Clk::now() < deadline) {
                const bool is_read = std::uniform_real_distribution<double>(0, 1)(rng) < p.read_ratio;
                const size_t session = rng() % p.sessions;
                const auto s = Clk::now();
                if (!op(t, rng, is_read, session)) ++errors[t];
                const double us = std::chrono::duration<double, std::micro>(Clk::now() - s).count();
                (is_read ? reads : appends)[t].push_back(us);
            }
        });
    }
    for (auto& th : pool) th.join();
    f.run_s = std::chrono::duration<double>(Clk::now() - t0).count();
    for (int t = 0; t < p.threads; ++t) {
        f.append_us.insert(f.append_us.end(), appends[t].begin(), appends[t].end());
        f.read_us.insert(f.read_us.end(), reads[t].begin(), reads[t].end());
        f.errors += errors[t];
    }
    f.all_us = f.append_us;
    f.all_us.insert(f.all_us.end(), f.read_us.begin(), f.read_us.end());
    f.ops = f.all_us.size();
}

std::string session_id(size_t i) { return "s" + std::to_string(i); }

bool run_assistd(const Params& p, Figures& f, std::string& err) {
    f.name = "assistd";
    // The store's memory: what this process grew by while holding it (the bench's own
    // latency samples are a few MiB at most).
    const double rss_before = resident_mib("self");
    state::DurableSessionStoreOptions o;
    o.path = p.dir + "/assistd";
    o.replica_id = 1;
    o.cache_bytes = p.cache_mib << 20;
    o.memtable_bytes = p.memtable_mib << 20;
    o.durability = p.durability == "sync"
                       ? state::DurableSessionStoreOptions::Durability::kSyncEachWrite
                       : state::DurableSessionStoreOptions::Durability::kGroupCommit;
    auto store_or = state::DurableSessionStore::open(o, SystemClock::instance());
    if (!store_or.ok()) {
        err = store_or.error().message;
        return false;
    }
    auto& store = **store_or;
    // Load with many threads so creations share group commits.
    const auto l0 = Clk::now();
    {
        const int loaders = 64;
        std::vector<std::thread> pool;
        std::atomic<bool> failed{false};
        for (int t = 0; t < loaders; ++t) {
            pool.emplace_back([&, t] {
                for (size_t i = static_cast<size_t>(t); i < p.sessions; i += loaders) {
                    if (!store.create(session_id(i), "tenant" + std::to_string(i % 100), "bench").ok()) failed = true;
                }
            });
        }
        for (auto& th : pool) th.join();
        if (failed) {
            err = "creating sessions failed";
            return false;
        }
    }
    f.load_s = std::chrono::duration<double>(Clk::now() - l0).count();
    drive(p, f, [&](int, std::mt19937_64& rng, bool is_read, size_t s) {
        if (is_read) return store.get(session_id(s)).ok();
        return store.append_message(session_id(s), {"user", message_content(rng)}).ok();
    });
    f.memory_mib = resident_mib("self") - rss_before;
    f.note = "document cache " + std::to_string(store.cached_documents()) + " sessions (" +
             std::to_string(store.cached_bytes() >> 20) + " MiB counted)";
    return true;
}

#ifdef ASSISTD_HAVE_HIREDIS
struct RedisServer {
    pid_t pid = -1;
    ~RedisServer() {
        if (pid > 0) {
            kill(pid, SIGTERM);
            int st;
            waitpid(pid, &st, 0);
        }
    }
};

redisContext* connect_redis(int port) {
    timeval tv{2, 0};
    redisContext* c = redisConnectWithTimeout("127.0.0.1", port, tv);
    if (c && c->err) {
        redisFree(c);
        return nullptr;
    }
    return c;
}

bool run_redis(const Params& p, Figures& f, std::string& err) {
    f.name = "redis";
    if (access(p.redis_server.c_str(), X_OK) != 0) {
        err = "redis-server not found at " + p.redis_server + " (install redis-server or pass --no-redis)";
        return false;
    }
    const std::string dir = p.dir + "/redis";
    std::filesystem::create_directories(dir);
    const int port = 20000 + static_cast<int>(getpid() % 20000);
    RedisServer server;
    server.pid = fork();
    if (server.pid == 0) {
        const std::string port_s = std::to_string(port);
        const int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0) {
            dup2(devnull, 1);
            dup2(devnull, 2);
        }
        // Same durability promise as ours: append-only file, fsync before replying.
        execl(p.redis_server.c_str(), p.redis_server.c_str(), "--port", port_s.c_str(), "--bind", "127.0.0.1",
              "--dir", dir.c_str(), "--save", "", "--appendonly", "yes", "--appendfsync",
              p.durability == "none" ? "no" : "always", "--daemonize", "no", "--loglevel", "warning",
              static_cast<char*>(nullptr));
        _exit(127);
    }
    redisContext* c = nullptr;
    for (int i = 0; i < 100 && !c; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        c = connect_redis(port);
    }
    if (!c) {
        err = "redis-server did not come up on 127.0.0.1:" + std::to_string(port);
        return false;
    }
    const auto l0 = Clk::now();
    for (size_t i = 0; i < p.sessions; ++i) {
        const std::string key = "session:" + std::to_string(i);
        const std::string tenant = "tenant" + std::to_string(i % 100);
        redisAppendCommand(c, "HSET %s tenant %s title bench", key.c_str(), tenant.c_str());
        if (i % 1000 == 999 || i + 1 == p.sessions) {
            for (size_t k = i - i % 1000; k <= i; ++k) {
                void* r = nullptr;
                if (redisGetReply(c, &r) != REDIS_OK) {
                    err = "redis load failed";
                    redisFree(c);
                    return false;
                }
                freeReplyObject(r);
            }
        }
    }
    f.load_s = std::chrono::duration<double>(Clk::now() - l0).count();
    redisFree(c);
    std::vector<redisContext*> conns(p.threads, nullptr);
    for (auto& cc : conns) {
        cc = connect_redis(port);
        if (!cc) {
            err = "cannot connect to redis";
            return false;
        }
    }
    drive(p, f, [&](int t, std::mt19937_64& rng, bool is_read, size_t s) {
        redisContext* cc = conns[t];
        const std::string key = "session:" + std::to_string(s);
        if (is_read) {
            // The session: its fields and its messages, in one round trip.
            redisAppendCommand(cc, "HGETALL %s", key.c_str());
            redisAppendCommand(cc, "LRANGE %s:messages 0 -1", key.c_str());
            bool ok = true;
            for (int k = 0; k < 2; ++k) {
                void* r = nullptr;
                ok = redisGetReply(cc, &r) == REDIS_OK && ok;
                if (r) freeReplyObject(r);
            }
            return ok;
        }
        const std::string content = message_content(rng);
        auto* r = static_cast<redisReply*>(
            redisCommand(cc, "RPUSH %s:messages %b", key.c_str(), content.data(), content.size()));
        const bool ok = r && r->type == REDIS_REPLY_INTEGER;
        if (r) freeReplyObject(r);
        return ok;
    });
    for (auto* cc : conns) redisFree(cc);
    f.memory_mib = resident_mib(std::to_string(server.pid));
    return true;
}
#endif

nlohmann::json to_json(Figures& f) {
    return {{"system", f.name},
            {"load_seconds", f.load_s},
            {"run_seconds", f.run_s},
            {"ops", f.ops},
            {"errors", f.errors},
            {"ops_per_s", f.ops_per_s()},
            {"memory_mib", f.memory_mib},
            {"append",
             {{"count", f.append_us.size()},
              {"p50_us", pct(f.append_us, 0.5)},
              {"p99_us", pct(f.append_us, 0.99)}}},
            {"read",
             {{"count", f.read_us.size()},
              {"p50_us", pct(f.read_us, 0.5)},
              {"p99_us", pct(f.read_us, 0.99)}}},
            {"all", {{"p50_us", pct(f.all_us, 0.5)}, {"p99_us", pct(f.all_us, 0.99)}}}};
}

void print_human(Figures& f) {
    std::printf(
        "%-8s load %6.2f s | %8.0f ops/s | append p50 %8.1f us p99 %8.1f us | "
        "read p50 %8.1f us p99 %8.1f us | memory %7.1f MiB | %zu ops, %zu errors\n",
        f.name.c_str(), f.load_s, f.ops_per_s(), pct(f.append_us, 0.5), pct(f.append_us, 0.99),
        pct(f.read_us, 0.5), pct(f.read_us, 0.99), f.memory_mib, f.ops, f.errors);
    if (!f.note.empty()) std::printf("%-8s %s\n", "", f.note.c_str());
}

int run(Params p) {
    if (p.sessions == 0 || p.threads < 1 || p.threads > 512 || p.read_ratio < 0 || p.read_ratio > 1 ||
        (p.durability != "group" && p.durability != "sync")) {
        std::fprintf(stderr, "assistd bench sessions: bad parameters (sessions > 0, 1..512 threads, "
                             "read ratio in [0,1], durability group|sync)\n");
        return 2;
    }
    const bool temp_dir = p.dir.empty();
    if (temp_dir) p.dir = (std::filesystem::temp_directory_path() / ("assistd_bench_sessions_" + std::to_string(getpid()))).string();
    std::filesystem::remove_all(p.dir);
    std::string err;
    Figures ours, redis;
    bool ok = run_assistd(p, ours, err);
    bool have_redis = false;
    if (ok && !p.no_redis) {
#ifdef ASSISTD_HAVE_HIREDIS
        have_redis = run_redis(p, redis, err);
        ok = have_redis;
#else
        err = "built without hiredis; pass --no-redis";
        ok = false;
#endif
    }
    if (temp_dir) std::filesystem::remove_all(p.dir);
    if (!ok) {
        std::fprintf(stderr, "assistd bench sessions: %s\n", err.c_str());
        return 2;
    }
    const double ratio = have_redis && redis.ops_per_s() > 0 ? ours.ops_per_s() / redis.ops_per_s() : 0;
    const std::string config =
        std::to_string(p.sessions) + " sessions, " + std::to_string(p.threads) + " threads, " +
        std::to_string(static_cast<int>(p.read_ratio * 100)) + "% reads, durability " +
        (p.durability == "sync" ? std::string("fsync per write") : "leader/follower group commit") +
        "; redis: appendonly yes, appendfsync always";
    if (p.json) {
        nlohmann::json out = {{"config", config}, {"assistd", to_json(ours)}};
        if (have_redis) {
            out["redis"] = to_json(redis);
            out["ops_per_s_ratio_assistd_over_redis"] = ratio;
        }
        std::printf("%s\n", out.dump().c_str());
    } else {
        std::printf("config: %s\n", config.c_str());
        print_human(ours);
        if (have_redis) {
            print_human(redis);
            std::printf(
                "ratio assistd/redis: ops/s %.2fx, append p50 %.2fx, append p99 %.2fx, read p50 "
                "%.2fx, read p99 %.2fx, "
                "memory %.2fx (latency and memory ratios: >1 means assistd worse)\n",
                ratio, pct(ours.append_us, 0.5) / std::max(1e-9, pct(redis.append_us, 0.5)),
                pct(ours.append_us, 0.99) / std::max(1e-9, pct(redis.append_us, 0.99)),
                pct(ours.read_us, 0.5) / std::max(1e-9, pct(redis.read_us, 0.5)),
                pct(ours.read_us, 0.99) / std::max(1e-9, pct(redis.read_us, 0.99)),
                ours.memory_mib / std::max(1e-9, redis.memory_mib));
        }
    }
    return ours.errors == 0 && (!have_redis || redis.errors == 0) ? 0 : 1;
}

}  // namespace

void register_bench_sessions(CLI::App& bench, int& exit_code) {
    auto* cmd = bench.add_subcommand("sessions", "Session store under a mixed append/read load, side by side with Redis");
    auto p = std::make_shared<Params>();
    cmd->add_option("--sessions", p->sessions, "number of sessions")->capture_default_str();
    cmd->add_option("--threads", p->threads, "client threads")->capture_default_str();
    cmd->add_option("--ops", p->ops, "operations in total (per system)")->capture_default_str();
    cmd->add_option("--seconds", p->seconds, "time bound per system")->capture_default_str();
    cmd->add_option("--read-ratio", p->read_ratio, "fraction of reads")->capture_default_str();
    cmd->add_option("--cache-mib", p->cache_mib, "the store's document cache (MiB, counted bytes)")
        ->capture_default_str();
    cmd->add_option("--memtable-mib", p->memtable_mib,
                    "each of the store's RocksDB memtables (MiB)")
        ->capture_default_str();
    cmd->add_option("--durability", p->durability, "group (group commit) or sync (fsync per write)")
        ->capture_default_str();
    cmd->add_option("--dir", p->dir, "data directory (default: a temporary one, removed afterwards)");
    cmd->add_option("--redis-server", p->redis_server, "redis-server binary")->capture_default_str();
    cmd->add_flag("--no-redis", p->no_redis, "skip the Redis baseline");
    cmd->add_option("--seed", p->seed, "workload seed")->capture_default_str();
    cmd->add_flag("--json", p->json, "print one JSON object");
    cmd->callback([p, &exit_code] { exit_code = run(*p); });
}

}  // namespace assistd::cli
