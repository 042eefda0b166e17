// The pipeline: the real wiring (receiver, ring, assembler, processor,
// writer) built from a configuration, fed real UDP datagrams on 127.0.0.1 to
// a run file that is read back; pumped on the test thread, and with threads,
// receive and assembly on one thread or on two (threads.combine_receive_assembly).
#include "pipeline.hpp"
#include "storage_test_util.hpp"
#include "wait_until.hpp"

#include "daqd/acquisition/daq1.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

using namespace storage_test;
using namespace std::chrono_literals;
namespace daq1 = daqd::acquisition::daq1;

namespace {

constexpr std::uint16_t unit = 7;
constexpr std::uint32_t channels = 256;
constexpr std::uint16_t packets_per_frame = 2;

daqd::config::config small_config(const fs::path& output, std::vector<std::string> stages,
                                  const std::string& combine = "auto") {
    auto cfg = daqd::config::load_default();
    cfg.threads.combine_receive_assembly = combine;
    cfg.acquisition.ring_name = "daqd-test-pipeline-{pid}";
    cfg.acquisition.ring_slots = 1024;
    cfg.acquisition.max_datagram_bytes = 2048;
    cfg.assembly.pool_blocks = 64;
    cfg.assembly.max_frame_bytes = 4096;
    cfg.storage.output_dir = output;
    cfg.storage.reserve_bytes = 0;
    cfg.storage.chunk_bytes = 4096;
    cfg.processing.stages = std::move(stages);
    cfg.processing.backend = "cpu";
    cfg.validate();
    cfg.acquisition.listen = {{"127.0.0.1", 0}};  // any free port (the configuration wants a fixed one)
    return cfg;
}

// The datagrams of one frame: its samples are the test pattern.
std::vector<std::vector<std::byte>> frame_packets(std::uint64_t frame, std::uint32_t& seq) {
    std::vector<std::vector<std::byte>> out;
    const std::uint32_t per_packet = channels / packets_per_frame;
    for (std::uint16_t i = 0; i < packets_per_frame; ++i) {
        std::vector<std::byte> d(daq1::header_bytes + per_packet * 2);
        daq1::header h;
        h.unit_id = unit;
        h.packet_seq = seq++;
        h.packet_index = i;
        h.packet_count = packets_per_frame;
        h.frame_number = frame;
        h.timestamp_ns = 1'000'000'000ull + frame * 1000;
        h.payload_offset = i * per_packet * 2;
        h.frame_bytes = channels * 2;
        daq1::encode_header(h, d.data());
        for (std::uint32_t c = 0; c < per_packet; ++c) {
            const std::uint16_t v = daq1::test_pattern(frame, unit, i * per_packet + c);
            d[daq1::header_bytes + 2 * c] = static_cast<std::byte>(v & 0xff);
            d[daq1::header_bytes + 2 * c + 1] = static_cast<std::byte>(v >> 8);
        }
        out.push_back(std::move(d));
    }
    return out;
}

std::size_t thread_count() {
    std::size_t n = 0;
    for ([[maybe_unused]] const auto& e : fs::directory_iterator("/proc/self/task")) ++n;
    return n;
}

// This process's threads by name, each with the CPUs it may run on
// ("Cpus_allowed_list", as ps and taskset show them).
std::map<std::string, std::string> threads_by_name() {
    std::map<std::string, std::string> out;
    for (const auto& e : fs::directory_iterator("/proc/self/task")) {
        std::string name, line, cpus;
        std::getline(std::ifstream(e.path() / "comm"), name);
        std::ifstream status(e.path() / "status");
        while (std::getline(status, line))
            if (line.rfind("Cpus_allowed_list:", 0) == 0) cpus = line.substr(line.find_first_not_of(" \t", 18));
        out[name] = cpus;
    }
    return out;
}

// A UDP socket sending to the pipeline's first link.
struct sender {
    int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_in to{};
    explicit sender(const daqd::pipeline& p) {
        REQUIRE(fd >= 0);
        to.sin_family = AF_INET;
        to.sin_port = htons(p.receiver().links().at(0).endpoint.port);
        ::inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
    }
    ~sender() { ::close(fd); }
    void send(const std::vector<std::byte>& d) const {
        REQUIRE(::sendto(fd, d.data(), d.size(), 0, reinterpret_cast<const sockaddr*>(&to), sizeof to) ==
                static_cast<ssize_t>(d.size()));
    }
};

// The rows frame `f` of the test unit has in the file.
void add_row(expected_rows& want, std::vector<std::uint16_t>& samples, std::uint64_t f) {
    daqd::processing::frame row;
    row.unit_id = unit;
    row.channels = channels;
    row.frame_number = f;
    row.timestamp_ns = 1'000'000'000ull + f * 1000;
    samples.resize(channels);
    for (std::uint32_t c = 0; c < channels; ++c) samples[c] = daq1::test_pattern(f, unit, c);
    row.samples = samples.data();
    want.add(row);
}

}  // namespace

TEST_CASE("pipeline: built without threads, pumped on the caller from UDP datagrams to a run file", "[daqd][pipeline]") {
    const std::vector<std::string> stages = GENERATE(std::vector<std::string>{}, std::vector<std::string>{"calibrate"});
    const std::string combine = GENERATE(as<std::string>{}, "on", "off");
    INFO("processing.stages has " << stages.size() << " stage(s), combine_receive_assembly = " << combine);
    temp_dir dir;
    const auto cfg = small_config(dir.path(), stages, combine);
    daqd::pipeline p(cfg);
    CHECK((p.processor() != nullptr) == !stages.empty());
    CHECK(p.receive_assembly_combined() == (combine == "on"));

    const std::size_t threads_before = thread_count();
    p.start(daqd::pipeline::drive::pump);
    p.start_run("pumped");  // on this thread: it is the writer thread
    CHECK(thread_count() == threads_before);

    const auto& ep = p.receiver().links().at(0).endpoint;
    const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(ep.port);
    ::inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);

    constexpr std::uint64_t frames = 40;
    constexpr std::uint64_t pumped_early = 25;  // the rest is left to stop()'s drain
    expected_rows want;
    std::uint32_t seq = 0;
    std::vector<std::uint16_t> samples(channels);
    for (std::uint64_t f = 0; f < frames; ++f) {
        for (const auto& d : frame_packets(f, seq))
            REQUIRE(::sendto(fd, d.data(), d.size(), 0, reinterpret_cast<const sockaddr*>(&to), sizeof to) ==
                    static_cast<ssize_t>(d.size()));
        daqd::processing::frame row;
        row.unit_id = unit;
        row.channels = channels;
        row.frame_number = f;
        row.timestamp_ns = 1'000'000'000ull + f * 1000;
        for (std::uint32_t c = 0; c < channels; ++c) samples[c] = daq1::test_pattern(f, unit, c);
        row.samples = samples.data();
        want.add(row);
        if (f + 1 == pumped_early) {
            // Loopback delivers at once; a pass of every stage moves them along.
            const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
            while (p.writer().counters().frames_written.get() < pumped_early &&
                   std::chrono::steady_clock::now() < deadline)
                p.pump();
            REQUIRE(p.writer().counters().frames_written.get() == pumped_early);
        }
    }
    ::close(fd);
    // The rest is still in the socket: stop() drains every stage in order
    // and closes the run with every frame in it.
    p.stop();
    CHECK(thread_count() == threads_before);

    const auto s = p.snapshot();
    CHECK(s.run_name == "pumped");
    CHECK_FALSE(s.run_failed);
    CHECK(s.packets_received == frames * packets_per_frame);
    CHECK(s.packets_lost == 0);
    CHECK(s.frames_complete == frames);
    CHECK(s.frames_written == frames);
    if (!stages.empty()) CHECK(s.frames_processed == frames);
    // Every stage's thread is listed in the telemetry, none failed.
    const auto t = p.telemetry();
    const auto threads = t.label_values("daq_thread_failed", "thread");
    CHECK(threads.size() == (stages.empty() ? 3u : 4u) - (combine == "on" ? 1u : 0u));
    CHECK(t.sum("daq_thread_failed") == 0);
    REQUIRE(s.files.size() == 1);
    CHECK(fs::path(s.files[0]) == dir.path() / "pumped.h5");

    h5::file file = open_read(dir.path() / "pumped.h5");
    check_unit(file.get(), unit, want);
}

TEST_CASE("pipeline: with threads, receive and assembly on one thread or two: every frame sent is in the run file, "
          "each thread named and pinned as configured",
          "[daqd][pipeline]") {
    const std::string combine = GENERATE(as<std::string>{}, "on", "off");
    INFO("threads.combine_receive_assembly = " << combine);
    temp_dir dir;
    auto cfg = small_config(dir.path(), {}, combine);
    cfg.threads.receiver_cpus = "0";  // CPU 0 is on every machine
    cfg.threads.writer_cpus = "0";
    daqd::pipeline p(cfg);
    const bool combined = combine == "on";
    CHECK(p.receive_assembly_combined() == combined);
    p.start();
    p.start_run("threaded");

    // Every data-path thread is there under its name; the pinned ones run on CPU 0 only.
    // Each thread names and pins itself when it starts: wait for the names.
    auto named = threads_by_name();
    daqd_test::wait_until(
        [&] {
            named = threads_by_name();
            const char* receiving = combined ? "daqd-recv+asm" : "daqd-receive";
            return named.contains("daqd-write") && named.contains(receiving) &&
                   (combined || named.contains("daqd-assemble")) && named.at("daqd-write") == "0" &&
                   named.at(receiving) == "0";
        },
        10s);
    CHECK(named.contains("daqd-write"));
    CHECK(named.contains("daqd-recv+asm") == combined);
    CHECK(named.contains("daqd-receive") == !combined);
    CHECK(named.contains("daqd-assemble") == !combined);
    CHECK(named.at("daqd-write") == "0");
    CHECK(named.at(combined ? "daqd-recv+asm" : "daqd-receive") == "0");

    constexpr std::uint64_t frames = 600;  // a multiple of burst
    constexpr std::uint64_t burst = 40;  // frames sent before waiting for them: fewer than the pool's 64 buffers
    const sender out(p);
    expected_rows want;
    std::vector<std::uint16_t> samples;
    std::uint32_t seq = 0;
    for (std::uint64_t f = 0; f < frames; ++f) {
        for (const auto& d : frame_packets(f, seq)) out.send(d);
        add_row(want, samples, f);
        // Paced by what was written, so that neither a socket buffer nor the
        // frame pool overflows: every burst is written while the pipeline runs.
        if ((f + 1) % burst == 0)
            REQUIRE(daqd_test::wait_until([&] { return p.writer().counters().frames_written.get() == f + 1; }, 10s));
    }
    p.stop();

    const auto s = p.snapshot();
    INFO(s.one_line());
    CHECK_FALSE(s.run_failed);
    CHECK(s.packets_received == frames * packets_per_frame);
    CHECK(s.packets_lost == 0);
    CHECK(s.ring_dropped == 0);
    CHECK(s.kernel_drops == 0);
    CHECK(s.frames_complete == frames);
    CHECK(s.frames_incomplete == 0);
    CHECK(s.frames_written == frames);
    // The telemetry names the threads that ran; none failed.
    const auto t = p.telemetry();
    const auto threads = t.label_values("daq_thread_failed", "thread");
    CHECK(threads.size() == (combined ? 2u : 3u));
    CHECK(std::find(threads.begin(), threads.end(), combined ? "daqd-recv+asm" : "daqd-receive") != threads.end());
    CHECK(t.sum("daq_thread_failed") == 0);
    REQUIRE(s.files.size() == 1);
    h5::file file = open_read(dir.path() / "threaded.h5");
    check_unit(file.get(), unit, want);
}
