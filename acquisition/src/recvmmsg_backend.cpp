// The recvmmsg backend: per link, one recvmmsg call fills up to `batch` ring
// slots at once. Idle, it sleeps in epoll_wait on every link and on the
// receiver's wake event, so a stop request ends the sleep at once.
#include "slot_fill.hpp"

#include <netinet/in.h>
#include <netinet/udp.h>
#include <spdlog/spdlog.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#ifndef UDP_GRO
#define UDP_GRO 104
#endif

namespace daqd::acquisition {

namespace detail {

namespace {
constexpr std::size_t control_bytes = 64;
}

batch_receiver::batch_receiver(backend_context ctx)
    : _ctx(ctx), _batch(ctx.cfg.batch), _msgs(_batch), _iov(_batch), _control(_batch * control_bytes),
      _scratch(static_cast<std::size_t>(_batch) * ctx.ring.data_bytes()),
      _ring_full("packet ring full: receiver dropping datagrams (the assembler is not keeping up)") {}

void batch_receiver::ring_has_room() noexcept {
    if (_ring_full.active()) _ring_full.off(_ctx.ring.header().dropped.load(std::memory_order_relaxed));
}

std::uint64_t batch_receiver::receive_once(std::size_t l, bool scratch_only) {
    auto& ring = _ctx.ring;
    auto& c = *_ctx.counters[l];
    const std::uint64_t free = scratch_only ? 0 : ring.free_slots();
    const bool to_scratch = free == 0;
    const unsigned n_try = to_scratch ? _batch : static_cast<unsigned>(std::min<std::uint64_t>(free, _batch));
    const std::uint64_t head = ring.producer_head();
    for (unsigned i = 0; i < n_try; ++i) {
        _iov[i].iov_base = to_scratch ? _scratch.data() + i * ring.data_bytes() : ring.slot_data(head + i);
        _iov[i].iov_len = ring.data_bytes();
        auto& h = _msgs[i].msg_hdr;
        h = msghdr{};
        h.msg_iov = &_iov[i];
        h.msg_iovlen = 1;
        h.msg_control = _control.data() + i * control_bytes;
        h.msg_controllen = control_bytes;
    }
    const int n = ::recvmmsg(_ctx.links[l].fd, _msgs.data(), n_try, MSG_DONTWAIT, nullptr);
    if (n <= 0) {
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && !_error_logged) {
            _error_logged = true;
            spdlog::error("recvmmsg on {} failed: {} (further errors not logged)",
                          _ctx.links[l].endpoint.to_string(), std::strerror(errno));
        }
        return 0;
    }
    const std::uint64_t now = common::monotonic_ns();
    std::uint64_t taken = 0;
    std::uint64_t published = head;
    for (int i = 0; i < n; ++i) {
        auto& h = _msgs[i].msg_hdr;
        std::uint32_t segment = 0;
        for (cmsghdr* cm = CMSG_FIRSTHDR(&h); cm; cm = CMSG_NXTHDR(&h, cm)) {
            read_cmsg(*cm, c, segment);
        }
        const std::uint32_t bytes = _msgs[i].msg_len;
        const bool truncated = (h.msg_flags & MSG_TRUNC) != 0;
        const std::uint64_t segs = segments_in(bytes, segment);
        taken += segs;
        if (to_scratch) {
            c.ring_dropped.add(segs);
            c.bytes.add(bytes);
            auto& dropped = ring.header().dropped;
            dropped.store(dropped.load(std::memory_order_relaxed) + segs, std::memory_order_relaxed);
            _ring_full.on(dropped.load(std::memory_order_relaxed));
            continue;
        }
        // Slots fill in order; after an invalid datagram the next one moves
        // down into the unused slot (rare, so a copy is fine there).
        if (published != head + static_cast<std::uint64_t>(i))
            std::memmove(ring.slot_data(published), ring.slot_data(head + i), bytes);
        if (finish_slot(*ring.slot(published), c, static_cast<std::uint16_t>(_ctx.first_link + l), 0, bytes, segment, truncated, now))
            ++published;
    }
    if (!to_scratch) {
        ring_has_room();
        if (published != head) {
            ring.publish(published);
            _ctx.consumer_wake.notify();
        }
    }
    return taken;
}

void batch_receiver::drain_all() {
    for (int pass = 0; pass < 100000; ++pass) {
        std::uint64_t got = 0;
        for (std::size_t l = 0; l < _ctx.links.size(); ++l) got += receive_once(l);
        if (!got) break;
    }
}

}  // namespace detail

namespace {

class recvmmsg_backend final : public receive_backend {
public:
    explicit recvmmsg_backend(backend_context ctx) : _ctx(ctx), _rx(ctx) {
        _epoll = ::epoll_create1(EPOLL_CLOEXEC);
        if (_epoll < 0) throw std::runtime_error(std::string("epoll_create1: ") + std::strerror(errno));
        for (std::size_t i = 0; i <= ctx.links.size(); ++i) {
            epoll_event ev{};
            ev.events = EPOLLIN;
            ev.data.u64 = i;  // links.size(): the wake event
            const int fd = i < ctx.links.size() ? ctx.links[i].fd : ctx.wake.fd();
            if (::epoll_ctl(_epoll, EPOLL_CTL_ADD, fd, &ev) != 0) {
                const int e = errno;
                ::close(_epoll);
                throw std::runtime_error(std::string("epoll_ctl: ") + std::strerror(e));
            }
        }
    }
    ~recvmmsg_backend() override { ::close(_epoll); }

    const char* name() const noexcept override { return "recvmmsg"; }

    std::uint64_t receive() override {
        std::uint64_t got = 0;
        for (std::size_t l = 0; l < _ctx.links.size(); ++l) got += _rx.receive_once(l);
        return got;
    }

    void sleep(common::wake_event& wake, std::chrono::microseconds timeout) override {
        epoll_event ev[8];
        const int n = ::epoll_wait(_epoll, ev, 8, static_cast<int>((timeout.count() + 999) / 1000));
        for (int i = 0; i < n; ++i)
            if (ev[i].data.u64 == _ctx.links.size()) wake.wait(std::chrono::microseconds(0));  // consume the signal
    }

    // What the kernel already holds was taken before the stop: keep it.
    void drain() override { _rx.drain_all(); }

private:
    backend_context _ctx;
    detail::batch_receiver _rx;
    int _epoll = -1;
};

}  // namespace

std::unique_ptr<receive_backend> make_recvmmsg_backend(backend_context ctx) {
    return std::make_unique<recvmmsg_backend>(ctx);
}

}  // namespace daqd::acquisition
