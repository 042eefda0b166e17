// End to end with real processes: daq-sim → daqd, watched and driven over
// HTTP — a real Prometheus server scraping /metrics, the control API from a
// plain-socket client, the command-line checks.
#include "process.hpp"
#include "http_client.hpp"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>

using daqd::test::eventually;
using daqd::test::child;
using nlohmann::json;
namespace fs = std::filesystem;
using daqd::test::scratch_dir;
using namespace std::chrono_literals;

namespace {

// daqd on a free UDP port and a free HTTP port, output in dir/runs.
struct daqd_process {
    std::uint16_t udp = daqd::test::free_port(SOCK_DGRAM);
    std::uint16_t http = daqd::test::free_port(SOCK_STREAM);
    std::unique_ptr<child> proc;
    daqd_process(const scratch_dir& dir, const std::string& name) {
        proc = std::make_unique<child>(
            std::vector<std::string>{DAQD_BIN, "--listen", "127.0.0.1:" + std::to_string(udp), "--http",
                                     "127.0.0.1:" + std::to_string(http), "--output", dir / "runs", "--summary-json",
                                     dir / (name + ".json")},
            dir / (name + ".daqd.out"), dir / (name + ".daqd.err"));
        REQUIRE(proc->wait_for_log("http: status page", 20s));
    }
    std::string target() const { return "127.0.0.1:" + std::to_string(udp); }
};

json sim(const scratch_dir& dir, const std::string& target, std::vector<std::string> args, const std::string& name) {
    std::vector<std::string> argv{DAQ_SIM_BIN, "--target", target, "--json", dir / (name + ".json"), "--quiet"};
    argv.insert(argv.end(), args.begin(), args.end());
    auto [rc, out] = daqd::test::run(argv, dir / name);
    INFO(out);
    REQUIRE(rc == 0);
    std::ifstream in(dir / (name + ".json"));
    return json::parse(in);
}

json get_json(std::uint16_t port, const std::string& target) {
    auto r = web_test::http(port, "GET", target);
    INFO(target << " -> " << r.status << " " << r.body);
    REQUIRE(r.status == 200);
    return json::parse(r.body);
}

}  // namespace

TEST_CASE("a real Prometheus scrapes daqd while daq-sim sends, and the alert rules pass promtool", "[web][e2e]") {
    if (!fs::exists(PROMETHEUS_BIN)) {
        WARN("SKIPPED: " PROMETHEUS_BIN " is not installed (Debian package 'prometheus'; scripts/install-deps.sh "
             "installs it)");
        return;
    }
    scratch_dir dir("web-prometheus");
    if (fs::exists(PROMTOOL_BIN)) {
        auto [rc, out] = daqd::test::run({PROMTOOL_BIN, "check", "rules", DAQD_DASHBOARDS "/daqd-alerts.yml"}, dir / "rules");
        INFO(out);
        CHECK(rc == 0);
    }
    daqd_process d(dir, "daqd");
    const std::uint16_t prom_port = daqd::test::free_port(SOCK_STREAM);
    {
        std::ofstream cfg(dir / "prometheus.yml");
        cfg << "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            << "rule_files:\n  - " << DAQD_DASHBOARDS << "/daqd-alerts.yml\n"
            << "scrape_configs:\n  - job_name: daqd\n    static_configs:\n      - targets: ['127.0.0.1:" << d.http
            << "']\n";
    }
    child prom({PROMETHEUS_BIN, "--config.file=" + dir / "prometheus.yml", "--storage.tsdb.path=" + dir / "tsdb",
                "--web.listen-address=127.0.0.1:" + std::to_string(prom_port), "--log.level=warn"},
               dir / "prom.out", dir / "prom.err");
    REQUIRE(eventually(
        [&] {
            try {
                return web_test::http(prom_port, "GET", "/-/ready").status == 200;
            } catch (const std::exception&) {
                return false;
            }
        },
        30s));

    const auto s = sim(dir, d.target(), {"--units", "3", "--channels", "1024", "--frames", "400", "--rate", "40"}, "sim");
    const std::uint64_t sent = s["packets_sent"];
    REQUIRE(sent > 0);

    std::string last_reply;
    auto query = [&](const std::string& q) -> std::optional<double> {
        auto r = web_test::http(prom_port, "GET", "/api/v1/query?query=" + q);
        last_reply = std::to_string(r.status) + " " + r.body;
        if (r.status != 200) return std::nullopt;
        const json j = json::parse(r.body, nullptr, false);
        if (j.is_discarded() || j.value("status", "") != "success") return std::nullopt;
        const auto& result = j["data"]["result"];
        if (!result.is_array() || result.empty()) return std::nullopt;
        return std::stod(result[0]["value"][1].get<std::string>());
    };
    // A scraped value, once Prometheus has it.
    auto query_until = [&](const std::string& q, double want) {
        std::optional<double> v;
        eventually([&] { return (v = query(q)) == want; }, 10s);
        INFO(q << ": " << last_reply);
        CHECK(v == want);
    };
    std::optional<double> got;
    const bool equal = eventually(
        [&] {
            got = query("sum%28daq_packets_received_total%29");
            return got && *got == static_cast<double>(sent);
        },
        30s);
    INFO("Prometheus says " << (got ? std::to_string(*got) : std::string("nothing")) << ", daq-sim sent " << sent);
    INFO(prom.err());
    CHECK(equal);
    query_until("up%7Bjob%3D%22daqd%22%7D", 1.0);
    query_until("sum%28daq_frames_total%7Bstate%3D%22complete%22%7D%29", 1200.0);
    query_until("count%28daq_host_check%29", 6.0);
    query_until("sum%28daq_packets_lost_total%29", 0.0);

    // The exposition passes Prometheus's own linter.
    if (fs::exists(PROMTOOL_BIN)) {
        std::ofstream(dir / "scrape.txt") << web_test::http(d.http, "GET", "/metrics").body;
        auto [rc, out] = daqd::test::run({"/bin/sh", "-c", std::string(PROMTOOL_BIN) + " check metrics < " + dir / "scrape.txt"},
                                         dir / "lint");
        INFO(out);
        CHECK(rc == 0);
    }
    prom.signal(SIGTERM);
    CHECK(prom.wait(20s).has_value());
    d.proc->signal(SIGTERM);
    CHECK(d.proc->wait(30s) == 0);
}

TEST_CASE("control API: runs started, stopped and listed over HTTP, errors change nothing", "[web][e2e]") {
    scratch_dir dir("web-control");
    daqd_process d(dir, "daqd");
    const std::uint16_t port = d.http;
    const fs::path token_file = dir.path / "runs/.daqd-token";
    REQUIRE(fs::exists(token_file));
    CHECK((fs::status(token_file).permissions() & (fs::perms::group_all | fs::perms::others_all)) == fs::perms::none);
    std::string token;
    std::ifstream(token_file) >> token;
    REQUIRE(token.size() == 32);

    CHECK(get_json(port, "/api/v1/status")["run"].is_null());
    CHECK(web_test::http(port, "POST", "/api/v1/runs", R"({"name":"api01"})").status == 401);
    CHECK(web_test::http(port, "POST", "/api/v1/runs", R"({"name":"api01"})", "wrong-token-0123456789").status == 401);
    auto started = web_test::http(port, "POST", "/api/v1/runs", R"({"name":"api01"})", token);
    INFO(started.body);
    REQUIRE(started.status == 201);
    CHECK(get_json(port, "/api/v1/status")["run"]["name"] == "api01");

    const auto s1 = sim(dir, d.target(), {"--units", "2", "--channels", "1024", "--frames", "300", "--rate", "20"}, "sim1");
    const std::uint64_t frames1 = s1["frames_sent"];
    const std::uint64_t packets1 = s1["packets_sent"];
    CHECK(eventually([&] { return get_json(port, "/api/v1/status")["totals"]["packets"] == packets1; }, 20s));

    // Every error while the run records: its 4xx, nothing changes.
    struct bad {
        std::string method, target, body, token;
        int status;
    };
    for (const auto& b : std::vector<bad>{
             {"POST", "/api/v1/runs", R"({"name":"api02"})", token, 409},       // a run is active
             {"POST", "/api/v1/runs", R"({"name":)", token, 400},                // malformed JSON
             {"POST", "/api/v1/runs", R"({"name":"../evil"})", token, 400},      // path traversal
             {"POST", "/api/v1/runs", R"({"name":"a/b"})", token, 400},          // separator
             {"POST", "/api/v1/runs", R"({"name":"bad name"})", token, 400},     // not a file name
             {"POST", "/api/v1/runs", std::string(70 * 1024, ' '), token, 413},  // oversized
             {"POST", "/api/v1/runs/stop", "", "", 401},                          // no token
             {"GET", "/api/v1/nothing", "", "", 404},
             {"DELETE", "/api/v1/runs", "", token, 405},
         }) {
        INFO(b.method << " " << b.target << " " << b.body.substr(0, 40));
        const auto r = web_test::http(port, b.method, b.target, b.body, b.token);
        CHECK(r.status == b.status);
        CHECK(json::parse(r.body, nullptr, false).contains("error"));
    }
    auto garbage = web_test::parse_reply(web_test::exchange_raw(port, "\x01\x02 nonsense\r\n\r\n"));
    CHECK(garbage.status == 400);

    // Acquisition went on: more frames are counted and recorded.
    const auto s2 = sim(dir, d.target(),
                        {"--units", "2", "--channels", "1024", "--frames", "200", "--first-frame", "300", "--rate", "20"},
                        "sim2");
    const std::uint64_t frames = frames1 + s2["frames_sent"].get<std::uint64_t>();
    const std::uint64_t packets = packets1 + s2["packets_sent"].get<std::uint64_t>();
    CHECK(eventually([&] { return get_json(port, "/api/v1/status")["totals"]["packets"] == packets; }, 20s));
    CHECK(eventually([&] { return get_json(port, "/api/v1/status")["run"]["frames_written"] == frames; }, 20s));
    const auto live = get_json(port, "/api/v1/units/0/live");
    CHECK(live["channels"] == 1024);
    CHECK(live["samples"].size() == 1024);

    auto stopped = web_test::http(port, "POST", "/api/v1/runs/stop", "", token);
    INFO(stopped.body);
    REQUIRE(stopped.status == 200);
    CHECK(json::parse(stopped.body)["frames_written"] == frames);
    CHECK(web_test::http(port, "POST", "/api/v1/runs/stop", "", token).status == 409);
    CHECK(get_json(port, "/api/v1/status")["run"].is_null());

    const auto runs = get_json(port, "/api/v1/runs")["runs"];
    REQUIRE(runs.size() == 1);
    CHECK(runs[0]["name"] == "api01");
    CHECK(runs[0]["frames"] == frames);
    CHECK(runs[0]["active"] == false);
    CHECK(runs[0]["started_at"].is_string());
    CHECK(runs[0]["stopped_at"].is_string());
    CHECK(runs[0]["files"][0]["file"] == "api01.h5");
    // The same name again is taken.
    CHECK(web_test::http(port, "POST", "/api/v1/runs", R"({"name":"api01"})", token).status == 409);

    d.proc->signal(SIGTERM);
    CHECK(d.proc->wait(30s) == 0);
    CHECK_FALSE(fs::exists(token_file));  // a generated token goes with daqd
    std::ifstream in(dir / "daqd.json");
    const auto summary = json::parse(in);
    CHECK(summary["packets_received"] == packets);
    CHECK(summary["frames_written"] == frames);
}

TEST_CASE("daqd --check-host and the HTTP options on the command line", "[web][e2e]") {
    scratch_dir dir("web-cli");
    SECTION("--check-host: every check, exit 1 with the fix for a missing output directory") {
        auto [rc, out] = daqd::test::run({DAQD_BIN, "--check-host", "--output", dir / "not/there"}, dir / "check");
        INFO(out);
        CHECK(rc == 1);
        for (const char* check : {"rmem_max", "netdev_max_backlog", "cores", "output_dir", "free_space", "cpu_governor"})
            CHECK(out.find(check) != std::string::npos);
        CHECK(out.find("fix: mkdir -p " + dir / "not/there") != std::string::npos);
    }
    SECTION("--check-host exit status follows the failures") {
        auto [rc, out] = daqd::test::run({DAQD_BIN, "--check-host", "--output", dir.path.string()}, dir / "check");
        INFO(out);
        CHECK(rc == (out.find("FAIL") != std::string::npos ? 1 : 0));
    }
    SECTION("a non-loopback HTTP address without a token is refused") {
        auto [rc, out] = daqd::test::run({DAQD_BIN, "--http", "0.0.0.0:" + std::to_string(daqd::test::free_port(SOCK_STREAM)),
                                          "--output", dir / "runs"},
                                         dir / "open", 20s);
        INFO(out);
        CHECK(rc == 2);
        CHECK(out.find("not a loopback address") != std::string::npos);
    }
    SECTION("--http off: no server, acquisition as before") {
        const auto udp = daqd::test::free_port(SOCK_DGRAM);
        child d({DAQD_BIN, "--listen", "127.0.0.1:" + std::to_string(udp), "--http", "off", "--output", dir / "runs"},
                dir / "off.out", dir / "off.err");
        REQUIRE(d.wait_for_log("receiver: backend", 20s));
        std::this_thread::sleep_for(300ms);
        CHECK(d.err().find("http: status page") == std::string::npos);
        CHECK_FALSE(fs::exists(dir.path / "runs/.daqd-token"));
        d.signal(SIGTERM);
        CHECK(d.wait(30s) == 0);
    }
    SECTION("a port in use: daqd logs it and keeps acquiring") {
        const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
        REQUIRE(::listen(fd, 1) == 0);
        socklen_t len = sizeof a;
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
        const auto udp = daqd::test::free_port(SOCK_DGRAM);
        child d({DAQD_BIN, "--listen", "127.0.0.1:" + std::to_string(udp), "--http",
                 "127.0.0.1:" + std::to_string(ntohs(a.sin_port)), "--output", dir / "runs", "--summary-json",
                 dir / "busy.json"},
                dir / "busy.out", dir / "busy.err");
        REQUIRE(d.wait_for_log("runs without its status page", 20s));
        const auto s = sim(dir, "127.0.0.1:" + std::to_string(udp), {"--frames", "50", "--rate", "10"}, "busy-sim");
        std::this_thread::sleep_for(300ms);
        d.signal(SIGTERM);
        CHECK(d.wait(30s) == 0);
        ::close(fd);
        std::ifstream in(dir / "busy.json");
        CHECK(json::parse(in)["packets_received"] == s["packets_sent"]);
    }
}
