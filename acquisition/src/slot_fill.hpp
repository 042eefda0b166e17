#pragma once
// What both receive backends do with a datagram (or a GRO batch of them) that
// landed in a ring slot: validate, count, and decide whether to publish it.
// Receiver thread only.
#include "daqd/acquisition/daq1.hpp"
#include "daqd/acquisition/packet_ring.hpp"
#include "daqd/acquisition/receiver.hpp"

#include <netinet/in.h>
#include <netinet/udp.h>
#include <sys/socket.h>

#include <cstring>
#include <span>

#ifndef UDP_GRO
#define UDP_GRO 104
#endif

namespace daqd::acquisition::detail {

// Fills the slot header and returns true when the slot holds at least one
// valid datagram. `segment` is the GRO segment size (0: a single datagram).
inline bool finish_slot(slot_header& s, link_counters& c, std::uint16_t link, std::uint16_t data_offset,
                        std::uint32_t bytes, std::uint32_t segment, bool truncated, std::uint64_t now_ns) noexcept {
    const std::byte* data = reinterpret_cast<const std::byte*>(&s) + sizeof(slot_header) + data_offset;
    s.bytes = bytes;
    s.data_offset = data_offset;
    s.link = link;
    s.receive_ns = now_ns;
    s.invalid_mask = 0;
    c.bytes.add(bytes);
    if (truncated) {
        c.truncated.add();
        c.invalid[static_cast<std::size_t>(daq1::drop_reason::payload_beyond_frame)].add();
        s.bytes = 0;
        return false;
    }
    daq1::header h;
    if (segment == 0 || segment >= bytes) {
        s.segment_bytes = 0;
        const auto r = daq1::validate(std::span<const std::byte>(data, bytes), h);
        if (r != daq1::drop_reason::none) {
            c.invalid[static_cast<std::size_t>(r)].add();
            s.bytes = 0;
            return false;
        }
        c.datagrams.add();
        return true;
    }
    s.segment_bytes = static_cast<std::uint16_t>(segment);
    std::uint32_t valid = 0;
    unsigned i = 0;
    for (std::uint32_t off = 0; off < bytes; off += segment, ++i) {
        const std::uint32_t len = bytes - off < segment ? bytes - off : segment;
        const auto r = daq1::validate(std::span<const std::byte>(data + off, len), h);
        if (r != daq1::drop_reason::none) {
            c.invalid[static_cast<std::size_t>(r)].add();
            if (i < 64) s.invalid_mask |= (1ull << i);
        } else {
            ++valid;
        }
    }
    c.datagrams.add(valid);
    if (valid == 0) s.bytes = 0;
    return valid > 0;
}

// Reads the control messages daqd asks for: the socket's drop count
// (SO_RXQ_OVFL) and the GRO segment size (UDP_GRO).
inline void read_cmsg(const cmsghdr& cm, link_counters& c, std::uint32_t& segment) noexcept {
    if (cm.cmsg_level == SOL_SOCKET && cm.cmsg_type == SO_RXQ_OVFL) {
        std::uint32_t drops;
        std::memcpy(&drops, CMSG_DATA(&cm), sizeof drops);
        c.kernel_drops.set(drops);
    } else if (cm.cmsg_level == SOL_UDP && cm.cmsg_type == UDP_GRO) {
        int seg;
        std::memcpy(&seg, CMSG_DATA(&cm), sizeof seg);
        segment = static_cast<std::uint32_t>(seg);
    }
}

// Segment count of a received buffer (GRO) for drop accounting.
inline std::uint64_t segments_in(std::uint32_t bytes, std::uint32_t segment) noexcept {
    if (segment == 0 || bytes == 0) return 1;
    return (bytes + segment - 1) / segment;
}

}  // namespace daqd::acquisition::detail

#include "daqd/common/log_once.hpp"

#include <sys/socket.h>

#include <vector>

namespace daqd::acquisition::detail {

// recvmmsg into the ring (or into scratch, counted as ring drops, when the
// ring is full). Used by the recvmmsg backend for everything and by the
// io_uring backend for its drains. Receiver thread only.
class batch_receiver {
public:
    explicit batch_receiver(backend_context ctx);
    // One recvmmsg on link l. Returns how many datagrams were taken
    // (into the ring or dropped); 0 when the socket had nothing. With
    // `scratch_only` every datagram is dropped (counted): the io_uring backend
    // owns the ring slots while its buffers are with the kernel.
    std::uint64_t receive_once(std::size_t link, bool scratch_only = false);
    // Calls receive_once on every link until none has anything left.
    void drain_all();
    void ring_has_room() noexcept;

private:
    backend_context _ctx;
    unsigned _batch;
    std::vector<mmsghdr> _msgs;
    std::vector<iovec> _iov;
    std::vector<std::byte> _control;
    std::vector<std::byte> _scratch;
    common::edge_logger _ring_full;
    bool _error_logged = false;
};

}  // namespace daqd::acquisition::detail
