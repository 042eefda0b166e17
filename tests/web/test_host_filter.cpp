// The Host check (DNS rebinding) and HEAD, driven without sockets: which
// names host_filter accepts for which [http] settings, and what api answers.
#include "daqd/web/api.hpp"
#include "daqd/web/host_filter.hpp"
#include "web_test_util.hpp"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <unistd.h>

using namespace daqd::web;
using Catch::Matchers::Contains;
using web_test::rig;
using web_test::temp_dir;

namespace {

daqd::config::http_config http_on(const std::string& listen, std::vector<std::string> allowed = {}) {
    daqd::config::http_config h;
    h.listen = listen;
    h.allowed_hosts = std::move(allowed);
    return h;
}

std::string this_host() {
    char name[256] = {};
    ::gethostname(name, sizeof name - 1);
    return name;
}

}  // namespace

TEST_CASE("Host header values: the name, without port or brackets, normalised", "[web]") {
    CHECK(host_filter::name_of("localhost") == "localhost");
    CHECK(host_filter::name_of("LocalHost:8080") == "localhost");
    CHECK(host_filter::name_of("localhost.:8080") == "localhost");
    CHECK(host_filter::name_of("127.0.0.1:4660") == "127.0.0.1");
    CHECK(host_filter::name_of("[::1]:8080") == "::1");
    CHECK(host_filter::name_of("[::1]") == "::1");
    CHECK(host_filter::name_of("[0:0:0:0:0:0:0:1]:80") == "::1");
    CHECK(host_filter::name_of("daq01.lab.example") == "daq01.lab.example");
    for (const char* bad : {"", ":80", "::1", "[::1", "[nothost]:80", "[::1]x", "a b", "evil.example:", "x:8o",
                            "x:123456", "a/b", "evil.example@127.0.0.1"}) {
        INFO("'" << bad << "'");
        CHECK_FALSE(host_filter::name_of(bad).has_value());
    }
}

TEST_CASE("allowed hosts: loopback names, the listen address, http.allowed_hosts, nothing else", "[web]") {
    SECTION("default: loopback") {
        const host_filter f(http_on("127.0.0.1:8080"));
        for (const char* ok : {"localhost", "localhost:8080", "LOCALHOST", "127.0.0.1", "127.0.0.1:1234", "[::1]:8080",
                               "[::1]"})
            CHECK(f.allows(ok));
        for (const char* no : {"evil.example", "evil.example:8080", "localhost.evil.example", "127.0.0.1.nip.io",
                               "0.0.0.0", "127.0.0.2", "", "[::1"})
            CHECK_FALSE(f.allows(no));
        CHECK_FALSE(f.allows(this_host() + ".rebind.example"));
    }
    SECTION("a real listen address is allowed, and so is this machine's name") {
        const host_filter f(http_on("192.0.2.7:8080"));
        CHECK(f.allows("192.0.2.7:8080"));
        CHECK(f.allows("192.0.2.7"));
        CHECK(f.allows("localhost:8080"));
        CHECK(f.allows(this_host() + ":8080"));
        CHECK_FALSE(f.allows("192.0.2.8"));
        CHECK_FALSE(f.allows("evil.example"));
    }
    SECTION("an IPv6 listen address, in any spelling") {
        const host_filter f(http_on("[2001:db8::5]:8080"));
        CHECK(f.allows("[2001:db8::5]:8080"));
        CHECK(f.allows("[2001:DB8:0:0::5]"));
        CHECK_FALSE(f.allows("[2001:db8::6]"));
    }
    SECTION("a wildcard listen address: this machine's addresses") {
        const host_filter f(http_on("0.0.0.0:8080"));
        CHECK(f.allows("127.0.0.1:8080"));
        CHECK(f.allows(this_host()));
        CHECK_FALSE(f.allows("0.0.0.0:8080"));
        CHECK_FALSE(f.allows("evil.example"));
    }
    SECTION("configured names, addresses and '*'") {
        const host_filter f(http_on("127.0.0.1:8080", {"DAQ01.lab.example", "[fe80::1]", "10.1.2.3", "2001:db8::9"}));
        CHECK(f.allows("daq01.lab.example:8080"));
        CHECK(f.allows("daq01.LAB.example."));
        CHECK(f.allows("[fe80::1]:8080"));
        CHECK(f.allows("10.1.2.3"));
        CHECK(f.allows("[2001:db8::9]"));
        CHECK_FALSE(f.allows("daq01"));
        CHECK_FALSE(f.allows("evil.example"));
        CHECK_THAT(f.names(), Catch::Matchers::VectorContains(std::string("daq01.lab.example")));
        const host_filter any(http_on("127.0.0.1:8080", {"*"}));
        CHECK(any.allows("evil.example"));
        CHECK(any.names() == std::vector<std::string>{"*"});
    }
}

TEST_CASE("the API answers 403 to other Host names, counted, and HEAD is GET", "[web]") {
    temp_dir dir("hosts");
    rig r(dir.path);
    r.cfg.http.allowed_hosts = {"daq.example"};
    api a(r.view(), {}, "0123456789abcdef0123", {});
    auto req = [](std::string method, std::string target, std::optional<std::string> host) {
        request q;
        q.method = std::move(method);
        q.target = std::move(target);
        q.host = std::move(host);
        return q;
    };
    const auto rejected = a.handle(req("GET", "/api/v1/status", "evil.example:8080"));
    CHECK(rejected.status == 403);
    CHECK_THAT(nlohmann::json::parse(rejected.body)["error"].get<std::string>(),
               Contains("evil.example") && Contains("http.allowed_hosts"));
    CHECK(a.handle(req("POST", "/api/v1/runs/stop", "evil.example")).status == 403);  // before the token
    CHECK(a.handle(req("GET", "/metrics", "127.0.0.1:8080")).status == 200);
    CHECK(a.handle(req("GET", "/metrics", "daq.example:8080")).status == 200);
    CHECK(a.handle(req("GET", "/metrics", std::nullopt)).status == 200);  // HTTP/1.0 without Host
    CHECK_THAT(a.handle(req("GET", "/metrics", "localhost")).body, Contains("daq_http_host_rejected_total 2\n"));

    // HEAD: the answer GET would give (the server leaves the body out).
    for (const char* target : {"/", "/app.js", "/metrics", "/api/v1/status", "/nowhere"}) {
        INFO(target);
        const auto get = a.handle(req("GET", target, "localhost"));
        const auto head = a.handle(req("HEAD", target, "localhost"));
        CHECK(head.status == get.status);
        CHECK(head.content_type == get.content_type);
        CHECK(head.headers == get.headers);
        if (std::string(target) == "/" || std::string(target) == "/app.js") CHECK(head.body == get.body);
    }
    CHECK(a.handle(req("HEAD", "/api/v1/runs/stop", "localhost")).status == 405);
}
