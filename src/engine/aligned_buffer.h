#pragma once
// A 64-byte aligned buffer that never reallocates after construction, for the
// model's weights and activations and the memory-bandwidth probe's arrays.
#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <utility>

namespace assistd::engine {

// A huge one is anonymous memory aligned to 2 MiB and advised as transparent huge
// pages (a hint: the kernel may still give 4 KiB pages).
class AlignedBuffer {
  public:
    static constexpr size_t kHugePage = size_t{2} << 20;

    AlignedBuffer() = default;
    explicit AlignedBuffer(size_t bytes, bool huge = false) : bytes_(bytes) {
        if (!bytes) return;
        if (huge) {
            map_bytes_ = (bytes + kHugePage - 1) / kHugePage * kHugePage + kHugePage;
            void* p = mmap(nullptr, map_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                           -1, 0);
            if (p == MAP_FAILED) throw std::bad_alloc();
            map_ = static_cast<uint8_t*>(p);
            ptr_ = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(p) + kHugePage - 1) /
                                              kHugePage * kHugePage);
            madvise(ptr_, map_bytes_ - static_cast<size_t>(ptr_ - map_), MADV_HUGEPAGE);
            return;
        }
        ptr_ = static_cast<uint8_t*>(std::aligned_alloc(64, (bytes + 63) / 64 * 64));
        if (!ptr_) throw std::bad_alloc();
    }
    AlignedBuffer(AlignedBuffer&& o) noexcept { swap(o); }
    AlignedBuffer& operator=(AlignedBuffer&& o) noexcept {
        swap(o);
        return *this;
    }
    ~AlignedBuffer() {
        if (map_)
            munmap(map_, map_bytes_);
        else
            std::free(ptr_);
    }
    uint8_t* data() const { return ptr_; }
    size_t size() const { return bytes_; }
    template <typename T>
    T* as() const {
        return reinterpret_cast<T*>(ptr_);
    }

  private:
    void swap(AlignedBuffer& o) noexcept {
        std::swap(ptr_, o.ptr_);
        std::swap(bytes_, o.bytes_);
        std::swap(map_, o.map_);
        std::swap(map_bytes_, o.map_bytes_);
    }
    uint8_t* ptr_ = nullptr;
    size_t bytes_ = 0;
    uint8_t* map_ = nullptr;  // the whole mapping of a huge buffer
    size_t map_bytes_ = 0;
};

}  // namespace assistd::engine
