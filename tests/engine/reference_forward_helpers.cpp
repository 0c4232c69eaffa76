#include "reference_forward_helpers.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fmt/ranges.h>
#include <filesystem>

#include "engine/dtype.h"

namespace assistd::reftest {
namespace {

using engine::GgufFile;
using engine::GgufTensor;

// Reads a tensor as float, checking its shape is exactly `dims`.
Status read_tensor(const GgufFile& f, const std::string& name, std::vector<uint64_t> dims, std::vector<float>& out) {
    const GgufTensor* t = f.tensor(name);
    if (!t) return make_error(ErrorCode::kNotFound, fmt::format("reference: missing tensor '{}'", name));
    if (!t->supported) return make_error(ErrorCode::kUnsupported, fmt::format("reference: '{}' has an unsupported type", name));
    if (t->dims != dims)
        return make_error(ErrorCode::kCorrupt, fmt::format("reference: '{}' has shape [{}], expected [{}]", name,
                                                           fmt::join(t->dims, ", "), fmt::join(dims, ", ")));
    out.resize(t->n_elements);
    dequantize_row(t->dtype, t->data, out.data(), t->n_elements);
    return {};
}

// y[o] = sum_i w[o * in + i] * x[i] (+ b[o]); GGUF stores a [in, out] matrix as `out` rows of `in`.
std::vector<double> matvec(const std::vector<float>& w, const std::vector<float>* b, const std::vector<double>& x,
                           size_t out) {
    const size_t in = x.size();
    std::vector<double> y(out);
    for (size_t o = 0; o < out; ++o) {
        double acc = 0;
        const float* row = w.data() + o * in;
        for (size_t i = 0; i < in; ++i) acc += static_cast<double>(row[i]) * x[i];
        if (b && !b->empty()) acc += (*b)[o];
        y[o] = acc;
    }
    return y;
}

std::vector<double> rms_norm(const std::vector<double>& x, const std::vector<float>& w, double eps) {
    double ss = 0;
    for (double v : x) ss += v * v;
    const double scale = 1.0 / std::sqrt(ss / static_cast<double>(x.size()) + eps);
    std::vector<double> y(x.size());
    for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * scale * w[i];
    return y;
}

// Rotates each head of `x` (n_heads * head_dim) by position p.
void rope(std::vector<double>& x, size_t n_heads, const ReferenceHParams& hp, size_t p) {
    const size_t half = hp.n_rot / 2;
    for (size_t h = 0; h < n_heads; ++h) {
        double* v = x.data() + h * hp.head_dim;
        for (size_t i = 0; i < half; ++i) {
            const double freq = std::pow(hp.rope_theta, -2.0 * static_cast<double>(i) / static_cast<double>(hp.n_rot));
            const double angle = static_cast<double>(p) * freq;
            const double c = std::cos(angle), s = std::sin(angle);
            const size_t a = hp.rope_neox ? i : 2 * i;
            const size_t b = hp.rope_neox ? i + half : 2 * i + 1;
            const double x0 = v[a], x1 = v[b];
            v[a] = x0 * c - x1 * s;
            v[b] = x0 * s + x1 * c;
        }
    }
}

}  // namespace

Result<std::shared_ptr<const ReferenceModel>> ReferenceModel::load(const std::string& path) {
    auto f = GgufFile::open(path);
    if (!f) return f.error();
    return load(*f.value());
}

Result<std::shared_ptr<const ReferenceModel>> ReferenceModel::load(const GgufFile& f) {
    auto m = std::make_shared<ReferenceModel>();
    ReferenceHParams& hp = m->hp_;
    hp.arch = std::string(f.get_string("general.architecture").value_or(""));
    if (hp.arch != "llama" && hp.arch != "qwen2")
        return make_error(ErrorCode::kUnsupported, fmt::format("reference: architecture '{}'", hp.arch));
    auto u = [&](const char* key, uint64_t def) { return f.get_uint(hp.arch + "." + key).value_or(def); };
    hp.n_embd = u("embedding_length", 0);
    hp.n_layer = u("block_count", 0);
    hp.n_head = u("attention.head_count", 0);
    hp.n_head_kv = u("attention.head_count_kv", hp.n_head);
    hp.n_ff = u("feed_forward_length", 0);
    if (!hp.n_embd || !hp.n_layer || !hp.n_head || !hp.n_head_kv || !hp.n_ff || hp.n_embd % hp.n_head ||
        hp.n_head % hp.n_head_kv)
        return make_error(ErrorCode::kCorrupt, "reference: bad hyperparameters");
    hp.head_dim = hp.n_embd / hp.n_head;
    hp.n_rot = u("rope.dimension_count", hp.head_dim);
    hp.rms_eps = f.get_float(hp.arch + ".attention.layer_norm_rms_epsilon").value_or(1e-5);
    hp.rope_theta = f.get_float(hp.arch + ".rope.freq_base").value_or(10000.0);
    hp.rope_neox = hp.arch == "qwen2";
    const GgufTensor* embd = f.tensor("token_embd.weight");
    if (!embd || embd->dims.size() != 2) return make_error(ErrorCode::kCorrupt, "reference: no token_embd.weight");
    hp.n_vocab = embd->dims[1];
    hp.tied_output = f.tensor("output.weight") == nullptr;

    const uint64_t E = hp.n_embd, V = hp.n_vocab, F = hp.n_ff;
    const uint64_t Q = hp.n_head * hp.head_dim, KV = hp.n_head_kv * hp.head_dim;
    if (auto s = read_tensor(f, "token_embd.weight", {E, V}, m->token_embd); !s) return s.error();
    if (auto s = read_tensor(f, "output_norm.weight", {E}, m->output_norm); !s) return s.error();
    if (!hp.tied_output)
        if (auto s = read_tensor(f, "output.weight", {E, V}, m->output); !s) return s.error();
    m->layers.resize(hp.n_layer);
    for (size_t l = 0; l < hp.n_layer; ++l) {
        Layer& L = m->layers[l];
        const std::string b = fmt::format("blk.{}.", l);
        const std::pair<const char*, std::pair<std::vector<float>*, std::vector<uint64_t>>> parts[] = {
            {"attn_norm.weight", {&L.attn_norm, {E}}},  {"attn_q.weight", {&L.wq, {E, Q}}},
            {"attn_k.weight", {&L.wk, {E, KV}}},        {"attn_v.weight", {&L.wv, {E, KV}}},
            {"attn_output.weight", {&L.wo, {Q, E}}},    {"ffn_norm.weight", {&L.ffn_norm, {E}}},
            {"ffn_gate.weight", {&L.w_gate, {E, F}}},   {"ffn_up.weight", {&L.w_up, {E, F}}},
            {"ffn_down.weight", {&L.w_down, {F, E}}},
        };
        for (const auto& [name, target] : parts)
            if (auto s = read_tensor(f, b + name, target.second, *target.first); !s) return s.error();
        if (hp.arch == "qwen2") {
            if (auto s = read_tensor(f, b + "attn_q.bias", {Q}, L.bq); !s) return s.error();
            if (auto s = read_tensor(f, b + "attn_k.bias", {KV}, L.bk); !s) return s.error();
            if (auto s = read_tensor(f, b + "attn_v.bias", {KV}, L.bv); !s) return s.error();
        }
    }
    return std::shared_ptr<const ReferenceModel>(std::move(m));
}

ReferenceSequence::ReferenceSequence(std::shared_ptr<const ReferenceModel> model)
    : m_(std::move(model)), k_cache_(m_->hparams().n_layer), v_cache_(m_->hparams().n_layer) {}

std::vector<std::vector<double>> ReferenceSequence::append(std::span<const int32_t> tokens) {
    std::vector<std::vector<double>> rows;
    for (int32_t t : tokens) rows.push_back(forward_one(t));
    return rows;
}

std::vector<double> ReferenceSequence::forward_one(int32_t token) {
    const ReferenceHParams& hp = m_->hparams();
    const size_t E = hp.n_embd, D = hp.head_dim, kv_dim = hp.n_head_kv * D;
    const size_t p = n_past_++;
    std::vector<double> x(E);
    for (size_t i = 0; i < E; ++i) x[i] = m_->token_embd[static_cast<size_t>(token) * E + i];

    for (size_t l = 0; l < hp.n_layer; ++l) {
        const ReferenceModel::Layer& L = m_->layers[l];
        const std::vector<double> h = rms_norm(x, L.attn_norm, hp.rms_eps);
        std::vector<double> q = matvec(L.wq, &L.bq, h, hp.n_head * D);
        std::vector<double> k = matvec(L.wk, &L.bk, h, kv_dim);
        std::vector<double> v = matvec(L.wv, &L.bv, h, kv_dim);
        rope(q, hp.n_head, hp, p);
        rope(k, hp.n_head_kv, hp, p);
        auto& kc = k_cache_[l];
        auto& vc = v_cache_[l];
        kc.insert(kc.end(), k.begin(), k.end());
        vc.insert(vc.end(), v.begin(), v.end());

        // Causal grouped-query attention over positions 0..p.
        const size_t group = hp.n_head / hp.n_head_kv;
        const double scale = 1.0 / std::sqrt(static_cast<double>(D));
        std::vector<double> attn(hp.n_head * D, 0.0), scores(p + 1);
        for (size_t hd = 0; hd < hp.n_head; ++hd) {
            const size_t kvh = hd / group;
            const double* qh = q.data() + hd * D;
            double max_score = -INFINITY;
            for (size_t j = 0; j <= p; ++j) {
                const double* kj = kc.data() + j * kv_dim + kvh * D;
                double dot = 0;
                for (size_t i = 0; i < D; ++i) dot += qh[i] * kj[i];
                scores[j] = dot * scale;
                max_score = std::max(max_score, scores[j]);
            }
            double sum = 0;
            for (size_t j = 0; j <= p; ++j) sum += (scores[j] = std::exp(scores[j] - max_score));
            double* out = attn.data() + hd * D;
            for (size_t j = 0; j <= p; ++j) {
                const double w = scores[j] / sum;
                const double* vj = vc.data() + j * kv_dim + kvh * D;
                for (size_t i = 0; i < D; ++i) out[i] += w * vj[i];
            }
        }
        const std::vector<double> o = matvec(L.wo, nullptr, attn, E);
        for (size_t i = 0; i < E; ++i) x[i] += o[i];

        // SwiGLU feed-forward: down(silu(gate x) * up x).
        const std::vector<double> h2 = rms_norm(x, L.ffn_norm, hp.rms_eps);
        std::vector<double> g = matvec(L.w_gate, nullptr, h2, hp.n_ff);
        const std::vector<double> up = matvec(L.w_up, nullptr, h2, hp.n_ff);
        for (size_t i = 0; i < hp.n_ff; ++i) g[i] = g[i] / (1.0 + std::exp(-g[i])) * up[i];
        const std::vector<double> d = matvec(L.w_down, nullptr, g, E);
        for (size_t i = 0; i < E; ++i) x[i] += d[i];
    }
    const std::vector<double> h = rms_norm(x, m_->output_norm, hp.rms_eps);
    return matvec(hp.tied_output ? m_->token_embd : m_->output, nullptr, h, hp.n_vocab);
}

std::vector<std::vector<double>> reference_logits(std::shared_ptr<const ReferenceModel> model,
                                                  std::span<const int32_t> tokens) {
    ReferenceSequence seq(std::move(model));
    return seq.append(tokens);
}

double row_relative_error(std::span<const float> got, std::span<const double> want) {
    if (got.size() != want.size()) return INFINITY;
    double max_ref = 0, max_diff = 0;
    for (size_t i = 0; i < want.size(); ++i) {
        max_ref = std::max(max_ref, std::fabs(want[i]));
        if (!std::isfinite(got[i])) return INFINITY;
        max_diff = std::max(max_diff, std::fabs(static_cast<double>(got[i]) - want[i]));
    }
    return max_diff / std::max(max_ref, 1e-6);
}

TempDir::TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/assistd-test-XXXXXX";
    if (char* p = mkdtemp(tmpl.data())) path_ = p;
    else path_ = std::filesystem::temp_directory_path().string();
}

TempDir::~TempDir() {
    std::error_code ec;
    if (path_.find("assistd-test-") != std::string::npos) std::filesystem::remove_all(path_, ec);
}

}  // namespace assistd::reftest
