#include "cluster/node_identity.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/random.h"

namespace assistd::cluster {
namespace {

Error file_error(const std::string& path, const std::string& what) {
    return make_error(ErrorCode::kIo,
                      "node identity: " + what + " '" + path + "': " + std::strerror(errno));
}

// Writes through a temporary file, fsyncs it and renames it over the old one:
// the file is either the old or the new identity, never half of one.
Status write_atomically(const std::string& path, const std::string& text) {
    const std::string tmp = path + ".tmp";
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return file_error(tmp, "cannot create");
    size_t done = 0;
    while (done < text.size()) {
        const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
        if (n < 0) {
            if (errno == EINTR) continue;
            auto e = file_error(tmp, "cannot write");
            ::close(fd);
            return e;
        }
        done += static_cast<size_t>(n);
    }
    if (::fsync(fd) != 0) {
        auto e = file_error(tmp, "cannot sync");
        ::close(fd);
        return e;
    }
    ::close(fd);
    if (::rename(tmp.c_str(), path.c_str()) != 0) return file_error(path, "cannot replace");
    return {};
}

}  // namespace

uint64_t replica_id_for(NodeId node_id, uint64_t incarnation) {
    uint64_t state = node_id ^ (incarnation * 0xd1b54a32d192ed03ull);
    uint64_t id = splitmix64(state);
    return id == 0 ? 1 : id;
}

Result<NodeId> parse_node_id(const std::string& text) {
    if (text.empty() || text.size() > 16) {
        return make_error(ErrorCode::kInvalidArgument,
                          "node id '" + text + "' must be 1 to 16 hex digits");
    }
    NodeId id = 0;
    for (char c : text) {
        int d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            d = c - 'A' + 10;
        else
            return make_error(ErrorCode::kInvalidArgument,
                              "node id '" + text + "' must be 1 to 16 hex digits");
        id = (id << 4) | static_cast<NodeId>(d);
    }
    if (id == 0) return make_error(ErrorCode::kInvalidArgument, "node id must not be zero");
    return id;
}

std::string format_node_id(NodeId id) {
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(id));
    return buf;
}

Result<NodeId> node_id_from_name(const std::string& name) {
    const bool all_hex = !name.empty() && name.size() <= 16 &&
                         name.find_first_not_of("0123456789abcdefABCDEF") == std::string::npos;
    if (all_hex) return parse_node_id(name);  // "0" stays an error, not a name
    if (name.empty() || name.size() > 253)
        return make_error(ErrorCode::kInvalidArgument,
                          "node id '" + name + "' must be 1 to 253 characters long");
    uint64_t hash = 0xcbf29ce484222325ull;  // FNV-1a, then mixed: stable across builds
    for (const char c : name) {
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                        (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_';
        if (!ok)
            return make_error(ErrorCode::kInvalidArgument,
                              "node id '" + name +
                                  "' may only hold letters, digits, '-', '.' and '_' (a pod "
                                  "name), or be 1 to 16 hex digits");
        hash = (hash ^ static_cast<unsigned char>(c)) * 0x100000001b3ull;
    }
    const uint64_t id = splitmix64(hash);
    return id == 0 ? 1 : id;
}

namespace {
Result<NodeIdentity> load_identity(const std::string& state_dir, NodeId fresh_node_id,
                                   bool must_match);
}  // namespace

Result<NodeIdentity> load_node_identity(const std::string& state_dir, NodeId fresh_node_id) {
    return load_identity(state_dir, fresh_node_id, false);
}

Result<NodeIdentity> load_node_identity_as(const std::string& state_dir, NodeId node_id) {
    return load_identity(state_dir, node_id, true);
}

namespace {
Result<NodeIdentity> load_identity(const std::string& state_dir, NodeId fresh_node_id,
                                   bool must_match) {
    std::error_code ec;
    std::filesystem::create_directories(state_dir, ec);
    if (ec) {
        return make_error(ErrorCode::kIo, "node identity: cannot create directory '" + state_dir +
                                              "': " + ec.message());
    }
    const std::string path = (std::filesystem::path(state_dir) / "node-id").string();
    NodeIdentity identity;
    std::ifstream in(path);
    if (in) {
        std::string line;
        while (std::getline(in, line)) {
            const auto eq = line.find('=');
            if (eq == std::string::npos) continue;
            const std::string key = line.substr(0, eq), value = line.substr(eq + 1);
            if (key == "node_id") {
                auto id = parse_node_id(value);
                if (!id.ok())
                    return make_error(ErrorCode::kCorrupt,
                                      "node identity: '" + path + "': " + id.error().message);
                identity.node_id = *id;
            } else if (key == "incarnation") {
                char* end = nullptr;
                errno = 0;
                identity.incarnation = std::strtoull(value.c_str(), &end, 10);
                if (value.empty() || *end != '\0' || errno != 0) {
                    return make_error(
                        ErrorCode::kCorrupt,
                        "node identity: '" + path + "': bad incarnation '" + value + "'");
                }
            }
        }
        if (identity.node_id == 0) {
            return make_error(
                ErrorCode::kCorrupt,
                "node identity: '" + path +
                    "' has no node_id line; restore it or remove the state directory");
        }
        if (must_match && identity.node_id != fresh_node_id) {
            return make_error(ErrorCode::kInvalidArgument,
                              "node identity: the state directory '" + state_dir +
                                  "' belongs to node " + format_node_id(identity.node_id) +
                                  ", not " + format_node_id(fresh_node_id) +
                                  "; give that node id, or another --state-dir");
        }
    } else {
        if (fresh_node_id == 0)
            return make_error(ErrorCode::kInvalidArgument,
                              "node identity: a new node id must be non-zero");
        identity.node_id = fresh_node_id;
    }
    ++identity.incarnation;
    std::ostringstream text;
    text << "node_id=" << format_node_id(identity.node_id)
         << "\nincarnation=" << identity.incarnation << "\n";
    if (auto st = write_atomically(path, text.str()); !st.ok()) return st.error();
    identity.replica_id = replica_id_for(identity.node_id, identity.incarnation);
    return identity;
}
}  // namespace

}  // namespace assistd::cluster
