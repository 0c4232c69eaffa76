#include "common/result.h"

namespace assistd {

const char* error_code_name(ErrorCode code) {
    switch (code) {
        case ErrorCode::kInvalidArgument: return "invalid_argument";
        case ErrorCode::kNotFound: return "not_found";
        case ErrorCode::kUnsupported: return "unsupported";
        case ErrorCode::kCorrupt: return "corrupt";
        case ErrorCode::kOutOfRange: return "out_of_range";
        case ErrorCode::kResourceExhausted: return "resource_exhausted";
        case ErrorCode::kIo: return "io";
        case ErrorCode::kInternal: return "internal";
    }
    return "unknown";
}

}  // namespace assistd
