// The HTTP API driven directly (no sockets): routes, methods, the token,
// every error, the status and live JSON, the runs on disk.
#include "daqd/storage/run_writer.hpp"
#include "daqd/web/api.hpp"
#include "web_test_util.hpp"

#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <map>

using namespace daqd::web;
using Catch::Matchers::Contains;
using nlohmann::json;
using web_test::rig;
using web_test::temp_dir;

namespace {

constexpr const char* token = "0123456789abcdef0123456789abcdef";

// Run controls that record what the API asked for.
struct fake_runs {
    std::optional<run_info> active;
    std::vector<std::string> started;
    std::vector<std::string> compressions;  // as handed to start ("" = the config's)
    std::vector<run_start> requests;        // every start as handed on
    std::vector<std::string> commits, aborts;
    int stops = 0;
    std::string fail_with;
    bool naming = false;  // offer next_name (storage.run_name_pattern)
    int named = 0;
    std::vector<std::pair<std::string, std::uint64_t>> pedestals;

    run_controls controls() {
        run_controls c;
        c.check_name = [](const std::string& n) -> std::string {
            for (char ch : n)
                if (!(std::isalnum(static_cast<unsigned char>(ch)) || ch == '_' || ch == '-' || ch == '.'))
                    return "run name '" + n + "' may only hold letters, digits, '.', '_' and '-'";
            return n.empty() ? "run name is empty" : "";
        };
        c.start = [this](const daqd::web::run_start& s) {
            const std::string n = s.host.empty() ? s.name : s.name + "_" + s.host;
            const std::string& compression = s.compression;
            requests.push_back(s);
            if (!fail_with.empty()) throw std::runtime_error(fail_with);
            started.push_back(n);
            compressions.push_back(compression);
            active = run_info{n, std::chrono::system_clock::now(), 0, 0};
            active->run = s.name;
            active->host = s.host;
            active->metadata_json = s.meta_json;
            if (s.prepare) active->state = "prepared";
        };
        c.stop = [this]() -> std::optional<daqd::web::run_result> {
            ++stops;
            if (!active) return std::nullopt;
            daqd::web::run_result s;
            s.run_name = active->name;
            s.frames_written = 42;
            s.files = {active->name + ".h5"};
            active.reset();
            return s;
        };
        c.commit = [this](const std::string& n) {
            if (!active || active->state != "prepared" || (active->name != n && active->run != n))
                throw std::runtime_error("no run '" + n + "' is prepared");
            commits.push_back(n);
            active->state = "recording";
        };
        c.abort = [this](const std::string& n) {
            if (!active || (active->name != n && active->run != n))
                throw std::runtime_error("no run '" + n + "' is prepared or recording");
            aborts.push_back(n);
            std::vector<std::string> removed{active->name + ".h5"};
            active.reset();
            return removed;
        };
        c.current = [this] { return active; };
        if (naming) c.next_name = [this] { return fmt::format("run_{:05d}", ++named); };
        c.start_pedestal = [this](const std::string& n, std::uint64_t frames) {
            pedestals.emplace_back(n, frames);
            active = run_info{n, std::chrono::system_clock::now(), 0, 0};
            active->kind = "pedestal";
        };
        return c;
    }
};

request req(std::string method, std::string target, std::string body = "", std::string auth = "") {
    return request{std::move(method), std::move(target), std::move(auth), std::move(body)};
}
std::string bearer(const std::string& t = token) { return "Bearer " + t; }
json body_of(const response& r) { return json::parse(r.body); }

}  // namespace

TEST_CASE("the page, its files and unknown paths", "[web]") {
    temp_dir dir("api");
    rig r(dir.path);
    fake_runs runs;
    api a(r.view(), r.controls(runs.controls()), token, {});
    const auto page = a.handle(req("GET", "/"));
    CHECK(page.status == 200);
    CHECK_THAT(page.content_type, Contains("text/html"));
    CHECK_THAT(page.body, Contains("<canvas id=\"heat-frame\"") && Contains("/app.js"));
    bool csp = false;
    for (const auto& [k, v] : page.headers) csp |= k == "Content-Security-Policy";
    CHECK(csp);
    CHECK_THAT(a.handle(req("GET", "/app.js")).content_type, Contains("javascript"));
    CHECK_THAT(a.handle(req("GET", "/style.css")).content_type, Contains("text/css"));
    CHECK(a.handle(req("GET", "/favicon.ico")).status == 204);
    const auto nf = a.handle(req("GET", "/api/v2/nothing?x=1"));
    CHECK(nf.status == 404);
    CHECK_THAT(body_of(nf)["error"].get<std::string>(), Contains("/api/v2/nothing"));
    CHECK(a.handle(req("GET", "/../etc/passwd")).status == 404);
}

TEST_CASE("wrong methods answer 405 with Allow", "[web]") {
    temp_dir dir("api");
    rig r(dir.path);
    fake_runs runs;
    api a(r.view(), r.controls(runs.controls()), token, {});
    for (auto [method, target, allow] : std::vector<std::tuple<std::string, std::string, std::string>>{
             {"DELETE", "/api/v1/status", "GET, HEAD"},
             {"POST", "/metrics", "GET, HEAD"},
             {"PUT", "/api/v1/runs", "GET, HEAD, POST"},
             {"GET", "/api/v1/runs/stop", "POST"},
             {"HEAD", "/api/v1/runs/stop", "POST"},
             {"POST", "/", "GET, HEAD"}}) {
        INFO(method << " " << target);
        const auto res = a.handle(req(method, target));
        CHECK(res.status == 405);
        CHECK(body_of(res).contains("error"));
        bool found = false;
        for (const auto& [k, v] : res.headers) found |= k == "Allow" && v == allow;
        CHECK(found);
    }
    CHECK(runs.started.empty());
}

TEST_CASE("starting a run: token, JSON, name, conflicts", "[web]") {
    temp_dir dir("api");
    rig r(dir.path);
    fake_runs runs;
    api a(r.view(), r.controls(runs.controls()), token, {});
    CHECK(a.is_blocking(req("POST", "/api/v1/runs")));
    CHECK(a.is_blocking(req("GET", "/api/v1/runs?all")));
    CHECK_FALSE(a.is_blocking(req("GET", "/api/v1/status")));

    SECTION("no token, a wrong one, another scheme: 401") {
        for (const std::string& auth : std::vector<std::string>{"", "Bearer wrong", "Bearer " + std::string(token) + "x",
                                                                 "Basic " + std::string(token)}) {
            INFO(auth);
            const auto res = a.handle(req("POST", "/api/v1/runs", R"({"name":"r1"})", auth));
            CHECK(res.status == 401);
            CHECK(body_of(res).contains("error"));
        }
        CHECK(a.handle(req("POST", "/api/v1/runs/stop", "", "")).status == 401);
        CHECK(runs.started.empty());
        CHECK(runs.stops == 0);
    }
    SECTION("no token configured: nothing is authorised") {
        api open(r.view(), r.controls(runs.controls()), "", {});
        CHECK(open.handle(req("POST", "/api/v1/runs", R"({"name":"r1"})", "Bearer ")).status == 401);
    }
    SECTION("bad bodies and names: 400") {
        for (const std::string body : {"", "{", "not json", "[1,2]", R"({"nam":"x"})", R"({"name":7})",
                                       R"({"name":"a/b"})", R"({"name":"..\\x"})", R"({"name":".."})",
                                       R"({"name":"../../etc"})", R"({"name":"has space"})", R"({"name":""})",
                                       R"({"name":"c1","compression":"zstd"})", R"({"name":"c1","compression":2})",
                                       R"({"name":"c1","compression":null})"}) {
            INFO(body);
            const auto res = a.handle(req("POST", "/api/v1/runs", body, bearer()));
            CHECK(res.status == 400);
            CHECK(body_of(res).contains("error"));
        }
        CHECK(runs.started.empty());
    }
    SECTION("too large a body: 413") {
        const auto res = a.handle(req("POST", "/api/v1/runs", std::string(api::max_body_bytes + 1, ' '), bearer()));
        CHECK(res.status == 413);
    }
    SECTION("started, then 409 while active, stopped, 409 when none") {
        const auto ok = a.handle(req("POST", "/api/v1/runs", R"({"name":"beam01"})", bearer()));
        CHECK(ok.status == 201);
        CHECK(body_of(ok)["run"] == "beam01");
        REQUIRE(runs.started == std::vector<std::string>{"beam01"});
        const auto busy = a.handle(req("POST", "/api/v1/runs", R"({"name":"beam02"})", bearer()));
        CHECK(busy.status == 409);
        CHECK_THAT(body_of(busy)["error"].get<std::string>(), Contains("beam01"));
        const auto stop = a.handle(req("POST", "/api/v1/runs/stop", "", bearer()));
        CHECK(stop.status == 200);
        CHECK(body_of(stop)["frames_written"] == 42);
        CHECK(a.handle(req("POST", "/api/v1/runs/stop", "", bearer())).status == 409);
    }
    SECTION("the run's compression: handed on as asked, or left to the config") {
        CHECK(a.handle(req("POST", "/api/v1/runs", R"({"name":"p1","compression":"bslz4"})", bearer())).status == 201);
        CHECK(a.handle(req("POST", "/api/v1/runs/stop", "", bearer())).status == 200);
        CHECK(a.handle(req("POST", "/api/v1/runs", R"({"name":"p2","compression":"none"})", bearer())).status == 201);
        CHECK(a.handle(req("POST", "/api/v1/runs/stop", "", bearer())).status == 200);
        CHECK(a.handle(req("POST", "/api/v1/runs", R"({"name":"p3"})", bearer())).status == 201);
        CHECK(runs.compressions == std::vector<std::string>{"bslz4", "none", ""});
    }
    SECTION("a run of that name on disk: 409") {
        std::ofstream(dir / "old.h5") << "x";
        std::ofstream(dir / "series_00003.h5") << "x";
        CHECK(a.handle(req("POST", "/api/v1/runs", R"({"name":"old"})", bearer())).status == 409);
        CHECK(a.handle(req("POST", "/api/v1/runs", R"({"name":"series"})", bearer())).status == 409);
        CHECK(runs.started.empty());
    }
    SECTION("the pipeline refuses: 500 with its message") {
        runs.fail_with = "cannot create output directory: Permission denied";
        const auto res = a.handle(req("POST", "/api/v1/runs", R"({"name":"x1"})", bearer()));
        CHECK(res.status == 500);
        CHECK_THAT(body_of(res)["error"].get<std::string>(), Contains("Permission denied"));
    }
}

TEST_CASE("several hosts: host tag, metadata, prepare, commit, abort", "[web]") {
    temp_dir dir("api-hosts");
    rig r(dir.path);
    fake_runs runs;
    api a(r.view(), r.controls(runs.controls()), token, {});
    CHECK(a.is_blocking(req("POST", "/api/v1/runs/commit")));

    SECTION("prepared with a host tag and metadata, then committed") {
        const auto res = a.handle(req("POST", "/api/v1/runs",
                                      R"({"name":"r7","host":"hostA","prepare":true,"prepare_timeout_s":5,)"
                                      R"("meta":{"sample":"Si","energy_keV":12.4,"shots":3,"beam":true}})",
                                      bearer()));
        REQUIRE(res.status == 201);
        const auto j = body_of(res);
        CHECK(j["state"] == "prepared");
        CHECK(j["host"] == "hostA");
        CHECK(j["file_stem"] == "r7_hostA");
        CHECK(j["prepare_timeout_s"] == 5);
        REQUIRE(runs.requests.size() == 1);
        const auto& q = runs.requests.front();
        CHECK(q.prepare);
        CHECK(q.prepare_timeout_s == 5);
        REQUIRE(q.meta.size() == 4);
        std::map<std::string, run_start::meta_value> m(q.meta.begin(), q.meta.end());
        CHECK(std::get<std::string>(m.at("sample")) == "Si");
        CHECK(std::get<double>(m.at("energy_keV")) == 12.4);
        CHECK(std::get<std::int64_t>(m.at("shots")) == 3);
        CHECK(std::get<bool>(m.at("beam")));
        CHECK(json::parse(q.meta_json)["sample"] == "Si");
        // Status says prepared, with the run's name across hosts and the metadata.
        const auto st = body_of(a.handle(req("GET", "/api/v1/status")));
        CHECK(st["run"]["state"] == "prepared");
        CHECK(st["run"]["run"] == "r7");
        CHECK(st["run"]["host"] == "hostA");
        CHECK(st["run"]["meta"]["energy_keV"] == 12.4);

        CHECK(a.handle(req("POST", "/api/v1/runs/commit", R"({"name":"other"})", bearer())).status == 409);
        CHECK(a.handle(req("POST", "/api/v1/runs/commit", R"({"name":"r7"})", "")).status == 401);
        CHECK(a.handle(req("POST", "/api/v1/runs/commit", "not json", bearer())).status == 400);
        const auto c = a.handle(req("POST", "/api/v1/runs/commit", R"({"name":"r7"})", bearer()));
        REQUIRE(c.status == 200);
        CHECK(body_of(c)["state"] == "recording");
        CHECK(body_of(c)["run"] == "r7");
        CHECK(body_of(c)["started_unix_ns"].get<std::int64_t>() > 1'600'000'000'000'000'000);
        CHECK(runs.commits == std::vector<std::string>{"r7"});
        // A second commit: the run is not prepared any more.
        CHECK(a.handle(req("POST", "/api/v1/runs/commit", R"({"name":"r7"})", bearer())).status == 409);
    }
    SECTION("aborted: its files named, nothing active after") {
        REQUIRE(a.handle(req("POST", "/api/v1/runs", R"({"name":"r8","host":"b","prepare":true})", bearer())).status ==
                201);
        CHECK(a.handle(req("POST", "/api/v1/runs/abort", R"({"name":"nope"})", bearer())).status == 409);
        const auto ab = a.handle(req("POST", "/api/v1/runs/abort", R"({"name":"r8"})", bearer()));
        REQUIRE(ab.status == 200);
        CHECK(body_of(ab)["state"] == "aborted");
        CHECK(body_of(ab)["removed"] == json::array({"r8_b.h5"}));
        CHECK_FALSE(runs.active);
        CHECK(a.handle(req("GET", "/api/v1/runs/abort")).status == 405);
    }
    SECTION("a file of the run on this host exists: 409 naming it; other hosts' files do not count") {
        std::ofstream(dir / "r9_hostA.h5") << "x";
        const auto res = a.handle(req("POST", "/api/v1/runs", R"({"name":"r9","host":"hostA","prepare":true})", bearer()));
        CHECK(res.status == 409);
        CHECK_THAT(body_of(res)["error"].get<std::string>(), Contains("r9_hostA"));
        CHECK(a.handle(req("POST", "/api/v1/runs", R"({"name":"r9","host":"hostB","prepare":true})", bearer())).status ==
              201);
    }
    SECTION("the pipeline finds too little disk: 507") {
        runs.fail_with = "/data has 10 bytes free, not more than storage.reserve_bytes (1000) and two chunks";
        CHECK(a.handle(req("POST", "/api/v1/runs", R"({"name":"r10","prepare":true})", bearer())).status == 507);
    }
    SECTION("bad host tags, metadata and prepare fields: 400, nothing started") {
        for (const std::string body :
             {R"({"name":"x","host":""})", R"({"name":"x","host":7})", R"({"name":"x","host":"a/b"})",
              R"({"name":"x","host":"has space"})", R"({"name":"x","meta":[1]})", R"({"name":"x","meta":{"a":[1]}})",
              R"({"name":"x","meta":{"a":{"b":1}}})", R"({"name":"x","meta":{"a":null}})",
              R"({"name":"x","meta":{"bad key":1}})", R"({"name":"x","meta":{"json":1}})",
              R"({"name":"x","meta":{"a":18446744073709551615}})", R"({"name":"x","prepare":"yes"})",
              R"({"name":"x","prepare_timeout_s":5})", R"({"name":"x","prepare":true,"prepare_timeout_s":0})",
              R"({"name":"x","prepare":true,"prepare_timeout_s":1.5})", R"({"kind":"pedestal","host":"a"})",
              R"({"kind":"pedestal","prepare":true})"}) {
            INFO(body);
            const auto res = a.handle(req("POST", "/api/v1/runs", body, bearer()));
            CHECK(res.status == 400);
            CHECK(body_of(res).contains("error"));
        }
        CHECK(runs.started.empty());
        CHECK(runs.pedestals.empty());
    }
}

TEST_CASE("starting a run without a name, and pedestal runs", "[web]") {
    temp_dir dir("api");
    rig r(dir.path);
    fake_runs runs;
    runs.naming = true;
    api a(r.view(), r.controls(runs.controls()), token, {});
    SECTION("no name (an empty body, {}, \"\"): the pattern's next name, said so") {
        for (const std::string body : {"", "{}", R"({"name":""})"}) {
            INFO(body);
            const auto ok = a.handle(req("POST", "/api/v1/runs", body, bearer()));
            REQUIRE(ok.status == 201);
            CHECK(body_of(ok)["run"] == fmt::format("run_{:05d}", runs.named));
            CHECK(body_of(ok)["name_generated"] == true);
            CHECK(body_of(ok)["kind"] == "data");
            CHECK(a.handle(req("POST", "/api/v1/runs/stop", "", bearer())).status == 200);
        }
        CHECK(runs.started == std::vector<std::string>{"run_00001", "run_00002", "run_00003"});
        const auto named = a.handle(req("POST", "/api/v1/runs", R"({"name":"beam9"})", bearer()));
        CHECK(body_of(named)["name_generated"] == false);
    }
    SECTION("a pedestal run: its frames, its calibration file; refused while it runs") {
        const auto ok = a.handle(req("POST", "/api/v1/runs", R"({"kind":"pedestal","frames":500,"name":"ped1"})", bearer()));
        REQUIRE(ok.status == 201);
        CHECK(body_of(ok)["kind"] == "pedestal");
        CHECK(body_of(ok)["frames"] == 500);
        CHECK(body_of(ok)["files"] == json::array({"ped1.calib.h5"}));
        REQUIRE(runs.pedestals.size() == 1);
        CHECK(runs.pedestals[0] == std::pair<std::string, std::uint64_t>{"ped1", 500});
        const auto busy = a.handle(req("POST", "/api/v1/runs", R"({"name":"beam"})", bearer()));
        CHECK(busy.status == 409);
        CHECK_THAT(body_of(busy)["error"].get<std::string>(), Contains("pedestal run 'ped1' is active"));
        CHECK(a.handle(req("POST", "/api/v1/runs/stop", "", bearer())).status == 200);
        // Without a name or frames: the pattern's name, 1000 frames per unit.
        const auto dflt = a.handle(req("POST", "/api/v1/runs", R"({"kind":"pedestal"})", bearer()));
        REQUIRE(dflt.status == 201);
        CHECK(runs.pedestals.back() == std::pair<std::string, std::uint64_t>{"run_00001", 1000});
    }
    SECTION("bad pedestal requests: 400") {
        for (const std::string body : {R"({"kind":"beam"})", R"({"kind":7})", R"({"kind":"pedestal","frames":1})",
                                       R"({"kind":"pedestal","frames":"many"})", R"({"frames":100})",
                                       R"({"kind":"pedestal","compression":"bslz4"})",
                                       R"({"kind":"pedestal","frames":100000001})"}) {
            INFO(body);
            const auto res = a.handle(req("POST", "/api/v1/runs", body, bearer()));
            CHECK(res.status == 400);
            CHECK(body_of(res).contains("error"));
        }
        CHECK(runs.pedestals.empty());
        CHECK(runs.started.empty());
    }
}

TEST_CASE("status: links, units, rates, run, host checks", "[web]") {
    temp_dir dir("api");
    rig r(dir.path);
    fake_runs runs;
    std::vector<host_check> checks{{"cores", check_status::failing, "2 CPUs", "no command"}};
    api a(r.view(), r.controls(runs.controls()), token, checks);
    const auto t0 = std::chrono::steady_clock::now();
    a.sample(t0);
    for (std::uint32_t f = 0; f < 10; ++f) r.feed(web_test::packet(3, f, f));
    a.sample(t0 + std::chrono::seconds(2));
    auto s = body_of(a.handle(req("GET", "/api/v1/status")));
    REQUIRE(s["links"].size() == 1);
    CHECK(s["links"][0]["endpoint"].get<std::string>().rfind("127.0.0.1:", 0) == 0);
    REQUIRE(s["units"].size() == 1);
    const auto& u = s["units"][0];
    CHECK(u["unit"] == 3);
    CHECK(u["channels"] == 16);
    CHECK(u["packets"] == 10);
    CHECK(u["frames_complete"] == 10);
    CHECK(u["frames_written"] == 10);
    CHECK(u["last_frame_number"] == 9);
    CHECK(u["packets_per_s"].get<double>() == Approx(5.0));
    CHECK(u["frames_per_s"].get<double>() == Approx(5.0));
    CHECK(u["live"] == true);
    CHECK(s["run"].is_null());
    CHECK(s["backends"]["receiver"].is_string());
    CHECK(s["uptime_s"].get<double>() >= 0);
    CHECK(s["host_checks"][0]["status"] == "failing");
    CHECK(s["ring_fill"].get<double>() == 0.0);

    runs.active = run_info{"beam07", std::chrono::system_clock::now(), 0, 0};
    s = body_of(a.handle(req("GET", "/api/v1/status")));
    CHECK(s["run"]["name"] == "beam07");
    CHECK(s["run"]["started"].get<std::string>().back() == 'Z');
}

TEST_CASE("history: daqd keeps the last minutes of rates for the page's charts", "[web]") {
    temp_dir dir("api");
    rig r(dir.path);
    fake_runs runs;
    api a(r.view(), r.controls(runs.controls()), token, {});
    auto h = body_of(a.handle(req("GET", "/api/v1/history")));
    CHECK(h["samples"].empty());
    CHECK(h["interval_s"] == 1);
    const auto t0 = std::chrono::steady_clock::now();
    a.sample(t0);  // the first sample has nothing to take a rate from
    for (int s = 1; s <= 3; ++s) {
        for (std::uint32_t f = 0; f < 10; ++f) r.feed(web_test::packet(3, 100 * s + f, 100 * s + f));
        a.sample(t0 + std::chrono::seconds(s));
    }
    h = body_of(a.handle(req("GET", "/api/v1/history")));
    REQUIRE(h["samples"].size() == 3);
    for (const auto& s : h["samples"]) {
        REQUIRE(s["links"].size() == 1);
        // The rig feeds the assembler, not the sockets, and writes no file: the
        // rates are 0 here (the page test sees real ones after a reload).
        CHECK(s["links"][0]["packets_per_s"].is_number());
        CHECK(s["links"][0]["bytes_per_s"].is_number());
        CHECK(s["written_bytes_per_s"].is_number());
        CHECK(s["ring_fill"].is_number());
        CHECK(s["t_ms"].get<std::int64_t>() > 0);
    }
    CHECK(a.handle(req("POST", "/api/v1/history")).status == 405);
    // At most history_seconds samples are kept.
    for (std::size_t s = 4; s < api::history_seconds + 20; ++s) a.sample(t0 + std::chrono::seconds(s));
    CHECK(body_of(a.handle(req("GET", "/api/v1/history")))["samples"].size() == api::history_seconds);
}

TEST_CASE("live: the latest frame and the dose of a unit", "[web]") {
    temp_dir dir("api");
    rig r(dir.path);
    fake_runs runs;
    api a(r.view(), r.controls(runs.controls()), token, {});
    CHECK(a.handle(req("GET", "/api/v1/units/3/live")).status == 404);
    CHECK(a.handle(req("GET", "/api/v1/units/abc/live")).status == 404);
    CHECK(a.handle(req("GET", "/api/v1/units/70000/live")).status == 404);
    CHECK(a.handle(req("POST", "/api/v1/units/3/live")).status == 405);
    r.feed(web_test::packet(3, 0, 0, 10));
    r.feed(web_test::packet(3, 1, 1, 10));
    const auto res = a.handle(req("GET", "/api/v1/units/3/live"));
    REQUIRE(res.status == 200);
    const auto j = body_of(res);
    CHECK(j["unit"] == 3);
    CHECK(j["channels"] == 10);
    CHECK(j["frame_number"] == 1);
    CHECK(j["grid"]["cols"] == 4);  // near-square: 4 x 3 for 10 channels
    CHECK(j["grid"]["rows"] == 3);
    REQUIRE(j["samples"].size() == 10);
    REQUIRE(j["dose"].size() == 10);
    CHECK(j["dose_frames"] == 2);
    CHECK(j["dose_kind"] == "raw");
    namespace daq1 = daqd::acquisition::daq1;
    for (std::uint32_t c = 0; c < 10; ++c) {
        CHECK(j["samples"][c] == daq1::test_pattern(1, 3, c));
        CHECK(j["dose"][c].get<double>() == double(daq1::test_pattern(0, 3, c)) + daq1::test_pattern(1, 3, c));
    }
}

TEST_CASE("runs on disk: grouped, with frames and times read from closed files", "[web]") {
    temp_dir dir("runs");
    rig r(dir.path);
    fake_runs runs;
    api a(r.view(), r.controls(runs.controls()), token, {});
    // Two real runs, one of them rotated into several files.
    auto write_run = [&](const std::string& name, std::uint64_t rotate, int frames) {
        daqd::storage::run_options o;
        o.output_dir = dir.path;
        o.run_name = name;
        o.rotate_bytes = rotate;
        o.chunk_bytes = 4096;
        o.config_text = "x";
        o.server_version = "test";
        daqd::storage::run_file f(o);
        std::vector<std::uint16_t> samples(2048, 7);
        for (int i = 0; i < frames; ++i) {
            daqd::processing::frame fr;
            fr.unit_id = 1;
            fr.channels = 2048;
            fr.frame_number = static_cast<std::uint64_t>(i);
            fr.samples = samples.data();
            f.append(fr);
        }
        f.close();
        return f.stats();
    };
    const auto single = write_run("single", 0, 5);
    const auto rotated = write_run("rot", 65536, 40);
    REQUIRE(rotated.files.size() > 1);
    std::ofstream(dir / ".daqd-token") << "secret\n";
    std::ofstream(dir / "ped.calib.h5") << "a calibration file, not a run\n";
    std::ofstream(dir / "notes.txt") << "not a run\n";

    auto j = body_of(a.handle(req("GET", "/api/v1/runs")));
    REQUIRE(j["runs"].size() == 2);
    std::map<std::string, json> by;
    for (const auto& x : j["runs"]) by[x["name"]] = x;
    CHECK(by["single"]["frames"] == 5);
    CHECK(by["single"]["files"].size() == 1);
    CHECK(by["single"]["active"] == false);
    CHECK(by["single"]["started_at"].is_string());
    CHECK(by["single"]["stopped_at"].is_string());
    CHECK(by["rot"]["frames"] == 40);
    CHECK(by["rot"]["files"].size() == rotated.files.size());
    CHECK(by["rot"]["files"][0]["file"] == "rot_00000.h5");
    CHECK(by["rot"]["size_bytes"].get<std::uint64_t>() > 0);

    // The active run's files are not opened; its frames come from the writer.
    runs.active = run_info{"single", std::chrono::system_clock::now(), 0, 0};
    j = body_of(a.handle(req("GET", "/api/v1/runs")));
    for (const auto& x : j["runs"])
        if (x["name"] == "single") {
            CHECK(x["active"] == true);
            CHECK(x["stopped_at"].is_null());
        }
    // A broken file is listed with its error, not fatal.
    std::ofstream(dir / "broken.h5") << "not hdf5";
    runs.active.reset();
    j = body_of(a.handle(req("GET", "/api/v1/runs")));
    bool broken = false;
    for (const auto& x : j["runs"])
        if (x["name"] == "broken") {
            broken = true;
            CHECK(x["frames"].is_null());
            CHECK(x["files"][0].contains("error"));
        }
    CHECK(broken);
}
