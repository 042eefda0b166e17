// Fuzz target: the DAQ1 receive path and the frame assembler, driven the way
// daqd drives them, single-threaded.
//
// Each input is a little configuration and a sequence of datagrams. Every
// datagram goes into a slot of a real packet_ring and through the receiver's
// own slot step (acquisition/src/slot_fill.hpp: daq1::validate, counting,
// GRO segments, truncation); published slots are consumed by
// assembler::poll(), expire() runs as the assembler thread runs it, and a
// "writer" takes frames from the output queue into a live_tap and gives
// their buffers back to the block_pool. At the end the input is drained and
// closed like assembler::stop() does.
//
// Input format (all integers little-endian):
//   byte 0   bit 0    units.learn
//            bit 1    list units 1 (500 channels) and 2 (8 channels) (forced on without learn)
//            bits 2-4 assembly.reorder_frames = 1 + value
//            bits 5-6 assembly.pool_blocks = 16, 17, 32, 64
//            bit 7    GRO: ring slots of 65535 + 128 bytes (else 9000 + 128) and
//                     records may carry a GRO segment size
//   byte 1   bits 0-3 assembly.reorder_timeout_ms = 1 + 7 x value
//            bits 4-5 assembly.max_frame_bytes = 1000, 4096, 65536, 262144
//            bit 6    the writer reports frames as written (live_tap)
//            bit 7    units.max_learned = 2 and units.learned_idle_s = 1: learned
//                     units give their slots up and come back
//   records, until the input ends:
//     u16 length, u8 control, [u16 GRO segment size if GRO and control bit 7], length bytes
//     (a short last record takes what is left)
//     control bits 0-3: the clock advances by 0 or 2^(v-1) x 100 us before the datagram
//             bits 4-5: the link it came in on: 0, 1, 2 or 17
//             bit 6   : afterwards the writer drains the frame queue
//             bit 7   : GRO record (GRO mode only)
//
// Invariants checked after every datagram and at the end: no counter
// decreases; receiver counters account for every datagram; assembler counters
// account for every valid one; frames carry in-bounds channels and pool
// indices, one holder per pool buffer, ascending frame numbers per unit (until
// the unit's END_OF_STREAM), per-unit frame and missing-packet counts equal
// what came out; lost frames are the gaps between stored frames less
// overflow; every pool buffer is back after the drain.
#include "daqd/acquisition/daq1.hpp"
#include "daqd/acquisition/packet_ring.hpp"
#include "daqd/acquisition/receiver.hpp"
#include "daqd/common/event.hpp"
#include "daqd/common/spsc_queue.hpp"
#include "daqd/config/config.hpp"
#include "daqd/processing/assembler.hpp"
#include "daqd/processing/frame.hpp"
#include "daqd/processing/block_pool.hpp"
#include "daqd/processing/live_tap.hpp"
#include "fuzz_check.hpp"
#include "slot_fill.hpp"  // acquisition/src: what both receive backends do with a received slot

#include <spdlog/spdlog.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <span>
#include <string>
#include <vector>

namespace daq1 = daqd::acquisition::daq1;
using daqd::acquisition::link_counters;
using daqd::acquisition::packet_ring;
using daqd::processing::assembler;
using daqd::processing::frame;
using daqd::processing::block_pool;
using daqd::processing::unit_counters;

namespace {

constexpr std::uint64_t ring_slots = 64;
constexpr std::array<std::uint16_t, 4> link_ids{0, 1, 2, 17};
constexpr std::array<std::uint32_t, 4> pool_sizes{16, 17, 32, 64};
constexpr std::array<std::uint32_t, 4> max_frame_sizes{1000, 4096, 65536, 262144};
constexpr unsigned kernel_gro_max_segments = 64;  // UDP_GRO_CNT_MAX: the kernel coalesces at most 64

// One ring per slot size for the whole process (the assembler consumes every
// slot before an input ends, so the next input starts on an empty ring). The
// name is unlinked at once: nothing is left in /dev/shm when a run crashes.
packet_ring& ring_for(bool gro) {
    static std::unique_ptr<packet_ring> rings[2];
    auto& r = rings[gro ? 1 : 0];
    if (!r) {
        const std::string name = "daqd-fuzz-" + std::to_string(::getpid()) + (gro ? "-gro" : "-std");
        r = std::make_unique<packet_ring>(name, ring_slots, (gro ? 65535u : 9000u) + 128u);
        ::shm_unlink(("/" + name).c_str());
    }
    return *r;
}

struct reader {
    const std::uint8_t* p;
    std::size_t n;
    bool u8(std::uint8_t& v) {
        if (n < 1) return false;
        v = p[0];
        ++p, --n;
        return true;
    }
    bool u16(std::uint16_t& v) {
        if (n < 2) return false;
        v = static_cast<std::uint16_t>(p[0] | (p[1] << 8));
        p += 2, n -= 2;
        return true;
    }
    std::span<const std::uint8_t> take(std::size_t k) {
        k = std::min(k, n);
        std::span<const std::uint8_t> s(p, k);
        p += k, n -= k;
        return s;
    }
};

std::string str(std::uint64_t v) { return std::to_string(v); }

// Every counter that must never decrease, in a fixed order (units append);
// with `names`, also what each one is (only asked for when a check failed).
std::vector<std::uint64_t> monotonic_counters(const assembler& a, const std::array<link_counters, 4>& links,
                                              std::vector<std::string>* names = nullptr) {
    std::vector<std::uint64_t> v;
    auto add = [&](const daqd::acquisition::counter& c, auto&& name) {
        v.push_back(c.get());
        if (names) names->push_back(name());
    };
    auto reason = [](std::size_t r) { return std::string(daq1::name(static_cast<daq1::drop_reason>(r))); };
    for (std::size_t l = 0; l < links.size(); ++l) {
        const auto& c = links[l];
        auto link = [&] { return "link " + std::to_string(link_ids[l]) + " "; };  // names are built on failure only
        add(c.datagrams, [&] { return link() + "datagrams"; });
        add(c.bytes, [&] { return link() + "bytes"; });
        add(c.truncated, [&] { return link() + "truncated"; });
        for (std::size_t r = 0; r < c.invalid.size(); ++r)
            add(c.invalid[r], [&] { return link() + "invalid " + reason(r); });
    }
    for (std::size_t r = 0; r < a.counters().invalid.size(); ++r)
        add(a.counters().invalid[r], [&] { return "assembler invalid " + reason(r); });
    add(a.counters().frames_out, [] { return std::string("assembler frames_out"); });
    for (std::uint32_t i = 0; i < a.unit_count(); ++i) {
        const unit_counters& u = a.unit_at(i);
        auto unit = [&] { return "unit " + std::to_string(u.unit_id) + " "; };
        const std::pair<const daqd::acquisition::counter*, const char*> fields[] = {
            {&u.packets, "packets"},
            {&u.bytes, "bytes"},
            {&u.packets_lost, "packets_lost"},
            {&u.duplicates, "duplicates"},
            {&u.late, "late"},
            {&u.frames_complete, "frames_complete"},
            {&u.frames_incomplete, "frames_incomplete"},
            {&u.frames_lost, "frames_lost"},
            {&u.frames_overflow, "frames_overflow"},
            {&u.missing_packets, "missing_packets"},
            {&u.last_receive_ns, "last_receive_ns"}};
        for (const auto& field : fields) add(*field.first, [&] { return unit() + field.second; });
        for (std::size_t l = 0; l < u.packets_by_link.size(); ++l)
            add(u.packets_by_link[l], [&] { return unit() + "packets_by_link[" + std::to_string(l) + "]"; });
        // last_frame_number is a gauge: it restarts with a unit's new stream.
    }
    return v;
}

struct unit_seen {
    std::uint32_t channels = 0;
    std::uint64_t complete = 0, incomplete = 0, missing = 0;
    bool have_last = false;
    std::uint64_t last_frame = 0;
    std::uint32_t stream = 0;  // frame::stream of the last frame
    std::uint32_t first_channels = 0;  // the live view keeps the layout of the unit's first frame
    std::uint64_t first_layout_frames = 0;  // frames of that layout (the live view's dose sums those)
    unsigned __int128 gaps = 0;  // frame numbers skipped between frames that came out (without END_OF_STREAM)
    bool eos = false;  // an END_OF_STREAM packet of this unit passed validation
};

struct harness {
    daqd::config::config cfg;
    bool gro = false;
    bool written = false;
    packet_ring& ring;
    std::unique_ptr<block_pool> pool;
    std::unique_ptr<daqd::common::spsc_queue<frame>> out;
    daqd::common::wake_event ring_ready, frames_ready;
    std::unique_ptr<assembler> a;
    daqd::processing::live_tap tap{std::chrono::nanoseconds(0)};
    std::array<link_counters, 4> links;
    std::array<std::uint64_t, 4> fed{};  // datagrams (GRO segments) given to each link
    std::vector<frame> kept;                                   // frames the "writer" still holds
    std::set<std::pair<std::uint32_t, std::uint32_t>> rows_out;  // their (block, row)
    std::map<std::uint16_t, unit_seen> units;
    std::uint64_t popped = 0;
    std::uint64_t now = 5'000'000'000ull;
    std::uint64_t last_expire = 0;
    std::vector<std::uint64_t> previous;

    harness(std::uint8_t k0, std::uint8_t k1, bool gro_mode)
        : gro(gro_mode), written((k1 & 0x40) != 0), ring(ring_for(gro_mode)) {
        cfg.units.learn = (k0 & 0x01) != 0;
        if ((k0 & 0x02) || !cfg.units.learn) cfg.units.units = {{1, 500}, {2, 8}};
        cfg.assembly.reorder_frames = 1u + ((k0 >> 2) & 0x07u);
        cfg.assembly.pool_blocks = pool_sizes[(k0 >> 5) & 0x03u];
        cfg.storage.chunk_bytes = 4096;  // blocks of several rows for small frames, one for large ones
        cfg.assembly.reorder_timeout = std::chrono::milliseconds(1 + 7 * (k1 & 0x0f));
        cfg.assembly.max_frame_bytes = max_frame_sizes[(k1 >> 4) & 0x03u];
        if (k1 & 0x80) {
            cfg.units.max_learned = 2;
            cfg.units.learned_idle_s = 1;
        }
        cfg.acquisition.gro = gro;
        cfg.acquisition.max_datagram_bytes = gro ? 65535 : 9000;
        cfg.validate();  // the harness only builds configurations daqd would accept
        // As the pipeline builds them (daqd/pipeline.cpp).
        pool = std::make_unique<block_pool>(cfg.assembly.pool_blocks,
                                            std::max<std::size_t>(cfg.storage.chunk_bytes, cfg.assembly.max_frame_bytes));
        out = std::make_unique<daqd::common::spsc_queue<frame>>(std::size_t{cfg.assembly.pool_blocks} * 64);
        a = std::make_unique<assembler>(cfg, std::vector<packet_ring*>{&ring}, ring_ready, *pool, *out, frames_ready);
        FUZZ_CHECK(ring.available() == 0, "the ring must start empty");
    }

    // The receiver: one datagram (or GRO batch) into the next ring slot.
    void receive(std::span<const std::uint8_t> d, std::uint32_t segment, std::size_t link_index) {
        FUZZ_CHECK(ring.free_slots() > 0);
        const std::uint64_t head = ring.producer_head();
        const bool truncated = d.size() > ring.data_bytes();  // MSG_TRUNC: the kernel cut it to the slot
        const auto bytes = static_cast<std::uint32_t>(std::min<std::size_t>(d.size(), ring.data_bytes()));
        if (bytes) std::memcpy(ring.slot_data(head), d.data(), bytes);
        if (segment != 0 && segment < bytes && (bytes + segment - 1) / segment > kernel_gro_max_segments)
            segment = (bytes + kernel_gro_max_segments - 1) / kernel_gro_max_segments;
        const bool single = truncated || segment == 0 || segment >= bytes;
        fed[link_index] += single ? 1 : (bytes + segment - 1) / segment;
        // What passes validation, for the ordering check (END_OF_STREAM restarts a unit's frame numbers).
        for (std::uint32_t off = 0; !truncated && off < bytes; off += single ? bytes : segment) {
            const std::uint32_t len = single ? bytes : std::min(segment, bytes - off);
            daq1::header h;
            if (daq1::validate(std::span<const std::byte>(ring.slot_data(head) + off, len), h) ==
                    daq1::drop_reason::none &&
                (h.flags & daq1::flag_end_of_stream))
                units[h.unit_id].eos = true;
        }
        if (daqd::acquisition::detail::finish_slot(*ring.slot(head), links[link_index], link_ids[link_index], 0,
                                                    bytes, segment, truncated, now))
            ring.publish(head + 1);
    }

    // One pass of the assembler thread (assembler::pass), on the fuzzer's clock.
    void assemble() {
        while (a->poll(now) > 0) {
        }
        if (now - last_expire > 1'000'000) {
            a->expire(now);
            last_expire = now;
        }
    }

    const unit_counters* counters_of(std::uint16_t id) const {
        for (std::uint32_t i = 0; i < a->unit_count(); ++i)
            if (a->unit_at(i).unit_id == id) return &a->unit_at(i);
        return nullptr;
    }

    // The writer: every queued frame through the live tap and back to the pool.
    void drain() {
        while (auto f = out->try_pop()) {
            const unit_counters* uc = counters_of(f->unit_id);
            FUZZ_CHECK(uc != nullptr, "a frame of unit " + str(f->unit_id) + ", which the assembler does not list");
            // The unit's channel count is its current stream's: a frame still
            // queued from an earlier stream (a learned unit relearned with
            // another frame size) has that stream's count, checked below
            // against the stream's other frames.
            FUZZ_CHECK(f->stream < uc->stream.get() || f->channels == uc->channels,
                       "unit " + str(f->unit_id) + ": frame of " + str(f->channels) + " channels in stream " +
                           str(f->stream) + ", unit has " + str(uc->channels) + " in stream " + str(uc->stream.get()));
            FUZZ_CHECK(f->pool == pool.get() && f->block < pool->blocks(), "block " + str(f->block));
            FUZZ_CHECK(f->row < f->block_rows, "row " + str(f->row) + " of " + str(f->block_rows));
            FUZZ_CHECK(f->channels >= 1 && std::size_t{f->block_rows} * f->channels * 2 <= pool->block_bytes(),
                       str(f->block_rows) + " rows of " + str(f->channels) + " channels in a block of " +
                           str(pool->block_bytes()) + " bytes");
            FUZZ_CHECK(reinterpret_cast<std::byte*>(f->samples) ==
                       pool->data(f->block) + std::size_t{f->row} * f->channels * 2);
            // No row is handed out twice while in use.
            FUZZ_CHECK(rows_out.insert({f->block, f->row}).second,
                       "block " + str(f->block) + " row " + str(f->row) + " handed out twice");
            FUZZ_CHECK(f->packet_count >= 1 && f->missing_packets < f->packet_count,
                       "missing " + str(f->missing_packets) + " of " + str(f->packet_count) + " packets");
            FUZZ_CHECK(f->calibrated == nullptr);
            unit_seen& u = units[f->unit_id];
            // A unit's stream index never goes back; a new one may number its
            // frames (and size them) anew: the writer starts the next file.
            FUZZ_CHECK(f->stream >= u.stream, "unit " + str(f->unit_id) + ": stream " + str(f->stream) +
                                                  " after stream " + str(u.stream));
            const bool new_stream = u.have_last && f->stream != u.stream;
            if (new_stream) u.channels = 0;
            u.stream = f->stream;
            if (u.channels == 0) u.channels = f->channels;
            if (u.first_channels == 0) u.first_channels = f->channels;
            if (f->channels == u.first_channels) ++u.first_layout_frames;
            FUZZ_CHECK(u.channels == f->channels);
            // Within a stream rows ascend, END_OF_STREAM or not (a stream after
            // END_OF_STREAM that goes back is a new stream).
            FUZZ_CHECK(!u.have_last || new_stream || f->frame_number > u.last_frame,
                       "unit " + str(f->unit_id) + ": frame " + str(f->frame_number) + " after frame " +
                           str(u.last_frame) + " in stream " + str(f->stream));
            if (!u.eos && u.have_last && !new_stream && f->frame_number > u.last_frame)
                u.gaps += f->frame_number - u.last_frame - 1;
            u.have_last = true;
            u.last_frame = f->frame_number;
            if (f->missing_packets) {
                ++u.incomplete;
                u.missing += f->missing_packets;
            } else {
                ++u.complete;
            }
            tap.on_frame(*f, written);
            // The writer keeps a few frames before it lets them go (a run
            // file's chunk in progress), so blocks come back in either order.
            kept.push_back(*f);
            if (kept.size() > 3) {
                rows_out.erase({kept.front().block, kept.front().row});
                kept.front().release();
                kept.erase(kept.begin());
            }
            ++popped;
        }
    }

    void check_step() {
        // Counters never decrease.
        auto now_counters = monotonic_counters(*a, links);
        FUZZ_CHECK(now_counters.size() >= previous.size());
        for (std::size_t i = 0; i < previous.size(); ++i) {
            if (now_counters[i] >= previous[i]) continue;
            std::vector<std::string> names;
            monotonic_counters(*a, links, &names);
            FUZZ_CHECK(now_counters[i] >= previous[i],
                       names[i] + " went from " + str(previous[i]) + " to " + str(now_counters[i]));
        }
        previous = std::move(now_counters);

        // The receiver counts every datagram exactly once: valid or by one reason.
        std::uint64_t valid = 0;
        for (std::size_t l = 0; l < links.size(); ++l) {
            const auto& c = links[l];
            FUZZ_CHECK(c.datagrams.get() + c.invalid_total() == fed[l],
                       "link " + str(l) + ": " + str(c.datagrams.get()) + " valid + " + str(c.invalid_total()) +
                           " invalid != " + str(fed[l]) + " datagrams");
            FUZZ_CHECK(c.invalid[0].get() == 0, "counted under reason 'none'");
            valid += c.datagrams.get();
        }
        // Every valid datagram reached a unit or was dropped by the assembler with a reason
        // (layout_mismatch and frame_out_of_window are counted after the unit already counted the packet).
        std::uint64_t reached = 0;
        std::uint64_t frames = 0;
        for (std::uint32_t i = 0; i < a->unit_count(); ++i) {
            const unit_counters& u = a->unit_at(i);
            reached += u.packets.get();
            std::uint64_t by_link = 0;
            for (const auto& c : u.packets_by_link) by_link += c.get();
            FUZZ_CHECK(by_link == u.packets.get(), "unit " + str(u.unit_id) + ": packets by link do not add up");
            FUZZ_CHECK(u.channels >= 1 && std::size_t{u.channels} * 2 <= pool->block_bytes());
            frames += u.frames_complete.get() + u.frames_incomplete.get();
        }
        const auto& inv = a->counters().invalid;
        for (std::size_t r = 0; r < inv.size(); ++r)
            if (r != static_cast<std::size_t>(daq1::drop_reason::layout_mismatch) &&
                r != static_cast<std::size_t>(daq1::drop_reason::frame_out_of_window))
                reached += inv[r].get();
        FUZZ_CHECK(inv[0].get() == 0, "assembler counted under reason 'none'");
        FUZZ_CHECK(reached == valid,
                   str(valid) + " valid datagrams, but " + str(reached) + " reached units or drop reasons");
        // Frames: what the units counted is what the queue got.
        FUZZ_CHECK(frames == a->counters().frames_out.get());
        FUZZ_CHECK(a->counters().frames_out.get() == popped + out->size(),
                   str(a->counters().frames_out.get()) + " frames out, " + str(popped) + " taken + " +
                       str(out->size()) + " queued");
        FUZZ_CHECK(pool->available() <= pool->blocks());
    }

    // DAQD_FUZZ_VERBOSE=1: what an input did (for writing seeds).
    void report() const {
        std::fprintf(stderr, "  config: learn=%d listed=%zu reorder=%u pool=%u timeout=%lldms max_frame=%u gro=%d\n",
                     cfg.units.learn, cfg.units.units.size(), cfg.assembly.reorder_frames, cfg.assembly.pool_blocks,
                     static_cast<long long>(cfg.assembly.reorder_timeout.count()), cfg.assembly.max_frame_bytes, gro);
        for (std::size_t l = 0; l < links.size(); ++l) {
            if (!fed[l]) continue;
            std::string why;
            for (std::size_t r = 1; r < daq1::drop_reason_count; ++r)
                if (links[l].invalid[r].get())
                    why += " " + std::string(daq1::name(static_cast<daq1::drop_reason>(r))) + "=" +
                           str(links[l].invalid[r].get());
            std::fprintf(stderr, "  link %u: fed=%llu valid=%llu invalid:%s\n", link_ids[l],
                         static_cast<unsigned long long>(fed[l]),
                         static_cast<unsigned long long>(links[l].datagrams.get()), why.c_str());
        }
        std::string why;
        for (std::size_t r = 1; r < daq1::drop_reason_count; ++r)
            if (a->counters().invalid[r].get())
                why += " " + std::string(daq1::name(static_cast<daq1::drop_reason>(r))) + "=" +
                       str(a->counters().invalid[r].get());
        std::fprintf(stderr, "  assembler invalid:%s frames_out=%llu\n", why.c_str(),
                     static_cast<unsigned long long>(a->counters().frames_out.get()));
        for (std::uint32_t i = 0; i < a->unit_count(); ++i) {
            const unit_counters& u = a->unit_at(i);
            std::fprintf(stderr,
                         "  unit %u (%u ch): packets=%llu lost=%llu dup=%llu late=%llu complete=%llu incomplete=%llu "
                         "frames_lost=%llu overflow=%llu missing=%llu\n",
                         u.unit_id, u.channels.load(), static_cast<unsigned long long>(u.packets.get()),
                         static_cast<unsigned long long>(u.packets_lost.get()),
                         static_cast<unsigned long long>(u.duplicates.get()),
                         static_cast<unsigned long long>(u.late.get()),
                         static_cast<unsigned long long>(u.frames_complete.get()),
                         static_cast<unsigned long long>(u.frames_incomplete.get()),
                         static_cast<unsigned long long>(u.frames_lost.get()),
                         static_cast<unsigned long long>(u.frames_overflow.get()),
                         static_cast<unsigned long long>(u.missing_packets.get()));
        }
    }

    void finish() {
        // The assembler's drain at stop: drain the ring, close every open frame, settle losses.
        while (a->poll(now) > 0) {
        }
        a->flush_all();
        drain();
        for (const frame& f : kept) f.release();
        kept.clear();
        rows_out.clear();
        check_step();
        FUZZ_CHECK(out->empty());
        FUZZ_CHECK(pool->available() == pool->blocks(),
                   str(pool->blocks() - pool->available()) + " block(s) never came back");
        for (std::uint32_t i = 0; i < a->unit_count(); ++i) {
            const unit_counters& u = a->unit_at(i);
            const unit_seen& s = units[u.unit_id];
            FUZZ_CHECK(u.frames_complete.get() == s.complete && u.frames_incomplete.get() == s.incomplete,
                       "unit " + str(u.unit_id) + ": counted " + str(u.frames_complete.get()) + "/" +
                           str(u.frames_incomplete.get()) + " complete/incomplete frames, " + str(s.complete) + "/" +
                           str(s.incomplete) + " came out");
            // Lost frames are the gaps between stored frames, less those counted as overflow
            // (a new stream, after END_OF_STREAM or a restart, is no gap).
            if (!s.eos && u.stream_restarts.get() == 0)
                FUZZ_CHECK(u.frames_lost.get() <= s.gaps && s.gaps - u.frames_lost.get() <= u.frames_overflow.get(),
                           "unit " + str(u.unit_id) + ": frames_lost " + str(u.frames_lost.get()) + ", overflow " +
                               str(u.frames_overflow.get()) + ", gaps between stored frames " +
                               str(static_cast<std::uint64_t>(s.gaps)));
            FUZZ_CHECK(u.missing_packets.get() == s.missing,
                       "unit " + str(u.unit_id) + ": missing_packets " + str(u.missing_packets.get()) +
                           ", frames miss " + str(s.missing));
            // The live view shows what the writer saw.
            daqd::processing::live_frame lf;
            if (tap.read(u.unit_id, lf)) {
                // The live view keeps the layout of the unit's first frame (a relearned size is not shown).
                const std::uint32_t ch = s.first_channels;
                FUZZ_CHECK(lf.channels == ch && lf.samples.size() == ch && lf.dose.size() == ch);
                FUZZ_CHECK(lf.dose_frames == s.first_layout_frames);
            }
            FUZZ_CHECK(tap.frames_seen(u.unit_id) == s.complete + s.incomplete);
            FUZZ_CHECK(tap.frames_written(u.unit_id) == (written ? s.complete + s.incomplete : 0));
        }
    }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static const bool quiet = [] {
        spdlog::set_level(spdlog::level::off);  // the assembler logs every new unit
        return true;
    }();
    (void)quiet;
    reader in{data, size};
    std::uint8_t k0 = 0, k1 = 0;
    if (!in.u8(k0) || !in.u8(k1)) return 0;
    const bool gro = (k0 & 0x80) != 0;
    harness h(k0, k1, gro);

    for (;;) {
        std::uint16_t length = 0, segment = 0;
        std::uint8_t control = 0;
        if (!in.u16(length) || !in.u8(control)) break;
        if (gro && (control & 0x80) && !in.u16(segment)) break;
        const auto d = in.take(length);
        const unsigned step = control & 0x0f;
        if (step) h.now += (1ull << (step - 1)) * 100'000ull;
        h.receive(d, segment, (control >> 4) & 0x03u);
        h.assemble();
        if (control & 0x40) h.drain();
        h.check_step();
    }
    h.finish();
    static const bool verbose = std::getenv("DAQD_FUZZ_VERBOSE") != nullptr;
    if (verbose) h.report();
    return 0;
}
