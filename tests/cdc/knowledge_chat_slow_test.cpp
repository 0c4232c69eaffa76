// End to end (issue 15): PostgreSQL → `assistd serve --knowledge-pipeline`
// → a chat request. A row committed, then a chat request demanding that
// commit's position (`knowledge.min_position`) gets a context with the new
// fact; the row deleted, the next context lacks it; a position the graph has
// not reached is a 503 after the bounded wait; bad `knowledge` values are
// 400s. Skips without the PostgreSQL binaries or stories260K.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <thread>

#include "postgres_server.h"
#include "serve/http_test_client.h"

namespace assistd::cdc {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using serve::test_support::exchange;
using serve::test_support::Reply;
using test_support::PostgresServer;

const std::string kModel = std::string(ASSISTD_SHARED_DIR) + "/models/stories260K.gguf";

uint16_t free_port() {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    uint16_t port = 0;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0)
        port = ntohs(a.sin_port);
    ::close(fd);
    return port;
}

class KnowledgeChatTest : public ::testing::Test {
  protected:
    void SetUp() override {
        if (const std::string why = PostgresServer::unavailable(); !why.empty()) GTEST_SKIP() << why;
        if (!fs::exists(kModel)) GTEST_SKIP() << "no " << kModel;
        pg_ = std::make_unique<PostgresServer>();
        ASSERT_TRUE(pg_->started()) << pg_->error();
        ASSERT_EQ(pg_->exec("CREATE DATABASE facts"), "");
        ASSERT_EQ(pg_->exec("CREATE TABLE people (id int PRIMARY KEY, name text NOT NULL, role text);"
                            "INSERT INTO people VALUES (1, 'Ada Lovelace', 'analyst')",
                            "facts"),
                  "");
        dir_ = fs::temp_directory_path() / ("assistd-kchat-" + std::to_string(std::random_device{}()));
        fs::create_directories(dir_);
        {
            std::ofstream f(dir_ / "pipeline.yaml");
            f << "source:\n  type: postgres\n  hostname: 127.0.0.1\n  port: " << pg_->port()
              << "\n  database: facts\n  username: postgres\n  name: pg\n";
        }
        port_ = free_port();
        pid_ = ::fork();
        if (pid_ == 0) {
            const int out = ::open((dir_ / "serve.log").c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
            if (out >= 0) {
                ::dup2(out, 1);
                ::dup2(out, 2);
            }
            const std::string port = std::to_string(port_);
            ::execl(ASSISTD_BINARY, ASSISTD_BINARY, "serve", "--model", kModel.c_str(), "--host", "127.0.0.1",
                    "--port", port.c_str(), "--state-dir", (dir_ / "state").c_str(), "--knowledge-pipeline",
                    (dir_ / "pipeline.yaml").c_str(), static_cast<char*>(nullptr));
            ::_exit(127);
        }
        // Listening first (exchange() insists on a connection), then ready.
        const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
        auto listening = [&] {
            const int fd = serve::test_support::connect_loopback(port_);
            if (fd >= 0) ::close(fd);
            return fd >= 0;
        };
        while (std::chrono::steady_clock::now() < until && ::waitpid(pid_, nullptr, WNOHANG) == 0 &&
               (!listening() || exchange(port_, "GET", "/readyz").status != 200))
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        ASSERT_TRUE(listening()) << log();
        ASSERT_EQ(exchange(port_, "GET", "/readyz").status, 200) << log();
    }
    void TearDown() override {
        if (pid_ > 0) {
            ::kill(pid_, SIGTERM);
            ::waitpid(pid_, nullptr, 0);
        }
        if (HasFailure()) std::fprintf(stderr, "%s", log().c_str());
        pg_.reset();
        fs::remove_all(dir_);
    }
    std::string log() const {
        std::ifstream f(dir_ / "serve.log");
        std::stringstream ss;
        ss << f.rdbuf();
        return ss.str();
    }
    // Commits `sql`; the position a client waits for to see it.
    std::string commit(const std::string& sql) {
        const std::string lsn = pg_->commit_position(sql, "facts");
        EXPECT_FALSE(lsn.empty()) << sql;
        return lsn;
    }
    Reply chat(const std::string& user, const json& knowledge) {
        return exchange(port_, "POST", "/v1/chat/completions",
                        json{{"messages", json::array({{{"role", "user"}, {"content", user}}})},
                             {"max_tokens", 2},
                             {"knowledge", knowledge}}
                            .dump());
    }

    std::unique_ptr<PostgresServer> pg_;
    fs::path dir_;
    uint16_t port_ = 0;
    pid_t pid_ = -1;
};

TEST_F(KnowledgeChatTest, ACommittedRowIsInTheNextAnswersContextAndADeletedOneIsNot) {
    const std::string inserted = commit("INSERT INTO people VALUES (2, 'Grace Hopper', 'admiral')");
    const Reply r = chat("Who is Grace Hopper?", {{"min_position", inserted}, {"hops", 1}});
    ASSERT_EQ(r.status, 200) << r.body;
    const json k = r.json_body()["knowledge"];
    ASSERT_TRUE(k.is_object()) << r.body;
    EXPECT_EQ(k["entities"], json::array({"people:2"})) << r.body;
    EXPECT_GE(k["facts"].get<int>(), 1);
    EXPECT_TRUE(k["positions"].contains("pg"));
    EXPECT_FALSE(r.headers.at("x-knowledge-positions").empty());
    // The fact went into the prompt (a system part before the question).
    const int with = r.json_body()["usage"]["prompt_tokens"];
    const Reply plain = exchange(port_, "POST", "/v1/chat/completions",
                                 json{{"messages", json::array({{{"role", "user"}, {"content", "Who is Grace Hopper?"}}})},
                                      {"max_tokens", 2}}
                                     .dump());
    ASSERT_EQ(plain.status, 200);
    EXPECT_GT(with, plain.json_body()["usage"]["prompt_tokens"].get<int>() + 5);

    const std::string deleted = commit("DELETE FROM people WHERE id = 2");
    const Reply after = chat("Who is Grace Hopper?", {{"min_position", deleted}});
    ASSERT_EQ(after.status, 200) << after.body;
    EXPECT_TRUE(after.json_body()["knowledge"]["entities"].empty()) << after.body;
    EXPECT_EQ(after.json_body()["knowledge"]["facts"], 0);

    // Ada is still there, found by any case of her name.
    const Reply ada = chat("tell me about ADA LOVELACE", true);
    ASSERT_EQ(ada.status, 200) << ada.body;
    EXPECT_EQ(ada.json_body()["knowledge"]["entities"], json::array({"people:1"}));
}

TEST_F(KnowledgeChatTest, APositionNotReachedIs503AndBadValuesAre400) {
    const Reply late = chat("Ada Lovelace", {{"min_position", "FF/0"}, {"wait_ms", 200}});
    EXPECT_EQ(late.status, 503) << late.body;
    EXPECT_EQ(late.json_body()["error"]["code"], "knowledge_not_fresh");
    EXPECT_TRUE(late.headers.count("retry-after"));
    const std::pair<json, std::string> bad[] = {
        {"yes", "invalid_type"},
        {{{"hops", 9}}, "invalid_value"},
        {{{"max_tokens", "many"}}, "invalid_value"},
        {{{"min_position", "not-an-lsn"}, {"wait_ms", 100}}, "invalid_value"},
        {{{"source", "pg"}}, "invalid_value"},
        {{{"colour", "red"}}, "unknown_parameter"},
    };
    for (const auto& [value, code] : bad) {
        const Reply r = chat("Ada", value);
        EXPECT_EQ(r.status, 400) << value.dump() << ": " << r.body;
        EXPECT_EQ(r.json_body()["error"]["code"], code) << value.dump() << ": " << r.body;
    }
    const Reply completions = exchange(port_, "POST", "/v1/completions",
                                       json{{"prompt", "Ada"}, {"max_tokens", 1}, {"knowledge", true}}.dump());
    EXPECT_EQ(completions.status, 400) << completions.body;
}

}  // namespace
}  // namespace assistd::cdc
