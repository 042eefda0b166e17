// The HTTP API driven directly (no sockets): routes, methods, the token,
// every error, the status and live JSON, the runs on disk.
#include "daqd/storage/run_writer.hpp"
#include "daqd/web/api.hpp"
#include "web_test_util.hpp"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <fstream>

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
    int stops = 0;
    std::string fail_with;

    run_controls controls() {
        run_controls c;
        c.check_name = [](const std::string& n) -> std::string {
            for (char ch : n)
                if (!(std::isalnum(static_cast<unsigned char>(ch)) || ch == '_' || ch == '-' || ch == '.'))
                    return "run name '" + n + "' may only hold letters, digits, '.', '_' and '-'";
            return n.empty() ? "run name is empty" : "";
        };
        c.start = [this](const std::string& n, const std::string& compression) {
            if (!fail_with.empty()) throw std::runtime_error(fail_with);
            started.push_back(n);
            compressions.push_back(compression);
            active = run_info{n, std::chrono::system_clock::now(), 0, 0};
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
        c.current = [this] { return active; };
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
