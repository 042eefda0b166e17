// What the web side relies on in the data path: the writer's observer hook
// and its run-on-the-writer-thread command, and the live tap's lock-free
// publication (consistent copies while the writer publishes).
#include "daqd/processing/live_tap.hpp"
#include "daqd/storage/run_writer.hpp"
#include "web_test_util.hpp"

#include <catch2/catch.hpp>

#include <thread>

using namespace std::chrono_literals;
using daqd::processing::frame;
using daqd::processing::live_frame;
using daqd::processing::live_tap;

namespace {

struct recording_observer final : daqd::processing::frame_observer {
    std::atomic<int> frames{0};
    std::atomic<int> written{0};
    std::thread::id thread;
    void on_frame(const frame&, bool w) noexcept override {
        thread = std::this_thread::get_id();
        ++frames;
        if (w) ++written;
    }
};

}  // namespace

TEST_CASE("the writer shows every frame to its observer and runs commands on its own thread", "[web]") {
    daqd::common::wake_event ready;
    daqd::processing::block_pool pool(8, 64);
    daqd::common::spsc_queue<frame> queue(8);
    daqd::storage::writer w(queue, ready);
    recording_observer obs;
    w.set_observer(&obs);
    std::thread::id inline_thread;
    w.run_on_writer_thread([&] { inline_thread = std::this_thread::get_id(); });  // no thread yet: here
    CHECK(inline_thread == std::this_thread::get_id());
    w.start();
    for (int i = 0; i < 5; ++i) {
        auto index = pool.acquire();
        REQUIRE(index);
        frame f;
        f.unit_id = 1;
        f.channels = 16;
        f.pool = &pool;
        f.block = *index;
        f.block_rows = 1;
        f.frame_number = static_cast<std::uint64_t>(i);
        f.samples = reinterpret_cast<std::uint16_t*>(pool.data(*index));
        REQUIRE(queue.try_push(f));
    }
    ready.signal();
    REQUIRE(web_test::wait_until([&] { return obs.frames.load() == 5; }, 5s));
    CHECK(obs.written == 0);  // no run active
    std::thread::id ran_on;
    w.run_on_writer_thread([&] { ran_on = std::this_thread::get_id(); });
    CHECK(ran_on == obs.thread);
    CHECK(ran_on != std::this_thread::get_id());
    CHECK_THROWS_WITH(w.run_on_writer_thread([] { throw std::runtime_error("from the writer thread"); }),
                      "from the writer thread");
    w.stop();
    CHECK(pool.available() == 8);  // every buffer went back
}

TEST_CASE("the live tap publishes at most once per interval and counts every frame", "[web]") {
    live_tap tap(std::chrono::hours(1));
    std::vector<std::uint16_t> a(10, 3), b(10, 5);
    frame f;
    f.unit_id = 9;
    f.channels = 10;
    f.samples = a.data();
    f.frame_number = 100;
    tap.on_frame(f, true);
    f.samples = b.data();
    f.frame_number = 101;
    tap.on_frame(f, false);
    live_frame out;
    REQUIRE(tap.read(9, out));
    CHECK(out.frame_number == 100);  // the second came within the interval
    CHECK(out.samples == a);
    CHECK(out.dose_frames == 1);
    CHECK(tap.frames_seen(9) == 2);
    CHECK(tap.frames_written(9) == 1);
    CHECK(tap.unit_count() == 1);
    CHECK(tap.unit_id_at(0) == 9);
    CHECK_FALSE(tap.read(8, out));
    // Too many channels: counted, never published.
    std::vector<std::uint16_t> big(live_tap::max_channels + 1, 1);
    f.unit_id = 10;
    f.channels = live_tap::max_channels + 1;
    f.samples = big.data();
    tap.on_frame(f, true);
    CHECK(tap.has_unit(10));
    CHECK(tap.frames_written(10) == 1);
    CHECK_FALSE(tap.read(10, out));
}

TEST_CASE("live tap readers always get one consistent frame while the writer publishes", "[web]") {
    live_tap tap(std::chrono::nanoseconds(0));  // publish every frame: the hardest case for readers
    constexpr std::uint32_t channels = 4099;     // not a multiple of 4 samples per word
    std::atomic<bool> stop{false};
    std::thread writer([&] {
        std::vector<std::uint16_t> samples(channels);
        frame f;
        f.unit_id = 2;
        f.channels = channels;
        f.samples = samples.data();
        for (std::uint64_t n = 0; !stop.load(std::memory_order_relaxed); ++n) {
            std::fill(samples.begin(), samples.end(), static_cast<std::uint16_t>(n & 0xffff));
            f.frame_number = n;
            tap.on_frame(f, false);
        }
    });
    live_frame out;
    int reads = 0, torn = 0;
    const auto end = std::chrono::steady_clock::now() + 300ms;
    while (std::chrono::steady_clock::now() < end) {
        if (!tap.read(2, out)) continue;
        ++reads;
        const auto want = static_cast<std::uint16_t>(out.frame_number & 0xffff);
        for (auto s : out.samples)
            if (s != want) {
                ++torn;
                break;
            }
        // The dose is the sum of frames 0..n: n(n+1)/2 folded into 16 bits per frame.
        if (out.dose_frames != out.frame_number + 1) ++torn;
    }
    stop = true;
    writer.join();
    CHECK(reads > 10);
    CHECK(torn == 0);
}
