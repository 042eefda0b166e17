// The frame assembler, driven single-threaded through its test hooks
// (on_packet, expire, flush_all): frames out of the output queue, counters
// from unit_at() / counters(). Rules: docs/PROTOCOL.md "Loss, reordering,
// duplicates".
#include "daqd/acquisition/daq1.hpp"
#include "daqd/common/event.hpp"
#include "daqd/common/spsc_queue.hpp"
#include "daqd/config/config.hpp"
#include "daqd/processing/assembler.hpp"
#include "daqd/processing/frame.hpp"
#include "daqd/processing/block_pool.hpp"

#include <catch2/catch.hpp>
#include <unistd.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

namespace daq1 = daqd::acquisition::daq1;
namespace config = daqd::config;
using daq1::drop_reason;
using daqd::processing::assembler;
using daqd::processing::frame;
using daqd::processing::block_pool;
using daqd::processing::unit_counters;
using packet = std::vector<std::byte>;
using namespace std::chrono_literals;

namespace {

constexpr std::uint64_t t0 = 5'000'000'000ull;  // "now" of most packets
constexpr std::uint64_t ms = 1'000'000ull;

std::uint64_t timestamp_of(std::uint64_t frame, std::uint16_t unit) { return frame * 1000 + unit; }

// Any packet, fields given directly (count 0: from the layout).
struct pkt {
    std::uint16_t unit = 1;
    std::uint64_t frame = 0;
    std::uint16_t index = 0;
    std::uint16_t count = 0;
    std::uint32_t seq = 0;
    std::uint8_t flags = daq1::flag_test_pattern;
    std::uint32_t frame_bytes = 2000;
    std::size_t datagram_bytes = 512;  // how the unit slices its frames
    bool fill = false;                 // payload all `fill_value` instead of the pattern
    std::uint16_t fill_value = 0;
};

packet make_packet(const pkt& p) {
    const auto l = daq1::frame_layout::for_datagram(p.frame_bytes, p.datagram_bytes);
    const std::uint32_t off = l.offset(p.index);
    const std::uint32_t len = p.index < l.packet_count ? l.bytes(p.index) : l.slice;
    packet d(daq1::header_bytes + len);
    daq1::header h;
    h.flags = p.flags;
    h.unit_id = p.unit;
    h.packet_seq = p.seq;
    h.packet_index = p.index;
    h.packet_count = p.count ? p.count : l.packet_count;
    h.frame_number = p.frame;
    h.timestamp_ns = timestamp_of(p.frame, p.unit);
    h.payload_offset = off;
    h.frame_bytes = p.frame_bytes;
    daq1::encode_header(h, d.data());
    for (std::uint32_t i = 0; i < len / 2; ++i) {
        const std::uint16_t v = p.fill ? p.fill_value : daq1::test_pattern(p.frame, p.unit, off / 2 + i);
        std::memcpy(d.data() + daq1::header_bytes + 2 * i, &v, 2);
    }
    daq1::header check;
    REQUIRE(daq1::validate(std::span<const std::byte>(d.data(), d.size()), check) == drop_reason::none);
    return d;
}

// One unit sending frames: packet_seq +1 per packet, in sending order.
struct unit_stream {
    std::uint16_t unit = 1;
    std::uint32_t channels = 1000;
    std::size_t datagram_bytes = 512;  // 472 bytes of payload: 1000 channels = 5 packets
    std::uint32_t next_seq = 0;

    std::uint32_t frame_bytes() const { return channels * 2; }
    daq1::frame_layout layout() const { return daq1::frame_layout::for_datagram(frame_bytes(), datagram_bytes); }
    std::uint16_t count() const { return layout().packet_count; }
    packet make(std::uint64_t frame, std::uint16_t index, std::uint32_t seq, std::uint8_t flags = 0) const {
        pkt p;
        p.unit = unit;
        p.frame = frame;
        p.index = index;
        p.seq = seq;
        p.flags = static_cast<std::uint8_t>(daq1::flag_test_pattern | flags);
        p.frame_bytes = frame_bytes();
        p.datagram_bytes = datagram_bytes;
        return make_packet(p);
    }
    // The packets of frames [first, first + n), in sending order; `eos` puts
    // END_OF_STREAM on every packet of the last frame.
    std::vector<packet> frames(std::uint64_t first, std::uint64_t n = 1, bool eos = false) {
        std::vector<packet> out;
        for (std::uint64_t f = first; f < first + n; ++f)
            for (std::uint16_t i = 0; i < count(); ++i)
                out.push_back(make(f, i, next_seq++, eos && f + 1 == first + n ? daq1::flag_end_of_stream : 0));
        return out;
    }
    // The samples of frame f, with the slices of `missing` packet indices zero.
    std::vector<std::uint16_t> expected(std::uint64_t f, const std::set<std::uint16_t>& missing = {}) const {
        std::vector<std::uint16_t> v(channels);
        for (std::uint32_t c = 0; c < channels; ++c) v[c] = daq1::test_pattern(f, unit, c);
        const auto l = layout();
        for (auto i : missing)
            for (std::uint32_t b = l.offset(i); b < l.offset(i) + l.bytes(i); b += 2) v[b / 2] = 0;
        return v;
    }
};

// An assembler on its own pool and output queue.
struct asm_setup {
    config::config cfg;
    std::unique_ptr<block_pool> pool;
    std::unique_ptr<daqd::common::spsc_queue<frame>> out;
    daqd::common::wake_event in_ready;
    daqd::common::wake_event out_ready;
    std::unique_ptr<assembler> a;

    explicit asm_setup(const std::function<void(config::config&)>& tweak = {}) {
        cfg.units.learn = true;
        cfg.assembly.reorder_frames = 4;
        cfg.assembly.reorder_timeout = 100ms;
        cfg.assembly.max_frame_bytes = 64 * 1024;
        cfg.assembly.pool_blocks = 64;
        // One frame per block unless a test asks for chunks of several rows.
        cfg.storage.chunk_bytes = 2;
        if (tweak) tweak(cfg);
        pool = std::make_unique<block_pool>(cfg.assembly.pool_blocks,
                                            std::max<std::size_t>(cfg.assembly.max_frame_bytes, cfg.storage.chunk_bytes));
        // Poison every buffer, so that "missing samples are 0" means the
        // assembler wrote the zeros.
        std::vector<std::uint32_t> all;
        while (auto i = pool->acquire()) {
            std::memset(pool->data(*i), 0xab, pool->block_bytes());
            all.push_back(*i);
        }
        for (auto i : all) pool->unref_release(i);
        out = std::make_unique<daqd::common::spsc_queue<frame>>(std::size_t{cfg.assembly.pool_blocks} * 1024);
        a = std::make_unique<assembler>(cfg, std::vector<daqd::acquisition::packet_ring*>{}, in_ready, *pool, *out,
                                        out_ready);
    }

    void feed(const packet& p, std::uint64_t now = t0) {
        a->on_packet(p.data(), static_cast<std::uint32_t>(p.size()), now);
    }
    void feed(const std::vector<packet>& ps, std::uint64_t now = t0) {
        for (const auto& p : ps) feed(p, now);
    }
    // Frames in the output queue now.
    std::vector<frame> take() {
        std::vector<frame> v;
        while (auto f = out->try_pop()) v.push_back(*f);
        return v;
    }
    void release(const std::vector<frame>& fs) {
        for (const auto& f : fs) f.release();
    }
    // Takes and releases everything, closing what is open first.
    std::vector<frame> finish() {
        a->flush_all();
        auto fs = take();
        release(fs);
        return fs;
    }
    const unit_counters* unit(std::uint16_t id) const {
        for (std::uint32_t i = 0; i < a->unit_count(); ++i)
            if (a->unit_at(i).unit_id == id) return &a->unit_at(i);
        return nullptr;
    }
    const unit_counters& u(std::uint16_t id = 1) const {
        const auto* p = unit(id);
        REQUIRE(p != nullptr);
        return *p;
    }
    std::uint64_t invalid(drop_reason r) const { return a->counters().invalid[static_cast<std::size_t>(r)].get(); }
    std::uint64_t invalid_total() const {
        std::uint64_t s = 0;
        for (const auto& c : a->counters().invalid) s += c.get();
        return s;
    }
    std::vector<std::uint16_t> samples(const frame& f) const { return {f.samples, f.samples + f.channels}; }
    bool all_buffers_back() const { return pool->available() == pool->blocks(); }
};

// Checks a frame's descriptor and every sample.
void check_frame(const asm_setup& s, const frame& f, const unit_stream& u, std::uint64_t fnum,
                 const std::set<std::uint16_t>& missing = {}) {
    INFO("unit " << u.unit << " frame " << fnum);
    CHECK(f.unit_id == u.unit);
    CHECK(f.frame_number == fnum);
    CHECK(f.channels == u.channels);
    CHECK(f.packet_count == u.count());
    CHECK(f.missing_packets == missing.size());
    CHECK(f.timestamp_ns == timestamp_of(fnum, u.unit));
    CHECK(f.pool == s.pool.get());
    CHECK(f.block < s.pool->blocks());
    CHECK(f.row < f.block_rows);
    CHECK(reinterpret_cast<std::byte*>(f.samples) == s.pool->data(f.block) + std::size_t{f.row} * f.channels * 2);
    const auto got = s.samples(f);
    const auto want = u.expected(fnum, missing);
    std::size_t first_bad = got.size();
    std::size_t bad = 0;
    for (std::size_t c = 0; c < got.size(); ++c)
        if (got[c] != want[c]) {
            if (bad++ == 0) first_bad = c;
        }
    INFO("first wrong channel " << first_bad << " of " << bad << " wrong");
    CHECK(bad == 0);
}

std::vector<std::uint64_t> numbers(const std::vector<frame>& fs) {
    std::vector<std::uint64_t> v;
    for (const auto& f : fs) v.push_back(f.frame_number);
    return v;
}

}  // namespace

TEST_CASE("assembler: the test stream's layout", "[processing][assembler]") {
    unit_stream u;
    CHECK(u.count() == 5);
    CHECK(u.layout().slice == 472);
    CHECK(u.layout().bytes(4) == 2000 - 4 * 472);
}

TEST_CASE("assembler: complete frames in order", "[processing][assembler]") {
    asm_setup s;
    unit_stream u;
    u.unit = 5;
    u.next_seq = 100;
    for (std::uint64_t f = 0; f < 10; ++f) {
        s.feed(u.frames(1000 + f));
        // Each frame goes out as soon as its last packet arrives.
        const auto got = s.take();
        REQUIRE(got.size() == 1);
        check_frame(s, got[0], u, 1000 + f);
        s.release(got);
    }
    REQUIRE(s.a->unit_count() == 1);
    const auto& c = s.a->unit_at(0);
    CHECK(c.unit_id == 5);
    CHECK(c.channels == 1000);
    CHECK(c.packets.get() == 50);
    CHECK(c.bytes.get() == 10 * 2000);
    CHECK(c.frames_complete.get() == 10);
    CHECK(c.frames_incomplete.get() == 0);
    CHECK(c.frames_lost.get() == 0);
    CHECK(c.duplicates.get() == 0);
    CHECK(c.late.get() == 0);
    CHECK(c.missing_packets.get() == 0);
    CHECK(c.last_frame_number.get() == 1009);
    CHECK(c.last_receive_ns.get() == t0);
    CHECK(s.a->counters().frames_out.get() == 10);
    CHECK(s.finish().empty());
    CHECK(c.packets_lost.get() == 0);
    CHECK(s.invalid_total() == 0);
    CHECK(s.all_buffers_back());
}

TEST_CASE("assembler: reordering within a frame", "[processing][assembler]") {
    asm_setup s;
    unit_stream u;
    auto ps = u.frames(0);
    const std::vector<packet> shuffled{ps[4], ps[2], ps[0], ps[3], ps[1]};
    for (std::size_t i = 0; i < 4; ++i) s.feed(shuffled[i]);
    CHECK(s.take().empty());  // not complete yet
    s.feed(shuffled[4]);
    const auto got = s.take();
    REQUIRE(got.size() == 1);
    check_frame(s, got[0], u, 0);
    s.release(got);
    CHECK(s.u().frames_complete.get() == 1);
    CHECK(s.finish().empty());
    CHECK(s.u().packets_lost.get() == 0);
    CHECK(s.u().duplicates.get() == 0);
    CHECK(s.all_buffers_back());
}

TEST_CASE("assembler: reordering across two frames, emitted in frame order", "[processing][assembler]") {
    asm_setup s;
    unit_stream u;
    const auto f1 = u.frames(1);
    const auto f2 = u.frames(2);
    // Frame 2 completes first; frame 1 is still missing its packet 3.
    s.feed({f1[0], f2[0], f1[1], f2[1], f2[2], f1[2], f2[3], f2[4], f1[4]});
    CHECK(s.take().empty());  // frame 2 waits behind frame 1
    s.feed(f1[3]);
    const auto got = s.take();
    REQUIRE(numbers(got) == std::vector<std::uint64_t>{1, 2});
    check_frame(s, got[0], u, 1);
    check_frame(s, got[1], u, 2);
    s.release(got);
    CHECK(s.u().frames_complete.get() == 2);
    CHECK(s.finish().empty());
    CHECK(s.u().packets_lost.get() == 0);
    CHECK(s.u().frames_lost.get() == 0);
    CHECK(s.all_buffers_back());
}

namespace {

// How often `ready` was signalled since the last look (its eventfd's count),
// with its consumer announced as asleep again (so that every notify signals).
std::uint64_t signals(daqd::common::wake_event& ready) {
    std::uint64_t n = 0;
    if (::read(ready.fd(), &n, sizeof n) != static_cast<ssize_t>(sizeof n)) n = 0;
    ready.prepare_wait();
    return n;
}

}  // namespace

TEST_CASE("assembler: the frames of one batch carry the batch's time, and the consumer is woken once per batch",
          "[processing][assembler]") {
    asm_setup s;
    unit_stream u;
    std::vector<std::vector<packet>> f;
    for (std::uint64_t n = 0; n < 4; ++n) f.push_back(u.frames(n));
    (void)signals(s.out_ready);  // the writer sleeps
    // Frames 1..3 complete while frame 0 waits for its packet 4.
    for (std::uint64_t n = 0; n < 4; ++n)
        for (std::size_t i = 0; i < f[n].size(); ++i)
            if (n != 0 || i != 4) s.feed(f[n][i], t0 + n);
    CHECK(s.take().empty());
    CHECK(signals(s.out_ready) == 0);
    // One datagram (one batch) hands four frames on: one wake-up, one time.
    s.feed(f[0][4], t0 + 7);
    auto got = s.take();
    REQUIRE(numbers(got) == std::vector<std::uint64_t>{0, 1, 2, 3});
    for (const auto& fr : got) CHECK(fr.assembled_ns == t0 + 7);
    CHECK(signals(s.out_ready) == 1);
    s.release(got);

    // Expiry closes two incomplete frames in one batch: one wake-up, the expiry's time.
    for (std::uint64_t n = 4; n < 6; ++n) {
        auto ps = u.frames(n);
        ps.pop_back();
        s.feed(ps, t0 + 10 * ms);
    }
    CHECK(signals(s.out_ready) == 0);
    s.a->expire(t0 + 200 * ms);
    got = s.take();
    REQUIRE(numbers(got) == std::vector<std::uint64_t>{4, 5});
    for (const auto& fr : got) CHECK(fr.assembled_ns == t0 + 200 * ms);
    CHECK(signals(s.out_ready) == 1);
    s.release(got);

    // flush_all (the drain at stop) reads the clock once and wakes once at its end.
    for (std::uint64_t n = 6; n < 8; ++n) {
        auto ps = u.frames(n);
        ps.pop_back();
        s.feed(ps);
    }
    const std::uint64_t before = daqd::common::monotonic_ns();
    s.a->flush_all();
    const std::uint64_t after = daqd::common::monotonic_ns();
    got = s.take();
    REQUIRE(numbers(got) == std::vector<std::uint64_t>{6, 7});
    CHECK(got[0].assembled_ns == got[1].assembled_ns);
    CHECK(got[0].assembled_ns >= before);
    CHECK(got[0].assembled_ns <= after);
    CHECK(signals(s.out_ready) == 1);
    s.release(got);
    CHECK(s.all_buffers_back());
}

TEST_CASE("assembler: duplicates are counted and ignored", "[processing][assembler]") {
    asm_setup s;
    unit_stream u;
    SECTION("the same packet twice (same packet_seq)") {
        auto ps = u.frames(0);
        s.feed({ps[0], ps[1], ps[1], ps[2], ps[3], ps[4]});
        CHECK(s.u().duplicates.get() == 1);
        CHECK(s.u().packets.get() == 6);  // duplicates included
    }
    SECTION("a packet_index already filled, under a new packet_seq") {
        auto ps = u.frames(0);
        // A second copy of index 1 carrying other samples: it must not overwrite.
        pkt p;
        p.frame = 0;
        p.index = 1;
        p.seq = 5;  // the next one the unit would send
        p.fill = true;
        p.fill_value = 0xdead;
        s.feed({ps[0], ps[1], make_packet(p), ps[2], ps[3], ps[4]});
        CHECK(s.u().duplicates.get() == 1);
    }
    const auto got = s.take();
    REQUIRE(got.size() == 1);
    check_frame(s, got[0], u, 0);
    s.release(got);
    CHECK(s.u().frames_complete.get() == 1);
    CHECK(s.u().frames_incomplete.get() == 0);
    CHECK(s.finish().empty());
    CHECK(s.all_buffers_back());
}

TEST_CASE("assembler: a lost packet gives an incomplete frame with its slice zero", "[processing][assembler]") {
    asm_setup s;
    unit_stream u;
    auto ps = u.frames(0, 5);  // frames 0..4
    ps.erase(ps.begin() + 2);  // frame 0, packet 2
    // Frames 0..3 fill the window of 4; frame 0 cannot complete.
    s.feed(std::vector<packet>(ps.begin(), ps.begin() + 4 + 15));
    CHECK(s.take().empty());
    // Frame 4 pushes frame 0 out of the window.
    s.feed(std::vector<packet>(ps.begin() + 19, ps.end()));
    const auto got = s.take();
    REQUIRE(got.size() == 5);
    CHECK(numbers(got) == std::vector<std::uint64_t>{0, 1, 2, 3, 4});
    check_frame(s, got[0], u, 0, {2});
    for (std::size_t i = 1; i < 5; ++i) check_frame(s, got[i], u, i);
    s.release(got);
    const auto& c = s.u();
    CHECK(c.frames_incomplete.get() == 1);
    CHECK(c.frames_complete.get() == 4);
    CHECK(c.missing_packets.get() == 1);
    CHECK(c.frames_lost.get() == 0);
    CHECK(c.packets_lost.get() <= 1);  // settled later: the window has not moved past it
    CHECK(s.finish().empty());
    CHECK(c.packets_lost.get() == 1);
    CHECK(s.all_buffers_back());
}

TEST_CASE("assembler: a lost last packet, a lost first packet", "[processing][assembler]") {
    const std::uint16_t lost = GENERATE(std::uint16_t{0}, std::uint16_t{4});
    CAPTURE(lost);
    asm_setup s;
    unit_stream u;
    auto ps = u.frames(7);
    ps.erase(ps.begin() + lost);
    s.feed(ps);
    const auto got = s.finish();  // flush_all closes it
    REQUIRE(got.size() == 1);
    check_frame(s, got[0], u, 7, {lost});
    CHECK(s.u().missing_packets.get() == 1);
    CHECK(s.u().frames_incomplete.get() == 1);
    // Neither is a gap in packet_seq: nothing is known before the first
    // sequence number seen nor after the last (no END_OF_STREAM).
    CHECK(s.u().packets_lost.get() == 0);
    CHECK(s.all_buffers_back());
}

TEST_CASE("assembler: complete frames held behind a pushed-out frame go out with it", "[processing][assembler]") {
    // Frame 0 misses a packet; frames 1..3 are complete but must wait for it
    // (rows stay in frame order). When the first packet of frame 4 pushes
    // frame 0 out of the window, nothing holds 1..3 back any more.
    asm_setup s;
    unit_stream u;
    auto ps = u.frames(0, 5);
    ps.erase(ps.begin() + 2);
    s.feed(std::vector<packet>(ps.begin(), ps.begin() + 19));  // frames 0..3
    CHECK(s.take().empty());
    s.feed(ps[19]);  // frame 4, packet 0: frame 4 stays open
    const auto got = s.take();
    CHECK(numbers(got) == std::vector<std::uint64_t>{0, 1, 2, 3});
    s.release(got);
    s.finish();
    CHECK(s.all_buffers_back());
}

TEST_CASE("assembler: a whole frame lost", "[processing][assembler]") {
    asm_setup s;
    unit_stream u;
    auto ps = u.frames(10, 5);                      // frames 10..14
    ps.erase(ps.begin() + 10, ps.begin() + 15);    // frame 12 never arrives
    s.feed(ps);
    const auto got = s.take();
    CHECK(numbers(got) == std::vector<std::uint64_t>{10, 11, 13, 14});
    for (const auto& f : got) check_frame(s, f, u, f.frame_number);
    s.release(got);
    CHECK(s.finish().empty());
    const auto& c = s.u();
    CHECK(c.frames_lost.get() == 1);
    CHECK(c.frames_complete.get() == 4);
    CHECK(c.frames_incomplete.get() == 0);
    CHECK(c.packets_lost.get() == 5);  // its five sequence numbers
    CHECK(s.all_buffers_back());
}

TEST_CASE("assembler: packet_seq wraps at 2^32", "[processing][assembler]") {
    asm_setup s;
    unit_stream u;
    u.next_seq = 0xfffffffdu;  // 2^32 - 3
    auto ps = u.frames(0, 2);  // 10 packets: seq 2^32-3 .. 6
    SECTION("in order: nothing lost") {
        s.feed(ps);
        const auto got = s.finish();
        CHECK(numbers(got) == std::vector<std::uint64_t>{0, 1});
        CHECK(s.u().packets_lost.get() == 0);
        CHECK(s.u().duplicates.get() == 0);
        CHECK(s.u().frames_complete.get() == 2);
    }
    SECTION("one lost across the wrap") {
        REQUIRE(daq1::decode_header(ps[3].data()).packet_seq == 0);
        ps.erase(ps.begin() + 3);  // seq 0
        s.feed(ps);
        const auto got = s.finish();
        REQUIRE(numbers(got) == std::vector<std::uint64_t>{0, 1});
        check_frame(s, got[0], u, 0, {3});
        CHECK(s.u().packets_lost.get() == 1);
        CHECK(s.u().duplicates.get() == 0);
    }
    SECTION("reordered across the wrap: nothing lost") {
        std::swap(ps[2], ps[4]);  // seq 2^32-1 and 1
        std::swap(ps[0], ps[6]);
        s.feed(ps);
        const auto got = s.finish();
        CHECK(numbers(got) == std::vector<std::uint64_t>{0, 1});
        CHECK(s.u().packets_lost.get() == 0);
        CHECK(s.u().duplicates.get() == 0);
        CHECK(s.u().frames_complete.get() == 2);
    }
    CHECK(s.all_buffers_back());
}

TEST_CASE("assembler: a sequence gap is settled once it leaves the 8192-packet window", "[processing][assembler]") {
    asm_setup s;
    unit_stream u;
    auto first = u.frames(0);
    first.erase(first.begin() + 1);  // seq 1 lost
    s.feed(first);
    std::uint64_t frame_no = 1;
    // Up to 8192 packets after it, the gap may still be reordering.
    while (u.next_seq < 1 + assembler::seq_window - 5) {
        s.feed(u.frames(frame_no++));
        s.release(s.take());
    }
    CHECK(s.u().packets_lost.get() == 0);
    // Well past the window: lost for good, without any flush.
    for (int i = 0; i < 4; ++i) {
        s.feed(u.frames(frame_no++));
        s.release(s.take());
    }
    CHECK(u.next_seq > 1 + assembler::seq_window);
    CHECK(s.u().packets_lost.get() == 1);
    s.finish();
    CHECK(s.u().packets_lost.get() == 1);  // counted once
    CHECK(s.u().frames_incomplete.get() == 1);
    CHECK(s.all_buffers_back());
}

TEST_CASE("assembler: a packet reordered past its frame's window is late, not lost", "[processing][assembler]") {
    asm_setup s;
    unit_stream u;
    auto ps = u.frames(0, 10);
    const packet straggler = ps[7];  // frame 1, packet 2
    ps.erase(ps.begin() + 7);
    s.feed(ps);  // frame 1 is pushed out, incomplete
    s.feed(straggler);
    const auto got = s.finish();
    REQUIRE(got.size() == 10);
    check_frame(s, got[1], u, 1, {2});
    const auto& c = s.u();
    CHECK(c.late.get() == 1);
    CHECK(c.packets_lost.get() == 0);  // it did arrive
    CHECK(c.frames_incomplete.get() == 1);
    CHECK(s.all_buffers_back());
}

TEST_CASE("assembler: END_OF_STREAM: frames before it wait for their packets, then the stream ends",
          "[processing][assembler]") {
    asm_setup s;
    unit_stream u;
    auto ps = u.frames(0, 2, true);  // frame 1 carries END_OF_STREAM
    ps.erase(ps.begin() + 1);        // frame 0 misses packet 1
    s.feed(std::vector<packet>(ps.begin(), ps.end() - 1));
    CHECK(s.take().empty());
    s.feed(ps.back());  // frame 1 completes: the stream has ended
    // Frame 0 waits for a packet reordered behind the flag, as any open
    // frame does: until its timeout. Then both go, and the loss is settled.
    CHECK(s.take().empty());
    s.a->expire(t0 + 100 * ms);
    CHECK(s.take().empty());
    s.a->expire(t0 + 101 * ms);
    const auto got = s.take();
    REQUIRE(numbers(got) == std::vector<std::uint64_t>{0, 1});
    check_frame(s, got[0], u, 0, {1});
    check_frame(s, got[1], u, 1);
    s.release(got);
    const auto& c = s.u();
    CHECK(c.frames_incomplete.get() == 1);
    CHECK(c.frames_complete.get() == 1);
    CHECK(c.packets_lost.get() == 1);  // the stream ended: its gap is settled now
    CHECK(s.all_buffers_back());
}

TEST_CASE("assembler: END_OF_STREAM only on the last packet, which arrives first", "[processing][assembler]") {
    asm_setup s;
    unit_stream u;
    // Frame 3's last packet carries the flag and overtakes the others; frame
    // 4 is already open (incomplete). When frame 3 completes it goes out at
    // once; frame 4, after it, belongs to the unit's next stream and waits
    // for its packets (here: until its timeout).
    auto ps = u.frames(3);
    ps[4] = u.make(3, 4, daq1::decode_header(ps[4].data()).packet_seq, daq1::flag_end_of_stream);
    auto next = u.frames(4);
    s.feed({next[0], next[1]});
    s.feed(ps[4]);
    s.feed({ps[0], ps[1], ps[2]});
    CHECK(s.take().empty());  // the END_OF_STREAM frame is not complete yet
    s.feed(ps[3]);
    auto got = s.take();
    REQUIRE(numbers(got) == std::vector<std::uint64_t>{3});
    check_frame(s, got[0], u, 3);
    s.release(got);
    s.a->expire(t0 + 100 * ms);
    CHECK(s.take().empty());
    s.a->expire(t0 + 101 * ms);
    got = s.take();
    REQUIRE(numbers(got) == std::vector<std::uint64_t>{4});
    check_frame(s, got[0], u, 4, {2, 3, 4});
    s.release(got);
    CHECK(s.all_buffers_back());
}

TEST_CASE("assembler: after END_OF_STREAM the unit may start a new stream", "[processing][assembler]") {
    // PROTOCOL.md: "frame_number +1 per frame; the first may be anything".
    // After a unit's stream ended, its next stream starts wherever it starts
    // (daq-sim: frame 0, packet_seq 0 by default), e.g. a second daq-sim run
    // against the same daqd.
    asm_setup s;
    unit_stream u;
    s.feed(u.frames(0, 3, true));
    auto got = s.take();
    REQUIRE(numbers(got) == std::vector<std::uint64_t>{0, 1, 2});
    s.release(got);
    unit_stream again;  // frame 0, seq 0 again
    s.feed(again.frames(0, 3, true));
    got = s.take();
    CHECK(numbers(got) == std::vector<std::uint64_t>{0, 1, 2});
    for (const auto& f : got) check_frame(s, f, again, f.frame_number);
    s.release(got);
    CHECK(s.u().late.get() == 0);
    CHECK(s.u().duplicates.get() == 0);
    CHECK(s.u().packets_lost.get() == 0);
    s.finish();
    CHECK(s.all_buffers_back());
}

TEST_CASE("assembler: an incomplete frame times out after reorder_timeout", "[processing][assembler]") {
    asm_setup s;
    unit_stream u;
    auto ps = u.frames(0, 3);
    ps.erase(ps.begin() + 3);  // frame 0 misses packet 3
    s.feed(std::vector<packet>(ps.begin(), ps.begin() + 4), t0);
    s.feed(std::vector<packet>(ps.begin() + 4, ps.begin() + 6), t0 + 60 * ms);  // frame 1 opens later, incomplete
    s.feed(std::vector<packet>(ps.begin() + 9, ps.end()), t0 + 60 * ms);          // frame 2 complete
    CHECK(s.take().empty());
    s.a->expire(t0 + 50 * ms);
    CHECK(s.take().empty());
    s.a->expire(t0 + 100 * ms);  // exactly the timeout: not older than it
    CHECK(s.take().empty());
    s.a->expire(t0 + 101 * ms);
    auto got = s.take();
    REQUIRE(numbers(got) == std::vector<std::uint64_t>{0});
    check_frame(s, got[0], u, 0, {3});
    s.release(got);
    // Frame 1 opened 60 ms later: it times out 60 ms later, then frame 2 follows it.
    s.a->expire(t0 + 150 * ms);
    CHECK(s.take().empty());
    s.a->expire(t0 + 161 * ms);
    got = s.take();
    REQUIRE(numbers(got) == std::vector<std::uint64_t>{1, 2});
    check_frame(s, got[0], u, 1, {2, 3, 4});
    check_frame(s, got[1], u, 2);
    s.release(got);
    CHECK(s.u().frames_incomplete.get() == 2);
    CHECK(s.u().missing_packets.get() == 4);
    CHECK(s.all_buffers_back());
}

TEST_CASE("assembler: frame_bytes differing from the learned size", "[processing][assembler]") {
    asm_setup s;
    unit_stream u;
    s.feed(u.frames(0));
    pkt p;
    p.frame = 1;
    p.seq = u.next_seq;
    p.frame_bytes = 4000;
    s.feed(make_packet(p));
    CHECK(s.invalid(drop_reason::frame_bytes_mismatch) == 1);
    CHECK(s.invalid_total() == 1);
    CHECK(s.u().packets.get() == 5);
    CHECK(s.u().channels == 1000);
    const auto got = s.finish();
    CHECK(numbers(got) == std::vector<std::uint64_t>{0});
    CHECK(s.all_buffers_back());
}

TEST_CASE("assembler: listed units without learning", "[processing][assembler]") {
    asm_setup s([](config::config& c) {
        c.units.learn = false;
        c.units.units = {{7, 1000}, {9, 500}};
    });
    unit_stream u7;
    u7.unit = 7;
    s.feed(u7.frames(0, 3));
    unit_stream u8 = u7;
    u8.unit = 8;
    s.feed(u8.frames(0));  // not listed
    unit_stream u9;
    u9.unit = 9;
    u9.channels = 600;  // listed with 500 channels
    s.feed(u9.frames(0));
    CHECK(s.invalid(drop_reason::unknown_unit) == u8.count());
    CHECK(s.invalid(drop_reason::frame_bytes_mismatch) == u9.count());
    CHECK(s.invalid_total() == u8.count() + u9.count());
    REQUIRE(s.a->unit_count() == 1);
    CHECK(s.a->unit_at(0).unit_id == 7);
    CHECK(s.unit(8) == nullptr);
    CHECK(s.unit(9) == nullptr);
    const auto got = s.finish();
    REQUIRE(got.size() == 3);
    for (const auto& f : got) check_frame(s, f, u7, f.frame_number);
    CHECK(s.u(7).frames_complete.get() == 3);
    CHECK(s.all_buffers_back());
}

TEST_CASE("assembler: a listed unit's size wins over learning", "[processing][assembler]") {
    asm_setup s([](config::config& c) {
        c.units.learn = true;
        c.units.units = {{7, 1000}};
    });
    unit_stream u7;
    u7.unit = 7;
    u7.channels = 1200;
    s.feed(u7.frames(0));  // first packet already of the wrong size: not learned
    CHECK(s.invalid(drop_reason::frame_bytes_mismatch) == u7.count());
    CHECK(s.unit(7) == nullptr);
    unit_stream other;
    other.unit = 3;
    s.feed(other.frames(0));  // unlisted: learned
    CHECK(s.u(3).frames_complete.get() == 1);
    s.finish();
    CHECK(s.all_buffers_back());
}

TEST_CASE("assembler: frames larger than a pool buffer", "[processing][assembler]") {
    asm_setup s;  // 64 KiB buffers
    unit_stream big;
    big.unit = 4;
    big.channels = 32769;  // 65538 bytes
    big.datagram_bytes = 1472;
    s.feed(big.frames(0));
    CHECK(s.invalid(drop_reason::frame_too_large_for_pool) == big.count());
    CHECK(s.unit(4) == nullptr);
    unit_stream fits;
    fits.unit = 6;
    fits.channels = 32768;  // exactly 65536 bytes
    fits.datagram_bytes = 1472;
    s.feed(fits.frames(0, 2));
    const auto got = s.finish();
    REQUIRE(got.size() == 2);
    check_frame(s, got[0], fits, 0);
    check_frame(s, got[1], fits, 1);
    CHECK(s.invalid_total() == big.count());
    CHECK(s.all_buffers_back());
}

TEST_CASE("assembler: packet_count differing within a frame", "[processing][assembler]") {
    asm_setup s;
    unit_stream u;
    auto ps = u.frames(0);
    pkt p;
    p.frame = 0;
    p.index = 1;
    p.count = 6;  // the other packets say 5
    p.seq = 5;
    s.feed({ps[0], make_packet(p), ps[1], ps[2], ps[3], ps[4]});
    CHECK(s.invalid(drop_reason::layout_mismatch) == 1);
    const auto got = s.take();
    REQUIRE(got.size() == 1);
    check_frame(s, got[0], u, 0);
    s.release(got);
    s.finish();
    CHECK(s.all_buffers_back());
}

TEST_CASE("assembler: a late packet of a stored frame is counted, not stored", "[processing][assembler]") {
    asm_setup s;
    unit_stream u;
    s.feed(u.frames(0, 2));
    auto got = s.take();
    REQUIRE(numbers(got) == std::vector<std::uint64_t>{0, 1});
    // A resent packet of frame 0 (new seq, other samples) after it was stored.
    pkt p;
    p.frame = 0;
    p.index = 2;
    p.seq = u.next_seq++;
    p.fill = true;
    p.fill_value = 0xbeef;
    s.feed(make_packet(p));
    CHECK(s.u().late.get() == 1);
    CHECK(s.take().empty());  // no second row for frame 0
    check_frame(s, got[0], u, 0);  // and its samples untouched
    check_frame(s, got[1], u, 1);
    s.release(got);
    s.feed(u.frames(2));
    got = s.take();
    CHECK(numbers(got) == std::vector<std::uint64_t>{2});
    s.release(got);
    CHECK(s.finish().empty());
    CHECK(s.u().frames_complete.get() == 3);
    CHECK(s.u().packets_lost.get() == 0);
    CHECK(s.all_buffers_back());
}

TEST_CASE("assembler: pool exhaustion drops frames, counted, and recovers", "[processing][assembler]") {
    asm_setup s([](config::config& c) { c.assembly.pool_blocks = 16; });
    unit_stream u;
    // Nobody releases: 16 frames fill the pool, the next 4 cannot be opened.
    s.feed(u.frames(0, 20));
    CHECK(s.pool->available() == 0);
    const auto& c = s.u();
    CHECK(c.frames_complete.get() == 16);
    CHECK(c.frames_overflow.get() == 4);
    auto got = s.take();
    REQUIRE(got.size() == 16);
    for (std::size_t i = 0; i < got.size(); ++i) check_frame(s, got[i], u, i);
    // The writer catches up: frames flow again.
    s.release(got);
    CHECK(s.all_buffers_back());
    s.feed(u.frames(20, 4));
    got = s.take();
    CHECK(numbers(got) == std::vector<std::uint64_t>{20, 21, 22, 23});
    for (const auto& f : got) check_frame(s, f, u, f.frame_number);
    s.release(got);
    CHECK(c.frames_overflow.get() == 4);
    CHECK(c.frames_lost.get() == 0);  // the gap is the 4 overflowed frames, counted once, as overflow
    CHECK(s.finish().empty());
    CHECK(c.packets_lost.get() == 0);
    CHECK(s.all_buffers_back());
}

TEST_CASE("assembler: pool exhaustion while frames are open", "[processing][assembler]") {
    asm_setup s([](config::config& c) { c.assembly.pool_blocks = 16; });
    // Four units, each with frames open (incomplete): buffers run out mid-way.
    std::vector<unit_stream> units(4);
    for (std::uint16_t k = 0; k < 4; ++k) units[k].unit = static_cast<std::uint16_t>(10 + k);
    for (std::uint64_t f = 0; f < 8; ++f)
        for (auto& u : units) {
            auto ps = u.frames(f);
            ps.pop_back();  // never complete
            s.feed(ps);
        }
    std::uint64_t overflow = 0, out = 0;
    for (auto& u : units) overflow += s.u(u.unit).frames_overflow.get();
    auto got = s.take();
    out = got.size();
    s.release(got);
    got = s.finish();
    out += got.size();
    CHECK(overflow > 0);
    CHECK(out + overflow == 32);  // every frame either stored (incomplete) or counted as overflow
    CHECK(s.all_buffers_back());
}

TEST_CASE("assembler: overflow counts each frame once, even with its packets interleaved", "[processing][assembler]") {
    asm_setup s([](config::config& c) { c.assembly.pool_blocks = 16; });
    unit_stream u;
    s.feed(u.frames(0, 16));
    REQUIRE(s.pool->available() == 0);
    // Frames 16 and 17 arrive interleaved (reordering), no buffer free.
    const auto f16 = u.frames(16);
    const auto f17 = u.frames(17);
    for (std::size_t i = 0; i < f16.size(); ++i) {
        s.feed(f16[i]);
        s.feed(f17[i]);
    }
    CHECK(s.u().frames_overflow.get() == 2);
    s.release(s.take());
    s.finish();
    CHECK(s.all_buffers_back());
}

TEST_CASE("assembler: a frame dropped as overflow stays dropped when a buffer frees mid-frame", "[processing][assembler]") {
    // The writer frees buffers while a frame's packets are still arriving: the
    // rest of that frame must not open it (it would be counted twice, as
    // overflow and as incomplete), and the gap it leaves is not loss.
    asm_setup s([](config::config& c) { c.assembly.pool_blocks = 16; });
    unit_stream u;
    s.feed(u.frames(0, 16));
    REQUIRE(s.pool->available() == 0);
    const auto f16 = u.frames(16);
    REQUIRE(f16.size() > 2);
    s.feed(f16[0]);  // no buffer: frame 16 overflows
    auto got = s.take();
    REQUIRE(got.size() == 16);
    s.release(got);  // buffers free again, mid-frame
    for (std::size_t i = 1; i < f16.size(); ++i) s.feed(f16[i]);
    s.feed(u.frames(17, 3));
    got = s.take();
    CHECK(numbers(got) == std::vector<std::uint64_t>{17, 18, 19});
    s.release(got);
    s.release(s.finish());
    const auto& c = s.u();
    CHECK(c.frames_overflow.get() == 1);
    CHECK(c.frames_incomplete.get() == 0);
    CHECK(c.frames_lost.get() == 0);
    CHECK(c.frames_complete.get() == 19);
    // Every frame sent is counted exactly once.
    CHECK(c.frames_complete.get() + c.frames_incomplete.get() + c.frames_lost.get() + c.frames_overflow.get() == 20);
    CHECK(s.all_buffers_back());
}

TEST_CASE("assembler: units are independent", "[processing][assembler]") {
    asm_setup s;
    unit_stream a, b;
    a.unit = 1;
    b.unit = 2;
    b.channels = 2000;  // 4000 bytes: 3 packets
    b.datagram_bytes = 1472;
    b.next_seq = 5000;
    const auto pa = a.frames(0, 3);
    const auto pb = b.frames(100, 3);
    // Interleaved, b's frame 101 missing a packet.
    std::size_t ia = 0, ib = 0;
    while (ia < pa.size() || ib < pb.size()) {
        if (ia < pa.size()) s.feed(pa[ia++]);
        if (ib < pb.size()) {
            if (ib != 1 * b.count()) s.feed(pb[ib]);
            ++ib;
        }
    }
    REQUIRE(s.a->unit_count() == 2);
    CHECK(s.a->unit_at(0).unit_id == 1);  // in order of appearance
    CHECK(s.a->unit_at(1).unit_id == 2);
    REQUIRE(b.count() == 3);
    CHECK(s.u(2).channels == 2000);
    const auto got = s.finish();
    REQUIRE(got.size() == 6);
    for (const auto& f : got) {
        if (f.unit_id == 1) check_frame(s, f, a, f.frame_number);
        else if (f.frame_number == 101) check_frame(s, f, b, 101, {0});
        else check_frame(s, f, b, f.frame_number);
    }
    CHECK(s.u(1).frames_complete.get() == 3);
    CHECK(s.u(1).packets_lost.get() == 0);
    CHECK(s.u(2).frames_complete.get() == 2);
    CHECK(s.u(2).frames_incomplete.get() == 1);
    CHECK(s.u(2).packets_lost.get() == 1);
    CHECK(s.all_buffers_back());
}

// ---- hostile or odd units (docs/PROTOCOL.md "Streams") ----

TEST_CASE("assembler: one packet with a far-future frame_number moves nothing", "[processing][assembler][hostile]") {
    asm_setup s;
    unit_stream u;
    s.feed(u.frames(0, 10));
    pkt p;  // same unit, valid header, frame 2^40, a sequence number of its own
    p.frame = 1ull << 40;
    p.seq = 0x5eed0000u;
    s.feed(make_packet(p));
    s.feed(u.frames(10, 10));
    const auto got = s.finish();
    std::vector<std::uint64_t> want(20);
    for (std::uint64_t i = 0; i < 20; ++i) want[i] = i;
    REQUIRE(numbers(got) == want);
    for (const auto& f : got) check_frame(s, f, u, f.frame_number);
    const auto& c = s.u();
    CHECK(c.frames_complete.get() == 20);
    CHECK(c.frames_lost.get() == 0);
    CHECK(c.packets_lost.get() == 0);
    CHECK(c.late.get() == 0);
    CHECK(c.stream_restarts.get() == 0);
    CHECK(s.invalid(drop_reason::frame_out_of_window) == 1);
    CHECK(s.all_buffers_back());
}

TEST_CASE("assembler: a burst of implausible packets that does not go on is dropped, counted",
          "[processing][assembler][hostile]") {
    asm_setup s;
    unit_stream u;
    s.feed(u.frames(0, 5));
    // 15 packets (fewer than restart_packets = 16) far ahead, then the stream goes on.
    unit_stream bogus;
    bogus.next_seq = 0x70000000u;
    auto b = bogus.frames(1ull << 40, 3);
    s.feed(b);
    s.feed(u.frames(5, 5));
    const auto got = s.finish();
    REQUIRE(got.size() == 10);
    CHECK(got.back().frame_number == 9);
    CHECK(s.u().frames_lost.get() == 0);
    CHECK(s.u().packets_lost.get() == 0);
    CHECK(s.invalid(drop_reason::frame_out_of_window) == b.size());
    CHECK(s.all_buffers_back());
}

TEST_CASE("assembler: a unit that restarts its frame numbers starts a new stream", "[processing][assembler][hostile]") {
    asm_setup s;
    unit_stream u;
    s.feed(u.frames(1000, 20));
    unit_stream again;  // after a firmware reset: frames from 0
    SECTION("packet_seq restarts too") {}
    SECTION("packet_seq goes on") { again.next_seq = u.next_seq; }
    s.feed(again.frames(0, 20));
    const auto got = s.finish();
    REQUIRE(got.size() == 40);
    for (std::size_t i = 0; i < 40; ++i) {
        const std::uint64_t want = i < 20 ? 1000 + i : i - 20;
        CHECK(got[i].frame_number == want);
        CHECK(got[i].stream == (i < 20 ? 0u : 1u));
        check_frame(s, got[i], i < 20 ? u : again, want);
    }
    const auto& c = s.u();
    CHECK(c.frames_complete.get() == 40);
    CHECK(c.stream_restarts.get() == 1);
    CHECK(c.stream.get() == 1);
    CHECK(c.late.get() == 0);
    CHECK(c.duplicates.get() == 0);
    CHECK(c.packets_lost.get() == 0);
    CHECK(c.frames_lost.get() == 0);
    CHECK(s.all_buffers_back());
}

TEST_CASE("assembler: a unit that jumps far ahead and stays there is a new stream, not lost frames",
          "[processing][assembler][hostile]") {
    asm_setup s;
    unit_stream u;
    s.feed(u.frames(0, 10));
    s.feed(u.frames(1ull << 40, 10));
    const auto got = s.finish();
    REQUIRE(got.size() == 20);
    for (std::size_t i = 0; i < 20; ++i) {
        const std::uint64_t want = i < 10 ? i : (1ull << 40) + (i - 10);
        CHECK(got[i].frame_number == want);
        CHECK(got[i].stream == 0u);  // rows still ascend: the same file may hold both
        check_frame(s, got[i], u, want);
    }
    CHECK(s.u().frames_lost.get() == 0);
    CHECK(s.u().stream_restarts.get() == 1);
    CHECK(s.u().packets_lost.get() == 0);
    CHECK(s.all_buffers_back());
}

TEST_CASE("assembler: END_OF_STREAM on every frame, frames reordered in pairs", "[processing][assembler][hostile]") {
    // Every frame comes out complete as soon as it is (no expire, no flush_all needed).
    asm_setup s;
    unit_stream u;
    std::vector<std::vector<packet>> per_frame;
    for (std::uint64_t f = 0; f < 10; ++f) {
        std::vector<packet> ps;
        for (std::uint16_t i = 0; i < u.count(); ++i) ps.push_back(u.make(f, i, u.next_seq++, daq1::flag_end_of_stream));
        per_frame.push_back(std::move(ps));
    }
    // Frame k+1's packets interleaved with frame k's, k+1 first.
    for (std::size_t k = 0; k < 10; k += 2)
        for (std::size_t i = 0; i < u.count(); ++i) {
            s.feed(per_frame[k + 1][i]);
            s.feed(per_frame[k][i]);
        }
    const auto got = s.take();
    std::vector<std::uint64_t> want(10);
    for (std::uint64_t i = 0; i < 10; ++i) want[i] = i;
    REQUIRE(numbers(got) == want);
    for (const auto& f : got) {
        check_frame(s, f, u, f.frame_number);
        CHECK(f.stream == 0u);
    }
    const auto& c = s.u();
    CHECK(c.frames_complete.get() == 10);
    CHECK(c.frames_incomplete.get() == 0);
    CHECK(c.late.get() == 0);
    CHECK(c.duplicates.get() == 0);
    CHECK(c.packets_lost.get() == 0);
    s.release(got);
    CHECK(s.finish().empty());
    CHECK(s.all_buffers_back());
}

TEST_CASE("assembler: learned units are bounded by units.max_learned, listed units always come in",
          "[processing][assembler][hostile]") {
    asm_setup s([](config::config& c) {
        c.units.max_learned = 4;
        c.units.units.push_back({100, 1000});
    });
    for (std::uint16_t id = 1; id <= 10; ++id) {
        unit_stream u;
        u.unit = id;
        s.feed(u.frames(0));
    }
    unit_stream listed;
    listed.unit = 100;
    s.feed(listed.frames(0));
    const auto got = s.finish();
    CHECK(got.size() == 5);
    CHECK(s.a->unit_count() == 5);
    for (std::uint16_t id = 1; id <= 4; ++id) CHECK(s.unit(id) != nullptr);
    CHECK(s.unit(5) == nullptr);
    CHECK(s.unit(100) != nullptr);
    CHECK(s.invalid(drop_reason::unit_limit) == 6 * 5);
    CHECK(s.all_buffers_back());
}

// One learned unit at a time, given up after 1 s of silence.
static void one_learned_slot(config::config& c) {
    c.units.max_learned = 1;
    c.units.learned_idle_s = 1;
}

TEST_CASE("assembler: a learned unit silent for units.learned_idle_s gives its slot up, and may come back",
          "[processing][assembler][hostile]") {
    asm_setup s(one_learned_slot);
    unit_stream one;
    one.unit = 1;
    unit_stream two;
    two.unit = 2;
    s.feed(one.frames(0, 2), t0);
    s.feed(two.frames(0), t0 + 500 * ms);  // unit 1 is not idle yet
    CHECK(s.invalid(drop_reason::unit_limit) == 5);
    s.feed(two.frames(0), t0 + 1600 * ms);  // now it is: unit 2 takes its slot
    CHECK(s.u(1).retired.get() == 1);
    CHECK(s.u(2).retired.get() == 0);
    s.feed(one.frames(2), t0 + 3000 * ms);  // unit 2 idle in turn; unit 1 comes back, goes on
    const auto got = s.finish();
    REQUIRE(got.size() == 4);
    CHECK(got[3].unit_id == 1);
    CHECK(got[3].frame_number == 2);
    CHECK(got[3].stream == 0u);
    CHECK(s.u(1).retired.get() == 0);
    CHECK(s.u(1).packets.get() == 15);  // its counters went on, never down
    CHECK(s.u(1).frames_complete.get() == 3);
    CHECK(s.u(2).retired.get() == 1);
    CHECK(s.a->unit_count() == 2);
    CHECK(s.all_buffers_back());
}

TEST_CASE("assembler: a learned unit that comes back with another frame size starts a new stream",
          "[processing][assembler][hostile]") {
    asm_setup s(one_learned_slot);
    unit_stream one;
    one.unit = 1;
    unit_stream two;
    two.unit = 2;
    s.feed(one.frames(0, 2), t0);
    s.feed(two.frames(0), t0 + 1600 * ms);  // unit 1 idle: unit 2 takes its slot
    REQUIRE(s.u(1).retired.get() == 1);
    unit_stream small;  // unit 1 again, half the channels, numbering going on
    small.unit = 1;
    small.channels = one.channels / 2;
    small.next_seq = one.next_seq;
    s.feed(small.frames(5, 2), t0 + 3000 * ms);
    const auto got = s.finish();
    REQUIRE(got.size() == 5);
    for (std::size_t i = 0; i < 2; ++i) {
        CHECK(got[i].channels == one.channels);
        CHECK(got[i].stream == 0u);
    }
    for (std::size_t i = 3; i < 5; ++i) {
        CHECK(got[i].unit_id == 1);
        CHECK(got[i].frame_number == 5 + (i - 3));
        CHECK(got[i].channels == small.channels);
        CHECK(got[i].stream == 1u);  // rows of another width: the writer's next file
    }
    CHECK(s.u(1).channels == small.channels);
    CHECK(s.u(1).stream.get() == 1);
    CHECK(s.all_buffers_back());
}

TEST_CASE("assembler: a learned unit that changes its frame size is relearned after units.relearn_quiet_ms",
          "[processing][assembler][hostile]") {
    asm_setup s;  // relearn_quiet 2000 ms by default
    unit_stream u;
    s.feed(u.frames(0, 2), t0);
    unit_stream big;
    big.channels = 2000;
    big.next_seq = u.next_seq;
    auto early = big.frames(2);
    s.feed(early, t0 + 100 * ms);  // the old size may still be in flight: dropped, counted
    CHECK(s.invalid(drop_reason::frame_bytes_mismatch) == early.size());
    s.feed(big.frames(3, 3), t0 + 2100 * ms);
    const auto got = s.finish();
    REQUIRE(numbers(got) == std::vector<std::uint64_t>{0, 1, 3, 4, 5});
    for (std::size_t i = 0; i < 2; ++i) check_frame(s, got[i], u, got[i].frame_number);
    for (std::size_t i = 2; i < 5; ++i) {
        check_frame(s, got[i], big, got[i].frame_number);
        CHECK(got[i].stream == 1u);
    }
    CHECK(s.u().channels == 2000);
    CHECK(s.all_buffers_back());
}

TEST_CASE("assembler: a sequence wrap seen out of order: the first packet just after it, an earlier one later",
          "[processing][assembler]") {
    asm_setup s;
    unit_stream u;
    u.next_seq = 0xfffffffeu;  // 2^32 - 2
    auto ps = u.frames(0, 2);  // seq 2^32-2, 2^32-1, 0, 1, ...
    REQUIRE(daq1::decode_header(ps[2].data()).packet_seq == 0);
    // Seen first: seq 0; then seq 2^32-2 (from before the wrap); 2^32-1 never comes.
    std::vector<packet> order{ps[2], ps[3], ps[0]};
    order.insert(order.end(), ps.begin() + 4, ps.end());
    s.feed(order);
    const auto got = s.finish();
    REQUIRE(numbers(got) == std::vector<std::uint64_t>{0, 1});
    check_frame(s, got[0], u, 0, {1});
    CHECK(s.u().packets_lost.get() == 1);
    CHECK(s.u().duplicates.get() == 0);
    CHECK(s.all_buffers_back());
}

// ---- blocks of several rows: the one copy (processing/README.md) ----

TEST_CASE("assembler: a unit's frames fill the rows of one block in order, each payload copied once into its row",
          "[processing][assembler][blocks]") {
    // 1000 channels = 2000 bytes a frame; chunks of 8000 bytes: 4 rows a block.
    asm_setup s([](config::config& c) { c.storage.chunk_bytes = 8000; });
    unit_stream u;
    s.feed(u.frames(0, 10));
    auto got = s.take();
    REQUIRE(numbers(got) == std::vector<std::uint64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
    for (std::size_t i = 0; i < got.size(); ++i) {
        INFO("frame " << i);
        check_frame(s, got[i], u, i);  // every sample, read from the frame's row of its block
        CHECK(got[i].block_rows == 4);
        CHECK(got[i].row == i % 4);
        CHECK(got[i].taken == i);
        CHECK(got[i].block == got[i - i % 4].block);  // rows of one block, one block per 4 frames
    }
    CHECK(got[0].block != got[4].block);
    CHECK(got[4].block != got[8].block);
    // Two full blocks are the writer's to give back; the third is the unit's
    // current block (2 of 4 rows) and its frames'.
    CHECK(s.pool->available() == s.pool->blocks() - 3);
    s.release(got);
    CHECK(s.pool->available() == s.pool->blocks() - 1);
    // The unit goes quiet: past the reorder timeout its block goes back too.
    s.a->expire(t0 + 200 * ms);
    CHECK(s.all_buffers_back());
    // Its next frame starts a new block at row 0.
    s.feed(u.frames(10), t0 + 300 * ms);
    got = s.finish();
    REQUIRE(got.size() == 1);
    CHECK(got[0].row == 0);
    check_frame(s, got[0], u, 10);
    CHECK(s.all_buffers_back());
}

TEST_CASE("assembler: reordered frames take rows in the order they open, emitted in frame order with their rows",
          "[processing][assembler][blocks]") {
    asm_setup s([](config::config& c) { c.storage.chunk_bytes = 8000; });
    unit_stream u;
    const auto f0 = u.frames(0);
    const auto f1 = u.frames(1);
    const auto f2 = u.frames(2);
    const auto f3 = u.frames(3);
    s.feed(f0);     // row 0
    s.feed(f2[0]);  // frame 2 opens before frame 1 (its first packet): row 1
    s.feed(f1);     // row 2, complete: emitted
    s.feed(std::vector<packet>(f2.begin() + 1, f2.end()));
    s.feed(f3);  // row 3
    const auto got = s.finish();
    REQUIRE(numbers(got) == std::vector<std::uint64_t>{0, 1, 2, 3});
    CHECK(got[0].row == 0);
    CHECK(got[1].row == 2);
    CHECK(got[2].row == 1);
    CHECK(got[3].row == 3);
    for (const auto& f : got) check_frame(s, f, u, f.frame_number);
    CHECK(s.all_buffers_back());
}

TEST_CASE("assembler: the writer's row phase starts the next block where the file's next chunk starts",
          "[processing][assembler][blocks]") {
    asm_setup s([](config::config& c) { c.storage.chunk_bytes = 8000; });
    unit_stream u;
    // The writer found this unit's file chunks start 2 rows later than its
    // blocks: (taken + 2) % 4 == 0 starts a block, at taken 2, 6, 10.
    s.pool->set_phase(u.unit, 2);
    s.feed(u.frames(0, 12));
    const auto got = s.finish();
    REQUIRE(got.size() == 12);
    const std::vector<std::uint32_t> rows{0, 1, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1};
    for (std::size_t i = 0; i < got.size(); ++i) {
        INFO("frame " << i);
        CHECK(got[i].row == rows[i]);
        check_frame(s, got[i], u, i);
    }
    CHECK(got[1].block != got[2].block);
    CHECK(got[5].block != got[6].block);
    CHECK(s.all_buffers_back());
}

TEST_CASE("assembler: with every block in use, frames overflow (counted) and flow again once the writer is done",
          "[processing][assembler][blocks]") {
    asm_setup s([](config::config& c) {
        c.storage.chunk_bytes = 8000;
        c.assembly.pool_blocks = 4;  // 16 rows
    });
    unit_stream u;
    s.feed(u.frames(0, 20));
    CHECK(s.u().frames_complete.get() == 16);
    CHECK(s.u().frames_overflow.get() == 4);
    auto got = s.take();
    REQUIRE(got.size() == 16);
    for (const auto& f : got) check_frame(s, f, u, f.frame_number);
    s.release(got);
    CHECK(s.all_buffers_back());
    s.feed(u.frames(20, 4));
    got = s.finish();
    CHECK(numbers(got) == std::vector<std::uint64_t>{20, 21, 22, 23});
    CHECK(s.u().frames_lost.get() == 0);  // the gap is the overflow, counted once
    CHECK(s.all_buffers_back());
}

TEST_CASE("assembler: with receive shards, a unit belongs to the shard that saw it first, the other drops it, counted",
          "[processing][assembler][shards]") {
    daqd::processing::unit_claims claims;
    asm_setup s0;
    asm_setup s1;
    // Rebuild both assemblers as shards 0 and 1 sharing the claims.
    s0.a = std::make_unique<assembler>(s0.cfg, std::vector<daqd::acquisition::packet_ring*>{}, s0.in_ready, *s0.pool,
                                       *s0.out, s0.out_ready, &claims, 0);
    s1.a = std::make_unique<assembler>(s1.cfg, std::vector<daqd::acquisition::packet_ring*>{}, s1.in_ready, *s1.pool,
                                       *s1.out, s1.out_ready, &claims, 1);
    unit_stream u1;
    u1.unit = 1;
    unit_stream u2;
    u2.unit = 2;
    s0.feed(u1.frames(0, 3));  // unit 1 on shard 0's link
    s1.feed(u2.frames(0, 3));  // unit 2 on shard 1's link
    const auto stray = u1.frames(3, 2);
    s1.feed(stray);            // unit 1 again, on shard 1's link: not its shard
    CHECK(claims.owner(1) == 0);
    CHECK(claims.owner(2) == 1);
    CHECK(s1.invalid(drop_reason::unit_on_other_shard) == stray.size());
    CHECK(s1.unit(1) == nullptr);  // shard 1 never took unit 1 up
    const auto got0 = s0.finish();
    const auto got1 = s1.finish();
    CHECK(numbers(got0) == std::vector<std::uint64_t>{0, 1, 2});
    CHECK(numbers(got1) == std::vector<std::uint64_t>{0, 1, 2});
    for (const auto& f : got1) CHECK(f.unit_id == 2);
    CHECK(s0.all_buffers_back());
    CHECK(s1.all_buffers_back());
}
