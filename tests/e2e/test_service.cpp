// daqd as a facility service (issue 17), end to end with real processes:
// SIGHUP re-reads the configuration mid-run without losing a frame, and a
// broken file on reload changes nothing (docs/OPERATIONS.md "Reloading
// (SIGHUP)"); systemd's notifications reach a NOTIFY_SOCKET of the test's
// own in order, and the watchdog pings stop while a data-path thread is
// stuck (docs/OPERATIONS.md "Running as a systemd service").
#include "daqd_fixture.hpp"
#include "notify_socket.hpp"

#include <catch2/catch.hpp>
#include <netinet/in.h>
#include <nlohmann/json.hpp>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

using daqd::test::child;
using daqd::test::count_of;
using daqd::test::daqd_process;
using daqd::test::eventually;
using daqd::test::read_json;
using daqd::test::scratch_dir;
using daqd::test::slurp;
using daqd_test::notify_socket;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

// The text of `s` with the first `what` replaced by `with` (which must be there).
std::string replaced(std::string s, const std::string& what, const std::string& with) {
    const auto at = s.find(what);
    REQUIRE(at != std::string::npos);
    return s.replace(at, what.size(), with);
}

}  // namespace

TEST_CASE("SIGHUP mid-run re-reads the configuration: log.level applied, other keys named, no frame lost, "
          "a broken file changes nothing",
          "[e2e][service]") {
    scratch_dir dir("reload");
    const std::string runs = dir / "runs";
    daqd_process d(dir, "reload", runs, "", {"--run", "reload"});
    const std::string cfg_file = dir / "reload.toml";
    const std::string original = slurp(cfg_file);
    child sim({DAQ_SIM_BIN, "--target", d.target(), "--units", "2", "--duration", "4", "--rate", "50", "--json",
               dir / "reload.sim.json", "--quiet"},
              dir / "reload.sim.out", dir / "reload.sim.err");
    REQUIRE(eventually([&] { return d.metric("daq_frames_written_total") > 50; }, 10s));

    // At "info" a request that fails is not logged (it is at "debug").
    CHECK(web_test::http(d.http, "GET", "/before-reload").status == 404);

    // A changed file: one key daqd applies, two it cannot while it runs.
    std::ofstream(cfg_file) << replaced(original, "shards = 1\n", "shards = 1\nbatch = 32\n")
                            << "flush_interval_ms = 500\n[log]\nlevel = \"debug\"\n";
    d.proc->signal(SIGHUP);
    REQUIRE(d.proc->wait_for_log("SIGHUP: reloaded", 5s));
    std::string log = d.proc->err();
    INFO(log);
    CHECK(count_of(log, "SIGHUP: reloaded") == 1);
    CHECK(log.find("SIGHUP: reloaded " + cfg_file + ": applied log.level = \"debug\" (was \"info\"); 2 keys changed "
                   "but take effect only at the next start (restart daqd): acquisition.batch, "
                   "storage.flush_interval_ms") != std::string::npos);
    // The new level is in effect: the same kind of request is logged now.
    CHECK(web_test::http(d.http, "GET", "/after-reload").status == 404);
    CHECK(d.proc->wait_for_log("GET /after-reload -> 404", 5s));
    CHECK(d.proc->err().find("/before-reload") == std::string::npos);

    // A broken file: one error line naming the key, the running configuration stays.
    std::ofstream(cfg_file) << original << "[log]\nlevel = \"loud\"\n";
    d.proc->signal(SIGHUP);
    REQUIRE(d.proc->wait_for_log("not reloaded", 5s));
    log = d.proc->err();
    CHECK(count_of(log, " error ") == 1);
    CHECK(log.find("SIGHUP: " + cfg_file + " not reloaded, daqd carries on with the configuration it runs: " +
                   cfg_file + ":") != std::string::npos);
    CHECK(log.find("log.level") != std::string::npos);
    CHECK(web_test::http(d.http, "GET", "/after-broken").status == 404);
    CHECK(d.proc->wait_for_log("GET /after-broken -> 404", 5s));  // still "debug"
    CHECK(d.status()["run"]["state"] == "recording");

    // Still recording, every frame: none lost on the way.
    REQUIRE(sim.wait(30s) == 0);
    const auto sent = read_json(dir / "reload.sim.json");
    REQUIRE(eventually([&] { return d.metric("daq_frames_written_total") >= sent["frames_sent"].get<double>(); }, 10s));
    CHECK(d.status()["run"]["state"] == "recording");
    d.proc->signal(SIGTERM);
    REQUIRE(d.proc->wait(30s) == 0);
    const auto s = read_json(dir / "reload.json");
    INFO(s.dump(1));
    CHECK(s["frames_written"] == sent["frames_sent"]);
    CHECK(s["frames_complete"] == sent["frames_sent"]);
    CHECK(s["frames_incomplete"] == 0);
    CHECK(s["frames_lost"] == 0);
    CHECK(s["packets_lost"] == 0);
    CHECK(s["ring_dropped"] == 0);
    CHECK(s["kernel_drops"] == 0);
    daqd::test::verify(dir, {runs + "/reload.h5"});
}

namespace {

// Environment variables for the processes started during its life (this
// test process's own environment; the tests run on one thread).
struct scoped_env {
    std::vector<std::string> names;
    explicit scoped_env(const std::vector<std::pair<std::string, std::string>>& vars) {
        for (const auto& [k, v] : vars) {
            ::setenv(k.c_str(), v.c_str(), 1);
            names.push_back(k);
        }
    }
    ~scoped_env() {
        for (const auto& k : names) ::unsetenv(k.c_str());
    }
};

bool has_line(const std::string& message, const std::string& line) {
    return ("\n" + message + "\n").find("\n" + line + "\n") != std::string::npos;
}

// True when 127.0.0.1:port (UDP) is bound by someone else.
bool udp_port_taken(std::uint16_t port) {
    const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port);
    const bool taken = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 && errno == EADDRINUSE;
    ::close(fd);
    return taken;
}

}  // namespace

TEST_CASE("SIGHUP takes a new token and allowed host names for the next request, a token file daqd cannot read "
          "changes nothing",
          "[e2e][service]") {
    scratch_dir dir("reload-access");
    const std::string runs = dir / "runs";
    const std::string token_file = dir / "token";
    const std::string cfg_file = dir / "access.toml";
    const std::uint16_t udp = daqd::test::free_port(SOCK_DGRAM), port = daqd::test::free_port(SOCK_STREAM);
    auto write_config = [&](const std::string& token_path, const std::string& hosts) {
        std::ofstream(cfg_file) << "[acquisition]\nlisten = [\"127.0.0.1:" << udp << "\"]\n[storage]\noutput_dir = \""
                                << runs << "\"\n[http]\nlisten = \"127.0.0.1:" << port << "\"\ntoken_file = \""
                                << token_path << "\"\nallowed_hosts = [" << hosts << "]\n";
    };
    std::ofstream(token_file) << "first-token-0123456789\n";
    write_config(token_file, "");
    child d({DAQD_BIN, "--config", cfg_file, "--run", "access"}, dir / "access.out", dir / "access.err");
    REQUIRE(d.wait_for_log("http: status page", 20s));
    auto with_host = [&](const std::string& host) {
        return web_test::parse_reply(web_test::exchange_raw(
                                         port, "GET /api/v1/status HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n\r\n"))
            .status;
    };
    auto stop_with = [&](const std::string& token) {
        return web_test::http(port, "POST", "/api/v1/runs/stop", "", token).status;
    };
    CHECK(with_host("daq01.lab.example") == 403);
    CHECK(stop_with("second-token-0123456789") == 401);

    // A new token in the file, and a new host name: both hold from the next request on.
    std::ofstream(token_file) << "second-token-0123456789\n";
    write_config(token_file, "\"daq01.lab.example\"");
    d.signal(SIGHUP);
    REQUIRE(d.wait_for_log("SIGHUP: reloaded", 5s));
    const std::string log = d.err();
    INFO(log);
    CHECK(log.find("applied http.allowed_hosts = [\"daq01.lab.example\"] (was [])") != std::string::npos);
    CHECK(log.find("second-token") == std::string::npos);
    CHECK(with_host("daq01.lab.example") == 200);
    CHECK(stop_with("first-token-0123456789") == 401);  // the old token no longer stops runs

    // A token file daqd cannot read: an error, and the token stays.
    write_config(dir / "missing-token", "");
    d.signal(SIGHUP);
    REQUIRE(d.wait_for_log("not reloaded (", 5s));
    CHECK(with_host("daq01.lab.example") == 200);
    CHECK(stop_with("second-token-0123456789") == 200);  // the run recorded since start stops with the new token
    CHECK(web_test::http(port, "GET", "/api/v1/status").status == 200);
    d.signal(SIGTERM);
    CHECK(d.wait(30s) == 0);
}

TEST_CASE("sd_notify: READY once the sockets are bound and the ring mapped, WATCHDOG pings while the data path "
          "runs, STOPPING when draining starts",
          "[e2e][service]") {
    scratch_dir dir("notify");
    notify_socket sock(dir / "notify.sock");
    std::unique_ptr<daqd_process> d;
    {
        // WatchdogSec=1s: a ping every 0.5 s.
        scoped_env env({{"NOTIFY_SOCKET", sock.path}, {"WATCHDOG_USEC", "1000000"}});
        d = std::make_unique<daqd_process>(dir, "notify", dir / "runs", "", std::vector<std::string>{"--run", "notify"});
    }
    const std::string first = sock.next(5s);
    INFO(first);
    REQUIRE(has_line(first, "READY=1"));
    // Ready means serving: its UDP socket is bound and its ring is in /dev/shm.
    CHECK(udp_port_taken(d->udp));
    CHECK(fs::exists("/dev/shm/daqd-" + std::to_string(d->proc->pid()) + "-0"));
    CHECK(first.find("STATUS=") != std::string::npos);

    int pings = 0;
    const auto until = std::chrono::steady_clock::now() + 5s;
    while (pings < 2 && std::chrono::steady_clock::now() < until) {
        const std::string m = sock.next(2s);
        INFO(m);
        CHECK_FALSE(has_line(m, "READY=1"));
        if (has_line(m, "WATCHDOG=1")) ++pings;
    }
    CHECK(pings == 2);
    CHECK(d->proc->err().find("systemd watchdog: WatchdogSec 1.0 s") != std::string::npos);

    d->proc->signal(SIGTERM);
    std::vector<std::string> after;
    for (std::string m; !(m = sock.next(3s)).empty();) {
        after.push_back(m);
        if (has_line(m, "STOPPING=1")) break;
    }
    REQUIRE_FALSE(after.empty());
    CHECK(has_line(after.back(), "STOPPING=1"));
    REQUIRE(d->proc->wait(30s) == 0);
    // Nothing after STOPPING: the watchdog thread stopped first.
    CHECK(sock.next(200ms).empty());
}

TEST_CASE("sd_notify: a data-path thread stuck for 2 s stops the watchdog pings, which resume when it moves again",
          "[e2e][service]") {
    scratch_dir dir("watchdog");
    notify_socket sock(dir / "notify.sock");
    std::unique_ptr<daqd_process> d;
    {
        // The writer's 10th chunk write stalls 2 s (storage/src/run_file.cpp).
        scoped_env env({{"NOTIFY_SOCKET", sock.path}, {"WATCHDOG_USEC", "1000000"}, {"DAQD_FAULT_WRITE_STALL_MS", "2000"}});
        d = std::make_unique<daqd_process>(dir, "watchdog", dir / "runs", "", std::vector<std::string>{"--run", "w"});
    }
    REQUIRE(has_line(sock.next(5s), "READY=1"));
    child sim({DAQ_SIM_BIN, "--target", d->target(), "--units", "2", "--duration", "2", "--rate", "200", "--quiet"},
              dir / "watchdog.sim.out", dir / "watchdog.sim.err");
    // Pings, then a gap of well over 0.5 s while the writer stalls, then pings again.
    using clock = std::chrono::steady_clock;
    auto last = clock::now();
    clock::duration longest{};
    int pings_after_gap = 0;
    const auto until = clock::now() + 10s;
    while (clock::now() < until && pings_after_gap < 2) {
        const std::string m = sock.next(3s);
        if (!has_line(m, "WATCHDOG=1")) continue;
        const auto now = clock::now();
        longest = std::max(longest, now - last);
        last = now;
        if (longest > 1200ms) ++pings_after_gap;
    }
    const std::string log = d->proc->err();
    INFO(log);
    CHECK(log.find("chunk write stalls 2000 ms now") != std::string::npos);
    CHECK(longest > 1200ms);
    CHECK(pings_after_gap == 2);
    CHECK(log.find("systemd watchdog: no ping: thread daqd-write made no pass for") != std::string::npos);
    CHECK(log.find("systemd watchdog: every data-path thread makes progress again: pings resume") != std::string::npos);
    sim.wait(10s);
    d->proc->signal(SIGTERM);
    REQUIRE(d->proc->wait(30s) == 0);
}
