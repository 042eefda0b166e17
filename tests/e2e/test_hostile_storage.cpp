// Hostile storage, injected into a running daqd (issue 16: items 3, 6, 7,
// 9 and the rotation name collision; docs/RELIABILITY.md): a damaged or
// hanging HDF5 file in the output directory, files daqd does not own at
// start-up recovery, the output directory deleted or unmounted mid-run, a
// full disk without reserve, symlinks at daqd's control files, a file at the
// next rotation name. Real processes, sockets, files and HTTP clients; every
// wait has a deadline.
#include "daqd_fixture.hpp"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <sys/mount.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <regex>

using daqd::test::child;
using daqd::test::count_of;
using daqd::test::daqd_process;
using daqd::test::eventually;
using daqd::test::h5py_frames;
using daqd::test::inspect;
using daqd::test::read_json;
using daqd::test::scratch_dir;
using daqd::test::tmpfs_mount;
using nlohmann::json;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

using daqd::test::check_accounting;

namespace {

std::string bytes_of(const std::string& p) {
    std::ifstream in(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// An h5py process that keeps `file` open for SWMR writing until killed
// (another program's acquisition, say). Waits until it is ready.
std::unique_ptr<child> h5py_writer(const scratch_dir& dir, const std::string& file, const std::string& tag) {
    const std::string script = dir / (tag + ".py");
    std::ofstream(script) << "import sys, time, h5py\n"
                             "f = h5py.File(sys.argv[1], 'w', libver='latest')\n"
                             "d = f.create_dataset('x', shape=(0,), maxshape=(None,), chunks=(16,), dtype='u8')\n"
                             "f.swmr_mode = True\n"
                             "d.resize((40,)); d[:] = range(40); f.flush()\n"
                             "print('ready', flush=True)\n"
                             "time.sleep(120)\n";
    auto c = std::make_unique<child>(std::vector<std::string>{"/usr/bin/python3", script, file}, dir / (tag + ".out"),
                                     dir / (tag + ".err"));
    REQUIRE(eventually([&] { return c->out().find("ready") != std::string::npos; }, 20s));
    return c;
}

// Rows of dataset x (h5py_writer's) in a plain, non-SWMR open; -2 when it does not open.
long h5py_rows_of_x(const scratch_dir& dir, const std::string& file) {
    std::ofstream(dir / "rows_x.py") << "import sys, h5py\n"
                                        "try:\n    f = h5py.File(sys.argv[1], 'r')\nexcept OSError:\n    print(-2); sys.exit(0)\n"
                                        "print(f['x'].shape[0])\n";
    auto [rc, out] = daqd::test::run({"/usr/bin/python3", dir / "rows_x.py", file}, dir / "rows_x");
    INFO(out);
    REQUIRE(rc == 0);
    return std::stol(out);
}

bool have_h5py() {
    if (!fs::exists("/usr/bin/python3")) return false;
    return std::system("/usr/bin/python3 -c 'import h5py' >/dev/null 2>&1") == 0;
}

}  // namespace

TEST_CASE("a damaged or hanging HDF5 file in the output directory: listed as unreadable within the deadline, "
          "recording goes on, SIGTERM is prompt",
          "[e2e][hostile]") {
    scratch_dir dir("damaged");
    const std::string runs = dir / "runs";
    // A damaged file: an HDF5 signature, then garbage where the superblock goes.
    {
        std::string junk = "\x89HDF\r\n\x1a\n";
        for (int i = 0; i < 4096; ++i) junk += static_cast<char>((i * 131 + 7) & 0xff);
        std::ofstream(runs + "/damaged.h5", std::ios::binary) << junk;
    }
    // A file whose reader hangs, as HDF5's SWMR open can on a damaged file
    // (DAQD_FAULT_READ_HANG: the helper that reads this name never answers).
    std::ofstream(runs + "/stuck.h5") << "whatever";
    ::setenv("DAQD_FAULT_READ_HANG", "stuck.h5", 1);
    daqd_process d(dir, "dmg", runs, "flush_interval_ms = 200\n", {"--run", "live"});
    ::unsetenv("DAQD_FAULT_READ_HANG");
    // 2 units × 1024 channels, 5000 frames each at 40 Mbit/s: about 4 s.
    child sim({DAQ_SIM_BIN, "--target", d.target(), "--units", "2", "--channels", "1024", "--frames", "5000", "--rate",
               "40", "--json", dir / "dmg.sim.json", "--quiet"},
              dir / "dmg.sim.out", dir / "dmg.sim.err");
    REQUIRE(eventually([&] { return d.metric("daq_frames_written_total") > 200; }, 20s));

    // Poll the catalogue as the status page does, while frames keep coming.
    double slowest = 0;
    double written_before = d.metric("daq_frames_written_total");
    int polls_with_progress = 0;
    for (int i = 0; i < 4; ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        auto r = web_test::http(d.http, "GET", "/api/v1/runs");
        const double took = seconds_since(t0);
        slowest = std::max(slowest, took);
        INFO(r.body);
        REQUIRE(r.status == 200);
        CHECK(took < 4.0);  // one read deadline (2 s) and some
        const auto listed = json::parse(r.body);
        std::map<std::string, json> files;
        for (const auto& run : listed["runs"])
            for (const auto& f : run["files"]) files[f["file"].get<std::string>()] = f;
        REQUIRE(files.count("damaged.h5") == 1);
        REQUIRE(files.count("stuck.h5") == 1);
        CHECK(files["damaged.h5"].contains("error"));
        CHECK(files["stuck.h5"].contains("error"));
        if (files["stuck.h5"].contains("error"))
            CHECK(files["stuck.h5"]["error"].get<std::string>().find("no answer within") != std::string::npos);
        const double written_now = d.metric("daq_frames_written_total");
        if (written_now > written_before) ++polls_with_progress;
        written_before = written_now;
        std::this_thread::sleep_for(200ms);  // the page polls about once a second; a little faster here
    }
    WARN("slowest GET /api/v1/runs with a hanging and a damaged file: " << slowest << " s");
    CHECK(polls_with_progress >= 2);  // the writer never waited for the catalogue
    REQUIRE(sim.wait(30s) == 0);
    const auto sent = read_json(dir / "dmg.sim.json")["frames_sent"].get<double>();
    REQUIRE(eventually([&] { return d.metric("daq_frames_written_total") >= sent; }, 10s));
    // A last listing (the hanging read cached: fast now), then SIGTERM.
    auto r = web_test::http(d.http, "GET", "/api/v1/runs");
    CHECK(r.status == 200);
    const auto t0 = std::chrono::steady_clock::now();
    d.proc->signal(SIGTERM);
    REQUIRE(d.proc->wait(10s) == 0);
    const double stop_s = seconds_since(t0);
    WARN("SIGTERM to exit: " << stop_s << " s");
    CHECK(stop_s < 5.0);
    const auto s = read_json(dir / "dmg.json");
    INFO(s.dump(1));
    CHECK(s["frames_written"].get<double>() == sent);
    CHECK_FALSE(s["run_failed"].get<bool>());
    check_accounting(s);
    auto [vrc, vout] = inspect(dir, {"--verify", runs + "/live.h5"});
    INFO(vout);
    CHECK(vrc == 0);
}

TEST_CASE("the output directory deleted mid-run: the run fails with one clear error, nothing is counted as written",
          "[e2e][hostile]") {
    scratch_dir dir("deleted");
    const std::string runs = dir / "runs";
    daqd_process d(dir, "del", runs, "flush_interval_ms = 200\n", {"--run", "gone"});
    child sim({DAQ_SIM_BIN, "--target", d.target(), "--units", "2", "--channels", "1024", "--duration", "30", "--rate",
               "40", "--quiet"},
              dir / "del.sim.out", dir / "del.sim.err");
    REQUIRE(eventually([&] { return d.metric("daq_frames_written_total") > 500; }, 20s));
    const auto t0 = std::chrono::steady_clock::now();
    fs::remove_all(runs);
    REQUIRE(d.proc->wait_for_log("FAILED, no longer writing to", 10s));
    const double detect_s = seconds_since(t0);
    WARN("deletion noticed after " << detect_s << " s (flush interval 0.2 s)");
    CHECK(detect_s < 2.0);
    const auto st = d.status();
    INFO(st.dump(1));
    CHECK(st["run"]["state"] == "failed");
    const std::string err = st["run"]["error"];
    CHECK(err.find(runs + "/gone.h5") != std::string::npos);
    CHECK(err.find("deleted or unmounted") != std::string::npos);
    CHECK(d.metric("daq_run_failed", "run=\"gone\"") == 1);
    CHECK(d.metric("daq_storage_run_failures_total") == 1);
    CHECK(d.metric("daq_frames_written_total") == 0);  // none of them is in a file that exists
    CHECK(st["writer"]["frames_written"] == 0);
    const double unwritten = d.metric("daq_frames_unwritten_total");
    CHECK(unwritten > 500);
    CHECK(eventually([&] { return d.metric("daq_frames_unwritten_total") > unwritten; }, 10s));
    sim.signal(SIGTERM);
    sim.wait(10s);
    d.proc->signal(SIGTERM);
    REQUIRE(d.proc->wait(30s).has_value());
    const auto s = read_json(dir / "del.json");
    INFO(s.dump(1));
    CHECK(s["run_failed"].get<bool>());
    CHECK(s["frames_written"] == 0);
    check_accounting(s);
    CHECK(count_of(d.proc->err(), " error ") == 2);  // the error, and "see the error above" at stop
    CHECK(count_of(d.proc->err(), " error run 'gone' FAILED") == 1);
    CHECK(d.proc->out().find("written=0") != std::string::npos);
}

TEST_CASE("the output file system unmounted mid-run: the run fails, nothing is counted as written", "[e2e][hostile]") {
    scratch_dir dir("unmounted");
    const std::string runs = dir / "mnt";
    tmpfs_mount fsys(runs, "64m");
    if (!fsys.mounted) {
        WARN("cannot mount a tmpfs (needs root): unmount test skipped");
        return;
    }
    daqd_process d(dir, "umnt", runs, "flush_interval_ms = 200\nreserve_bytes = \"1MiB\"\n", {"--run", "away"});
    child sim({DAQ_SIM_BIN, "--target", d.target(), "--units", "2", "--channels", "1024", "--duration", "30", "--rate",
               "40", "--quiet"},
              dir / "umnt.sim.out", dir / "umnt.sim.err");
    REQUIRE(eventually([&] { return d.metric("daq_frames_written_total") > 500; }, 20s));
    REQUIRE(::umount2(runs.c_str(), MNT_DETACH) == 0);
    fsys.mounted = false;
    REQUIRE(d.proc->wait_for_log("FAILED, no longer writing to", 10s));
    const auto st = d.status();
    INFO(st.dump(1));
    CHECK(st["run"]["state"] == "failed");
    CHECK(st["run"]["error"].get<std::string>().find("deleted or unmounted") != std::string::npos);
    CHECK(d.metric("daq_frames_written_total") == 0);
    sim.signal(SIGTERM);
    sim.wait(10s);
    d.proc->signal(SIGTERM);
    REQUIRE(d.proc->wait(30s).has_value());
    const auto s = read_json(dir / "umnt.json");
    CHECK(s["frames_written"] == 0);
    check_accounting(s);
}

TEST_CASE("start-up recovery leaves alone what daqd does not own, --recover FILE mends a named file",
          "[e2e][hostile]") {
    if (!have_h5py()) {
        WARN("h5py not available: test skipped");
        return;
    }
    scratch_dir dir("not-ours");
    const std::string runs = dir / "runs";
    const std::string elsewhere = dir / "elsewhere";
    fs::create_directories(elsewhere);
    // Another program's file, open for SWMR writing in the output directory.
    auto live = h5py_writer(dir, runs + "/foreign.h5", "foreign");
    // Another program's file left open for write by a crash, outside, and a
    // symlink to it in the output directory.
    {
        auto dead = h5py_writer(dir, elsewhere + "/crashed.h5", "crashed");
        dead->signal(SIGKILL);
        REQUIRE(dead->wait(10s).has_value());
    }
    fs::create_symlink(elsewhere + "/crashed.h5", runs + "/linked.h5");
    // A symlink to the live file, too.
    fs::create_symlink(runs + "/foreign.h5", runs + "/alias.h5");
    const auto foreign_before = bytes_of(runs + "/foreign.h5");
    const auto crashed_before = bytes_of(elsewhere + "/crashed.h5");
    REQUIRE(h5py_rows_of_x(dir, elsewhere + "/crashed.h5") == -2);  // left open: plain h5py refuses it

    daqd_process d(dir, "start", runs, "", {"--duration", "1"});
    REQUIRE(d.proc->wait(30s) == 0);
    const std::string log = d.proc->err();
    INFO(log);
    CHECK(log.find("recovered") == std::string::npos);
    CHECK(log.find("cannot recover") == std::string::npos);
    CHECK(bytes_of(runs + "/foreign.h5") == foreign_before);
    CHECK(bytes_of(elsewhere + "/crashed.h5") == crashed_before);

    // Named explicitly: a symlink is refused, a file another process has open is refused...
    {
        auto [rc, out] = daqd::test::run({DAQD_BIN, "--recover", runs + "/linked.h5", "--http", "off"}, dir / "r1");
        INFO(out);
        CHECK(rc == 1);
        CHECK(out.find("symlink") != std::string::npos);
    }
    {
        auto [rc, out] = daqd::test::run({DAQD_BIN, "--recover", runs + "/foreign.h5", "--http", "off"}, dir / "r2");
        INFO(out);
        CHECK(rc == 1);
        CHECK(out.find("open in another process (" + std::to_string(live->pid())) != std::string::npos);
    }
    CHECK(bytes_of(runs + "/foreign.h5") == foreign_before);
    CHECK(bytes_of(elsewhere + "/crashed.h5") == crashed_before);
    // ...and the crashed file itself is mended.
    {
        auto [rc, out] = daqd::test::run({DAQD_BIN, "--recover", elsewhere + "/crashed.h5", "--http", "off"}, dir / "r3");
        INFO(out);
        CHECK(rc == 0);
        CHECK(out.find("recovered " + elsewhere + "/crashed.h5") != std::string::npos);
    }
    CHECK(h5py_rows_of_x(dir, elsewhere + "/crashed.h5") == 40);
    live->signal(SIGKILL);
    live->wait(10s);
}

TEST_CASE("control files: a symlink or hard link at .daqd.lock is refused, a symlink at .daqd-token is replaced, "
          "the victims are unchanged",
          "[e2e][hostile]") {
    scratch_dir dir("lock-link");
    const std::string runs = dir / "runs";
    const std::string victim = dir / "victim.txt";
    std::ofstream(victim) << "precious\n";
    fs::create_symlink(victim, runs + "/.daqd.lock");
    {
        auto [rc, out] = daqd::test::run({DAQD_BIN, "--output", runs, "--http", "off", "--duration", "1", "--listen",
                                          "127.0.0.1:" + std::to_string(daqd::test::free_port())},
                                         dir / "l1");
        INFO(out);
        CHECK(rc == 1);
        CHECK(out.find(".daqd.lock is a symlink") != std::string::npos);
    }
    CHECK(bytes_of(victim) == "precious\n");
    fs::remove(runs + "/.daqd.lock");
    fs::create_hard_link(victim, runs + "/.daqd.lock");
    {
        auto [rc, out] = daqd::test::run({DAQD_BIN, "--output", runs, "--http", "off", "--duration", "1", "--listen",
                                          "127.0.0.1:" + std::to_string(daqd::test::free_port())},
                                         dir / "l2");
        INFO(out);
        CHECK(rc == 1);
        CHECK(out.find("single link") != std::string::npos);
    }
    CHECK(bytes_of(victim) == "precious\n");
    fs::remove(runs + "/.daqd.lock");

    // The token file is written to a new file and renamed over the name:
    // a symlink there is replaced, never written through.
    const std::string victim2 = dir / "victim2.txt";
    std::ofstream(victim2) << "also precious\n";
    fs::create_symlink(victim2, runs + "/.daqd-token");
    daqd_process d(dir, "tok", runs, "");
    CHECK(fs::is_regular_file(fs::symlink_status(runs + "/.daqd-token")));
    CHECK(fs::is_regular_file(fs::symlink_status(runs + "/.daqd.lock")));
    CHECK(d.token(runs).size() >= 16);
    d.proc->signal(SIGTERM);
    REQUIRE(d.proc->wait(30s) == 0);
    CHECK(bytes_of(victim2) == "also precious\n");
}

TEST_CASE("a file at the next rotation name: the run skips to the next free name", "[e2e][hostile]") {
    scratch_dir dir("rotate-taken");
    const std::string runs = dir / "runs";
    // 1 unit of 1024 channels: 2066 bytes a row, 31 rows per 64 KiB file.
    daqd_process d(dir, "rot", runs, "rotate_bytes = 65536\nchunk_bytes = 16384\nflush_interval_ms = 200\n",
                   {"--run", "rot"});
    REQUIRE(fs::exists(runs + "/rot_00000.h5"));
    std::ofstream(runs + "/rot_00002.h5") << "not daqd's\n";
    auto [rc, out] = daqd::test::run({DAQ_SIM_BIN, "--target", d.target(), "--channels", "1024", "--frames", "200",
                                      "--rate", "20", "--json", dir / "rot.sim.json", "--quiet"},
                                     dir / "rot.sim");
    REQUIRE(rc == 0);
    REQUIRE(eventually([&] { return d.metric("daq_frames_written_total") >= 200; }, 10s));
    d.proc->signal(SIGTERM);
    REQUIRE(d.proc->wait(30s) == 0);
    const auto s = read_json(dir / "rot.json");
    INFO(s.dump(1));
    CHECK_FALSE(s["run_failed"].get<bool>());
    CHECK(s["frames_written"] == 200);
    CHECK(bytes_of(runs + "/rot_00002.h5") == "not daqd's\n");
    std::vector<std::string> files;
    for (const auto& f : s["files"]) files.push_back(f.get<std::string>());
    REQUIRE(files.size() >= 4);
    CHECK(std::find(files.begin(), files.end(), runs + "/rot_00002.h5") == files.end());
    CHECK(std::find(files.begin(), files.end(), runs + "/rot_00003.h5") != files.end());
    CHECK(count_of(d.proc->err(), "exists already") == 1);
    daqd::test::verify(dir, files);
    CHECK(daqd::test::inspect_json(dir, files)["total_frames"] == 200);
}
