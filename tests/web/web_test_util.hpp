#pragma once
// Helpers of the [web] tests: a data path built from real components but
// driven by hand (no threads), a temporary directory, a minimal HTTP/1.1
// client over a plain socket, DAQ1 packets.
#include "daqd/acquisition/daq1.hpp"
#include "daqd/acquisition/packet_ring.hpp"
#include "daqd/acquisition/receiver.hpp"
#include "daqd/common/event.hpp"
#include "daqd/common/spsc_queue.hpp"
#include "daqd/config/config.hpp"
#include "daqd/processing/assembler.hpp"
#include "daqd/processing/block_pool.hpp"
#include "daqd/processing/live_tap.hpp"
#include "daqd/storage/run_catalog.hpp"
#include "pipeline.hpp"
#include "daqd/storage/run_writer.hpp"
#include "daqd/web/sources.hpp"
#include "http_client.hpp"
#include "wait_until.hpp"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace web_test {

namespace fs = std::filesystem;
namespace daq1 = daqd::acquisition::daq1;

struct temp_dir {
    fs::path path;
    explicit temp_dir(const std::string& name) {
        static std::atomic<unsigned> n{0};
        path = fs::temp_directory_path() /
               ("daqd-web-test-" + std::to_string(::getpid()) + "-" + std::to_string(n++) + "-" + name);
        fs::remove_all(path);
        fs::create_directories(path);
    }
    ~temp_dir() {
        std::error_code ec;
        fs::permissions(path, fs::perms::owner_all, fs::perm_options::add, ec);
        fs::remove_all(path, ec);
    }
    fs::path operator/(const std::string& f) const { return path / f; }
};

// Polls every millisecond.
template <typename Pred>
bool wait_until(Pred&& pred, std::chrono::milliseconds timeout) {
    return daqd_test::wait_until(pred, timeout, std::chrono::milliseconds(1));
}

// A one-packet DAQ1 datagram of `channels` samples (test pattern).
inline std::vector<std::byte> packet(std::uint16_t unit, std::uint64_t frame, std::uint32_t seq,
                                     std::uint32_t channels = 16, std::uint8_t flags = daq1::flag_test_pattern) {
    std::vector<std::byte> d(daq1::header_bytes + 2 * channels);
    daq1::header h;
    h.flags = flags;
    h.unit_id = unit;
    h.packet_seq = seq;
    h.packet_index = 0;
    h.packet_count = 1;
    h.frame_number = frame;
    h.timestamp_ns = frame * 1000;
    h.payload_offset = 0;
    h.frame_bytes = 2 * channels;
    daq1::encode_header(h, d.data());
    for (std::uint32_t c = 0; c < channels; ++c) {
        const std::uint16_t v = daq1::test_pattern(frame, unit, c);
        std::memcpy(d.data() + daq1::header_bytes + 2 * c, &v, 2);
    }
    return d;
}

// Real data-path objects, no threads started: the test plays the threads.
struct rig {
    daqd::config::config cfg;
    daqd::common::wake_event ring_ready, frames_ready;
    std::unique_ptr<daqd::acquisition::packet_ring> ring;
    std::unique_ptr<daqd::processing::block_pool> pool;
    std::unique_ptr<daqd::common::spsc_queue<daqd::processing::frame>> frames;
    std::unique_ptr<daqd::acquisition::receiver> receiver;
    std::unique_ptr<daqd::processing::assembler> assembler;
    std::unique_ptr<daqd::storage::writer> writer;
    daqd::processing::live_tap tap{std::chrono::nanoseconds(0)};
    daqd::storage::run_catalog catalog;
    std::function<std::optional<daqd::common::run_info>()> current;  // the run controls' (controls())

    explicit rig(const fs::path& output_dir) : catalog(output_dir) {
        static std::atomic<unsigned> n{0};
        cfg.acquisition.listen = {{"127.0.0.1", 0}};
        cfg.acquisition.ring_slots = 256;
        cfg.assembly.pool_blocks = 64;
        cfg.storage.output_dir = output_dir;
        ring = std::make_unique<daqd::acquisition::packet_ring>(
            "daqd-webtest-" + std::to_string(::getpid()) + "-" + std::to_string(n++), 256, 9128);
        pool = std::make_unique<daqd::processing::block_pool>(64, 65536);
        frames = std::make_unique<daqd::common::spsc_queue<daqd::processing::frame>>(64);
        receiver = std::make_unique<daqd::acquisition::receiver>(cfg.acquisition, *ring, ring_ready);
        assembler = std::make_unique<daqd::processing::assembler>(
            cfg, std::vector<daqd::acquisition::packet_ring*>{ring.get()}, ring_ready, *pool, *frames, frames_ready);
        writer = std::make_unique<daqd::storage::writer>(*frames, frames_ready);
    }

    // The assembler takes a packet (as if from link `link`); every frame it
    // closes goes through the live tap and back to the pool (no run file).
    void feed(const std::vector<std::byte>& d, std::uint16_t link = 0) {
        assembler->on_packet(d.data(), static_cast<std::uint32_t>(d.size()), 1'000'000'000ull, link);
        drain();
    }
    void drain(bool written = true) {
        while (auto f = frames->try_pop()) {
            tap.on_frame(*f, written);
            f->release();
        }
    }

    // What daqd's glue hands the web layer, over these modules.
    daqd::web::daq_view view() const {
        daqd::web::daq_view v;
        v.cfg = &cfg;
        v.telemetry = [this] {
            return daqd::collect_telemetry({{{*receiver, *ring, *pool, *assembler}}, nullptr, tap, *writer,
                                            cfg.storage.output_dir, "none", current ? current() : std::nullopt, 0, "test"});
        };
        v.live = [this](std::uint16_t unit, daqd::common::live_frame& out) { return tap.read(unit, out); };
        return v;
    }
    // `c` with the run catalogue of output_dir bound, read in this process.
    daqd::web::run_controls controls(daqd::web::run_controls c) {
        current = c.current;
        c.list = [this](const std::optional<std::string>& active) {
            return catalog.list(active, daqd::storage::run_catalog::read_in_process);
        };
        c.exists = [this](const std::string& name) { return catalog.exists(name); };
        c.files_of = [this](const std::string& name) { return catalog.files_of(name); };
        return c;
    }
};

}  // namespace web_test
