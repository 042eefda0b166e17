#pragma once
// daq-sim: time, targets (one UDP socket each) and the sender that queues datagrams
// per target and sends them with sendmmsg, as GSO super-datagrams or one by one.
#include "sim.hpp"

namespace daqd::sim {

// ---------------------------------------------------------------- time --

inline std::int64_t clock_ns(clockid_t id) {
    timespec ts;
    clock_gettime(id, &ts);
    return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}
inline std::int64_t mono_ns() { return clock_ns(CLOCK_MONOTONIC); }

inline void sleep_until_mono(std::int64_t t) {
    timespec ts{static_cast<time_t>(t / 1'000'000'000), static_cast<long>(t % 1'000'000'000)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
    }
}

inline void sleep_ns(long ns) {
    timespec ts{0, ns};
    nanosleep(&ts, nullptr);
}

volatile sig_atomic_t g_stop = 0;
extern "C" void on_signal(int) { g_stop = 1; }

// ---------------------------------------------------------------- targets --

// A queued datagram (gso == 0) or GSO super-datagram of equal `gso`-byte
// segments, the last one possibly shorter.
struct entry {
    const std::byte* ptr;
    std::uint32_t len;
    std::uint16_t gso;
};

struct target {
    std::string spec;
    int fd = -1;
    std::unique_ptr<std::byte[]> arena;
    std::size_t arena_cap = 0;
    std::size_t arena_used = 0;
    std::vector<entry> queue;
};

inline void open_target(target& t) {
    const std::string& s = t.spec;
    std::string host, port;
    int family = AF_UNSPEC;
    if (!s.empty() && s[0] == '[') {
        const auto close = s.find(']');
        if (close == std::string::npos || close + 1 >= s.size() || s[close + 1] != ':')
            die_usage(fmt::format("--target '{}': expected [IPV6]:PORT", s));
        host = s.substr(1, close - 1);
        port = s.substr(close + 2);
        family = AF_INET6;
    } else {
        const auto colon = s.rfind(':');
        if (colon == std::string::npos) die_usage(fmt::format("--target '{}': expected HOST:PORT", s));
        host = s.substr(0, colon);
        port = s.substr(colon + 1);
        if (host.find(':') != std::string::npos)
            die_usage(fmt::format("--target '{}': write IPv6 addresses as [ADDR]:PORT", s));
    }
    if (host.empty()) die_usage(fmt::format("--target '{}': empty host", s));
    parse_uint("target port", port, 1, 65535);
    addrinfo hints{};
    hints.ai_family = family;
    hints.ai_socktype = SOCK_DGRAM;
    hints.ai_protocol = IPPROTO_UDP;
    hints.ai_flags = AI_NUMERICSERV;
    addrinfo* res = nullptr;
    if (const int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &res); rc != 0)
        die_usage(fmt::format("--target '{}': {}", s, gai_strerror(rc)));
    int fd = -1;
    int last_errno = 0;
    for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            last_errno = errno;
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) break;
        last_errno = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) die(2, fmt::format("socket/connect to {}: {}", s, std::strerror(last_errno)));
    // A larger send buffer absorbs bursts on real NICs; best effort (capped by wmem_max).
    int sndbuf = 8 << 20;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    t.fd = fd;
}

inline bool is_gso_refusal(int err) { return err == EINVAL || err == EIO || err == ENOPROTOOPT; }

// ---------------------------------------------------------------- sender --

struct send_stats {
    std::uint64_t datagrams = 0;
    std::uint64_t bytes = 0;
    std::uint64_t retries = 0;
    std::uint64_t errors = 0;
};

class sender {
public:
    send_mode mode;
    bool quiet;
    send_stats stats;

    sender(send_mode m, bool q) : mode(m), quiet(q) {}

    void fall_back(const char* what, int err) {
        if (mode != send_mode::gso) return;
        mode = send_mode::sendmmsg;
        if (!quiet)
            fmt::print(stderr, "daq-sim: UDP GSO unavailable ({} failed: {}); falling back to --mode sendmmsg\n",
                       what, std::strerror(err));
    }

    // Probes UDP_SEGMENT on the socket (then resets it: sizes go per message).
    void probe_gso(const target& t, std::uint16_t gso_size) {
        if (mode != send_mode::gso) return;
        int v = gso_size;
        if (setsockopt(t.fd, SOL_UDP, UDP_SEGMENT, &v, sizeof v) != 0) {
            const int err = errno;
            if (is_gso_refusal(err)) return fall_back("setsockopt(UDP_SEGMENT)", err);
            die(2, fmt::format("setsockopt(UDP_SEGMENT) for {}: {}", t.spec, std::strerror(err)));
        }
        v = 0;
        setsockopt(t.fd, SOL_UDP, UDP_SEGMENT, &v, sizeof v);
    }

    void flush(target& t) {
        auto& q = t.queue;
        std::size_t i = 0;
        while (i < q.size()) {
            const std::size_t k = std::min(batch_messages, q.size() - i);
            for (std::size_t j = 0; j < k; ++j) {
                const entry& e = q[i + j];
                iov_[j] = {const_cast<std::byte*>(e.ptr), e.len};
                msghdr& h = msgs_[j].msg_hdr;
                h = {};
                h.msg_iov = &iov_[j];
                h.msg_iovlen = 1;
                if (e.gso != 0 && e.len > e.gso) {
                    h.msg_control = ctrl_[j].buf;
                    h.msg_controllen = CMSG_SPACE(sizeof(std::uint16_t));
                    cmsghdr* cm = CMSG_FIRSTHDR(&h);
                    cm->cmsg_level = SOL_UDP;
                    cm->cmsg_type = UDP_SEGMENT;
                    cm->cmsg_len = CMSG_LEN(sizeof(std::uint16_t));
                    const std::uint16_t g = e.gso;
                    std::memcpy(CMSG_DATA(cm), &g, sizeof g);
                }
            }
            const int r = sendmmsg(t.fd, msgs_.data(), static_cast<unsigned>(k), 0);
            if (r > 0) {
                for (int j = 0; j < r; ++j) {
                    const entry& e = q[i + static_cast<std::size_t>(j)];
                    stats.datagrams += (e.gso != 0 && e.len > e.gso) ? (e.len + e.gso - 1) / e.gso : 1;
                    stats.bytes += e.len;
                }
                i += static_cast<std::size_t>(r);
                continue;
            }
            const int err = errno;
            if (err == EINTR) continue;
            if (err == ENOBUFS || err == EAGAIN || err == EWOULDBLOCK) {
                ++stats.retries;
                sleep_ns(20'000);
                continue;
            }
            if (err == ECONNREFUSED) {
                // An ICMP port-unreachable for an earlier datagram; this one was
                // not sent (the error is consumed), so just send it again.
                ++stats.errors;
                continue;
            }
            // EMSGSIZE here: the segment size exceeds the path MTU (the kernel
            // refuses GSO then; single datagrams may still be fragmented).
            if (mode == send_mode::gso && q[i].gso != 0 && q[i].len > q[i].gso &&
                (is_gso_refusal(err) || err == EMSGSIZE)) {
                fall_back("sendmmsg with UDP_SEGMENT", err);
                split_from(q, i);
                continue;
            }
            die(2, fmt::format("sendmmsg to {}: {}", t.spec, std::strerror(err)));
        }
        q.clear();
        t.arena_used = 0;
    }

private:
    // Replaces the GSO entries from index i on by one entry per datagram.
    static void split_from(std::vector<entry>& q, std::size_t i) {
        std::vector<entry> rest;
        for (std::size_t j = i; j < q.size(); ++j) {
            const entry e = q[j];
            if (e.gso == 0 || e.len <= e.gso) {
                rest.push_back({e.ptr, e.len, 0});
                continue;
            }
            for (std::uint32_t off = 0; off < e.len; off += e.gso)
                rest.push_back({e.ptr + off, std::min<std::uint32_t>(e.gso, e.len - off), 0});
        }
        q.resize(i);
        q.insert(q.end(), rest.begin(), rest.end());
    }

    struct alignas(cmsghdr) ctrl_buf {
        std::byte buf[CMSG_SPACE(sizeof(std::uint16_t))];
    };
    std::array<mmsghdr, batch_messages> msgs_{};
    std::array<iovec, batch_messages> iov_{};
    std::array<ctrl_buf, batch_messages> ctrl_{};
};

}  // namespace daqd::sim
