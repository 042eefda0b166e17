// daq-write-bench: the writer's cost per byte over a long run, through the
// real storage::run_file (tools/bench/README.md, docs/PERFORMANCE.md
// "Writeback pacing (issue 11)"). The calling thread is the writer: it
// appends frames of --units units as fast as it can (or at --rate-mbps),
// flushes every --flush-ms like daqd's writer thread, and every --interval
// seconds prints what that interval cost: MB/s, the writer thread's CPU
// seconds per GB, the longest append and flush, and the machine's dirty
// memory. A final JSON line sums it up. The run's files are deleted
// afterwards unless --keep.
#include "bench_cli.hpp"

#include "daqd/storage/run_writer.hpp"

#include <nlohmann/json.hpp>

#include <signal.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace fs = std::filesystem;
namespace storage = daqd::storage;
using clock_type = std::chrono::steady_clock;

constexpr const char* usage = R"(daq-write-bench — the writer's cost per byte over a run, through storage::run_file

usage: daq-write-bench --dir DIR [options]
  --dir DIR             directory to write the run in (required; must exist)
  --seconds S           how long to write (default 60)
  --rate-mbps R         row payload rate in Mbit/s, as daq-sim's --rate (default 0: as fast as possible)
  --writeback MODE      paced or kernel (storage.writeback; default paced)
  --interval S          seconds per printed interval (default 5)
  --units N             units, frames appended round-robin (default 4)
  --channels C          channels per frame (default 4096: 8 KiB frames)
  --chunk-bytes N       storage.chunk_bytes (default 1M)
  --flush-ms MS         flush interval (default 1000, daqd's default)
  --step N              paced: writeback started every N bytes (default 8M)
  --window N            paced: data further behind the front is waited for and dropped (default 64M)
  --keep                keep the run file (default: delete it)
  -h, --help            this text

Sizes take the suffixes K, M, G (powers of 1024). Refuses to write more than
half the free space of DIR's file system: with --rate-mbps it refuses to
start when rate x seconds would, at full speed it stops writing there.
Output (stdout): one line per interval, then one JSON line. MB = 10^6 bytes,
GB = 10^9 bytes of row payload (2 x channels + 18 bytes per frame).
Exit: 0 ok, 1 usage error or not enough space, 2 the run failed.
)";

volatile sig_atomic_t g_stop = 0;
void on_signal(int) { g_stop = 1; }

using bench_cli::die_usage;
using bench_cli::number_arg;
using bench_cli::size_arg;

double thread_cpu_s() {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

double process_cpu_s() {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    auto s = [](const timeval& tv) { return static_cast<double>(tv.tv_sec) + static_cast<double>(tv.tv_usec) / 1e6; };
    return s(ru.ru_utime) + s(ru.ru_stime);
}

double seconds(clock_type::duration d) { return std::chrono::duration<double>(d).count(); }

// Dirty + Writeback of /proc/meminfo, in bytes (0 when unreadable).
std::uint64_t dirty_bytes() {
    std::ifstream in("/proc/meminfo");
    std::uint64_t total = 0;
    for (std::string line; std::getline(in, line);) {
        if (line.rfind("Dirty:", 0) == 0 || line.rfind("Writeback:", 0) == 0) {
            std::istringstream is(line.substr(line.find(':') + 1));
            std::uint64_t kb = 0;
            is >> kb;
            total += kb * 1024;
        }
    }
    return total;
}

std::string first_line(const char* path) {
    std::ifstream in(path);
    std::string line;
    std::getline(in, line);
    return line;
}

// Samples the machine's dirty memory every 100 ms: the latest value and the
// highest since the last take_peak().
class dirty_sampler {
public:
    dirty_sampler() : _thread([this] { run(); }) {}
    ~dirty_sampler() {
        _stop.store(true);
        _thread.join();
    }
    std::uint64_t now() const { return _now.load(); }
    std::uint64_t take_peak() { return _peak.exchange(_now.load()); }

private:
    void run() {
        while (!_stop.load()) {
            const std::uint64_t d = dirty_bytes();
            _now.store(d);
            std::uint64_t p = _peak.load();
            while (d > p && !_peak.compare_exchange_weak(p, d)) {
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
    }
    std::atomic<bool> _stop{false};
    std::atomic<std::uint64_t> _now{dirty_bytes()};
    std::atomic<std::uint64_t> _peak{_now.load()};
    std::thread _thread;
};

struct interval_stats {
    double t_end = 0;        // seconds since the start
    double seconds = 0;
    std::uint64_t bytes = 0;  // row payload
    double writer_cpu = 0;
    double process_cpu = 0;
    double max_append = 0;
    double max_flush = 0;
    std::uint64_t dirty = 0;
    std::uint64_t dirty_peak = 0;
    std::uint64_t paced_bytes = 0;
    double paced_wait = 0;

    [[nodiscard]] double mb_per_s() const { return seconds > 0 ? static_cast<double>(bytes) / 1e6 / seconds : 0; }
    [[nodiscard]] double per_gb(double cpu) const { return bytes > 0 ? cpu / (static_cast<double>(bytes) / 1e9) : 0; }
    [[nodiscard]] nlohmann::json json() const {
        return {{"t", t_end},
                {"mb_per_s", mb_per_s()},
                {"writer_cpu_s_per_gb", per_gb(writer_cpu)},
                {"process_cpu_s_per_gb", per_gb(process_cpu)},
                {"max_append_s", max_append},
                {"max_flush_s", max_flush},
                {"dirty_mb", static_cast<double>(dirty) / 1e6},
                {"dirty_peak_mb", static_cast<double>(dirty_peak) / 1e6},
                {"paced_mb", static_cast<double>(paced_bytes) / 1e6},
                {"paced_wait_s", paced_wait}};
    }
};

}  // namespace

int main(int argc, char** argv) {
    bench_cli::program = "daq-write-bench";
    std::string dir;
    double run_seconds = 60, rate_mbps = 0, interval_s = 5;
    std::uint32_t units = 4, channels = 4096;
    std::uint64_t chunk_bytes = 1ull << 20, flush_ms = 1000;
    storage::writeback_options wb;
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
        } else if (a == "--seconds") {
            run_seconds = number_arg(a, value());
        } else if (a == "--rate-mbps") {
            rate_mbps = number_arg(a, value());
        } else if (a == "--interval") {
            interval_s = number_arg(a, value());
        } else if (a == "--writeback") {
            const std::string m = value();
            if (m == "paced")
                wb.mode = storage::writeback_mode::paced;
            else if (m == "kernel")
                wb.mode = storage::writeback_mode::kernel;
            else
                die_usage("--writeback must be paced or kernel, got '" + m + "'");
        } else if (a == "--units") {
            units = static_cast<std::uint32_t>(std::clamp<double>(number_arg(a, value()), 1, 1000));
        } else if (a == "--channels") {
            channels = static_cast<std::uint32_t>(std::clamp<double>(number_arg(a, value()), 16, 1 << 23));
        } else if (a == "--chunk-bytes") {
            chunk_bytes = size_arg(a, value());
        } else if (a == "--flush-ms") {
            flush_ms = size_arg(a, value());
        } else if (a == "--step") {
            wb.step_bytes = size_arg(a, value());
        } else if (a == "--window") {
            wb.window_bytes = size_arg(a, value());
        } else if (a == "--keep") {
            keep = true;
        } else {
            die_usage("unknown option '" + a + "'");
        }
    }
    if (dir.empty()) die_usage("--dir is required");
    if (run_seconds <= 0) die_usage("--seconds must be > 0");
    if (interval_s <= 0) die_usage("--interval must be > 0");
    if (chunk_bytes > (1ull << 30)) die_usage("--chunk-bytes: at most 1G");

    struct statvfs vfs {};
    if (::statvfs(dir.c_str(), &vfs) != 0) {
        std::fprintf(stderr, "daq-write-bench: %s: %s\n", dir.c_str(), std::strerror(errno));
        return 1;
    }
    const std::uint64_t free_bytes = static_cast<std::uint64_t>(vfs.f_bavail) * vfs.f_frsize;
    const std::uint64_t cap = free_bytes / 2;
    const double rate_bytes_per_s = rate_mbps * 1e6 / 8;
    if (rate_mbps > 0 && rate_bytes_per_s * run_seconds * 1.02 > static_cast<double>(cap)) {
        std::fprintf(stderr,
                     "daq-write-bench: %.0f Mbit/s for %.0f s is %.1f GB, more than half of the %.1f GB free in %s; "
                     "use a lower --rate-mbps or fewer --seconds\n",
                     rate_mbps, run_seconds, rate_bytes_per_s * run_seconds / 1e9, static_cast<double>(free_bytes) / 1e9,
                     dir.c_str());
        return 1;
    }

    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);

    // 257 different frames per unit (random samples), and a counter stamped
    // into every 4 KiB of a frame before it is appended: no two pages of the
    // file are alike (a virtual disk could otherwise deduplicate them).
    constexpr std::size_t distinct = 257;
    std::vector<std::vector<std::uint16_t>> samples(units * distinct, std::vector<std::uint16_t>(channels));
    std::mt19937_64 rng(42);
    for (auto& f : samples)
        for (auto& s : f) s = static_cast<std::uint16_t>(rng());

    storage::run_options opt;
    opt.output_dir = dir;
    opt.run_name = "write-bench-" + std::to_string(::getpid());
    opt.chunk_bytes = static_cast<std::uint32_t>(chunk_bytes);
    opt.flush_interval = std::chrono::milliseconds(flush_ms);
    opt.reserve_bytes = 64ull << 20;
    opt.config_text = "# daq-write-bench";
    opt.server_version = "daq-write-bench";
    opt.writeback = wb;
    const std::string mode = wb.mode == storage::writeback_mode::paced ? "paced" : "kernel";
    const std::string load_before = first_line("/proc/loadavg");

    std::printf("daq-write-bench: %s, writeback %s (step %llu, window %llu bytes), %u units x %u channels, chunk %llu, "
                "flush %llu ms, %s, %.0f s in %s (%.1f GB free); load %s; vm.dirty_background_ratio %s, "
                "vm.dirty_ratio %s\n",
                opt.run_name.c_str(), mode.c_str(), static_cast<unsigned long long>(wb.step_bytes),
                static_cast<unsigned long long>(wb.window_bytes), units, channels,
                static_cast<unsigned long long>(chunk_bytes), static_cast<unsigned long long>(flush_ms),
                rate_mbps > 0 ? (std::to_string(static_cast<long long>(rate_mbps)) + " Mbit/s").c_str() : "full speed",
                run_seconds, dir.c_str(), static_cast<double>(free_bytes) / 1e9, load_before.c_str(),
                first_line("/proc/sys/vm/dirty_background_ratio").c_str(), first_line("/proc/sys/vm/dirty_ratio").c_str());
    std::fflush(stdout);

    storage::writeback_counters counters;
    dirty_sampler dirty;
    std::vector<interval_stats> intervals;
    std::vector<fs::path> files;
    std::string error;
    bool capped = false;
    double close_s = 0;
    const std::uint64_t row = 2ull * channels + 18;
    {
        std::unique_ptr<storage::run_file> rf;
        try {
            rf = std::make_unique<storage::run_file>(opt, &counters);
        } catch (const std::exception& e) {
            std::fprintf(stderr, "daq-write-bench: %s\n", e.what());
            return 2;
        }
        std::vector<daqd::processing::frame> frames(units);
        for (std::uint32_t u = 0; u < units; ++u) {
            frames[u].unit_id = static_cast<std::uint16_t>(u + 1);
            frames[u].channels = channels;
            frames[u].packet_count = 6;
        }
        const auto t0 = clock_type::now();
        const auto deadline = t0 + std::chrono::duration_cast<clock_type::duration>(std::chrono::duration<double>(run_seconds));
        const auto interval = std::chrono::duration_cast<clock_type::duration>(std::chrono::duration<double>(interval_s));
        const auto flush_every = std::chrono::milliseconds(flush_ms);
        auto next_flush = t0 + flush_every;
        auto next_report = t0 + interval;
        interval_stats cur;
        auto cur_start = t0;
        double cpu0 = thread_cpu_s(), pcpu0 = process_cpu_s();
        std::uint64_t paced0 = 0, wait0 = 0, bytes0 = 0;
        std::uint64_t written = 0;  // row payload
        std::uint64_t n = 0;        // frames appended
        dirty.take_peak();

        auto close_interval = [&](clock_type::time_point now) {
            cur.t_end = seconds(now - t0);
            cur.seconds = seconds(now - cur_start);
            cur.bytes = written - bytes0;
            const double cpu = thread_cpu_s(), pcpu = process_cpu_s();
            cur.writer_cpu = cpu - cpu0;
            cur.process_cpu = pcpu - pcpu0;
            cur.dirty = dirty.now();
            cur.dirty_peak = dirty.take_peak();
            cur.paced_bytes = counters.bytes.get() - paced0;
            cur.paced_wait = static_cast<double>(counters.wait_ns.get() - wait0) / 1e9;
            std::printf("t=%5.1f s  %7.1f MB/s  writer CPU %5.2f s/GB  process CPU %5.2f s/GB  longest append %7.2f ms  "
                        "longest flush %7.2f ms  dirty %6.0f MB (peak %6.0f MB)  paced %6.0f MB, waited %5.2f s\n",
                        cur.t_end, cur.mb_per_s(), cur.per_gb(cur.writer_cpu), cur.per_gb(cur.process_cpu),
                        cur.max_append * 1e3, cur.max_flush * 1e3, static_cast<double>(cur.dirty) / 1e6,
                        static_cast<double>(cur.dirty_peak) / 1e6, static_cast<double>(cur.paced_bytes) / 1e6,
                        cur.paced_wait);
            std::fflush(stdout);
            intervals.push_back(cur);
            cur = {};
            cur_start = now;
            cpu0 = cpu;
            pcpu0 = pcpu;
            bytes0 = written;
            paced0 = counters.bytes.get();
            wait0 = counters.wait_ns.get();
        };

        try {
            for (;;) {
                auto now = clock_type::now();
                if (now >= next_report) {
                    close_interval(now);
                    next_report += interval;
                }
                if (now >= deadline || g_stop != 0) break;
                if (written + row * units > cap) {
                    capped = true;
                    break;
                }
                if (rate_mbps > 0) {
                    const double allowed = rate_bytes_per_s * seconds(now - t0);
                    if (static_cast<double>(written) > allowed) {
                        const double ahead_s = (static_cast<double>(written) - allowed) / rate_bytes_per_s;
                        std::this_thread::sleep_for(std::chrono::duration<double>(std::min(ahead_s, 0.01)));
                        continue;
                    }
                }
                for (std::uint32_t u = 0; u < units; ++u) {
                    auto& f = frames[u];
                    f.frame_number = n / units;
                    f.timestamp_ns = f.frame_number * 1000;
                    f.samples = samples[u * distinct + (n / units) % distinct].data();
                    for (std::uint32_t c = 0; c < channels; c += 2048) {
                        const std::uint64_t stamp = n;
                        std::memcpy(f.samples + c, &stamp, std::min<std::size_t>(8, 2u * (channels - c)));
                    }
                    const auto a0 = clock_type::now();
                    rf->append(f);
                    const auto a1 = clock_type::now();
                    cur.max_append = std::max(cur.max_append, seconds(a1 - a0));
                    written += row;
                    ++n;
                }
                if (now >= next_flush) {
                    const auto f0 = clock_type::now();
                    rf->flush();
                    const auto f1 = clock_type::now();
                    cur.max_flush = std::max(cur.max_flush, seconds(f1 - f0));
                    next_flush = f1 + flush_every;
                }
            }
            const auto now = clock_type::now();
            if (seconds(now - cur_start) > 0.05 * interval_s) close_interval(now);
            const auto c0 = clock_type::now();
            rf->close();
            close_s = seconds(clock_type::now() - c0);
        } catch (const std::exception& e) {
            error = e.what();
        }
        files = rf->stats().files;
    }
    const std::string load_after = first_line("/proc/loadavg");

    // Totals over the intervals (the close is not in them).
    interval_stats all;
    double max_append = 0, max_flush = 0;
    std::uint64_t peak = 0;
    std::vector<nlohmann::json> per;
    for (const auto& i : intervals) {
        all.seconds += i.seconds;
        all.bytes += i.bytes;
        all.writer_cpu += i.writer_cpu;
        all.process_cpu += i.process_cpu;
        max_append = std::max(max_append, i.max_append);
        max_flush = std::max(max_flush, i.max_flush);
        peak = std::max(peak, i.dirty_peak);
        per.push_back(i.json());
    }
    std::uint64_t file_bytes = 0;
    for (const auto& p : files) {
        std::error_code ec;
        const auto sz = fs::file_size(p, ec);
        if (!ec) file_bytes += sz;
        if (!keep) fs::remove(p, ec);
    }
    if (!keep) {
        std::error_code ec;
        fs::remove(fs::path(dir) / ".daqd-journal", ec);  // only when empty
    }
    nlohmann::json out{{"writeback", mode},
                       {"step_bytes", wb.step_bytes},
                       {"window_bytes", wb.window_bytes},
                       {"rate_mbps", rate_mbps},
                       {"seconds", all.seconds},
                       {"bytes", all.bytes},
                       {"file_bytes", file_bytes},
                       {"mb_per_s", all.mb_per_s()},
                       {"writer_cpu_s_per_gb", all.per_gb(all.writer_cpu)},
                       {"process_cpu_s_per_gb", all.per_gb(all.process_cpu)},
                       {"max_append_s", max_append},
                       {"max_flush_s", max_flush},
                       {"close_s", close_s},
                       {"peak_dirty_mb", static_cast<double>(peak) / 1e6},
                       {"paced_mb", static_cast<double>(counters.bytes.get()) / 1e6},
                       {"paced_wait_s", static_cast<double>(counters.wait_ns.get()) / 1e9},
                       {"paced_errors", counters.errors.get()},
                       {"stopped_at_half_free_space", capped},
                       {"load_before", load_before},
                       {"load_after", load_after},
                       {"kept", keep},
                       {"error", error},
                       {"intervals", per}};
    std::printf("%s\n", out.dump().c_str());
    if (!error.empty()) {
        std::fprintf(stderr, "daq-write-bench: the run failed: %s\n", error.c_str());
        return 2;
    }
    return 0;
}
