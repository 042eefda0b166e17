#pragma once
// daq-sim: what every part of the simulator shares: the DAQ1 wire format
// (acquisition/include/daqd/acquisition/daq1.hpp), the kernel's UDP GSO
// limits, and how it dies on a usage or system error. See README.md.
#include <daqd/acquisition/daq1.hpp>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include <arpa/inet.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef SOL_UDP
#define SOL_UDP 17
#endif

namespace daqd::sim {

namespace daq1 = daqd::acquisition::daq1;
using json = nlohmann::ordered_json;

// Kernel limits for one UDP GSO send.
constexpr std::size_t gso_max_segments = 64;
constexpr std::size_t gso_max_bytes = 65507;
// Messages per sendmmsg call.
constexpr std::size_t batch_messages = 64;
// Bytes of payload copied into a malformed datagram (at most).
constexpr std::size_t malformed_payload_max = 64;
constexpr std::size_t malformed_max_bytes = daq1::header_bytes + malformed_payload_max;

[[noreturn]] inline void die_usage(const std::string& msg) {
    fmt::print(stderr, "daq-sim: {}\nTry 'daq-sim --help'.\n", msg);
    std::exit(1);
}

[[noreturn]] inline void die(int code, const std::string& msg) {
    fmt::print(stderr, "daq-sim: {}\n", msg);
    std::exit(code);
}

}  // namespace daqd::sim
