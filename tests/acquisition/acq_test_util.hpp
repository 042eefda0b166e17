#pragma once
// Helpers of the acquisition tests: unique shared-memory names, waiting on a
// condition with a deadline, building DAQ1 datagrams.
#include "daqd/acquisition/daq1.hpp"
#include "wait_until.hpp"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

namespace acq_test {

namespace daq1 = daqd::acquisition::daq1;

// "daqd-test-<pid>-<n>": unique per ring within the test process.
inline std::string unique_ring_name() {
    static std::atomic<unsigned> n{0};
    return "daqd-test-" + std::to_string(::getpid()) + "-" + std::to_string(n.fetch_add(1));
}

using daqd_test::wait_until;

// A valid DAQ1 datagram of `datagram_bytes` (even, >= 42): one packet of a
// frame big enough to hold it, its payload bytes derived from `seq` so that
// every datagram's content is distinct.
inline std::vector<std::byte> make_datagram(std::uint32_t seq, std::size_t datagram_bytes, std::uint16_t unit = 1) {
    std::vector<std::byte> d(datagram_bytes);
    daq1::header h;
    h.flags = daq1::flag_test_pattern;
    h.unit_id = unit;
    h.packet_seq = seq;
    h.packet_index = 0;
    h.packet_count = 1;
    h.frame_number = seq;
    h.timestamp_ns = 1000ull * seq;
    h.payload_offset = 0;
    h.frame_bytes = static_cast<std::uint32_t>(datagram_bytes - daq1::header_bytes);
    daq1::encode_header(h, d.data());
    for (std::size_t i = daq1::header_bytes; i < d.size(); ++i)
        d[i] = static_cast<std::byte>((seq * 31u + i * 7u) & 0xffu);
    return d;
}

}  // namespace acq_test
