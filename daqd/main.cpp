// daqd: the data-acquisition server. See README.md and `daqd --help`.
#include "pipeline.hpp"
#include "reload.hpp"
#include "serving.hpp"
#include "service_notify.hpp"
#include "web_glue.hpp"

#include "daqd/config/config.hpp"
#include "daqd/storage/calibration_file.hpp"
#include "daqd/storage/journal.hpp"
#include "daqd/storage/recovery.hpp"
#include "daqd/storage/run_catalog.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <signal.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#ifndef DAQD_VERSION
#define DAQD_VERSION "0.0.0"
#endif

namespace {

constexpr const char* usage = R"(daqd — data-acquisition server for DAQ1 hardware units

usage:
  daqd [options]                 serve: receive, assemble, and record when a run is active
  daqd --check-config FILE       load and validate FILE, print every mistake (with its line), exit 0 if good
  daqd --print-config            print the effective configuration (defaults + --config + options)
  daqd --check-host              compare this host with what the configuration needs; exit 1 if not
  daqd --recover                 mend the run files daqd left open in the output directory (its journal), exit
  daqd --recover FILE            mend FILE, an HDF5 file left open for write (not a symlink, open in no
                                 other process), exit
  daqd --help | --version

options:
  --config FILE         TOML configuration (default: the embedded default; see docs/CONFIG.md)
  --listen HOST:PORT    UDP endpoint to listen on; repeat for several links (replaces the config's list)
  --output DIR          directory for run files (storage.output_dir)
  --run NAME            record a run called NAME from start until --duration passes or SIGINT/SIGTERM
  --duration SECONDS    stop after this long (with --run: the run's length)
  --backend NAME        receiver backend: auto, io_uring or recvmmsg (acquisition.backend)
  --compression C       how chunks are stored: none or bslz4 (bitshuffle + LZ4, HDF5 filter
                        32008; storage.compression)
  --shards N            receive shards: the links split into N groups, each with its own
                        receiver and assembler thread (acquisition.shards; at most one per link)
  --gro                 enable UDP GRO on the sockets (acquisition.gro)
  --summary-json FILE   also write the final summary as JSON to FILE
  --log-level LEVEL     trace, debug, info, warn, error
  --http HOST:PORT|off  status page, /metrics and control API (http.listen, default 127.0.0.1:8080)
  --stream ENDPOINT     stream every stored chunk over ZeroMQ PUSH at ENDPOINT ("tcp://127.0.0.1:5555";
                        run messages and previews on PUB at port + 1; repeat for several; stream.listen,
                        docs/STREAM.md)
  --calibration FILE    calibrate with the constants of FILE: sets processing.calibration_file and
                        adds "calibrate" to processing.stages (other stages as configured)
  --pedestal-run NAME   take --pedestal-frames complete frames per unit (no beam), write the
                        per-channel pedestal (mean) and noise (standard deviation) to
                        <output>/NAME.calib.h5, print where it is and exit (docs/CALIBRATION.md)
  --pedestal-frames N   frames per unit of a pedestal run (default 1000)

On SIGINT/SIGTERM daqd stops receiving, drains every ring and queue, closes
the run files, prints a one-line summary and exits 0. On SIGHUP it re-reads
the --config file and applies log.level, stream.preview_rate,
processing.threshold and threshold_mode (from the next run's start while a
run records), and the web side's http.token, http.token_file (read again)
and http.allowed_hosts; other changed keys are logged as needing a restart. A file with mistakes is logged and the running
configuration stays. Under systemd (Type=notify) daqd sends READY=1 once
serving, WATCHDOG=1 while its data-path threads make progress, and
STOPPING=1 when draining starts (docs/OPERATIONS.md).

At start daqd locks its output directory (<output>/.daqd.lock: one server per
directory) and mends the run files a crash of daqd left open there, as its
journal <output>/.daqd-journal/ names them (docs/RELIABILITY.md).
)";

struct options {
    std::optional<std::string> config_file;
    std::vector<std::string> listen;
    std::optional<std::string> output;
    std::optional<std::string> run;
    std::optional<double> duration;
    std::optional<std::string> backend;
    std::optional<std::uint32_t> shards;
    std::optional<std::string> compression;
    bool gro = false;
    std::optional<std::string> summary_json;
    std::optional<std::string> log_level;
    std::optional<std::string> check_config;
    bool print_config = false;
    bool check_host = false;
    bool recover = false;
    std::optional<std::string> recover_file;  // --recover FILE
    std::optional<std::string> http;
    std::vector<std::string> stream;
    std::optional<std::string> calibration;
    std::optional<std::string> pedestal_run;
    std::uint64_t pedestal_frames = 1000;
};

[[noreturn]] void usage_error(const std::string& msg) {
    std::cerr << "daqd: " << msg << "\n(see daqd --help)\n";
    std::exit(2);
}

options parse(int argc, char** argv) {
    options o;
    auto value = [&](int& i, const std::string& flag) -> std::string {
        if (i + 1 >= argc) usage_error(flag + " needs a value");
        return argv[++i];
    };
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--help" || a == "-h") {
            std::cout << usage;
            std::exit(0);
        } else if (a == "--version") {
            std::cout << "daqd " << DAQD_VERSION << "\n";
            std::exit(0);
        } else if (a == "--config") {
            o.config_file = value(i, a);
        } else if (a == "--listen") {
            o.listen.push_back(value(i, a));
        } else if (a == "--output") {
            o.output = value(i, a);
        } else if (a == "--run") {
            o.run = value(i, a);
        } else if (a == "--duration") {
            const std::string v = value(i, a);
            try {
                std::size_t used = 0;
                o.duration = std::stod(v, &used);
                if (used != v.size() || *o.duration <= 0) throw std::invalid_argument(v);
            } catch (const std::exception&) {
                usage_error("--duration needs a positive number of seconds, got '" + v + "'");
            }
        } else if (a == "--backend") {
            o.backend = value(i, a);
        } else if (a == "--shards") {
            const std::string v = value(i, a);
            try {
                std::size_t used = 0;
                const unsigned long n = std::stoul(v, &used);
                if (used != v.size() || n < 1 || n > 64) throw std::invalid_argument(v);
                o.shards = static_cast<std::uint32_t>(n);
            } catch (const std::exception&) {
                usage_error("--shards needs a number of receive shards, 1..64, got '" + v + "'");
            }
        } else if (a == "--compression") {
            o.compression = value(i, a);
        } else if (a == "--gro") {
            o.gro = true;
        } else if (a == "--summary-json") {
            o.summary_json = value(i, a);
        } else if (a == "--log-level") {
            o.log_level = value(i, a);
        } else if (a == "--calibration") {
            o.calibration = value(i, a);
        } else if (a == "--pedestal-run") {
            o.pedestal_run = value(i, a);
        } else if (a == "--pedestal-frames") {
            const std::string v = value(i, a);
            try {
                std::size_t used = 0;
                const long long n = std::stoll(v, &used);
                if (used != v.size() || n < 2 || n > 100'000'000) throw std::invalid_argument(v);
                o.pedestal_frames = static_cast<std::uint64_t>(n);
            } catch (const std::exception&) {
                usage_error("--pedestal-frames needs a whole number from 2 to 100000000, got '" + v + "'");
            }
        } else if (a == "--check-config") {
            o.check_config = value(i, a);
        } else if (a == "--print-config") {
            o.print_config = true;
        } else if (a == "--check-host") {
            o.check_host = true;
        } else if (a == "--recover") {
            o.recover = true;
            if (i + 1 < argc && argv[i + 1][0] != '-') o.recover_file = argv[++i];
        } else if (a == "--http") {
            o.http = value(i, a);
        } else if (a == "--stream") {
            o.stream.push_back(value(i, a));
        } else {
            usage_error("unknown option '" + a + "'");
        }
    }
    return o;
}

daqd::config::config effective_config(const options& o) {
    using namespace daqd::config;
    config c = o.config_file ? load_file(*o.config_file) : load_default();
    bool changed = false;
    if (!o.listen.empty()) {
        c.acquisition.listen.clear();
        for (const auto& l : o.listen) c.acquisition.listen.push_back(endpoint::parse(l, "--listen"));
        changed = true;
    }
    // Options that stand for one key go through the key table, as the file does.
    auto set = [&](const std::optional<std::string>& value, std::string_view key, std::string_view option) {
        if (!value) return;
        set_key(c, key, *value, option);
        changed = true;
    };
    set(o.output, "storage.output_dir", "--output");
    set(o.backend, "acquisition.backend", "--backend");
    set(o.compression, "storage.compression", "--compression");
    if (o.shards) {
        c.acquisition.shards = *o.shards;
        changed = true;
    }
    if (o.gro) {
        // GRO hands over up to 64 KiB of coalesced datagrams per receive: slots must hold that.
        c.acquisition.gro = true;
        c.acquisition.max_datagram_bytes = 65535;
        c.acquisition.ring_slots = std::min<std::uint32_t>(c.acquisition.ring_slots, 4096);
        changed = true;
    }
    set(o.log_level, "log.level", "--log-level");
    if (o.http) set(*o.http == "off" ? std::string() : *o.http, "http.listen", "--http");
    set(o.calibration, "processing.calibration_file", "--calibration");
    if (!o.stream.empty()) {
        for (const auto& e : o.stream) {
            try {
                (void)check_stream_endpoint(e, "--stream");
            } catch (const config_error& err) {
                usage_error(err.what());
            }
        }
        c.stream.listen = o.stream;
        changed = true;
    }
    // --calibration FILE means "calibrate with FILE": the stage comes with it
    // (first, as the stages' order wants), whatever the file's stages say.
    if (o.calibration && !c.processing.has("calibrate"))
        c.processing.stages.insert(c.processing.stages.begin(), "calibrate");
    if (changed) {
        // Re-validate and re-render so the stored configuration is what runs.
        const std::string source = c.source;
        c = load_string(to_toml(c), source + " + command line");
    }
    return c;
}

// Holds <output_dir>/.daqd.lock for the life of the process: a second daqd
// on the same directory would write the same run names, and recovery would
// mend files another server still writes. Returns an error message, or "".
// Whoever can write the output directory can put anything at that name: the
// lock is opened without following a symlink and used only if it is a
// regular file of ours with one link (no hard link to someone else's file),
// and it is truncated only once we hold it.
std::string lock_output_dir(const std::filesystem::path& dir) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) return fmt::format("cannot create output directory {}: {}", dir.string(), ec.message());
    const auto path = dir / ".daqd.lock";
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0644);
    if (fd < 0) {
        if (errno == ELOOP)
            return fmt::format("{} is a symlink: refusing to follow it (remove it; daqd creates its own lock file)",
                               path.string());
        return fmt::format("cannot open {}: {}", path.string(), std::strerror(errno));
    }
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
        const int err = errno;
        ::close(fd);
        return fmt::format("fstat failed on {}: {}", path.string(), std::strerror(err));
    }
    if (!S_ISREG(st.st_mode) || st.st_uid != ::geteuid() || st.st_nlink != 1) {
        ::close(fd);
        return fmt::format("{} is not a regular file of uid {} with a single link (type {:o}, uid {}, {} links): "
                           "refusing to use it as daqd's lock (remove it)",
                           path.string(), ::geteuid(), st.st_mode & S_IFMT, st.st_uid, st.st_nlink);
    }
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
        const int err = errno;
        char pid[32] = "";
        const auto n = ::pread(fd, pid, sizeof pid - 1, 0);
        pid[n > 0 ? n : 0] = '\0';
        ::close(fd);
        if (err == EWOULDBLOCK)
            return fmt::format("output directory {} is in use by another daqd (pid {}); one server per directory",
                               dir.string(), std::strtol(pid, nullptr, 10));
        return fmt::format("cannot lock {}: {}", path.string(), std::strerror(err));
    }
    const std::string me = std::to_string(::getpid()) + "\n";
    if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, me.data(), me.size(), 0) < 0)
        spdlog::debug("cannot write the pid into {}", path.string());
    return {};  // fd stays open (and locked) until the process ends
}

// SIGHUP: re-reads the --config file, with the command line's options over
// it as at start, and applies what may change while daqd runs (reload.hpp).
// `running` is what daqd runs with. A file with mistakes changes nothing.
// Returns false when nothing could be read (no file, or one with mistakes).
bool reload_config(const options& o, daqd::config::config& running, daqd::web::service* web) {
    if (!o.config_file) {
        spdlog::info("SIGHUP: no configuration file to re-read (daqd runs on the embedded default and its command "
                     "line; give --config FILE to reload one): nothing changed");
        return false;
    }
    daqd::config::config fresh;
    try {
        fresh = effective_config(o);
    } catch (const std::exception& e) {
        spdlog::error("SIGHUP: {} not reloaded, daqd carries on with the configuration it runs: {}", *o.config_file,
                      daqd::one_line(e.what()));
        return false;
    }
    auto plan = daqd::plan_reload(running, fresh);
    // The web side's access (token, allowed hosts) goes to the web side first;
    // if it cannot take it (token file unreadable, no web side), those keys
    // keep what daqd runs with.
    const auto http = std::find_if(plan.applied.begin(), plan.applied.end(),
                                   [](const auto& c) { return c.key.rfind("http.", 0) == 0; });
    if (http != plan.applied.end()) {
        std::string why;
        if (web == nullptr) {
            why = "daqd runs without its web side";
        } else {
            try {
                web->reload_access(fresh);
            } catch (const std::exception& e) {
                why = e.what();
            }
        }
        if (!why.empty()) {
            spdlog::error("SIGHUP: http.token, http.token_file, http.allowed_hosts not reloaded ({}); the web side "
                          "keeps its token and host names",
                          why);
            std::erase_if(plan.applied, [](const auto& c) { return c.key.rfind("http.", 0) == 0; });
        }
    }
    daqd::apply_reload(plan, running, fresh, *o.config_file);
    return true;
}

}  // namespace

int main(int argc, char** argv) {
    // The run catalogue's helper (storage/run_catalog.hpp): reads one file's
    // metadata in a process of its own, so that a damaged file can hang or
    // crash only this process. Not a user option.
    if (argc == 3 && std::string(argv[1]) == daqd::storage::run_catalog::helper_flag)
        return daqd::storage::run_catalog::helper_main(argv[2]);
    const options o = parse(argc, argv);
    auto logger = spdlog::stderr_color_mt("daqd");
    spdlog::set_default_logger(logger);
    spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");

    if (o.check_config) {
        try {
            auto c = daqd::config::load_file(*o.check_config);
            // The files it names that daqd reads at start (a token file, a
            // calibration file): a configuration daqd would not start with
            // does not pass.
            const auto missing = daqd::check_config_files(c, *o.check_config);
            for (const auto& m : missing) std::cerr << m << "\n";
            if (!missing.empty()) return 1;
            std::cout << *o.check_config << ": configuration is valid\n";
            return 0;
        } catch (const std::exception& e) {
            std::cerr << e.what() << "\n";
            return 1;
        }
    }

    daqd::config::config cfg;
    try {
        cfg = effective_config(o);
    } catch (const std::exception& e) {
        std::cerr << "daqd: " << e.what() << "\n";
        return 2;
    }
    if (o.print_config) {
        std::cout << cfg.text;
        return 0;
    }
    if (o.check_host) return daqd::check_host_command(cfg);
    spdlog::set_level(spdlog::level::from_str(cfg.log.level));
    // A token file that cannot be read would leave daqd running without its
    // web side; a missing calibration file would fail later, less clearly.
    if (!o.recover && !o.recover_file) {
        auto missing = daqd::check_config_files(cfg, o.config_file.value_or(""));
        if (o.pedestal_run)  // no web side, no calibrate stage in a pedestal run
            missing.clear();
        if (!missing.empty()) {
            for (const auto& m : missing) std::cerr << "daqd: " << m << "\n";
            std::cerr << "daqd: not starting\n";
            return 2;
        }
    }
    if (o.run) {
        if (auto err = daqd::check_run_name(*o.run); !err.empty()) {
            std::cerr << "daqd: --run: " << err << "\n";
            return 2;
        }
    }
    // A pedestal run: no run file, the calibration file <output>/NAME.calib.h5.
    std::filesystem::path calibration_out;
    if (o.pedestal_run) {
        if (o.run) {
            std::cerr << "daqd: --pedestal-run and --run exclude each other\n";
            return 2;
        }
        if (auto err = daqd::check_run_name(*o.pedestal_run); !err.empty()) {
            std::cerr << "daqd: --pedestal-run: " << err << "\n";
            return 2;
        }
        calibration_out = cfg.storage.output_dir / (*o.pedestal_run + ".calib.h5");
        std::error_code ec;
        if (std::filesystem::exists(calibration_out, ec)) {
            std::cerr << "daqd: --pedestal-run: " << calibration_out.string() << " already exists (refusing to overwrite)\n";
            return 2;
        }
        std::filesystem::create_directories(cfg.storage.output_dir, ec);
    }

    // Every thread inherits blocked SIGINT/SIGTERM/SIGQUIT/SIGHUP; main waits
    // for them. SIGINT, SIGTERM and SIGQUIT stop daqd cleanly (files closed,
    // ring unlinked). SIGHUP (systemctl reload, or a closed terminal or SSH
    // session) never ends a run: main re-reads the configuration file and
    // daqd carries on. A peer closing a socket is an error on that socket,
    // never SIGPIPE.
    ::signal(SIGPIPE, SIG_IGN);
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGQUIT);
    sigaddset(&signals, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);

    if (o.recover_file) {
        // A file named by the operator, anywhere: no lock needed (a file
        // another process has open is refused), no other thread uses HDF5.
        const auto r = daqd::storage::recover_run_file(*o.recover_file);
        if (!r.error.empty()) {
            std::cout << "daqd: cannot recover " << *o.recover_file << ": " << r.error << "\n";
            return 1;
        }
        if (!r.recovered) {
            std::cout << "daqd: " << *o.recover_file << " was closed properly: nothing to do\n";
            return 0;
        }
        daqd::storage::journal::remove(std::filesystem::path(*o.recover_file).parent_path(), *o.recover_file);
        std::cout << "daqd: recovered " << *o.recover_file << ": " << r.frames_kept << " frames kept, "
                  << r.rows_trimmed << " rows past the last flush dropped\n";
        return 0;
    }
    spdlog::info("daqd {} starting (configuration: {})", DAQD_VERSION, cfg.source);
    if (auto err = lock_output_dir(cfg.storage.output_dir); !err.empty()) {
        spdlog::error("{}", err);
        std::cerr << "daqd: " << err << "\n";
        return 1;
    }
    // Before any thread uses HDF5: mend what a crash left open.
    const auto recovered = daqd::storage::recover_run_files(cfg.storage.output_dir);
    if (o.recover) {
        std::size_t failed = 0;
        for (const auto& r : recovered) {
            if (r.recovered)
                std::cout << "daqd: recovered " << r.file.string() << ": " << r.frames_kept << " frames kept, "
                          << r.rows_trimmed << " rows past the last flush dropped\n";
            else
                std::cout << "daqd: cannot recover " << r.file.string() << ": " << r.error << "\n", ++failed;
        }
        if (recovered.empty()) std::cout << "daqd: no run file in " << cfg.storage.output_dir.string() << " needed recovery\n";
        return failed ? 1 : 0;
    }
    auto host_checks = daqd::check_host_at_start(cfg);
    daqd::serving serving;  // stops in the order it is built (serving.hpp)
    auto& p = serving.data_path;
    // After serving: its watchdog thread reads the pipeline, so it goes first.
    daqd::service_notifier notifier;
    try {
        p = std::make_unique<daqd::pipeline>(cfg, o.pedestal_run ? o.pedestal_frames : 0);
        p->start();
        if (o.run) p->start_run(*o.run);
    } catch (const std::exception& e) {
        spdlog::error("{}", e.what());
        std::cerr << "daqd: " << e.what() << "\n";
        return 1;
    }

    // The web side reads the pipeline's counters and drives its runs; not for a pedestal run.
    if (!o.pedestal_run) {
        serving.catalog = std::make_unique<daqd::storage::run_catalog>(cfg.storage.output_dir);
        serving.web = daqd::start_web(cfg, *p, *serving.catalog, std::move(host_checks));
    }

    // Start-up is done: sockets bound, rings mapped, threads started, the run
    // (--run) open, the HTTP server bound. systemd may start what waits for us.
    std::string listening;
    for (const auto& l : cfg.acquisition.listen) listening += (listening.empty() ? "" : " ") + l.to_string();
    const std::string ready_status =
        fmt::format("receiving on {}{}", listening, o.run ? "; recording run " + *o.run : std::string());
    notifier.ready(ready_status);
    notifier.start_watchdog([&p] { return p->thread_status(); });

    const auto started = std::chrono::steady_clock::now();
    // A pedestal run ends when every unit seen (at least one, and every
    // listed unit) has its frames, and no new unit came for 300 ms.
    bool pedestal_all_in = false;
    std::chrono::steady_clock::time_point pedestal_done_since{};
    auto pedestal_done = [&] {
        const auto* ped = p->processor() ? p->processor()->pedestal() : nullptr;
        if (ped == nullptr) return false;
        const std::uint32_t seen = ped->units_seen();
        const bool done = seen >= std::max<std::size_t>(1, cfg.units.units.size()) && ped->units_complete() == seen;
        if (!done) {
            pedestal_all_in = false;
            return false;
        }
        const auto now = std::chrono::steady_clock::now();
        if (!pedestal_all_in) pedestal_done_since = now;
        pedestal_all_in = true;
        return now - pedestal_done_since >= std::chrono::milliseconds(300);
    };
    if (o.pedestal_run)
        spdlog::info("pedestal run {}: waiting for {} complete frames per unit (no beam, please)", *o.pedestal_run,
                     o.pedestal_frames);
    // What a reload compares a freshly read file with (main thread only; cfg
    // itself stays as it was: the pipeline and the web side read it).
    daqd::config::config running = cfg;
    int got = 0;
    for (;;) {
        if (o.pedestal_run && pedestal_done()) break;
        timespec ts{0, 100'000'000};
        const int sig = sigtimedwait(&signals, nullptr, &ts);
        if (sig == SIGHUP) {
            notifier.reloading();
            p->count_reload(reload_config(o, running, serving.web.get()));
            if (auto* stream = p->stream()) stream->set_preview_rate(running.stream.preview_rate);
            const daqd::processing::threshold_policy threshold{
                running.processing.threshold_mode == "absolute" ? daqd::processing::threshold_mode::absolute
                                                                : daqd::processing::threshold_mode::noise,
                static_cast<float>(running.processing.threshold)};
            if (const auto how = p->set_threshold(threshold); how != "unchanged")
                spdlog::info("SIGHUP: processing.threshold {} {}: {}", daqd::processing::name(threshold.mode),
                             threshold.value, how);
            notifier.reloaded(ready_status);
            continue;
        }
        if (sig > 0) {
            got = sig;
            break;
        }
        p->expire_prepared();  // a two-phase start whose commit never came
        if (o.duration &&
            std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count() >= *o.duration)
            break;
    }
    if (got) spdlog::info("{}: stopping (draining rings and queues)", strsignal(got));
    // No ping while draining: systemd's stop timeout bounds it from here.
    notifier.stop_watchdog();
    notifier.stopping("draining rings and queues, closing the run file");
    serving.stop();
    const auto s = p->snapshot();
    if (s.last_run) {
        // The last run, whichever kind (a pedestal run's file is its calibration file).
        const auto& r = *s.last_run;
        std::string files;
        for (const auto& f : r.files) files += (files.empty() ? "" : " ") + f.string();
        std::cout << "daqd: run " << r.run_name << (r.kind == "pedestal" ? " (pedestal)" : "")
                  << (r.failed ? " FAILED" : "") << " -> " << (files.empty() ? "(no file)" : files) << "\n";
        if (r.failed) std::cout << "daqd: run error: " << r.error << "\n";
    } else if (!s.run_name.empty()) {
        std::string files;
        for (const auto& f : s.files) files += (files.empty() ? "" : " ") + f;
        std::cout << "daqd: run " << s.run_name << (s.run_failed ? " FAILED" : "") << " -> " << files << "\n";
        if (s.run_failed) std::cout << "daqd: run error: " << s.run_error << "\n";
    }
    // The last run's own counts, then daqd's since it started: after several
    // runs (over the API) the two differ, and each line says which it is.
    if (const auto line = s.run_line(); !line.empty()) std::cout << "daqd: " << line << "\n";
    std::cout << "daqd: " << s.one_line() << std::endl;
    int pedestal_status = 0;
    if (o.pedestal_run) {
        // The writer thread has stopped: this thread may use HDF5.
        const auto result = p->pedestal_result();
        std::string units;
        for (const auto& u : p->processor()->pedestal()->progress())
            units += fmt::format("{}u{}: {} frames{}", units.empty() ? "" : ", ", u.unit_id, u.frames,
                                 u.skipped_incomplete ? fmt::format(" ({} incomplete skipped)", u.skipped_incomplete)
                                                      : std::string());
        if (result.units.empty()) {
            std::cout << "daqd: pedestal run " << *o.pedestal_run << " FAILED: no unit sent 2 complete frames"
                      << (units.empty() ? std::string() : " (" + units + ")") << "\n";
            pedestal_status = 1;
        } else {
            for (const auto& [id, u] : result.units)
                if (u.frames < o.pedestal_frames)
                    spdlog::warn("pedestal run {}: unit {} has only {} of {} frames (stopped early)", *o.pedestal_run,
                                 id, u.frames, o.pedestal_frames);
            try {
                daqd::storage::write_calibration_file(
                    calibration_out, result,
                    fmt::format("pedestal run {}: mean and standard deviation of up to {} complete frames per unit",
                                *o.pedestal_run, o.pedestal_frames));
                std::cout << "daqd: pedestal run " << *o.pedestal_run << " -> " << calibration_out.string() << " ("
                          << units << ")\n";
                std::cout << "daqd: use it with --calibration " << calibration_out.string()
                          << " (or processing.calibration_file)\n";
            } catch (const std::exception& e) {
                std::cout << "daqd: pedestal run " << *o.pedestal_run << " FAILED: " << e.what() << "\n";
                pedestal_status = 1;
            }
        }
    }
    if (o.summary_json) {
        std::ofstream out(*o.summary_json);
        out << s.to_json() << "\n";
        if (!out) spdlog::error("cannot write {}: {}", *o.summary_json, std::strerror(errno));
    }
    p.reset();
    return s.run_failed || pedestal_status != 0 ? 1 : 0;
}
