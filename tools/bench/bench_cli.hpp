#pragma once
// What the benchmark programs share on their command line: the usage error,
// numbers and sizes. Header-only, so that daq-drain and daq-disk-ceiling
// still link no daqd library (they measure the machine, not daqd). Each
// program sets bench_cli::program first thing in main().
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace bench_cli {

inline const char* program = "daq-bench";

// "<program>: <msg>" and where help is, then exit 1.
[[noreturn]] inline void die_usage(const std::string& msg) {
    std::fprintf(stderr, "%s: %s\n(see %s --help)\n", program, msg.c_str(), program);
    std::exit(1);
}

// A number in [lo, hi].
inline double number_arg(const std::string& opt, const char* s, double lo = 0, double hi = 1e300) {
    char* end = nullptr;
    errno = 0;
    const double v = std::strtod(s, &end);
    if (*s == '\0' || *end != '\0' || errno != 0 || v < lo || v > hi)
        die_usage(opt + ": expected a number in " + std::to_string(lo) + ".." + std::to_string(hi) + ", got '" + s + "'");
    return v;
}

// A size > 0: bytes, or with K/KiB, M/MiB, G/GiB (powers of 1024).
inline std::uint64_t size_arg(const std::string& opt, const char* s) {
    char* end = nullptr;
    errno = 0;
    const unsigned long long v = std::strtoull(s, &end, 10);
    if (*s == '\0' || errno != 0 || end == s) die_usage(opt + ": expected a size, got '" + s + "'");
    const std::string suf = end;
    std::uint64_t mult = 1;
    if (suf.empty() || suf == "B")
        mult = 1;
    else if (suf == "K" || suf == "KiB")
        mult = 1ull << 10;
    else if (suf == "M" || suf == "MiB")
        mult = 1ull << 20;
    else if (suf == "G" || suf == "GiB")
        mult = 1ull << 30;
    else
        die_usage(opt + ": unknown suffix in '" + s + "' (K, M, G)");
    if (v == 0) die_usage(opt + ": must be > 0");
    return static_cast<std::uint64_t>(v) * mult;
}

}  // namespace bench_cli
