#pragma once
// daq-sim: injected faults: malformed datagrams by kind, per-packet fault draws.
#include "sim.hpp"

namespace daqd::sim {

// ---------------------------------------------------------------- faults --

// Malformed extras, cycled in this order; names are the server's drop reasons.
constexpr std::array malformed_kinds{
    daq1::drop_reason::too_short,        daq1::drop_reason::bad_magic,
    daq1::drop_reason::bad_version,      daq1::drop_reason::unknown_flags,
    daq1::drop_reason::zero_packet_count, daq1::drop_reason::packet_index_out_of_range,
    daq1::drop_reason::frame_bytes_odd,  daq1::drop_reason::payload_beyond_frame,
};
constexpr std::size_t n_malformed_kinds = malformed_kinds.size();

// Writes a datagram derived from the valid packet `pkt` that the server drops
// for exactly `kind`; returns its length.
inline std::size_t make_malformed(daq1::drop_reason kind, const std::byte* pkt, std::size_t pkt_len, std::byte* out) {
    if (kind == daq1::drop_reason::too_short) {
        std::memcpy(out, pkt, 20);
        return 20;
    }
    daq1::header h = daq1::decode_header(pkt);
    const std::size_t payload = std::min(pkt_len - daq1::header_bytes, malformed_payload_max);
    switch (kind) {
        case daq1::drop_reason::bad_magic: h.magic = 0x12345678; break;
        case daq1::drop_reason::bad_version: h.version = 2; break;
        case daq1::drop_reason::unknown_flags: h.flags |= 0x80; break;
        case daq1::drop_reason::zero_packet_count: h.packet_count = 0; break;
        case daq1::drop_reason::packet_index_out_of_range: h.packet_index = h.packet_count; break;
        case daq1::drop_reason::frame_bytes_odd: h.frame_bytes += 1; break;
        case daq1::drop_reason::payload_beyond_frame: h.payload_offset = h.frame_bytes; break;
        default: break;
    }
    daq1::encode_header(h, out);
    std::memcpy(out + daq1::header_bytes, pkt + daq1::header_bytes, payload);
    const std::size_t len = daq1::header_bytes + payload;
    daq1::header check;
    const auto got = daq1::validate({out, len}, check);
    if (got != kind)
        die(3, fmt::format("internal error: malformed '{}' validates as '{}'", daq1::name(kind), daq1::name(got)));
    return len;
}

struct packet_fault {
    bool lost, reorder, duplicate, malformed;
};

}  // namespace daqd::sim
