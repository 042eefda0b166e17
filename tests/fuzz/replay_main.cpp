// Replays saved inputs through a fuzz target without libFuzzer: the ordinary
// (gcc) build links each target's LLVMFuzzerTestOneInput with this main and
// ctest runs it on tests/fuzz/corpus/<target>/ and tests/fuzz/regressions/<target>/,
// so every input kept there is a permanent regression test.
//
// Usage: fuzz_replay_<name> DIR_OR_FILE...   (files starting with '.' and
// README* are skipped; a missing directory counts as empty). Exits non-zero
// when no input at all was found; a failing input aborts (FUZZ_CHECK) or is
// caught by the sanitizers of a sanitized build.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

namespace fs = std::filesystem;

namespace {

bool wanted(const fs::path& p) {
    const std::string name = p.filename().string();
    return !name.empty() && name.front() != '.' && name.rfind("README", 0) != 0;
}

}  // namespace

int main(int argc, char** argv) {
    std::vector<fs::path> inputs;
    for (int i = 1; i < argc; ++i) {
        const fs::path arg = argv[i];
        std::error_code ec;
        if (fs::is_directory(arg, ec)) {
            std::vector<fs::path> found;
            for (const auto& e : fs::recursive_directory_iterator(arg, ec))
                if (e.is_regular_file() && wanted(e.path())) found.push_back(e.path());
            std::sort(found.begin(), found.end());
            std::printf("%s: %zu input(s)\n", arg.c_str(), found.size());
            inputs.insert(inputs.end(), found.begin(), found.end());
        } else if (fs::is_regular_file(arg, ec)) {
            inputs.push_back(arg);
        } else {
            std::printf("%s: not there (counted as empty)\n", arg.c_str());
        }
    }
    if (inputs.empty()) {
        std::fprintf(stderr, "no inputs found\n");
        return 2;
    }
    for (const auto& p : inputs) {
        std::ifstream in(p, std::ios::binary);
        if (!in) {
            std::fprintf(stderr, "cannot read %s\n", p.c_str());
            return 2;
        }
        const std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        std::printf("running %s (%zu bytes)\n", p.c_str(), bytes.size());
        std::fflush(stdout);
        // A copy of exactly the input's size, so that reads past the end are caught by ASan.
        std::vector<std::uint8_t> data(bytes.begin(), bytes.end());
        static std::uint8_t none = 0;  // libFuzzer never passes a null pointer either
        LLVMFuzzerTestOneInput(data.empty() ? &none : data.data(), data.size());
    }
    std::printf("ok: %zu input(s) replayed\n", inputs.size());
    return 0;
}
