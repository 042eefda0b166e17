// The frame pool: preallocated buffers handed out by index, one acquiring
// thread and one releasing thread.
#include "daqd/common/spsc_queue.hpp"
#include "daqd/processing/block_pool.hpp"
#include "daqd/processing/frame.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

using daqd::processing::block_pool;

TEST_CASE("block_pool: acquire every buffer: distinct indices and memory", "[processing][pool]") {
    const std::size_t requested = GENERATE(std::size_t{1000}, std::size_t{64}, std::size_t{65536}, std::size_t{1});
    constexpr std::size_t n = 64;
    block_pool pool(n, requested);
    CAPTURE(requested);
    CHECK(pool.blocks() == n);
    CHECK(pool.block_bytes() >= requested);
    CHECK(pool.block_bytes() % 64 == 0);
    CHECK(pool.block_bytes() < requested + 64);
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
        CHECK(static_cast<std::size_t>(p - base) == i * pool.block_bytes());
        CHECK(reinterpret_cast<std::uintptr_t>(p) % 64 == 0);
        std::memset(pool.data(i), static_cast<int>(i + 1), pool.block_bytes());
    }
    std::uint64_t wrong = 0;
    for (std::uint32_t i = 0; i < n; ++i) {
        const auto* p = reinterpret_cast<const unsigned char*>(pool.data(i));
        for (std::size_t b = 0; b < pool.block_bytes(); ++b) wrong += p[b] != static_cast<unsigned char>(i + 1);
    }
    CHECK(wrong == 0);

    // Release one, acquire gets exactly it back.
    pool.unref_release(17);
    CHECK(pool.available() == 1);
    const auto again = pool.acquire();
    REQUIRE(again.has_value());
    CHECK(*again == 17);
    CHECK_FALSE(pool.acquire().has_value());
    // Release all: the pool is full again.
    for (auto i : indices) pool.unref_release(i);
    CHECK(pool.available() == n);
}

TEST_CASE("block_pool: the most recently freed block is reused first, untouched ones stay untouched", "[processing][pool]") {
    block_pool pool(4, 128);
    std::vector<std::uint32_t> got;
    for (int i = 0; i < 2; ++i) got.push_back(*pool.acquire());
    pool.unref_release(got[1]);
    pool.unref_release(got[0]);
    // A low rate cycles through the same two blocks, never the other two.
    for (int round = 0; round < 10; ++round) {
        const auto a = pool.acquire();
        REQUIRE(a.has_value());
        CHECK((*a == got[0] || *a == got[1]));
        pool.unref_release(*a);
    }
    for (int i = 0; i < 2; ++i) got.push_back(*pool.acquire());
    got.push_back(*pool.acquire());
    got.push_back(*pool.acquire());
    pool.unref_release(got[2]);
    pool.unref_release(got[5]);
    CHECK(*pool.acquire() == got[5]);
    CHECK(*pool.acquire() == got[2]);
    CHECK_FALSE(pool.acquire().has_value());
}

TEST_CASE("block_pool: one thread acquires, another releases, 1e6 rounds", "[processing][pool][threads]") {
    constexpr std::size_t n = 64;
    constexpr std::uint64_t rounds = 1'000'000;
    block_pool pool(n, 256);
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
            std::memcpy(pool.data(*idx) + 248, &r, sizeof r);
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
        std::memcpy(&tail, pool.data(*idx) + 248, sizeof tail);
        wrong += head != r || tail != r;
        ++uses[*idx];
        pool.unref_release(*idx);
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

TEST_CASE("block_pool: a block comes back when its last reference goes, from either side", "[processing][pool]") {
    block_pool pool(2, 256);
    // The acquirer holds one reference; two frames in it hold one each.
    const auto a = pool.acquire();
    REQUIRE(a.has_value());
    pool.ref(*a);
    pool.ref(*a);
    pool.drop(*a);  // the acquirer is done with it (sealed)
    CHECK(pool.available() == 1);
    pool.unref_release(*a);  // the writer: one frame done
    CHECK(pool.available() == 1);
    pool.unref_release(*a);  // the last frame: back on the free list
    CHECK(pool.available() == 2);
    // The writer was done first: the acquirer's own drop gets the block
    // back, kept for its next acquire (no free-list push from its side).
    const auto b = pool.acquire();
    const auto c = pool.acquire();
    REQUIRE((b && c));
    CHECK(pool.available() == 0);
    pool.ref(*b);
    pool.unref_release(*b);  // its frame written
    pool.drop(*b);           // sealed afterwards: last reference
    CHECK(pool.available() == 1);
    const auto again = pool.acquire();
    REQUIRE(again.has_value());
    CHECK(*again == *b);
    pool.drop(*again);
    pool.drop(*c);
    CHECK(pool.available() == 2);
}

TEST_CASE("chunk_rows: as many rows as fit a chunk, at least 1, at most 1024", "[processing][pool]") {
    using daqd::processing::chunk_rows;
    CHECK(chunk_rows(1u << 20, 4096) == 128);
    CHECK(chunk_rows(1u << 20, 4097) == 127);
    CHECK(chunk_rows(1u << 20, 16) == 1024);
    CHECK(chunk_rows(4096, 1u << 20) == 1);
}

// Last in the file: in a Debug build (assertions on) a failure here aborts.
TEST_CASE("block_pool: an empty pool is refused", "[processing][pool]") {
    CHECK_THROWS_AS(block_pool(4, 0), std::invalid_argument);
    CHECK_THROWS_AS(block_pool(0, 1024), std::invalid_argument);
}
