// daqd as a facility service (issue 17), end to end with real processes:
// SIGHUP re-reads the configuration mid-run without losing a frame, and a
// broken file on reload changes nothing (docs/OPERATIONS.md "Reloading
// (SIGHUP)").
#include "daqd_fixture.hpp"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <string>

using daqd::test::child;
using daqd::test::count_of;
using daqd::test::daqd_process;
using daqd::test::eventually;
using daqd::test::read_json;
using daqd::test::scratch_dir;
using daqd::test::slurp;
using namespace std::chrono_literals;

namespace {

// The text of `s` with the first `what` replaced by `with` (which must be there).
std::string replaced(std::string s, const std::string& what, const std::string& with) {
    const auto at = s.find(what);
    REQUIRE(at != std::string::npos);
    return s.replace(at, what.size(), with);
}

}  // namespace

TEST_CASE("SIGHUP mid-run re-reads the configuration: log.level applied, other keys named, no frame lost; "
          "a broken file changes nothing",
          "[e2e][service]") {
    scratch_dir dir("reload");
    const std::string runs = dir / "runs";
    daqd_process d(dir, "reload", runs, "", {"--run", "reload"});
    const std::string cfg_file = dir / "reload.toml";
    const std::string original = slurp(cfg_file);
    child sim({DAQ_SIM_BIN, "--target", d.target(), "--units", "2", "--duration", "4", "--rate", "50", "--json",
               dir / "reload.sim.json", "--quiet"},
              dir / "reload.sim.out", dir / "reload.sim.err");
    REQUIRE(eventually([&] { return d.metric("daq_frames_written_total") > 50; }, 10s));

    // At "info" a request that fails is not logged (it is at "debug").
    CHECK(web_test::http(d.http, "GET", "/before-reload").status == 404);

    // A changed file: one key daqd applies, two it cannot while it runs.
    std::ofstream(cfg_file) << replaced(original, "shards = 1\n", "shards = 1\nbatch = 32\n")
                            << "flush_interval_ms = 500\n[log]\nlevel = \"debug\"\n";
    d.proc->signal(SIGHUP);
    REQUIRE(d.proc->wait_for_log("SIGHUP: reloaded", 5s));
    std::string log = d.proc->err();
    INFO(log);
    CHECK(count_of(log, "SIGHUP: reloaded") == 1);
    CHECK(log.find("SIGHUP: reloaded " + cfg_file + ": applied log.level = \"debug\" (was \"info\"); 2 keys changed "
                   "but take effect only at the next start (restart daqd): acquisition.batch, "
                   "storage.flush_interval_ms") != std::string::npos);
    // The new level is in effect: the same kind of request is logged now.
    CHECK(web_test::http(d.http, "GET", "/after-reload").status == 404);
    CHECK(d.proc->wait_for_log("GET /after-reload -> 404", 5s));
    CHECK(d.proc->err().find("/before-reload") == std::string::npos);

    // A broken file: one error line naming the key, the running configuration stays.
    std::ofstream(cfg_file) << original << "[log]\nlevel = \"loud\"\n";
    d.proc->signal(SIGHUP);
    REQUIRE(d.proc->wait_for_log("not reloaded", 5s));
    log = d.proc->err();
    CHECK(count_of(log, " error ") == 1);
    CHECK(log.find("SIGHUP: " + cfg_file + " not reloaded, daqd carries on with the configuration it runs: " +
                   cfg_file + ":") != std::string::npos);
    CHECK(log.find("log.level") != std::string::npos);
    CHECK(web_test::http(d.http, "GET", "/after-broken").status == 404);
    CHECK(d.proc->wait_for_log("GET /after-broken -> 404", 5s));  // still "debug"
    CHECK(d.status()["run"]["state"] == "recording");

    // Still recording, every frame: none lost on the way.
    REQUIRE(sim.wait(30s) == 0);
    const auto sent = read_json(dir / "reload.sim.json");
    REQUIRE(eventually([&] { return d.metric("daq_frames_written_total") >= sent["frames_sent"].get<double>(); }, 10s));
    CHECK(d.status()["run"]["state"] == "recording");
    d.proc->signal(SIGTERM);
    REQUIRE(d.proc->wait(30s) == 0);
    const auto s = read_json(dir / "reload.json");
    INFO(s.dump(1));
    CHECK(s["frames_written"] == sent["frames_sent"]);
    CHECK(s["frames_complete"] == sent["frames_sent"]);
    CHECK(s["frames_incomplete"] == 0);
    CHECK(s["frames_lost"] == 0);
    CHECK(s["packets_lost"] == 0);
    CHECK(s["ring_dropped"] == 0);
    CHECK(s["kernel_drops"] == 0);
    daqd::test::verify(dir, {runs + "/reload.h5"});
}
