#pragma once
// DAQ1: the hardware units' UDP packet format (docs/PROTOCOL.md).
//
// Pure functions, no state: the receiver thread calls validate() on every
// datagram, the simulator calls encode_header(). Header-only so that the
// simulator and tests share exactly the server's definition.
#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>

namespace daqd::acquisition::daq1 {

inline constexpr std::uint32_t magic = 0x31514144;  // "DAQ1" read little-endian
inline constexpr std::uint8_t version = 1;
inline constexpr std::size_t header_bytes = 40;
inline constexpr std::size_t min_datagram_bytes = header_bytes + 2;
inline constexpr std::size_t max_datagram_bytes = 9000;
inline constexpr std::size_t standard_datagram_bytes = 1472;
inline constexpr std::uint32_t max_frame_bytes = 16u * 1024u * 1024u;

inline constexpr std::uint8_t flag_test_pattern = 0x01;
inline constexpr std::uint8_t flag_end_of_stream = 0x02;
inline constexpr std::uint8_t known_flags = flag_test_pattern | flag_end_of_stream;

struct header {
    std::uint32_t magic = daq1::magic;
    std::uint8_t version = daq1::version;
    std::uint8_t flags = 0;
    std::uint16_t unit_id = 0;
    std::uint32_t packet_seq = 0;
    std::uint16_t packet_index = 0;
    std::uint16_t packet_count = 1;
    std::uint64_t frame_number = 0;
    std::uint64_t timestamp_ns = 0;
    std::uint32_t payload_offset = 0;
    std::uint32_t frame_bytes = 0;
};

// Why a packet was dropped. Every rule of the protocol's validity list has its
// own reason; the last group is decided by the assembler, which knows units.
enum class drop_reason : std::uint8_t {
    none = 0,
    too_short,             // datagram < 42 bytes
    bad_magic,
    bad_version,
    unknown_flags,
    zero_packet_count,
    packet_index_out_of_range,
    frame_bytes_zero,
    frame_bytes_odd,
    frame_bytes_too_large,  // > 16 MiB
    payload_odd,            // payload length odd (length 0 is too_short)
    payload_offset_odd,
    payload_beyond_frame,   // payload_offset + length > frame_bytes
    // decided by the assembler (per-unit state):
    frame_bytes_mismatch,   // differs from the unit's configured or learned size
    unknown_unit,           // units are listed and this one is not
    layout_mismatch,        // packet_count/offset disagree with the unit's frame layout
    frame_too_large_for_pool,  // valid, but larger than assembly.max_frame_bytes
    late,                   // its frame was already closed and stored
    unit_limit,             // a new unit id beyond units.max_learned learned units
    frame_out_of_window,    // frame_number implausibly far from its unit's stream, and no new stream followed
    unit_on_other_shard,    // the unit's packets came first on a link of another receive shard
    count_
};

inline constexpr std::size_t drop_reason_count = static_cast<std::size_t>(drop_reason::count_);

inline constexpr std::array<std::string_view, drop_reason_count> drop_reason_names{
    "none",
    "too_short",
    "bad_magic",
    "bad_version",
    "unknown_flags",
    "zero_packet_count",
    "packet_index_out_of_range",
    "frame_bytes_zero",
    "frame_bytes_odd",
    "frame_bytes_too_large",
    "payload_odd",
    "payload_offset_odd",
    "payload_beyond_frame",
    "frame_bytes_mismatch",
    "unknown_unit",
    "layout_mismatch",
    "frame_too_large_for_pool",
    "late",
    "unit_limit",
    "frame_out_of_window",
    "unit_on_other_shard",
};

constexpr std::string_view name(drop_reason r) noexcept {
    return drop_reason_names[static_cast<std::size_t>(r)];
}

namespace detail {
template <typename T>
inline T load_le(const std::byte* p) noexcept {
    T v;
    std::memcpy(&v, p, sizeof v);  // x86-64 and aarch64 Linux are little-endian
    return v;
}
template <typename T>
inline void store_le(std::byte* p, T v) noexcept {
    std::memcpy(p, &v, sizeof v);
}
}  // namespace detail

static_assert(std::endian::native == std::endian::little, "daqd assumes a little-endian host");

// Decodes the 40 header bytes; the caller has checked the length.
inline header decode_header(const std::byte* p) noexcept {
    using detail::load_le;
    header h;
    h.magic = load_le<std::uint32_t>(p + 0);
    h.version = load_le<std::uint8_t>(p + 4);
    h.flags = load_le<std::uint8_t>(p + 5);
    h.unit_id = load_le<std::uint16_t>(p + 6);
    h.packet_seq = load_le<std::uint32_t>(p + 8);
    h.packet_index = load_le<std::uint16_t>(p + 12);
    h.packet_count = load_le<std::uint16_t>(p + 14);
    h.frame_number = load_le<std::uint64_t>(p + 16);
    h.timestamp_ns = load_le<std::uint64_t>(p + 24);
    h.payload_offset = load_le<std::uint32_t>(p + 32);
    h.frame_bytes = load_le<std::uint32_t>(p + 36);
    return h;
}

inline void encode_header(const header& h, std::byte* p) noexcept {
    using detail::store_le;
    store_le(p + 0, h.magic);
    store_le(p + 4, h.version);
    store_le(p + 5, h.flags);
    store_le(p + 6, h.unit_id);
    store_le(p + 8, h.packet_seq);
    store_le(p + 12, h.packet_index);
    store_le(p + 14, h.packet_count);
    store_le(p + 16, h.frame_number);
    store_le(p + 24, h.timestamp_ns);
    store_le(p + 32, h.payload_offset);
    store_le(p + 36, h.frame_bytes);
}

// The stateless validity rules of the protocol. On success fills `out` and
// returns drop_reason::none. Rules that need per-unit state (configured or
// learned frame size, accepted units) are the assembler's.
inline drop_reason validate(std::span<const std::byte> datagram, header& out) noexcept {
    if (datagram.size() < min_datagram_bytes) return drop_reason::too_short;
    out = decode_header(datagram.data());
    if (out.magic != magic) return drop_reason::bad_magic;
    if (out.version != version) return drop_reason::bad_version;
    if ((out.flags & ~known_flags) != 0) return drop_reason::unknown_flags;
    if (out.packet_count == 0) return drop_reason::zero_packet_count;
    if (out.packet_index >= out.packet_count) return drop_reason::packet_index_out_of_range;
    if (out.frame_bytes == 0) return drop_reason::frame_bytes_zero;
    if ((out.frame_bytes & 1u) != 0) return drop_reason::frame_bytes_odd;
    if (out.frame_bytes > max_frame_bytes) return drop_reason::frame_bytes_too_large;
    const std::size_t payload = datagram.size() - header_bytes;
    if ((payload & 1u) != 0) return drop_reason::payload_odd;
    if ((out.payload_offset & 1u) != 0) return drop_reason::payload_offset_odd;
    if (static_cast<std::uint64_t>(out.payload_offset) + payload > out.frame_bytes)
        return drop_reason::payload_beyond_frame;
    return drop_reason::none;
}

// The test pattern: sample c of frame f from unit u.
constexpr std::uint16_t test_pattern(std::uint64_t frame, std::uint64_t unit, std::uint64_t channel) noexcept {
    return static_cast<std::uint16_t>((frame * 7u + unit * 13u + channel) % 65536u);
}

// How a unit slices a frame: every packet but the last carries `slice` bytes.
struct frame_layout {
    std::uint32_t frame_bytes;
    std::uint32_t slice;  // payload bytes per packet (even)
    std::uint16_t packet_count;

    static constexpr frame_layout for_datagram(std::uint32_t frame_bytes, std::size_t datagram_bytes) noexcept {
        std::uint32_t slice = static_cast<std::uint32_t>(datagram_bytes - header_bytes) & ~1u;
        if (slice > frame_bytes) slice = frame_bytes;
        const std::uint32_t count = (frame_bytes + slice - 1) / slice;
        return {frame_bytes, slice, static_cast<std::uint16_t>(count)};
    }
    constexpr std::uint32_t offset(std::uint16_t index) const noexcept { return index * slice; }
    constexpr std::uint32_t bytes(std::uint16_t index) const noexcept {
        return index + 1 == packet_count ? frame_bytes - offset(index) : slice;
    }
};

}  // namespace daqd::acquisition::daq1
