// daqd: the data-acquisition server. See README.md and `daqd --help`.
#include "pipeline.hpp"

#include "daqd/config/config.hpp"

#include <fmt/format.h>
#include <signal.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
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
  daqd --check-config FILE       load and validate FILE, print what is wrong, exit 0 if good
  daqd --print-config            print the effective configuration (defaults + --config + options)
  daqd --help | --version

options:
  --config FILE         TOML configuration (default: the embedded default; see docs/CONFIG.md)
  --listen HOST:PORT    UDP endpoint to listen on; repeat for several links (replaces the config's list)
  --output DIR          directory for run files (storage.output_dir)
  --run NAME            record a run called NAME from start until --duration passes or SIGINT/SIGTERM
  --duration SECONDS    stop after this long (with --run: the run's length)
  --backend NAME        receiver backend: auto, io_uring or recvmmsg (acquisition.backend)
  --gro                 enable UDP GRO on the sockets (acquisition.gro)
  --summary-json FILE   also write the final summary as JSON to FILE
  --log-level LEVEL     trace, debug, info, warn, error

On SIGINT/SIGTERM daqd stops receiving, drains every ring and queue, closes
the run files, prints a one-line summary and exits 0.
)";

struct options {
    std::optional<std::string> config_file;
    std::vector<std::string> listen;
    std::optional<std::string> output;
    std::optional<std::string> run;
    std::optional<double> duration;
    std::optional<std::string> backend;
    bool gro = false;
    std::optional<std::string> summary_json;
    std::optional<std::string> log_level;
    std::optional<std::string> check_config;
    bool print_config = false;
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
        } else if (a == "--gro") {
            o.gro = true;
        } else if (a == "--summary-json") {
            o.summary_json = value(i, a);
        } else if (a == "--log-level") {
            o.log_level = value(i, a);
        } else if (a == "--check-config") {
            o.check_config = value(i, a);
        } else if (a == "--print-config") {
            o.print_config = true;
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
    if (o.output) c.storage.output_dir = *o.output, changed = true;
    if (o.backend) {
        if (*o.backend == "auto")
            c.acquisition.backend = receiver_backend::automatic;
        else if (*o.backend == "io_uring")
            c.acquisition.backend = receiver_backend::io_uring;
        else if (*o.backend == "recvmmsg")
            c.acquisition.backend = receiver_backend::recvmmsg;
        else
            throw config_error("--backend: '" + *o.backend + "' is not one of auto, io_uring, recvmmsg");
        changed = true;
    }
    if (o.gro) {
        // GRO hands over up to 64 KiB of coalesced datagrams per receive: slots must hold that.
        c.acquisition.gro = true;
        c.acquisition.max_datagram_bytes = 65535;
        c.acquisition.ring_slots = std::min<std::uint32_t>(c.acquisition.ring_slots, 4096);
        changed = true;
    }
    if (o.log_level) c.log.level = *o.log_level, changed = true;
    if (changed) {
        // Re-validate and re-render so the stored configuration is what runs.
        const std::string source = c.source;
        c = load_string(to_toml(c), source + " + command line");
    }
    return c;
}

}  // namespace

int main(int argc, char** argv) {
    const options o = parse(argc, argv);
    auto logger = spdlog::stderr_color_mt("daqd");
    spdlog::set_default_logger(logger);
    spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");

    if (o.check_config) {
        try {
            auto c = daqd::config::load_file(*o.check_config);
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
    spdlog::set_level(spdlog::level::from_str(cfg.log.level));
    if (o.run) {
        if (auto err = daqd::check_run_name(*o.run); !err.empty()) {
            std::cerr << "daqd: --run: " << err << "\n";
            return 2;
        }
    }

    // Every thread inherits a blocked SIGINT/SIGTERM; main waits for them.
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);

    spdlog::info("daqd {} starting (configuration: {})", DAQD_VERSION, cfg.source);
    std::unique_ptr<daqd::pipeline> p;
    try {
        p = std::make_unique<daqd::pipeline>(cfg);
        p->start();
        if (o.run) p->start_run(*o.run);
    } catch (const std::exception& e) {
        spdlog::error("{}", e.what());
        std::cerr << "daqd: " << e.what() << "\n";
        return 1;
    }

    const auto started = std::chrono::steady_clock::now();
    int got = 0;
    for (;;) {
        timespec ts{0, 100'000'000};
        const int sig = sigtimedwait(&signals, nullptr, &ts);
        if (sig > 0) {
            got = sig;
            break;
        }
        if (o.duration &&
            std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count() >= *o.duration)
            break;
    }
    if (got) spdlog::info("{}: stopping (draining rings and queues)", strsignal(got));
    p->stop();
    const auto s = p->snapshot();
    if (!s.run_name.empty()) {
        std::string files;
        for (const auto& f : s.files) files += (files.empty() ? "" : " ") + f;
        std::cout << "daqd: run " << s.run_name << (s.run_failed ? " FAILED" : "") << " -> " << files << "\n";
        if (s.run_failed) std::cout << "daqd: run error: " << s.run_error << "\n";
    }
    std::cout << "daqd: " << s.one_line() << std::endl;
    if (o.summary_json) {
        std::ofstream out(*o.summary_json);
        out << s.to_json() << "\n";
        if (!out) spdlog::error("cannot write {}: {}", *o.summary_json, std::strerror(errno));
    }
    p.reset();
    return s.run_failed ? 1 : 0;
}
