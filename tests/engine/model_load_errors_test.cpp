// Bad model files: every one must come back as an error that names the
// problem — from GgufFile::open, Model::load and the `assistd` binary (exit
// status 2 and a message on stderr) — and never as a crash.
#include <fcntl.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "engine/gguf.h"
#include "engine/gguf_writer.h"
#include "engine/random_model.h"
#include "engine/vocab_builder.h"
#include "reference_forward_helpers.h"

namespace assistd::engine {
namespace {

using reftest::TempDir;

// A small llama model built tensor by tensor, with knobs to break it.
struct ModelRecipe {
    std::string arch = "llama";
    uint32_t n_embd = 64, n_layer = 2, n_head = 4, n_head_kv = 2, n_ff = 96, n_vocab = 512, n_ctx = 256;
    std::string skip_tensor;            // leave this tensor out
    std::string wrong_shape_tensor;     // give this tensor a transposed / wrong shape
    std::string q4k_tensor;             // store this tensor as Q4_K (GGML type 12)
};

GgufWriter build(const ModelRecipe& r) {
    GgufWriter w;
    const std::string a = r.arch;
    w.set_string("general.architecture", a);
    w.set_string("general.name", "bad-input test model");
    w.set_u32("general.file_type", 0);
    w.set_u32(a + ".context_length", r.n_ctx);
    w.set_u32(a + ".embedding_length", r.n_embd);
    w.set_u32(a + ".block_count", r.n_layer);
    w.set_u32(a + ".feed_forward_length", r.n_ff);
    w.set_u32(a + ".attention.head_count", r.n_head);
    w.set_u32(a + ".attention.head_count_kv", r.n_head_kv);
    w.set_f32(a + ".attention.layer_norm_rms_epsilon", 1e-5f);
    w.set_f32(a + ".rope.freq_base", 10000.f);
    write_synthetic_vocab(w, SyntheticVocabKind::kSentencePiece, r.n_vocab);
    // Shapes from the good values (4 heads of 16), whatever the metadata says.
    const uint64_t E = 64, V = r.n_vocab, F = 96, KV = 32;
    auto add = [&](const std::string& name, std::vector<uint64_t> dims) {
        if (name == r.skip_tensor) return;
        if (name == r.wrong_shape_tensor) {
            std::swap(dims[0], dims[1]);
            dims[0] += 1;
        }
        uint64_t n = 1;
        for (auto d : dims) n *= d;
        if (name == r.q4k_tensor) {
            w.add_tensor_raw(name, 12, dims, std::vector<uint8_t>(n / 256 * 144 + 144, 0));
            return;
        }
        std::vector<float> v(n);
        for (uint64_t i = 0; i < n; ++i) v[i] = 0.01f * static_cast<float>((i * 7919) % 201) - 1.f;
        std::vector<uint8_t> bytes(n * 4);
        std::memcpy(bytes.data(), v.data(), bytes.size());
        w.add_tensor(name, DType::F32, dims, std::move(bytes));
    };
    add("token_embd.weight", {E, V});
    add("output_norm.weight", {E});
    add("output.weight", {E, V});
    for (uint32_t l = 0; l < r.n_layer; ++l) {
        const std::string b = fmt::format("blk.{}.", l);
        add(b + "attn_norm.weight", {E});
        add(b + "attn_q.weight", {E, E});
        add(b + "attn_k.weight", {E, KV});
        add(b + "attn_v.weight", {E, KV});
        add(b + "attn_output.weight", {E, E});
        add(b + "ffn_norm.weight", {E});
        add(b + "ffn_gate.weight", {E, F});
        add(b + "ffn_up.weight", {E, F});
        add(b + "ffn_down.weight", {F, E});
    }
    return w;
}

void write_file(const std::string& path, const std::vector<uint8_t>& bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

size_t find_bytes(const std::vector<uint8_t>& hay, std::string_view needle) {
    auto it = std::search(hay.begin(), hay.end(), needle.begin(), needle.end());
    return it == hay.end() ? std::string::npos : static_cast<size_t>(it - hay.begin());
}

std::string load_error(const std::string& path) {
    ModelParams p;
    p.path = path;
    p.n_threads = 1;
    auto m = Model::load(p);
    if (m.ok()) return "";
    return m.error().message;
}

struct ProcessResult {
    int exit_status = -1;      // -1: killed by a signal
    int signal = 0;
    std::string out, err;
};

std::string slurp(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Runs the assistd binary with `args`, stdout and stderr captured through files.
ProcessResult run_assistd(const TempDir& dir, const std::vector<std::string>& args) {
    const std::string out_path = dir.file("stdout.txt"), err_path = dir.file("stderr.txt");
    // Everything the child needs is prepared before fork(): it only opens, dups and execs.
    std::string binary = ASSISTD_BINARY;
    std::vector<std::string> copy = args;
    std::vector<char*> argv;
    argv.push_back(binary.data());
    for (auto& a : copy) argv.push_back(a.data());
    argv.push_back(nullptr);
    const pid_t pid = fork();
    if (pid == 0) {
        const int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        const int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (out < 0 || err < 0) _exit(127);
        dup2(out, 1);
        dup2(err, 2);
        execv(binary.c_str(), argv.data());
        _exit(127);
    }
    ProcessResult r;
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid) return r;
    if (WIFEXITED(status)) r.exit_status = WEXITSTATUS(status);
    if (WIFSIGNALED(status)) r.signal = WTERMSIG(status);
    r.out = slurp(out_path);
    r.err = slurp(err_path);
    return r;
}

// Case-insensitive; `ignore` (the file's path) is cut out first, so words
// like "3" are not found in a random temp-dir name.
bool contains(const std::string& haystack, const std::string& needle, const std::string& ignore = "") {
    std::string h = haystack, n = needle;
    if (!ignore.empty())
        for (size_t at; (at = h.find(ignore)) != std::string::npos;) h.erase(at, ignore.size());
    std::transform(h.begin(), h.end(), h.begin(), ::tolower);
    std::transform(n.begin(), n.end(), n.begin(), ::tolower);
    return h.find(n) != std::string::npos;
}

// One bad file and the words its error message must contain (case-insensitive).
struct BadFile {
    std::string name;
    std::string path;
    std::vector<std::string> words;
    bool gguf_ok = false;  // the GGUF container is fine; only Model::load must refuse it
};

class BadModelFiles : public ::testing::Test {
protected:
    void SetUp() override {
        const auto good = build(ModelRecipe{}).to_bytes();
        good_path_ = dir_.file("good.gguf");
        write_file(good_path_, good);

        auto add = [&](std::string name, std::vector<uint8_t> bytes, std::vector<std::string> words, bool gguf_ok) {
            const std::string path = dir_.file(name + ".gguf");
            write_file(path, bytes);
            files_.push_back({name, path, std::move(words), gguf_ok});
        };
        files_.push_back({"missing", dir_.file("does-not-exist.gguf"), {"cannot open", "no such file"}, false});
        add("empty", {}, {"not a gguf file"}, false);
        const std::string text = "This is a plain text file, certainly not a model.\nSecond line.\n";
        add("text", std::vector<uint8_t>(text.begin(), text.end()), {"not a gguf file"}, false);
        auto bad_magic = good;
        bad_magic[3] = 'X';
        add("bad-magic", bad_magic, {"magic"}, false);
        add("version-1", build(ModelRecipe{}).to_bytes(1), {"version 1", "not supported"}, false);
        add("version-99", build(ModelRecipe{}).to_bytes(99), {"version 99", "not supported"}, false);

        // Truncations: inside the header counts, the metadata, the tensor table and the data.
        const size_t table = find_bytes(good, "blk.0.attn_q.weight");
        ASSERT_NE(table, std::string::npos);
        const size_t metadata = find_bytes(good, "rope.freq_base");
        ASSERT_NE(metadata, std::string::npos);
        const std::pair<const char*, size_t> cuts[] = {
            {"truncated-header", 20}, {"truncated-metadata", metadata + 4}, {"truncated-table", table + 6},
            {"truncated-data", good.size() - 1000}};
        for (const auto& [name, at] : cuts) add(name, std::vector<uint8_t>(good.begin(), good.begin() + static_cast<ptrdiff_t>(at)),
                                                 {std::string(name) == "truncated-header" ? "not a gguf file" : "truncated"},
                                                 false);

        ModelRecipe r;
        r.q4k_tensor = "blk.0.ffn_down.weight";
        add("q4k-weight", build(r).to_bytes(), {"blk.0.ffn_down.weight", "Q4_K"}, true);
        for (const char* arch : {"bert", "mamba"}) {
            r = ModelRecipe{};
            r.arch = arch;
            add(fmt::format("arch-{}", arch), build(r).to_bytes(), {fmt::format("'{}'", arch), "architecture"}, true);
        }
        r = ModelRecipe{};
        r.skip_tensor = "blk.1.ffn_up.weight";
        add("missing-tensor", build(r).to_bytes(), {"blk.1.ffn_up.weight", "missing"}, true);
        r = ModelRecipe{};
        r.wrong_shape_tensor = "blk.0.attn_k.weight";
        add("wrong-shape", build(r).to_bytes(), {"blk.0.attn_k.weight", "shape"}, true);
        r = ModelRecipe{};
        r.n_head = 0;
        add("zero-heads", build(r).to_bytes(), {"head"}, true);
        r = ModelRecipe{};
        r.n_head = 3;  // 64 is not divisible by 3
        r.n_head_kv = 1;
        add("heads-not-dividing-embd", build(r).to_bytes(), {"head", "64", "3"}, true);
        r = ModelRecipe{};
        r.n_embd = 0;
        add("zero-embd", build(r).to_bytes(), {"embedding"}, true);
    }

    TempDir dir_;
    std::string good_path_;
    std::vector<BadFile> files_;
};

TEST_F(BadModelFiles, TheUnbrokenRecipeLoads) {
    // Each bad file differs from this one by one defect, so that defect is what fails.
    auto f = GgufFile::open(good_path_);
    ASSERT_TRUE(f.ok()) << f.error().message;
    const std::string err = load_error(good_path_);
    EXPECT_EQ(err, "") << "the good recipe must load";
}

TEST_F(BadModelFiles, GgufOpenReportsContainerProblems) {
    for (const auto& b : files_) {
        SCOPED_TRACE(b.name);
        auto f = GgufFile::open(b.path);
        if (b.gguf_ok) {
            EXPECT_TRUE(f.ok()) << (f.ok() ? "" : f.error().message);
            continue;
        }
        ASSERT_FALSE(f.ok()) << "GgufFile::open accepted a bad file";
        for (const auto& w : b.words)
            EXPECT_TRUE(contains(f.error().message, w, b.path)) << f.error().message << " | wants: " << w;
    }
    // In-memory parse of every prefix of a small file: errors, never a crash.
    ModelRecipe one_layer;
    one_layer.n_layer = 1;
    const auto good = build(one_layer).to_bytes();
    for (size_t n = 0; n < 4096 && n < good.size(); n += 7) {
        auto f = GgufFile::parse(std::span(good.data(), n), "prefix");
        EXPECT_FALSE(f.ok()) << "a " << n << "-byte prefix parsed";
    }
}

TEST_F(BadModelFiles, ModelLoadNamesTheProblem) {
    for (const auto& b : files_) {
        SCOPED_TRACE(b.name);
        const std::string err = load_error(b.path);
        std::printf("[ %s ] %s\n", b.name.c_str(), err.c_str());
        ASSERT_NE(err, "") << "Model::load accepted a bad file";
        for (const auto& w : b.words) EXPECT_TRUE(contains(err, w, b.path)) << err << " | wants: " << w;
        EXPECT_TRUE(contains(err, b.path)) << "the message should name the file: " << err;
    }
}

TEST_F(BadModelFiles, ModelLoadErrorCodesFitTheProblem) {
    auto code_of = [&](const std::string& name) {
        for (const auto& b : files_)
            if (b.name == name) {
                ModelParams p;
                p.path = b.path;
                auto m = Model::load(p);
                EXPECT_FALSE(m.ok()) << name;
                return m.ok() ? ErrorCode::kInternal : m.error().code;
            }
        ADD_FAILURE() << "no case " << name;
        return ErrorCode::kInternal;
    };
    EXPECT_EQ(code_of("missing"), ErrorCode::kNotFound);
    EXPECT_EQ(code_of("bad-magic"), ErrorCode::kCorrupt);
    EXPECT_EQ(code_of("truncated-data"), ErrorCode::kCorrupt);
    EXPECT_EQ(code_of("version-99"), ErrorCode::kUnsupported);
    EXPECT_EQ(code_of("q4k-weight"), ErrorCode::kUnsupported);
    EXPECT_EQ(code_of("arch-bert"), ErrorCode::kUnsupported);
}

TEST_F(BadModelFiles, GenerateExitsWithStatus2AndSaysWhy) {
    for (const auto& b : files_) {
        SCOPED_TRACE(b.name);
        const ProcessResult r = run_assistd(dir_, {"generate", "--model", b.path, "--prompt", "hi", "--threads", "1"});
        EXPECT_EQ(r.signal, 0) << "assistd died of signal " << r.signal << "; stderr: " << r.err;
        EXPECT_EQ(r.exit_status, 2) << "stderr: " << r.err;
        for (const auto& w : b.words)
            EXPECT_TRUE(contains(r.err, w, b.path)) << "stderr: " << r.err << " | wants: " << w;
    }
}

TEST_F(BadModelFiles, ModelInfoRejectsBrokenContainers) {
    for (const auto& b : files_) {
        if (b.gguf_ok) continue;  // info describes any readable GGUF, even one the engine cannot run
        SCOPED_TRACE(b.name);
        const ProcessResult r = run_assistd(dir_, {"model", "info", b.path});
        EXPECT_EQ(r.signal, 0);
        EXPECT_EQ(r.exit_status, 2) << "stderr: " << r.err;
        for (const auto& w : b.words)
            EXPECT_TRUE(contains(r.err, w, b.path)) << "stderr: " << r.err << " | wants: " << w;
    }
}

// ---------------------------------------------------------------------------
// Context limits, through the CLI.

class ContextLimits : public ::testing::Test {
protected:
    void SetUp() override {
        auto spec = *random_model_shape("tiny-llama");
        spec.n_ctx = 64;
        spec.dtype = DType::F32;
        path_ = dir_.file("ctx64.gguf");
        auto s = write_random_model(spec, path_);
        ASSERT_TRUE(s.ok()) << s.error().message;
    }
    TempDir dir_;
    std::string path_;
};

TEST_F(ContextLimits, ShortGenerationWithinTheContextSucceeds) {
    const ProcessResult r =
        run_assistd(dir_, {"generate", "--model", path_, "--prompt", "hi", "--max-tokens", "8", "--threads", "1"});
    EXPECT_EQ(r.exit_status, 0) << "stderr: " << r.err;
}

TEST_F(ContextLimits, MaxTokensBeyondTheContextIsRefused) {
    const ProcessResult r =
        run_assistd(dir_, {"generate", "--model", path_, "--prompt", "hi", "--max-tokens", "100", "--threads", "1"});
    EXPECT_EQ(r.signal, 0);
    EXPECT_EQ(r.exit_status, 2) << "stderr: " << r.err;
    EXPECT_TRUE(contains(r.err, "context")) << r.err;
    EXPECT_TRUE(contains(r.err, "64")) << "should say how large the context is: " << r.err;
}

TEST_F(ContextLimits, PromptLongerThanTheContextIsRefused) {
    std::string prompt;
    for (int i = 0; i < 60; ++i) prompt += "once upon a time ";
    const ProcessResult r =
        run_assistd(dir_, {"generate", "--model", path_, "--prompt", prompt, "--max-tokens", "1", "--threads", "1"});
    EXPECT_EQ(r.signal, 0);
    EXPECT_EQ(r.exit_status, 2) << "stderr: " << r.err;
    EXPECT_TRUE(contains(r.err, "prompt")) << r.err;
    EXPECT_TRUE(contains(r.err, "context")) << r.err;
}

TEST_F(ContextLimits, ModelLoadReportsTheContextItUses) {
    ModelParams p;
    p.path = path_;
    p.n_threads = 1;
    auto m = Model::load(p);
    ASSERT_TRUE(m.ok()) << m.error().message;
    EXPECT_EQ((*m)->info().n_ctx_train, 64u);
    EXPECT_EQ((*m)->info().n_ctx, 64u);
    // decode() past the context: kOutOfRange, not a crash.
    auto seq = (*m)->create_sequence();
    ASSERT_TRUE(seq.ok());
    std::vector<TokenId> tokens(65, 1);
    BatchEntry e{*seq, tokens, false};
    auto logits = (*m)->decode(std::span(&e, 1), Precision::kFP32);
    ASSERT_FALSE(logits.ok());
    EXPECT_EQ(logits.error().code, ErrorCode::kOutOfRange) << logits.error().message;
}

// ---------------------------------------------------------------------------
// `assistd model random` usage errors.

TEST(ModelRandomCli, UnknownShapeListsTheValidOnes) {
    TempDir dir;
    const ProcessResult r = run_assistd(dir, {"model", "random", "--shape", "gpt-9", "--out", dir.file("x.gguf")});
    EXPECT_EQ(r.exit_status, 2);
    EXPECT_TRUE(contains(r.err, "gpt-9")) << r.err;
    for (const auto& n : random_model_shape_names()) EXPECT_TRUE(contains(r.err, n)) << r.err;
}

TEST(ModelRandomCli, BadDtypeUnwritablePathAndQ8WithOddRowsFail) {
    TempDir dir;
    ProcessResult r = run_assistd(dir, {"model", "random", "--shape", "tiny-llama", "--dtype", "q4_0", "--out", dir.file("x.gguf")});
    EXPECT_EQ(r.exit_status, 2);
    EXPECT_TRUE(contains(r.err, "q4_0")) << r.err;
    r = run_assistd(dir, {"model", "random", "--shape", "tiny-llama", "--out", dir.file("no/such/dir/x.gguf")});
    EXPECT_EQ(r.exit_status, 2);
    EXPECT_TRUE(contains(r.err, "no/such/dir/x.gguf")) << r.err;
    r = run_assistd(dir, {"model", "random", "--shape", "tiny-llama-oddff", "--dtype", "q8_0", "--out", dir.file("x.gguf")});
    EXPECT_EQ(r.exit_status, 2);
    EXPECT_TRUE(contains(r.err, "q8_0")) << r.err;
}

TEST(ModelRandomCli, WritesAFileThatInfoDescribes) {
    TempDir dir;
    const std::string path = dir.file("q.gguf");
    ProcessResult r = run_assistd(dir, {"model", "random", "--shape", "tiny-llama", "--arch", "qwen2", "--dtype", "bf16",
                                        "--tied", "--seed", "3", "--out", path});
    ASSERT_EQ(r.exit_status, 0) << r.err;
    r = run_assistd(dir, {"model", "info", "--json", path});
    ASSERT_EQ(r.exit_status, 0) << r.err;
    EXPECT_TRUE(contains(r.out, "\"architecture\": \"qwen2\"")) << r.out;
    EXPECT_TRUE(contains(r.out, "\"file_type\": \"bf16\"")) << r.out;
    EXPECT_TRUE(contains(r.out, "\"tied_output\": true")) << r.out;
    EXPECT_TRUE(contains(r.out, "\"kind\": \"byte-bpe\"")) << r.out;
    auto f = GgufFile::open(path);
    ASSERT_TRUE(f.ok());
    EXPECT_NE((*f)->tensor("blk.0.attn_q.bias"), nullptr);
    EXPECT_EQ((*f)->tensor("output.weight"), nullptr);
}

}  // namespace
}  // namespace assistd::engine
