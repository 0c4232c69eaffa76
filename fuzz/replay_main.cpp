// Replays fuzz inputs without libFuzzer: every file named on the command line,
// or found in a directory named there, goes once through the target's
// LLVMFuzzerTestOneInput. A target that finds a broken invariant aborts, so
// the process (and the ctest test running it) fails; no inputs is a failure too.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

bool collect(const std::filesystem::path& path, std::vector<std::filesystem::path>& files) {
    std::error_code ec;
    if (std::filesystem::is_regular_file(path, ec)) {
        files.push_back(path);
        return true;
    }
    if (!std::filesystem::is_directory(path, ec)) return false;
    std::vector<std::filesystem::path> found;
    for (const auto& entry : std::filesystem::directory_iterator(path, ec))
        if (entry.is_regular_file()) found.push_back(entry.path());
    std::sort(found.begin(), found.end());  // the same order on every machine
    files.insert(files.end(), found.begin(), found.end());
    return !ec;
}

}  // namespace

int main(int argc, char** argv) {
    std::vector<std::filesystem::path> files;
    for (int i = 1; i < argc; ++i) {
        if (!collect(argv[i], files)) {
            std::fprintf(stderr, "%s: cannot read '%s' (give corpus files or directories)\n",
                         argv[0], argv[i]);
            return 2;
        }
    }
    if (files.empty()) {
        std::fprintf(stderr, "%s: no inputs to replay (give corpus files or directories)\n",
                     argv[0]);
        return 2;
    }
    for (const auto& file : files) {
        std::ifstream in(file, std::ios::binary);
        const std::string bytes((std::istreambuf_iterator<char>(in)),
                                std::istreambuf_iterator<char>());
        if (!in.good() && !in.eof()) {
            std::fprintf(stderr, "%s: cannot read '%s'\n", argv[0], file.c_str());
            return 2;
        }
        // Named first, so the input a crash came from is the last line printed.
        std::printf("replay %s (%zu bytes)\n", file.c_str(), bytes.size());
        std::fflush(stdout);
        // libFuzzer hands targets a buffer of exactly the input's size; so does this.
        std::vector<uint8_t> copy(bytes.begin(), bytes.end());
        (void)LLVMFuzzerTestOneInput(copy.data(), copy.size());
    }
    std::printf("%zu inputs replayed, every invariant held\n", files.size());
    return 0;
}
