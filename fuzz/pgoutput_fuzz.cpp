// libFuzzer: what a PostgreSQL server (or something pretending to be one)
// sends on a logical replication stream (cdc/pgoutput.h). The input is one
// CopyData message; an XLogData's payload is decoded as a pgoutput message.
// Either decodes or is an error; never a crash, never a read past the input.
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <variant>

#include "cdc/pgoutput.h"

using namespace assistd::cdc::pg;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string_view bytes(reinterpret_cast<const char*>(data), size);
    auto frame = decode_copy_data(bytes);
    if (frame.ok())
        if (const auto* x = std::get_if<XLogData>(&*frame)) (void)decode_message(x->payload);
    // The same bytes as a bare message too: most of the decoder is there.
    auto m = decode_message(bytes);
    if (m.ok())
        if (const auto* r = std::get_if<Relation>(&*m))
            if (r->columns.size() > size) __builtin_trap();  // every column took bytes
    (void)parse_lsn(bytes);
    return 0;
}
