#include "engine/model_loader.h"

#include <fmt/format.h>

namespace assistd::engine {
namespace {

Result<size_t> required_uint(const GgufFile& f, const std::string& key) {
    auto v = f.get_uint(key);
    if (!v) return make_error(ErrorCode::kCorrupt, fmt::format("missing or non-integer metadata key '{}'", key));
    return static_cast<size_t>(*v);
}

Status check_shape(const GgufTensor* t, const std::string& name, std::vector<uint64_t> expected) {
    if (!t) return make_error(ErrorCode::kCorrupt, fmt::format("tensor '{}' is missing", name));
    if (!t->supported)
        return make_error(ErrorCode::kUnsupported,
                          fmt::format("tensor '{}' has type {} which assistd does not support "
                                      "(supported: F32, F16, BF16, Q8_0)",
                                      name, ggml_type_name(t->ggml_type)));
    if (t->dims != expected) {
        std::string got, want;
        for (auto d : t->dims) got += fmt::format("{}{}", got.empty() ? "" : "x", d);
        for (auto d : expected) want += fmt::format("{}{}", want.empty() ? "" : "x", d);
        return make_error(ErrorCode::kCorrupt,
                          fmt::format("tensor '{}' has shape {} but the model's metadata implies {}", name, got, want));
    }
    return {};
}

}  // namespace

Status read_model_description(const GgufFile& f, size_t n_ctx_requested, ModelInfo& info, ModelTensors& tensors) {
    auto arch = f.get_string("general.architecture");
    if (!arch) return make_error(ErrorCode::kCorrupt, "missing metadata key 'general.architecture'");
    info.arch_name = std::string(*arch);
    if (*arch == "llama") {
        info.arch = Architecture::kLlama;
    } else if (*arch == "qwen2") {
        info.arch = Architecture::kQwen2;
    } else {
        return make_error(ErrorCode::kUnsupported,
                          fmt::format("model architecture '{}' is not supported (supported: llama, qwen2)", *arch));
    }
    info.name = std::string(f.get_string("general.name").value_or(""));
    const std::string a = info.arch_name + ".";

    auto n_embd = required_uint(f, a + "embedding_length");
    if (!n_embd) return n_embd.error();
    auto n_layer = required_uint(f, a + "block_count");
    if (!n_layer) return n_layer.error();
    auto n_ff = required_uint(f, a + "feed_forward_length");
    if (!n_ff) return n_ff.error();
    auto n_head = required_uint(f, a + "attention.head_count");
    if (!n_head) return n_head.error();
    info.n_embd = *n_embd;
    info.n_layer = *n_layer;
    info.n_ff = *n_ff;
    info.n_head = *n_head;
    info.n_head_kv = f.get_uint(a + "attention.head_count_kv").value_or(info.n_head);
    if (info.n_embd == 0 || info.n_layer == 0 || info.n_ff == 0 || info.n_head == 0 || info.n_head_kv == 0)
        return make_error(ErrorCode::kCorrupt, "model metadata has a zero dimension (embedding, layers, FFN or heads)");
    if (info.n_layer > 1024 || info.n_head > 1024 || info.n_embd > (1u << 20) || info.n_ff > (1u << 22))
        return make_error(ErrorCode::kCorrupt, "model metadata has implausible dimensions");
    if (info.n_head % info.n_head_kv != 0)
        return make_error(ErrorCode::kCorrupt, fmt::format("head count {} is not a multiple of the KV head count {}",
                                                           info.n_head, info.n_head_kv));
    if (auto kl = f.get_uint(a + "attention.key_length")) {
        info.head_dim = *kl;
    } else {
        if (info.n_embd % info.n_head != 0)
            return make_error(ErrorCode::kCorrupt, fmt::format("embedding length {} is not divisible by head count {}",
                                                               info.n_embd, info.n_head));
        info.head_dim = info.n_embd / info.n_head;
    }
    if (info.head_dim == 0 || info.head_dim % 2 != 0)
        return make_error(ErrorCode::kCorrupt, fmt::format("head dimension {} must be even and non-zero", info.head_dim));
    if (auto vl = f.get_uint(a + "attention.value_length"); vl && *vl != info.head_dim)
        return make_error(ErrorCode::kUnsupported, "different key and value head sizes are not supported");
    info.n_rot = f.get_uint(a + "rope.dimension_count").value_or(info.head_dim);
    if (info.n_rot == 0 || info.n_rot > info.head_dim || info.n_rot % 2 != 0)
        return make_error(ErrorCode::kCorrupt, fmt::format("rope dimension {} is invalid for head dimension {}",
                                                           info.n_rot, info.head_dim));
    info.rms_eps = static_cast<float>(
        f.get_float(a + "attention.layer_norm_rms_epsilon").value_or(info.arch == Architecture::kQwen2 ? 1e-6 : 1e-5));
    info.rope_theta = static_cast<float>(f.get_float(a + "rope.freq_base").value_or(10000.0));
    if (auto type = f.get_string(a + "rope.scaling.type"); type && *type == "linear") {
        const double factor = f.get_float(a + "rope.scaling.factor").value_or(1.0);
        if (factor > 0) info.rope_freq_scale = static_cast<float>(1.0 / factor);
    } else if (type && *type != "none" && *type != "llama3") {
        return make_error(ErrorCode::kUnsupported, fmt::format("rope scaling type '{}' is not supported", *type));
    }
    info.rope_neox = info.arch == Architecture::kQwen2;
    info.n_ctx_train = f.get_uint(a + "context_length").value_or(2048);
    info.n_ctx = n_ctx_requested ? n_ctx_requested : std::min<size_t>(info.n_ctx_train, 8192);

    tensors.token_embd = f.tensor("token_embd.weight");
    if (!tensors.token_embd) return make_error(ErrorCode::kCorrupt, "tensor 'token_embd.weight' is missing");
    if (tensors.token_embd->dims.size() != 2)
        return make_error(ErrorCode::kCorrupt, "tensor 'token_embd.weight' must be 2-dimensional");
    info.n_vocab = tensors.token_embd->dims[1];
    const uint64_t E = info.n_embd, V = info.n_vocab, F = info.n_ff;
    const uint64_t Q = info.n_head * info.head_dim, KV = info.n_head_kv * info.head_dim;
    if (auto s = check_shape(tensors.token_embd, "token_embd.weight", {E, V}); !s) return s;
    tensors.output_norm = f.tensor("output_norm.weight");
    if (auto s = check_shape(tensors.output_norm, "output_norm.weight", {E}); !s) return s;
    tensors.output = f.tensor("output.weight");
    info.tied_output = tensors.output == nullptr;
    if (info.tied_output) tensors.output = tensors.token_embd;
    if (auto s = check_shape(tensors.output, tensors.output->name, {E, V}); !s) return s;
    tensors.rope_freqs = f.tensor("rope_freqs.weight");
    if (tensors.rope_freqs) {
        if (auto s = check_shape(tensors.rope_freqs, "rope_freqs.weight", {info.n_rot / 2}); !s) return s;
        if (tensors.rope_freqs->dtype != DType::F32)
            return make_error(ErrorCode::kUnsupported, "tensor 'rope_freqs.weight' must be F32");
    }

    tensors.layers.resize(info.n_layer);
    for (size_t l = 0; l < info.n_layer; ++l) {
        auto& L = tensors.layers[l];
        auto get = [&](const char* suffix, const GgufTensor*& out, std::vector<uint64_t> shape) -> Status {
            const std::string name = fmt::format("blk.{}.{}", l, suffix);
            out = f.tensor(name);
            return check_shape(out, name, std::move(shape));
        };
        Status s;
        if (!(s = get("attn_norm.weight", L.attn_norm, {E}))) return s;
        if (!(s = get("attn_q.weight", L.wq, {E, Q}))) return s;
        if (!(s = get("attn_k.weight", L.wk, {E, KV}))) return s;
        if (!(s = get("attn_v.weight", L.wv, {E, KV}))) return s;
        if (!(s = get("attn_output.weight", L.wo, {Q, E}))) return s;
        if (!(s = get("ffn_norm.weight", L.ffn_norm, {E}))) return s;
        if (!(s = get("ffn_gate.weight", L.w_gate, {E, F}))) return s;
        if (!(s = get("ffn_up.weight", L.w_up, {E, F}))) return s;
        if (!(s = get("ffn_down.weight", L.w_down, {F, E}))) return s;
        if (info.arch == Architecture::kQwen2) {
            if (!(s = get("attn_q.bias", L.bq, {Q}))) return s;
            if (!(s = get("attn_k.bias", L.bk, {KV}))) return s;
            if (!(s = get("attn_v.bias", L.bv, {KV}))) return s;
        }
    }

    // The most common matrix type names the file's type.
    size_t counts[64] = {};
    uint64_t bytes = 0, params = 0;
    for (const auto& t : f.tensors()) {
        if (!t.supported) continue;
        params += t.n_elements;
        bytes += t.n_bytes;
        if (t.dims.size() == 2) ++counts[static_cast<uint32_t>(t.dtype) & 63];
    }
    size_t best = 0;
    for (uint32_t i = 0; i < 64; ++i)
        if (counts[i] > counts[best]) best = i;
    info.file_type = dtype_from_ggml(best).value_or(DType::F32);
    info.n_params = params;
    info.weight_bytes = bytes;
    return {};
}

}  // namespace assistd::engine
