#include "daqd/acquisition/receiver.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstring>
#include <stdexcept>

#ifndef UDP_GRO
#define UDP_GRO 104
#endif

namespace daqd::acquisition {

namespace {
[[noreturn]] void fail(const std::string& call, const config::endpoint& ep, int err) {
    throw std::runtime_error(call + " for UDP " + ep.to_string() + ": " + std::strerror(err));
}
}  // namespace

std::uint64_t kernel_datagram_cost(std::uint64_t datagram_bytes) noexcept {
    // skb data: payload + IP/UDP/Ethernet headers + skb_shared_info, rounded
    // to the allocator's power of two; plus the sk_buff. Matches what was
    // measured here (1472 → 2304, 8972 → 16640 bytes).
    const std::uint64_t data = std::bit_ceil(datagram_bytes + 42 + 320);
    return data + 256;
}

link_socket open_link(const config::endpoint& ep, const config::acquisition_config& cfg) {
    sockaddr_storage ss{};
    socklen_t len = 0;
    int family = AF_INET;
    if (ep.host.find(':') != std::string::npos) {
        family = AF_INET6;
        auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(ep.port);
        if (::inet_pton(AF_INET6, ep.host.c_str(), &a->sin6_addr) != 1)
            throw std::runtime_error("'" + ep.host + "' is not an IPv6 address");
        len = sizeof(sockaddr_in6);
    } else {
        auto* a = reinterpret_cast<sockaddr_in*>(&ss);
        a->sin_family = AF_INET;
        a->sin_port = htons(ep.port);
        if (::inet_pton(AF_INET, ep.host.c_str(), &a->sin_addr) != 1)
            throw std::runtime_error("'" + ep.host + "' is not an IPv4 address");
        len = sizeof(sockaddr_in);
    }
    const int fd = ::socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) fail("socket", ep, errno);
    link_socket ls;
    ls.fd = fd;
    ls.endpoint = ep;
    auto guard_fail = [&](const char* call) {
        const int e = errno;
        ::close(fd);
        fail(call, ep, e);
    };
    const int one = 1;
    if (family == AF_INET6 && ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) != 0)
        guard_fail("setsockopt(IPV6_V6ONLY)");
    if (::setsockopt(fd, SOL_SOCKET, SO_RXQ_OVFL, &one, sizeof one) != 0) guard_fail("setsockopt(SO_RXQ_OVFL)");
    if (cfg.gro && ::setsockopt(fd, IPPROTO_UDP, UDP_GRO, &one, sizeof one) != 0) guard_fail("setsockopt(UDP_GRO)");

    // Size the buffer by datagrams: the kernel charges each one its truesize.
    const std::uint64_t wanted =
        static_cast<std::uint64_t>(cfg.socket_buffer_datagrams) * kernel_datagram_cost(cfg.expected_datagram_bytes);
    const int ask = static_cast<int>(std::min<std::uint64_t>(wanted / 2, 0x7fffffff));  // the kernel doubles it
    if (::setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &ask, sizeof ask) != 0)
        ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &ask, sizeof ask);  // capped at net.core.rmem_max
    int granted = 0;
    socklen_t glen = sizeof granted;
    ::getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &granted, &glen);
    ls.rcvbuf_bytes = static_cast<std::uint64_t>(granted);
    if (ls.rcvbuf_bytes + 4096 < wanted) {
        spdlog::warn(
            "link {}: the kernel granted a {} byte receive buffer (about {} datagrams of {} bytes), {} were asked "
            "for {} datagrams; raise it with: sysctl -w net.core.rmem_max={} (or run daqd with CAP_NET_ADMIN)",
            ep.to_string(), ls.rcvbuf_bytes, ls.rcvbuf_bytes / kernel_datagram_cost(cfg.expected_datagram_bytes),
            cfg.expected_datagram_bytes, wanted, cfg.socket_buffer_datagrams, wanted / 2);
    }
    if (::bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) guard_fail("bind");
    sockaddr_storage bound{};
    socklen_t blen = sizeof bound;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &blen) == 0) {
        ls.endpoint.port = family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port)
                                              : ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
    }
    return ls;
}

}  // namespace daqd::acquisition
