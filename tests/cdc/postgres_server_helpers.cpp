#include "postgres_server.h"

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>

namespace assistd::cdc::test_support {
namespace {

namespace fs = std::filesystem;
const fs::path kBin = "/usr/lib/postgresql/15/bin";

int free_port() {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    int port = 0;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0)
        port = ntohs(a.sin_port);
    ::close(fd);
    return port;
}

// Runs a command (as `postgres` when we are root); its exit status.
int run(const std::string& command) {
    const std::string full = ::geteuid() == 0 ? "runuser -u postgres -- " + command : command;
    return std::system((full + " >/dev/null 2>&1").c_str());
}

}  // namespace

std::string PostgresServer::unavailable() {
    if (!fs::exists(kBin / "initdb") || !fs::exists(kBin / "pg_ctl"))
        return "PostgreSQL 15 is not installed (" + (kBin / "initdb").string() + ")";
    if (::geteuid() == 0 && std::system("id postgres >/dev/null 2>&1") != 0)
        return "running as root and there is no postgres user to run the server as";
    return "";
}

// Servers left by a test run that was killed (its destructor never ran): a
// directory named after a process that is gone. Stopped and removed.
static void stop_orphans() {
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(fs::temp_directory_path(), ec)) {
        const std::string name = entry.path().filename().string();
        if (name.rfind("assistd-pg-", 0) != 0) continue;
        const size_t dash = name.find('-', 11);
        const pid_t pid = static_cast<pid_t>(std::atol(name.substr(11, dash - 11).c_str()));
        if (pid <= 0 || pid == ::getpid() || ::kill(pid, 0) == 0) continue;
        if (fs::exists(entry.path() / "data" / "postmaster.pid"))
            run((kBin / "pg_ctl").string() + " -D '" + (entry.path() / "data").string() + "' -m immediate -w stop");
        fs::remove_all(entry.path(), ec);
    }
}

PostgresServer::PostgresServer(const std::string& extra_conf) {
    stop_orphans();
    dir_ = fs::temp_directory_path() / ("assistd-pg-" + std::to_string(::getpid()) + "-" + std::to_string(std::random_device{}()));
    fs::create_directories(dir_);
    if (::geteuid() == 0) std::system(("chown postgres:postgres '" + dir_.string() + "'").c_str());
    port_ = free_port();
    const fs::path data = dir_ / "data";
    if (run((kBin / "initdb").string() + " -D '" + data.string() + "' -A trust -U postgres -E UTF8 --locale=C.UTF-8") != 0) {
        error_ = "initdb failed";
        return;
    }
    {
        std::ofstream conf(data / "postgresql.conf", std::ios::app);
        conf << "listen_addresses = '127.0.0.1'\nport = " << port_ << "\nunix_socket_directories = '" << dir_.string()
             << "'\nmax_wal_senders = 10\nmax_replication_slots = 10\nfsync = off\nshared_buffers = 32MB\n"
             << extra_conf << "\n";
    }
    if (run((kBin / "pg_ctl").string() + " -D '" + data.string() + "' -l '" + (dir_ / "log").string() + "' -w -t 60 start") != 0) {
        error_ = "pg_ctl start failed: " + log();
        return;
    }
    started_ = true;
}

PostgresServer::~PostgresServer() {
    if (started_) run((kBin / "pg_ctl").string() + " -D '" + (dir_ / "data").string() + "' -m immediate -w stop");
    std::error_code ec;
    fs::remove_all(dir_, ec);
}

std::string PostgresServer::log() const {
    std::ifstream f(dir_ / "log");
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

std::string PostgresServer::exec(const std::string& sql, const std::string& database) {
    const std::string info =
        "host=127.0.0.1 port=" + std::to_string(port_) + " user=postgres dbname=" + database + " connect_timeout=5";
    PGconn* c = PQconnectdb(info.c_str());
    std::string err;
    if (PQstatus(c) != CONNECTION_OK) {
        err = PQerrorMessage(c);
    } else {
        PGresult* r = PQexec(c, sql.c_str());
        const auto st = PQresultStatus(r);
        if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) err = PQresultErrorMessage(r);
        PQclear(r);
    }
    PQfinish(c);
    return err;
}

std::string PostgresServer::commit_position(const std::string& sql, const std::string& database) {
    const std::string info =
        "host=127.0.0.1 port=" + std::to_string(port_) + " user=postgres dbname=" + database + " connect_timeout=5";
    PGconn* c = PQconnectdb(info.c_str());
    std::string lsn;
    auto run = [&](const std::string& q, ExecStatusType want) {
        PGresult* r = PQexec(c, q.c_str());
        const bool ok = PQresultStatus(r) == want;
        if (ok && want == PGRES_TUPLES_OK && PQntuples(r) == 1) lsn = PQgetvalue(r, 0, 0);
        PQclear(r);
        return ok;
    };
    const bool ok = PQstatus(c) == CONNECTION_OK && run("BEGIN", PGRES_COMMAND_OK) && run(sql, PGRES_COMMAND_OK) &&
                    run("SELECT pg_current_wal_insert_lsn()", PGRES_TUPLES_OK) && run("COMMIT", PGRES_COMMAND_OK);
    PQfinish(c);
    return ok ? lsn : "";
}

std::vector<std::vector<std::string>> PostgresServer::rows(const std::string& sql, const std::string& database) {
    const std::string info =
        "host=127.0.0.1 port=" + std::to_string(port_) + " user=postgres dbname=" + database + " connect_timeout=5";
    PGconn* c = PQconnectdb(info.c_str());
    std::vector<std::vector<std::string>> out;
    if (PQstatus(c) == CONNECTION_OK) {
        PGresult* r = PQexec(c, sql.c_str());
        if (PQresultStatus(r) == PGRES_TUPLES_OK)
            for (int i = 0; i < PQntuples(r); ++i) {
                std::vector<std::string> row;
                for (int j = 0; j < PQnfields(r); ++j)
                    row.push_back(PQgetisnull(r, i, j) ? "\\N" : std::string(PQgetvalue(r, i, j), PQgetlength(r, i, j)));
                out.push_back(std::move(row));
            }
        PQclear(r);
    }
    PQfinish(c);
    return out;
}

}  // namespace assistd::cdc::test_support
