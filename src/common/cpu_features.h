#pragma once
// What the CPU we run on can do; read once, used by kernel dispatch.
#include <string>

namespace assistd {

struct CpuFeatures {
    bool avx2 = false;
    bool fma = false;
    bool f16c = false;
    bool avx512f = false;
    bool avx512bw = false;
    bool avx512vl = false;
    bool avx512bf16 = false;
    bool avx512vnni = false;
    bool avx512fp16 = false;
    bool amx_bf16 = false;

    bool has_avx2_tier() const { return avx2 && fma && f16c; }
    bool has_avx512_tier() const { return has_avx2_tier() && avx512f && avx512bw && avx512vl; }
    std::string describe() const;
};

// Detected at first call; the environment variable ASSISTD_CPU=scalar|avx2|avx512
// caps the tier (for tests that compare every kernel tier on one machine).
const CpuFeatures& cpu_features();

}  // namespace assistd
