// daq-drain: the bare UDP receive ceiling of this machine (tools/bench/README.md).
//
// Binds the given UDP endpoints and does nothing but recvmmsg (batch 64, one
// reused buffer, no parsing, no copy out) and count. It is what daqd's
// receive path costs when everything after the socket is free: the ceiling
// daqd is compared with. Prints one JSON object on stdout.
#include "bench_cli.hpp"

#include <arpa/inet.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#ifndef UDP_GRO
#define UDP_GRO 104
#endif

namespace {

constexpr const char* usage = R"(daq-drain — bare UDP receive ceiling (recvmmsg and count, nothing else)

usage: daq-drain [options]
  --listen HOST:PORT   UDP endpoint, repeatable (default 127.0.0.1:4660); IPv6 as [ADDR]:PORT
  --duration SEC       stop after SEC seconds (default 0: no limit, stop on --idle)
  --idle SEC           stop when nothing arrived for SEC seconds after the first
                       datagram (default 1; 0 = never)
  --batch N            datagrams per recvmmsg call, 1..1024 (default 64)
  --rcvbuf BYTES       socket receive buffer, set with SO_RCVBUFFORCE (default
                       75497472 = daqd's default: 32768 datagrams x 2304 bytes)
  --gro                enable UDP_GRO; coalesced buffers are counted per segment
  --buffer BYTES       receive buffer per message (default 9000; 65535 with --gro)
  -h, --help           this text

Output (stdout, one line): {"datagrams", "bytes", "seconds", "kernel_drops",
"cpu_seconds", "rcvbuf_bytes", "links", "per_link": [...]}. "seconds" runs from
the first datagram to the last one; kernel_drops is the larger of the last
SO_RXQ_OVFL value and SO_MEMINFO's drop count, summed over links; cpu_seconds is getrusage(RUSAGE_SELF) user +
system for the whole process. SIGINT/SIGTERM stop it early (summary still printed).
Exit: 0 ok, 1 usage error, 2 socket error.
)";

volatile sig_atomic_t g_stop = 0;
void on_signal(int) { g_stop = 1; }

using bench_cli::die_usage;

[[noreturn]] void die_sys(const std::string& what) {
    std::fprintf(stderr, "daq-drain: %s: %s\n", what.c_str(), std::strerror(errno));
    std::exit(2);
}

double mono() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

struct drain_link {
    std::string name;
    int fd = -1;
    std::uint64_t datagrams = 0, bytes = 0, drops = 0;
};

int open_link(const std::string& ep, int rcvbuf, bool gro) {
    sockaddr_storage ss{};
    socklen_t len = 0;
    int family = AF_INET;
    std::string host, port;
    if (!ep.empty() && ep.front() == '[') {
        const auto close = ep.find("]:");
        if (close == std::string::npos) die_usage("--listen: '" + ep + "' is not [ADDR]:PORT");
        host = ep.substr(1, close - 1);
        port = ep.substr(close + 2);
        family = AF_INET6;
    } else {
        const auto colon = ep.rfind(':');
        if (colon == std::string::npos) die_usage("--listen: '" + ep + "' is not HOST:PORT");
        host = ep.substr(0, colon);
        port = ep.substr(colon + 1);
    }
    const int p = static_cast<int>(bench_cli::number_arg("--listen port", port.c_str(), 0, 65535));
    if (family == AF_INET6) {
        auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(static_cast<std::uint16_t>(p));
        if (::inet_pton(AF_INET6, host.c_str(), &a->sin6_addr) != 1) die_usage("--listen: bad IPv6 address " + host);
        len = sizeof(sockaddr_in6);
    } else {
        auto* a = reinterpret_cast<sockaddr_in*>(&ss);
        a->sin_family = AF_INET;
        a->sin_port = htons(static_cast<std::uint16_t>(p));
        if (::inet_pton(AF_INET, host.c_str(), &a->sin_addr) != 1) die_usage("--listen: bad IPv4 address " + host);
        len = sizeof(sockaddr_in);
    }
    const int fd = ::socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) die_sys("socket");
    const int one = 1;
    if (family == AF_INET6) ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (::setsockopt(fd, SOL_SOCKET, SO_RXQ_OVFL, &one, sizeof one) != 0) die_sys("setsockopt(SO_RXQ_OVFL)");
    if (gro && ::setsockopt(fd, IPPROTO_UDP, UDP_GRO, &one, sizeof one) != 0) die_sys("setsockopt(UDP_GRO)");
    const int ask = rcvbuf / 2;  // the kernel doubles the value
    if (::setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &ask, sizeof ask) != 0) {
        std::fprintf(stderr, "daq-drain: SO_RCVBUFFORCE refused (%s); falling back to SO_RCVBUF (net.core.rmem_max)\n",
                     std::strerror(errno));
        ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &ask, sizeof ask);
    }
    if (::bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) die_sys("bind " + ep);
    return fd;
}

}  // namespace

int main(int argc, char** argv) {
    bench_cli::program = "daq-drain";
    std::vector<std::string> listen;
    double duration = 0, idle = 1.0;
    unsigned batch = 64;
    double rcvbuf = 32768.0 * 2304.0;
    bool gro = false;
    double buffer = 0;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto value = [&]() -> const char* {
            if (i + 1 >= argc) die_usage(a + " needs a value");
            return argv[++i];
        };
        if (a == "-h" || a == "--help") {
            std::fputs(usage, stdout);
            return 0;
        } else if (a == "--listen") {
            listen.emplace_back(value());
        } else if (a == "--duration") {
            duration = bench_cli::number_arg(a, value(), 0, 1e6);
        } else if (a == "--idle") {
            idle = bench_cli::number_arg(a, value(), 0, 1e6);
        } else if (a == "--batch") {
            batch = static_cast<unsigned>(bench_cli::number_arg(a, value(), 1, 1024));
        } else if (a == "--rcvbuf") {
            rcvbuf = bench_cli::number_arg(a, value(), 4096, 2147483647.0);
        } else if (a == "--gro") {
            gro = true;
        } else if (a == "--buffer") {
            buffer = bench_cli::number_arg(a, value(), 64, 65535);
        } else {
            die_usage("unknown option '" + a + "'");
        }
    }
    if (listen.empty()) listen.emplace_back("127.0.0.1:4660");
    if (buffer == 0) buffer = gro ? 65535 : 9000;
    const std::size_t buf_bytes = static_cast<std::size_t>(buffer);

    struct sigaction sa{};
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);

    std::vector<drain_link> links;
    std::vector<pollfd> pfds;
    for (const auto& ep : listen) {
        drain_link l;
        l.name = ep;
        l.fd = open_link(ep, static_cast<int>(rcvbuf), gro);
        pfds.push_back({l.fd, POLLIN, 0});
        links.push_back(std::move(l));
    }
    int granted = 0;
    socklen_t glen = sizeof granted;
    ::getsockopt(links[0].fd, SOL_SOCKET, SO_RCVBUF, &granted, &glen);

    // One reused buffer per message slot: the data is never looked at.
    constexpr std::size_t control_bytes = 64;
    std::vector<char> data(static_cast<std::size_t>(batch) * buf_bytes);
    std::vector<char> control(static_cast<std::size_t>(batch) * control_bytes);
    std::vector<iovec> iov(batch);
    std::vector<mmsghdr> msgs(batch);
    for (unsigned i = 0; i < batch; ++i) iov[i] = {data.data() + i * buf_bytes, buf_bytes};

    const double started = mono();
    double first = 0, last = 0;
    unsigned empty_passes = 0;
    while (!g_stop) {
        std::uint64_t got = 0;
        for (auto& l : links) {
            for (unsigned i = 0; i < batch; ++i) {
                auto& h = msgs[i].msg_hdr;
                h = msghdr{};
                h.msg_iov = &iov[i];
                h.msg_iovlen = 1;
                h.msg_control = control.data() + i * control_bytes;
                h.msg_controllen = control_bytes;
            }
            const int n = ::recvmmsg(l.fd, msgs.data(), batch, MSG_DONTWAIT, nullptr);
            if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) die_sys("recvmmsg " + l.name);
            for (int i = 0; i < n; ++i) {
                auto& h = msgs[i].msg_hdr;
                std::uint32_t segment = 0;
                for (cmsghdr* cm = CMSG_FIRSTHDR(&h); cm; cm = CMSG_NXTHDR(&h, cm)) {
                    if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SO_RXQ_OVFL) {
                        std::uint32_t d;
                        std::memcpy(&d, CMSG_DATA(cm), sizeof d);
                        l.drops = d;  // cumulative per socket
                    } else if (cm->cmsg_level == SOL_UDP && cm->cmsg_type == UDP_GRO) {
                        int s;
                        std::memcpy(&s, CMSG_DATA(cm), sizeof s);
                        segment = static_cast<std::uint32_t>(s);
                    }
                }
                const std::uint32_t bytes = msgs[i].msg_len;
                l.bytes += bytes;
                l.datagrams += (segment == 0 || bytes == 0) ? 1 : (bytes + segment - 1) / segment;
            }
            if (n > 0) got += static_cast<std::uint64_t>(n);
        }
        const double now = mono();
        if (got) {
            if (first == 0) first = now;
            last = now;
            empty_passes = 0;
            continue;
        }
        if (duration > 0 && now - started >= duration) break;
        if (idle > 0 && first != 0 && now - last >= idle) break;
        if (++empty_passes < 32) continue;  // brief spin, as daqd's recvmmsg backend does
        empty_passes = 0;
        ::poll(pfds.data(), pfds.size(), 20);
    }

    rusage ru{};
    ::getrusage(RUSAGE_SELF, &ru);
    const double cpu = static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                       static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
    std::uint64_t datagrams = 0, bytes = 0, drops = 0;
    std::string per_link;
    for (auto& l : links) {
        // SO_RXQ_OVFL only reports drops that happened before a datagram that
        // was still received; the socket's own counter has them all.
        std::uint32_t mem[SK_MEMINFO_VARS] = {};
        socklen_t mlen = sizeof mem;
        if (::getsockopt(l.fd, SOL_SOCKET, SO_MEMINFO, mem, &mlen) == 0 && mlen > SK_MEMINFO_DROPS * sizeof mem[0] &&
            mem[SK_MEMINFO_DROPS] > l.drops)
            l.drops = mem[SK_MEMINFO_DROPS];
        datagrams += l.datagrams;
        bytes += l.bytes;
        drops += l.drops;
        per_link += std::string(per_link.empty() ? "" : ", ") + "{\"listen\": \"" + l.name +
                    "\", \"datagrams\": " + std::to_string(l.datagrams) + ", \"bytes\": " + std::to_string(l.bytes) +
                    ", \"kernel_drops\": " + std::to_string(l.drops) + "}";
        ::close(l.fd);
    }
    const double seconds = first != 0 ? last - first : 0.0;
    std::printf(
        "{\"datagrams\": %llu, \"bytes\": %llu, \"seconds\": %.6f, \"kernel_drops\": %llu, \"cpu_seconds\": %.6f, "
        "\"rcvbuf_bytes\": %d, \"batch\": %u, \"gro\": %s, \"links\": %zu, \"per_link\": [%s]}\n",
        static_cast<unsigned long long>(datagrams), static_cast<unsigned long long>(bytes), seconds,
        static_cast<unsigned long long>(drops), cpu, granted, batch, gro ? "true" : "false", links.size(),
        per_link.c_str());
    return 0;
}
