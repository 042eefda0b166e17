// End to end with real processes: daq-sim → daqd, watched and driven over
// HTTP — a real Prometheus server scraping /metrics, the control API from a
// plain-socket client, the command-line checks.
#include "process.hpp"
#include "http_client.hpp"

#include "daqd/storage/calibration_file.hpp"

#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <sys/resource.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

using daqd::test::eventually;
using daqd::test::child;
using nlohmann::json;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;
using daqd::test::scratch_dir;
using namespace std::chrono_literals;

namespace {

// daqd on a free UDP port and a free HTTP port, output in dir/runs.
struct daqd_process {
    std::uint16_t udp = daqd::test::free_port(SOCK_DGRAM);
    std::uint16_t http = daqd::test::free_port(SOCK_STREAM);
    std::unique_ptr<child> proc;
    daqd_process(const scratch_dir& dir, const std::string& name, const std::vector<std::string>& extra = {},
                 const std::string& http_host = "127.0.0.1") {
        std::vector<std::string> argv{DAQD_BIN, "--listen", "127.0.0.1:" + std::to_string(udp), "--http",
                                      http_host + ":" + std::to_string(http), "--output", dir / "runs", "--summary-json",
                                      dir / (name + ".json")};
        argv.insert(argv.end(), extra.begin(), extra.end());
        proc = std::make_unique<child>(argv, dir / (name + ".daqd.out"), dir / (name + ".daqd.err"));
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

// A real Prometheus on a free loopback port with `config` (a file in dir), once it answers /-/ready.
struct prometheus_process {
    std::uint16_t port = daqd::test::free_port(SOCK_STREAM);
    std::unique_ptr<child> proc;
    prometheus_process(const scratch_dir& dir, const std::string& config) {
        proc = std::make_unique<child>(
            std::vector<std::string>{PROMETHEUS_BIN, "--config.file=" + config, "--storage.tsdb.path=" + dir / "tsdb",
                                     "--web.listen-address=127.0.0.1:" + std::to_string(port), "--log.level=warn"},
            dir / "prom.out", dir / "prom.err");
        REQUIRE(eventually(
            [&] {
                try {
                    return web_test::http(port, "GET", "/-/ready").status == 200;
                } catch (const std::exception&) {
                    return false;
                }
            },
            30s));
    }
};

// A PromQL query as a URL query value.
std::string url_encode(const std::string& q) {
    std::string out;
    for (unsigned char c : q) {
        if (std::isalnum(c) || c == '_' || c == '.' || c == '-' || c == '~') out += static_cast<char>(c);
        else out += fmt::format("%{:02X}", c);
    }
    return out;
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
    // A processing stage, the live stream and a run: every family a panel of the board shows is exported.
    const std::uint16_t push_port = daqd::test::free_port(SOCK_STREAM), pub_port = daqd::test::free_port(SOCK_STREAM);
    std::ofstream(dir / "live.toml") << "[processing]\nstages = [\"live\"]\n[stream]\nlisten = \"tcp://127.0.0.1:"
                                     << push_port << "\"\npublish = [\"tcp://127.0.0.1:" << pub_port << "\"]\n";
    daqd_process d(dir, "daqd", {"--config", dir / "live.toml", "--run", "prom01"});
    {
        std::ofstream cfg(dir / "prometheus.yml");
        cfg << "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            << "rule_files:\n  - " << DAQD_DASHBOARDS << "/daqd-alerts.yml\n"
            << "scrape_configs:\n  - job_name: daqd\n    static_configs:\n      - targets: ['127.0.0.1:" << d.http
            << "']\n";
    }
    prometheus_process prometheus(dir, dir / "prometheus.yml");
    child& prom = *prometheus.proc;
    const std::uint16_t prom_port = prometheus.port;

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
    query_until("count%28daq_host_check%29", 8.0);  // numa too
    query_until("sum%28daq_packets_lost_total%29", 0.0);

    // Every query of every panel of the Grafana board, as Grafana sends it
    // (its variables replaced): Prometheus accepts it and answers with data,
    // and every daq_ family it names is one daqd exports.
    {
        std::ifstream board_in(DAQD_DASHBOARDS "/grafana-daqd.json");
        const json board = json::parse(board_in);
        const std::string scraped = web_test::http(d.http, "GET", "/metrics").body;
        auto replace_all = [](std::string s, const std::string& from, const std::string& to) {
            for (std::size_t at = 0; (at = s.find(from, at)) != std::string::npos; at += to.size()) s.replace(at, from.size(), to);
            return s;
        };
        std::size_t queries = 0;
        for (const auto& panel : board["panels"]) {
            if (!panel.contains("targets")) continue;
            for (const auto& target : panel["targets"]) {
                std::string q = target["expr"];
                q = replace_all(q, "$__rate_interval", "1m");
                q = replace_all(q, "$__range", "5m");
                q = replace_all(q, "$__interval", "15s");
                q = replace_all(q, "$instance", ".*");
                INFO("panel '" << panel["title"].get<std::string>() << "': " << q);
                ++queries;
                // The families it names, each exported by daqd.
                for (std::size_t at = 0; (at = q.find("daq_", at)) != std::string::npos;) {
                    std::size_t end = at;
                    while (end < q.size() && (std::islower(static_cast<unsigned char>(q[end])) || q[end] == '_')) ++end;
                    std::string family = q.substr(at, end - at);
                    for (const char* suffix : {"_bucket", "_sum", "_count"})
                        if (family.ends_with(suffix) &&
                            scraped.find("# TYPE " + family.substr(0, family.size() - std::strlen(suffix)) + " histogram") !=
                                std::string::npos)
                            family.resize(family.size() - std::strlen(suffix));
                    CHECK(scraped.find("# TYPE " + family + " ") != std::string::npos);
                    at = end;
                }
                std::string reply;
                const bool answered = eventually(
                    [&] {
                        const auto r = web_test::http(prom_port, "GET", "/api/v1/query?query=" + url_encode(q));
                        reply = std::to_string(r.status) + " " + r.body;
                        if (r.status != 200) return false;
                        const json j = json::parse(r.body, nullptr, false);
                        if (j.is_discarded() || j.value("status", "") != "success") return false;
                        // A filter ("> 0") may rightly leave nothing; everything else shows data.
                        return q.find("> 0") != std::string::npos || !j["data"]["result"].empty();
                    },
                    10s);
                INFO(reply);
                CHECK(answered);
            }
        }
        CHECK(queries >= 45);
    }

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

TEST_CASE("a real Prometheus finds three daqd through file-based discovery: one series per host, the Hosts row "
          "splits and sums, a host that stops alerts alone",
          "[web][e2e]") {
    if (!fs::exists(PROMETHEUS_BIN)) {
        WARN("SKIPPED: " PROMETHEUS_BIN " is not installed (Debian package 'prometheus')");
        return;
    }
    scratch_dir dir("web-prometheus-hosts");
    std::vector<std::unique_ptr<scratch_dir>> host_dirs;
    std::vector<std::unique_ptr<daqd_process>> hosts;
    for (int i = 0; i < 3; ++i) {
        host_dirs.push_back(std::make_unique<scratch_dir>("web-prometheus-host" + std::to_string(i)));
        hosts.push_back(std::make_unique<daqd_process>(*host_dirs.back(), "daqd", std::vector<std::string>{"--run", "multi"}));
    }
    // The shipped configuration, its targets file written for these hosts.
    std::string config;
    {
        std::ifstream in(DAQD_DASHBOARDS "/prometheus-hosts.yml");
        config.assign(std::istreambuf_iterator<char>(in), {});
        // Paths in it are relative to its directory: the rules stay in the checkout.
        const std::string rules = "- daqd-alerts.yml";
        REQUIRE(config.find(rules) != std::string::npos);
        config.replace(config.find(rules), rules.size(), "- " DAQD_DASHBOARDS "/daqd-alerts.yml");
        for (std::size_t at; (at = config.find("scrape_interval: 5s")) != std::string::npos;) config.replace(at, 19, "scrape_interval: 1s");
        for (std::size_t at; (at = config.find("evaluation_interval: 5s")) != std::string::npos;)
            config.replace(at, 23, "evaluation_interval: 1s");
        for (std::size_t at; (at = config.find("refresh_interval: 30s")) != std::string::npos;) config.replace(at, 21, "refresh_interval: 1s");
        std::ofstream(dir / "prometheus-hosts.yml") << config;
        json targets = json::array({{{"targets", json::array()}, {"labels", {{"detector", "test"}}}}});
        for (const auto& h : hosts) targets[0]["targets"].push_back("127.0.0.1:" + std::to_string(h->http));
        std::ofstream(dir / "daqd-hosts.json") << targets.dump(2);
    }
    REQUIRE(config.find("file_sd_configs") != std::string::npos);
    prometheus_process prometheus(dir, dir / "prometheus-hosts.yml");
    child& prom = *prometheus.proc;
    const std::uint16_t prom_port = prometheus.port;
    // Each host gets its own units and amount: a different count per host.
    std::map<std::string, double> sent;  // instance -> packets
    for (std::size_t i = 0; i < hosts.size(); ++i) {
        const auto s = sim(*host_dirs[i], hosts[i]->target(),
                           {"--units", std::to_string(i + 1), "--first-unit", std::to_string(10 * i), "--channels", "1024",
                            "--frames", std::to_string(100 * (i + 1)), "--rate", "40"},
                           "sim");
        sent["127.0.0.1:" + std::to_string(hosts[i]->http)] = s["packets_sent"].get<double>();
    }
    std::string last;
    // instance -> value of a query's result vector.
    auto by_instance = [&](const std::string& q) {
        std::map<std::string, double> out;
        const auto r = web_test::http(prom_port, "GET", "/api/v1/query?query=" + url_encode(q));
        last = q + " -> " + std::to_string(r.status) + " " + r.body;
        if (r.status != 200) return out;
        const json j = json::parse(r.body, nullptr, false);
        if (j.is_discarded() || j.value("status", "") != "success") return out;
        for (const auto& x : j["data"]["result"])
            out[x["metric"].value("instance", "")] = std::stod(x["value"][1].get<std::string>());
        return out;
    };
    auto until = [&](const std::string& q, const std::map<std::string, double>& want) {
        std::map<std::string, double> got;
        const bool ok = eventually([&] { return (got = by_instance(q)) == want; }, 20s);
        INFO(last);
        CHECK(ok);
    };
    std::map<std::string, double> ones, total;
    for (const auto& [inst, n] : sent) ones[inst] = 1.0;
    until("up{job=\"daqd\"}", ones);
    // One series per host, each with its own host's count.
    until("sum by (instance) (daq_packets_received_total)", sent);
    double all = 0;
    for (const auto& [inst, n] : sent) all += n;
    until("sum(daq_packets_received_total)", {{"", all}});
    // The board's Hosts row: a line per host.
    {
        std::ifstream board_in(DAQD_DASHBOARDS "/grafana-daqd.json");
        const json board = json::parse(board_in);
        int host_panels = 0;
        for (const auto& panel : board["panels"]) {
            if (!panel.contains("targets") || panel["gridPos"]["y"].get<int>() < 69) continue;
            ++host_panels;
            for (const auto& target : panel["targets"]) {
                std::string q = target["expr"];
                if (q.find("by (instance)") == std::string::npos) continue;
                for (std::size_t at; (at = q.find("$__rate_interval")) != std::string::npos;) q.replace(at, 16, "1m");
                for (std::size_t at; (at = q.find("$instance")) != std::string::npos;) q.replace(at, 9, ".*");
                std::map<std::string, double> got;
                const bool split = eventually([&] { return (got = by_instance(q)).size() == hosts.size(); }, 20s);
                INFO("panel '" << panel["title"].get<std::string>() << "': " << last);
                CHECK(split);
            }
        }
        CHECK(host_panels == 4);
    }
    // One host stops: DaqdDown is pending for it, and only for it.
    const std::string gone = "127.0.0.1:" + std::to_string(hosts[1]->http);
    hosts[1]->proc->signal(SIGTERM);
    REQUIRE(hosts[1]->proc->wait(30s) == 0);
    std::map<std::string, double> up_after = ones;
    up_after[gone] = 0.0;
    until("up{job=\"daqd\"}", up_after);
    until("ALERTS{alertname=\"DaqdDown\"}", {{gone, 1.0}});
    prom.signal(SIGTERM);
    CHECK(prom.wait(20s).has_value());
    for (std::size_t i = 0; i < hosts.size(); ++i) {
        if (i == 1) continue;
        hosts[i]->proc->signal(SIGTERM);
        CHECK(hosts[i]->proc->wait(30s) == 0);
    }
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
    // One run's metadata: what its files say of it.
    {
        const auto one = get_json(port, "/api/v1/runs/api01");
        CHECK(one["name"] == "api01");
        CHECK(one["frames"] == frames);
        CHECK(one["data_source"] == "test_pattern");  // daq-sim sends the test pattern, flagged
        CHECK(one["compression"] == "none");
        CHECK(one["kind"] == "data");
        CHECK(one["server_version"].is_string());
        CHECK(one["files"][0]["data_source"] == "test_pattern");
        CHECK(one["files"][0]["stopped_at"].is_string());
        CHECK(web_test::http(port, "GET", "/api/v1/runs/nope").status == 404);
        CHECK(web_test::http(port, "GET", "/api/v1/runs/..").status == 404);
    }
    // The same name again is taken.
    CHECK(web_test::http(port, "POST", "/api/v1/runs", R"({"name":"api01"})", token).status == 409);

    // A second run: its own counts, and the lifetime ones, each labelled.
    REQUIRE(web_test::http(port, "POST", "/api/v1/runs", R"({"name":"api02"})", token).status == 201);
    {
        const auto st = get_json(port, "/api/v1/status");
        CHECK(st["run"]["counts"]["scope"] == "run");
        CHECK(st["run"]["counts"]["frames_written"] == 0);
        CHECK(st["run"]["counts"]["packets_received"] == 0);
        CHECK(st["run"]["started_by"] == "api");
        CHECK(st["run"]["kind"] == "data");
        CHECK(st["lifetime"]["scope"] == "lifetime");
        CHECK(st["lifetime"]["packets_received"] == packets);
        CHECK(st["lifetime"]["runs"] == 2);
        CHECK(st["totals"]["scope"] == "lifetime");
    }
    const auto s3 = sim(dir, d.target(),
                        {"--units", "2", "--channels", "1024", "--frames", "100", "--first-frame", "500", "--rate", "20"},
                        "sim3");
    const std::uint64_t frames3 = s3["frames_sent"], packets3 = s3["packets_sent"];
    CHECK(eventually([&] { return get_json(port, "/api/v1/status")["run"]["counts"]["frames_written"] == frames3; }, 20s));
    {
        const auto st = get_json(port, "/api/v1/status");
        CHECK(st["run"]["counts"]["packets_received"] == packets3);
        CHECK(st["run"]["counts"]["frames_complete"] == frames3);
        CHECK(st["lifetime"]["packets_received"] == packets + packets3);
        CHECK(st["lifetime"]["frames_written"] == frames + frames3);
    }
    auto stopped2 = web_test::http(port, "POST", "/api/v1/runs/stop", "", token);
    INFO(stopped2.body);
    REQUIRE(stopped2.status == 200);
    const auto j2 = json::parse(stopped2.body);
    CHECK(j2["frames_written"] == frames3);
    CHECK(j2["counts"]["frames_written"] == frames3);
    CHECK(j2["counts"]["packets_received"] == packets3);
    CHECK(j2["counts"]["scope"] == "run");
    CHECK(j2["seconds"].get<double>() > 0);

    d.proc->signal(SIGTERM);
    CHECK(d.proc->wait(30s) == 0);
    CHECK_FALSE(fs::exists(token_file));  // a generated token goes with daqd
    std::ifstream in(dir / "daqd.json");
    const auto summary = json::parse(in);
    // Lifetime at the top, labelled; the last run's own under "run".
    CHECK(summary["scope"] == "lifetime");
    CHECK(summary["runs"] == 2);
    CHECK(summary["packets_received"] == packets + packets3);
    CHECK(summary["frames_written"] == frames + frames3);
    CHECK(summary["run"]["name"] == "api02");
    CHECK(summary["run"]["scope"] == "run");
    CHECK(summary["run"]["frames_written"] == frames3);
    CHECK(summary["run"]["packets_received"] == packets3);
    // The text summary: one line per scope, each saying which it is.
    const std::string out = d.proc->out();
    INFO(out);
    CHECK(out.find("daqd: run api02 (") != std::string::npos);
    CHECK(out.find("this run only): packets received=" + std::to_string(packets3) + " ") != std::string::npos);
    CHECK(out.find("written=" + std::to_string(frames3) + " |") != std::string::npos);
    CHECK(out.find("since daqd started, 2 runs): packets received=" + std::to_string(packets + packets3) + " ") !=
          std::string::npos);
}

TEST_CASE("run control over HTTP: a pedestal run while serving, then runs named by the pattern", "[web][e2e]") {
    scratch_dir dir("web-pedestal");
    // No processing stages configured: the pedestal run needs none, and no restart.
    daqd_process d(dir, "daqd");
    std::string token;
    std::ifstream(dir / "runs/.daqd-token") >> token;
    REQUIRE(token.size() == 32);
    const auto port = d.http;

    auto ped = web_test::http(port, "POST", "/api/v1/runs", R"({"kind":"pedestal","frames":200,"name":"ped"})", token);
    INFO(ped.body);
    REQUIRE(ped.status == 201);
    {
        const auto st = get_json(port, "/api/v1/status");
        CHECK(st["run"]["name"] == "ped");
        CHECK(st["run"]["kind"] == "pedestal");
        CHECK(st["run"]["pedestal"]["frames_per_unit"] == 200);
        CHECK(st["run"]["files"] == json::array({"ped.calib.h5"}));
    }
    // A data run cannot start meanwhile.
    CHECK(web_test::http(port, "POST", "/api/v1/runs", R"({"name":"beam"})", token).status == 409);
    // Detector frames, no beam: 2 units, more than 200 complete frames each.
    sim(dir, d.target(), {"--units", "2", "--channels", "256", "--frames", "340", "--rate", "5", "--detector"}, "ped-sim");
    // It ends by itself once every unit has its frames: the file is there and the run is no longer current.
    CHECK(eventually([&] { return get_json(port, "/api/v1/status")["run"].is_null(); }, 20s));
    REQUIRE(fs::exists(dir / "runs/ped.calib.h5"));
    const auto set = daqd::storage::read_calibration_file(dir / "runs/ped.calib.h5");
    REQUIRE(set.units.size() == 2);
    for (const auto& [id, u] : set.units) {
        CHECK(u.frames == 200);
        CHECK(u.channels == 256);
    }
    CHECK(d.proc->err().find("pedestal run ped -> " + dir / "runs/ped.calib.h5") != std::string::npos);
    // The same name again: the file exists.
    CHECK(web_test::http(port, "POST", "/api/v1/runs", R"({"kind":"pedestal","name":"ped"})", token).status == 409);

    // Runs without a name: storage.run_name_pattern's next number.
    auto r1 = web_test::http(port, "POST", "/api/v1/runs", "", token);
    INFO(r1.body);
    REQUIRE(r1.status == 201);
    CHECK(json::parse(r1.body)["run"] == "run_00001");
    CHECK(json::parse(r1.body)["name_generated"] == true);
    CHECK(get_json(port, "/api/v1/status")["run"]["name_generated"] == true);
    REQUIRE(web_test::http(port, "POST", "/api/v1/runs/stop", "", token).status == 200);
    auto r2 = web_test::http(port, "POST", "/api/v1/runs", "{}", token);
    REQUIRE(r2.status == 201);
    CHECK(json::parse(r2.body)["run"] == "run_00002");
    REQUIRE(web_test::http(port, "POST", "/api/v1/runs/stop", "", token).status == 200);
    // A pedestal run stopped before it has its frames: what it has (here nothing) is said.
    auto p2 = web_test::http(port, "POST", "/api/v1/runs", R"({"kind":"pedestal"})", token);
    REQUIRE(p2.status == 201);
    CHECK(json::parse(p2.body)["run"] == "run_00003");
    auto stop = web_test::http(port, "POST", "/api/v1/runs/stop", "", token);
    INFO(stop.body);
    REQUIRE(stop.status == 200);
    CHECK(json::parse(stop.body)["kind"] == "pedestal");
    CHECK(json::parse(stop.body)["failed"] == true);
    CHECK_THAT(json::parse(stop.body)["error"].get<std::string>(), Catch::Contains("no unit sent 2 complete frames"));

    // daqd restarted on the same directory goes on numbering from what is there.
    d.proc->signal(SIGTERM);
    REQUIRE(d.proc->wait(30s) == 0);
    CHECK(d.proc->out().find("daqd: run run_00003 (pedestal)") != std::string::npos);
    daqd_process d2(dir, "daqd2");
    std::ifstream(dir / "runs/.daqd-token") >> token;
    auto r4 = web_test::http(d2.http, "POST", "/api/v1/runs", "", token);
    REQUIRE(r4.status == 201);
    CHECK(json::parse(r4.body)["run"] == "run_00003");  // run_00003 left no file: its number is free
    d2.proc->signal(SIGTERM);
    CHECK(d2.proc->wait(30s) == 0);
}

TEST_CASE("daqd --check-host and the HTTP options on the command line", "[web][e2e]") {
    scratch_dir dir("web-cli");
    SECTION("--check-host: every check; a missing output directory daqd can create passes, saying so") {
        auto [rc, out] = daqd::test::run({DAQD_BIN, "--check-host", "--output", dir / "not/there"}, dir / "check");
        INFO(out);
        for (const char* check :
             {"rmem_max", "netdev_max_backlog", "cores", "output_dir", "free_space", "cpu_governor", "numa"})
            CHECK(out.find(check) != std::string::npos);
        CHECK(out.find("output directory " + dir / "not/there" + " does not exist yet: daqd will create it at start (" +
                       dir.path.string() + " is writable)") != std::string::npos);
        CHECK(out.find("fix: mkdir -p") == std::string::npos);
        CHECK_FALSE(fs::exists(dir / "not"));  // the check creates nothing
    }
    SECTION("--check-host: an output directory daqd cannot create fails with the fix") {
        auto [rc, out] = daqd::test::run({DAQD_BIN, "--check-host", "--output", "/proc/self/runs"}, dir / "check");
        INFO(out);
        CHECK(rc == 1);
        CHECK(out.find("daqd cannot create it in /proc/self") != std::string::npos);
        CHECK(out.find("fix: mkdir -p /proc/self/runs && chown") != std::string::npos);
    }
    SECTION("a missing http.token_file: --check-config fails naming the key and line, daqd refuses to start") {
        std::ofstream(dir / "tok.toml") << "[http]\nlisten = \"127.0.0.1:" << daqd::test::free_port(SOCK_STREAM)
                                        << "\"\ntoken_file = \"" << dir / "no-such-token" << "\"\n";
        auto [rc, out] = daqd::test::run({DAQD_BIN, "--check-config", dir / "tok.toml"}, dir / "tok-check");
        INFO(out);
        CHECK(rc == 1);
        CHECK(out.find(dir / "tok.toml" + ":3: cannot read http.token_file " + dir / "no-such-token") !=
              std::string::npos);
        CHECK(out.find("configuration is valid") == std::string::npos);
        auto [rc2, out2] = daqd::test::run({DAQD_BIN, "--config", dir / "tok.toml", "--output", dir / "runs", "--listen",
                                            "127.0.0.1:" + std::to_string(daqd::test::free_port(SOCK_DGRAM)),
                                            "--duration", "5"},
                                           dir / "tok-start", 20s);
        INFO(out2);
        CHECK(rc2 == 2);
        CHECK(out2.find("cannot read http.token_file") != std::string::npos);
        CHECK(out2.find("daqd: not starting") != std::string::npos);
        CHECK(out2.find("packets received=") == std::string::npos);  // it never ran
        // With the file there, both pass.
        std::ofstream(dir / "no-such-token") << "0123456789abcdef0123\n";
        fs::permissions(dir / "no-such-token", fs::perms::owner_read | fs::perms::owner_write);
        auto [rc3, out3] = daqd::test::run({DAQD_BIN, "--check-config", dir / "tok.toml"}, dir / "tok-check2");
        INFO(out3);
        CHECK(rc3 == 0);
    }
    SECTION("--check-host names the NUMA node of each pinned CPU set") {
        std::ofstream(dir / "pinned.toml") << "[threads]\nreceiver_cpus = \"0\"\nwriter_cpus = \"0\"\n";
        auto [rc, out] = daqd::test::run(
            {DAQD_BIN, "--config", dir / "pinned.toml", "--check-host", "--output", dir.path.string()}, dir / "check");
        INFO(out);
        if (fs::exists("/sys/devices/system/node/node0")) {
            CHECK(out.find("numa: pinned threads by NUMA node: threads.receiver_cpus = \"0\": node 0 (CPUs 0); "
                           "threads.writer_cpus = \"0\": node 0 (CPUs 0)") != std::string::npos);
        } else {
            CHECK(out.find("numa: no NUMA information") != std::string::npos);
        }
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

namespace {

// Raises this process's soft descriptor limit to its hard limit (daqd, spawned
// from here, inherits it) and returns the soft limit then in force.
std::size_t raise_fd_limit() {
    rlimit lim{};
    ::getrlimit(RLIMIT_NOFILE, &lim);
    if (lim.rlim_cur < lim.rlim_max) {
        rlimit want = lim;
        want.rlim_cur = lim.rlim_max == RLIM_INFINITY ? 1u << 20 : lim.rlim_max;
        if (::setrlimit(RLIMIT_NOFILE, &want) == 0) lim = want;
    }
    return lim.rlim_cur == RLIM_INFINITY ? std::size_t{1} << 20 : static_cast<std::size_t>(lim.rlim_cur);
}

std::string read_token(const scratch_dir& dir) {
    std::string token;
    std::ifstream(dir.path / "runs/.daqd-token") >> token;
    return token;
}

double ms_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// Waits until every connection is answered or closed (or the deadline
// passes): how many got a complete answer starting `HTTP/1.1 200`, how many
// were closed without one, how many are still open.
struct resolved {
    std::size_t answered = 0, closed = 0, pending = 0;
};
resolved wait_all(const std::vector<int>& fds, std::chrono::milliseconds deadline) {
    std::vector<std::string> got(fds.size());
    std::vector<bool> done(fds.size(), false);
    resolved r;
    const auto end = std::chrono::steady_clock::now() + deadline;
    std::size_t left = fds.size();
    char buf[8192];
    while (left > 0 && std::chrono::steady_clock::now() < end) {
        std::vector<pollfd> p;
        std::vector<std::size_t> index;
        for (std::size_t i = 0; i < fds.size(); ++i)
            if (!done[i]) {
                p.push_back({fds[i], POLLIN, 0});
                index.push_back(i);
            }
        if (::poll(p.data(), p.size(), 100) <= 0) continue;
        for (std::size_t k = 0; k < p.size(); ++k) {
            if (p[k].revents == 0) continue;
            const std::size_t i = index[k];
            const ssize_t n = ::recv(fds[i], buf, sizeof buf, MSG_DONTWAIT);
            if (n > 0) {
                got[i].append(buf, static_cast<std::size_t>(n));
                if (web_test::complete_responses(got[i]) == 0) continue;
            } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                continue;
            }
            done[i] = true;
            --left;
            if (got[i].rfind("HTTP/1.1 200", 0) == 0 && web_test::complete_responses(got[i]) > 0)
                ++r.answered;
            else
                ++r.closed;
        }
    }
    r.pending = left;
    return r;
}

}  // namespace

TEST_CASE("slow clients and a connection flood: /metrics and run control answer while they last", "[web][e2e]") {
    const std::size_t fds = raise_fd_limit();
    const std::size_t slow_n = 300;
    const std::size_t flood_n = std::min<std::size_t>(2000, fds > slow_n + 800 ? fds - slow_n - 800 : 0);
    if (flood_n < 1000) {
        WARN("SKIPPED: the descriptor limit (ulimit -n " << fds << ") leaves too few for 300 slow clients and a flood");
        return;
    }
    scratch_dir dir("web-slowloris");
    daqd_process d(dir, "daqd");
    const std::uint16_t port = d.http;
    const std::string token = read_token(dir);
    REQUIRE(web_test::http(port, "POST", "/api/v1/runs", R"({"name":"flood01"})", token).status == 201);
    auto metrics = [&] {
        const auto m = web_test::http(port, "GET", "/metrics");
        REQUIRE(m.status == 200);
        return m.body;
    };
    auto dropped = [](const std::string& text, const char* reason) {
        return web_test::metric(text, std::string("daq_http_connections_dropped_total{reason=\"") + reason + "\"}");
    };
    const double limit = web_test::metric(metrics(), "daq_http_connections_limit");
    CHECK(limit == 512);

    // 1. Slowloris: 300 connections send a request header a byte at a time,
    // one byte every 200 ms each, never finishing it.
    std::vector<int> slow;
    for (std::size_t i = 0; i < slow_n; ++i) {
        slow.push_back(web_test::connect_to(port));
        web_test::send_all(slow.back(), "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ");
    }
    std::atomic<bool> stop_drip{false};
    std::thread dripper([&] {
        while (!stop_drip) {
            for (int fd : slow) (void)::send(fd, "a", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
            std::this_thread::sleep_for(200ms);  // the attack's pace
        }
    });
    CHECK(eventually([&] { return web_test::metric(metrics(), "daq_http_connections_open") >= slow_n; }, 5s));
    auto t0 = std::chrono::steady_clock::now();
    auto m = web_test::http(port, "GET", "/metrics");
    const double metrics_ms_slow = ms_since(t0);
    CHECK(m.status == 200);
    CHECK(metrics_ms_slow < 2000);

    // 2. 2000 clients at once, each with a complete request.
    std::vector<int> flood;
    t0 = std::chrono::steady_clock::now();
    for (std::size_t i = 0; i < flood_n; ++i) {
        flood.push_back(web_test::connect_to(port));
        web_test::send_all(flood.back(), "GET /api/v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    }
    const auto flood_result = wait_all(flood, 20s);
    const double flood_ms = ms_since(t0);
    for (int fd : flood) ::close(fd);
    CHECK(flood_result.pending == 0);
    CHECK(flood_result.answered + flood_result.closed == flood_n);
    CHECK(flood_result.answered >= flood_n / 2);

    // 3. 2000 connections that send nothing, held open: far beyond the
    // limit; and meanwhile a thread opens new ones as fast as it can (closing
    // its own oldest beyond 500), so the flood goes on while /metrics and
    // run stop are asked.
    std::vector<int> silent;
    t0 = std::chrono::steady_clock::now();
    for (std::size_t i = 0; i < flood_n; ++i) silent.push_back(web_test::connect_to(port));
    const double silent_connect_ms = ms_since(t0);
    std::atomic<bool> stop_flood{false};
    std::atomic<std::size_t> flooded{0};
    std::thread flooder([&] {
        std::vector<int> ring(500, -1);
        for (std::size_t i = 0; !stop_flood; i = (i + 1) % ring.size()) {
            if (ring[i] >= 0) ::close(ring[i]);
            try {
                ring[i] = web_test::connect_to(port);
                ++flooded;
            } catch (const std::exception&) {
                ring[i] = -1;
            }
        }
        for (int fd : ring)
            if (fd >= 0) ::close(fd);
    });
    CHECK(eventually([&] { return flooded.load() > 1000; }, 10s));
    const auto flood_t0 = std::chrono::steady_clock::now();
    const std::size_t flooded_before = flooded;
    double metrics_ms_flood = 0;
    for (int i = 0; i < 5; ++i) {
        t0 = std::chrono::steady_clock::now();
        m = web_test::http(port, "GET", "/metrics");
        metrics_ms_flood = std::max(metrics_ms_flood, ms_since(t0));
        CHECK(m.status == 200);
    }
    CHECK(metrics_ms_flood < 2000);
    t0 = std::chrono::steady_clock::now();
    const auto stopped = web_test::http(port, "POST", "/api/v1/runs/stop", "", token);
    const double stop_ms = ms_since(t0);
    INFO(stopped.body);
    CHECK(stopped.status == 200);
    CHECK(stop_ms < 5000);
    CHECK(json::parse(stopped.body)["run"] == "flood01");
    const std::string during = metrics();
    const double flood_rate = static_cast<double>(flooded - flooded_before) / (ms_since(flood_t0) / 1000.0);
    stop_flood = true;
    flooder.join();
    CHECK(dropped(during, "evicted") > 0);
    CHECK(web_test::metric(during, "daq_http_connections_open") <= limit);

    // 4. The header deadline (5 s) closes what is left of both attacks.
    t0 = std::chrono::steady_clock::now();
    std::string after;
    CHECK(eventually(
        [&] {
            after = metrics();
            return dropped(after, "header_timeout") > 0 && web_test::metric(after, "daq_http_connections_open") <= 2;
        },
        15s));
    const double cleared_ms = ms_since(t0);
    stop_drip = true;
    dripper.join();
    for (int fd : slow) ::close(fd);
    for (int fd : silent) ::close(fd);
    CHECK(web_test::http(port, "GET", "/api/v1/status").status == 200);
    std::fprintf(stderr,
                 "slowloris figures: limit %.0f; /metrics with %zu slow clients %.1f ms; %zu simultaneous clients: "
                 "%zu answered, %zu closed unanswered, all in %.0f ms; %zu silent connections opened in %.0f ms; "
                 "with new connections coming at %.0f/s, /metrics (worst of 5) %.1f ms, POST /api/v1/runs/stop "
                 "%.1f ms; evicted %.0f; after %.0f ms more: "
                 "header_timeout %.0f, evicted %.0f, open %.0f\n",
                 limit, slow_n, metrics_ms_slow, flood_n, flood_result.answered, flood_result.closed, flood_ms, flood_n,
                 silent_connect_ms, flood_rate, metrics_ms_flood, stop_ms, dropped(during, "evicted"), cleared_ms,
                 dropped(after, "header_timeout"), dropped(after, "evicted"),
                 web_test::metric(after, "daq_http_connections_open"));
    d.proc->signal(SIGTERM);
    CHECK(d.proc->wait(30s) == 0);
}

TEST_CASE("the Host header: a rebinding name gets 403, the listen address and configured names are answered, HEAD",
          "[web][e2e]") {
    scratch_dir dir("web-host");
    std::ofstream(dir / "daqd.toml") << "[http]\nallowed_hosts = [\"daq.example\"]\n";
    daqd_process d(dir, "daqd", {"--config", dir / "daqd.toml"});
    const std::uint16_t port = d.http;
    const std::string p = ":" + std::to_string(port);
    const std::string token = read_token(dir);
    auto get = [&](const std::string& host, const std::string& method = "GET", const std::string& target = "/api/v1/status",
                   const std::string& extra = "") {
        return web_test::exchange_raw(
            port, method + " " + target + " HTTP/1.1\r\nHost: " + host + "\r\n" + extra + "Connection: close\r\n\r\n",
            method == "HEAD" ? 99 : 1, 10s);
    };
    const auto evil = web_test::parse_reply(get("evil.example" + p));
    CHECK(evil.status == 403);
    CHECK_THAT(json::parse(evil.body)["error"].get<std::string>(), Contains("http.allowed_hosts"));
    // Run control from a rebinding page: refused before the token is looked at.
    CHECK(web_test::parse_reply(get("evil.example" + p, "POST", "/api/v1/runs", "Authorization: Bearer " + token + "\r\n"
                                                                                 "Content-Length: 0\r\n"))
              .status == 403);
    CHECK(web_test::parse_reply(get("127.0.0.1" + p)).status == 200);
    CHECK(web_test::parse_reply(get("localhost" + p)).status == 200);
    CHECK(web_test::parse_reply(get("daq.example" + p)).status == 200);
    CHECK(web_test::parse_reply(get("DAQ.example")).status == 200);
    const auto m = web_test::http(port, "GET", "/metrics");
    CHECK(web_test::metric(m.body, "daq_http_host_rejected_total") == 2);
    CHECK(web_test::metric(m.body, "daq_http_requests_total{code=\"403\"}") == 2);
    CHECK(get_json(port, "/api/v1/status")["run"].is_null());  // nothing was started

    // HEAD: GET's status and Content-Length, no body.
    const auto page = web_test::http(port, "GET", "/");
    const std::string raw = get("127.0.0.1" + p, "HEAD", "/");
    auto head = web_test::parse_reply(raw);
    CHECK(head.status == 200);
    CHECK(head.headers["content-length"] == std::to_string(page.body.size()));
    CHECK(raw.size() == raw.find("\r\n\r\n") + 4);
    const std::string raw_metrics = get("127.0.0.1" + p, "HEAD", "/metrics");
    auto head_metrics = web_test::parse_reply(raw_metrics);
    CHECK(head_metrics.status == 200);
    CHECK(std::stoul(head_metrics.headers["content-length"]) > 1000);
    CHECK(raw_metrics.size() == raw_metrics.find("\r\n\r\n") + 4);

    d.proc->signal(SIGTERM);
    CHECK(d.proc->wait(30s) == 0);
    const std::string log = d.proc->err();
    CHECK(log.find("answered 403 to a request for Host 'evil.example" + p + "'") != std::string::npos);
    CHECK(log.find("answered 403") == log.rfind("answered 403"));  // logged once
}

TEST_CASE("listening on every address: this machine's name is answered, other names are not", "[web][e2e]") {
    scratch_dir dir("web-host-any");
    std::ofstream(dir / "daqd.toml") << "[http]\ntoken = \"0123456789abcdef0123456789abcdef\"\n";
    daqd_process d(dir, "daqd", {"--config", dir / "daqd.toml"}, "0.0.0.0");
    char name[256] = {};
    ::gethostname(name, sizeof name - 1);
    const std::string p = ":" + std::to_string(d.http);
    auto status = [&](const std::string& host) {
        return web_test::parse_reply(
                   web_test::exchange_raw(d.http, "GET /metrics HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n\r\n"))
            .status;
    };
    CHECK(status(std::string(name) + p) == 200);
    CHECK(status("127.0.0.1" + p) == 200);
    CHECK(status("evil.example" + p) == 403);
    CHECK(status(std::string(name) + ".evil.example" + p) == 403);
    d.proc->signal(SIGTERM);
    CHECK(d.proc->wait(30s) == 0);
}
