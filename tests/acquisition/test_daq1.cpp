// The DAQ1 packet format: header encoding, every validity rule with its own
// drop reason and its exact boundary, the test pattern, the frame layout.
#include "daqd/acquisition/daq1.hpp"

#include <catch2/catch.hpp>

#include <array>
#include <cstdint>
#include <limits>
#include <vector>

namespace daq1 = daqd::acquisition::daq1;
using daq1::drop_reason;

namespace {

// A valid datagram: header `h` followed by `payload_bytes` bytes of payload.
std::vector<std::byte> datagram(const daq1::header& h, std::size_t payload_bytes) {
    std::vector<std::byte> d(daq1::header_bytes + payload_bytes, std::byte{0x5a});
    daq1::encode_header(h, d.data());
    return d;
}

daq1::header valid_header() {
    daq1::header h;
    h.flags = daq1::flag_test_pattern;
    h.unit_id = 3;
    h.packet_seq = 77;
    h.packet_index = 1;
    h.packet_count = 3;
    h.frame_number = 12;
    h.timestamp_ns = 1'000'000;
    h.payload_offset = 100;
    h.frame_bytes = 300;
    return h;
}

drop_reason check(const std::vector<std::byte>& d) {
    daq1::header out;
    return daq1::validate(std::span<const std::byte>(d.data(), d.size()), out);
}

drop_reason check_header(const daq1::header& h, std::size_t payload_bytes = 100) {
    return check(datagram(h, payload_bytes));
}

}  // namespace

namespace Catch {
template <>
struct StringMaker<drop_reason> {
    static std::string convert(drop_reason r) { return std::string(daq1::name(r)); }
};
}  // namespace Catch

TEST_CASE("daq1: the reference packet is valid and decodes to its header", "[acquisition][daq1]") {
    const auto h = valid_header();
    const auto d = datagram(h, 100);
    daq1::header out;
    REQUIRE(daq1::validate(std::span<const std::byte>(d.data(), d.size()), out) == drop_reason::none);
    CHECK(out.unit_id == 3);
    CHECK(out.packet_seq == 77);
    CHECK(out.packet_index == 1);
    CHECK(out.packet_count == 3);
    CHECK(out.frame_number == 12);
    CHECK(out.payload_offset == 100);
    CHECK(out.frame_bytes == 300);
}

TEST_CASE("daq1: every validity rule has its own drop reason", "[acquisition][daq1]") {
    SECTION("too short: 41 and 40 bytes, and nothing at all") {
        auto d = datagram(valid_header(), 100);
        d.resize(41);
        CHECK(check(d) == drop_reason::too_short);
        d.resize(40);
        CHECK(check(d) == drop_reason::too_short);
        d.resize(1);
        CHECK(check(d) == drop_reason::too_short);
        d.clear();
        CHECK(check(d) == drop_reason::too_short);
    }
    SECTION("bad magic") {
        auto h = valid_header();
        h.magic = 0x32514144;  // "DAQ2"
        CHECK(check_header(h) == drop_reason::bad_magic);
        h.magic = 0x44415131;  // "DAQ1" big-endian
        CHECK(check_header(h) == drop_reason::bad_magic);
    }
    SECTION("bad version") {
        auto h = valid_header();
        h.version = 2;
        CHECK(check_header(h) == drop_reason::bad_version);
        h.version = 0;
        CHECK(check_header(h) == drop_reason::bad_version);
    }
    SECTION("unknown flag bits") {
        auto h = valid_header();
        h.flags = 0x04;
        CHECK(check_header(h) == drop_reason::unknown_flags);
        h.flags = 0x80;
        CHECK(check_header(h) == drop_reason::unknown_flags);
        h.flags = daq1::flag_test_pattern | 0x80;
        CHECK(check_header(h) == drop_reason::unknown_flags);
        h.flags = daq1::flag_test_pattern | daq1::flag_end_of_stream;  // both known bits
        CHECK(check_header(h) == drop_reason::none);
        h.flags = 0;
        CHECK(check_header(h) == drop_reason::none);
    }
    SECTION("packet_count 0") {
        auto h = valid_header();
        h.packet_count = 0;
        h.packet_index = 0;
        CHECK(check_header(h) == drop_reason::zero_packet_count);
    }
    SECTION("packet_index == packet_count") {
        auto h = valid_header();
        h.packet_index = 3;
        CHECK(check_header(h) == drop_reason::packet_index_out_of_range);
        h.packet_index = 65535;
        h.packet_count = 65535;
        CHECK(check_header(h) == drop_reason::packet_index_out_of_range);
        h.packet_index = 65534;
        CHECK(check_header(h) == drop_reason::none);
    }
    SECTION("frame_bytes 0, odd, above 16 MiB") {
        auto h = valid_header();
        h.payload_offset = 0;
        h.frame_bytes = 0;
        CHECK(check_header(h) == drop_reason::frame_bytes_zero);
        h.frame_bytes = 301;
        CHECK(check_header(h) == drop_reason::frame_bytes_odd);
        h.frame_bytes = daq1::max_frame_bytes + 2;
        CHECK(check_header(h) == drop_reason::frame_bytes_too_large);
        h.frame_bytes = 0xfffffffe;
        CHECK(check_header(h) == drop_reason::frame_bytes_too_large);
    }
    SECTION("payload of odd length") {
        CHECK(check_header(valid_header(), 99) == drop_reason::payload_odd);
        CHECK(check_header(valid_header(), 3) == drop_reason::payload_odd);  // 43 bytes
        CHECK(check_header(valid_header(), 1) == drop_reason::too_short);    // 41 bytes: too short first
    }
    SECTION("payload_offset odd") {
        auto h = valid_header();
        h.payload_offset = 101;
        CHECK(check_header(h) == drop_reason::payload_offset_odd);
    }
    SECTION("payload beyond the frame") {
        auto h = valid_header();
        h.payload_offset = 202;  // 202 + 100 = 302 > 300
        CHECK(check_header(h) == drop_reason::payload_beyond_frame);
        h.payload_offset = 0xfffffffe;  // must not wrap around 32 bits
        CHECK(check_header(h) == drop_reason::payload_beyond_frame);
        h.payload_offset = 0;
        CHECK(check_header(h, 302) == drop_reason::payload_beyond_frame);
    }
}

TEST_CASE("daq1: the exact boundaries are valid", "[acquisition][daq1]") {
    SECTION("a 42-byte datagram (2 bytes of payload)") {
        auto h = valid_header();
        h.frame_bytes = 2;
        h.payload_offset = 0;
        h.packet_index = 0;
        h.packet_count = 1;
        const auto d = datagram(h, 2);
        REQUIRE(d.size() == daq1::min_datagram_bytes);
        REQUIRE(d.size() == 42);
        CHECK(check(d) == drop_reason::none);
    }
    SECTION("frame_bytes exactly 16 MiB, last packet ending exactly at it") {
        auto h = valid_header();
        h.frame_bytes = 16u * 1024u * 1024u;
        h.payload_offset = h.frame_bytes - 1432;
        CHECK(check_header(h, 1432) == drop_reason::none);
    }
    SECTION("payload_offset + length == frame_bytes") {
        auto h = valid_header();
        h.payload_offset = 200;  // 200 + 100 = 300
        CHECK(check_header(h) == drop_reason::none);
    }
    SECTION("a maximum-size datagram") {
        auto h = valid_header();
        h.payload_offset = 0;
        h.frame_bytes = 9000;
        CHECK(check_header(h, daq1::max_datagram_bytes - daq1::header_bytes) == drop_reason::none);
    }
}

TEST_CASE("daq1: encode/decode round trip of every field", "[acquisition][daq1]") {
    SECTION("maximum values") {
        daq1::header h;
        h.magic = 0xffffffff;
        h.version = 0xff;
        h.flags = 0xff;
        h.unit_id = 0xffff;
        h.packet_seq = 0xffffffff;
        h.packet_index = 0xffff;
        h.packet_count = 0xffff;
        h.frame_number = std::numeric_limits<std::uint64_t>::max();
        h.timestamp_ns = std::numeric_limits<std::uint64_t>::max();
        h.payload_offset = 0xffffffff;
        h.frame_bytes = 0xffffffff;
        std::array<std::byte, daq1::header_bytes> buf{};
        daq1::encode_header(h, buf.data());
        for (auto b : buf) CHECK(b == std::byte{0xff});
        const auto d = daq1::decode_header(buf.data());
        CHECK(d.magic == h.magic);
        CHECK(d.version == h.version);
        CHECK(d.flags == h.flags);
        CHECK(d.unit_id == h.unit_id);
        CHECK(d.packet_seq == h.packet_seq);
        CHECK(d.packet_index == h.packet_index);
        CHECK(d.packet_count == h.packet_count);
        CHECK(d.frame_number == h.frame_number);
        CHECK(d.timestamp_ns == h.timestamp_ns);
        CHECK(d.payload_offset == h.payload_offset);
        CHECK(d.frame_bytes == h.frame_bytes);
    }
    SECTION("distinct values land at their documented offsets, little-endian") {
        daq1::header h;
        h.flags = 0x03;
        h.unit_id = 0x0102;
        h.packet_seq = 0x03040506;
        h.packet_index = 0x0708;
        h.packet_count = 0x090a;
        h.frame_number = 0x0b0c0d0e0f101112ull;
        h.timestamp_ns = 0x131415161718191aull;
        h.payload_offset = 0x1b1c1d1e;
        h.frame_bytes = 0x1f202122;
        std::array<std::byte, daq1::header_bytes> buf{};
        daq1::encode_header(h, buf.data());
        const std::array<std::uint8_t, daq1::header_bytes> expected{
            'D',  'A',  'Q',  '1',                           // magic
            0x01, 0x03,                                      // version, flags
            0x02, 0x01,                                      // unit_id
            0x06, 0x05, 0x04, 0x03,                          // packet_seq
            0x08, 0x07,                                      // packet_index
            0x0a, 0x09,                                      // packet_count
            0x12, 0x11, 0x10, 0x0f, 0x0e, 0x0d, 0x0c, 0x0b,  // frame_number
            0x1a, 0x19, 0x18, 0x17, 0x16, 0x15, 0x14, 0x13,  // timestamp_ns
            0x1e, 0x1d, 0x1c, 0x1b,                          // payload_offset
            0x22, 0x21, 0x20, 0x1f,                          // frame_bytes
        };
        for (std::size_t i = 0; i < expected.size(); ++i) {
            INFO("byte " << i);
            CHECK(std::to_integer<std::uint8_t>(buf[i]) == expected[i]);
        }
        const auto d = daq1::decode_header(buf.data());
        CHECK(d.magic == daq1::magic);
        CHECK(d.version == daq1::version);
        CHECK(d.flags == h.flags);
        CHECK(d.unit_id == h.unit_id);
        CHECK(d.packet_seq == h.packet_seq);
        CHECK(d.packet_index == h.packet_index);
        CHECK(d.packet_count == h.packet_count);
        CHECK(d.frame_number == h.frame_number);
        CHECK(d.timestamp_ns == h.timestamp_ns);
        CHECK(d.payload_offset == h.payload_offset);
        CHECK(d.frame_bytes == h.frame_bytes);
    }
    SECTION("zero values") {
        daq1::header h;
        h.magic = 0;
        h.version = 0;
        h.packet_count = 0;
        std::array<std::byte, daq1::header_bytes> buf;
        buf.fill(std::byte{0xee});
        daq1::encode_header(h, buf.data());
        for (auto b : buf) CHECK(b == std::byte{0});
    }
}

TEST_CASE("daq1: test pattern values", "[acquisition][daq1]") {
    // (frame * 7 + unit * 13 + channel) mod 65536, worked by hand
    CHECK(daq1::test_pattern(0, 0, 0) == 0);
    CHECK(daq1::test_pattern(1, 0, 0) == 7);
    CHECK(daq1::test_pattern(0, 1, 0) == 13);
    CHECK(daq1::test_pattern(0, 0, 1) == 1);
    CHECK(daq1::test_pattern(2, 3, 4) == 14 + 39 + 4);
    CHECK(daq1::test_pattern(0, 0, 65535) == 65535);
    CHECK(daq1::test_pattern(0, 0, 65536) == 0);
    // 70000 + 851955 = 921955 = 14 * 65536 + 4451
    CHECK(daq1::test_pattern(10000, 65535, 0) == 4451);
    CHECK(daq1::test_pattern(10000, 65535, 100) == 4551);
    CHECK(daq1::test_pattern(10000, 65535, 61085) == 0);  // 4451 + 61085 = 65536
    CHECK(daq1::test_pattern(10000, 65535, 61086) == 1);
    // frame * 7 overflowing 64 bits still gives the value mod 65536: (-1 * 7) mod 65536
    CHECK(daq1::test_pattern(std::numeric_limits<std::uint64_t>::max(), 0, 0) == 65529);
    static_assert(daq1::test_pattern(1, 1, 1) == 21);
}

TEST_CASE("daq1: frame layout of the worked example", "[acquisition][daq1]") {
    // unit 3, 4096 channels, 1472-byte datagrams
    constexpr std::uint32_t channels = 4096;
    const auto l = daq1::frame_layout::for_datagram(channels * 2, daq1::standard_datagram_bytes);
    CHECK(l.frame_bytes == 8192);
    CHECK(l.slice == 1432);
    REQUIRE(l.packet_count == 6);
    const std::array<std::uint32_t, 6> offsets{0, 1432, 2864, 4296, 5728, 7160};
    std::uint32_t total = 0;
    for (std::uint16_t i = 0; i < 6; ++i) {
        INFO("packet " << i);
        CHECK(l.offset(i) == offsets[i]);
        CHECK(l.bytes(i) == (i == 5 ? 1032u : 1432u));
        total += l.bytes(i);
        // every packet of the layout is a valid DAQ1 datagram
        daq1::header h;
        h.unit_id = 3;
        h.packet_index = i;
        h.packet_count = l.packet_count;
        h.payload_offset = l.offset(i);
        h.frame_bytes = l.frame_bytes;
        CHECK(check_header(h, l.bytes(i)) == drop_reason::none);
        CHECK(daq1::header_bytes + l.bytes(i) <= daq1::standard_datagram_bytes);
    }
    CHECK(total == 8192);
}

TEST_CASE("daq1: frame layout edge cases", "[acquisition][daq1]") {
    SECTION("a frame that fits one packet") {
        const auto l = daq1::frame_layout::for_datagram(100, 1472);
        CHECK(l.packet_count == 1);
        CHECK(l.slice == 100);
        CHECK(l.bytes(0) == 100);
    }
    SECTION("an exact multiple of the slice") {
        const auto l = daq1::frame_layout::for_datagram(1432 * 4, 1472);
        CHECK(l.packet_count == 4);
        CHECK(l.bytes(3) == 1432);
    }
    SECTION("an odd datagram size gives an even slice") {
        const auto l = daq1::frame_layout::for_datagram(8192, 1473);
        CHECK(l.slice == 1432);
        CHECK(l.packet_count == 6);
    }
}
