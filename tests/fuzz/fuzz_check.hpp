#pragma once
// The fuzz targets' invariant check: unlike assert() it stays on in release
// builds (the replay tests run in the ordinary RelWithDebInfo build), and it
// aborts, which libFuzzer reports as a crash and saves the input.
#include <cstdio>
#include <cstdlib>
#include <string>

namespace daqd_fuzz {

[[noreturn]] inline void fail(const char* expr, const char* file, int line, const std::string& detail) {
    std::fprintf(stderr, "\nfuzz invariant failed: %s\n  at %s:%d\n", expr, file, line);
    if (!detail.empty()) std::fprintf(stderr, "  %s\n", detail.c_str());
    std::fflush(stderr);
    std::abort();
}

}  // namespace daqd_fuzz

// FUZZ_CHECK(condition) or FUZZ_CHECK(condition, std::string detail)
#define FUZZ_CHECK(cond, ...)                                                          \
    do {                                                                               \
        if (!(cond)) ::daqd_fuzz::fail(#cond, __FILE__, __LINE__, std::string{__VA_ARGS__}); \
    } while (0)
