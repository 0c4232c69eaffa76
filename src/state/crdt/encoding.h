#pragma once
// Little binary building blocks: LEB128 varints, zigzag signed ints,
// length-prefixed strings. The reader never reads past its end and reports
// failure instead, so hostile bytes become errors, not crashes.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace assistd::state::crdt {

class Writer {
public:
    void u8(uint8_t v) { out_.push_back(static_cast<char>(v)); }
    void varint(uint64_t v) {
        while (v >= 0x80) {
            out_.push_back(static_cast<char>((v & 0x7F) | 0x80));
            v >>= 7;
        }
        out_.push_back(static_cast<char>(v));
    }
    void svarint(int64_t v) { varint((static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63)); }
    void f64(double v) {
        char b[8];
        std::memcpy(b, &v, 8);
        out_.append(b, 8);
    }
    void bytes(std::string_view s) {
        varint(s.size());
        out_.append(s);
    }
    void raw(std::string_view s) { out_.append(s); }
    std::string& str() { return out_; }
    const std::string& str() const { return out_; }
    std::string take() { return std::move(out_); }

private:
    std::string out_;
};

class Reader {
public:
    explicit Reader(std::string_view in) : in_(in) {}
    bool u8(uint8_t& v) {
        if (pos_ >= in_.size()) return false;
        v = static_cast<uint8_t>(in_[pos_++]);
        return true;
    }
    bool varint(uint64_t& v) {
        v = 0;
        for (int shift = 0; shift < 64; shift += 7) {
            if (pos_ >= in_.size()) return false;
            const uint8_t b = static_cast<uint8_t>(in_[pos_++]);
            if (shift == 63 && b > 1) return false;  // would overflow 64 bits
            v |= static_cast<uint64_t>(b & 0x7F) << shift;
            if (!(b & 0x80)) return true;
        }
        return false;
    }
    bool svarint(int64_t& v) {
        uint64_t u;
        if (!varint(u)) return false;
        v = static_cast<int64_t>((u >> 1) ^ (~(u & 1) + 1));
        return true;
    }
    bool f64(double& v) {
        if (in_.size() - pos_ < 8) return false;
        std::memcpy(&v, in_.data() + pos_, 8);
        pos_ += 8;
        return true;
    }
    bool bytes(std::string_view& s) {
        uint64_t n;
        if (!varint(n) || n > in_.size() - pos_) return false;
        s = in_.substr(pos_, n);
        pos_ += n;
        return true;
    }
    size_t remaining() const { return in_.size() - pos_; }
    std::string_view rest() const { return in_.substr(pos_); }
    void skip(size_t n) { pos_ += std::min(n, remaining()); }
    bool done() const { return pos_ == in_.size(); }

private:
    std::string_view in_;
    size_t pos_ = 0;
};

// UTF-8 <-> code points. decode fails on malformed or overlong input and on
// surrogates, so text in a document is always valid Unicode.
bool utf8_decode(std::string_view in, std::u32string& out);
void utf8_append(std::string& out, char32_t cp);

}  // namespace assistd::state::crdt
