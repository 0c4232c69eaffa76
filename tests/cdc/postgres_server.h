#pragma once
// A PostgreSQL 15 server for the CDC tests, started from the Debian package
// on 127.0.0.1 (a free port) in a temporary directory with wal_level=logical,
// and stopped (then removed) by the destructor. As root it runs as the
// `postgres` user (initdb refuses root). Tests skip when the server binaries
// are not installed.
#include <libpq-fe.h>

#include <filesystem>
#include <string>
#include <vector>

namespace assistd::cdc::test_support {

class PostgresServer {
  public:
    // Why a server cannot run here ("" when it can).
    static std::string unavailable();
    // `extra_conf`: lines appended to postgresql.conf.
    explicit PostgresServer(const std::string& extra_conf = "wal_level = logical");
    ~PostgresServer();
    bool started() const { return started_; }
    const std::string& error() const { return error_; }
    int port() const { return port_; }
    std::string log() const;

    // Runs SQL in `database` (several statements allowed); "" or the error.
    std::string exec(const std::string& sql, const std::string& database = "postgres");
    // Runs `sql` in a transaction and commits it; the WAL insert position
    // taken inside it after `sql` (past every earlier commit, before this
    // one's end): what a client waits for to see its own change. "" on error.
    std::string commit_position(const std::string& sql, const std::string& database);
    // The rows of a query, each column's text ("\\N" for NULL).
    std::vector<std::vector<std::string>> rows(const std::string& sql, const std::string& database = "postgres");

  private:
    std::filesystem::path dir_;
    int port_ = 0;
    bool started_ = false;
    std::string error_;
};

}  // namespace assistd::cdc::test_support
