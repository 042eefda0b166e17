// daq-disk-ceiling: sequential write ceiling of the disk under a directory
// (tools/bench/README.md). Writes N bytes in fixed blocks to a new file with
// fdatasync every --sync-every bytes and at the end, then deletes the file.
// Prints one JSON object on stdout.
#include "bench_cli.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

constexpr const char* usage = R"(daq-disk-ceiling — sequential write ceiling of a directory's disk

usage: daq-disk-ceiling --dir DIR [options]
  --dir DIR            directory to write in (required; the file is removed afterwards)
  --bytes N            bytes to write (default 2147483648 = 2 GiB); suffixes K M G (powers of 1024)
  --block N            write size (default 1M)
  --sync-every N       fdatasync after every N bytes (default 64M); always once at the end
  --keep               keep the file (default: delete it)
  -h, --help           this text

Refuses to write more than half the free space of DIR's file system.
Output (stdout, one line): {"dir", "file", "bytes", "seconds", "mb_per_s",
"mib_per_s", "block", "sync_every", "syncs", "max_sync_seconds"}. MB = 10^6 bytes.
"seconds" includes the final fdatasync. Exit: 0 ok, 1 usage error, 2 I/O error.
)";

volatile sig_atomic_t g_stop = 0;
void on_signal(int) { g_stop = 1; }

using bench_cli::die_usage;
using bench_cli::size_arg;

double mono() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
    bench_cli::program = "daq-disk-ceiling";
    std::string dir;
    std::uint64_t total = 2ull << 30, block = 1ull << 20, sync_every = 64ull << 20;
    bool keep = false;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto value = [&]() -> const char* {
            if (i + 1 >= argc) die_usage(a + " needs a value");
            return argv[++i];
        };
        if (a == "-h" || a == "--help") {
            std::fputs(usage, stdout);
            return 0;
        } else if (a == "--dir") {
            dir = value();
        } else if (a == "--bytes") {
            total = size_arg(a, value());
        } else if (a == "--block") {
            block = size_arg(a, value());
        } else if (a == "--sync-every") {
            sync_every = size_arg(a, value());
        } else if (a == "--keep") {
            keep = true;
        } else {
            die_usage("unknown option '" + a + "'");
        }
    }
    if (dir.empty()) die_usage("--dir is required");
    if (block > (1ull << 30)) die_usage("--block: at most 1G");
    struct statvfs vfs{};
    if (::statvfs(dir.c_str(), &vfs) != 0) {
        std::fprintf(stderr, "daq-disk-ceiling: %s: %s\n", dir.c_str(), std::strerror(errno));
        return 2;
    }
    const std::uint64_t free_bytes = static_cast<std::uint64_t>(vfs.f_bavail) * vfs.f_frsize;
    if (total > free_bytes / 2) {
        std::fprintf(stderr, "daq-disk-ceiling: %llu bytes is more than half of the %llu free bytes in %s\n",
                     static_cast<unsigned long long>(total), static_cast<unsigned long long>(free_bytes), dir.c_str());
        return 1;
    }

    struct sigaction sa{};
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);

    const std::string path = dir + "/daq-disk-ceiling-" + std::to_string(::getpid()) + ".bin";
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
        std::fprintf(stderr, "daq-disk-ceiling: open %s: %s\n", path.c_str(), std::strerror(errno));
        return 2;
    }
    // Non-zero, non-repeating-per-block content (nothing here compresses, but
    // a virtual disk might deduplicate zero pages).
    std::vector<std::uint64_t> buf((block + 7) / 8);
    std::uint64_t x = 0x9e3779b97f4a7c15ull;
    for (auto& w : buf) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        w = x;
    }
    auto fail = [&](const char* what) {
        std::fprintf(stderr, "daq-disk-ceiling: %s %s: %s\n", what, path.c_str(), std::strerror(errno));
        ::close(fd);
        if (!keep) ::unlink(path.c_str());
        std::exit(2);
    };
    std::uint64_t written = 0, since_sync = 0, syncs = 0;
    double max_sync = 0;
    const double t0 = mono();
    while (written < total && !g_stop) {
        buf[0] = written;  // each block differs
        const std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(block, total - written));
        std::size_t done = 0;
        while (done < want) {
            const ssize_t n = ::write(fd, reinterpret_cast<const char*>(buf.data()) + done, want - done);
            if (n < 0) {
                if (errno == EINTR) continue;
                fail("write");
            }
            done += static_cast<std::size_t>(n);
        }
        written += want;
        since_sync += want;
        if (since_sync >= sync_every || written == total) {
            const double s0 = mono();
            if (::fdatasync(fd) != 0) fail("fdatasync");
            max_sync = std::max(max_sync, mono() - s0);
            ++syncs;
            since_sync = 0;
        }
    }
    if (since_sync) {
        if (::fdatasync(fd) != 0) fail("fdatasync");
        ++syncs;
    }
    const double secs = mono() - t0;
    ::close(fd);
    if (!keep) ::unlink(path.c_str());
    std::printf(
        "{\"dir\": \"%s\", \"file\": \"%s\", \"kept\": %s, \"bytes\": %llu, \"seconds\": %.6f, \"mb_per_s\": %.1f, "
        "\"mib_per_s\": %.1f, \"block\": %llu, \"sync_every\": %llu, \"syncs\": %llu, \"max_sync_seconds\": %.6f, "
        "\"interrupted\": %s}\n",
        dir.c_str(), path.c_str(), keep ? "true" : "false", static_cast<unsigned long long>(written), secs,
        static_cast<double>(written) / secs / 1e6, static_cast<double>(written) / secs / (1 << 20),
        static_cast<unsigned long long>(block), static_cast<unsigned long long>(sync_every),
        static_cast<unsigned long long>(syncs), max_sync, g_stop ? "true" : "false");
    return g_stop ? 2 : 0;
}
