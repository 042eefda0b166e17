// The frame pool: preallocated buffers handed out by index, one acquiring
// thread and one releasing thread.
#include "daqd/common/spsc_queue.hpp"
#include "daqd/processing/frame_pool.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

using daqd::processing::frame_pool;

TEST_CASE("frame_pool: acquire every buffer: distinct indices and memory", "[processing][pool]") {
    const std::size_t requested = GENERATE(std::size_t{1000}, std::size_t{64}, std::size_t{65536}, std::size_t{1});
    constexpr std::size_t n = 64;
    frame_pool pool(n, requested);
    CAPTURE(requested);
    CHECK(pool.buffers() == n);
    CHECK(pool.buffer_bytes() >= requested);
    CHECK(pool.buffer_bytes() % 64 == 0);
    CHECK(pool.buffer_bytes() < requested + 64);
    CHECK(pool.available() == n);

    std::set<std::uint32_t> indices;
    for (std::size_t i = 0; i < n; ++i) {
        const auto idx = pool.acquire();
        REQUIRE(idx.has_value());
        CHECK(*idx < n);
        indices.insert(*idx);
        CHECK(pool.available() == n - i - 1);
    }
    CHECK(indices.size() == n);
    CHECK_FALSE(pool.acquire().has_value());  // empty
    CHECK_FALSE(pool.acquire().has_value());

    // Buffers are buffer_bytes apart, 64-byte aligned, and do not overlap:
    // fill each completely with its own index, then check every one.
    const auto* base = reinterpret_cast<const std::byte*>(pool.data(0));
    for (std::uint32_t i = 0; i < n; ++i) {
        const auto* p = reinterpret_cast<const std::byte*>(pool.data(i));
        CHECK(static_cast<std::size_t>(p - base) == i * pool.buffer_bytes());
        CHECK(reinterpret_cast<std::uintptr_t>(p) % 64 == 0);
        std::memset(pool.data(i), static_cast<int>(i + 1), pool.buffer_bytes());
    }
    std::uint64_t wrong = 0;
    for (std::uint32_t i = 0; i < n; ++i) {
        const auto* p = reinterpret_cast<const unsigned char*>(pool.data(i));
        for (std::size_t b = 0; b < pool.buffer_bytes(); ++b) wrong += p[b] != static_cast<unsigned char>(i + 1);
    }
    CHECK(wrong == 0);

    // Release one, acquire gets exactly it back.
    pool.release(17);
    CHECK(pool.available() == 1);
    const auto again = pool.acquire();
    REQUIRE(again.has_value());
    CHECK(*again == 17);
    CHECK_FALSE(pool.acquire().has_value());
    // Release all: the pool is full again.
    for (auto i : indices) pool.release(i);
    CHECK(pool.available() == n);
}

TEST_CASE("frame_pool: released buffers come back in release order", "[processing][pool]") {
    frame_pool pool(4, 128);
    std::vector<std::uint32_t> got;
    for (int i = 0; i < 4; ++i) got.push_back(*pool.acquire());
    pool.release(got[2]);
    pool.release(got[0]);
    CHECK(*pool.acquire() == got[2]);
    CHECK(*pool.acquire() == got[0]);
    CHECK_FALSE(pool.acquire().has_value());
}

TEST_CASE("frame_pool: one thread acquires, another releases, 1e6 rounds", "[processing][pool][threads]") {
    constexpr std::size_t n = 64;
    constexpr std::uint64_t rounds = 1'000'000;
    frame_pool pool(n, 256);
    daqd::common::spsc_queue<std::uint32_t> handoff(n);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    std::atomic<bool> timed_out{false};

    // The acquiring thread writes the round number into the buffer it got
    // and hands the index over.
    std::thread acquirer([&] {
        for (std::uint64_t r = 0; r < rounds; ++r) {
            std::optional<std::uint32_t> idx;
            while (!(idx = pool.acquire())) {
                if (timed_out.load(std::memory_order_relaxed) || std::chrono::steady_clock::now() > deadline) {
                    timed_out = true;
                    return;
                }
                std::this_thread::yield();
            }
            std::memcpy(pool.data(*idx), &r, sizeof r);
            std::memcpy(reinterpret_cast<std::byte*>(pool.data(*idx)) + 248, &r, sizeof r);
            while (!handoff.try_push(*idx)) std::this_thread::yield();  // cannot stay full: n slots, n buffers
        }
    });
    // This thread checks what it gets and releases it.
    std::vector<std::uint64_t> uses(n, 0);
    std::uint64_t wrong = 0, bad_index = 0;
    std::uint64_t r = 0;
    while (r < rounds) {
        const auto idx = handoff.try_pop();
        if (!idx) {
            if (timed_out.load() || std::chrono::steady_clock::now() > deadline) {
                timed_out = true;
                break;
            }
            std::this_thread::yield();
            continue;
        }
        if (*idx >= n) {
            ++bad_index;
            ++r;
            continue;
        }
        std::uint64_t head, tail;
        std::memcpy(&head, pool.data(*idx), sizeof head);
        std::memcpy(&tail, reinterpret_cast<const std::byte*>(pool.data(*idx)) + 248, sizeof tail);
        wrong += head != r || tail != r;
        ++uses[*idx];
        pool.release(*idx);
        ++r;
    }
    acquirer.join();
    CHECK_FALSE(timed_out);
    CHECK(r == rounds);
    CHECK(bad_index == 0);
    CHECK(wrong == 0);
    std::uint64_t total = 0;
    for (auto u : uses) total += u;
    CHECK(total == rounds);
    // Every buffer is back, each exactly once.
    CHECK(pool.available() == n);
    std::set<std::uint32_t> all;
    while (auto idx = pool.acquire()) all.insert(*idx);
    CHECK(all.size() == n);
    CHECK(*all.rbegin() == n - 1);
}

// Last in the file: in a Debug build (assertions on) a failure here aborts.
TEST_CASE("frame_pool: an empty pool is refused", "[processing][pool]") {
    CHECK_THROWS_AS(frame_pool(4, 0), std::invalid_argument);
    CHECK_THROWS_AS(frame_pool(0, 1024), std::invalid_argument);
}
