#pragma once
// A daqd process for end-to-end tests, with its config file, ports, status,
// /metrics and token; and the checks the fault tests share (RSS, daq-inspect,
// h5py, a tmpfs). Test-only. The including test defines DAQD_BIN and
// DAQ_INSPECT_BIN.
#include "http_client.hpp"
#include "process.hpp"
#include "tmpfs_mount.hpp"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

namespace daqd::test {

using nlohmann::json;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

inline std::size_t count_of(const std::string& text, const std::string& what) {
    std::size_t n = 0;
    for (auto p = text.find(what); p != std::string::npos; p = text.find(what, p + what.size())) ++n;
    return n;
}

// daqd with a config file, a free UDP port and a free HTTP port, output in
// `output`. `extra_toml` is appended to the config (its own sections).
struct daqd_process {
    std::uint16_t udp = daqd::test::free_port(SOCK_DGRAM);
    std::vector<std::uint16_t> udp_links{udp};  // with shards > 1: one link per shard
    std::uint16_t http = daqd::test::free_port(SOCK_STREAM);
    std::string name;
    std::unique_ptr<child> proc;

    // `shards` > 1: that many links (udp first) and acquisition.shards.
    daqd_process(const scratch_dir& dir, const std::string& name_, const std::string& output,
                 const std::string& extra_toml, std::vector<std::string> args = {},
                 const std::string& acquisition_toml = "", int shards = 1)
        : name(name_) {
        while (static_cast<int>(udp_links.size()) < shards) {
            const auto p = daqd::test::free_port(SOCK_DGRAM);
            if (std::find(udp_links.begin(), udp_links.end(), p) == udp_links.end()) udp_links.push_back(p);
        }
        std::string listen;
        for (auto p : udp_links) listen += (listen.empty() ? "\"127.0.0.1:" : ", \"127.0.0.1:") + std::to_string(p) + "\"";
        const std::string cfg = dir / (name + ".toml");
        std::ofstream(cfg) << "[acquisition]\nlisten = [" << listen << "]\nshards = " << shards << "\n"
                           << acquisition_toml
                           << "[http]\nlisten = \"127.0.0.1:" << http << "\"\n"
                           << "[storage]\noutput_dir = \"" << output << "\"\n"
                           << extra_toml;
        std::vector<std::string> argv{DAQD_BIN, "--config", cfg, "--summary-json", dir / (name + ".json")};
        argv.insert(argv.end(), args.begin(), args.end());
        proc = std::make_unique<child>(argv, dir / (name + ".daqd.out"), dir / (name + ".daqd.err"));
        REQUIRE(proc->wait_for_log("http: status page", 20s));
    }
    std::string target() const { return "127.0.0.1:" + std::to_string(udp); }
    // daq-sim's --target for every link (it spreads its units over them).
    std::vector<std::string> sim_targets() const {
        std::vector<std::string> v;
        for (auto p : udp_links) v.insert(v.end(), {"--target", "127.0.0.1:" + std::to_string(p)});
        return v;
    }

    json status() const {
        auto r = web_test::http(http, "GET", "/api/v1/status");
        INFO(r.body);
        REQUIRE(r.status == 200);
        return json::parse(r.body);
    }
    std::string metrics() const {
        auto r = web_test::http(http, "GET", "/metrics");
        REQUIRE(r.status == 200);
        return r.body;
    }
    // Sum of every series of `metric` (with labels matching `labels`, if given).
    double metric(const std::string& metric_name, const std::string& labels = "") const {
        const std::string text = metrics();
        double sum = 0;
        std::istringstream in(text);
        for (std::string line; std::getline(in, line);) {
            if (line.empty() || line[0] == '#') continue;
            if (line.compare(0, metric_name.size(), metric_name) != 0) continue;
            const char next = line.size() > metric_name.size() ? line[metric_name.size()] : '\0';
            if (next != ' ' && next != '{') continue;
            if (!labels.empty() && line.find(labels) == std::string::npos) continue;
            sum += std::stod(line.substr(line.rfind(' ') + 1));
        }
        return sum;
    }
    std::string token(const std::string& output) const {
        std::string t;
        std::ifstream(fs::path(output) / ".daqd-token") >> t;
        return t;
    }
};

// A summary's accounting: every frame assembled went somewhere counted.
inline void check_accounting(const json& s) {
    const auto assembled = s["frames_complete"].get<std::uint64_t>() + s["frames_incomplete"].get<std::uint64_t>();
    CHECK(assembled == s["frames_written"].get<std::uint64_t>() + s["frames_unrecorded"].get<std::uint64_t>() +
                           s["frames_failed"].get<std::uint64_t>() + s["frames_rejected"].get<std::uint64_t>());
}

inline std::uint64_t rss_kib(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    for (std::string line; std::getline(in, line);)
        if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6));
    return 0;
}

inline std::pair<int, std::string> inspect(const scratch_dir& dir, std::vector<std::string> args) {
    args.insert(args.begin(), DAQ_INSPECT_BIN);
    return daqd::test::run(args, dir / "inspect");
}

// daq-inspect --json over a run's files, parsed (the call must succeed).
inline json inspect_json(const scratch_dir& dir, const std::vector<std::string>& files) {
    std::vector<std::string> args{"--json"};
    args.insert(args.end(), files.begin(), files.end());
    auto [rc, out] = inspect(dir, args);
    INFO(out);
    REQUIRE(rc == 0);
    return json::parse(out);
}

// daq-inspect --verify over a run's files: layout and every sample pass.
inline void verify(const scratch_dir& dir, const std::vector<std::string>& files) {
    std::vector<std::string> args{"--verify"};
    args.insert(args.end(), files.begin(), files.end());
    auto [rc, out] = inspect(dir, args);
    INFO(out);
    CHECK(rc == 0);
}

// Frames in a run file as h5py counts them (Debian's Python), -1 when h5py
// is not there, -2 when h5py cannot open the file. Opens without SWMR, as a
// training job would.
inline long h5py_frames(const scratch_dir& dir, const std::string& file) {
    if (!fs::exists("/usr/bin/python3")) return -1;
    const std::string script =
        "import sys\n"
        "try:\n    import h5py\nexcept ImportError:\n    print(-1); sys.exit(0)\n"
        "try:\n    f = h5py.File(sys.argv[1], 'r')\nexcept OSError:\n    print(-2); sys.exit(0)\n"
        "print(sum(f['units'][u]['frame_number'].shape[0] for u in f['units']))\n";
    std::ofstream(dir / "count.py") << script;
    auto [rc, out] = daqd::test::run({"/usr/bin/python3", dir / "count.py", file}, dir / "h5py");
    INFO(out);
    REQUIRE(rc == 0);
    return std::stol(out);
}

using daqd_test::tmpfs_mount;  // tmpfs_mount.hpp

}  // namespace daqd::test
