// Faults injected into a running daqd, end to end with real processes,
// sockets, file systems and files (docs/RELIABILITY.md):
//   kill -9 at full rate, SIGTERM at full rate, disk full (tmpfs), a slow
//   writer, a flood of garbage datagrams, restarts.
// Each test asserts what a user sees: the file opens and verifies, the counts
// add up, the API and /metrics say what happened.
#include "daqd_fixture.hpp"

#include "daqd/acquisition/daq1.hpp"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <sys/mount.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <regex>

using daqd::test::read_json;
using daqd::test::eventually;
using daqd::test::child;
using daqd::test::scratch_dir;
using nlohmann::json;
namespace fs = std::filesystem;
namespace daq1 = daqd::acquisition::daq1;
using namespace std::chrono_literals;

using daqd::test::count_of;
using daqd::test::daqd_process;
using daqd::test::h5py_frames;
using daqd::test::inspect;
using daqd::test::rss_kib;
using daqd::test::tmpfs_mount;

namespace {

// daq-sim's command line against every link of `d` (its units spread over them).
std::vector<std::string> sim_argv(const daqd_process& d, const std::vector<std::string>& args) {
    std::vector<std::string> v{DAQ_SIM_BIN};
    for (const auto& t : d.sim_targets()) v.push_back(t);
    v.insert(v.end(), args.begin(), args.end());
    return v;
}

}  // namespace

TEST_CASE("kill -9 at full rate: the next start mends the file, every frame up to the last flush is kept exactly",
          "[e2e][faults]") {
    // 2 shards: 4 units over 2 links, one receive shard each; bslz4: compressed chunks.
    const auto [shards, compression] =
        GENERATE(table<int, std::string>({{1, "none"}, {2, "none"}, {1, "bslz4"}}));
    CAPTURE(shards, compression);
    scratch_dir dir("kill9-" + std::to_string(shards) + compression);
    const std::string runs = dir / "runs";
    const int flush_ms = 200;
    daqd_process d(dir, "crash", runs,
                   "flush_interval_ms = " + std::to_string(flush_ms) + "\ncompression = \"" + compression + "\"\n",
                   {"--run", "crash"}, "", shards);
    // 4 units of 4096 channels at 1 Gbit/s: 15 259 frames/s over all units.
    const double rate_mbit = 1000;
    const double frames_per_s = rate_mbit * 1e6 / 8 / (4096 * 2);
    std::vector<std::string> sargs{DAQ_SIM_BIN, "--units", "4", "--duration", "30", "--rate", std::to_string(rate_mbit),
                                   "--quiet"};
    for (const auto& t : d.sim_targets()) sargs.push_back(t);
    child sim(sargs, dir / "crash.sim.out", dir / "crash.sim.err");
    REQUIRE(eventually([&] { return d.metric("daq_frames_written_total") > 10000; }, 20s));
    // Frames written by now are flushed once a flush that began after this
    // read has ended: two more flushes complete.
    const double written_then = d.metric("daq_frames_written_total");
    const double flushes_then = d.metric("daq_storage_flush_seconds_count");
    REQUIRE(eventually([&] { return d.metric("daq_storage_flush_seconds_count") >= flushes_then + 2; }, 10s));
    const double written_at_kill = d.metric("daq_frames_written_total");
    d.proc->signal(SIGKILL);
    REQUIRE(d.proc->wait(10s).has_value());
    sim.signal(SIGTERM);
    sim.wait(10s);
    const std::string file = runs + "/crash.h5";
    REQUIRE(fs::exists(file));

    // Left open for write: a plain (non-SWMR) reader refuses it until it is mended.
    const long py_before = h5py_frames(dir, file);
    if (py_before != -1) CHECK(py_before == -2);

    // The next start mends it and says so.
    daqd_process again(dir, "restart", runs, "", {"--duration", "1"});
    REQUIRE(again.proc->wait(30s) == 0);
    const std::string log = again.proc->err();
    INFO(log);
    CHECK(log.find("recovered " + file) != std::string::npos);

    auto [jrc, jout] = inspect(dir, {"--json", file});
    INFO(jout);
    REQUIRE(jrc == 0);
    const auto kept = json::parse(jout)["total_frames"].get<double>();
    // Everything written before the last flush before the kill...
    CHECK(kept >= written_then);
    // ...so at most a flush interval (and the flush itself, bounded by
    // another interval) of frames at this rate is missing.
    const double bound = written_at_kill - frames_per_s * 2 * flush_ms / 1000.0;
    INFO("written_then " << written_then << " written_at_kill " << written_at_kill << " kept " << kept
                         << " bound " << bound);
    CHECK(kept >= bound);
    CHECK(kept <= written_at_kill);
    // Each frame exact.
    auto [vrc, vout] = inspect(dir, {"--verify", file});
    INFO(vout);
    CHECK(vrc == 0);
    // A training job's reader opens it as is.
    const long py = h5py_frames(dir, file);
    if (py >= 0) CHECK(py == static_cast<long>(kept));

    // Mended once: nothing left to do.
    auto [rrc, rout] = daqd::test::run({DAQD_BIN, "--recover", "--output", runs, "--http", "off"}, dir / "recover");
    INFO(rout);
    CHECK(rrc == 0);
    CHECK(rout.find("no run file") != std::string::npos);
}

TEST_CASE("SIGTERM at full rate: every frame taken is in the file and the counts add up", "[e2e][faults]") {
    const int shards = GENERATE(1, 2);
    CAPTURE(shards);
    scratch_dir dir("term-full-" + std::to_string(shards));
    const std::string runs = dir / "runs";
    daqd_process d(dir, "term", runs, "", {"--run", "term"}, "", shards);
    // Unlimited rate: as fast as daq-sim can send on this machine.
    std::vector<std::string> sargs{DAQ_SIM_BIN, "--units", "4", "--duration", "20", "--json", dir / "term.sim.json",
                                   "--quiet"};
    for (const auto& t : d.sim_targets()) sargs.push_back(t);
    child sim(sargs, dir / "term.sim.out", dir / "term.sim.err");
    REQUIRE(eventually([&] { return d.metric("daq_frames_written_total") > 20000; }, 20s));
    d.proc->signal(SIGTERM);
    REQUIRE(d.proc->wait(60s) == 0);
    sim.signal(SIGTERM);
    sim.wait(10s);
    const auto s = read_json(dir / "term.json");
    INFO(s.dump(1));
    // Every frame assembled went somewhere counted: the file, or a named drop.
    const auto assembled = s["frames_complete"].get<std::uint64_t>() + s["frames_incomplete"].get<std::uint64_t>();
    CHECK(assembled == s["frames_written"].get<std::uint64_t>() + s["frames_unrecorded"].get<std::uint64_t>() +
                           s["frames_failed"].get<std::uint64_t>() + s["frames_rejected"].get<std::uint64_t>());
    CHECK(s["frames_unrecorded"] == 0);
    CHECK(s["frames_failed"] == 0);
    CHECK_FALSE(s["run_failed"].get<bool>());
    // Per unit, the same: frames assembled = complete + incomplete, and the
    // units' frames add up to the totals.
    std::uint64_t unit_frames = 0;
    for (const auto& u : s["units"]) unit_frames += u["frames_complete"].get<std::uint64_t>() + u["frames_incomplete"].get<std::uint64_t>();
    CHECK(unit_frames == assembled);
    CHECK(s["units"].size() == 4);
    auto [jrc, jout] = inspect(dir, {"--json", s["files"][0].get<std::string>()});
    REQUIRE(jrc == 0);
    CHECK(json::parse(jout)["total_frames"] == s["frames_written"]);
    auto [vrc, vout] = inspect(dir, {"--verify", s["files"][0].get<std::string>()});
    INFO(vout);
    CHECK(vrc == 0);
}

TEST_CASE("disk full: the run stops with one clear error, the file is whole, a new run resumes when there is room",
          "[e2e][faults]") {
    // 2 shards: the 2 units over 2 links, one receive shard each; bslz4:
    // compressed chunks (the test pattern shrinks ~25x: a smaller disk, a higher rate).
    const auto [shards, compression] =
        GENERATE(table<int, std::string>({{1, "none"}, {2, "none"}, {1, "bslz4"}}));
    CAPTURE(shards, compression);
    const bool packed = compression == "bslz4";
    scratch_dir dir("diskfull-" + std::to_string(shards) + compression);
    const std::string runs = dir / "small";
    tmpfs_mount fsys(runs, packed ? "10m" : "40m");
    if (!fsys.mounted) {
        WARN("cannot mount a tmpfs (needs root): disk-full test skipped");
        return;
    }
    daqd_process d(dir, "full", runs,
                   "flush_interval_ms = 200\nchunk_bytes = 65536\nreserve_bytes = \"4MiB\"\ncompression = \"" +
                       compression + "\"\n",
                   {"--run", "full"}, "", shards);
    // 2 units at 200 Mbit/s: 25 MB/s, the 40 MiB fill in under 2 s (compressed: 6 MiB at ~3 MB/s).
    child sim(sim_argv(d, {"--units", "2", "--duration", "30", "--rate", packed ? "600" : "200", "--quiet"}),
              dir / "full.sim.out", dir / "full.sim.err");
    REQUIRE(d.proc->wait_for_log("FAILED, no longer writing to", 30s));
    const std::string file = runs + "/full.h5";
    {
        const auto st = d.status();
        INFO(st.dump(1));
        REQUIRE(st["run"].is_object());
        CHECK(st["run"]["name"] == "full");
        CHECK(st["run"]["state"] == "failed");
        const std::string err = st["run"]["error"];
        CHECK(err.find("disk full") != std::string::npos);
        CHECK(err.find(file) != std::string::npos);
        CHECK(std::regex_search(err, std::regex("has [0-9]+ bytes free")));
    }
    CHECK(d.metric("daq_run_failed", "run=\"full\"") == 1);
    CHECK(d.metric("daq_storage_run_failures_total") == 1);
    // Frames keep arriving and are counted as not written; metrics keep coming.
    const double unwritten = d.metric("daq_frames_unwritten_total");
    CHECK(eventually([&] { return d.metric("daq_frames_unwritten_total") > unwritten; }, 10s));
    const double written = d.status()["writer"]["frames_written"].get<double>();
    // One error line for the whole event.
    CHECK(count_of(d.proc->err(), " error ") == 1);

    // The file is closed, whole and readable while daqd keeps running.
    auto [jrc, jout] = inspect(dir, {"--json", file});
    INFO(jout);
    REQUIRE(jrc == 0);
    CHECK(json::parse(jout)["total_frames"].get<double>() == written);
    auto [vrc, vout] = inspect(dir, {"--verify", file});
    INFO(vout);
    CHECK(vrc == 0);
    const long py = h5py_frames(dir, file);
    if (py >= 0) CHECK(py == static_cast<long>(written));

    // The operator makes room; a new run started over the API writes again.
    REQUIRE(fsys.resize("400m"));
    const std::string token = d.token(runs);
    auto started = web_test::http(d.http, "POST", "/api/v1/runs", R"({"name": "after"})", token);
    INFO(started.body);
    REQUIRE(started.status == 201);
    CHECK(d.status()["run"]["state"] == "recording");
    CHECK(d.metric("daq_run_failed", "run=\"after\"") == 0);
    const double base = d.status()["writer"]["frames_written"].get<double>();
    CHECK(eventually([&] { return d.status()["writer"]["frames_written"].get<double>() > base + 1000; }, 20s));
    auto stopped = web_test::http(d.http, "POST", "/api/v1/runs/stop", "", token);
    INFO(stopped.body);
    REQUIRE(stopped.status == 200);
    CHECK(json::parse(stopped.body)["failed"] == false);
    sim.signal(SIGTERM);
    sim.wait(10s);
    d.proc->signal(SIGTERM);
    REQUIRE(d.proc->wait(30s).has_value());
    auto [v2rc, v2out] = inspect(dir, {"--verify", runs + "/after.h5"});
    INFO(v2out);
    CHECK(v2rc == 0);
    auto [v3rc, v3out] = inspect(dir, {"--verify", file});
    CHECK(v3rc == 0);
}

TEST_CASE("disk full with no reserve: the write error names the file and free space, the next start mends the file, "
          "and frames_written equals the rows it keeps",
          "[e2e][faults]") {
    const auto [shards, compression] =
        GENERATE(table<int, std::string>({{1, "none"}, {2, "none"}, {1, "bslz4"}}));
    CAPTURE(shards, compression);
    const bool packed = compression == "bslz4";
    scratch_dir dir("diskfull-raw-" + std::to_string(shards) + compression);
    const std::string runs = dir / "small";
    tmpfs_mount fsys(runs, packed ? "6m" : "24m");
    if (!fsys.mounted) {
        WARN("cannot mount a tmpfs (needs root): disk-full test skipped");
        return;
    }
    daqd_process d(dir, "raw", runs,
                   "flush_interval_ms = 200\nchunk_bytes = 65536\nreserve_bytes = 0\ncompression = \"" + compression +
                       "\"\n",
                   {"--run", "raw"}, "", shards);
    child sim(sim_argv(d, {"--units", "2", "--duration", "30", "--rate", packed ? "600" : "200", "--quiet"}),
              dir / "raw.sim.out", dir / "raw.sim.err");
    REQUIRE(d.proc->wait_for_log("FAILED, no longer writing to", 30s));
    const std::string file = runs + "/raw.h5";
    const auto st = d.status();
    INFO(st.dump(1));
    CHECK(st["run"]["state"] == "failed");
    const std::string err = st["run"]["error"];
    CHECK(err.find(file) != std::string::npos);
    CHECK(std::regex_search(err, std::regex("[0-9]+ bytes free in ")));
    CHECK(d.metric("daq_run_failed", "run=\"raw\"") == 1);
    // The writer settles its counts right after the error line.
    double written_metric = -1;
    REQUIRE(eventually(
        [&] {
            const double a = d.metric("daq_frames_written_total");
            std::this_thread::sleep_for(100ms);
            written_metric = d.metric("daq_frames_written_total");
            return a == written_metric;
        },
        5s));
    sim.signal(SIGTERM);
    sim.wait(10s);
    d.proc->signal(SIGTERM);
    REQUIRE(d.proc->wait(30s).has_value());
    const auto s = read_json(dir / "raw.json");
    INFO(s.dump(1));
    CHECK(s["run_failed"].get<bool>());
    daqd::test::check_accounting(s);
    const auto written = s["frames_written"].get<double>();
    CHECK(written == written_metric);
    // Make room, as an operator would, and start again: daqd mends the file
    // (its journal names it), and it holds exactly what the summary said.
    REQUIRE(fsys.resize("64m"));
    daqd_process again(dir, "raw2", runs, "", {"--duration", "1"});
    REQUIRE(again.proc->wait(30s) == 0);
    auto [vrc, vout] = inspect(dir, {"--verify", file});
    INFO(again.proc->err());
    INFO(vout);
    CHECK(vrc == 0);
    auto [jrc, jout] = inspect(dir, {"--json", file});
    REQUIRE(jrc == 0);
    const auto in_file = json::parse(jout)["total_frames"].get<double>();
    CHECK(in_file > 0);
    CHECK(in_file == written);
}

TEST_CASE("writer stalled for 2 s: the default frame buffer (sized in time) holds every frame, and every block comes back",
          "[e2e][faults]") {
    const int shards = GENERATE(1, 2);
    CAPTURE(shards);
    scratch_dir dir("stall-" + std::to_string(shards));
    const std::string runs = dir / "runs";
    ::setenv("DAQD_FAULT_WRITE_STALL_MS", "2000", 1);  // the 10th chunk write takes 2 s
    daqd_process d(dir, "stall", runs, "", {"--run", "stall"}, "", shards);
    ::unsetenv("DAQD_FAULT_WRITE_STALL_MS");
    // The default buffer: 2.5 s at the loopback links' assumed 2000 Mbit/s each.
    const double blocks = d.metric("daq_frame_buffer_blocks");
    const double block_bytes = d.metric("daq_frame_buffer_block_bytes");
    REQUIRE(blocks * block_bytes >= shards * 2.5 * 2000e6 / 8);
    // 2 units x 4096 channels at 400 Mbit/s for 6 s: 100 MB arrive while the writer stalls.
    child sim(sim_argv(d, {"--units", "2", "--duration", "6", "--rate", "400", "--json", dir / "stall.sim.json", "--quiet"}),
              dir / "stall.sim.out", dir / "stall.sim.err");
    double least_free = blocks;
    while (!sim.wait(100ms)) least_free = std::min(least_free, d.metric("daq_frame_buffer_blocks_free"));
    REQUIRE(sim.wait(1ms) == 0);
    const auto sent = read_json(dir / "stall.sim.json");
    const auto frames_sent = sent["frames_sent"].get<std::uint64_t>();
    REQUIRE(eventually([&] { return d.metric("daq_frames_written_total") == static_cast<double>(frames_sent); }, 20s));
    // The stall happened, and the buffer took it: at least 1.5 s of data (75 MB) waited in blocks.
    CHECK(d.proc->err().find("chunk write stalls 2000 ms now") != std::string::npos);
    CHECK(blocks - least_free >= 1.5 * 50e6 / block_bytes);
    // After the run every block is back (the quiet units give theirs up, the
    // run file lets its last chunks' go).
    const std::string token = d.token(runs);
    REQUIRE(web_test::http(d.http, "POST", "/api/v1/runs/stop", "", token).status == 200);
    CHECK(eventually([&] { return d.metric("daq_frame_buffer_blocks_free") == blocks; }, 5s));
    d.proc->signal(SIGTERM);
    REQUIRE(d.proc->wait(60s) == 0);
    const auto s = read_json(dir / "stall.json");
    INFO(s.dump(1));
    CHECK(s["frames_overflow"].get<std::uint64_t>() == 0);
    CHECK(s["packets_lost"].get<std::uint64_t>() == 0);
    CHECK(s["ring_dropped"].get<std::uint64_t>() == 0);
    CHECK(s["kernel_drops"].get<std::uint64_t>() == 0);
    CHECK(s["frames_complete"].get<std::uint64_t>() == frames_sent);
    const std::string file = runs + "/stall.h5";
    auto [vrc, vout] = inspect(dir, {"--verify", file});
    INFO(vout);
    CHECK(vrc == 0);
    auto [jrc, jout] = inspect(dir, {"--json", file});
    REQUIRE(jrc == 0);
    CHECK(json::parse(jout)["total_frames"].get<std::uint64_t>() == frames_sent);
}

TEST_CASE("slow disk: a writer that cannot keep up costs counted, logged frame drops, bounded memory, no receive loss",
          "[e2e][faults]") {
    const int shards = GENERATE(1, 2);
    CAPTURE(shards);
    scratch_dir dir("slow-" + std::to_string(shards));
    const std::string runs = dir / "runs";
    ::setenv("DAQD_FAULT_SLOW_WRITE_US", "20000", 1);  // every chunk write takes 20 ms more
    daqd_process d(dir, "slow", runs,
                   "chunk_bytes = 65536\n[assembly]\npool_blocks = 32\n",
                   {"--run", "slow"}, "ring_slots = 1024\n", shards);
    ::unsetenv("DAQD_FAULT_SLOW_WRITE_US");
    // 2 units x 4096 channels at 200 Mbit/s = 3 052 frames/s; the writer
    // manages about 8 rows per 20 ms per unit (800 frames/s).
    child sim(sim_argv(d, {"--units", "2", "--duration", "6", "--rate", "200", "--json", dir / "slow.sim.json", "--quiet"}),
              dir / "slow.sim.out", dir / "slow.sim.err");
    std::uint64_t rss_first = 0, rss_max = 0;
    REQUIRE(eventually([&] { return d.metric("daq_frames_total", "state=\"overflow\"") > 0; }, 20s));
    rss_first = rss_kib(d.proc->pid());
    while (!sim.wait(100ms)) rss_max = std::max(rss_max, rss_kib(d.proc->pid()));
    REQUIRE(sim.wait(1ms) == 0);
    REQUIRE(eventually([&] { return d.metric("daq_frames_written_total") > 0; }, 10s));
    d.proc->signal(SIGTERM);
    REQUIRE(d.proc->wait(60s) == 0);
    const auto s = read_json(dir / "slow.json");
    const auto sent = read_json(dir / "slow.sim.json");
    INFO(s.dump(1));
    INFO(sent.dump(1));
    const std::string log = d.proc->err();
    INFO(log);
    // Dropped where documented: the frame pool in front of the writer, counted and logged.
    CHECK(s["frames_overflow"].get<std::uint64_t>() > 0);
    // One episode per unit: a line when it starts (and one when it ends), not one per drop.
    const auto lines = count_of(log, "frame pool exhausted: dropping frames (the writer is behind)");
    CHECK(lines >= 1);
    CHECK(lines <= 4);
    // The receiver was never blocked: no packet lost before assembly.
    CHECK(s["kernel_drops"] == 0);
    CHECK(s["ring_dropped"] == 0);
    CHECK(s["packets_lost"] == 0);
    // Every frame sent is accounted for: stored, or dropped as overflow.
    const auto frames_sent = sent["frames_sent"].get<std::uint64_t>();
    CHECK(s["frames_complete"].get<std::uint64_t>() + s["frames_incomplete"].get<std::uint64_t>() +
              s["frames_overflow"].get<std::uint64_t>() + s["frames_lost"].get<std::uint64_t>() ==
          frames_sent);
    CHECK(s["frames_lost"] == 0);
    CHECK(s["frames_written"].get<std::uint64_t>() ==
          s["frames_complete"].get<std::uint64_t>() + s["frames_incomplete"].get<std::uint64_t>());
    // Memory stays bounded by the pool while frames are dropped: no queue grows.
    INFO("RSS at first overflow " << rss_first << " KiB, max " << rss_max << " KiB");
    CHECK(rss_max < rss_first + 32 * 1024);
    auto [vrc, vout] = inspect(dir, {"--verify", s["files"][0].get<std::string>()});
    INFO(vout);
    CHECK(vrc == 0);
}

TEST_CASE("a flood of garbage while valid traffic flows: every valid frame arrives exactly, garbage counted by reason",
          "[e2e][faults]") {
    const int shards = GENERATE(1, 2);  // 2: valid traffic over 2 links, the garbage into the first
    CAPTURE(shards);
    scratch_dir dir("flood-" + std::to_string(shards));
    const std::string runs = dir / "runs";
    daqd_process d(dir, "flood", runs, "", {"--run", "flood"}, "", shards);
    // The garbage: random bytes (first byte never the magic's), datagrams cut
    // inside the header, and packets whose payload runs past their frame.
    std::atomic<bool> stop{false};
    std::uint64_t sent_random = 0, sent_short = 0, sent_beyond = 0;
    std::thread flood([&] {
        const int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
        sockaddr_in to{};
        to.sin_family = AF_INET;
        to.sin_port = htons(d.udp);
        to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        std::mt19937_64 rng(42);
        std::vector<std::byte> buf(1472);
        auto send = [&](std::size_t n) {
            ::sendto(fd, buf.data(), n, 0, reinterpret_cast<sockaddr*>(&to), sizeof to);
        };
        const auto start = std::chrono::steady_clock::now();
        std::uint64_t n = 0;
        while (!stop.load()) {
            // 30 000 datagrams/s, paced.
            const auto due = start + std::chrono::microseconds(n * 1000000 / 30000);
            if (std::chrono::steady_clock::now() < due) {
                std::this_thread::sleep_until(due);
                continue;
            }
            ++n;
            switch (n % 3) {
            case 0: {
                const std::size_t len = daq1::min_datagram_bytes + rng() % (buf.size() - daq1::min_datagram_bytes);
                for (auto& b : buf) b = static_cast<std::byte>(rng());
                if (static_cast<std::uint8_t>(buf[0]) == (daq1::magic & 0xff)) buf[0] = std::byte{0};
                send(len);
                ++sent_random;
                break;
            }
            case 1: {
                daq1::header h;
                h.unit_id = 7;
                h.frame_bytes = 8192;
                daq1::encode_header(h, buf.data());
                send(1 + rng() % (daq1::min_datagram_bytes - 1));
                ++sent_short;
                break;
            }
            default: {
                daq1::header h;
                h.unit_id = 9;
                h.frame_bytes = 1024;
                h.payload_offset = 1024 - 64;
                daq1::encode_header(h, buf.data());
                send(daq1::header_bytes + 1024);  // 1024 payload bytes from offset 960 of a 1024-byte frame
                ++sent_beyond;
                break;
            }
            }
        }
        ::close(fd);
    });
    auto [sim_rc, sim_out] =
        daqd::test::run(sim_argv(d, {"--units", "2", "--duration", "4", "--rate", "100", "--json", dir / "flood.sim.json",
                                     "--quiet"}),
                        dir / "flood.sim");
    stop = true;
    flood.join();
    REQUIRE(sim_rc == 0);
    const std::uint64_t garbage = sent_random + sent_short + sent_beyond;
    REQUIRE(eventually([&] { return d.metric("daq_packets_invalid_total") >= static_cast<double>(garbage); }, 10s));
    d.proc->signal(SIGTERM);
    REQUIRE(d.proc->wait(60s) == 0);
    const auto s = read_json(dir / "flood.json");
    const auto sent = read_json(dir / "flood.sim.json");
    INFO(s.dump(1));
    REQUIRE(s["kernel_drops"] == 0);  // at this rate nothing may overflow the socket
    CHECK(s["invalid"]["bad_magic"].get<std::uint64_t>() == sent_random);
    CHECK(s["invalid"]["too_short"].get<std::uint64_t>() == sent_short);
    CHECK(s["invalid"]["payload_beyond_frame"].get<std::uint64_t>() == sent_beyond);
    CHECK(s["invalid_total"].get<std::uint64_t>() == garbage);
    // The valid traffic, untouched.
    const auto frames_sent = sent["frames_sent"].get<std::uint64_t>();
    CHECK(s["frames_complete"].get<std::uint64_t>() == frames_sent);
    CHECK(s["frames_written"].get<std::uint64_t>() == frames_sent);
    CHECK(s["packets_lost"] == 0);
    CHECK(s["frames_incomplete"] == 0);
    auto [vrc, vout] = inspect(dir, {"--verify", s["files"][0].get<std::string>()});
    INFO(vout);
    CHECK(vrc == 0);
    // Logging stays quiet: no line per bad packet.
    CHECK(count_of(d.proc->err(), "\n") < 40);
}

TEST_CASE("restart: runs on disk are listed, a reused name is refused, nothing is overwritten", "[e2e][faults]") {
    const int shards = GENERATE(1, 2);
    CAPTURE(shards);
    scratch_dir dir("restart-" + std::to_string(shards));
    const std::string runs = dir / "runs";
    {
        daqd_process first(dir, "first", runs, "", {"--run", "morning"}, "", shards);
        auto [rc, out] = daqd::test::run(sim_argv(first, {"--frames", "200", "--quiet"}), dir / "first.sim");
        REQUIRE(rc == 0);
        REQUIRE(eventually([&] { return first.metric("daq_frames_written_total") >= 200; }, 10s));
        first.proc->signal(SIGTERM);
        REQUIRE(first.proc->wait(30s) == 0);
    }
    const auto size_before = fs::file_size(runs + "/morning.h5");
    const auto mtime_before = fs::last_write_time(runs + "/morning.h5");

    daqd_process second(dir, "second", runs, "");
    // A second server on the same directory is refused: it would write the same names.
    {
        auto [rc, out] = daqd::test::run({DAQD_BIN, "--output", runs, "--http", "off", "--duration", "1",
                                          "--listen", "127.0.0.1:" + std::to_string(daqd::test::free_port())},
                                         dir / "third");
        INFO(out);
        CHECK(rc == 1);
        CHECK(out.find("in use by another daqd (pid " + std::to_string(second.proc->pid()) + ")") != std::string::npos);
    }
    json listed;
    REQUIRE(eventually(
        [&] {
            auto r = web_test::http(second.http, "GET", "/api/v1/runs");
            if (r.status != 200) return false;
            listed = json::parse(r.body);
            return listed["runs"].size() == 1 && listed["runs"][0]["frames"] == 200;
        },
        10s));
    CHECK(listed["runs"][0]["name"] == "morning");
    const std::string token = second.token(runs);
    auto reused = web_test::http(second.http, "POST", "/api/v1/runs", R"({"name": "morning"})", token);
    INFO(reused.body);
    CHECK(reused.status == 409);
    CHECK(reused.body.find("already exists") != std::string::npos);
    auto fresh = web_test::http(second.http, "POST", "/api/v1/runs", R"({"name": "evening"})", token);
    CHECK(fresh.status == 201);
    auto stopped = web_test::http(second.http, "POST", "/api/v1/runs/stop", "", token);
    CHECK(stopped.status == 200);
    second.proc->signal(SIGTERM);
    REQUIRE(second.proc->wait(30s) == 0);
    CHECK(fs::file_size(runs + "/morning.h5") == size_before);
    CHECK(fs::last_write_time(runs + "/morning.h5") == mtime_before);
    CHECK(fs::exists(runs + "/evening.h5"));
}
