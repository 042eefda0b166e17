// The pipeline without threads: the real wiring (receiver, ring, assembler,
// processor, writer) built from a configuration, fed real UDP datagrams on
// 127.0.0.1 and pumped on the test thread to a run file that is read back.
#include "pipeline.hpp"
#include "storage_test_util.hpp"

#include "daqd/acquisition/daq1.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

using namespace storage_test;
namespace daq1 = daqd::acquisition::daq1;

namespace {

constexpr std::uint16_t unit = 7;
constexpr std::uint32_t channels = 256;
constexpr std::uint16_t packets_per_frame = 2;

daqd::config::config small_config(const fs::path& output, std::vector<std::string> stages) {
    auto cfg = daqd::config::load_default();
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

}  // namespace

TEST_CASE("pipeline: built without threads, pumped on the caller from UDP datagrams to a run file", "[daqd][pipeline]") {
    const std::vector<std::string> stages = GENERATE(std::vector<std::string>{}, std::vector<std::string>{"calibrate"});
    INFO("processing.stages has " << stages.size() << " stage(s)");
    temp_dir dir;
    const auto cfg = small_config(dir.path(), stages);
    daqd::pipeline p(cfg);
    CHECK((p.processor() != nullptr) == !stages.empty());

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
    CHECK(threads.size() == (stages.empty() ? 3u : 4u));
    CHECK(t.sum("daq_thread_failed") == 0);
    REQUIRE(s.files.size() == 1);
    CHECK(fs::path(s.files[0]) == dir.path() / "pumped.h5");

    h5::file file = open_read(dir.path() / "pumped.h5");
    check_unit(file.get(), unit, want);
}
