#include "daqd/acquisition/line_rate.hpp"

#include <fmt/format.h>

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>

#include <cstring>
#include <fstream>

namespace daqd::acquisition {

namespace {

constexpr std::uint64_t unknown_link_mbps = 2000;

// The name of the interface holding `host` (numeric), or "".
std::string interface_of(const std::string& host) {
    in_addr v4{};
    in6_addr v6{};
    const bool is4 = ::inet_pton(AF_INET, host.c_str(), &v4) == 1;
    const bool is6 = !is4 && ::inet_pton(AF_INET6, host.c_str(), &v6) == 1;
    if (!is4 && !is6) return {};
    ifaddrs* list = nullptr;
    if (::getifaddrs(&list) != 0) return {};
    std::string name;
    for (ifaddrs* i = list; i != nullptr && name.empty(); i = i->ifa_next) {
        if (i->ifa_addr == nullptr) continue;
        if (is4 && i->ifa_addr->sa_family == AF_INET &&
            reinterpret_cast<const sockaddr_in*>(i->ifa_addr)->sin_addr.s_addr == v4.s_addr)
            name = i->ifa_name;
        if (is6 && i->ifa_addr->sa_family == AF_INET6 &&
            std::memcmp(&reinterpret_cast<const sockaddr_in6*>(i->ifa_addr)->sin6_addr, &v6, sizeof v6) == 0)
            name = i->ifa_name;
    }
    ::freeifaddrs(list);
    return name;
}

}  // namespace

std::optional<std::uint64_t> line_rate_mbps(const config::endpoint& e) {
    if (config::is_loopback(e.host)) return std::nullopt;
    const std::string name = interface_of(e.host);
    if (name.empty()) return std::nullopt;
    std::ifstream in("/sys/class/net/" + name + "/speed");
    long long speed = -1;
    if (!(in >> speed) || speed <= 0) return std::nullopt;  // -1 or absent: the driver does not say
    return static_cast<std::uint64_t>(speed);
}

expected_rate expected_rate_of(const config::acquisition_config& a) {
    if (a.expected_rate_mbps > 0)
        return {a.expected_rate_mbps, "acquisition.expected_rate_mbps"};
    expected_rate r;
    std::size_t unknown = 0;
    for (const auto& e : a.listen) {
        const auto speed = line_rate_mbps(e);
        r.mbps += speed.value_or(unknown_link_mbps);
        unknown += speed ? 0 : 1;
    }
    r.source = unknown == 0 ? fmt::format("line rate of {} link(s)", a.listen.size())
                            : fmt::format("line rate of {} link(s), {} of them unknown (loopback, any-address or "
                                          "virtual) and taken as {} Mbit/s",
                                          a.listen.size(), unknown, unknown_link_mbps);
    return r;
}

}  // namespace daqd::acquisition
