// The control token, and the [http] configuration section.
#include "daqd/config/config.hpp"
#include "daqd/web/token.hpp"
#include "web_test_util.hpp"

#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <fstream>

using namespace daqd::web;
using Catch::Matchers::Contains;
using web_test::temp_dir;
namespace fs = std::filesystem;

namespace {
std::string error_of(std::string_view text) {
    try {
        (void)daqd::config::load_string(text, "config.toml");
    } catch (const daqd::config::config_error& e) {
        return e.what();
    }
    return "";
}
}  // namespace

TEST_CASE("generated tokens are 32 random hex digits", "[web]") {
    const auto a = generate_token();
    const auto b = generate_token();
    CHECK(a.size() == 32);
    CHECK(a.find_first_not_of("0123456789abcdef") == std::string::npos);
    CHECK(a != b);
}

TEST_CASE("the token file is written for the owner only, whatever the umask", "[web]") {
    temp_dir dir("token");
    const mode_t old = ::umask(0);
    write_token_file(dir / "t", "0123456789abcdef0123");
    ::umask(old);
    struct stat st{};
    REQUIRE(::stat((dir / "t").c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);
    CHECK(read_token_file(dir / "t") == "0123456789abcdef0123");
    // Replaced, not appended; no temporary file left.
    write_token_file(dir / "t", "fedcba9876543210fedc");
    CHECK(read_token_file(dir / "t") == "fedcba9876543210fedc");
    CHECK(std::distance(fs::directory_iterator(dir.path), fs::directory_iterator()) == 1);
    std::ofstream(dir / "short") << "abc\n";
    CHECK_THROWS(read_token_file(dir / "short"));
    CHECK_THROWS(read_token_file(dir / "missing"));
}

TEST_CASE("setup_token: configured, from a file, or generated into the output directory", "[web]") {
    temp_dir dir("setup");
    daqd::config::config cfg;
    cfg.storage.output_dir = dir / "runs";
    SECTION("generated") {
        const auto t = setup_token(cfg);
        CHECK(t.generated);
        CHECK(t.file == dir / "runs/.daqd-token");
        CHECK(read_token_file(t.file) == t.token);
        struct stat st{};
        REQUIRE(::stat(t.file.c_str(), &st) == 0);
        CHECK((st.st_mode & 0777) == 0600);
    }
    SECTION("http.token") {
        cfg.http.token = "a-configured-token-1234";
        const auto t = setup_token(cfg);
        CHECK(t.token == "a-configured-token-1234");
        CHECK_FALSE(t.generated);
        CHECK_FALSE(fs::exists(dir / "runs/.daqd-token"));
    }
    SECTION("http.token_file") {
        write_token_file(dir / "tok", "from-a-file-0123456789");
        cfg.http.token_file = (dir / "tok").string();
        CHECK(setup_token(cfg).token == "from-a-file-0123456789");
    }
}

TEST_CASE("constant-time comparison and the Bearer scheme", "[web]") {
    CHECK(token_equals("abcdef0123456789", "abcdef0123456789"));
    CHECK_FALSE(token_equals("abcdef0123456788", "abcdef0123456789"));
    CHECK_FALSE(token_equals("abcdef", "abcdef0123456789"));
    CHECK_FALSE(token_equals("abcdef0123456789x", "abcdef0123456789"));
    CHECK_FALSE(token_equals("", ""));  // no token configured: nothing matches
    CHECK(bearer_token("Bearer abc") == "abc");
    CHECK(bearer_token("bearer  abc ") == "abc");
    CHECK(bearer_token("Basic abc").empty());
    CHECK(bearer_token("Bearer").empty());
    CHECK(bearer_token("").empty());
}

TEST_CASE("[http] configuration: defaults, validation, the token kept out of config.text", "[web]") {
    const auto d = daqd::config::load_default();
    CHECK(d.http.listen == "127.0.0.1:8080");
    CHECK(d.http.token.empty());
    CHECK(d.http.token_file.empty());

    CHECK(error_of("[http]\nlisten = \"\"\n").empty());
    CHECK(error_of("[http]\nlisten = \"[::1]:9000\"\n").empty());
    CHECK_THAT(error_of("[http]\nlisten = \"localhost:8080\"\n"), Contains("config.toml:2:") && Contains("http.listen"));
    CHECK_THAT(error_of("[http]\nlisten = \"0.0.0.0:8080\"\n"),
               Contains("config.toml:2:") && Contains("not a loopback address") && Contains("http.token"));
    CHECK(error_of("[http]\nlisten = \"0.0.0.0:8080\"\ntoken = \"0123456789abcdef0123\"\n").empty());
    CHECK(error_of("[http]\nlisten = \"0.0.0.0:8080\"\ntoken_file = \"/etc/daqd/token\"\n").empty());
    CHECK_THAT(error_of("[http]\ntoken = \"short\"\n"), Contains("http.token must be 16..256"));
    CHECK_THAT(error_of("[http]\ntoken = \"0123456789abcdef0123\"\ntoken_file = \"/x\"\n"), Contains("not both"));
    CHECK_THAT(error_of("[http]\nlisen = \"\"\n"), Contains("did you mean 'http.listen'"));

    // http.allowed_hosts: names and addresses, no ports or schemes; errors name the entry and its line.
    CHECK(d.http.allowed_hosts.empty());
    const auto hosts = daqd::config::load_string(
        "[http]\nallowed_hosts = [\"daq01.lab.example\", \"10.0.0.5\", \"[fe80::1]\", \"::1\", \"*\"]\n", "h.toml");
    CHECK(hosts.http.allowed_hosts ==
          std::vector<std::string>{"daq01.lab.example", "10.0.0.5", "[fe80::1]", "::1", "*"});
    CHECK(daqd::config::load_string(daqd::config::to_toml(hosts), "h.toml").http == hosts.http);
    CHECK_THAT(hosts.text, Contains("allowed_hosts = [\"daq01.lab.example\", \"10.0.0.5\""));
    CHECK_THAT(error_of("[http]\nlisten = \"127.0.0.1:8080\"\nallowed_hosts = [\"ok.example\",\n  \"daq01:8080\"]\n"),
               Contains("config.toml:4:") && Contains("http.allowed_hosts[1]") && Contains("'daq01:8080'"));
    CHECK_THAT(error_of("[http]\nallowed_hosts = [\"http://daq01\"]\n"),
               Contains("config.toml:2:") && Contains("http.allowed_hosts[0]") && Contains("no port, no scheme"));
    CHECK_THAT(error_of("[http]\nallowed_hosts = [\"\"]\n"), Contains("http.allowed_hosts[0]"));
    CHECK_THAT(error_of("[http]\nallowed_hosts = [\"[nothost]\"]\n"), Contains("http.allowed_hosts[0]"));
    CHECK_THAT(error_of("[http]\nallowed_hosts = \"daq01\"\n"),
               Contains("config.toml:2:") && Contains("http.allowed_hosts must be an array"));
    CHECK_THAT(error_of("[http]\nallowed_hosts = [1]\n"), Contains("http.allowed_hosts[0] must be a string"));
    CHECK_THAT(error_of("[http]\nallowed_host = []\n"), Contains("did you mean 'http.allowed_hosts'"));

    const auto c = daqd::config::load_string("[http]\ntoken = \"0123456789abcdef-secret\"\n", "t.toml");
    CHECK(c.http.token == "0123456789abcdef-secret");
    CHECK(c.text.find("0123456789abcdef-secret") == std::string::npos);  // stored in run files, printed
    CHECK_THAT(c.text, Contains("token = \"\"  # set, not shown"));
    // The full rendering keeps it (the command line re-validates through it).
    CHECK(daqd::config::load_string(daqd::config::to_toml(c), "t.toml").http.token == c.http.token);
    CHECK(daqd::config::is_loopback("127.0.0.1"));
    CHECK(daqd::config::is_loopback("127.1.2.3"));
    CHECK(daqd::config::is_loopback("::1"));
    CHECK_FALSE(daqd::config::is_loopback("0.0.0.0"));
    CHECK_FALSE(daqd::config::is_loopback("192.168.1.2"));
}
