#pragma once
// The line rate of the links daqd listens on: what the frame buffer is sized
// for when acquisition.expected_rate_mbps is 0 (docs/CONFIG.md).
#include "daqd/config/config.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace daqd::acquisition {

// The speed (Mbit/s) of the interface that holds the endpoint's address, from
// /sys/class/net/<interface>/speed; nullopt for an any-address, loopback, or
// an interface that does not say (virtual ones).
std::optional<std::uint64_t> line_rate_mbps(const config::endpoint& e);

struct expected_rate {
    std::uint64_t mbps = 0;
    std::string source;  // how it was found, for the start-up log line
};
// acquisition.expected_rate_mbps, or (0) the links' line rates summed, 2000
// for each link whose rate is unknown (loopback: a test rig sending at
// 2 Gbit/s is common; the memory is committed only as frames use it).
expected_rate expected_rate_of(const config::acquisition_config& a);

}  // namespace daqd::acquisition
