#pragma once
// Result<T>: a value or the reason there is none. Errors carry a code a caller
// can branch on and a message a user can act on.
#include <cassert>
#include <string>
#include <utility>
#include <variant>

namespace assistd {

enum class ErrorCode {
    kInvalidArgument,   // the caller passed something wrong
    kNotFound,          // a file, session or key that does not exist
    kUnsupported,       // well-formed, but a feature we do not implement
    kCorrupt,           // bytes that do not parse as what they claim to be
    kOutOfRange,        // e.g. a prompt longer than the context
    kResourceExhausted, // memory or queue budget
    kIo,                // the operating system said no
    kInternal,
};

const char* error_code_name(ErrorCode code);

struct Error {
    ErrorCode code = ErrorCode::kInternal;
    std::string message;
};

inline Error make_error(ErrorCode code, std::string message) { return Error{code, std::move(message)}; }

template <typename T>
class [[nodiscard]] Result {
public:
    Result(T value) : v_(std::move(value)) {}
    Result(Error error) : v_(std::move(error)) {}

    bool ok() const { return v_.index() == 0; }
    explicit operator bool() const { return ok(); }

    T& value() & { assert(ok()); return std::get<0>(v_); }
    const T& value() const& { assert(ok()); return std::get<0>(v_); }
    T&& value() && { assert(ok()); return std::get<0>(std::move(v_)); }
    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }
    T& operator*() & { return value(); }
    const T& operator*() const& { return value(); }
    T&& operator*() && { return std::move(*this).value(); }

    const Error& error() const { assert(!ok()); return std::get<1>(v_); }

private:
    std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
public:
    Result() = default;
    Result(Error error) : err_(std::move(error)), ok_(false) {}
    bool ok() const { return ok_; }
    explicit operator bool() const { return ok_; }
    const Error& error() const { assert(!ok_); return err_; }

private:
    Error err_;
    bool ok_ = true;
};

using Status = Result<void>;

}  // namespace assistd
