// Hostile or odd input from units and from the host, injected into a running
// daqd (docs/RELIABILITY.md "Hostile input"): a far-future frame number, a
// unit that restarts its numbering, END_OF_STREAM on every frame with
// reordering, a flood of unit ids, a /dev/shm smaller than the ring, stale
// and shared ring names, SIGHUP and SIGQUIT. Each asserts what a user sees:
// recording goes on, every valid frame is stored exactly, the counters say
// what happened.
#include "daqd_fixture.hpp"

#include "daqd/acquisition/daq1.hpp"

#include <arpa/inet.h>
#include <catch2/catch.hpp>
#include <netinet/in.h>
#include <sys/socket.h>

#include <filesystem>
#include <fstream>

using daqd::test::child;
using daqd::test::count_of;
using daqd::test::daqd_process;
using daqd::test::eventually;
using daqd::test::h5py_frames;
using daqd::test::inspect_json;
using daqd::test::verify;
using daqd::test::read_json;
using daqd::test::scratch_dir;
using nlohmann::json;
namespace fs = std::filesystem;
namespace daq1 = daqd::acquisition::daq1;
using namespace std::chrono_literals;

namespace {

// A UDP socket sending to 127.0.0.1:port.
struct udp_out {
    int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
    sockaddr_in to{};
    explicit udp_out(std::uint16_t port) {
        to.sin_family = AF_INET;
        to.sin_port = htons(port);
        to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        const int buf = 4 << 20;
        ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
    }
    ~udp_out() { ::close(fd); }
    void send(const std::vector<std::byte>& d) const {
        REQUIRE(::sendto(fd, d.data(), d.size(), 0, reinterpret_cast<const sockaddr*>(&to), sizeof to) ==
                static_cast<ssize_t>(d.size()));
    }
};

// The datagrams of one frame (test pattern) sliced as a unit slices it into
// datagrams of at most `datagram` bytes (one datagram when it fits).
std::vector<std::vector<std::byte>> frame_packets(std::uint16_t unit, std::uint64_t frame, std::uint32_t& seq,
                                                  std::uint32_t channels, std::size_t datagram, std::uint8_t flags) {
    const auto l = daq1::frame_layout::for_datagram(2 * channels, datagram);
    std::vector<std::vector<std::byte>> out;
    for (std::uint16_t i = 0; i < l.packet_count; ++i) {
        std::vector<std::byte> d(daq1::header_bytes + l.bytes(i));
        daq1::header h;
        h.flags = static_cast<std::uint8_t>(daq1::flag_test_pattern | flags);
        h.unit_id = unit;
        h.packet_seq = seq++;
        h.packet_index = i;
        h.packet_count = l.packet_count;
        h.frame_number = frame;
        h.timestamp_ns = frame * 1000;
        h.payload_offset = l.offset(i);
        h.frame_bytes = 2 * channels;
        daq1::encode_header(h, d.data());
        for (std::uint32_t c = 0; c < l.bytes(i) / 2; ++c) {
            const std::uint16_t v = daq1::test_pattern(frame, unit, l.offset(i) / 2 + c);
            std::memcpy(d.data() + daq1::header_bytes + 2 * c, &v, 2);
        }
        out.push_back(std::move(d));
    }
    return out;
}

// Runs a Python script with Debian's Python and the checkout's daqload;
// {exit code, output}. Skips (returns -1) without /usr/bin/python3.
std::pair<int, std::string> python(const scratch_dir& dir, const std::string& name, const std::string& script,
                                   std::vector<std::string> args) {
    if (!fs::exists("/usr/bin/python3")) return {-1, "no /usr/bin/python3"};
    std::ofstream(dir / (name + ".py")) << script;
    std::vector<std::string> argv{"/usr/bin/env", "PYTHONPATH=" DAQD_SOURCE_DIR "/tools/daqload", "/usr/bin/python3",
                                  dir / (name + ".py")};
    argv.insert(argv.end(), args.begin(), args.end());
    return daqd::test::run(argv, dir / name);
}

// Anonymous memory of a process (heap, pools), without the shared-memory
// ring whose pages become resident as it fills.
std::uint64_t rss_anon_kib(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    for (std::string line; std::getline(in, line);)
        if (line.rfind("RssAnon:", 0) == 0) return std::stoull(line.substr(8));
    return 0;
}

const json* unit_of(const json& summary, int id) {
    for (const auto& u : summary["units"])
        if (u["unit"] == id) return &u;
    return nullptr;
}

}  // namespace

TEST_CASE("hostile: one datagram with a far-future frame_number costs that datagram only", "[e2e][hostile]") {
    scratch_dir dir("far-future");
    const std::string runs = dir / "runs";
    daqd_process d(dir, "ff", runs, "", {"--run", "ff"});
    child sim({DAQ_SIM_BIN, "--target", d.target(), "--units", "2", "--duration", "3", "--rate", "50", "--json",
               dir / "ff.sim.json", "--quiet"},
              dir / "ff.sim.out", dir / "ff.sim.err");
    REQUIRE(eventually([&] { return d.metric("daq_frames_total", "state=\"complete\"") > 100; }, 10s));
    // Unit 0's frame size (daq-sim: 4096 channels), a valid header, frame 2^40.
    std::uint32_t bogus_seq = 0x5eed0000u;
    udp_out(d.udp).send(frame_packets(0, 1ull << 40, bogus_seq, 4096, 9000, 0).at(0));
    REQUIRE(sim.wait(30s) == 0);
    const auto sent1 = read_json(dir / "ff.sim.json");

    // The next run records that unit again (a second daq-sim run: a new stream from frame 0).
    const std::string token = d.token(runs);
    REQUIRE(eventually([&] { return d.metric("daq_frames_written_total") >= sent1["frames_sent"].get<double>(); }, 10s));
    REQUIRE(web_test::http(d.http, "POST", "/api/v1/runs/stop", "", token).status == 200);
    REQUIRE(web_test::http(d.http, "POST", "/api/v1/runs", R"({"name": "ff2"})", token).status == 201);
    auto [rc2, out2] = daqd::test::run({DAQ_SIM_BIN, "--target", d.target(), "--units", "2", "--frames", "300",
                                        "--rate", "50", "--json", dir / "ff2.sim.json", "--quiet"},
                                       dir / "ff2.sim");
    INFO(out2);
    REQUIRE(rc2 == 0);
    d.proc->signal(SIGTERM);
    REQUIRE(d.proc->wait(60s) == 0);

    const auto s = read_json(dir / "ff.json");
    INFO(s.dump(1));
    CHECK(s["invalid"]["frame_out_of_window"] == 1);
    CHECK(s["frames_lost"] == 0);
    CHECK(s["late"] == 0);
    CHECK(s["packets_lost"] == 0);
    CHECK(s["frames_incomplete"] == 0);
    const auto first = inspect_json(dir, {runs + "/ff.h5"});
    INFO(first.dump(1));
    CHECK(first["total_frames"] == sent1["frames_sent"]);
    for (const auto& u : first["units"]) {
        CHECK(u["frames_lost_in_gaps"] == 0);
        CHECK(u["last_frame"].get<std::uint64_t>() < (1ull << 40));  // no row for the bogus frame
    }
    verify(dir, {runs + "/ff.h5"});
    const auto second = inspect_json(dir, {runs + "/ff2.h5"});
    CHECK(second["total_frames"] == 600);
    REQUIRE(second["units"].size() == 2);
    for (const auto& u : second["units"]) CHECK(u["frames"] == 300);
    verify(dir, {runs + "/ff2.h5"});
}

TEST_CASE("hostile: a unit that restarts its frame numbers mid-run keeps both streams, in two files",
          "[e2e][hostile]") {
    scratch_dir dir("restart-numbers");
    const std::string runs = dir / "runs";
    daqd_process d(dir, "rs", runs, "flush_interval_ms = 100\n", {"--run", "rs"});
    // Frames 1000..2999 (no END_OF_STREAM), then, as after a firmware reset, 0..1999 (packet_seq from 0 again).
    auto [rc1, o1] = daqd::test::run({DAQ_SIM_BIN, "--target", d.target(), "--first-frame", "1000", "--frames",
                                      "2000", "--rate", "50", "--no-eos", "--quiet"},
                                     dir / "rs.sim1");
    REQUIRE(rc1 == 0);
    auto [rc2, o2] = daqd::test::run(
        {DAQ_SIM_BIN, "--target", d.target(), "--frames", "2000", "--rate", "50", "--quiet"}, dir / "rs.sim2");
    REQUIRE(rc2 == 0);
    REQUIRE(eventually([&] { return d.metric("daq_frames_written_total") >= 4000; }, 10s));
    CHECK(d.metric("daq_unit_stream_restarts_total", "unit=\"0\"") == 1);

    SECTION("stopped cleanly") {
        d.proc->signal(SIGTERM);
        REQUIRE(d.proc->wait(60s) == 0);
        const auto s = read_json(dir / "rs.json");
        INFO(s.dump(1));
        CHECK(s["frames_written"] == 4000);
        CHECK(s["frames_complete"] == 4000);
        CHECK(s["duplicates"] == 0);
        CHECK(s["late"] == 0);
        CHECK(s["packets_lost"] == 0);
        CHECK(s["frames_lost"] == 0);
        CHECK(s.value("frames_rejected", 0) == 0);
    }
    SECTION("killed, then mended at the next start") {
        // Everything flushed (flush every 100 ms), then kill -9: the second file is left open.
        REQUIRE(eventually([&] { return d.metric("daq_storage_flush_seconds_count") >= 3; }, 5s));
        const double flushes = d.metric("daq_storage_flush_seconds_count");
        REQUIRE(eventually([&] { return d.metric("daq_storage_flush_seconds_count") >= flushes + 2; }, 5s));
        d.proc->signal(SIGKILL);
        d.proc->wait(10s);
        daqd_process again(dir, "rs-again", runs, "", {"--duration", "1"});
        REQUIRE(again.proc->wait(30s) == 0);
        INFO(again.proc->err());
        CHECK(again.proc->err().find("recovered") != std::string::npos);
    }
    // Two files; rows ascend in each; the unit group says which stream.
    REQUIRE(fs::exists(runs + "/rs.h5"));
    REQUIRE(fs::exists(runs + "/rs_00001.h5"));
    const auto j = inspect_json(dir, {runs + "/rs.h5", runs + "/rs_00001.h5"});
    INFO(j.dump(1));
    CHECK(j["total_frames"] == 4000);
    REQUIRE(j["units"].size() == 1);
    CHECK(j["units"][0]["streams"] == 2);
    CHECK(j["units"][0]["frames_lost_in_gaps"] == 0);
    verify(dir, {runs + "/rs.h5", runs + "/rs_00001.h5"});
    // h5py and daqload read both streams, in order.
    auto [prc, pout] = python(dir, "streams",
                              "import sys, h5py, numpy as np, daqload\n"
                              "for name, first, stream in ((sys.argv[1], 1000, 0), (sys.argv[2], 0, 1)):\n"
                              "    with h5py.File(name, 'r') as f:\n"
                              "        g = f['units/u0']\n"
                              "        assert int(g.attrs['stream']) == stream, (name, g.attrs['stream'])\n"
                              "        fn = g['frame_number'][:]\n"
                              "        assert (fn == np.arange(first, first + 2000)).all(), (name, fn[:3], fn[-3:])\n"
                              "run = daqload.open_run(sys.argv[3])\n"
                              "assert run.frame_count(0) == 4000, run.frame_count(0)\n"
                              "fn = run.read(0, fields=('frame_number',))['frame_number']\n"
                              "assert (fn[:2000] == np.arange(1000, 3000)).all() and (fn[2000:] == np.arange(2000)).all()\n"
                              "print('ok')\n",
                              {runs + "/rs.h5", runs + "/rs_00001.h5", runs + "/rs"});
    INFO(pout);
    if (prc != -1) CHECK(prc == 0);
}

TEST_CASE("hostile: END_OF_STREAM on every frame with frames reordered: every frame complete, none rejected",
          "[e2e][hostile]") {
    scratch_dir dir("eos-every-frame");
    const std::string runs = dir / "runs";
    daqd_process d(dir, "eos", runs, "", {"--run", "eos"});
    udp_out out(d.udp);
    // 1000 channels in 512-byte datagrams: 5 packets a frame, each with END_OF_STREAM; the
    // packets of frame k+1 interleaved with those of frame k, k+1 first.
    constexpr std::uint64_t frames = 2000;
    std::uint32_t seq = 0;
    for (std::uint64_t k = 0; k < frames; k += 2) {
        const auto a = frame_packets(5, k, seq, 1000, 512, daq1::flag_end_of_stream);
        const auto b = frame_packets(5, k + 1, seq, 1000, 512, daq1::flag_end_of_stream);
        for (std::size_t i = 0; i < a.size(); ++i) {
            out.send(b[i]);
            out.send(a[i]);
        }
        if (k % 64 == 0) std::this_thread::sleep_for(1ms);  // about 60 Mbit/s: no socket overflow
    }
    REQUIRE(eventually([&] { return d.metric("daq_frames_written_total") >= frames; }, 10s));
    d.proc->signal(SIGTERM);
    REQUIRE(d.proc->wait(60s) == 0);
    const auto s = read_json(dir / "eos.json");
    INFO(s.dump(1));
    REQUIRE(s["kernel_drops"] == 0);
    CHECK(s["frames_complete"] == frames);
    CHECK(s["frames_incomplete"] == 0);
    CHECK(s["frames_written"] == frames);
    CHECK(s.value("frames_rejected", 0) == 0);
    CHECK(s["late"] == 0);
    CHECK(s["packets_lost"] == 0);
    const auto j = inspect_json(dir, {runs + "/eos.h5"});
    CHECK(j["total_frames"] == frames);
    CHECK(j["units"][0]["incomplete_frames"] == 0);
    verify(dir, {runs + "/eos.h5"});
}

TEST_CASE("hostile: a flood of unit ids is bounded in memory, file and /metrics, and real units are recorded exactly",
          "[e2e][hostile]") {
    scratch_dir dir("unit-flood");
    const std::string runs = dir / "runs";
    // A frame buffer of 1024 blocks of 64 KiB: every learned unit (at most units.max_learned = 256
    // at once) fills a block of its own, given back 100 ms after its last frame; what traffic alone
    // touches stays small next to what 5000 units would cost unbounded.
    daqd_process d(dir, "flood", runs, "chunk_bytes = 65536\n[assembly]\npool_blocks = 1024\n", {"--run", "flood"});
    child sim({DAQ_SIM_BIN, "--target", d.target(), "--units", "2", "--duration", "4", "--rate", "50", "--json",
               dir / "flood.sim.json", "--quiet"},
              dir / "flood.sim.out", dir / "flood.sim.err");
    REQUIRE(eventually([&] { return d.metric("daq_frames_total", "state=\"complete\"") > 50; }, 10s));
    const auto rss_before = rss_anon_kib(d.proc->pid());
    // 5000 made-up unit ids, one small valid datagram each (a complete one-packet frame).
    {
        udp_out out(d.udp);
        for (std::uint32_t i = 0; i < 5000; ++i) {
            std::uint32_t seq = 0;
            out.send(frame_packets(static_cast<std::uint16_t>(1000 + i), 0, seq, 16, 9000, 0).at(0));
            if (i % 256 == 255) std::this_thread::sleep_for(2ms);
        }
    }
    const double limit = 256 - 2;  // units.max_learned, less daq-sim's two
    REQUIRE(eventually([&] { return d.metric("daq_packets_invalid_total", "reason=\"unit_limit\"") >= 5000 - limit; },
                       10s));
    const auto metrics_bytes = d.metrics().size();
    REQUIRE(sim.wait(30s) == 0);
    const auto rss_after = rss_anon_kib(d.proc->pid());
    d.proc->signal(SIGTERM);
    REQUIRE(d.proc->wait(60s) == 0);
    const auto s = read_json(dir / "flood.json");
    const auto sent = read_json(dir / "flood.sim.json");
    INFO(s["invalid"].dump() << " rss " << rss_before << " -> " << rss_after << " KiB, /metrics " << metrics_bytes);
    CHECK(s["invalid"]["unit_limit"] == 5000 - limit);
    CHECK(s["units"].size() == 256);
    // The real units: every frame, exactly.
    for (int id : {0, 1}) {
        const json* u = unit_of(s, id);
        REQUIRE(u != nullptr);
        CHECK((*u)["frames_incomplete"] == 0);
    }
    CHECK(s["frames_written"].get<std::uint64_t>() == sent["frames_sent"].get<std::uint64_t>() + 254);
    CHECK(s["frames_overflow"] == 0);
    // Bounded: a few MiB of memory, a file of the data plus small chunks, /metrics of 256 units.
    // Measured: about 160 KiB per learned unit (chunk buffers, HDF5 objects), so
    // 256 units and a used-up pool stay under 96 MiB; 5000 units unbounded would
    // take about 800 MiB.
#if defined(__SANITIZE_ADDRESS__)
    // AddressSanitizer keeps freed memory in quarantine (up to 256 MiB) and
    // doubles allocations with redzones: RSS says nothing there.
    WARN("RSS not checked under AddressSanitizer (" << rss_before << " -> " << rss_after << " KiB); the release build checks it");
#else
    CHECK(rss_after < rss_before + 96 * 1024);
#endif
    const auto file_bytes = fs::file_size(runs + "/flood.h5");
    const auto data_bytes = sent["frames_sent"].get<std::uint64_t>() * (8192 + 18);
    CHECK(file_bytes < data_bytes + 254 * 64 * 1024 + (16u << 20));
    CHECK(metrics_bytes < 1u << 20);
    verify(dir, {runs + "/flood.h5"});
}

TEST_CASE("hostile: a /dev/shm smaller than the ring (a container's 64 MiB): the default configuration records",
          "[e2e][hostile]") {
    if (::geteuid() != 0 || !fs::exists("/usr/bin/unshare")) {
        WARN("needs root and unshare (a private mount namespace with a 64 MiB /dev/shm): not run");
        return;
    }
    scratch_dir dir("small-shm");
    const std::string runs = dir / "runs";
    const auto udp = daqd::test::free_port(SOCK_DGRAM);
    const auto http = daqd::test::free_port(SOCK_STREAM);
    // daqd in its own mount namespace whose /dev/shm is a 64 MiB tmpfs; the default ring is 144 MiB.
    const std::string cmd = "mount -t tmpfs -o size=64m tmpfs /dev/shm && exec " DAQD_BIN " --http 127.0.0.1:" +
                            std::to_string(http) + " --output " + runs + " --listen 127.0.0.1:" + std::to_string(udp) +
                            " --run shm --summary-json " + (dir / "shm.json");
    child d({"/usr/bin/unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", cmd}, dir / "shm.out",
            dir / "shm.err");
    REQUIRE(d.wait_for_log("run shm started", 20s));
    CHECK(d.err().find("the ring is in anonymous memory (memfd)") != std::string::npos);
    auto [rc, out] = daqd::test::run({DAQ_SIM_BIN, "--target", "127.0.0.1:" + std::to_string(udp), "--units", "2",
                                      "--frames", "2000", "--rate", "200", "--json", dir / "shm.sim.json", "--quiet"},
                                     dir / "shm.sim");
    REQUIRE(rc == 0);
    const auto written = [&] {
        const auto r = web_test::http(http, "GET", "/metrics");
        const auto at = r.body.find("\ndaq_frames_written_total{unit=\"1\"} ");
        return at == std::string::npos ? 0.0 : std::stod(r.body.substr(r.body.find(' ', at + 1) + 1));
    };
    REQUIRE(eventually([&] { return written() >= 2000; }, 10s));
    d.signal(SIGTERM);
    REQUIRE(d.wait(60s) == 0);
    const auto s = read_json(dir / "shm.json");
    INFO(s.dump(1) << d.err());
    CHECK(s["frames_written"] == 4000);
    CHECK(s["ring_dropped"] == 0);
    verify(dir, {runs + "/shm.h5"});
}

TEST_CASE("hostile: a ring larger than the machine's memory is refused at start and by --check-host",
          "[e2e][hostile]") {
    scratch_dir dir("huge-ring");
    std::ofstream(dir / "huge.toml") << "[acquisition]\nring_slots = 16777216\nmax_datagram_bytes = 65535\n"
                                     << "listen = [\"127.0.0.1:" << daqd::test::free_port() << "\"]\n"
                                     << "[http]\nlisten = \"\"\n[storage]\noutput_dir = \"" << (dir / "runs") << "\"\n";
    auto [rc, out] = daqd::test::run({DAQD_BIN, "--config", dir / "huge.toml", "--duration", "1"}, dir / "start");
    INFO(out);
    CHECK(rc == 1);
    CHECK(out.find("acquisition.ring_slots = 16777216") != std::string::npos);
    CHECK(out.find("memory available") != std::string::npos);
    auto [hrc, hout] = daqd::test::run({DAQD_BIN, "--config", dir / "huge.toml", "--check-host"}, dir / "host");
    INFO(hout);
    CHECK(hrc == 1);
    CHECK(hout.find("ring_memory") != std::string::npos);
    CHECK(hout.find("set acquisition.ring_slots = ") != std::string::npos);
}

TEST_CASE("hostile: rings: a dead daqd's ring is removed at the next start, a live one's name is refused",
          "[e2e][hostile]") {
    scratch_dir dir("rings");
    const std::string ring = "daqd-e2e-" + std::to_string(::getpid());  // a fixed acquisition.ring_name
    const std::string acq = "ring_name = \"" + ring + "\"\n";
    daqd_process a(dir, "a", dir / "runs-a", "", {"--run", "a"}, acq);
    REQUIRE(fs::exists("/dev/shm/" + ring + "-0"));
    // A second daqd with the same ring name: refused, the first untouched and recording.
    {
        std::ofstream(dir / "b.toml") << "[acquisition]\n" << acq << "listen = [\"127.0.0.1:"
                                      << daqd::test::free_port() << "\"]\n[http]\nlisten = \"\"\n[storage]\noutput_dir = \""
                                      << (dir / "runs-b") << "\"\n";
        auto [rc, out] = daqd::test::run({DAQD_BIN, "--config", dir / "b.toml", "--duration", "1"}, dir / "b");
        INFO(out);
        CHECK(rc == 1);
        CHECK(out.find("packet ring of a running process (pid " + std::to_string(a.proc->pid()) + ")") !=
              std::string::npos);
    }
    REQUIRE(fs::exists("/dev/shm/" + ring + "-0"));
    auto [src, sout] = daqd::test::run({DAQ_SIM_BIN, "--target", a.target(), "--frames", "300", "--quiet"}, dir / "a.sim");
    REQUIRE(src == 0);
    REQUIRE(eventually([&] { return a.metric("daq_frames_written_total") >= 300; }, 10s));
    // kill -9 leaves the ring; the next daqd of that name takes its place, says so, records.
    a.proc->signal(SIGKILL);
    a.proc->wait(10s);
    REQUIRE(fs::exists("/dev/shm/" + ring + "-0"));
    daqd_process c(dir, "c", dir / "runs-c", "", {"--run", "c"}, acq);
    INFO(c.proc->err());
    CHECK(c.proc->err().find("removed stale packet ring /dev/shm/" + ring + "-0") != std::string::npos);
    auto [crc, cout_] = daqd::test::run({DAQ_SIM_BIN, "--target", c.target(), "--frames", "300", "--quiet"}, dir / "c.sim");
    REQUIRE(crc == 0);
    REQUIRE(eventually([&] { return c.metric("daq_frames_written_total") >= 300; }, 10s));
    c.proc->signal(SIGTERM);
    REQUIRE(c.proc->wait(30s) == 0);
    CHECK_FALSE(fs::exists("/dev/shm/" + ring + "-0"));
}

TEST_CASE("hostile: SIGHUP (a closed terminal) never ends a run, SIGQUIT stops cleanly", "[e2e][hostile]") {
    scratch_dir dir("signals");
    const std::string runs = dir / "runs";
    daqd_process d(dir, "hup", runs, "", {"--run", "hup"});
    const std::string ring = "/dev/shm/daqd-" + std::to_string(d.proc->pid()) + "-0";
    child sim({DAQ_SIM_BIN, "--target", d.target(), "--units", "2", "--duration", "2", "--rate", "50", "--json",
               dir / "hup.sim.json", "--quiet"},
              dir / "hup.sim.out", dir / "hup.sim.err");
    REQUIRE(eventually([&] { return d.metric("daq_frames_written_total") > 50; }, 10s));
    d.proc->signal(SIGHUP);
    // It re-reads its configuration file (unchanged) and carries on.
    REQUIRE(d.proc->wait_for_log("SIGHUP: reloaded", 5s));
    CHECK(d.proc->err().find(": nothing changed") != std::string::npos);
    REQUIRE(sim.wait(30s) == 0);
    const auto sent = read_json(dir / "hup.sim.json");
    // Still serving and recording after the hangup.
    REQUIRE(eventually([&] { return d.metric("daq_frames_written_total") >= sent["frames_sent"].get<double>(); }, 10s));
    CHECK(d.status()["run"]["state"] == "recording");
    REQUIRE(fs::exists(ring));
    d.proc->signal(SIGQUIT);
    REQUIRE(d.proc->wait(30s) == 0);
    const auto s = read_json(dir / "hup.json");
    CHECK(s["frames_written"] == sent["frames_sent"]);
    CHECK_FALSE(fs::exists(ring));  // nothing left behind
    // Closed cleanly: a plain (non-SWMR) reader opens it without recovery.
    const long py = h5py_frames(dir, runs + "/hup.h5");
    if (py != -1) CHECK(py == sent["frames_sent"].get<long>());
}
