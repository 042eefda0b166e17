// The processor (the processing thread's body, driven single-threaded
// through poll()) and the pedestal stage.
#include "daqd/common/event.hpp"
#include "daqd/common/spsc_queue.hpp"
#include "daqd/processing/block_pool.hpp"
#include "daqd/processing/live_view.hpp"
#include "daqd/processing/processor.hpp"
#include "daqd/processing/stage.hpp"

#include <catch2/catch.hpp>

#include <cmath>
#include <random>
#include <vector>

using namespace daqd::processing;
using daqd::common::spsc_queue;
using daqd::common::wake_event;

namespace {

struct rig {
    block_pool pool;
    spsc_queue<frame> in;
    spsc_queue<frame> out;
    wake_event in_ready, out_ready;
    explicit rig(bool calibrated, std::size_t buffers = 64, std::size_t bytes = 2 * 4097)
        : pool(buffers, bytes, calibrated), in(buffers), out(buffers) {}

    // Takes a pool buffer, fills it via `fill`, queues the frame.
    template <typename F>
    void push(std::uint16_t unit, std::uint32_t channels, std::uint64_t number, F&& fill, std::uint16_t missing = 0) {
        const auto index = pool.acquire();
        REQUIRE(index.has_value());
        frame f;
        f.unit_id = unit;
        f.channels = channels;
        f.frame_number = number;
        f.missing_packets = missing;
        f.pool = &pool;  // one frame per block, row 0
        f.block = *index;
        f.block_rows = 1;
        f.samples = reinterpret_cast<std::uint16_t*>(pool.data(*index));
        for (std::uint32_t c = 0; c < channels; ++c) f.samples[c] = fill(c);
        REQUIRE(in.try_push(f));
    }
};

}  // namespace

TEST_CASE("processor: frames pass in batches, calibrated into the pool's calibrated area", "[processing]") {
    rig r(true);
    processor_options o;
    o.stages = {"calibrate", "dose", "live"};
    o.backend = "cpu";
    o.batch_frames = 4;
    o.threshold = {threshold_mode::absolute, 0.5f};
    live_view view(std::chrono::milliseconds(10));
    processor p(o, r.in, r.in_ready, r.out, r.out_ready, &view);
    CHECK(p.backend_name() == "cpu");
    CHECK(p.calibrates());
    CHECK(p.stage_names() == std::vector<std::string>{"calibrate", "dose", "live"});
    for (std::uint64_t i = 0; i < 10; ++i) r.push(7, 4097, i, [&](std::uint32_t c) { return static_cast<std::uint16_t>(c % 3 + i); });
    CHECK(p.poll() == 10);
    CHECK(p.counters().frames.get() == 10);
    CHECK(p.counters().batches.get() == 3);  // 4 + 4 + 2
    CHECK(p.counters().backlog_peak.get() == 10);
    for (std::uint64_t i = 0; i < 10; ++i) {
        auto f = r.out.try_pop();
        REQUIRE(f.has_value());
        CHECK(f->frame_number == i);
        REQUIRE(f->calibrated == r.pool.calibrated(f->block));
        // Identity constants (no file): calibrated = raw where raw >= 0.5.
        for (std::uint32_t c : {0u, 1u, 2u, 4096u}) {
            const float raw = static_cast<float>(c % 3 + i);
            CHECK(f->calibrated[c] == (raw < 0.5f ? 0.0f : raw));
        }
        f->release();
    }
    live_frame s;
    REQUIRE(view.read(7, s));
    CHECK(s.dose_frames > 0);
    // A dose reset (a run starts) applies before the next batch.
    p.request_dose_reset();
    r.push(7, 4097, 10, [](std::uint32_t) { return std::uint16_t{1}; });
    CHECK(p.poll() == 1);
    auto f = r.out.try_pop();
    REQUIRE(f.has_value());
    f->release();
}

TEST_CASE("processor: a new threshold applies from the next batch, frames stamped with its epoch", "[processing]") {
    rig r(true);
    processor_options o;
    o.stages = {"calibrate", "dose"};
    o.backend = "cpu";
    o.batch_frames = 4;
    o.threshold = {threshold_mode::absolute, 5.0f};
    processor p(o, r.in, r.in_ready, r.out, r.out_ready, nullptr);
    CHECK(p.threshold_epoch() == 0);
    auto fill = [](std::uint32_t c) { return static_cast<std::uint16_t>(c % 10); };  // 0..9, identity constants
    auto check_batch = [&](std::size_t n, float threshold, std::uint8_t epoch) {
        for (std::size_t i = 0; i < n; ++i) {
            auto f = r.out.try_pop();
            REQUIRE(f.has_value());
            CHECK(f->threshold_epoch == epoch);
            for (std::uint32_t c = 0; c < 20; ++c) {
                const float raw = static_cast<float>(c % 10);
                CHECK(f->calibrated[c] == (raw < threshold ? 0.0f : raw));
            }
            f->release();
        }
    };
    for (std::uint64_t i = 0; i < 3; ++i) r.push(1, 64, i, fill);
    CHECK(p.poll() == 3);
    check_batch(3, 5.0f, 0);
    // Asked for from another thread; nothing changes until the next batch.
    p.request_threshold({threshold_mode::absolute, 2.0f}, 1);
    CHECK(p.threshold_epoch() == 0);
    for (std::uint64_t i = 3; i < 6; ++i) r.push(1, 64, i, fill);
    CHECK(p.poll() == 3);
    CHECK(p.threshold_epoch() == 1);
    check_batch(3, 2.0f, 1);
    // A unit first seen after the change gets the new threshold too.
    r.push(2, 64, 0, fill);
    CHECK(p.poll() == 1);
    check_batch(1, 2.0f, 1);
}

TEST_CASE("processor: a unit whose frame size changed (relearned) passes on unprocessed, in order", "[processing]") {
    // The stages hold per-channel state of a unit's first size (constants,
    // dose); a frame of another size must not reach them (a larger one would
    // read and write past that state). It passes on uncalibrated, after the
    // unit's frames of the old size.
    rig r(true);
    processor_options o;
    o.stages = {"calibrate", "dose", "live"};
    o.backend = "cpu";
    o.batch_frames = 8;
    o.threshold = {threshold_mode::absolute, 0.5f};
    live_view view(std::chrono::milliseconds(10));
    processor p(o, r.in, r.in_ready, r.out, r.out_ready, &view);
    for (std::uint64_t i = 0; i < 3; ++i) r.push(7, 1000, i, [](std::uint32_t) { return std::uint16_t{5}; });
    for (std::uint64_t i = 3; i < 6; ++i) r.push(7, 4097, i, [](std::uint32_t) { return std::uint16_t{9}; });
    CHECK(p.poll() == 6);
    for (std::uint64_t i = 0; i < 6; ++i) {
        auto f = r.out.try_pop();
        REQUIRE(f.has_value());
        CHECK(f->frame_number == i);
        if (i < 3) {
            REQUIRE(f->calibrated != nullptr);
            CHECK(f->calibrated[999] == 5.0f);
        } else {
            CHECK(f->channels == 4097);
            CHECK(f->calibrated == nullptr);
        }
        f->release();
    }
    live_frame s;
    REQUIRE(view.read(7, s));
    CHECK(s.channels == 1000);  // the view keeps the unit's first layout
}

TEST_CASE("processor: only the live stage passes frames uncalibrated", "[processing]") {
    rig r(false);
    processor_options o;
    o.stages = {"live"};
    live_view view(std::chrono::milliseconds(10));
    processor p(o, r.in, r.in_ready, r.out, r.out_ready, &view);
    CHECK_FALSE(p.calibrates());
    r.push(1, 10, 0, [](std::uint32_t c) { return static_cast<std::uint16_t>(c); });
    CHECK(p.poll() == 1);
    auto f = r.out.try_pop();
    REQUIRE(f.has_value());
    CHECK(f->calibrated == nullptr);
    live_frame s;
    REQUIRE(view.read(1, s));
    CHECK(s.samples[9] == 9);
    CHECK(s.calibrated.empty());
    CHECK(s.dose.empty());
}

TEST_CASE("processor: stage order and backend are checked", "[processing]") {
    rig r(true);
    live_view view(std::chrono::milliseconds(10));
    processor_options o;
    o.stages = {"dose"};
    CHECK_THROWS_WITH(processor(o, r.in, r.in_ready, r.out, r.out_ready, &view),
                      Catch::Contains("'dose' needs 'calibrate'"));
    o.stages = {"live", "calibrate"};
    CHECK_THROWS_WITH(processor(o, r.in, r.in_ready, r.out, r.out_ready, &view),
                      Catch::Contains("out of order"));
    o.stages = {"calibrate"};
    o.backend = "gpu";
    CHECK_THROWS_WITH(processor(o, r.in, r.in_ready, r.out, r.out_ready, &view),
                      Catch::Contains("unknown processing backend"));
    o.backend = "cuda";
    if (!cuda_built()) {
        CHECK_THROWS_WITH(processor(o, r.in, r.in_ready, r.out, r.out_ready, &view),
                          Catch::Contains("built without CUDA"));
    }
    o.backend = "auto";  // never refuses: the CPU when there is no device
    processor p(o, r.in, r.in_ready, r.out, r.out_ready, &view);
    CHECK((p.backend_name() == "cpu" || p.backend_name() == "cuda"));
}

TEST_CASE("processor: start/stop drains the queue on its thread", "[processing]") {
    rig r(true, 256);
    processor_options o;
    o.stages = {"calibrate", "dose"};
    o.backend = "cpu";
    processor p(o, r.in, r.in_ready, r.out, r.out_ready, nullptr);
    p.start();
    for (std::uint64_t i = 0; i < 200; ++i) {
        r.push(3, 100, i, [](std::uint32_t c) { return static_cast<std::uint16_t>(c); });
        r.in_ready.notify();
    }
    p.stop();
    CHECK(r.out.size() == 200);
    CHECK(p.counters().frames.get() == 200);
}

TEST_CASE("pedestal stage: Welford mean and sample standard deviation per channel", "[processing]") {
    rig r(false, 128, 2 * 33);
    processor_options o;
    o.pedestal_frames = 50;
    processor p(o, r.in, r.in_ready, r.out, r.out_ready, nullptr);
    REQUIRE(p.pedestal() != nullptr);
    CHECK(p.stage_names() == std::vector<std::string>{"pedestal"});
    std::mt19937_64 rng(5);
    std::normal_distribution<double> noise(0.0, 4.0);
    std::vector<std::vector<std::uint16_t>> taken;  // unit 1's complete frames, for the reference
    for (std::uint64_t i = 0; i < 80; ++i) {
        for (std::uint16_t unit : {1, 2}) {
            const bool incomplete = unit == 1 && i % 10 == 5;
            std::vector<std::uint16_t> row(33);
            for (std::uint32_t c = 0; c < 33; ++c)
                row[c] = incomplete && c > 20 ? 0 : static_cast<std::uint16_t>(std::lround(1000 + c + noise(rng)));
            if (unit == 1 && !incomplete && taken.size() < 50) taken.push_back(row);
            r.push(unit, 33, i, [&](std::uint32_t c) { return row[c]; }, incomplete ? 1 : 0);
        }
        p.poll();
        while (auto f = r.out.try_pop()) f->release();
    }
    CHECK(p.pedestal()->units_seen() == 2);
    CHECK(p.pedestal()->units_complete() == 2);
    const auto progress = p.pedestal()->progress();
    REQUIRE(progress.size() == 2);
    CHECK(progress[0].unit_id == 1);
    CHECK(progress[0].frames == 50);
    CHECK(progress[0].skipped_incomplete == 5);  // frames 5, 15, 25, 35, 45 (before 50 were taken)
    const auto set = p.pedestal()->result();
    REQUIRE(set.units.size() == 2);
    const auto& u = set.units.at(1);
    CHECK(u.frames == 50);
    CHECK(u.gain == std::vector<float>(33, 1.0f));
    for (std::uint32_t c = 0; c < 33; ++c) {
        double mean = 0;
        for (const auto& row : taken) mean += row[c];
        mean /= taken.size();
        double ss = 0;
        for (const auto& row : taken) ss += (row[c] - mean) * (row[c] - mean);
        const double sd = std::sqrt(ss / (taken.size() - 1));
        CHECK(u.pedestal[c] == Approx(mean).epsilon(1e-6));
        CHECK(u.noise[c] == Approx(sd).epsilon(1e-5));
    }
}
