// The serve tests' HTTP client and engine reference (see http_test_client.h).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <cstdlib>

#include <atomic>
#include <thread>
#include <chrono>
#include <algorithm>
#include <vector>
#include "http_test_client.h"

#include "engine/random_model.h"

namespace assistd::serve::test_support {

using engine::Precision;
using engine::TokenId;
using nlohmann::json;

std::unique_ptr<engine::Model> load_model(const std::string& path, size_t max_sequences, size_t kv_cache_tokens) {
    engine::ModelParams p;
    p.path = path;
    p.n_threads = 2;
    p.max_sequences = max_sequences;
    p.kv_cache_tokens = kv_cache_tokens;
    auto m = engine::Model::load(p);
    EXPECT_TRUE(m.ok()) << (m.ok() ? "" : m.error().message);
    return m.ok() ? std::move(*m) : nullptr;
}

std::unique_ptr<engine::Model> tiny_chatml_model(const std::string& file_name, size_t max_sequences) {
    const std::string path = ::testing::TempDir() + "/" + file_name;
    auto spec = engine::random_model_shape("tiny-llama");
    EXPECT_TRUE(spec.has_value());
    if (!spec) return nullptr;
    auto written = engine::write_random_model(*spec, path);
    EXPECT_TRUE(written.ok()) << (written.ok() ? "" : written.error().message);
    if (!written.ok()) return nullptr;
    return load_model(path, max_sequences);
}

std::vector<TokenId> chatml_ids_with_text_content(const engine::Tokenizer& tok,
                                                  const std::vector<engine::ChatMessage>& messages) {
    const TokenId im_start = tok.find_token("<|im_start|>").value_or(-1);
    const TokenId im_end = tok.find_token("<|im_end|>").value_or(-1);
    EXPECT_TRUE(im_start >= 0 && im_end >= 0) << "the vocabulary has no ChatML tokens";
    std::vector<TokenId> ids;
    auto append_text = [&](const std::string& text) {
        const std::vector<TokenId> part = tok.encode(text, /*add_bos=*/false, /*parse_special=*/false);
        ids.insert(ids.end(), part.begin(), part.end());
    };
    if (tok.add_bos_default()) ids.push_back(tok.bos());
    for (const engine::ChatMessage& m : messages) {
        ids.push_back(im_start);
        append_text(m.role + "\n" + m.content);
        ids.push_back(im_end);
        append_text("\n");
    }
    ids.push_back(im_start);
    append_text("assistant\n");
    return ids;
}

int connect_loopback(uint16_t port) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    timeval tv{30, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        ::close(fd);
        return -1;
    }
    return fd;
}

void send_all(int fd, const std::string& data) {
    size_t off = 0;
    while (off < data.size()) {
        const ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
        if (n <= 0) return;
        off += static_cast<size_t>(n);
    }
}

std::string request_text(const std::string& method, const std::string& path,
                         const std::string& body, bool close, const std::string& extra_headers) {
    std::string r =
        method + " " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n";
    r += extra_headers;
    if (close) r += "Connection: close\r\n";
    if (!body.empty() || method == "POST")
        r += "Content-Length: " + std::to_string(body.size()) + "\r\n";
    return r + "\r\n" + body;
}

size_t parse_reply(const std::string& raw, Reply& out) {
    const size_t head_end = raw.find("\r\n\r\n");
    if (head_end == std::string::npos) return 0;
    out = Reply{};
    out.status = std::atoi(raw.c_str() + raw.find(' ') + 1);
    size_t pos = raw.find("\r\n") + 2;
    while (pos < head_end) {
        const size_t eol = raw.find("\r\n", pos);
        const std::string line = raw.substr(pos, eol - pos);
        const size_t colon = line.find(':');
        std::string name = line.substr(0, colon);
        for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        out.headers[name] = line.substr(line.find_first_not_of(' ', colon + 1));
        pos = eol + 2;
    }
    pos = head_end + 4;
    if (out.headers["transfer-encoding"] == "chunked") {
        for (;;) {
            const size_t eol = raw.find("\r\n", pos);
            if (eol == std::string::npos) return 0;
            const size_t n = std::stoul(raw.substr(pos, eol - pos), nullptr, 16);
            if (raw.size() < eol + 2 + n + 2) return 0;
            out.body += raw.substr(eol + 2, n);
            pos = eol + 2 + n + 2;
            if (n == 0) return pos;
        }
    }
    const size_t len =
        out.headers.count("content-length") ? std::stoul(out.headers["content-length"]) : 0;
    if (raw.size() < pos + len) return 0;
    out.body = raw.substr(pos, len);
    return pos + len;
}

std::string read_to_eof(int fd) {
    std::string raw;
    char buf[8192];
    for (;;) {
        const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n <= 0) break;
        raw.append(buf, static_cast<size_t>(n));
    }
    return raw;
}

Reply exchange(uint16_t port, const std::string& method, const std::string& path,
               const std::string& body, const std::string& extra_headers) {
    const int fd = connect_loopback(port);
    EXPECT_GE(fd, 0);
    send_all(fd, request_text(method, path, body, true, extra_headers));
    const std::string raw = read_to_eof(fd);
    ::close(fd);
    Reply r;
    EXPECT_GT(parse_reply(raw, r), 0u) << raw;
    return r;
}

size_t stream_tokens_within(uint16_t port, size_t streams, double seconds, size_t min_tokens,
                            size_t max_tokens) {
    constexpr size_t kBurst = 8, kBurstTokens = 64;
    const std::string body = json{{"prompt", "Once upon a time"}, {"max_tokens", kBurstTokens},
                                  {"ignore_eos", true}}.dump();
    std::atomic<size_t> answered{0};
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<std::thread> burst;
    for (size_t i = 0; i < kBurst; ++i)
        burst.emplace_back([&] {
            if (exchange(port, "POST", "/v1/completions", body).status == 200) ++answered;
        });
    for (auto& t : burst) t.join();
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (answered.load() == 0 || elapsed <= 0) return min_tokens;
    const double tokens_per_second = static_cast<double>(answered.load() * kBurstTokens) / elapsed;
    const double fits = tokens_per_second * seconds / static_cast<double>(std::max<size_t>(1, streams));
    return std::clamp(static_cast<size_t>(fits), min_tokens, max_tokens);
}

std::string sse_text(const std::string& body, bool chat, json* usage, std::string* finish) {
    std::string text;
    size_t pos = 0;
    bool done = false;
    while (pos < body.size()) {
        const size_t end = body.find("\n\n", pos);
        EXPECT_NE(end, std::string::npos);
        if (end == std::string::npos) break;
        const std::string frame = body.substr(pos, end - pos);
        pos = end + 2;
        EXPECT_EQ(frame.rfind("data: ", 0), 0u) << frame;
        const std::string data = frame.substr(6);
        EXPECT_FALSE(done) << "a frame after [DONE]";
        if (data == "[DONE]") {
            done = true;
            continue;
        }
        const json j = json::parse(data);
        EXPECT_EQ(j["object"], chat ? "chat.completion.chunk" : "text_completion");
        if (j.contains("usage") && !j["usage"].is_null() && usage) *usage = j["usage"];
        for (const auto& c : j["choices"]) {
            if (chat && c["delta"].contains("content"))
                text += c["delta"]["content"].get<std::string>();
            if (!chat) text += c["text"].get<std::string>();
            if (!c["finish_reason"].is_null() && finish) *finish = c["finish_reason"];
        }
    }
    EXPECT_TRUE(done) << "the stream must end with data: [DONE]";
    return text;
}

std::string plain_greedy_text(engine::Model& model, const std::vector<TokenId>& prompt,
                              size_t max_tokens, const std::vector<std::string>& stops) {
    auto seq = model.create_sequence();
    engine::Sampler sampler({.temperature = 0});
    engine::BatchEntry e{*seq, prompt};
    auto logits = model.decode(std::span(&e, 1), Precision::kFP32);
    std::vector<TokenId> history = prompt, out;
    for (size_t i = 0; i < max_tokens; ++i) {
        const TokenId t = sampler.sample(*logits, history);
        if (model.tokenizer().is_end_of_generation(t)) break;
        out.push_back(t);
        history.push_back(t);
        engine::BatchEntry d{*seq, std::span<const TokenId>(&out.back(), 1)};
        logits = model.decode(std::span(&d, 1), Precision::kFP32);
    }
    model.free_sequence(*seq);
    std::string text = model.tokenizer().decode(out);
    const auto m = engine::find_stop(text, stops);
    if (m.position != std::string::npos) text.resize(m.position);
    return text;
}

}  // namespace assistd::serve::test_support
