// run_catalog's helper reader (run_catalog.hpp): each file read by a child
// process with a deadline. The "helper" here is a shell script standing in
// for `daqd --read-run-file FILE`: it answers, hangs or crashes by file name.
#include "daqd/storage/run_catalog.hpp"

#include <catch2/catch.hpp>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>

namespace fs = std::filesystem;
using daqd::storage::run_catalog;
using namespace std::chrono_literals;

namespace {

struct helper_dir {
    fs::path path;
    helper_dir() {
        path = fs::temp_directory_path() / ("daqd-catalog-" + std::to_string(::getpid()));
        fs::remove_all(path);
        fs::create_directories(path / "runs");
        const auto script = path / "helper.sh";
        std::ofstream(script) << "#!/bin/sh\n"
                                 "[ \"$1\" = --read-run-file ] || exit 9\n"
                                 "case \"$2\" in\n"
                                 "  *hang.h5) exec sleep 30 ;;\n"
                                 "  *crash.h5) kill -SEGV $$ ;;\n"
                                 "  *silent.h5) exit 3 ;;\n"
                                 "esac\n"
                                 "echo '{\"read\": true, \"error\": \"\", \"format\": \"daq1-run\", \"run_name\": \"good\","
                                 " \"frames\": 42, \"started_at\": \"2026-01-01T00:00:00.000Z\", \"stopped_at\": "
                                 "\"2026-01-01T00:01:00.000Z\"}'\n";
        ::chmod(script.c_str(), 0755);
        for (const char* f : {"good.h5", "hang.h5", "crash.h5", "silent.h5"}) std::ofstream(path / "runs" / f) << "x";
    }
    ~helper_dir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
};

}  // namespace

TEST_CASE("run_catalog helper reader: answers parsed, a hanging helper killed at the deadline, a crash reported",
          "[web][catalog]") {
    helper_dir d;
    const auto reader = run_catalog::helper_reader(d.path / "helper.sh", 500ms);
    const auto t0 = std::chrono::steady_clock::now();
    const auto got = reader({d.path / "runs/good.h5", d.path / "runs/hang.h5", d.path / "runs/crash.h5",
                             d.path / "runs/silent.h5"});
    const auto took = std::chrono::steady_clock::now() - t0;
    REQUIRE(got.size() == 4);
    CHECK(took < 3s);  // the hanging helper did not hold the list up past its deadline (and some)
    CHECK(got[0].read);
    CHECK(got[0].frames == 42);
    CHECK(got[0].run_name == "good");
    CHECK(got[0].stopped_at == "2026-01-01T00:01:00.000Z");
    CHECK_FALSE(got[1].read);
    CHECK(got[1].error.find("no answer within 500 ms") != std::string::npos);
    CHECK_FALSE(got[2].read);
    CHECK(got[2].error.find("signal 11") != std::string::npos);
    CHECK_FALSE(got[3].read);
    CHECK(got[3].error.find("status 3") != std::string::npos);
}

TEST_CASE("run_catalog lists an unreadable file with its error, once per change", "[web][catalog]") {
    helper_dir d;
    run_catalog cat(d.path / "runs");
    int calls = 0;
    const auto inner = run_catalog::helper_reader(d.path / "helper.sh", 300ms);
    const run_catalog::file_reader counting = [&](const std::vector<fs::path>& p) {
        calls += static_cast<int>(p.size());
        return inner(p);
    };
    auto runs = cat.list(std::nullopt, counting);
    CHECK(calls == 4);
    bool hang_listed = false;
    for (const auto& r : runs)
        for (const auto& f : r.files)
            if (f.file == "hang.h5") {
                hang_listed = true;
                CHECK_FALSE(f.error.empty());
                CHECK_FALSE(r.complete);
            }
    CHECK(hang_listed);
    // Cached by size and mtime: the next listing reads nothing, answers at once.
    const auto t0 = std::chrono::steady_clock::now();
    runs = cat.list(std::nullopt, counting);
    CHECK(calls == 4);
    CHECK(std::chrono::steady_clock::now() - t0 < 200ms);
}
