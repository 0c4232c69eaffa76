// libFuzzer: standby KV runs as they arrive from a peer (serve/kv_standby.h,
// serve/kv_standby_store.h). The first byte says what the rest is:
//  - kRaw: a run's bytes, as a peer sent them. Taken or refused; a run that
//    decodes encodes back to the same bytes, and one that is taken is held
//    whole and comes back from take() as blobs that parse from position 0.
//  - kMutatedValid: the rest makes a valid run (tokens and K/V values from the
//    input, a real blob of a small KV cache) continued by a second one, and
//    one byte of a blob is changed where the input says: the change is
//    refused (the checksum covers every byte of a blob), the valid ones taken.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "engine/kv_blob.h"
#include "engine/kv_cache.h"
#include "serve/kv_standby.h"
#include "serve/kv_standby_store.h"

using namespace assistd;

namespace {

void check(bool ok) {
    if (!ok) __builtin_trap();
}

constexpr uint64_t kFingerprint = 0x5eed;

// Everything a store holds for `key` comes back as blobs that chain from 0.
void check_chain(serve::KvStandbyStore& store, std::string_view key, const std::vector<engine::TokenId>& tokens) {
    auto found = store.take(key, tokens, 0);
    if (!found) return;
    size_t at = 0;
    for (const auto& part : found->parts) {
        auto view = engine::parse_kv_blob(part.blob);
        check(view.ok());
        check(view->first == at);  // from position 0, each run where the one before it ends
        check(view->fingerprint == kFingerprint);
        at = part.end;
    }
    check(found->match <= tokens.size());
}

void raw(std::string_view bytes) {
    auto run = serve::decode_kv_run(bytes);
    if (run) check(serve::encode_kv_run(run->key, run->prefix_hash, run->blob) == bytes);
    serve::KvStandbyStore store({1u << 20, 1, {}}, kFingerprint);
    const auto st = store.receive(bytes);
    if (!st.ok()) {
        check(store.stats().sessions == 0 && store.stats().bytes == 0);
        return;
    }
    check(run.ok());
    auto view = engine::parse_kv_blob(run->blob);
    check(view.ok() && view->first == 0 && !view->tokens.empty());
    check(store.stats().sessions == 1 && store.stats().bytes == run->blob.size());
    check_chain(store, run->key, view->tokens);
}

void mutated_valid(std::string_view in) {
    if (in.size() < 4) return;
    const size_t flip_at = static_cast<uint8_t>(in[0]) | static_cast<size_t>(static_cast<uint8_t>(in[1])) << 8;
    const uint8_t flip = static_cast<uint8_t>(in[2]) | 1;  // never a no-op
    const size_t n1 = 1 + static_cast<uint8_t>(in[3]) % 24, n2 = 1 + (static_cast<uint8_t>(in[3]) >> 4) % 8;
    in.remove_prefix(4);
    engine::KvCacheShape shape;
    shape.n_layer = 2;
    shape.n_head_kv = 1;
    shape.head_dim = 4;
    shape.block_tokens = 16;
    shape.n_blocks = 4;
    shape.max_sequences = 1;
    auto kv = engine::KvCache::create(shape);
    check(kv.ok());
    auto seq = kv->create_sequence();
    check(seq.ok());
    const size_t n = n1 + n2;
    check(kv->reserve(*seq, n).ok());
    std::vector<engine::TokenId> tokens(n);
    for (size_t i = 0; i < n; ++i) {
        tokens[i] = i < in.size() ? static_cast<uint8_t>(in[i]) : static_cast<engine::TokenId>(i);
        for (size_t layer = 0; layer < shape.n_layer; ++layer) {
            std::memset(kv->k_at(*seq, layer, i), static_cast<int>(i + layer), kv->row_bytes());
            std::memset(kv->v_at(*seq, layer, i), static_cast<int>(i * 3 + layer), kv->row_bytes());
        }
    }
    kv->commit(*seq, n);
    auto b1 = engine::encode_kv_blob(*kv, *seq, 0, n1, std::span(tokens).first(n1), kFingerprint);
    auto b2 = engine::encode_kv_blob(*kv, *seq, n1, n, std::span(tokens).subspan(n1), kFingerprint);
    check(b1.ok() && b2.ok());
    const std::string key = "tenant:session";
    std::string r1 = serve::encode_kv_run(key, serve::token_hash({}), *b1);
    std::string r2 = serve::encode_kv_run(key, serve::token_hash(std::span(tokens).first(n1)), *b2);
    // The byte to change: in the first blob, or in the second.
    const size_t head = serve::encode_kv_run_header(key, 0).size();
    const bool second = flip_at % 2 == 1;
    std::string& target = second ? r2 : r1;
    const size_t blob_bytes = target.size() - head;
    target[head + (flip_at / 2) % blob_bytes] ^= static_cast<char>(flip);

    serve::KvStandbyStore store({1u << 20, 1, {}}, kFingerprint);
    const bool took1 = store.receive(r1).ok();
    const bool took2 = store.receive(r2).ok();
    check(took1 == second);             // the changed blob is refused...
    check(!second || !took2);           // ... and so is the valid second run, when the first was refused
    check(took2 == false || took1);     // a continuation is never taken without what it continues
    if (second) check(store.stats().sessions == 1 && store.stats().bytes == b1->size());
    check_chain(store, key, tokens);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size == 0) return 0;
    const std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
    if (data[0] % 2 == 0)
        raw(in);
    else
        mutated_valid(in);
    return 0;
}
