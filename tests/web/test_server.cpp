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
    controls.start = [&](const daqd::web::run_start& s) {
        const std::string& n = s.name;
        std::this_thread::sleep_for(std::chrono::milliseconds(200));  // as if the writer were busy
        ++starts;
        std::lock_guard lock(mutex);
        active = run_info{n, std::chrono::system_clock::now(), 0, 0};
    };
    controls.stop = [] { return std::optional<daqd::web::run_result>(); };
    api a(r.view(), r.controls(controls), "0123456789abcdef0123", {});
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
        port,
        "GET /api/v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /metrics HTTP/1.1\r\nHost: localhost:8080\r\n"
        "Connection: close\r\n\r\n",
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

namespace {

// A client that connects and sends `bytes` (typically the start of a request).
struct raw_client {
    int fd;
    explicit raw_client(std::uint16_t port, const std::string& bytes = "") : fd(web_test::connect_to(port)) {
        if (!bytes.empty()) web_test::send_all(fd, bytes);
    }
    ~raw_client() { ::close(fd); }
    raw_client(const raw_client&) = delete;
    raw_client& operator=(const raw_client&) = delete;
};

}  // namespace

TEST_CASE("slow, silent and idle clients are closed at their deadlines, and when full the oldest waiting one makes room",
          "[web]") {
    using namespace std::chrono_literals;
    temp_dir dir("slow");
    rig r(dir.path);
    api a(r.view(), {}, "0123456789abcdef0123", {});
    server_limits lim;
    lim.max_connections = 8;
    lim.header_timeout = 2000ms;
    lim.body_timeout = 1000ms;
    lim.idle_timeout = 1000ms;
    server s({"127.0.0.1", 0}, a, lim);
    s.start();
    REQUIRE(s.max_connections() == 8);
    const auto port = s.port();
    auto value = [&](const std::string& series) { return web_test::metric(a.http_metrics().scrape(), series); };
    auto dropped = [&](const char* reason) {
        return value(std::string("daq_http_connections_dropped_total{reason=\"") + reason + "\"}");
    };
    CHECK(value("daq_http_connections_limit") == 8);
    CHECK(value("daq_http_connections_open") == 0);

    // Every slot taken by a client that never finishes its header, in order.
    std::vector<std::unique_ptr<raw_client>> slow;
    for (int i = 0; i < 8; ++i) {
        slow.push_back(std::make_unique<raw_client>(port, "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n"));
        REQUIRE(web_test::wait_until([&] { return value("daq_http_connections_open") == i + 1; }, 5s));
    }
    // A ninth is served: the oldest waiting one is closed for it.
    const auto m = web_test::http(port, "GET", "/metrics");
    CHECK(m.status == 200);
    CHECK(web_test::closed_within(slow[0]->fd, 1s));
    CHECK_FALSE(web_test::closed_within(slow[1]->fd, 0ms));
    CHECK(dropped("evicted") == 1);
    CHECK(value("daq_http_connections_accepted_total") == 9);

    // The others at their header deadline.
    CHECK(web_test::wait_until([&] { return dropped("header_timeout") == 7; }, 5s));
    for (int i = 1; i < 8; ++i) CHECK(web_test::closed_within(slow[static_cast<std::size_t>(i)]->fd, 1s));
    CHECK(web_test::wait_until([&] { return value("daq_http_connections_open") == 0; }, 5s));

    // A byte every 50 ms does not extend the header deadline; a body that
    // stops, a kept-alive connection that sends nothing more: closed too.
    raw_client drip(port, "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Drip: ");
    raw_client body(port, "POST /api/v1/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{\"na");
    raw_client idle(port, "GET /favicon.ico HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    const auto t0 = std::chrono::steady_clock::now();
    bool drip_closed = false;
    while (!drip_closed && std::chrono::steady_clock::now() - t0 < 6s) {
        drip_closed = !web_test::send_all(drip.fd, "a") || web_test::closed_within(drip.fd, 50ms);
    }
    const auto drip_held = std::chrono::steady_clock::now() - t0;
    CHECK(drip_closed);
    CHECK(drip_held < 4s);  // the deadline is for the whole header (2 s), not per byte
    CHECK(web_test::closed_within(body.fd, 3s));
    std::string answer(256, '\0');
    CHECK(::recv(idle.fd, answer.data(), answer.size(), 0) > 0);  // the 204, then nothing more is asked
    CHECK_THAT(answer, Contains("HTTP/1.1 204"));
    CHECK(web_test::closed_within(idle.fd, 3s));
    // beast's timer closes the socket before the handler counts the drop: the
    // client can see the close first, so the counts are waited for.
    CHECK(web_test::wait_until([&] { return dropped("body_timeout") == 1 && dropped("idle_timeout") == 1; }, 3s));
    CHECK(web_test::wait_until([&] { return dropped("header_timeout") == 8; }, 3s));
    CHECK(dropped("evicted") == 1);
    CHECK(dropped("refused") == 0);
    CHECK(web_test::wait_until([&] { return value("daq_http_connections_open") == 0; }, 5s));
}

TEST_CASE("HEAD answers GET's status and headers, Content-Length included, without a body", "[web]") {
    using namespace std::chrono_literals;
    temp_dir dir("head");
    rig r(dir.path);
    api a(r.view(), {}, "0123456789abcdef0123", {});
    server s({"127.0.0.1", 0}, a);
    s.start();
    const auto port = s.port();
    // Read until the server closes: nothing may follow the head.
    auto head = [&](const std::string& target) {
        return web_test::exchange_raw(port, "HEAD " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
                                      99, 5s);
    };
    for (const char* target : {"/", "/app.js", "/style.css"}) {
        INFO(target);
        auto get = web_test::http(port, "GET", target);
        const std::string raw = head(target);
        auto h = web_test::parse_reply(raw);
        CHECK(h.status == 200);
        CHECK(h.headers["content-length"] == std::to_string(get.body.size()));
        CHECK(h.headers["content-type"] == get.headers["content-type"]);
        CHECK(h.headers["content-security-policy"] == get.headers["content-security-policy"]);
        CHECK(raw.size() == raw.find("\r\n\r\n") + 4);
    }
    const std::string raw = head("/metrics");
    auto h = web_test::parse_reply(raw);
    CHECK(h.status == 200);
    CHECK(std::stoul(h.headers["content-length"]) > 1000);
    CHECK_THAT(h.headers["content-type"], Contains("text/plain; version=0.0.4"));
    CHECK(raw.size() == raw.find("\r\n\r\n") + 4);
    CHECK(web_test::parse_reply(head("/nowhere")).status == 404);
    CHECK(web_test::parse_reply(head("/api/v1/runs/stop")).status == 405);
    // Kept alive: the next answer follows the head directly.
    const std::string two = web_test::exchange_raw(
        port,
        "HEAD /app.js HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /favicon.ico HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Connection: close\r\n\r\n",
        99, 5s);
    CHECK(two.find("\r\n\r\nHTTP/1.1 204") == two.find("\r\n\r\n"));
}

TEST_CASE("the Host header: other names 403, HTTP/1.1 without one 400, HTTP/1.0 without one answered", "[web]") {
    using namespace std::chrono_literals;
    temp_dir dir("host");
    rig r(dir.path);
    r.cfg.http.allowed_hosts = {"daq.example"};
    api a(r.view(), {}, "0123456789abcdef0123", {});
    server s({"127.0.0.1", 0}, a);
    s.start();
    const auto port = s.port();
    auto get = [&](const std::string& headers, const std::string& version = "1.1") {
        return web_test::exchange_raw(
            port, "GET /api/v1/status HTTP/" + version + "\r\n" + headers + "Connection: close\r\n\r\n", 1, 5s);
    };
    const auto evil = web_test::parse_reply(get("Host: evil.example:" + std::to_string(port) + "\r\n"));
    CHECK(evil.status == 403);
    CHECK_THAT(nlohmann::json::parse(evil.body)["error"].get<std::string>(), Contains("http.allowed_hosts"));
    CHECK(web_test::parse_reply(get("Host: 127.0.0.1:" + std::to_string(port) + "\r\n")).status == 200);
    CHECK(web_test::parse_reply(get("Host: daq.example:" + std::to_string(port) + "\r\n")).status == 200);
    CHECK(web_test::parse_reply(get("Host: [::1]\r\n")).status == 200);
    const auto none = web_test::parse_reply(get(""));
    CHECK(none.status == 400);
    CHECK_THAT(none.body, Contains("Host"));
    CHECK(web_test::parse_reply(get("Host: 127.0.0.1\r\nHost: evil.example\r\n")).status == 400);
    CHECK(get("", "1.0").rfind("HTTP/1.0 200 OK\r\n", 0) == 0);
    const auto m = web_test::http(port, "GET", "/metrics");
    CHECK(web_test::metric(m.body, "daq_http_host_rejected_total") == 1);
    CHECK(web_test::metric(m.body, "daq_http_requests_total{code=\"403\"}") == 1);
}
