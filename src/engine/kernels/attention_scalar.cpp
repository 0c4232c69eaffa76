// The attention kernel and exp on the portable tier: "vectors" of 8 floats in
// plain loops (the compiler may vectorise them), std::exp for exp. The
// reference the SIMD tiers' attention is tested against alongside double.
#include <cmath>
#include <limits>

#include "engine/kernels/attention_impl.h"

namespace assistd::engine::kernels {
namespace {

struct ScalarVec {
    static constexpr size_t W = 8;
    static constexpr size_t kPositionBlock = 4;
    static constexpr size_t kDimBlock = 4;
    struct T {
        float v[W];
    };
    template <typename F>
    static T map(F f) {
        T r;
        for (size_t i = 0; i < W; ++i) r.v[i] = f(i);
        return r;
    }
    static T zero() { return set1(0.f); }
    static T set1(float x) {
        return map([&](size_t) { return x; });
    }
    static T load(const float* p) {
        return map([&](size_t i) { return p[i]; });
    }
    static void store(float* p, T x) {
        for (size_t i = 0; i < W; ++i) p[i] = x.v[i];
    }
    static T fma(T a, T b, T c) {
        return map([&](size_t i) { return a.v[i] * b.v[i] + c.v[i]; });
    }
    static T add(T a, T b) {
        return map([&](size_t i) { return a.v[i] + b.v[i]; });
    }
    static T sub(T a, T b) {
        return map([&](size_t i) { return a.v[i] - b.v[i]; });
    }
    static T mul(T a, T b) {
        return map([&](size_t i) { return a.v[i] * b.v[i]; });
    }
    static T max(T a, T b) {
        return map([&](size_t i) { return a.v[i] > b.v[i] ? a.v[i] : b.v[i]; });
    }
    static float first(T x) { return x.v[0]; }
    static float reduce_add(T x) {
        float s = 0.f;
        for (size_t i = 0; i < W; ++i) s += x.v[i];
        return s;
    }
    static T exp(T x) {
        return map([&](size_t i) { return std::exp(x.v[i]); });
    }
    static T mask_greater(T s, T pos, T limit) {
        return map([&](size_t i) {
            return pos.v[i] > limit.v[i] ? -std::numeric_limits<float>::infinity() : s.v[i];
        });
    }
    static void convert_f16(const uint16_t* x, float* y, size_t n) {
        for (size_t i = 0; i < n; ++i) y[i] = fp16_to_fp32(x[i]);
    }
};

}  // namespace

void attention_scalar(const AttentionArgs& args) {
    attention_detail::attention<ScalarVec>(args);
}

void exp_f32_scalar(const float* x, float* y, size_t n) {
    for (size_t i = 0; i < n; ++i) y[i] = std::exp(x[i]);
}

}  // namespace assistd::engine::kernels
