// The io_uring backend: one multishot recvmsg per link, all selecting buffers
// from one provided-buffer ring whose buffers are the packet ring's slots, in
// slot order. The kernel consumes provided buffers in the order they were
// added, so datagrams land in consecutive slots; the receiver publishes a slot
// once it and every slot before it are complete. Freed slots (the consumer
// moved `tail`) are provided again in order.
//
// liburing 2.3 has no io_uring_setup_buf_ring, so the buffer ring is mapped
// and registered here (io_uring_register_buf_ring).
//
// When the packet ring is full the kernel has no buffer, the multishot ends
// with ENOBUFS, and the link is drained into scratch (counted as ring drops)
// by the same code as the recvmmsg backend until room returns.
//
// A poll on the receiver's wake event sits beside the receives, so a stop
// request ends an idle wait at once.
#include "slot_fill.hpp"

#include <liburing.h>
#include <netinet/in.h>
#include <poll.h>
#include <netinet/udp.h>
#include <spdlog/spdlog.h>
#include <sys/mman.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <vector>

#ifndef UDP_GRO
#define UDP_GRO 104
#endif

namespace daqd::acquisition {

namespace {

constexpr std::uint64_t cancel_tag = 1ull << 63;
constexpr std::uint64_t wake_tag = 1ull << 62;
constexpr unsigned control_bytes = 64;
constexpr unsigned buffer_group = 0;

class io_uring_backend final : public receive_backend {
public:
    explicit io_uring_backend(backend_context ctx)
        : _ctx(ctx), _rx(ctx), _armed(ctx.links.size(), false), _done(ctx.ring.slot_count(), 0) {
        const std::uint64_t n = ctx.ring.slot_count();
        if (n > 32768) throw std::runtime_error("ring_slots above 32768 exceed an io_uring buffer ring");
        if (ctx.ring.data_bytes() < ctx.cfg.max_datagram_bytes + sizeof(io_uring_recvmsg_out) + control_bytes)
            throw std::runtime_error("ring slots lack room for the recvmsg header");
        io_uring_params params{};
        params.flags = IORING_SETUP_SUBMIT_ALL;
        int rc = io_uring_queue_init_params(256, &_uring, &params);
        if (rc < 0) {
            params = io_uring_params{};
            rc = io_uring_queue_init_params(256, &_uring, &params);
        }
        if (rc < 0) throw std::runtime_error(std::string("io_uring_queue_init: ") + std::strerror(-rc));
        _br_bytes = ((n * sizeof(io_uring_buf)) + 4095) & ~std::size_t{4095};
        void* mem = ::mmap(nullptr, _br_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
        if (mem == MAP_FAILED) {
            const int e = errno;
            io_uring_queue_exit(&_uring);
            throw std::runtime_error(std::string("mmap for the buffer ring: ") + std::strerror(e));
        }
        _br = static_cast<io_uring_buf_ring*>(mem);
        io_uring_buf_ring_init(_br);
        io_uring_buf_reg reg{};
        reg.ring_addr = reinterpret_cast<std::uint64_t>(_br);
        reg.ring_entries = static_cast<std::uint32_t>(n);
        reg.bgid = buffer_group;
        rc = io_uring_register_buf_ring(&_uring, &reg, 0);
        if (rc < 0) {
            ::munmap(_br, _br_bytes);
            io_uring_queue_exit(&_uring);
            throw std::runtime_error(std::string("io_uring_register_buf_ring: ") + std::strerror(-rc));
        }
        _msg.msg_namelen = 0;
        _msg.msg_controllen = control_bytes;
        _mask = static_cast<std::uint32_t>(n - 1);
        // Every slot is free at start: provide them all, in order.
        for (std::uint64_t seq = 0; seq < n; ++seq) add_buffer(seq, static_cast<int>(seq));
        io_uring_buf_ring_advance(_br, static_cast<int>(n));
        _provided_end = n;
    }

    ~io_uring_backend() override {
        io_uring_unregister_buf_ring(&_uring, buffer_group);
        ::munmap(_br, _br_bytes);
        io_uring_queue_exit(&_uring);
    }

    const char* name() const noexcept override { return "io_uring"; }

    std::uint64_t receive() override {
        if (!_started) {
            _started = true;
            for (std::size_t l = 0; l < _ctx.links.size(); ++l) arm(l);
            io_uring_sqe* sqe = get_sqe();
            io_uring_prep_poll_add(sqe, _ctx.wake.fd(), POLLIN);
            io_uring_sqe_set_data64(sqe, wake_tag);
            io_uring_submit(&_uring);
        }
        const unsigned got = reap();
        after_reap();
        return got;
    }

    // While a link is disarmed (the ring was full) its socket is read by
    // polling: often, so that the kernel does not drop meanwhile.
    std::chrono::microseconds sleep_limit() const override {
        return any_disarmed() ? std::chrono::microseconds(200) : common::idle_policy::longest_sleep;
    }

    void sleep(common::wake_event&, std::chrono::microseconds timeout) override {
        io_uring_cqe* cqe = nullptr;
        const auto us = timeout.count();
        __kernel_timespec ts{us / 1'000'000, (us % 1'000'000) * 1000};
        io_uring_submit_and_wait_timeout(&_uring, &cqe, 1, &ts, nullptr);
    }

    // Stop: cancel the multishots, take every completion, then drain what
    // the sockets still hold through recvmmsg.
    void drain() override {
        for (std::size_t l = 0; l < _ctx.links.size(); ++l) {
            if (!_armed[l]) continue;
            io_uring_sqe* sqe = get_sqe();
            io_uring_prep_cancel64(sqe, l, 0);
            io_uring_sqe_set_data64(sqe, cancel_tag | l);
        }
        io_uring_submit(&_uring);
        for (int tries = 0; any_armed() && tries < 1000; ++tries) {
            io_uring_cqe* cqe = nullptr;
            __kernel_timespec ts{0, 1'000'000};
            io_uring_wait_cqe_timeout(&_uring, &cqe, &ts);
            reap();
            publish();
        }
        reap();
        publish();
        _rx.drain_all();
    }

private:
    void add_buffer(std::uint64_t seq, int offset) {
        io_uring_buf_ring_add(_br, _ctx.ring.slot_data(seq), static_cast<unsigned>(_ctx.ring.data_bytes()),
                              static_cast<unsigned short>(seq & _mask), static_cast<int>(_mask), offset);
    }

    io_uring_sqe* get_sqe() {
        io_uring_sqe* sqe = io_uring_get_sqe(&_uring);
        if (!sqe) {
            io_uring_submit(&_uring);
            sqe = io_uring_get_sqe(&_uring);
        }
        return sqe;
    }

    void arm(std::size_t l) {
        io_uring_sqe* sqe = get_sqe();
        io_uring_prep_recvmsg_multishot(sqe, _ctx.links[l].fd, &_msg, 0);
        sqe->flags |= IOSQE_BUFFER_SELECT;
        sqe->buf_group = buffer_group;
        io_uring_sqe_set_data64(sqe, l);
        _armed[l] = true;
    }

    bool any_disarmed() const {
        for (bool a : _armed)
            if (!a) return true;
        return false;
    }
    bool any_armed() const {
        for (bool a : _armed)
            if (a) return true;
        return false;
    }

    unsigned reap() {
        // The stamp is taken after the completions it stamps: only those
        // ready now are reaped (the loop would otherwise also take ones that
        // arrive meanwhile, and stamp them before their arrival).
        const unsigned ready = io_uring_cq_ready(&_uring);
        if (ready == 0) return 0;
        const std::uint64_t now = common::monotonic_ns();
        unsigned count = 0;
        unsigned head;
        io_uring_cqe* cqe;
        io_uring_for_each_cqe(&_uring, head, cqe) {
            if (count == ready) break;
            ++count;
            const std::uint64_t tag = io_uring_cqe_get_data64(cqe);
            if (tag & (cancel_tag | wake_tag)) continue;
            const std::size_t l = static_cast<std::size_t>(tag);
            if (!(cqe->flags & IORING_CQE_F_MORE)) _armed[l] = false;
            if (cqe->flags & IORING_CQE_F_BUFFER) on_buffer(l, cqe, now);
            if (cqe->res < 0 && cqe->res != -ENOBUFS && cqe->res != -ECANCELED && !_error_logged) {
                _error_logged = true;
                spdlog::error("io_uring recvmsg on {} failed: {} (further errors not logged)",
                              _ctx.links[l].endpoint.to_string(), std::strerror(-cqe->res));
            }
        }
        io_uring_cq_advance(&_uring, count);
        return count;
    }

    void on_buffer(std::size_t l, io_uring_cqe* cqe, std::uint64_t now) {
        const std::uint32_t bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
        // The slot this buffer is: the one at or after head with this index.
        const std::uint64_t head = _ctx.ring.producer_head();
        const std::uint64_t seq = head + ((bid - (head & _mask)) & _mask);
        ++_consumed;
        auto& c = *_ctx.counters[l];
        slot_header& s = *_ctx.ring.slot(seq);
        _done[seq & _mask] = 1;
        if (cqe->res <= 0) {
            s.bytes = 0;
            return;
        }
        std::byte* buf = _ctx.ring.slot_data(seq);
        auto* out = io_uring_recvmsg_validate(buf, cqe->res, &_msg);
        if (!out) {
            s.bytes = 0;
            return;
        }
        std::uint32_t segment = 0;
        for (cmsghdr* cm = io_uring_recvmsg_cmsg_firsthdr(out, &_msg); cm;
             cm = io_uring_recvmsg_cmsg_nexthdr(out, &_msg, cm)) {
            detail::read_cmsg(*cm, c, segment);
        }
        const auto* payload = static_cast<const std::byte*>(io_uring_recvmsg_payload(out, &_msg));
        const std::uint32_t bytes = io_uring_recvmsg_payload_length(out, cqe->res, &_msg);
        const bool truncated = (out->flags & MSG_TRUNC) != 0;
        const auto offset = static_cast<std::uint16_t>(payload - buf);
        detail::finish_slot(s, c, static_cast<std::uint16_t>(_ctx.first_link + l), offset, bytes, segment, truncated, now);
    }

    // Publishes every completed slot in order (invalid ones as skip slots).
    void publish() {
        std::uint64_t head = _ctx.ring.producer_head();
        const std::uint64_t start = head;
        while (head < _consumed && _done[head & _mask]) {
            _done[head & _mask] = 0;
            ++head;
        }
        if (head != start) {
            _ctx.ring.publish(head);
            _ctx.consumer_wake.notify();
        }
    }

    void after_reap() {
        publish();
        // Give the kernel back the slots the consumer has freed.
        const std::uint64_t limit = _ctx.ring.consumer_tail_fresh() + _ctx.ring.slot_count();
        int added = 0;
        while (_provided_end < limit) add_buffer(_provided_end++, added++);
        if (added) {
            io_uring_buf_ring_advance(_br, added);
            _rx.ring_has_room();
        }
        bool submit = false;
        for (std::size_t l = 0; l < _ctx.links.size(); ++l) {
            if (_armed[l]) continue;
            if (_provided_end > _consumed) {
                arm(l);
                submit = true;
            } else {
                // No buffer for the kernel: the ring is full. Drain to scratch,
                // counted; never into ring slots, whose order the kernel owns.
                _rx.receive_once(l, /*scratch_only=*/true);
            }
        }
        if (submit) io_uring_submit(&_uring);
    }

    backend_context _ctx;
    io_uring _uring{};
    io_uring_buf_ring* _br = nullptr;
    std::size_t _br_bytes = 0;
    detail::batch_receiver _rx;
    std::vector<bool> _armed;
    std::vector<std::uint8_t> _done;
    msghdr _msg{};
    std::uint32_t _mask = 0;
    std::uint64_t _provided_end = 0;  // buffers provided for slots [.., _provided_end)
    std::uint64_t _consumed = 0;      // buffers the kernel has filled
    bool _error_logged = false;
    bool _started = false;  // links armed (by the first pass, not before the thread runs)
};

}  // namespace

std::unique_ptr<receive_backend> make_io_uring_backend(backend_context ctx, std::string& why) {
    try {
        return std::make_unique<io_uring_backend>(ctx);
    } catch (const std::exception& e) {
        why = e.what();
        return nullptr;
    }
}

}  // namespace daqd::acquisition
