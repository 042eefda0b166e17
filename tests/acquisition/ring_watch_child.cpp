// A watcher in a second process, for test_packet_ring: maps a packet ring
// read-only, waits until `expected_count` slots have been published, checks
// that the slots it can still see each hold a DAQ1 datagram, prints
// "seen <head>" and exits 0; exits 1 on a mismatch or a timeout.
//
//   ring_watch_child <name> <expected_count> [timeout_ms (default 30000)]
#include "daqd/acquisition/daq1.hpp"
#include "daqd/acquisition/packet_ring.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <span>
#include <string>
#include <thread>

namespace acq = daqd::acquisition;
namespace daq1 = acq::daq1;

int main(int argc, char** argv) {
    if (argc != 3 && argc != 4) {
        std::fprintf(stderr, "usage: %s <ring name> <expected count> [timeout ms]\n", argv[0]);
        return 2;
    }
    const std::string name = argv[1];
    const std::uint64_t expected = std::strtoull(argv[2], nullptr, 10);
    const long timeout_ms = argc == 4 ? std::strtol(argv[3], nullptr, 10) : 30000;
    try {
        const auto ring = acq::packet_ring::attach_read_only(name);
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
        std::uint64_t head = ring.header().head.load(std::memory_order_acquire);
        while (head < expected) {
            if (std::chrono::steady_clock::now() >= deadline) {
                std::fprintf(stderr, "ring_watch_child: timeout: head %llu < expected %llu\n",
                             static_cast<unsigned long long>(head), static_cast<unsigned long long>(expected));
                return 1;
            }
            std::this_thread::sleep_for(std::chrono::microseconds(200));
            head = ring.header().head.load(std::memory_order_acquire);
        }
        const std::uint64_t visible = std::min<std::uint64_t>(head, ring.slot_count());
        for (std::uint64_t seq = head - visible; seq < head; ++seq) {
            const auto& s = *ring.slot(seq);
            if (s.bytes == 0 || s.data_offset + s.bytes > ring.data_bytes()) {
                std::fprintf(stderr, "ring_watch_child: slot %llu: bad size %u at offset %u\n",
                             static_cast<unsigned long long>(seq), s.bytes, s.data_offset);
                return 1;
            }
            const std::byte* data = ring.slot_data(seq) + s.data_offset;
            std::uint32_t magic = 0;
            std::memcpy(&magic, data, sizeof magic);
            daq1::header h;
            if (s.bytes < sizeof magic || magic != daq1::magic ||
                daq1::validate(std::span<const std::byte>(data, s.bytes), h) != daq1::drop_reason::none) {
                std::fprintf(stderr, "ring_watch_child: slot %llu does not hold a valid DAQ1 datagram\n",
                             static_cast<unsigned long long>(seq));
                return 1;
            }
        }
        std::printf("seen %llu\n", static_cast<unsigned long long>(head));
        std::fflush(stdout);
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "ring_watch_child: %s\n", e.what());
        return 1;
    }
}
