#include "common/cpu_features.h"

#include <cpuid.h>

#include <cstdlib>
#include <cstring>

namespace assistd {
namespace {

CpuFeatures detect() {
    CpuFeatures f;
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
    const bool osxsave = c & (1u << 27);
    f.fma = c & (1u << 12);
    f.f16c = c & (1u << 29);
    unsigned long long xcr0 = 0;
    if (osxsave) {
        unsigned lo, hi;
        __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
        xcr0 = (static_cast<unsigned long long>(hi) << 32) | lo;
    }
    const bool ymm_os = (xcr0 & 0x6) == 0x6;
    const bool zmm_os = (xcr0 & 0xe6) == 0xe6;
    if (!ymm_os) { f.fma = f.f16c = false; return f; }
    __cpuid_count(7, 0, a, b, c, d);
    f.avx2 = b & (1u << 5);
    if (zmm_os) {
        f.avx512f = b & (1u << 16);
        f.avx512bw = b & (1u << 30);
        f.avx512vl = b & (1u << 31);
        f.avx512vnni = c & (1u << 11);
        f.avx512fp16 = d & (1u << 23);
        f.amx_bf16 = d & (1u << 22);
        unsigned a1 = 0, b1 = 0, c1 = 0, d1 = 0;
        __cpuid_count(7, 1, a1, b1, c1, d1);
        f.avx512bf16 = a1 & (1u << 5);
    }
    if (const char* cap = std::getenv("ASSISTD_CPU")) {
        if (std::strcmp(cap, "scalar") == 0) {
            f = CpuFeatures{};
        } else if (std::strcmp(cap, "avx2") == 0) {
            f.avx512f = f.avx512bw = f.avx512vl = f.avx512bf16 = f.avx512vnni = false;
            f.avx512fp16 = f.amx_bf16 = false;
        }
    }
    return f;
}

}  // namespace

std::string CpuFeatures::describe() const {
    std::string s;
    auto add = [&](bool on, const char* name) {
        if (!on) return;
        if (!s.empty()) s += ' ';
        s += name;
    };
    add(avx2, "avx2");
    add(fma, "fma");
    add(f16c, "f16c");
    add(avx512f, "avx512f");
    add(avx512bw, "avx512bw");
    add(avx512vl, "avx512vl");
    add(avx512bf16, "avx512bf16");
    add(avx512vnni, "avx512vnni");
    add(avx512fp16, "avx512fp16");
    add(amx_bf16, "amx-bf16");
    return s.empty() ? std::string("baseline x86-64") : s;
}

const CpuFeatures& cpu_features() {
    static const CpuFeatures features = detect();
    return features;
}

}  // namespace assistd
