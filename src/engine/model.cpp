// The llama-family forward pass (llama, qwen2) over a batch of sequences,
// with weights kept per precision and converted lazily from the file.
#include <fmt/format.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <thread>

#include "engine/aligned_buffer.h"
#include "engine/engine.h"
#include "engine/gguf.h"
#include "engine/kernels/kernels.h"
#include "engine/kv_blob.h"
#include "engine/kv_cache.h"
#include "engine/model_loader.h"
#include "engine/thread_pool.h"

namespace assistd::engine {

const char* precision_name(Precision p) {
    switch (p) {
        case Precision::kNative: return "native";
        case Precision::kFP32: return "fp32";
        case Precision::kFP16: return "fp16";
        case Precision::kBF16: return "bf16";
    }
    return "?";
}

DType precision_storage_type(Precision p, DType stored_type) {
    switch (p) {
        case Precision::kNative: return stored_type;
        case Precision::kFP32: return DType::F32;
        case Precision::kFP16: return DType::F16;
        case Precision::kBF16: return DType::BF16;
    }
    return stored_type;
}

std::optional<Precision> precision_from_name(std::string_view n) {
    if (n == "native") return Precision::kNative;
    if (n == "fp32" || n == "f32") return Precision::kFP32;
    if (n == "fp16" || n == "f16") return Precision::kFP16;
    if (n == "bf16") return Precision::kBF16;
    return std::nullopt;
}

namespace {

struct Matrix {
    const void* data = nullptr;
    DType type = DType::F32;
    size_t rows = 0, cols = 0;
    // 0: row r at data + r * row bytes. Else the matrix shares its storage
    // with a partner, in alternating blocks of `block` rows (its own first at
    // `data`): row r at block r / block times two blocks on, row r % block.
    size_t block = 0;

    const uint8_t* row(size_t r) const {
        const size_t index = block ? r / block * 2 * block + r % block : r;
        return static_cast<const uint8_t*>(data) + index * dtype_row_bytes(type, cols);
    }
};

// The gate and up projections read the same input row by row together: in
// an arena they are stored in alternating blocks of this many rows (gate,
// up, gate, up, ...), so that a thread's rows of both are one stream.
// Measured on smollm2-135m F16 decode (2 threads): the gate/up phase's time
// -5% in a slow minute (now as fast per byte as the head's long stream),
// decode 141.9 -> 153.9 tok/s median of 6 alternating runs in a fast one.
// Row units of a phase are whole blocks (rows_per_unit() gives multiples of 32).
constexpr size_t kGateUpBlock = 32;

struct LayerWeights {
    Matrix wq, wk, wv, wo, w_gate, w_up, w_down;
};

// All matrices of one precision. Norms and biases are shared (always F32).
struct WeightSet {
    std::vector<LayerWeights> layers;
    Matrix output;
    AlignedBuffer arena;  // the converted (or copied) matrices, one after another
    size_t arena_used = 0;
    size_t owned_bytes = 0;
    uint64_t last_used = 0;
};


class LlamaModel final : public Model {
public:
    LlamaModel(std::unique_ptr<GgufFile> file, std::unique_ptr<Tokenizer> tok, ModelInfo info, ModelTensors tensors,
               const ModelParams& params)
        : file_(std::move(file)), tokenizer_(std::move(tok)), info_(std::move(info)), tensors_(std::move(tensors)),
          params_(params) {}

    Status init();

    const ModelInfo& info() const override { return info_; }
    const Tokenizer& tokenizer() const override { return *tokenizer_; }
    const ChatTemplate& chat_template() const override { return chat_template_; }
    const GgufFile& file() const override { return *file_; }
    int n_threads() const override { return pool_->size(); }

    Result<SequenceId> create_sequence() override { return kv_.create_sequence(); }
    void free_sequence(SequenceId seq) override { kv_.free_sequence(seq); }
    size_t sequence_length(SequenceId seq) const override { return kv_.valid(seq) ? kv_.length(seq) : 0; }
    Status truncate_sequence(SequenceId seq, size_t n) override { return kv_.truncate(seq, n); }
    Result<SequenceId> fork_sequence(SequenceId src, size_t n) override { return kv_.fork(src, n); }
    size_t free_kv_blocks() const override { return kv_.free_blocks(); }
    size_t total_kv_blocks() const override { return kv_.shape().n_blocks; }
    size_t kv_block_tokens() const override { return kv_.shape().block_tokens; }
    size_t max_sequences() const override { return kv_.shape().max_sequences; }

    Result<std::span<const float>> decode(std::span<const BatchEntry> batch, Precision precision) override;
    Status prepare_precision(Precision precision) override {
        auto w = weights_for(precision);
        if (!w) return w.error();
        return {};
    }

    Result<std::string> export_kv(SequenceId seq, size_t begin, size_t end, std::span<const TokenId> tokens) override {
        return encode_kv_blob(kv_, seq, begin, end, tokens, kv_fingerprint_);
    }
    Result<std::vector<TokenId>> import_kv(SequenceId seq, std::string_view blob) override {
        auto view = parse_kv_blob(blob);
        if (!view) return view.error();
        for (TokenId t : view->tokens)
            if (t < 0 || static_cast<size_t>(t) >= info_.n_vocab)
                return make_error(ErrorCode::kCorrupt, fmt::format("KV blob: token id {} is not in the vocabulary", t));
        if (auto st = append_kv_blob(kv_, seq, *view, kv_fingerprint_); !st) return st.error();
        return std::move(view->tokens);
    }
    uint64_t kv_fingerprint() const override { return kv_fingerprint_; }

private:
    Result<WeightSet*> weights_for(Precision p);
    Result<Matrix> convert_matrix(const GgufTensor& t, DType target, bool copy_native, WeightSet& set);
    Status convert_interleaved(const GgufTensor& a, const GgufTensor& b, DType target, size_t block, WeightSet& set,
                               Matrix& out_a, Matrix& out_b);
    static Result<uint8_t*> take_arena(const GgufTensor& t, DType target, size_t rows, WeightSet& set);
    void fill_matrix(const GgufTensor& t, const Matrix& m);
    static void release_file_pages(const GgufTensor& t);
    const float* f32_vector(const GgufTensor* t);
    void forward(int ith, int nth, const WeightSet& w);
    void prepare(DType wtype, const float* x, size_t ld, size_t t0, size_t t1, size_t cols, uint8_t* out) const;
    void attention(size_t layer, size_t unit, size_t kv_head, size_t split, int ith);
    void merge_attention_splits(size_t t, size_t kv_head);

    std::unique_ptr<GgufFile> file_;
    std::unique_ptr<Tokenizer> tokenizer_;
    ModelInfo info_;
    ModelTensors tensors_;
    ModelParams params_;
    ChatTemplate chat_template_;
    std::unique_ptr<ThreadPool> pool_;
    KvCache kv_;
    uint64_t kv_fingerprint_ = 0;

    // Precision sets, created on first use, evicted LRU beyond the budget.
    std::map<Precision, std::unique_ptr<WeightSet>> sets_;
    uint64_t use_counter_ = 0;
    // F32 copies of norms, biases and rope factors (tiny).
    std::map<const GgufTensor*, std::vector<float>> f32_vectors_;
    struct LayerVectors {
        const float *attn_norm, *ffn_norm, *bq, *bk, *bv;
    };
    std::vector<LayerVectors> layer_vectors_;
    const float* output_norm_ = nullptr;
    std::vector<float> inv_freq_;

    // Activations for up to max_batch_tokens tokens (allocated once).
    size_t max_tokens_ = 0;
    AlignedBuffer x_, xn_, q_, k_, v_, attn_, tmp_, gate_, up_, prep_, prepn_, logits_, rope_;
    size_t prep_row_stride_ = 0;
    // Small batches (decode) keep a private copy of the residual stream on
    // every thread: each thread adds, normalizes and prepares the few rows
    // itself instead of one thread doing it while the others wait at a
    // barrier. Per thread: X, Xn, rope tables and prepared rows.
    static constexpr size_t kReplicatedTokens = 8;
    size_t private_stride_ = 0;
    AlignedBuffer private_;

    // Work of a phase is handed out through counters (n_threads per phase,
    // zeroed before every forward): attention units from the phase's first
    // counter, shared, costliest first; matmul rows in units through
    // ThreadPool::for_each_unit (a contiguous stream per thread, the rest taken
    // by whichever thread is free).
    using WorkCounter = ThreadPool::RangeCounter;
    std::unique_ptr<WorkCounter[]> work_;
    size_t n_work_ = 0;  // counters: phases per forward times threads

    // Attention works on units of (block of consecutive query tokens of one
    // sequence, KV head): every K/V row is converted once for all the block's
    // tokens and the group's query heads. Blocks of about this many query rows.
    static constexpr size_t kAttentionQueryRows = 64;
    struct AttentionBlock {
        uint32_t first_token = 0;
        uint32_t n_tokens = 0;
    };
    size_t attention_block_tokens_ = 1;
    // Per thread: the kernel's scratch, then the unit's K and V block addresses.
    AlignedBuffer attention_scratch_;
    size_t attention_scratch_stride_ = 0;  // bytes per thread
    size_t attention_max_blocks_ = 0;      // KV blocks of the longest sequence
    // Few units (decode of one or two sequences) would leave threads idle, so
    // their keys are split into ranges whose partial results are merged after
    // a barrier. Outputs, maxima and sums per split for up to kSplitTokens tokens.
    static constexpr size_t kSplitTokens = 16;
    static constexpr size_t kMaxSplits = 8;
    static constexpr size_t kMinSplitKeys = 256;
    size_t attention_splits_ = 1;  // for the batch being decoded
    AlignedBuffer split_out_, split_max_, split_sum_;

    // The batch being decoded (filled by decode(), read by forward()).
    std::vector<TokenId> tok_;
    std::vector<int32_t> tok_seq_;
    std::vector<uint32_t> tok_pos_;
    std::vector<uint32_t> out_rows_;  // token indices whose logits are returned
    std::vector<AttentionBlock> attention_blocks_;  // costliest first
};

Status LlamaModel::init() {
    const int n_threads = params_.n_threads > 0 ? params_.n_threads
                                                 : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
    pool_ = std::make_unique<ThreadPool>(n_threads);

    // KV cache.
    if (params_.kv_type != DType::F16 && params_.kv_type != DType::F32)
        return make_error(ErrorCode::kInvalidArgument, "kv_type must be f16 or f32");
    KvCacheShape shape;
    shape.n_layer = info_.n_layer;
    shape.n_head_kv = info_.n_head_kv;
    shape.head_dim = info_.head_dim;
    shape.block_tokens = std::max<size_t>(1, params_.kv_block_tokens);
    const size_t kv_tokens = params_.kv_cache_tokens ? params_.kv_cache_tokens : info_.n_ctx * 4;
    shape.n_blocks = std::max<size_t>(1, (kv_tokens + shape.block_tokens - 1) / shape.block_tokens);
    shape.max_sequences = std::max<size_t>(1, params_.max_sequences);
    shape.type = params_.kv_type;
    auto kv = KvCache::create(shape);
    if (!kv) return kv.error();
    kv_ = std::move(*kv);
    kv_fingerprint_ = engine::kv_fingerprint(*file_, info_, params_.kv_type);

    // Small F32 vectors.
    output_norm_ = f32_vector(tensors_.output_norm);
    for (const auto& L : tensors_.layers) {
        layer_vectors_.push_back({f32_vector(L.attn_norm), f32_vector(L.ffn_norm), f32_vector(L.bq),
                                  f32_vector(L.bk), f32_vector(L.bv)});
    }
    inv_freq_.resize(info_.n_rot / 2);
    const float* factors = tensors_.rope_freqs ? f32_vector(tensors_.rope_freqs) : nullptr;
    for (size_t i = 0; i < inv_freq_.size(); ++i) {
        double f = std::pow(static_cast<double>(info_.rope_theta), -2.0 * static_cast<double>(i) / info_.n_rot);
        f *= info_.rope_freq_scale;
        if (factors) f /= factors[i];
        inv_freq_[i] = static_cast<float>(f);
    }

    // Activation buffers.
    max_tokens_ = std::max<size_t>(1, params_.max_batch_tokens);
    const size_t T = max_tokens_;
    const size_t E = info_.n_embd, Q = info_.n_head * info_.head_dim, KV = info_.n_head_kv * info_.head_dim;
    const size_t F = info_.n_ff, V = info_.n_vocab;
    const size_t widest = std::max({E, Q, F});
    for (DType t : {DType::F32, DType::F16, DType::BF16, DType::Q8_0})
        prep_row_stride_ = std::max(prep_row_stride_, kernels::activation_row_bytes(t, widest));
    try {
        x_ = AlignedBuffer(T * E * 4);
        xn_ = AlignedBuffer(T * E * 4);
        q_ = AlignedBuffer(T * Q * 4);
        k_ = AlignedBuffer(T * KV * 4);
        v_ = AlignedBuffer(T * KV * 4);
        attn_ = AlignedBuffer(T * Q * 4);
        tmp_ = AlignedBuffer(T * E * 4);
        gate_ = AlignedBuffer(T * F * 4);
        up_ = AlignedBuffer(T * F * 4);
        prep_ = AlignedBuffer(T * prep_row_stride_);
        prepn_ = AlignedBuffer(T * prep_row_stride_);
        const size_t R = kReplicatedTokens;
        private_stride_ = (2 * R * E * 4 + R * info_.n_rot * 4 + R * prep_row_stride_ + 63) / 64 * 64;
        private_ = AlignedBuffer(static_cast<size_t>(n_threads) * private_stride_);
        logits_ = AlignedBuffer(T * V * 4);
        const size_t group = info_.n_head / info_.n_head_kv;
        attention_block_tokens_ = std::max<size_t>(1, kAttentionQueryRows / group);
        attention_max_blocks_ = (info_.n_ctx + shape.block_tokens - 1) / shape.block_tokens + 1;
        const size_t scratch_bytes =
            kernels::attention_scratch_floats(attention_block_tokens_ * group, info_.head_dim) * sizeof(float);
        attention_scratch_stride_ = (scratch_bytes + 2 * attention_max_blocks_ * sizeof(void*) + 63) / 64 * 64;
        attention_scratch_ = AlignedBuffer(static_cast<size_t>(n_threads) * attention_scratch_stride_);
        const size_t split_tokens = std::min(kSplitTokens, T);
        split_out_ = AlignedBuffer(kMaxSplits * split_tokens * Q * 4);
        split_max_ = AlignedBuffer(kMaxSplits * split_tokens * info_.n_head * 4);
        split_sum_ = AlignedBuffer(kMaxSplits * split_tokens * info_.n_head * 4);
        rope_ = AlignedBuffer(T * info_.n_rot * 4);  // cos, sin per frequency per token
    } catch (const std::bad_alloc&) {
        return make_error(ErrorCode::kResourceExhausted, "cannot allocate the activation buffers");
    }
    n_work_ = (6 * info_.n_layer + 1) * static_cast<size_t>(n_threads);
    work_ = std::make_unique<WorkCounter[]>(n_work_);
    tok_.reserve(T);
    tok_seq_.reserve(T);
    tok_pos_.reserve(T);
    out_rows_.reserve(T);
    attention_blocks_.reserve(T);

    // Chat template from the file.
    auto tmpl = file_->get_string("tokenizer.chat_template").value_or("");
    std::string bos_text, eos_text;
    if (tokenizer_->bos() >= 0) bos_text = tokenizer_->token_text(tokenizer_->bos());
    if (tokenizer_->eos() >= 0) eos_text = tokenizer_->token_text(tokenizer_->eos());
    chat_template_ = ChatTemplate::detect(tmpl, bos_text, eos_text);
    return {};
}

const float* LlamaModel::f32_vector(const GgufTensor* t) {
    if (!t) return nullptr;
    auto& v = f32_vectors_[t];
    if (v.empty()) {
        v.resize(t->n_elements);
        dequantize_row(t->dtype, t->data, v.data(), t->n_elements);
    }
    return v.data();
}

namespace {
size_t arena_bytes(DType type, size_t rows, size_t cols) { return (dtype_row_bytes(type, cols) * rows + 63) / 64 * 64; }
}  // namespace

// The matrix in `target`: the file's own bytes when it stores that type and
// copy_native is off, else a conversion (or copy) into the set's arena.
Result<Matrix> LlamaModel::convert_matrix(const GgufTensor& t, DType target, bool copy_native, WeightSet& set) {
    Matrix m;
    m.type = target;
    m.rows = t.rows();
    m.cols = t.cols();
    if (t.dtype == target && !copy_native) {
        m.data = t.data;
        return m;
    }
    auto dst = take_arena(t, target, m.rows, set);
    if (!dst) return dst.error();
    m.data = *dst;
    fill_matrix(t, m);
    return m;
}

// Two matrices of the same shape converted (or copied) into one region of the
// arena in alternating blocks of `block` rows (Matrix::block).
Status LlamaModel::convert_interleaved(const GgufTensor& a, const GgufTensor& b, DType target, size_t block,
                                       WeightSet& set, Matrix& out_a, Matrix& out_b) {
    const size_t rows = a.rows(), cols = a.cols();
    auto dst = take_arena(a, target, 2 * rows, set);
    if (!dst) return dst.error();
    out_a = Matrix{*dst, target, rows, cols, block};
    out_b = Matrix{*dst + block * dtype_row_bytes(target, cols), target, rows, cols, block};
    fill_matrix(a, out_a);
    fill_matrix(b, out_b);
    return {};
}

// The next `rows` rows of t's shape in `target` from the set's arena.
Result<uint8_t*> LlamaModel::take_arena(const GgufTensor& t, DType target, size_t rows, WeightSet& set) {
    if (target == DType::Q8_0 && t.cols() % kQ8_0Block != 0)
        return make_error(ErrorCode::kUnsupported, fmt::format("tensor '{}' rows of {} cannot be stored as Q8_0",
                                                               t.name, t.cols()));
    const size_t bytes = arena_bytes(target, rows, t.cols());
    if (set.arena_used + bytes > set.arena.size())  // sized by weights_for: a bug if it happens
        return make_error(ErrorCode::kInternal, fmt::format("weight arena too small for '{}'", t.name));
    uint8_t* dst = set.arena.data() + set.arena_used;
    set.arena_used += bytes;
    return dst;
}

// Every row of t converted (or copied) to m's type at m.row(r), in parallel.
void LlamaModel::fill_matrix(const GgufTensor& t, const Matrix& m) {
    const auto* src = static_cast<const uint8_t*>(t.data);
    const size_t src_row = dtype_row_bytes(t.dtype, m.cols), dst_row = dtype_row_bytes(m.type, m.cols);
    pool_->run([&](int ith, int nth) {
        size_t r0, r1;
        ThreadPool::split(m.rows, 1, ith, nth, r0, r1);
        for (size_t r = r0; r < r1; ++r) {
            auto* row = const_cast<uint8_t*>(m.row(r));
            if (t.dtype == m.type)
                std::memcpy(row, src + r * src_row, dst_row);
            else
                kernels::convert_rows(t.dtype, src + r * src_row, m.type, row, m.cols);
        }
    });
    if (t.dtype == m.type) release_file_pages(t);
}

// A copied tensor: let go of the mapping's pages of it (they stay in the page
// cache), so the model is not resident twice. A later read (another
// precision's conversion, embedding rows) faults them back in.
void LlamaModel::release_file_pages(const GgufTensor& t) {
    const auto page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
    const auto begin = (reinterpret_cast<uintptr_t>(t.data) + page - 1) / page * page;
    const auto end = (reinterpret_cast<uintptr_t>(t.data) + t.n_bytes) / page * page;
    if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

Result<WeightSet*> LlamaModel::weights_for(Precision p) {
    auto it = sets_.find(p);
    if (it != sets_.end()) {
        it->second->last_used = ++use_counter_;
        return it->second.get();
    }
    // Bytes this precision would add: every matrix not already stored in its
    // format, and, for huge pages, the others' copies when they fit too.
    // Counted by the groups below (matrices that read one input share the
    // first one's type), so the arena fits exactly what they store.
    uint64_t need = 0, native = 0;
    auto count = [&](std::initializer_list<const GgufTensor*> members) {
        const DType target = precision_storage_type(p, (*members.begin())->dtype);
        for (const GgufTensor* t : members)
            (t->dtype != target ? need : native) += arena_bytes(target, t->rows(), t->cols());
    };
    for (const auto& L : tensors_.layers) {
        count({L.wq, L.wk, L.wv});
        count({L.wo});
        count({L.w_gate, L.w_up});
        count({L.w_down});
    }
    count({tensors_.output});
    if (need > params_.converted_weights_budget)
        return make_error(ErrorCode::kResourceExhausted,
                          fmt::format("precision {} needs {} MiB of converted weights, over the budget of {} MiB",
                                      precision_name(p), need >> 20, params_.converted_weights_budget >> 20));
    const bool copy_native = params_.weights_in_huge_pages && need + native <= params_.converted_weights_budget;
    if (copy_native) need += native;
    // Evict least recently used sets until it fits.
    auto used = [&] {
        size_t total = 0;
        for (auto& [_, s] : sets_) total += s->owned_bytes;
        return total;
    };
    while (used() + need > params_.converted_weights_budget) {
        auto victim = sets_.end();
        for (auto i = sets_.begin(); i != sets_.end(); ++i)
            if (i->second->owned_bytes > 0 && (victim == sets_.end() || i->second->last_used < victim->second->last_used))
                victim = i;
        if (victim == sets_.end()) break;
        sets_.erase(victim);
    }

    auto set = std::make_unique<WeightSet>();
    if (need > 0) {
        try {
            set->arena = AlignedBuffer(need, params_.weights_in_huge_pages);
        } catch (const std::bad_alloc&) {
            return make_error(ErrorCode::kResourceExhausted,
                              fmt::format("out of memory for the {} MiB of precision {}'s weights", need >> 20,
                                          precision_name(p)));
        }
        set->owned_bytes = need;
    }
    // Matrices that read the same input are kept in one type, so one prepared
    // activation serves them all (a native file may mix types).
    auto group = [&](std::initializer_list<std::pair<const GgufTensor*, Matrix*>> members) -> Status {
        const DType target = precision_storage_type(p, members.begin()->first->dtype);
        for (auto [t, out] : members) {
            auto m = convert_matrix(*t, target, copy_native, *set);
            if (!m) return m.error();
            *out = *m;
        }
        return {};
    };
    set->layers.resize(info_.n_layer);
    for (size_t l = 0; l < info_.n_layer; ++l) {
        const auto& L = tensors_.layers[l];
        auto& W = set->layers[l];
        Status s;
        if (!(s = group({{L.wq, &W.wq}, {L.wk, &W.wk}, {L.wv, &W.wv}}))) return s.error();
        if (!(s = group({{L.wo, &W.wo}}))) return s.error();
        // Gate and up in alternating row blocks when both go to the arena
        // (the accounting above counted the two of them the same).
        const DType ffn_type = precision_storage_type(p, L.w_gate->dtype);
        const bool both_in_arena = (L.w_gate->dtype != ffn_type || copy_native) &&
                                   (L.w_up->dtype != ffn_type || copy_native);
        if (both_in_arena && L.w_gate->rows() % kGateUpBlock == 0) {
            if (!(s = convert_interleaved(*L.w_gate, *L.w_up, ffn_type, kGateUpBlock, *set, W.w_gate, W.w_up)))
                return s.error();
        } else if (!(s = group({{L.w_gate, &W.w_gate}, {L.w_up, &W.w_up}}))) {
            return s.error();
        }
        if (!(s = group({{L.w_down, &W.w_down}}))) return s.error();
    }
    if (auto s = group({{tensors_.output, &set->output}}); !s) return s.error();
    set->last_used = ++use_counter_;
    WeightSet* raw = set.get();
    sets_[p] = std::move(set);
    return raw;
}

Result<std::span<const float>> LlamaModel::decode(std::span<const BatchEntry> batch, Precision precision) {
    if (batch.empty()) return make_error(ErrorCode::kInvalidArgument, "decode() needs at least one batch entry");
    size_t total = 0;
    for (size_t i = 0; i < batch.size(); ++i) {
        const auto& e = batch[i];
        if (!kv_.valid(e.seq))
            return make_error(ErrorCode::kInvalidArgument, fmt::format("unknown sequence {}", e.seq));
        if (e.tokens.empty())
            return make_error(ErrorCode::kInvalidArgument, fmt::format("batch entry {} has no tokens", i));
        for (size_t j = 0; j < i; ++j)
            if (batch[j].seq == e.seq)
                return make_error(ErrorCode::kInvalidArgument,
                                  fmt::format("sequence {} appears twice in one batch", e.seq));
        for (TokenId t : e.tokens)
            if (t < 0 || static_cast<size_t>(t) >= info_.n_vocab)
                return make_error(ErrorCode::kInvalidArgument,
                                  fmt::format("token id {} is outside the vocabulary (0..{})", t, info_.n_vocab - 1));
        if (kv_.length(e.seq) + e.tokens.size() > info_.n_ctx)
            return make_error(ErrorCode::kOutOfRange,
                              fmt::format("sequence would hold {} tokens, more than the context of {}",
                                          kv_.length(e.seq) + e.tokens.size(), info_.n_ctx));
        total += e.tokens.size();
    }
    if (total > max_tokens_)
        return make_error(ErrorCode::kInvalidArgument,
                          fmt::format("batch carries {} tokens, more than the {} one call may carry", total,
                                      max_tokens_));
    auto weights = weights_for(precision);
    if (!weights) return weights.error();
    for (const auto& e : batch)
        if (auto s = kv_.reserve(e.seq, e.tokens.size()); !s) return s.error();

    tok_.clear();
    tok_seq_.clear();
    tok_pos_.clear();
    out_rows_.clear();
    for (const auto& e : batch) {
        const size_t start = kv_.length(e.seq);
        for (size_t j = 0; j < e.tokens.size(); ++j) {
            if (e.all_logits || j + 1 == e.tokens.size()) out_rows_.push_back(static_cast<uint32_t>(tok_.size()));
            tok_.push_back(e.tokens[j]);
            tok_seq_.push_back(e.seq);
            tok_pos_.push_back(static_cast<uint32_t>(start + j));
        }
    }
    // Attention blocks, costliest (most query-key pairs) first so the last
    // claims are the short ones.
    attention_blocks_.clear();
    for (size_t t = 0; t < tok_.size();) {
        size_t end = t + 1;
        while (end < tok_.size() && end - t < attention_block_tokens_ && tok_seq_[end] == tok_seq_[t]) ++end;
        attention_blocks_.push_back({static_cast<uint32_t>(t), static_cast<uint32_t>(end - t)});
        t = end;
    }
    auto block_cost = [&](const AttentionBlock& b) {
        return static_cast<uint64_t>(b.n_tokens) * (tok_pos_[b.first_token] + b.n_tokens);
    };
    std::sort(attention_blocks_.begin(), attention_blocks_.end(),
              [&](const AttentionBlock& a, const AttentionBlock& b) { return block_cost(a) > block_cost(b); });
    // Split the keys when there are fewer than four units per thread and the
    // longest sequence has enough keys for every split to be worth a claim.
    attention_splits_ = 1;
    const size_t units = attention_blocks_.size() * info_.n_head_kv;
    const size_t want_units = 4 * static_cast<size_t>(pool_->size());
    if (tok_.size() <= kSplitTokens && units < want_units) {
        size_t longest = 0;
        for (const auto& b : attention_blocks_)
            longest = std::max<size_t>(longest, tok_pos_[b.first_token] + b.n_tokens);
        attention_splits_ = std::min(
            {kMaxSplits, (want_units + units - 1) / units, std::max<size_t>(1, longest / kMinSplitKeys)});
    }
    const WeightSet& w = **weights;
    for (size_t i = 0; i < n_work_; ++i) work_[i].taken.store(0, std::memory_order_relaxed);
    if (info_.weight_bytes < params_.min_parallel_weight_bytes && tok_.size() <= 16) {
        pool_->run_alone([&](int ith, int nth) { forward(ith, nth, w); });
    } else {
        pool_->run([&](int ith, int nth) { forward(ith, nth, w); });
    }
    for (const auto& e : batch) kv_.commit(e.seq, e.tokens.size());
    return std::span<const float>(logits_.as<float>(), out_rows_.size() * info_.n_vocab);
}

void LlamaModel::prepare(DType wtype, const float* x, size_t ld, size_t t0, size_t t1, size_t cols,
                         uint8_t* out) const {
    if (t1 <= t0) return;
    const size_t stride = kernels::activation_row_bytes(wtype, cols);
    kernels::prepare_activations(wtype, x + t0 * ld, ld, t1 - t0, cols, out + t0 * stride);
}

// One unit: a query block, a KV head and (when the keys are split) one range of keys.
void LlamaModel::attention(size_t layer, size_t unit, size_t kv_head, size_t split, int ith) {
    const AttentionBlock& block = attention_blocks_[unit];
    const size_t hd = info_.head_dim, group = info_.n_head / info_.n_head_kv, Qd = info_.n_head * hd;
    const int32_t seq = tok_seq_[block.first_token];
    const size_t first_pos = tok_pos_[block.first_token];
    const size_t bt = kv_.shape().block_tokens;
    const size_t head_offset = kv_head * hd * (kv_.shape().type == DType::F16 ? 2 : 4);

    uint8_t* mine = attention_scratch_.data() + static_cast<size_t>(ith) * attention_scratch_stride_;
    auto* k_blocks = reinterpret_cast<const void**>(mine + attention_scratch_stride_) - 2 * attention_max_blocks_;
    const void** v_blocks = k_blocks + attention_max_blocks_;
    const auto& blocks = kv_.blocks(seq);
    const size_t n_blocks = (first_pos + block.n_tokens + bt - 1) / bt;
    for (size_t b = 0; b < n_blocks; ++b) {
        k_blocks[b] = kv_.block_k(blocks[b], layer) + head_offset;
        v_blocks[b] = kv_.block_v(blocks[b], layer) + head_offset;
    }

    kernels::AttentionArgs args;
    args.q = q_.as<float>() + block.first_token * Qd + kv_head * group * hd;
    args.q_token_stride = Qd;
    args.n_queries = block.n_tokens;
    args.n_group = group;
    args.head_dim = hd;
    args.first_pos = first_pos;
    args.scale = 1.0f / std::sqrt(static_cast<float>(hd));
    args.k_blocks = k_blocks;
    args.v_blocks = v_blocks;
    args.block_tokens = bt;
    args.kv_row_bytes = kv_.row_bytes();
    args.kv_type = kv_.shape().type;
    args.out = attn_.as<float>() + block.first_token * Qd + kv_head * group * hd;
    args.out_token_stride = Qd;
    args.scratch = reinterpret_cast<float*>(mine);
    if (attention_splits_ > 1) {
        // Ranges of whole tiles; the last ones may be empty for short sequences.
        const size_t keys = first_pos + block.n_tokens;
        const size_t tile = kernels::kAttentionTileKeys;
        const size_t per_split = (keys + attention_splits_ * tile - 1) / (attention_splits_ * tile) * tile;
        args.kv_begin = std::min(keys, split * per_split);
        args.kv_end = std::min(keys, (split + 1) * per_split);
        const size_t T = tok_.size();
        args.out = split_out_.as<float>() + (split * T + block.first_token) * Qd + kv_head * group * hd;
        const size_t state = (split * T + block.first_token) * info_.n_head + kv_head * group;
        args.row_max = split_max_.as<float>() + state;
        args.row_sum = split_sum_.as<float>() + state;
        args.row_state_token_stride = info_.n_head;
    }
    kernels::attention(args);
}

// Token t's heads of one KV group from the splits' partial softmaxes.
void LlamaModel::merge_attention_splits(size_t t, size_t kv_head) {
    const size_t hd = info_.head_dim, NH = info_.n_head, group = NH / info_.n_head_kv, Qd = NH * hd;
    const size_t T = tok_.size(), S = attention_splits_;
    for (size_t h = kv_head * group; h < (kv_head + 1) * group; ++h) {
        float top = -std::numeric_limits<float>::infinity();
        for (size_t s = 0; s < S; ++s)
            if (split_sum_.as<float>()[(s * T + t) * NH + h] > 0.f)
                top = std::max(top, split_max_.as<float>()[(s * T + t) * NH + h]);
        float* out = attn_.as<float>() + t * Qd + h * hd;
        std::memset(out, 0, hd * sizeof(float));
        float total = 0.f;
        for (size_t s = 0; s < S; ++s) {
            const float sum = split_sum_.as<float>()[(s * T + t) * NH + h];
            if (!(sum > 0.f)) continue;
            const float weight = sum * std::exp(split_max_.as<float>()[(s * T + t) * NH + h] - top);
            kernels::axpy_f32(weight, split_out_.as<float>() + (s * T + t) * Qd + h * hd, out, hd);
            total += weight;
        }
        const float inv = 1.f / total;
        for (size_t i = 0; i < hd; ++i) out[i] *= inv;
    }
}

void LlamaModel::forward(int ith, int nth, const WeightSet& w) {
    const size_t T = tok_.size();
    const size_t E = info_.n_embd, hd = info_.head_dim, F = info_.n_ff, V = info_.n_vocab;
    const size_t NH = info_.n_head, NKV = info_.n_head_kv;
    const size_t Qd = NH * hd, KVd = NKV * hd, n_rot = info_.n_rot, half = n_rot / 2;
    float* Qb = q_.as<float>();
    float* Kb = k_.as<float>();
    float* Vb = v_.as<float>();
    float* A = attn_.as<float>();
    float* tmp = tmp_.as<float>();
    float* G = gate_.as<float>();
    float* U = up_.as<float>();
    uint8_t* P = prep_.data();  // inputs of the output and down projections
    const bool kv_f16 = kv_.shape().type == DType::F16;

    // The residual stream: shared and split by tokens, or replicated per thread.
    const bool replicated = T <= kReplicatedTokens;
    float* X = x_.as<float>();
    float* Xn = xn_.as<float>();
    float* rope = rope_.as<float>();
    uint8_t* Pn = prepn_.data();  // inputs of the QKV and gate/up projections
    size_t t0, t1;
    if (replicated) {
        uint8_t* mine = private_.data() + static_cast<size_t>(ith) * private_stride_;
        X = reinterpret_cast<float*>(mine);
        Xn = X + kReplicatedTokens * E;
        rope = Xn + kReplicatedTokens * E;
        Pn = reinterpret_cast<uint8_t*>(rope + kReplicatedTokens * n_rot);
        t0 = 0;
        t1 = T;
    } else {
        ThreadPool::split(T, 1, ith, nth, t0, t1);
    }
    // A barrier that only the shared stream needs.
    auto stream_barrier = [&] {
        if (!replicated) pool_->barrier();
    };

    // Claims chunks of [0, n) from this phase's shared counter until none are left.
    size_t phase = 0;
    auto claim_chunks = [&](size_t n, size_t chunk, auto&& body) {
        std::atomic<uint64_t>& next = work_[phase++ * nth].taken;
        for (;;) {
            const size_t begin = next.fetch_add(chunk, std::memory_order_relaxed);
            if (begin >= n) break;
            body(begin, std::min(n, begin + chunk));
        }
    };
    // Runs [0, n) in units of `unit` rows (ThreadPool::for_each_unit).
    auto claim_rows = [&](size_t n, size_t unit, auto&& body) {
        ThreadPool::for_each_unit(&work_[phase++ * nth], (n + unit - 1) / unit, ith, nth,
                                  [&](size_t u) { body(u * unit, std::min(n, (u + 1) * unit)); });
    };
    // Rows per unit: a multiple of 32 (the Q8_0 block, so a unit's outputs can
    // be prepared on their own), about 64 units per thread so that the last
    // ones balance the threads, and the compare-and-swap per unit stays
    // negligible against the unit's kernel time.
    static_assert(32 % kGateUpBlock == 0, "gate/up units must be whole blocks");
    auto rows_per_unit = [&](size_t rows) { return std::max<size_t>(32, (rows / (64 * nth) + 31) / 32 * 32); };

    // Embeddings and rotary tables for this thread's tokens.
    const auto* embd = static_cast<const uint8_t*>(tensors_.token_embd->data);
    const size_t embd_row = dtype_row_bytes(tensors_.token_embd->dtype, E);
    for (size_t t = t0; t < t1; ++t) {
        dequantize_row(tensors_.token_embd->dtype, embd + static_cast<size_t>(tok_[t]) * embd_row, X + t * E, E);
        for (size_t i = 0; i < half; ++i) {
            const float theta = static_cast<float>(tok_pos_[t]) * inv_freq_[i];
            rope[t * n_rot + 2 * i] = std::cos(theta);
            rope[t * n_rot + 2 * i + 1] = std::sin(theta);
        }
    }

    auto rotate = [&](float* x, size_t t) {
        const float* cs = rope + t * n_rot;
        if (info_.rope_neox) {
            for (size_t i = 0; i < half; ++i) {
                const float a = x[i], b = x[i + half];
                x[i] = a * cs[2 * i] - b * cs[2 * i + 1];
                x[i + half] = a * cs[2 * i + 1] + b * cs[2 * i];
            }
        } else {
            for (size_t i = 0; i < half; ++i) {
                const float a = x[2 * i], b = x[2 * i + 1];
                x[2 * i] = a * cs[2 * i] - b * cs[2 * i + 1];
                x[2 * i + 1] = a * cs[2 * i + 1] + b * cs[2 * i];
            }
        }
    };

    for (size_t l = 0; l < info_.n_layer; ++l) {
        const LayerWeights& W = w.layers[l];
        const LayerVectors& LV = layer_vectors_[l];
        // Attention heads prepare their own slice of the output projection's
        // input, unless a head is not a whole number of Q8_0 blocks.
        const bool heads_prepare = W.wo.type != DType::Q8_0 || hd % kQ8_0Block == 0;

        // (1) residual from the previous layer's FFN, attention norm, prepare.
        for (size_t t = t0; t < t1; ++t) {
            if (l > 0)
                for (size_t i = 0; i < E; ++i) X[t * E + i] += tmp[t * E + i];
            kernels::rms_norm(X + t * E, LV.attn_norm, info_.rms_eps, Xn + t * E, E);
        }
        prepare(W.wq.type, Xn, E, t0, t1, E, Pn);
        stream_barrier();

        // (2) Q, K, V projections split by heads, then bias, RoPE and the KV store.
        claim_rows(NH + 2 * NKV, 1, [&](size_t u0, size_t u1) {
            auto project = [&](const Matrix& m, float* out, size_t ld, size_t h0, size_t h1) {
                if (h1 > h0) kernels::matmul(m.type, m.data, E, Pn, T, out, ld, h0 * hd, h1 * hd);
            };
            project(W.wq, Qb, Qd, std::min(u0, NH), std::min(u1, NH));
            project(W.wk, Kb, KVd, std::clamp(u0, NH, NH + NKV) - NH, std::clamp(u1, NH, NH + NKV) - NH);
            project(W.wv, Vb, KVd, std::max(u0, NH + NKV) - NH - NKV, std::max(u1, NH + NKV) - NH - NKV);
            for (size_t u = u0; u < u1; ++u) {
                for (size_t t = 0; t < T; ++t) {
                    float* x;
                    const float* bias;
                    if (u < NH) {
                        x = Qb + t * Qd + u * hd;
                        bias = LV.bq ? LV.bq + u * hd : nullptr;
                    } else if (u < NH + NKV) {
                        x = Kb + t * KVd + (u - NH) * hd;
                        bias = LV.bk ? LV.bk + (u - NH) * hd : nullptr;
                    } else {
                        x = Vb + t * KVd + (u - NH - NKV) * hd;
                        bias = LV.bv ? LV.bv + (u - NH - NKV) * hd : nullptr;
                    }
                    if (bias)
                        for (size_t i = 0; i < hd; ++i) x[i] += bias[i];
                    if (u < NH + NKV) rotate(x, t);
                    if (u >= NH) {
                        const bool is_k = u < NH + NKV;
                        const size_t kvh = is_k ? u - NH : u - NH - NKV;
                        uint8_t* dst = (is_k ? kv_.k_at(tok_seq_[t], l, tok_pos_[t])
                                             : kv_.v_at(tok_seq_[t], l, tok_pos_[t])) +
                                       kvh * hd * (kv_f16 ? 2 : 4);
                        if (kv_f16) {
                            kernels::convert_f32_to_f16(x, reinterpret_cast<uint16_t*>(dst), hd);
                        } else {
                            std::memcpy(dst, x, hd * 4);
                        }
                    }
                }
            }
        });
        pool_->barrier();

        // (3) attention, by (query block, KV head) units claimed costliest
        // first; each unit prepares its slice of the output projection's input.
        {
            const size_t stride = kernels::activation_row_bytes(W.wo.type, Qd);
            const size_t group = NH / NKV;
            const size_t S = attention_splits_;
            claim_chunks(attention_blocks_.size() * NKV * S, 1, [&](size_t u0, size_t u1) {
                for (size_t u = u0; u < u1; ++u) {
                    const size_t unit = u / (NKV * S), kvh = u / S % NKV, split = u % S;
                    attention(l, unit, kvh, split, ith);
                    if (heads_prepare && S == 1) {
                        const AttentionBlock& b = attention_blocks_[unit];
                        kernels::prepare_activation_columns(W.wo.type, A + b.first_token * Qd, Qd, b.n_tokens, Qd,
                                                            kvh * group * hd, (kvh + 1) * group * hd,
                                                            P + b.first_token * stride);
                    }
                }
            });
            if (S > 1) {
                pool_->barrier();
                claim_chunks(T * NKV, 1, [&](size_t u0, size_t u1) {
                    for (size_t u = u0; u < u1; ++u) {
                        const size_t t = u / NKV, kvh = u % NKV;
                        merge_attention_splits(t, kvh);
                        if (heads_prepare)
                            kernels::prepare_activation_columns(W.wo.type, A + t * Qd, Qd, 1, Qd, kvh * group * hd,
                                                                (kvh + 1) * group * hd, P + t * stride);
                    }
                });
            }
        }
        pool_->barrier();
        if (!heads_prepare) {
            size_t p0, p1;
            ThreadPool::split(T, 1, ith, nth, p0, p1);
            prepare(W.wo.type, A, Qd, p0, p1, Qd, P);
            pool_->barrier();
        }

        // (4) output projection.
        claim_rows(E, rows_per_unit(E), [&](size_t r0, size_t r1) {
            kernels::matmul(W.wo.type, W.wo.data, Qd, P, T, tmp, E, r0, r1);
        });
        pool_->barrier();

        // (5) residual, FFN norm, prepare.
        for (size_t t = t0; t < t1; ++t) {
            for (size_t i = 0; i < E; ++i) X[t * E + i] += tmp[t * E + i];
            kernels::rms_norm(X + t * E, LV.ffn_norm, info_.rms_eps, Xn + t * E, E);
        }
        prepare(W.w_gate.type, Xn, E, t0, t1, E, Pn);
        stream_barrier();

        // (6) gate and up projections, SwiGLU and the down projection's input
        // for this thread's rows.
        claim_rows(F, rows_per_unit(F), [&](size_t r0, size_t r1) {
            // Block by block when gate and up alternate (units are whole blocks).
            const size_t step = W.w_gate.block ? W.w_gate.block : r1 - r0;
            for (size_t r = r0; r < r1; r += step) {
                const size_t n = std::min(step, r1 - r);
                kernels::matmul(W.w_gate.type, W.w_gate.row(r), E, Pn, T, G + r, F, 0, n);
                kernels::matmul(W.w_up.type, W.w_up.row(r), E, Pn, T, U + r, F, 0, n);
            }
            for (size_t t = 0; t < T; ++t) kernels::swiglu(G + t * F + r0, U + t * F + r0, G + t * F + r0, r1 - r0);
            kernels::prepare_activation_columns(W.w_down.type, G, F, T, F, r0, r1, P);
        });
        pool_->barrier();

        // (7) down projection; its residual is added at the top of the next layer.
        claim_rows(E, rows_per_unit(E), [&](size_t r0, size_t r1) {
            kernels::matmul(W.w_down.type, W.w_down.data, F, P, T, tmp, E, r0, r1);
        });
        pool_->barrier();
    }

    // Final residual and norm for the rows whose logits are wanted.
    const size_t n_out = out_rows_.size();
    size_t o0 = 0, o1 = n_out;
    if (!replicated) ThreadPool::split(n_out, 1, ith, nth, o0, o1);
    for (size_t o = o0; o < o1; ++o) {
        const size_t t = out_rows_[o];
        for (size_t i = 0; i < E; ++i) X[t * E + i] += tmp[t * E + i];
        kernels::rms_norm(X + t * E, output_norm_, info_.rms_eps, Xn + o * E, E);
    }
    prepare(w.output.type, Xn, E, o0, o1, E, Pn);
    stream_barrier();
    claim_rows(V, rows_per_unit(V), [&](size_t r0, size_t r1) {
        kernels::matmul(w.output.type, w.output.data, E, Pn, n_out, logits_.as<float>(), V, r0, r1);
    });
}

}  // namespace

Result<std::unique_ptr<Model>> Model::load(const ModelParams& params) {
    auto file = GgufFile::open(params.path);
    if (!file) return file.error();
    ModelInfo info;
    ModelTensors tensors;
    if (auto s = read_model_description(**file, params.n_ctx, info, tensors); !s)
        return make_error(s.error().code, fmt::format("{}: {}", params.path, s.error().message));
    auto tok = Tokenizer::from_gguf(**file);
    if (!tok) return make_error(tok.error().code, fmt::format("{}: {}", params.path, tok.error().message));
    if ((*tok)->vocab_size() != info.n_vocab)
        return make_error(ErrorCode::kCorrupt, fmt::format("{}: the tokenizer has {} tokens but the embedding has {} rows",
                                                           params.path, (*tok)->vocab_size(), info.n_vocab));
    auto model = std::make_unique<LlamaModel>(std::move(*file), std::move(*tok), std::move(info), std::move(tensors),
                                              params);
    if (auto s = model->init(); !s) return s.error();
    return std::unique_ptr<Model>(std::move(model));
}

}  // namespace assistd::engine
