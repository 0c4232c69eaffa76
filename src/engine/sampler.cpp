#include <algorithm>
#include <cmath>
#include <limits>

#include "common/random.h"
#include "engine/engine.h"

namespace assistd::engine {
namespace {


double uniform01(uint64_t& state) { return static_cast<double>(splitmix64(state) >> 11) * 0x1.0p-53; }

}  // namespace

Sampler::Sampler(const SamplerParams& params, size_t n_vocab_hint) : params_(params), rng_state_(params.seed) {
    candidates_.reserve(n_vocab_hint);
    scratch_.reserve(n_vocab_hint);
}

TokenId Sampler::sample(std::span<const float> logits, std::span<const TokenId> history) {
    const size_t n = logits.size();
    if (n == 0) return -1;
    const bool penalize = params_.repetition_penalty != 1.f && !history.empty();
    const float* l = logits.data();
    if (penalize) {
        scratch_.assign(logits.begin(), logits.end());
        const size_t start = history.size() > params_.repetition_window ? history.size() - params_.repetition_window : 0;
        for (size_t i = start; i < history.size(); ++i) {
            const TokenId t = history[i];
            if (t < 0 || static_cast<size_t>(t) >= n) continue;
            float& v = scratch_[t];
            // Applied once per distinct token: mark by sign-preserving division only if not yet penalised.
            bool seen = false;
            for (size_t j = start; j < i; ++j)
                if (history[j] == t) { seen = true; break; }
            if (seen) continue;
            v = v > 0 ? v / params_.repetition_penalty : v * params_.repetition_penalty;
        }
        l = scratch_.data();
    }

    if (params_.temperature <= 0.f) {
        size_t best = 0;
        for (size_t i = 1; i < n; ++i)
            if (l[i] > l[best]) best = i;
        return static_cast<TokenId>(best);
    }

    candidates_.resize(n);
    for (size_t i = 0; i < n; ++i) candidates_[i] = {l[i] / params_.temperature, static_cast<TokenId>(i)};
    size_t keep = n;
    auto by_logit = [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); };
    if (params_.top_k > 0 && static_cast<size_t>(params_.top_k) < n) {
        keep = static_cast<size_t>(params_.top_k);
        std::partial_sort(candidates_.begin(), candidates_.begin() + keep, candidates_.end(), by_logit);
    } else {
        std::sort(candidates_.begin(), candidates_.end(), by_logit);
    }
    // Softmax over the kept candidates (sorted, so [0] is the max).
    const float max_logit = candidates_[0].first;
    double sum = 0;
    for (size_t i = 0; i < keep; ++i) {
        candidates_[i].first = std::exp(candidates_[i].first - max_logit);
        sum += candidates_[i].first;
    }
    for (size_t i = 0; i < keep; ++i) candidates_[i].first = static_cast<float>(candidates_[i].first / sum);
    if (params_.min_p > 0.f) {
        const float floor = candidates_[0].first * params_.min_p;
        size_t k = 1;
        while (k < keep && candidates_[k].first >= floor) ++k;
        keep = k;
    }
    if (params_.top_p < 1.f) {
        double cum = 0;
        size_t k = 0;
        while (k < keep) {
            cum += candidates_[k].first;
            ++k;
            if (cum >= params_.top_p) break;
        }
        keep = std::max<size_t>(1, k);
    }
    double total = 0;
    for (size_t i = 0; i < keep; ++i) total += candidates_[i].first;
    double r = uniform01(rng_state_) * total;
    for (size_t i = 0; i < keep; ++i) {
        r -= candidates_[i].first;
        if (r <= 0) return candidates_[i].second;
    }
    return candidates_[keep - 1].second;
}

StopMatch find_stop(std::string_view text, std::span<const std::string> stops) {
    StopMatch m;
    for (const auto& s : stops) {
        if (s.empty()) continue;
        const size_t pos = text.find(s);
        if (pos != std::string_view::npos && pos < m.position) m.position = pos;
        // Longest suffix of text that is a proper prefix of s.
        const size_t max_k = std::min(s.size() - 1, text.size());
        for (size_t k = max_k; k > 0; --k) {
            if (text.substr(text.size() - k) == std::string_view(s).substr(0, k)) {
                m.hold_back = std::max(m.hold_back, k);
                break;
            }
        }
    }
    return m;
}

}  // namespace assistd::engine
