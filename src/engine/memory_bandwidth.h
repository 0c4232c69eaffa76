#pragma once
// A STREAM-like probe of the memory bandwidth decode can hope for: a
// read-only sum over an array much larger than the last-level cache, plus
// copy (c = a) and triad (a = b + s * c), split across the engine's thread
// pool and run with the widest loads the CPU has. `assistd bench membw` and
// `assistd bench engine --membw` print it, so decode's weight reads can be
// compared with what the machine delivers the same minute.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "common/result.h"

namespace assistd::engine {

struct MemoryBandwidthOptions {
    int n_threads = 1;
    size_t array_bytes = size_t{1} << 30;  // per array (read uses one, copy two, triad three)
    int reps = 5;
    bool huge_pages = true;      // advise transparent huge pages, as the weight arena does
    bool copy_and_triad = true;  // false: the read stream alone, over one array
};

// GB/s = 1e9 bytes per second. Bytes per pass count each array once, as
// STREAM does (read: 1, copy: 2, triad: 3 arrays; no write-allocate traffic).
struct StreamFigure {
    double best_gb_per_s = 0;
    double median_gb_per_s = 0;
    double bytes_per_pass = 0;
};

struct MemoryBandwidth {
    int n_threads = 0;
    size_t array_bytes = 0;
    int reps = 0;
    bool huge_pages = false;
    size_t huge_page_bytes = 0;      // of all the arrays, from /proc/self/smaps (0 if unknown)
    std::string kernels;             // the kernel tier whose streams ran
    StreamFigure read, copy, triad;  // copy and triad stay 0 unless asked for
    // The read stream's sum of the array's 64-bit words, and the same sum
    // taken by plain code while filling it: every pass must equal it.
    uint64_t read_checksum = 0;
    uint64_t expected_checksum = 0;
    double seconds = 0;  // the whole probe, allocation and checks included
};

// The value stored in element i of the probe's first array (a float holding a
// small integer, so the triad stays exact); the read checksum sums this array's
// bytes as little-endian 64-bit words.
float memory_probe_element(size_t i);

// The probe's arrays, allocated, pre-faulted and filled once, for passes
// interleaved with other work (`bench engine --membw` runs read passes right
// after each decode run, so both see the same minute's bandwidth).
class MemoryProbe {
public:
    // Errors as measure_memory_bandwidth's (options.reps is not used here).
    static Result<std::unique_ptr<MemoryProbe>> create(const MemoryBandwidthOptions& options);
    ~MemoryProbe();
    MemoryProbe(const MemoryProbe&) = delete;
    MemoryProbe& operator=(const MemoryProbe&) = delete;

    // One timed pass, in GB/s. A read pass whose checksum differs from the
    // array's sum is a kInternal error; copy and triad need copy_and_triad.
    Result<double> read_pass();
    Result<double> copy_pass();
    Result<double> triad_pass();
    // Every element copy and triad wrote (kInternal if one is wrong).
    Status check_copy_and_triad();

    const MemoryBandwidthOptions& options() const;
    uint64_t expected_checksum() const;
    uint64_t read_checksum() const;  // of the last read pass
    size_t huge_page_bytes() const;

private:
    struct Impl;
    explicit MemoryProbe(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

// Runs the probe: `reps` read passes, then as many copy and triad passes. Errors: bad options (kInvalidArgument), arrays larger than
// three quarters of the machine's memory or an allocation that fails
// (kResourceExhausted), and a stream whose result is wrong (kInternal).
Result<MemoryBandwidth> measure_memory_bandwidth(const MemoryBandwidthOptions& options);

}  // namespace assistd::engine
