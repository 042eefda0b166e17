// End to end with real processes, sockets and files:
// daq-sim → daqd → run file → daq-inspect --verify.
#include "process.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <catch2/catch.hpp>
#include <netinet/in.h>
#include <nlohmann/json.hpp>
#include <sys/socket.h>

#include <filesystem>
#include <fstream>

using nlohmann::json;
using daqd::test::read_json;
using daqd::test::child;
using daqd::test::scratch_dir;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

struct recording {
    json daqd;      // daqd's --summary-json
    json sim;       // daq-sim's summary
    int daqd_exit;
    std::string daqd_log;
};

// Starts daqd recording run `run`, runs daq-sim with `sim_args` against it,
// then stops daqd with SIGTERM and collects both summaries. `shards` > 1:
// as many links (daq-sim spreads its units over them) and receive shards.
recording record(const scratch_dir& dir, const std::string& run, const std::vector<std::string>& daqd_args,
                 std::vector<std::string> sim_args, std::uint16_t port, int shards = 1) {
    std::vector<std::uint16_t> ports{port};
    while (static_cast<int>(ports.size()) < shards) {
        const auto p = daqd::test::free_port();
        if (std::find(ports.begin(), ports.end(), p) == ports.end()) ports.push_back(p);
    }
    std::vector<std::string> argv{DAQD_BIN, "--output", dir / "runs", "--run", run, "--summary-json",
                                  dir / (run + ".json"), "--shards", std::to_string(shards)};
    std::vector<std::string> sargv{DAQ_SIM_BIN, "--json", dir / (run + ".sim.json"), "--quiet"};
    for (auto p : ports) {
        argv.insert(argv.end(), {"--listen", "127.0.0.1:" + std::to_string(p)});
        sargv.insert(sargv.end(), {"--target", "127.0.0.1:" + std::to_string(p)});
    }
    argv.insert(argv.end(), daqd_args.begin(), daqd_args.end());
    child d(argv, dir / (run + ".daqd.out"), dir / (run + ".daqd.err"));
    REQUIRE(d.wait_for_log("run " + run + " started", 20s));
    if (shards > 1) CHECK(d.err().find(std::to_string(shards) + " receive shards") != std::string::npos);
    sargv.insert(sargv.end(), sim_args.begin(), sim_args.end());
    auto [sim_rc, sim_out] = daqd::test::run(sargv, dir / (run + ".sim"));
    INFO(sim_out);
    REQUIRE(sim_rc == 0);
    // The sim's last frame carries END_OF_STREAM, so daqd closes every frame
    // promptly; SIGTERM then drains rings and queues before closing the file.
    d.signal(SIGTERM);
    auto rc = d.wait(60s);
    INFO(d.err());
    REQUIRE(rc.has_value());
    return {read_json(dir / (run + ".json")), read_json(dir / (run + ".sim.json")), *rc, d.err()};
}

std::pair<int, std::string> inspect(const scratch_dir& dir, std::vector<std::string> args) {
    args.insert(args.begin(), DAQ_INSPECT_BIN);
    return daqd::test::run(args, dir / "inspect");
}

// daqd's arguments for a config file that sets threads.combine_receive_assembly.
std::vector<std::string> combine_args(const scratch_dir& dir, const std::string& combine) {
    const std::string file = dir / ("combine-" + combine + ".toml");
    std::ofstream(file) << "[threads]\ncombine_receive_assembly = \"" << combine << "\"\n";
    return {"--config", file};
}

// What daqd logs at start about its receive and assembly threads.
std::string threads_line(const std::string& combine, int shards = 1) {
    const std::string per = shards > 1 ? " per shard" : "";
    return combine == "on" ? "threads: receive and assembly on one thread" + per + ", daqd-recv+asm"
                           : "threads: receive and assembly on two threads" + per + ", daqd-receive and daqd-assemble";
}

}  // namespace

TEST_CASE("4 units, no faults: every frame is stored exactly", "[e2e]") {
    const std::string backend = GENERATE(as<std::string>{}, "recvmmsg", "io_uring");
    const int shards = GENERATE(1, 2);  // 2: 4 units over 2 links, one receive shard each
    // Receive and assembly on one thread (threads.combine_receive_assembly) or two.
    const std::string combine = GENERATE(as<std::string>{}, "on", "off");
    CAPTURE(shards, combine);
    scratch_dir dir("clean-" + backend + "-" + std::to_string(shards) + "-combine-" + combine);
    auto args = combine_args(dir, combine);
    args.insert(args.end(), {"--backend", backend});
    const auto r = record(dir, "clean", args,
                          {"--units", "4", "--channels", "4096", "--frames", "500", "--rate", "200"}, daqd::test::free_port(),
                          shards);
    INFO(r.daqd_log);
    CHECK(r.daqd_exit == 0);
    CHECK_THAT(r.daqd_log, Catch::Matchers::Contains(threads_line(combine, shards)));
    const auto& s = r.daqd;
    CHECK(s["receiver_backend"] == backend);
    CHECK(s["packets_received"] == r.sim["packets_sent"]);
    CHECK(s["packets_lost"] == 0);
    CHECK(s["invalid_total"] == 0);
    CHECK(s["duplicates"] == 0);
    CHECK(s["ring_dropped"] == 0);
    CHECK(s["kernel_drops"] == 0);
    CHECK(s["frames_complete"] == 2000);
    CHECK(s["frames_incomplete"] == 0);
    CHECK(s["frames_written"] == 2000);
    REQUIRE(s["files"].size() == 1);

    const std::string file = s["files"][0];
    auto [vrc, vout] = inspect(dir, {"--verify", file});
    INFO(vout);
    CHECK(vrc == 0);
    auto [jrc, jout] = inspect(dir, {"--json", file});
    REQUIRE(jrc == 0);
    const auto j = json::parse(jout);
    CHECK(j["total_frames"] == 2000);
    REQUIRE(j["units"].size() == 4);
    for (const auto& u : j["units"]) {
        CHECK(u["frames"] == 500);
        CHECK(u["channels"] == 4096);
        CHECK(u["first_frame"] == 0);
        CHECK(u["last_frame"] == 499);
        CHECK(u["incomplete_frames"] == 0);
    }
}

TEST_CASE("faults injected by daq-sim are counted exactly by daqd", "[e2e]") {
    const std::string backend = GENERATE(as<std::string>{}, "recvmmsg", "io_uring");
    const int shards = GENERATE(1, 2);
    CAPTURE(shards);
    scratch_dir dir("faults-" + backend + "-" + std::to_string(shards));
    const auto r = record(dir, "faults", {"--backend", backend},
                          {"--units", "4", "--channels", "4096", "--frames", "600", "--rate", "200", "--loss", "0.01",
                           "--reorder", "0.01", "--duplicate", "0.01", "--malformed", "0.01", "--seed", "42"},
                          daqd::test::free_port(), shards);
    INFO(r.daqd_log);
    CHECK(r.daqd_exit == 0);
    const auto& s = r.daqd;
    const auto& inj = r.sim["injected"];
    REQUIRE(inj["packets_lost"].get<int>() > 0);
    REQUIRE(inj["duplicates"].get<int>() > 0);
    REQUIRE(inj["reordered"].get<int>() > 0);
    REQUIRE(inj["malformed_total"].get<int>() > 0);
    CHECK(s["ring_dropped"] == 0);
    CHECK(s["kernel_drops"] == 0);
    CHECK(s["packets_lost"] == inj["packets_lost"]);
    CHECK(s["duplicates"] == inj["duplicates"]);
    CHECK(s["late"] == 0);
    CHECK(s["invalid_total"] == inj["malformed_total"]);
    for (const auto& [reason, count] : inj["malformed"].items()) {
        INFO(reason);
        if (count.get<int>() > 0) CHECK(s["invalid"][reason] == count);
    }
    CHECK(s["frames_complete"] == inj["frames_complete"]);
    CHECK(s["frames_incomplete"] == inj["frames_incomplete"]);
    CHECK(s["frames_lost"] == inj["frames_lost"]);
    // Every frame of which a packet arrived is stored; complete ones exactly.
    const std::string file = s["files"][0];
    auto [vrc, vout] = inspect(dir, {"--verify", file});
    INFO(vout);
    CHECK(vrc == 0);
    auto [jrc, jout] = inspect(dir, {"--json", file});
    REQUIRE(jrc == 0);
    const auto j = json::parse(jout);
    CHECK(j["total_frames"] == inj["frames_complete"].get<int>() + inj["frames_incomplete"].get<int>());
}

TEST_CASE("200 Mbit/s for 3 seconds over two links: zero loss", "[e2e]") {
    const std::string shards = GENERATE(as<std::string>{}, "1", "2");
    // Receive and assembly on one thread (threads.combine_receive_assembly) or two.
    const std::string combine = GENERATE(as<std::string>{}, "on", "off");
    CAPTURE(shards, combine);
    scratch_dir dir("rate-" + shards + "-combine-" + combine);
    const auto p1 = daqd::test::free_port();
    auto p2 = daqd::test::free_port();
    while (p2 == p1) p2 = daqd::test::free_port();
    std::vector<std::string> argv{DAQD_BIN,    "--listen",          "127.0.0.1:" + std::to_string(p1),
                                  "--listen",  "127.0.0.1:" + std::to_string(p2), "--output",
                                  dir / "runs", "--run",            "rate",
                                  "--summary-json", dir / "rate.json", "--shards", shards};
    const auto args = combine_args(dir, combine);
    argv.insert(argv.end(), args.begin(), args.end());
    child d(argv, dir / "rate.daqd.out", dir / "rate.daqd.err");
    REQUIRE(d.wait_for_log("run rate started", 20s));
    auto [rc, out] = daqd::test::run({DAQ_SIM_BIN, "--target", "127.0.0.1:" + std::to_string(p1), "--target",
                                      "127.0.0.1:" + std::to_string(p2), "--units", "4", "--duration", "3", "--rate",
                                      "200", "--json", dir / "rate.sim.json", "--quiet"},
                                     dir / "rate.sim");
    INFO(out);
    REQUIRE(rc == 0);
    d.signal(SIGTERM);
    REQUIRE(d.wait(60s) == 0);
    const auto s = read_json(dir / "rate.json");
    const auto sim = read_json(dir / "rate.sim.json");
    INFO(d.err());
    CHECK_THAT(d.err(), Catch::Matchers::Contains(threads_line(combine, std::stoi(shards))));
    CHECK(sim["rate_mbps"].get<double>() > 150.0);
    CHECK(s["packets_received"] == sim["packets_sent"]);
    CHECK(s["packets_lost"] == 0);
    CHECK(s["ring_dropped"] == 0);
    CHECK(s["kernel_drops"] == 0);
    CHECK(s["frames_incomplete"] == 0);
    CHECK(s["frames_written"] == sim["frames_sent"]);
    auto [vrc, vout] = inspect(dir, {"--verify", s["files"][0].get<std::string>()});
    INFO(vout);
    CHECK(vrc == 0);
}

TEST_CASE("SIGTERM in the middle of a stream: every frame taken is in the file", "[e2e]") {
    const int shards = GENERATE(1, 2);  // 2: the 2 units over 2 links, one receive shard each
    CAPTURE(shards);
    scratch_dir dir("sigterm-" + std::to_string(shards));
    std::vector<std::string> argv{DAQD_BIN, "--output", dir / "runs", "--run", "cut", "--summary-json", dir / "cut.json",
                                  "--shards", std::to_string(shards)};
    std::vector<std::string> sargv{DAQ_SIM_BIN, "--units", "2", "--duration", "6", "--rate", "100", "--quiet"};
    for (int k = 0; k < shards; ++k) {
        const auto port = daqd::test::free_port();
        argv.insert(argv.end(), {"--listen", "127.0.0.1:" + std::to_string(port)});
        sargv.insert(sargv.end(), {"--target", "127.0.0.1:" + std::to_string(port)});
    }
    child d(argv, dir / "cut.daqd.out", dir / "cut.daqd.err");
    REQUIRE(d.wait_for_log("run cut started", 20s));
    child sim(sargv, dir / "cut.sim.out", dir / "cut.sim.err");
    REQUIRE(d.wait_for_log("unit 1:", 20s));
    std::this_thread::sleep_for(1500ms);  // let a stream build up; the stop lands mid-stream
    d.signal(SIGTERM);
    REQUIRE(d.wait(60s) == 0);
    sim.wait(20s);
    const auto s = read_json(dir / "cut.json");
    INFO(d.err());
    CHECK(s["frames_written"].get<int>() > 100);
    CHECK(s["frames_written"].get<int>() ==
          s["frames_complete"].get<int>() + s["frames_incomplete"].get<int>());
    CHECK(s["frames_overflow"] == 0);
    auto [jrc, jout] = inspect(dir, {"--json", s["files"][0].get<std::string>()});
    REQUIRE(jrc == 0);
    CHECK(json::parse(jout)["total_frames"] == s["frames_written"]);
    auto [vrc, vout] = inspect(dir, {"--verify", s["files"][0].get<std::string>()});
    INFO(vout);
    CHECK(vrc == 0);
    CHECK(d.out().find("daqd: lifetime (") != std::string::npos);
    CHECK(d.out().find("daqd: run cut (") != std::string::npos);
}

TEST_CASE("rotation by size: a run split over numbered files verifies as one", "[e2e]") {
    const int shards = GENERATE(1, 2);
    CAPTURE(shards);
    scratch_dir dir("rotate-" + std::to_string(shards));
    const auto port = daqd::test::free_port();
    auto port2 = daqd::test::free_port();
    while (port2 == port) port2 = daqd::test::free_port();
    {
        std::ofstream cfg(dir / "rotate.toml");
        cfg << "[acquisition]\nlisten = [\"127.0.0.1:" << port << "\""
            << (shards > 1 ? ", \"127.0.0.1:" + std::to_string(port2) + "\"" : std::string()) << "]\nshards = " << shards
            << "\n[storage]\nrotate_bytes = 4194304\nchunk_bytes = 262144\n";
    }
    child d({DAQD_BIN, "--config", dir / "rotate.toml", "--output", dir / "runs", "--run", "rot", "--summary-json",
             dir / "rot.json"},
            dir / "rot.daqd.out", dir / "rot.daqd.err");
    REQUIRE(d.wait_for_log("run rot started", 20s));
    std::vector<std::string> sargv{DAQ_SIM_BIN, "--target", "127.0.0.1:" + std::to_string(port), "--units", "2",
                                   "--frames", "1500", "--rate", "200", "--quiet"};
    if (shards > 1) sargv.insert(sargv.end(), {"--target", "127.0.0.1:" + std::to_string(port2)});
    auto [rc, out] = daqd::test::run(sargv, dir / "rot.sim");
    REQUIRE(rc == 0);
    d.signal(SIGTERM);
    REQUIRE(d.wait(60s) == 0);
    const auto s = read_json(dir / "rot.json");
    INFO(d.err());
    REQUIRE(s["files"].size() >= 3);
    std::vector<std::string> args{"--verify"};
    for (const auto& f : s["files"]) {
        const std::string name = fs::path(f.get<std::string>()).filename().string();
        CHECK(name.rfind("rot_", 0) == 0);
        args.push_back(f);
    }
    auto [vrc, vout] = inspect(dir, args);
    INFO(vout);
    CHECK(vrc == 0);
    args[0] = "--json";
    auto [jrc, jout] = inspect(dir, args);
    REQUIRE(jrc == 0);
    CHECK(json::parse(jout)["total_frames"] == 3000);
}

TEST_CASE("command line: config errors name the key and line, bad run names are refused", "[e2e]") {
    scratch_dir dir("cli");
    {
        std::ofstream cfg(dir / "bad.toml");
        cfg << "[acquisition]\n\nbatch = \"many\"\n";
    }
    auto [rc, out] = daqd::test::run({DAQD_BIN, "--check-config", dir / "bad.toml"}, dir / "check");
    CHECK(rc == 1);
    CHECK(out.find("acquisition.batch") != std::string::npos);
    CHECK(out.find(":3") != std::string::npos);

    auto [prc, printed] = daqd::test::run({DAQD_BIN, "--print-config"}, dir / "print");
    REQUIRE(prc == 0);
    {
        std::ofstream cfg(dir / "printed.toml");
        cfg << printed;
    }
    auto [crc, cout] = daqd::test::run({DAQD_BIN, "--check-config", dir / "printed.toml"}, dir / "check2");
    INFO(cout);
    CHECK(crc == 0);
    CHECK(printed.find("127.0.0.1:4660") != std::string::npos);

    auto [rrc, rout] = daqd::test::run({DAQD_BIN, "--run", "../escape", "--duration", "1"}, dir / "badrun");
    CHECK(rrc == 2);
    CHECK(rout.find("run name") != std::string::npos);

    auto [hrc, hout] = daqd::test::run({DAQD_BIN, "--help"}, dir / "help");
    CHECK(hrc == 0);
    CHECK(hout.find("--run NAME") != std::string::npos);
}

TEST_CASE("command line: --check-config names every mistake, and --print-config output checks and prints the same",
          "[e2e]") {
    scratch_dir dir("cli-all");
    {
        std::ofstream cfg(dir / "three.toml");
        cfg << "[acquisition]\nbacklog = 3\n\n[assembly]\nreorder_frames = 0\n[log]\nlevel = 4\n";
    }
    auto [rc, out] = daqd::test::run({DAQD_BIN, "--check-config", dir / "three.toml"}, dir / "check");
    INFO(out);
    CHECK(rc == 1);
    const std::string file = dir / "three.toml";
    const std::string expected = file + ":2: unknown key 'acquisition.backlog'\n" + file +
                                 ":5: assembly.reorder_frames must be between 1 and 4096, got 0\n" + file +
                                 ":7: log.level must be a string, got integer\n";
    CHECK(out == expected);

    // Every key away from its default (http.token is not printed; token_file stands in).
    // The files it names exist: --check-config reads the token file and looks
    // for the calibration file, as daqd does at start.
    std::ofstream(dir / "token") << "0123456789abcdef-token\n";
    std::ofstream(dir / "ped.calib.h5") << "";
    {
        std::ofstream cfg(dir / "changed.toml");
        cfg << R"([acquisition]
listen = ["0.0.0.0:1", "[::1]:4660"]
backend = "recvmmsg"
gro = true
batch = 1024
max_datagram_bytes = 65535
socket_buffer_datagrams = 1000
expected_datagram_bytes = "8972B"
ring_slots = 1048576
ring_name = "lab-{pid}"
[units]
learn = false
list = [ { id = 3, channels = 4096 }, { id = 0, channels = 1 } ]
max_learned = 0
learned_idle_s = 1
relearn_quiet_ms = 10
[assembly]
reorder_frames = 4
reorder_timeout_ms = 60000
max_frame_bytes = "16MiB"
pool_blocks = 16
buffer_seconds = 0.5
buffer_max_bytes = "1GiB"
max_frame_jump = 1099511627776
restart_packets = 2
[storage]
output_dir = "/data/runs \"q\""
flush_interval_ms = 10
rotate_bytes = "5TiB"
chunk_bytes = 4096
queue_frames = 7
reserve_bytes = 0
[processing]
stages = ["calibrate", "dose", "live"]
backend = "cpu"
calibration_file = ")" << dir / "ped.calib.h5" << R"("
threshold = -0.25
threshold_mode = "absolute"
batch_frames = 4096
live_interval_ms = 60000
[log]
level = "trace"
[http]
listen = "[::]:9443"
token_file = ")" << dir / "token" << R"("
allowed_hosts = ["daq01.lab.example", "*"]
)";
    }
    auto [prc, printed] = daqd::test::run({DAQD_BIN, "--config", dir / "changed.toml", "--print-config"}, dir / "p1");
    INFO(printed);
    REQUIRE(prc == 0);
    for (const char* line : {"\nbackend = \"recvmmsg\"\n", "\nexpected_datagram_bytes = 8972\n",
                             "\nmax_frame_bytes = 16777216\n", "\nrotate_bytes = 5497558138880\n",
                             "\nthreshold = -0.25\n", "\nlisten = \"[::]:9443\"\n", "\n# Allowed: 1..1024\nbatch = 1024\n"})
        CHECK(printed.find(line) != std::string::npos);
    {
        std::ofstream cfg(dir / "printed.toml");
        cfg << printed;
    }
    auto [crc, checked] = daqd::test::run({DAQD_BIN, "--check-config", dir / "printed.toml"}, dir / "c1");
    CHECK(crc == 0);
    auto [prc2, printed_again] =
        daqd::test::run({DAQD_BIN, "--config", dir / "printed.toml", "--print-config"}, dir / "p2");
    CHECK(prc2 == 0);
    CHECK(printed_again == printed);
}

TEST_CASE("a run name already on disk is refused, the existing file untouched", "[e2e]") {
    scratch_dir dir("exists");
    fs::create_directories(dir.path / "runs");
    {
        std::ofstream f(dir / "runs/taken.h5");
        f << "precious";
    }
    auto [rc, out] = daqd::test::run({DAQD_BIN, "--listen", "127.0.0.1:" + std::to_string(daqd::test::free_port()),
                                      "--output", dir / "runs", "--run", "taken", "--duration", "1"},
                                     dir / "taken");
    CHECK(rc != 0);
    CHECK(out.find("taken") != std::string::npos);
    CHECK(daqd::test::slurp(dir / "runs/taken.h5") == "precious");
}

TEST_CASE("a second process maps the packet ring read-only and sees every packet go by", "[e2e]") {
    scratch_dir dir("ringwatch");
    const auto port = daqd::test::free_port();
    child d({DAQD_BIN, "--listen", "127.0.0.1:" + std::to_string(port), "--output", dir / "runs", "--summary-json",
             dir / "watch.json"},
            dir / "watch.daqd.out", dir / "watch.daqd.err");
    REQUIRE(d.wait_for_log("packet ring /dev/shm/", 20s));
    const std::string log = d.err();
    const auto at = log.find("/dev/shm/") + 9;
    const std::string ring = log.substr(at, log.find(' ', at) - at);
    child watcher({DAQ_RINGWATCH_BIN, ring, "--seconds", "4", "--json"}, dir / "watcher.out", dir / "watcher.err");
    std::this_thread::sleep_for(300ms);  // the watcher samples `head` when it starts
    auto [rc, out] = daqd::test::run({DAQ_SIM_BIN, "--target", "127.0.0.1:" + std::to_string(port), "--units", "3",
                                      "--frames", "300", "--rate", "50", "--json", dir / "watch.sim.json", "--quiet"},
                                     dir / "watch.sim");
    REQUIRE(rc == 0);
    REQUIRE(watcher.wait(30s) == 0);
    d.signal(SIGTERM);
    REQUIRE(d.wait(60s) == 0);
    INFO(watcher.out() << watcher.err());
    const auto w = json::parse(watcher.out());
    const auto sim = read_json(dir / "watch.sim.json");
    CHECK(w["ring"] == ring);
    CHECK(w["skipped_slots"] == 0);
    CHECK(w["seen"] == sim["packets_sent"]);
    CHECK(w["units"].size() == 3);
    // daqd was not recording: its frames were counted as not recorded, none lost.
    const auto s = read_json(dir / "watch.json");
    CHECK(s["packets_received"] == sim["packets_sent"]);
    CHECK(s["frames_unrecorded"] == 900);
    // The ring's name is gone from /dev/shm once daqd exits.
    CHECK_FALSE(fs::exists("/dev/shm/" + ring));
}
