// The Beast server over real sockets: answers, parser errors, limits,
// keep-alive, blocking requests on the worker; it survives all of them.
#include "daqd/web/server.hpp"
#include "web_test_util.hpp"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <mutex>
#include <thread>

using namespace daqd::web;
using Catch::Matchers::Contains;
using web_test::rig;
using web_test::temp_dir;

TEST_CASE("the HTTP server answers, rejects bad requests with 4xx and keeps serving", "[web]") {
    temp_dir dir("server");
    rig r(dir.path);
    std::mutex mutex;  // the worker starts runs while the io thread reads them
    std::optional<run_info> active;
    std::atomic<int> starts{0};
    run_controls controls;
    controls.check_name = [](const std::string&) { return std::string(); };
    controls.current = [&] {
        std::lock_guard lock(mutex);
        return active;
    };
    controls.start = [&](const std::string& n) {
        std::this_thread::sleep_for(std::chrono::milliseconds(200));  // as if the writer were busy
        ++starts;
        std::lock_guard lock(mutex);
        active = run_info{n, std::chrono::system_clock::now(), 0, 0};
    };
    controls.stop = [] { return std::optional<daqd::storage::run_stats>(); };
    api a(r.view(), controls, "0123456789abcdef0123", {});
    server s({"127.0.0.1", 0}, a);
    s.start();
    const auto port = s.port();
    REQUIRE(port != 0);

    auto st = web_test::http(port, "GET", "/api/v1/status");
    CHECK(st.status == 200);
    CHECK(st.headers["content-type"] == "application/json");
    CHECK(nlohmann::json::parse(st.body)["links"].size() == 1);

    // Garbage, a bad method token, a huge header, a huge body.
    auto garbage = web_test::parse_reply(web_test::exchange_raw(port, "HELLO\r\n\r\n"));
    CHECK(garbage.status == 400);
    CHECK_THAT(garbage.body, Contains("\"error\""));
    auto bad_version = web_test::parse_reply(web_test::exchange_raw(port, "GET / HTTP/9.9\r\n\r\n"));
    CHECK(bad_version.status == 400);
    auto big_header = web_test::parse_reply(web_test::exchange_raw(
        port, "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(20000, 'a') + "\r\n\r\n"));
    CHECK(big_header.status == 431);
    auto big_body = web_test::parse_reply(web_test::exchange_raw(
        port, "POST /api/v1/runs HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + std::string(100000, '{')));
    CHECK(big_body.status == 413);
    CHECK(web_test::http(port, "GET", "/nowhere").status == 404);
    CHECK(web_test::http(port, "POST", "/api/v1/runs", R"({"name":"a"})").status == 401);

    // Keep-alive: two requests on one connection, both answered.
    const std::string two = web_test::exchange_raw(
        port, "GET /api/v1/status HTTP/1.1\r\nHost: x\r\n\r\nGET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        2);
    std::size_t answers = 0;
    for (auto p = two.find("HTTP/1.1 200"); p != std::string::npos; p = two.find("HTTP/1.1 200", p + 1)) ++answers;
    CHECK(answers == 2);

    // A blocking request (on the worker) does not hold up /metrics.
    std::thread slow([&] {
        auto res = web_test::http(port, "POST", "/api/v1/runs", R"({"name":"slow"})", "0123456789abcdef0123");
        CHECK(res.status == 201);
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    const auto t0 = std::chrono::steady_clock::now();
    auto m = web_test::http(port, "GET", "/metrics");
    const auto took = std::chrono::steady_clock::now() - t0;
    slow.join();
    CHECK(starts == 1);
    CHECK(took < std::chrono::milliseconds(150));
    CHECK(m.status == 200);
    CHECK_THAT(m.headers["content-type"], Contains("text/plain; version=0.0.4"));

    // Every answer was counted, the bad ones too.
    m = web_test::http(port, "GET", "/metrics");
    CHECK_THAT(m.body, Contains("daq_http_requests_total{code=\"400\"} 2\n"));
    CHECK_THAT(m.body, Contains("daq_http_requests_total{code=\"413\"} 1\n"));
    CHECK_THAT(m.body, Contains("daq_http_requests_total{code=\"431\"} 1\n"));
    CHECK_THAT(m.body, Contains("daq_http_requests_total{code=\"401\"} 1\n"));
    CHECK_THAT(m.body, Contains("daq_http_requests_total{code=\"201\"} 1\n"));
    s.stop();
    s.stop();  // idempotent
}

TEST_CASE("a port in use is an error naming the address", "[web]") {
    temp_dir dir("server");
    rig r(dir.path);
    api a(r.view(), {}, "", {});
    server first({"127.0.0.1", 0}, a);
    try {
        server second({"127.0.0.1", first.port()}, a);
        FAIL("bound twice");
    } catch (const std::runtime_error& e) {
        CHECK_THAT(std::string(e.what()), Contains("127.0.0.1:" + std::to_string(first.port())));
    }
}
