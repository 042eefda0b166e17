// Tests of daqd::config: the embedded default, round trips, the example file
// and every kind of error (with key names and line numbers).
#include "daqd/config/config.hpp"

#include <catch2/catch.hpp>

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>
#include <string>
#include <vector>

using namespace daqd::config;
using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;

namespace {

// The message of the config_error that loading `text` throws ("" if none).
std::string error_of(std::string_view text) {
    try {
        (void)load_string(text, "config.toml");
    } catch (const config_error& e) {
        return e.what();
    }
    return "";
}

std::string read_text(const std::filesystem::path& path) {
    std::ifstream in(path);
    REQUIRE(in);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

// The ```toml blocks of a Markdown file.
std::vector<std::string> toml_blocks(const std::string& markdown) {
    std::vector<std::string> blocks;
    const std::string open = "```toml\n";
    for (std::size_t at = markdown.find(open); at != std::string::npos; at = markdown.find(open, at)) {
        at += open.size();
        const std::size_t close = markdown.find("```", at);
        REQUIRE(close != std::string::npos);
        blocks.push_back(markdown.substr(at, close - at));
        at = close + 3;
    }
    return blocks;
}

std::filesystem::path temp_path(const std::string& name) {
    return std::filesystem::temp_directory_path() / ("daqd_test_config_" + std::to_string(::getpid()) + "_" + name);
}

// A config with every value different from the default.
config everything_changed() {
    config c;
    c.acquisition.listen = {{"0.0.0.0", 1}, {"::1", 4660}, {"192.168.1.20", 65535}};
    c.acquisition.backend = receiver_backend::recvmmsg;
    c.acquisition.gro = true;
    c.acquisition.batch = 1024;
    c.acquisition.max_datagram_bytes = 65535;
    c.acquisition.socket_buffer_datagrams = 1000;
    c.acquisition.expected_datagram_bytes = 8972;
    c.acquisition.ring_slots = 1u << 20;
    c.acquisition.ring_name = "lab.2_x-{pid}-{pid}";
    c.units.learn = false;
    c.units.units = {{3, 4096}, {0, 1}, {65535, 8388608}};
    c.assembly.reorder_frames = 4;
    c.assembly.reorder_timeout = std::chrono::milliseconds(60000);
    c.assembly.max_frame_bytes = 16777216;
    c.assembly.pool_blocks = 16;
    c.assembly.buffer_seconds = 0.75;
    c.assembly.buffer_max_bytes = 1ull << 30;
    c.acquisition.expected_rate_mbps = 40000;
    c.acquisition.shards = 3;
    c.storage.output_dir = "/data/runs \"quoted\" \\ back\tslash é";
    c.storage.flush_interval = std::chrono::milliseconds(10);
    c.storage.rotate_bytes = 5ull << 40;
    c.storage.chunk_bytes = 4096;
    c.storage.queue_frames = 7;
    c.log.level = "trace";
    c.http.allowed_hosts = {"daq01.lab.example", "[fe80::1]", "10.0.0.5", "*"};
    c.source = "roundtrip.toml";
    return c;
}

}  // namespace

TEST_CASE("the embedded default loads and has the documented values", "[config]") {
    const config c = load_default();
    CHECK(c.source == "<embedded default>");
    CHECK_FALSE(c.text.empty());

    REQUIRE(c.acquisition.listen.size() == 1);
    CHECK(c.acquisition.listen[0].host == "127.0.0.1");
    CHECK(c.acquisition.listen[0].port == 4660);
    CHECK(c.acquisition.backend == receiver_backend::automatic);
    CHECK_FALSE(c.acquisition.gro);
    CHECK(c.acquisition.batch == 64);
    CHECK(c.acquisition.max_datagram_bytes == 9000);
    CHECK(c.acquisition.socket_buffer_datagrams == 32768);
    CHECK(c.acquisition.expected_datagram_bytes == 1472);
    CHECK(c.acquisition.ring_slots == 16384);
    CHECK(c.units.max_learned == 256);
    CHECK(c.units.learned_idle_s == 600);
    CHECK(c.units.relearn_quiet == std::chrono::milliseconds(2000));
    CHECK(c.assembly.max_frame_jump == 1048576);
    CHECK(c.assembly.restart_packets == 16);
    CHECK(c.acquisition.ring_name == "daqd-{pid}");
    CHECK(c.units.learn);
    CHECK(c.units.units.empty());
    CHECK(c.assembly.reorder_frames == 8);
    CHECK(c.assembly.reorder_timeout == std::chrono::milliseconds(100));
    CHECK(c.assembly.max_frame_bytes == 65536);
    CHECK(c.assembly.buffer_seconds == 2.5);
    CHECK(c.assembly.buffer_max_bytes == 4ull << 30);
    CHECK(c.assembly.pool_blocks == 0);
    CHECK(c.acquisition.expected_rate_mbps == 0);
    CHECK(c.acquisition.shards == 1);
    CHECK(c.storage.output_dir == std::filesystem::path("./runs"));
    CHECK(c.storage.flush_interval == std::chrono::milliseconds(1000));
    CHECK(c.storage.rotate_bytes == 0);
    CHECK(c.storage.chunk_bytes == 1048576);
    CHECK(c.storage.queue_frames == 0);
    CHECK(c.log.level == "info");

    // Exactly the struct's defaults: the text and the initialisers agree.
    config expected;
    expected.text = to_toml(expected);
    CHECK(c == expected);
    CHECK(c.text == to_toml(config{}));
    CHECK_NOTHROW(config{}.validate());
    CHECK_NOTHROW(c.validate());
}

TEST_CASE("the embedded default text is commented and names every key", "[config]") {
    const std::string_view text = default_toml();
    CHECK_THAT(std::string(text), Contains("# "));
    for (const char* key :
         {"listen", "backend", "gro", "batch", "max_datagram_bytes", "socket_buffer_datagrams", "expected_datagram_bytes",
          "ring_slots", "ring_name", "learn", "list", "reorder_frames", "reorder_timeout_ms", "max_frame_bytes",
          "buffer_seconds", "buffer_max_bytes", "pool_blocks", "expected_rate_mbps", "shards", "output_dir", "flush_interval_ms", "rotate_bytes", "chunk_bytes", "queue_frames", "level"})
        CHECK_THAT(std::string(text), Contains(std::string("\n") + key + " = "));
}

TEST_CASE("to_toml round-trips through load_string", "[config]") {
    SECTION("defaults") {
        config c;
        const config loaded = load_string(to_toml(c), c.source);
        c.text = to_toml(c);
        CHECK(loaded == c);
    }
    SECTION("every value changed") {
        config c = everything_changed();
        REQUIRE_NOTHROW(c.validate());
        const std::string text = to_toml(c);
        const config loaded = load_string(text, "roundtrip.toml");
        c.text = text;
        CHECK(loaded == c);
        CHECK(loaded.text == text);
        CHECK(loaded.storage.output_dir == everything_changed().storage.output_dir);
        // Rendering the loaded config gives the same text again.
        CHECK(to_toml(loaded) == text);
    }
    SECTION("listed units with learning on") {
        config c;
        c.units.units = {{10, 100}, {11, 200}};
        c.text = to_toml(c);
        CHECK(load_string(c.text, c.source) == c);
    }
}

TEST_CASE("the example file loads", "[config]") {
    const config c = load_file(DAQD_CONFIG_EXAMPLE);
    CHECK(c.source == std::string(DAQD_CONFIG_EXAMPLE));
    REQUIRE(c.acquisition.listen.size() == 2);
    CHECK(c.acquisition.listen[0].to_string() == "192.168.10.1:4660");
    CHECK(c.acquisition.listen[1].host == "fd00::10");
    CHECK(c.acquisition.listen[1].to_string() == "[fd00::10]:4660");
    CHECK(c.acquisition.backend == receiver_backend::io_uring);
    CHECK(c.acquisition.batch == 256);
    CHECK(c.acquisition.expected_datagram_bytes == 8972);
    CHECK(c.acquisition.ring_slots == 65536);
    CHECK(c.acquisition.ring_name == "daqd-lab2-{pid}");
    CHECK_FALSE(c.units.learn);
    REQUIRE(c.units.units.size() == 3);
    CHECK(c.units.units[2] == unit_config{7, 16384});
    CHECK(c.units.units[2].frame_bytes() == 32768);
    CHECK(c.assembly.reorder_frames == 16);
    CHECK(c.assembly.reorder_timeout == std::chrono::milliseconds(250));
    CHECK(c.assembly.max_frame_bytes == 32768);  // "32KiB"
    CHECK(c.assembly.buffer_seconds == 4.0);
    CHECK(c.storage.output_dir == std::filesystem::path("/data/daqd/runs"));
    CHECK(c.storage.flush_interval == std::chrono::milliseconds(2000));
    CHECK(c.storage.rotate_bytes == 4ull << 30);  // "4GiB"
    CHECK(c.storage.chunk_bytes == 4u << 20);     // "4MiB"
    CHECK(c.storage.queue_frames == 2048);
    CHECK(c.log.level == "debug");
    // The stored text is the effective configuration, not the file.
    CHECK(c.text == to_toml(c));
    CHECK_THAT(c.text, Contains("rotate_bytes = 4294967296"));
}

TEST_CASE("the examples in docs/CONFIG.md load", "[config]") {
    const auto blocks = toml_blocks(read_text(DAQD_CONFIG_DOC));
    REQUIRE(blocks.size() >= 3);
    for (std::size_t i = 0; i < blocks.size(); ++i) {
        INFO("block " << i << ":\n" << blocks[i]);
        CHECK_NOTHROW(load_string(blocks[i], "CONFIG.md"));
    }
    // The complete example is config/example.toml, the last block the default.
    CHECK(blocks.front() == read_text(DAQD_CONFIG_EXAMPLE));
    CHECK(blocks.back() == to_toml(config{}));
}

TEST_CASE("a partial file keeps the defaults of missing keys", "[config]") {
    const config c = load_string(R"([acquisition]
listen = "0.0.0.0:5000"
[units]
list = [ { id = 3, channels = 4096 } ]
)",
                                 "partial.toml");
    REQUIRE(c.acquisition.listen.size() == 1);
    CHECK(c.acquisition.listen[0] == endpoint{"0.0.0.0", 5000});
    CHECK(c.units.learn);
    CHECK(c.units.units == std::vector<unit_config>{{3, 4096}});
    CHECK(c.assembly == assembly_config{});
    CHECK(c.storage == storage_config{});
    CHECK(load_string("", "empty.toml").acquisition == acquisition_config{});
}

TEST_CASE("units may be written as [[units.list]] tables", "[config]") {
    const config c = load_string(R"([[units.list]]
id = 5
channels = 100
[[units.list]]
id = 6
channels = 200
)",
                                 "t.toml");
    CHECK(c.units.units == std::vector<unit_config>{{5, 100}, {6, 200}});
}

TEST_CASE("size strings are accepted by _bytes keys", "[config]") {
    auto rotate = [](const std::string& value) {
        return load_string("[storage]\nrotate_bytes = " + value + "\n", "t.toml").storage.rotate_bytes;
    };
    CHECK(rotate("\"2GiB\"") == 2ull << 30);
    CHECK(rotate("\"512 MiB\"") == 512ull << 20);
    CHECK(rotate("\"100MB\"") == 100000000ull);
    CHECK(rotate("\"1tb\"") == 1000000000000ull);
    CHECK(rotate("\"65536\"") == 65536);
    CHECK(rotate("0") == 0);
    CHECK(load_string("[acquisition]\nmax_datagram_bytes = \"9000B\"\n", "t.toml").acquisition.max_datagram_bytes ==
          9000);
}

TEST_CASE("errors name the file, the key and the line", "[config]") {
    struct error_case {
        const char* what;
        const char* toml;
        int line;
        std::vector<std::string> fragments;
    };
    const std::vector<error_case> cases{
        {"unknown key with a suggestion", "[acquisition]\nbatch = 64\nbakend = \"auto\"\n", 3,
         {"unknown key 'acquisition.bakend'", "did you mean 'acquisition.backend'?"}},
        {"unknown section", "[log]\nlevel = \"info\"\n\n[acqusition]\nbatch = 3\n", 4,
         {"unknown section 'acqusition'", "did you mean [acquisition]?"}},
        {"key outside its section", "listen = [\"127.0.0.1:1\"]\n", 1,
         {"unknown key 'listen'", "belongs in [acquisition]"}},
        {"unknown key in a unit", "[units]\nlist = [\n  { id = 1, channels = 2 },\n  { id = 2, chanels = 2 },\n]\n", 4,
         {"unknown key 'units.list[1].chanels'", "did you mean 'units.list[1].channels'?"}},
        {"wrong type", "# comment\n\n[acquisition]\nbatch = \"64\"\n", 4,
         {"acquisition.batch must be an integer, got string"}},
        {"float for an integer", "[assembly]\nreorder_frames = 8.0\n", 2,
         {"assembly.reorder_frames must be an integer, got float"}},
        {"wrong type of a bool", "[acquisition]\ngro = 1\n", 2, {"acquisition.gro must be true or false, got integer"}},
        {"wrong type of a string", "[log]\nlevel = 3\n", 2, {"log.level must be a string, got integer"}},
        {"section not a table", "\nassembly = 5\n", 2, {"assembly must be a table", "got integer"}},
        {"frame buffer larger than the address space allows", "[assembly]\nmax_frame_bytes = 16777216\npool_blocks = 1048576\n", 3,
         {"assembly.pool_blocks (1048576) x 16777216 bytes a block", "exceeds the 256 GiB limit"}},
        {"max_frame_jump of 0", "[assembly]\nmax_frame_jump = 0\n", 2, {"assembly.max_frame_jump"}},
        {"restart_packets of 1", "[assembly]\nrestart_packets = 1\n", 2, {"assembly.restart_packets"}},
        {"max_learned beyond the unit ids", "[units]\nmax_learned = 70000\n", 2, {"units.max_learned"}},
        {"ring_slots not a power of two", "[acquisition]\n\n\n\n\n\nring_slots = 1000\n", 7,
         {"acquisition.ring_slots must be a power of two between 64 and 16777216, got 1000"}},
        {"ring_slots too small", "[acquisition]\nring_slots = 32\n", 2, {"acquisition.ring_slots", "got 32"}},
        {"hostname without port", "[acquisition]\nlisten = [\n  \"127.0.0.1:4660\",\n  \"localhost\",\n]\n", 4,
         {"acquisition.listen[1]: 'localhost' is not HOST:PORT"}},
        {"hostname with port", "[acquisition]\nlisten = [\"localhost:4660\"]\n", 2,
         {"acquisition.listen[0]: 'localhost:4660' is not HOST:PORT", "not a numeric IPv4 address"}},
        {"IPv6 without brackets", "[acquisition]\nlisten = [\"::1:4660\"]\n", 2,
         {"acquisition.listen[0]", "brackets"}},
        {"port 0", "[acquisition]\nlisten = [\"127.0.0.1:0\"]\n", 2, {"acquisition.listen[0]", "between 1 and 65535"}},
        {"port too large", "[acquisition]\nlisten = [\"[::]:65536\"]\n", 2,
         {"acquisition.listen[0]", "between 1 and 65535"}},
        {"listen not strings", "[acquisition]\nlisten = [4660]\n", 2,
         {"acquisition.listen[0] must be a string", "got integer"}},
        {"listen empty", "[acquisition]\nbatch = 8\nlisten = []\n", 3, {"acquisition.listen is empty"}},
        {"listen duplicate", "[acquisition]\nlisten = [\"[::1]:5\", \"[0:0::1]:5\"]\n", 2,
         {"acquisition.listen[1]", "listed twice"}},
        {"backend", "[acquisition]\nbackend = \"epoll\"\n", 2,
         {"acquisition.backend must be 'auto', 'io_uring' or 'recvmmsg', got 'epoll'"}},
        {"duplicate unit ids", "[units]\nlist = [\n  { id = 3, channels = 10 },\n  { id = 3, channels = 20 },\n]\n", 4,
         {"units.list[1].id", "unit 3 is listed twice"}},
        {"unit id too large", "[units]\nlist = [ { id = 65536, channels = 10 } ]\n", 2,
         {"units.list[0].id must be between 0 and 65535, got 65536"}},
        {"channels zero", "[units]\nlist = [ { id = 1, channels = 0 } ]\n", 2,
         {"units.list[0].channels must be between 1 and 8388608, got 0"}},
        {"channels too many", "[units]\nlist = [ { id = 1, channels = 8388609 } ]\n", 2,
         {"units.list[0].channels must be between 1 and 8388608, got 8388609"}},
        {"unit missing channels", "[units]\nlist = [\n  { id = 1 },\n]\n", 3, {"units.list[0] needs 'channels'"}},
        {"max_datagram_bytes too small", "[acquisition]\nmax_datagram_bytes = 41\n", 2,
         {"acquisition.max_datagram_bytes must be between 42 and 65535, got 41"}},
        {"max_datagram_bytes too large", "[acquisition]\nmax_datagram_bytes = 65536\n", 2,
         {"acquisition.max_datagram_bytes must be between 42 and 65535, got 65536"}},
        {"batch zero", "[acquisition]\nbatch = 0\n", 2, {"acquisition.batch must be between 1 and 1024, got 0"}},
        {"batch too large", "[acquisition]\nbatch = 1025\n", 2, {"acquisition.batch must be between 1 and 1024"}},
        {"negative", "[acquisition]\nbatch = -5\n", 2, {"acquisition.batch must be between 1 and 1024, got -5"}},
        {"reorder_frames", "[assembly]\nreorder_frames = 4097\n", 2,
         {"assembly.reorder_frames must be between 1 and 4096, got 4097"}},
        {"reorder_timeout_ms", "[assembly]\nreorder_timeout_ms = 0\n", 2,
         {"assembly.reorder_timeout_ms must be between 1 and 60000, got 0"}},
        {"pool_blocks", "[assembly]\npool_blocks = 3\n", 2, {"assembly.pool_blocks", "got 3"}},
        {"more shards than links", "[acquisition]\nshards = 2\n", 2,
         {"acquisition.shards (2) must be at most the number of links in acquisition.listen (1)"}},
        {"pool_frames is gone", "[assembly]\npool_frames = 4096\n", 2,
         {"assembly.pool_frames is gone", "assembly.buffer_seconds"}},
        {"buffer_seconds too short", "[assembly]\nbuffer_seconds = 0.01\n", 2,
         {"assembly.buffer_seconds must be between 0.05 and 600 seconds, got 0.01"}},
        {"buffer_max_bytes too small", "[assembly]\nbuffer_max_bytes = \"1MiB\"\n", 2, {"assembly.buffer_max_bytes"}},
        {"max_frame_bytes odd", "[assembly]\nmax_frame_bytes = 1001\n", 2,
         {"assembly.max_frame_bytes must be an even number between 2 and 16777216, got 1001"}},
        {"max_frame_bytes too large", "[assembly]\nmax_frame_bytes = \"32MiB\"\n", 2,
         {"assembly.max_frame_bytes must be an even number between 2 and 16777216, got 33554432"}},
        {"flush_interval_ms", "[storage]\nflush_interval_ms = 9\n", 2,
         {"storage.flush_interval_ms must be between 10 and 600000, got 9"}},
        {"rotate_bytes tiny", "[storage]\nrotate_bytes = 2\n", 2,
         {"storage.rotate_bytes must be 0 (off) or at least 65536, got 2"}},
        {"bad size string", "[storage]\nchunk_bytes = \"4 megs\"\n", 2,
         {"storage.chunk_bytes: '4 megs' is not a size"}},
        {"size string type", "[storage]\nchunk_bytes = true\n", 2,
         {"storage.chunk_bytes must be an integer or a size string, got boolean"}},
        {"log level", "[log]\nlevel = \"verbose\"\n", 2, {"log.level must be", "'warn'", "got 'verbose'"}},
        {"writeback", "[storage]\nflush_interval_ms = 500\nwriteback = \"direct\"\n", 3,
         {"storage.writeback must be 'paced' or 'kernel', got 'direct'"}},
        {"ring name", "[acquisition]\nring_name = \"a/b\"\n", 2, {"acquisition.ring_name", "got 'a/b'"}},
        {"no units accepted", "[units]\nlearn = false\n", 2, {"units.learn = false", "no units would be accepted"}},
        {"no units accepted, empty list", "[units]\nlist = []\nlearn = false\n", 3, {"no units would be accepted"}},
        {"unit frame larger than max_frame_bytes",
         "[assembly]\nmax_frame_bytes = 8192\n[units]\nlist = [\n  { id = 1, channels = 4096 },\n  { id = 2, channels = "
         "4097 },\n]\n",
         6, {"units.list[1].channels", "assembly.max_frame_bytes", "8194"}},
        {"gro needs 65535", "[acquisition]\ngro = true\n", 2, {"acquisition.gro", "acquisition.max_datagram_bytes"}},
        {"expected larger than max", "[acquisition]\nmax_datagram_bytes = 1000\n", 2,
         {"acquisition.expected_datagram_bytes (1472)", "acquisition.max_datagram_bytes (1000)"}},
        {"batch larger than ring", "[acquisition]\nring_slots = 64\nbatch = 128\n", 3,
         {"acquisition.batch (128)", "acquisition.ring_slots (64)"}},
        {"socket buffer too large", "[acquisition]\nsocket_buffer_datagrams = 16777216\n", 2,
         {"acquisition.socket_buffer_datagrams", "1 GiB"}},
        {"pool_blocks fewer than the listed units fill", "[assembly]\npool_blocks = 5\n[units]\nlist = [\n  { id = 1, channels = 8 },\n  { id = 2, channels = 8 },\n]\n", 2,
         {"assembly.pool_blocks (5)", "2 x listed units + 2 (6)"}},
        {"TOML syntax error", "[acquisition]\nbatch = 64\nlisten = [\"127.0.0.1:4660\"\n\n[units]\n", 5,
         {"TOML syntax error"}},
        {"TOML duplicate key", "[log]\nlevel = \"info\"\nlevel = \"warn\"\n", 3, {"TOML syntax error"}},
    };
    for (const auto& c : cases) {
        INFO(c.what);
        const std::string message = error_of(c.toml);
        INFO(message);
        REQUIRE_FALSE(message.empty());
        CHECK_THAT(message, StartsWith("config.toml:" + std::to_string(c.line) + ":"));
        for (const auto& fragment : c.fragments) CHECK_THAT(message, Contains(fragment));
    }
}

TEST_CASE("a TOML syntax error names line and column", "[config]") {
    const std::string message = error_of("[log]\nlevel = \"info\n");
    CHECK_THAT(message, StartsWith("config.toml:2:"));
    CHECK_THAT(message, Contains("TOML syntax error"));
}

TEST_CASE("load_file names the path of a missing or broken file", "[config]") {
    const auto missing = temp_path("does_not_exist.toml");
    std::filesystem::remove(missing);
    try {
        (void)load_file(missing);
        FAIL("no error");
    } catch (const config_error& e) {
        CHECK_THAT(e.what(), Contains(missing.string()));
        CHECK_THAT(e.what(), Contains("No such file"));
    }

    const auto broken = temp_path("broken.toml");
    {
        std::ofstream out(broken);
        out << "[assembly]\n\nreorder_frames = 0\n";
    }
    try {
        (void)load_file(broken);
        FAIL("no error");
    } catch (const config_error& e) {
        CHECK_THAT(e.what(), StartsWith(broken.string() + ":3: assembly.reorder_frames"));
    }
    std::filesystem::remove(broken);
}

TEST_CASE("load_file sets source and text", "[config]") {
    const auto path = temp_path("ok.toml");
    {
        std::ofstream out(path);
        out << "# a comment that is not kept\n[log]\nlevel = \"warn\"\n";
    }
    const config c = load_file(path);
    std::filesystem::remove(path);
    CHECK(c.source == path.string());
    CHECK(c.log.level == "warn");
    CHECK(c.text == to_toml(c));
    CHECK_THAT(c.text, !Contains("a comment"));
}

TEST_CASE("validate() checks configs built in code", "[config]") {
    config c;
    c.source = "built";
    CHECK_NOTHROW(c.validate());

    c.units.units = {{1, 40000}};
    try {
        c.validate();
        FAIL("no error");
    } catch (const config_error& e) {
        CHECK_THAT(e.what(), StartsWith("built: units.list[0].channels"));
        CHECK_THAT(e.what(), Contains("assembly.max_frame_bytes"));
    }

    c = config{};
    c.acquisition.listen = {{"localhost", 4660}};
    CHECK_THROWS_WITH(c.validate(), Contains("acquisition.listen[0]") && Contains("localhost"));

    c = config{};
    c.acquisition.ring_slots = 100;
    CHECK_THROWS_WITH(c.validate(), Contains("acquisition.ring_slots must be a power of two"));

    c = config{};
    c.acquisition.listen.clear();
    CHECK_THROWS_WITH(c.validate(), Contains("acquisition.listen is empty"));

    c = config{};
    c.log.level = "loud";
    CHECK_THROWS_WITH(c.validate(), Contains("log.level"));
}

TEST_CASE("endpoint parse and to_string", "[config]") {
    CHECK(endpoint::parse("127.0.0.1:4660", "x") == endpoint{"127.0.0.1", 4660});
    CHECK(endpoint::parse("0.0.0.0:1", "x") == endpoint{"0.0.0.0", 1});
    CHECK(endpoint::parse("[::1]:4660", "x") == endpoint{"::1", 4660});
    CHECK(endpoint::parse("[::]:4660", "x") == endpoint{"::", 4660});
    CHECK(endpoint::parse("[0:0:0:0:0:0:0:1]:65535", "x") == endpoint{"::1", 65535});  // canonical form
    for (const char* text : {"127.0.0.1:4660", "0.0.0.0:1", "[::1]:4660", "[::]:4660", "[fe80::1:2]:9"})
        CHECK(endpoint::parse(text, "x").to_string() == text);

    CHECK_THROWS_WITH(endpoint::parse("localhost", "--listen"),
                      StartsWith("--listen: 'localhost' is not HOST:PORT"));
    CHECK_THROWS_WITH(endpoint::parse("example.com:80", "w"), Contains("not a numeric IPv4 address"));
    for (const char* bad : {"", ":4660", "127.0.0.1:", "127.0.0.1:x", "127.0.0.1:+80", "127.0.0.1:000000",
                            "127.0.0.1:65536", "256.0.0.1:80", "[::1]4660", "[::1:4660", "[127.0.0.1]:80", "::1:80",
                            "[]:80", "1.2.3:80"})
        CHECK_THROWS_AS(endpoint::parse(bad, "w"), config_error);
}

TEST_CASE("receiver backend names", "[config]") {
    CHECK(name(receiver_backend::automatic) == "auto");
    CHECK(name(receiver_backend::io_uring) == "io_uring");
    CHECK(name(receiver_backend::recvmmsg) == "recvmmsg");
    for (auto b : {receiver_backend::automatic, receiver_backend::io_uring, receiver_backend::recvmmsg}) {
        const config c = load_string("[acquisition]\nbackend = \"" + std::string(name(b)) + "\"\n", "t.toml");
        CHECK(c.acquisition.backend == b);
    }
}

TEST_CASE("storage.compression: none by default, bslz4 on request, nothing else (no zstd)", "[config]") {
    CHECK(config{}.storage.compression == "none");
    CHECK(config{}.storage.compress_threads == 0);
    const auto c = load_string("[storage]\ncompression = \"bslz4\"\ncompress_threads = 2\n", "t.toml");
    CHECK(c.storage.compression == "bslz4");
    CHECK(c.storage.compress_threads == 2);
    CHECK_THAT(error_of("[storage]\ncompression = \"zstd\"\n"),
               Contains("storage.compression must be 'none' or 'bslz4', got 'zstd'"));
    CHECK_THAT(error_of("[storage]\ncompress_threads = 65\n"), Contains("storage.compress_threads"));
}

TEST_CASE("storage.writeback: paced by default, kernel on request, nothing else", "[config]") {
    CHECK(config{}.storage.writeback == "paced");
    CHECK(load_string("[storage]\nwriteback = \"kernel\"\n", "t.toml").storage.writeback == "kernel");
    CHECK(load_string("[storage]\nwriteback = \"paced\"\n", "t.toml").storage.writeback == "paced");
    const std::string message = error_of("[storage]\nwriteback = \"Paced\"\n");
    CHECK_THAT(message, StartsWith("config.toml:2:"));
    CHECK_THAT(message, Contains("storage.writeback must be 'paced' or 'kernel', got 'Paced'"));
}

namespace {

// Every key away from its default, in two configs (http.token and
// http.token_file exclude each other): every_key_changed(0) and (1).
config every_key_changed(int variant) {
    config c = everything_changed();
    c.units.max_learned = 0;
    c.units.learned_idle_s = 1;
    c.units.relearn_quiet = std::chrono::milliseconds(3600000);
    c.assembly.max_frame_jump = 1ull << 40;
    c.assembly.restart_packets = 2;
    c.storage.reserve_bytes = 0;
    c.storage.writeback = "kernel";
    c.storage.compression = "bslz4";
    c.storage.compress_threads = 3;
    c.storage.run_name_pattern = "beam-{}.x";
    c.processing.stages = {"calibrate", "dose", "live"};
    c.processing.backend = "cpu";
    c.processing.calibration_file = "/data/ped 1.calib.h5";
    c.processing.threshold = -0.25;
    c.processing.threshold_mode = "absolute";
    c.processing.batch_frames = 4096;
    c.processing.live_interval = std::chrono::milliseconds(60000);
    c.http.listen = "[::]:9443";
    c.stream.listen = {"tcp://0.0.0.0:5555", "ipc:///run/daqd/stream"};
    c.stream.publish = {"tcp://[::]:5600"};
    c.stream.send_hwm = 100000;
    c.stream.queue_chunks = 1;
    c.stream.preview_rate = 0.5;
    c.stream.curve_secret_key_file = "/etc/daqd/stream.key";
    c.stream.curve_client_keys_file = "/etc/daqd/consumers";
    c.stream.linger_ms = 0;
    // CPU 0 is on every machine.
    c.threads.receiver_cpus = "0";
    c.threads.assembler_cpus = "0-0";
    c.threads.processor_cpus = "0,0";
    c.threads.writer_cpus = "0";
    c.threads.http_cpus = "0";
    c.threads.combine_receive_assembly = variant == 0 ? "on" : "off";
    if (variant == 0)
        c.http.token = "0123456789abcdef-token";
    else
        c.http.token_file = "/etc/daqd/token";
    return c;
}

// The lines of a config_error's message.
std::vector<std::string> messages_of(std::string_view text) {
    std::vector<std::string> lines;
    const std::string all = error_of(text);
    for (std::size_t at = 0; at < all.size();) {
        const std::size_t end = std::min(all.find('\n', at), all.size());
        lines.push_back(all.substr(at, end - at));
        at = end + 1;
    }
    return lines;
}

}  // namespace

TEST_CASE("the key table: every key, set away from its default, round-trips through to_toml", "[config]") {
    const config defaults;
    const auto table = keys();
    REQUIRE(table.size() >= 38);
    std::set<std::string_view> changed;
    for (int variant : {0, 1}) {
        config c = every_key_changed(variant);
        REQUIRE_NOTHROW(c.validate());
        const std::string text = to_toml(c);
        const config loaded = load_string(text, c.source);
        c.text = to_toml(c, true);
        CHECK(loaded == c);
        for (const auto& k : table) {
            INFO(k.name);
            CHECK(value_toml(loaded, k.name) == value_toml(c, k.name));
            if (value_toml(c, k.name) != value_toml(defaults, k.name)) changed.insert(k.name);
        }
    }
    // A new key needs a changed value in every_key_changed().
    for (const auto& k : table) {
        INFO(k.name);
        CHECK(changed.contains(k.name));
    }
}

TEST_CASE("storage.run_name_pattern: names with an increasing number, and the patterns refused", "[config]") {
    const auto p = parse_run_name_pattern("run_{:05d}");
    REQUIRE(p);
    CHECK(p->name(7) == "run_00007");
    CHECK(p->name(123456) == "run_123456");
    CHECK(p->number_of("run_00007") == 7u);
    CHECK(p->number_of("run_123456") == 123456u);
    CHECK_FALSE(p->number_of("run_7"));         // not what the pattern makes
    CHECK_FALSE(p->number_of("run_0000x"));
    CHECK_FALSE(p->number_of("beam01"));
    const auto q = parse_run_name_pattern("beam-{}.x");
    REQUIRE(q);
    CHECK(q->name(12) == "beam-12.x");
    CHECK(q->number_of("beam-12.x") == 12u);
    CHECK_FALSE(q->number_of("beam-012.x"));
    for (const char* bad : {"run", "run_{", "run_{}_{}", "run_{:5d}", "run_{:x}", "run {}", ".run{}", "r/{}",
                            "run_{:021d}"}) {
        INFO(bad);
        std::string why;
        CHECK_FALSE(parse_run_name_pattern(bad, &why));
        CHECK_FALSE(why.empty());
    }
    CHECK_THAT(error_of("[storage]\nrun_name_pattern = \"run\"\n"),
               Contains("2: storage.run_name_pattern = 'run': no number placeholder"));
    CHECK(load_default().storage.run_name_pattern == "run_{:05d}");
}

TEST_CASE("the key table: each key's comment and rule are above it in the rendered file", "[config]") {
    const std::string text(default_toml());
    std::set<std::string_view> names;
    for (const auto& k : keys()) {
        INFO(k.name);
        CHECK(names.insert(k.name).second);
        CHECK_FALSE(k.doc.empty());
        const std::string section(k.name.substr(0, k.name.find('.')));
        const std::string key_line(std::string(k.name.substr(k.name.find('.') + 1)) + " = " +
                                   value_toml(config{}, k.name) + "\n");
        const std::size_t at = text.find("\n" + key_line, text.find("\n[" + section + "]\n"));
        REQUIRE(at != std::string::npos);
        // The doc's first line opens the comment lines right above the key.
        const std::string first = "\n# " + std::string(k.doc.substr(0, std::min<std::size_t>(k.doc.find('\n'), 40)));
        const std::size_t doc_at = text.rfind(first, at);
        REQUIRE(doc_at != std::string::npos);
        for (std::size_t nl = doc_at; nl < at; nl = text.find('\n', nl + 1)) CHECK(text[nl + 1] == '#');
    }
    CHECK_THAT(text, Contains("# Allowed: power of two, 64..16777216\nring_slots = 16384\n"));
    CHECK_THAT(text, Contains("# Allowed: \"auto\", \"io_uring\", \"recvmmsg\"\nbackend = \"auto\"\n"));
}

TEST_CASE("every mistake in a file is reported, each with its line", "[config]") {
    const auto messages = messages_of(R"([acquisition]
batch = 64
bakend = "auto"

[assembly]
reorder_frames = "many"
max_frame_bytes = 1001

[storage]
flush_interval_ms = 5
[units]
learn = false
)");
    REQUIRE(messages.size() == 5);
    CHECK_THAT(messages[0], StartsWith("config.toml:3: unknown key 'acquisition.bakend'"));
    CHECK_THAT(messages[1], StartsWith("config.toml:6: assembly.reorder_frames must be an integer, got string"));
    CHECK_THAT(messages[2], StartsWith("config.toml:7: assembly.max_frame_bytes must be an even number"));
    CHECK_THAT(messages[3], StartsWith("config.toml:10: storage.flush_interval_ms must be between 10 and 600000"));
    CHECK_THAT(messages[4], StartsWith("config.toml:12: units.learn = false and units.list is empty"));

    // A rule across keys is left out when one of its keys is wrong itself:
    // the frame pool is not measured with a max_frame_bytes already refused.
    const auto one = messages_of("[assembly]\npool_blocks = 1048576\nmax_frame_bytes = 16777217\n");
    REQUIRE(one.size() == 1);
    CHECK_THAT(one[0], StartsWith("config.toml:3: assembly.max_frame_bytes"));

    // validate() reports every mistake of a config built in code.
    config c;
    c.source = "built";
    c.acquisition.batch = 0;
    c.log.level = "loud";
    c.processing.stages = {"dose"};
    try {
        c.validate();
        FAIL("no error");
    } catch (const config_error& e) {
        const std::string what = e.what();
        CHECK(std::count(what.begin(), what.end(), '\n') == 2);
        CHECK_THAT(what, Contains("built: acquisition.batch must be between 1 and 1024, got 0"));
        CHECK_THAT(what, Contains("built: processing.stages: 'dose' needs 'calibrate' before it"));
        CHECK_THAT(what, Contains("built: log.level must be"));
    }
}

TEST_CASE("set_key reads command-line text through the key table", "[config]") {
    config c;
    set_key(c, "acquisition.backend", "io_uring", "--backend");
    CHECK(c.acquisition.backend == receiver_backend::io_uring);
    set_key(c, "http.listen", "", "--http");
    CHECK_FALSE(c.http.enabled());
    CHECK_THROWS_WITH(set_key(c, "acquisition.backend", "epoll", "--backend"),
                      "--backend: acquisition.backend must be 'auto', 'io_uring' or 'recvmmsg', got 'epoll'");
    CHECK(c.acquisition.backend == receiver_backend::io_uring);  // unchanged
    CHECK_THROWS_WITH(set_key(c, "log.level", "loud", "--log-level"), StartsWith("--log-level: log.level must be"));
    CHECK_THROWS_WITH(set_key(c, "http.listen", "localhost:80", "--http"),
                      StartsWith("--http: http.listen: 'localhost:80' is not HOST:PORT"));
    CHECK_THROWS_AS(set_key(c, "no.such_key", "x", "--x"), config_error);
}

TEST_CASE("the stage order rule", "[config]") {
    CHECK(stage_order_error({}).empty());
    CHECK(stage_order_error({"calibrate", "dose", "live"}).empty());
    CHECK(stage_order_error({"live"}).empty());
    CHECK_THAT(stage_order_error({"live", "calibrate"}), Contains("out of order"));
    CHECK_THAT(stage_order_error({"calibrate", "smooth"}), Contains("unknown stage 'smooth'"));
    CHECK_THAT(stage_order_error({"dose"}), Contains("'dose' needs 'calibrate'"));
}

TEST_CASE("docs/CONFIG.md lists every key of the table with its default and rule", "[config]") {
    // Rows of the "| key | default | range | meaning |" tables, under
    // "## `[section]`" headings: "section.key" -> {default, range}.
    std::vector<std::pair<std::string, std::pair<std::string, std::string>>> rows;
    std::istringstream doc(read_text(DAQD_CONFIG_DOC));
    std::string section;
    bool in_table = false;
    for (std::string line; std::getline(doc, line);) {
        if (line.rfind("## `[", 0) == 0) section = line.substr(5, line.find(']') - 5);
        if (line == "| key | default | range | meaning |") {
            in_table = true;
            continue;
        }
        if (!in_table) continue;
        if (line.rfind("|", 0) != 0) {
            in_table = false;
            continue;
        }
        if (line.rfind("|---", 0) == 0) continue;
        std::vector<std::string> cells;
        for (std::size_t at = 1; at < line.size();) {
            const std::size_t end = line.find(" |", at);
            if (end == std::string::npos) break;
            std::string cell = line.substr(at, end - at);
            cells.push_back(cell.substr(cell.find_first_not_of(' ')));
            at = end + 2;
        }
        REQUIRE(cells.size() == 4);
        REQUIRE(cells[0].size() > 2);
        rows.push_back({section + "." + cells[0].substr(1, cells[0].size() - 2), {cells[1], cells[2]}});
    }
    const auto table = keys();
    REQUIRE(rows.size() == table.size());
    for (std::size_t i = 0; i < table.size(); ++i) {
        INFO(table[i].name);
        CHECK(rows[i].first == table[i].name);
        CHECK(rows[i].second.first == "`" + value_toml(config{}, table[i].name) + "`");
        CHECK_THAT(rows[i].second.second, StartsWith(table[i].rule));
    }
}

TEST_CASE("[threads]: CPU lists and combine_receive_assembly are read, checked against this machine and named with "
          "their line when wrong",
          "[config]") {
    SECTION("the defaults: nothing pinned, auto") {
        const config c = load_default();
        CHECK(c.threads == threads_config{});
        CHECK(c.threads.receiver_cpus.empty());
        CHECK(c.threads.combine_receive_assembly == "auto");
    }
    SECTION("good values") {
        const config c = load_string(R"([threads]
receiver_cpus = "0"
writer_cpus = "0-0"
http_cpus = "0,0"
combine_receive_assembly = "off"
)",
                                     "t.toml");
        CHECK(c.threads.receiver_cpus == "0");
        CHECK(c.threads.writer_cpus == "0-0");
        CHECK(c.threads.assembler_cpus.empty());
        CHECK(c.threads.combine_receive_assembly == "off");
    }
    SECTION("a list that is not one") {
        for (const char* bad : {"x", "1,,2", "2-1", "-1", "3-", "1 ,2", "0,", "99999999"}) {
            INFO(bad);
            CHECK_THAT(error_of(std::string("[threads]\n\nassembler_cpus = \"") + bad + "\"\n"),
                       StartsWith(std::string("config.toml:3: threads.assembler_cpus = \"") + bad +
                                  "\" is not a CPU list (") &&
                           Contains("\"0,4-5\""));
        }
        CHECK_THAT(error_of("[threads]\nwriter_cpus = \"2-1\"\n"),
                   Contains("config.toml:2: threads.writer_cpus = \"2-1\" is not a CPU list (the range '2-1' goes down)"));
        CHECK_THAT(error_of("[threads]\nwriter_cpus = 2\n"),
                   Contains("config.toml:2: threads.writer_cpus must be a string, got integer"));
    }
    SECTION("a CPU this machine does not have") {
        const auto online = online_cpus();
        REQUIRE_FALSE(online.empty());
        CHECK(online.front() == 0);
        const unsigned missing = online.back() + 1;
        const std::string text = "[threads]\nreceiver_cpus = \"0," + std::to_string(missing) + "\"\n";
        CHECK_THAT(error_of(text), StartsWith("config.toml:2: threads.receiver_cpus = \"0," + std::to_string(missing) +
                                              "\": this machine has no CPU " + std::to_string(missing) +
                                              " (its CPUs are 0"));
    }
    SECTION("combine_receive_assembly is one of auto, on, off") {
        CHECK(error_of("[threads]\ncombine_receive_assembly = \"yes\"\n") ==
              "config.toml:2: threads.combine_receive_assembly must be 'auto', 'on' or 'off', got 'yes'");
    }
    SECTION("a configuration built in code is checked too") {
        config c;
        c.threads.processor_cpus = "a-b";
        CHECK_THROWS_WITH(c.validate(), Contains("threads.processor_cpus = \"a-b\" is not a CPU list"));
    }
}

TEST_CASE("parse_cpu_list reads what taskset writes", "[config]") {
    using v = std::vector<unsigned>;
    CHECK(parse_cpu_list("") == v{});
    CHECK(parse_cpu_list("2") == v{2});
    CHECK(parse_cpu_list("2-3") == v{2, 3});
    CHECK(parse_cpu_list("0,4-5") == v{0, 4, 5});
    CHECK(parse_cpu_list("5,0-1,1") == v{0, 1, 5});
    std::string why;
    CHECK_FALSE(parse_cpu_list("0-", &why));
    CHECK_THAT(why, Contains("'0-' is not a CPU number"));
    CHECK_FALSE(parse_cpu_list("65536", &why));
}

TEST_CASE("choose_combine: on and off as set, auto by the CPUs daqd may use", "[config]") {
    threads_config t;
    CHECK(choose_combine(t, 1).combined);
    CHECK(choose_combine(t, 2).combined);
    CHECK_FALSE(choose_combine(t, 3).combined);
    CHECK_THAT(choose_combine(t, 2).why, Contains("\"auto\"") && Contains("2 CPU(s), at most 2"));
    CHECK_THAT(choose_combine(t, 16).why, Contains("16 CPUs, more than 2"));
    t.combine_receive_assembly = "on";
    CHECK(choose_combine(t, 64).combined);
    t.combine_receive_assembly = "off";
    CHECK_FALSE(choose_combine(t, 1).combined);
    CHECK(choose_combine(t, 1).why == "threads.combine_receive_assembly = \"off\"");
}

TEST_CASE("stream: endpoints, loopback without keys, CURVE off loopback", "[config][stream]") {
    SECTION("off by default; one endpoint as a string or a list") {
        CHECK_FALSE(config{}.stream.enabled());
        const auto one = load_string("[stream]\nlisten = \"tcp://127.0.0.1:5555\"\n", "a.toml");
        CHECK(one.stream.listen == std::vector<std::string>{"tcp://127.0.0.1:5555"});
        const auto two = load_string("[stream]\nlisten = [\"tcp://127.0.0.1:5555\", \"ipc:///tmp/d\"]\n", "a.toml");
        CHECK(two.stream.listen.size() == 2);
        CHECK(two.stream.enabled());
    }
    SECTION("off loopback needs a CURVE key") {
        const auto e = error_of("[stream]\nlisten = \"tcp://0.0.0.0:5555\"\n");
        CHECK(e.find("stream.curve_secret_key_file") != std::string::npos);
        CHECK(e.find("not on loopback") != std::string::npos);
        CHECK_NOTHROW(load_string("[stream]\nlisten = \"tcp://0.0.0.0:5555\"\ncurve_secret_key_file = \"/k\"\n",
                                  "a.toml"));
        // A publish endpoint off loopback too.
        CHECK(error_of("[stream]\nlisten = \"tcp://127.0.0.1:5555\"\npublish = [\"tcp://10.0.0.1:5556\"]\n")
                  .find("10.0.0.1") != std::string::npos);
    }
    SECTION("bad endpoints and combinations") {
        CHECK(error_of("[stream]\nlisten = \"udp://127.0.0.1:5555\"\n").find("tcp://HOST:PORT") != std::string::npos);
        CHECK(error_of("[stream]\nlisten = \"tcp://localhost:5555\"\n").find("stream.listen[0]") != std::string::npos);
        CHECK(error_of("[stream]\nlisten = \"tcp://127.0.0.1:99999\"\n").find("port") != std::string::npos);
        CHECK(error_of("[stream]\npublish = [\"tcp://127.0.0.1:5556\"]\n").find("needs stream.listen") !=
              std::string::npos);
        CHECK(error_of("[stream]\nlisten = \"tcp://127.0.0.1:5555\"\ncurve_client_keys_file = \"/c\"\n")
                  .find("needs stream.curve_secret_key_file") != std::string::npos);
        CHECK(error_of("[stream]\nlisten = \"tcp://127.0.0.1:5555\"\npreview_rate = -1.0\n")
                  .find("stream.preview_rate") != std::string::npos);
    }
}
