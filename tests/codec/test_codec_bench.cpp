// daq-codec-bench (tools/bench/codec_bench.cpp) as a subprocess, briefly: it
// exits 0 and reports every kind, as a table and as JSON (with the codec
// called both ways, so both round trips are checked by the tool); an unknown
// kind is a usage error. The figures are not checked (a shared machine).
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <sys/wait.h>

#include <cstdio>
#include <string>
#include <vector>

namespace {

const std::vector<std::string> kinds{"pattern",      "detector",     "beam",           "calibrated", "calibrated-beam",
                                     "frame_number", "timestamp_ns", "missing_packets"};

struct command_result {
    int exit_code = -1;
    std::string out;  // stdout
};

command_result run_bench(const std::string& args) {
    command_result r;
    std::FILE* p = ::popen((std::string("'") + DAQ_CODEC_BENCH + "' " + args).c_str(), "r");
    REQUIRE(p != nullptr);
    char buf[4096];
    std::size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
    const int status = ::pclose(p);
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return r;
}

}  // namespace

TEST_CASE("daq-codec-bench: a short run prints a table row and a partial-chunk row for every kind", "[codec][bench]") {
    const auto r = run_bench("--seconds 0.05 --chunks 4");
    INFO(r.out);
    REQUIRE(r.exit_code == 0);
    const auto partial = r.out.find("partial last chunk");
    REQUIRE(partial != std::string::npos);
    for (const auto& k : kinds) {
        INFO(k);
        const auto row = r.out.find("\n" + k + " ");
        CHECK(row < partial);                                                   // the table
        CHECK(r.out.find("\n" + k + " ", partial) != std::string::npos);       // the partial chunk
    }
}

TEST_CASE("daq-codec-bench --json --specialised: every kind with its figures", "[codec][bench]") {
    const auto r = run_bench("--seconds 0.05 --chunks 4 --json --specialised");
    INFO(r.out);
    REQUIRE(r.exit_code == 0);
    const auto j = nlohmann::json::parse(r.out);
    CHECK(j["codec_call"] == "specialised");
    REQUIRE(j["kinds"].size() == kinds.size());
    for (std::size_t i = 0; i < kinds.size(); ++i) {
        const auto& k = j["kinds"][i];
        INFO(kinds[i]);
        CHECK(k["kind"] == kinds[i]);
        CHECK(k["ratio"].get<double>() > 0);
        CHECK(k["compress_gbps"].get<double>() > 0);
        CHECK(k["decompress_gbps"].get<double>() > 0);
        CHECK(k["memcpy_gbps"].get<double>() > 0);
        CHECK(k["partial"]["ms_per_chunk"].get<double>() > 0);
    }
}

TEST_CASE("daq-codec-bench: an unknown kind is a usage error", "[codec][bench]") {
    const auto r = run_bench("--kinds detector,nonsense 2>/dev/null");
    CHECK(r.exit_code == 1);
    CHECK(r.out.empty());
}
