#include "daqd/processing/assembler.hpp"

#include "daqd/common/log_once.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cassert>
#include <cstring>
#include <deque>

namespace daqd::processing {

namespace daq1 = acquisition::daq1;
using daq1::drop_reason;

namespace {
constexpr std::uint64_t seq_base = 1ull << 40;       // extended sequence numbers start here
}  // namespace

struct assembler::open_frame {
    std::uint64_t frame_number;
    std::uint64_t timestamp_ns;
    std::uint64_t opened_ns;
    std::uint32_t block;  // its row: row `row` of this block of the pool,
    std::uint32_t row;    // which holds block_rows rows
    std::uint32_t block_rows;
    std::uint64_t taken;
    std::uint32_t slice;  // payload bytes of a non-last packet, once known
    std::uint32_t bitmap;  // index into unit_state::bits
    std::uint16_t packet_count;
    std::uint16_t received;
    bool eos;
    bool test_pattern;  // every packet so far carried TEST_PATTERN
};

struct assembler::unit_state {
    std::uint16_t id = 0;
    bool configured = false;     // listed in units.list (never reclaimed, size fixed)
    std::uint32_t frame_bytes = 0;
    unit_counters* counters = nullptr;  // owned by assembler::_counters_of
    std::vector<open_frame> window;          // ascending frame_number, at most reorder_frames
    std::uint32_t bitmap_words = 0;          // words of one frame's packet bitmap (from packet_count)
    std::vector<std::uint64_t> bits;         // reorder_frames bitmaps of packet indices
    std::vector<std::uint32_t> free_bitmaps;
    // The block the unit's frames take rows from, in the order they open
    // (block_pool.hpp); sealed (given up) when full, or when the unit's
    // frames must start a new chunk (new stream, new size, run start).
    bool has_block = false;
    std::uint32_t block = 0;
    std::uint32_t next_row = 0;
    std::uint32_t block_rows = 0;
    std::uint64_t taken = 0;  // rows taken, all blocks (frame::taken)
    bool have_emitted = false;
    std::uint64_t last_emitted = 0;
    std::uint64_t high_frame = 0;   // highest frame_number opened in this stream
    std::uint32_t stream = 0;       // frame::stream of this unit's frames
    // The stream ended (END_OF_STREAM closed and nothing open): the next
    // packet may start a new stream anywhere; prev_last is where this one ended.
    bool ended = false;
    std::uint64_t prev_last = 0;
    // The time of its last accepted packet (so of its learned size) is
    // counters->last_receive_ns.
    std::uint64_t last_ns() const noexcept { return counters->last_receive_ns.get(); }
    std::uint32_t other_bytes = 0;   // another frame size it sends (logged once)
    // Packets whose frame_number is implausible for the stream, held aside
    // (datagram copies) until they prove a new stream or a plausible packet
    // releases them.
    struct held_packet {
        std::size_t offset;
        std::uint32_t bytes;
        bool behind;
    };
    std::vector<held_packet> held;
    std::vector<std::byte> held_data;
    std::uint64_t held_min = 0, held_max = 0;
    // packet_seq tracking
    bool seq_started = false;
    std::uint64_t seq_high = 0;
    std::uint64_t seq_first = 0;
    std::vector<std::uint64_t> seq_bits;  // seq_window bits, by extended seq mod seq_window
    bool overflowed = false;
    std::uint64_t last_overflow_frame = 0;   // highest frame_number counted as overflow
    // Frames counted as overflow and not yet behind a stored one, as ascending
    // runs [first, last] of frame numbers: a later packet of such a frame is
    // dropped with it (never opened, so never also counted incomplete), and a
    // gap between stored frames is lost frames except these.
    std::deque<std::pair<std::uint64_t, std::uint64_t>> overflow_runs;
    bool in_overflow(std::uint64_t fnum) const noexcept {
        for (auto it = overflow_runs.rbegin(); it != overflow_runs.rend(); ++it) {
            if (fnum > it->second) return false;
            if (fnum >= it->first) return true;
        }
        return false;
    }
    void add_overflow(std::uint64_t fnum) {
        if (!overflow_runs.empty() && overflow_runs.back().second + 1 == fnum)
            overflow_runs.back().second = fnum;
        else
            overflow_runs.emplace_back(fnum, fnum);
    }
    // Overflowed frames before `fnum` (and forgets them).
    std::uint64_t take_overflow_before(std::uint64_t fnum) noexcept {
        std::uint64_t n = 0;
        while (!overflow_runs.empty() && overflow_runs.front().first < fnum) {
            auto& r = overflow_runs.front();
            const std::uint64_t last = std::min(r.second, fnum - 1);
            n += last - r.first + 1;
            if (r.second < fnum) {
                overflow_runs.pop_front();
            } else {
                r.first = fnum + 1;
                if (r.first > r.second) overflow_runs.pop_front();
            }
        }
        return n;
    }
    common::edge_logger overflow_log{"frame pool exhausted: dropping frames (the writer is behind)"};

    bool seq_seen(std::uint64_t s) const noexcept {
        const std::uint64_t p = s % seq_window;
        return (seq_bits[p / 64] >> (p % 64)) & 1u;
    }
    void seq_mark(std::uint64_t s, bool on) noexcept {
        const std::uint64_t p = s % seq_window;
        if (on)
            seq_bits[p / 64] |= 1ull << (p % 64);
        else
            seq_bits[p / 64] &= ~(1ull << (p % 64));
    }
};

assembler::assembler(const config::config& cfg, std::vector<acquisition::packet_ring*> rings,
                     common::wake_event& in_ready, block_pool& pool, common::spsc_queue<frame>& out,
                     common::wake_event& out_ready, unit_claims* claims, std::uint16_t shard)
    : _cfg(cfg), _rings(std::move(rings)), _in_ready(in_ready), _pool(pool), _out(out), _out_ready(out_ready),
      _units(max_units), _unit_list(std::make_unique<std::atomic<unit_counters*>[]>(max_units)),
      _expected_bytes(max_units, 0), _counters_of(max_units),
      _claims(claims), _shard(shard), _claim_warned(claims != nullptr ? max_units : 0, false),
      _timeout_ns(static_cast<std::uint64_t>(cfg.assembly.reorder_timeout.count()) * 1'000'000ull) {
    for (const auto& u : cfg.units.units) _expected_bytes[u.id] = u.channels * 2;
    _active.reserve(max_units);
}

assembler::~assembler() { _worker.stop(); }

// One clock read per pass: every packet taken and every frame handed on in
// it carries the pass's time, and the output's consumer is woken (when it
// sleeps) once, after the batch (issue 11).
bool assembler::pass() {
    const std::uint64_t now = common::monotonic_ns();
    const std::size_t n = take_rings(now);
    // Expire only once the rings are drained: after this thread was
    // descheduled, the missing packets of an "old" frame are usually still
    // waiting in the ring, and closing it first would make them late
    // (seen in a 10-minute soak at 1 Gbit/s). A backlog that never clears
    // still expires frames after ten timeouts.
    bool backlog = false;
    for (auto* r : _rings) backlog |= r->available() > 0;
    if (now - _last_expire_ns > 1'000'000 && (!backlog || now - _last_expire_ns > 10 * _timeout_ns)) {
        expire_units(now);
        _last_expire_ns = now;
    }
    wake_output();
    return n > 0;
}

void assembler::wake_output() noexcept {
    if (!_out_unsignalled) return;
    _out_unsignalled = false;
    _out_ready.notify();
}

bool assembler::input_waiting() {
    for (auto* r : _rings)
        if (r->available() > 0) return true;
    return false;
}

// Open frames expire by the clock, with no packet to wake the thread.
std::chrono::microseconds assembler::sleep_limit() const { return std::chrono::microseconds(2000); }

// The receiver stops before the assembler is told to: once a pass finds the
// rings empty they are drained for good.
void assembler::drain() {
    while (pass()) {
    }
    flush_all();
}

std::size_t assembler::poll(std::uint64_t now_ns) {
    const std::size_t n = take_rings(now_ns);
    wake_output();
    return n;
}

std::size_t assembler::take_rings(std::uint64_t now_ns) {
    std::size_t total = 0;
    for (auto* ring : _rings) {
        const std::uint64_t n = std::min<std::uint64_t>(ring->available(), 256);
        const std::uint64_t tail = ring->consumer_tail();
        for (std::uint64_t i = 0; i < n; ++i) {
            const auto& s = *ring->slot(tail + i);
            if (s.bytes == 0) continue;
            const std::byte* data = ring->slot_data(tail + i) + s.data_offset;
            if (s.segment_bytes == 0) {
                take_datagram(data, s.bytes, now_ns, s.link);
                continue;
            }
            unsigned k = 0;
            for (std::uint32_t off = 0; off < s.bytes; off += s.segment_bytes, ++k) {
                if (k < 64 && ((s.invalid_mask >> k) & 1u)) continue;
                const std::uint32_t len = std::min<std::uint32_t>(s.segment_bytes, s.bytes - off);
                take_datagram(data + off, len, now_ns, s.link);
            }
        }
        if (n) ring->consume(n);
        total += n;
    }
    return total;
}

assembler::unit_state* assembler::unit_for(const daq1::header& h, std::uint64_t now_ns, drop_reason& why) {
    const std::uint16_t id = h.unit_id;
    if (auto* u = _units[id].get()) {
        if (h.frame_bytes == u->frame_bytes) return u;
        why = drop_reason::frame_bytes_mismatch;
        if (u->other_bytes != h.frame_bytes) {
            u->other_bytes = h.frame_bytes;
            spdlog::warn("unit {} sends {}-byte frames, {} {}: dropped as frame_bytes_mismatch{}", id, h.frame_bytes,
                         u->configured ? "units.list says" : "it was learned with", u->frame_bytes,
                         u->configured ? std::string()
                                       : fmt::format(" until no {}-byte frame came for units.relearn_quiet_ms = {}",
                                                     u->frame_bytes, _cfg.units.relearn_quiet.count()));
        }
        // A learned unit that changed its frame size (new firmware, new
        // settings) is relearned once the old size has gone quiet.
        const auto quiet = static_cast<std::uint64_t>(_cfg.units.relearn_quiet.count()) * 1'000'000ull;
        if (u->configured || now_ns - u->last_ns() < quiet) return nullptr;
        if (h.frame_bytes > max_frame_bytes()) {
            why = drop_reason::frame_too_large_for_pool;
            return nullptr;
        }
        relearn(*u, h, now_ns);
        return u;
    }
    const std::uint32_t expected = _expected_bytes[id];
    if (expected == 0 && !_cfg.units.learn) {
        why = drop_reason::unknown_unit;
        return nullptr;
    }
    if (expected != 0 && h.frame_bytes != expected) {
        why = drop_reason::frame_bytes_mismatch;
        return nullptr;
    }
    if (h.frame_bytes > max_frame_bytes()) {
        why = drop_reason::frame_too_large_for_pool;
        if (_counters.invalid[static_cast<std::size_t>(why)].get() == 0)
            spdlog::error("unit {} sends {}-byte frames, more than assembly.max_frame_bytes = {}: its packets are "
                          "dropped; raise assembly.max_frame_bytes",
                          id, h.frame_bytes, max_frame_bytes());
        return nullptr;
    }
    if (_claims != nullptr && !_claims->claim(id, _shard)) {
        why = drop_reason::unit_on_other_shard;
        if (!_claim_warned[id]) {
            _claim_warned[id] = true;
            spdlog::error("unit {} sends on a link of receive shard {} but came first on shard {}: its packets here are "
                          "dropped (unit_on_other_shard); a unit's links must all be in one shard (acquisition.shards "
                          "groups the links in listen order)",
                          id, _shard, _claims->owner(id));
        }
        return nullptr;
    }
    if (expected == 0 && _learned >= _cfg.units.max_learned && !reclaim_one(now_ns)) {
        why = drop_reason::unit_limit;
        _unit_limit_log.on(_counters.invalid[static_cast<std::size_t>(why)].get() + 1);
        return nullptr;
    }
    return learn(h, expected != 0);
}

// A new unit: its state is set up once (not on the per-packet path), its
// bitmaps sized by its own packet count.
assembler::unit_state* assembler::learn(const daq1::header& h, bool configured) {
    const std::uint16_t id = h.unit_id;
    auto u = std::make_unique<unit_state>();
    u->id = id;
    u->configured = configured;
    u->frame_bytes = h.frame_bytes;
    const std::uint32_t slots = _cfg.assembly.reorder_frames;
    u->window.reserve(slots);
    u->bitmap_words = (static_cast<std::uint32_t>(h.packet_count) + 63u) / 64u;
    u->bits.assign(static_cast<std::size_t>(slots) * u->bitmap_words, 0);
    for (std::uint32_t i = 0; i < slots; ++i) u->free_bitmaps.push_back(slots - 1 - i);
    u->seq_bits.assign(seq_window / 64, 0);
    auto& c = _counters_of[id];
    const bool returning = c != nullptr;  // a learned unit whose slot was given away comes back
    if (!returning) {
        c = std::make_unique<unit_counters>();
        c->unit_id = id;
    }
    const bool resized = returning && c->channels != h.frame_bytes / 2;
    c->channels = h.frame_bytes / 2;
    c->retired.set(0);
    u->counters = c.get();
    if (returning && c->frames_complete.get() + c->frames_incomplete.get() > 0) {
        u->stream = static_cast<std::uint32_t>(c->stream.get());
        if (resized) {
            // Rows of another width: a new stream (the writer's next file),
            // numbered from wherever it starts.
            next_stream(*u, true);
        } else {
            // It may go on from where it was, or start again lower (then: next stream).
            u->ended = true;
            u->prev_last = c->last_frame_number.get();
        }
    }
    auto* raw = u.get();
    _units[id] = std::move(u);
    _active.push_back(raw);
    if (!configured) ++_learned;
    if (!returning) {
        const std::uint32_t n = _unit_count.load(std::memory_order_relaxed);
        _unit_list[n].store(raw->counters, std::memory_order_release);
        _unit_count.store(n + 1, std::memory_order_release);
    }
    spdlog::info("unit {}: {} channels ({})", id, h.frame_bytes / 2,
                 configured ? "configured" : returning ? "learned again" : "learned from its first packet");
    return raw;
}

// Gives up the state of one learned unit silent for units.learned_idle_s
// (its counters stay, marked retired, and continue if it comes back).
bool assembler::reclaim_one(std::uint64_t now_ns) {
    const std::uint64_t idle = std::uint64_t{_cfg.units.learned_idle_s} * 1'000'000'000ull;
    for (std::size_t i = 0; i < _active.size(); ++i) {
        unit_state* u = _active[i];
        if (u->configured || !u->window.empty() || !u->held.empty() || now_ns - u->last_ns() < idle) continue;
        settle_seq(*u);
        seal(*u);
        u->counters->retired.set(1);
        spdlog::info("unit {}: silent for {} s, its learned slot goes to a new unit", u->id,
                     (now_ns - u->last_ns()) / 1'000'000'000ull);
        const std::uint16_t id = u->id;
        _active.erase(_active.begin() + static_cast<std::ptrdiff_t>(i));
        _units[id].reset();
        --_learned;
        return true;
    }
    return false;
}

// A learned unit now sends frames of another size: its stream ends and a new
// one (next stream index, so a new file) starts with the new size.
void assembler::relearn(unit_state& u, const daq1::header& h, std::uint64_t now_ns) {
    release_held(u);
    close_all(u, now_ns);
    settle_seq(u);
    seal(u);  // its rows are of the old size
    spdlog::warn("unit {}: no {}-byte frame for {} ms, relearned with {}-byte frames ({} channels); its next frames "
                 "go to the next file of the run",
                 u.id, u.frame_bytes, _cfg.units.relearn_quiet.count(), h.frame_bytes, h.frame_bytes / 2);
    u.frame_bytes = h.frame_bytes;
    u.other_bytes = 0;
    u.counters->channels = h.frame_bytes / 2;
    u.bitmap_words = (static_cast<std::uint32_t>(h.packet_count) + 63u) / 64u;
    u.bits.assign(static_cast<std::size_t>(_cfg.assembly.reorder_frames) * u.bitmap_words, 0);
    next_stream(u, true);
}

// The unit's stream is over (its frames closed, its loss settled): the next
// frame may be numbered from anywhere. `back`: its numbering goes back or its
// frame size changed, so its frames need the next file (frame::stream + 1).
void assembler::next_stream(unit_state& u, bool back) {
    u.have_emitted = false;
    u.ended = false;
    u.overflow_runs.clear();
    u.overflowed = false;
    if (back) {
        ++u.stream;
        u.counters->stream.set(u.stream);
    }
}

void assembler::track_seq(unit_state& u, std::uint32_t seq, bool& duplicate) {
    duplicate = false;
    if (!u.seq_started) {
        u.seq_started = true;
        u.seq_high = u.seq_first = seq_base + seq;
        std::fill(u.seq_bits.begin(), u.seq_bits.end(), 0);
        u.seq_mark(u.seq_high, true);
        return;
    }
    const auto diff = static_cast<std::int32_t>(seq - static_cast<std::uint32_t>(u.seq_high));
    const std::uint64_t ext = u.seq_high + static_cast<std::int64_t>(diff);
    if (diff > 0) {
        // Sequence numbers leaving the window are settled: unseen ones are lost.
        std::uint64_t lost = 0;
        const std::uint64_t old_high = u.seq_high;
        const std::uint64_t leave_end = ext >= seq_window ? ext - seq_window : 0;  // inclusive
        std::uint64_t s = std::max(u.seq_first, old_high >= seq_window ? old_high - seq_window + 1 : 0);
        for (; s <= leave_end && s <= old_high; ++s)
            if (!u.seq_seen(s)) ++lost;
        if (leave_end > old_high) lost += leave_end - old_high;  // never even entered the window
        // Clear the positions the new sequence numbers take over.
        if (ext - old_high >= seq_window) {
            std::fill(u.seq_bits.begin(), u.seq_bits.end(), 0);
        } else {
            for (std::uint64_t t = old_high + 1; t <= ext; ++t) u.seq_mark(t, false);
        }
        u.seq_high = ext;
        u.seq_mark(ext, true);
        if (lost) u.counters->packets_lost.add(lost);
        return;
    }
    if (u.seq_high - ext >= seq_window) return;  // too old to judge
    if (ext < u.seq_first) {
        u.seq_first = ext;  // an early packet overtaken by the first one seen
        u.seq_mark(ext, true);
        return;
    }
    if (u.seq_seen(ext)) {
        duplicate = true;
        return;
    }
    u.seq_mark(ext, true);
}

void assembler::settle_seq(unit_state& u) {
    if (!u.seq_started) return;
    std::uint64_t lost = 0;
    const std::uint64_t from = std::max(u.seq_first, u.seq_high >= seq_window ? u.seq_high - seq_window + 1 : 0);
    for (std::uint64_t s = from; s <= u.seq_high; ++s)
        if (!u.seq_seen(s)) ++lost;
    if (lost) u.counters->packets_lost.add(lost);
    u.seq_started = false;
}

assembler::open_frame* assembler::find_or_open(unit_state& u, const daq1::header& h, std::uint64_t now_ns,
                                               bool& late) {
    late = false;
    const std::uint64_t fnum = h.frame_number;
    if (u.have_emitted && fnum <= u.last_emitted) {
        late = true;
        return nullptr;
    }
    for (auto& f : u.window)
        if (f.frame_number == fnum) return &f;
    const std::uint32_t cap = _cfg.assembly.reorder_frames;
    // Keep the window bounded in frames: close the oldest as they fall out.
    bool pushed = false;
    while (!u.window.empty() && u.window.front().frame_number < fnum &&
           (u.window.size() >= cap || fnum - u.window.front().frame_number >= cap)) {
        const bool eos = u.window.front().eos;
        close_front(u, now_ns);
        pushed = true;
        if (eos) stream_closed(u);
    }
    // Complete frames that waited behind the one pushed out go with it.
    if (pushed) emit_ready(u, now_ns, fnum);
    if (u.have_emitted && fnum <= u.last_emitted) {
        late = true;
        return nullptr;
    }
    if (u.window.size() >= cap) {  // older than every open frame, and no room
        late = true;
        return nullptr;
    }
    // A frame already dropped for want of a buffer stays dropped.
    if (u.in_overflow(fnum)) return nullptr;
    // The first frame of a stream numbered from below the last one goes to
    // the writer's next file: it starts a chunk of its own.
    if (u.ended && fnum <= u.prev_last) seal(u);
    std::uint32_t block = 0;
    std::uint32_t row = 0;
    std::uint32_t rows = 0;
    if (!take_row(u, block, row, rows)) {
        // Count each frame once, even when packets of several frames interleave.
        if (!u.overflowed || fnum > u.last_overflow_frame) {
            u.overflowed = true;
            u.last_overflow_frame = fnum;
            u.add_overflow(fnum);
            u.counters->frames_overflow.add();
            u.overflow_log.on(u.counters->frames_overflow.get());
        }
        return nullptr;
    }
    u.overflow_log.off(u.counters->frames_overflow.get());
    if (u.ended) {
        // The first frame after an END_OF_STREAM: a stream numbered from
        // below where the last one ended goes to the writer as a new stream.
        if (fnum <= u.prev_last) next_stream(u, true);
        u.ended = false;
    }
    if (u.window.empty() && !u.have_emitted) u.high_frame = fnum;
    u.high_frame = std::max(u.high_frame, fnum);
    const std::uint32_t bm = u.free_bitmaps.back();
    u.free_bitmaps.pop_back();
    std::uint64_t* bits = u.bits.data() + static_cast<std::size_t>(bm) * u.bitmap_words;
    std::memset(bits, 0, u.bitmap_words * sizeof(std::uint64_t));
    open_frame f{fnum, h.timestamp_ns, now_ns, block, row, rows, u.taken - 1, 0, bm, h.packet_count, 0, false, true};
    auto pos = std::upper_bound(u.window.begin(), u.window.end(), fnum,
                                [](std::uint64_t n, const open_frame& o) { return n < o.frame_number; });
    return &*u.window.insert(pos, f);
}

// Is fnum implausible for the unit's current stream? Nothing is, before a
// stream has a frame: the first packet of a stream says where it is.
bool assembler::implausible(const unit_state& u, std::uint64_t fnum) const noexcept {
    if (!u.have_emitted && u.window.empty()) return false;
    if (fnum > u.high_frame) return fnum - u.high_frame > _cfg.assembly.max_frame_jump;
    const std::uint64_t low = u.have_emitted ? u.last_emitted : u.window.front().frame_number;
    return fnum < low && low - fnum > _cfg.assembly.reorder_frames;
}

// Holds a packet with an implausible frame number aside. Held packets that
// stay together (each within reorder_frames of the others) and reach
// restart_packets packets over at least two frames are a new stream.
void assembler::hold(unit_state& u, const daq1::header& h, const std::byte* datagram, std::uint32_t bytes,
                     std::uint64_t now_ns) {
    const std::uint64_t fnum = h.frame_number;
    const std::uint64_t near = _cfg.assembly.reorder_frames;
    if (!u.held.empty() && (fnum + near < u.held_min || fnum > u.held_max + near)) release_held(u);
    if (u.held.empty()) {
        u.held_min = u.held_max = fnum;
        u.held_data.reserve(static_cast<std::size_t>(_cfg.assembly.restart_packets) * bytes);
    }
    u.held_min = std::min(u.held_min, fnum);
    u.held_max = std::max(u.held_max, fnum);
    const bool behind = fnum < u.high_frame;
    u.held.push_back({u.held_data.size(), bytes, behind});
    u.held_data.insert(u.held_data.end(), datagram, datagram + bytes);
    if (u.held.size() < _cfg.assembly.restart_packets || u.held_max == u.held_min) return;

    // The unit consistently continues there: a new stream, as after a reset
    // of its firmware. Close the old one and replay the held packets.
    const std::uint64_t was = u.have_emitted ? u.last_emitted : u.high_frame;
    const bool back = u.held_min <= was;
    close_all(u, now_ns);
    settle_seq(u);
    next_stream(u, back);
    u.counters->stream_restarts.add();
    if (u.counters->stream_restarts.get() <= 10)
        spdlog::warn("unit {}: frame numbers continue at {} after {}: a new stream{}{}", u.id, u.held_min, was,
                     back ? " (numbering restarted; its frames go to the next file of the run)" : "",
                     u.counters->stream_restarts.get() == 10 ? "; further restarts of this unit are only counted" : "");
    auto held = std::move(u.held);
    auto data = std::move(u.held_data);
    u.held.clear();
    u.held_data.clear();
    for (const auto& p : held) {
        const std::byte* d = data.data() + p.offset;
        take_packet(u, daq1::decode_header(d), d, p.bytes, now_ns);
    }
    data.clear();
    u.held_data = std::move(data);  // keep the capacity
}

// The held packets were not a new stream: count them and forget them. Those
// behind the stream are late packets (their sequence numbers arrived); those
// ahead are implausible, and their sequence numbers are not trusted.
void assembler::release_held(unit_state& u) {
    for (const auto& p : u.held) {
        if (p.behind) {
            const auto h = daq1::decode_header(u.held_data.data() + p.offset);
            bool duplicate = false;
            track_seq(u, h.packet_seq, duplicate);
            u.counters->late.add();
        } else {
            _counters.invalid[static_cast<std::size_t>(drop_reason::frame_out_of_window)].add();
        }
    }
    u.held.clear();
    u.held_data.clear();
}

void assembler::on_packet(const std::byte* datagram, std::uint32_t bytes, std::uint64_t now_ns,
                          std::uint16_t link) {
    take_datagram(datagram, bytes, now_ns, link);
    wake_output();
}

void assembler::take_datagram(const std::byte* datagram, std::uint32_t bytes, std::uint64_t now_ns,
                              std::uint16_t link) {
    const daq1::header h = daq1::decode_header(datagram);
    drop_reason why = drop_reason::none;
    unit_state* u = unit_for(h, now_ns, why);
    if (!u) {
        _counters.invalid[static_cast<std::size_t>(why)].add();
        // The unit did send it: its sequence number is not a loss.
        if (auto* known = _units[h.unit_id].get()) {
            bool duplicate = false;
            track_seq(*known, h.packet_seq, duplicate);
        }
        return;
    }
    if (_unit_limit_log.active())
        _unit_limit_log.off(_counters.invalid[static_cast<std::size_t>(drop_reason::unit_limit)].get());
    auto& c = *u->counters;
    c.packets.add();
    c.packets_by_link[std::min<std::size_t>(link, unit_counters::max_links - 1)].add();
    c.bytes.add(bytes - static_cast<std::uint32_t>(daq1::header_bytes));
    c.last_receive_ns.set(now_ns);
    if (implausible(*u, h.frame_number)) {
        hold(*u, h, datagram, bytes, now_ns);
        return;
    }
    if (!u->held.empty()) release_held(*u);  // a plausible packet: the held ones were no new stream
    take_packet(*u, h, datagram, bytes, now_ns);
}

// A counted packet of a plausible frame: sequence tracking, then into its frame.
void assembler::take_packet(unit_state& u, const daq1::header& h, const std::byte* datagram, std::uint32_t bytes,
                            std::uint64_t now_ns) {
    auto& c = *u.counters;
    const std::uint32_t payload = bytes - static_cast<std::uint32_t>(daq1::header_bytes);
    // A packet of the stream END_OF_STREAM just closed that arrives late (its
    // sequence number was never seen) is late, not the start of a new stream.
    if (u.ended && !u.seq_started && h.frame_number <= u.prev_last &&
        u.prev_last - h.frame_number < _cfg.assembly.reorder_frames) {
        const auto diff = static_cast<std::int32_t>(h.packet_seq - static_cast<std::uint32_t>(u.seq_high));
        const std::uint64_t ext = u.seq_high + static_cast<std::int64_t>(diff);
        if (diff <= 0 && u.seq_high - ext < seq_window && ext >= u.seq_first && !u.seq_seen(ext)) {
            c.late.add();
            return;
        }
    }
    bool duplicate = false;
    track_seq(u, h.packet_seq, duplicate);
    if (duplicate) {
        c.duplicates.add();
        return;
    }
    if (h.packet_count > u.bitmap_words * 64u) {  // more packets than the unit's frames have
        _counters.invalid[static_cast<std::size_t>(drop_reason::layout_mismatch)].add();
        return;
    }
    bool late = false;
    open_frame* f = find_or_open(u, h, now_ns, late);
    if (!f) {
        if (late) c.late.add();
        return;
    }
    if (h.packet_count != f->packet_count) {
        _counters.invalid[static_cast<std::size_t>(drop_reason::layout_mismatch)].add();
        return;
    }
    std::uint64_t* bits = u.bits.data() + static_cast<std::size_t>(f->bitmap) * u.bitmap_words;
    const std::uint64_t bit = 1ull << (h.packet_index % 64);
    if (bits[h.packet_index / 64] & bit) {
        c.duplicates.add();
        return;
    }
    bits[h.packet_index / 64] |= bit;
    ++f->received;
    if (f->slice == 0) {
        if (h.packet_index + 1u < h.packet_count)
            f->slice = payload;
        else if (h.packet_index > 0)
            f->slice = h.payload_offset / h.packet_index;
    }
    f->eos |= (h.flags & daq1::flag_end_of_stream) != 0;
    f->test_pattern &= (h.flags & daq1::flag_test_pattern) != 0;
    // The one copy after the socket: into the frame's row of its block,
    // which is the row of the chunk the writer stores.
    std::memcpy(_pool.data(f->block) + std::size_t{f->row} * u.frame_bytes + h.payload_offset,
                datagram + daq1::header_bytes, payload);
    // A complete frame goes out once the frames before it are closed. The
    // END_OF_STREAM frame too: frames before it still missing packets wait
    // for them like any open frame (window, timeout), so a packet reordered
    // behind the flag still completes its frame.
    if (f->received == f->packet_count) emit_ready(u, now_ns);
}

// Hands the unit's oldest open frame on, stamped with `now_ns` (the time of
// the pass that closes it); the consumer is woken by wake_output() after the
// batch, not here.
void assembler::close_front(unit_state& u, std::uint64_t now_ns) {
    const open_frame f = u.window.front();
    u.window.erase(u.window.begin());
    u.free_bitmaps.push_back(f.bitmap);
    auto& c = *u.counters;
    if (_out.size() >= _out.capacity()) {
        // The queue is sized to hold every row of the pool (pipeline.cpp);
        // one set smaller by hand drops the frame here, as overflow.
        _pool.drop(f.block);
        u.add_overflow(f.frame_number);
        c.frames_overflow.add();
        return;
    }
    const std::uint16_t missing = static_cast<std::uint16_t>(f.packet_count - f.received);
    auto* samples = reinterpret_cast<std::uint16_t*>(_pool.data(f.block) + std::size_t{f.row} * u.frame_bytes);
    if (missing) {
        // Missing samples read 0: clear the byte ranges of the packets that never came.
        const std::uint64_t* bits = u.bits.data() + static_cast<std::size_t>(f.bitmap) * u.bitmap_words;
        auto* base = reinterpret_cast<std::byte*>(samples);
        const std::uint32_t slice = f.slice ? f.slice : u.frame_bytes;
        for (std::uint32_t i = 0; i < f.packet_count; ++i) {
            if ((bits[i / 64] >> (i % 64)) & 1u) continue;
            const std::uint64_t off = static_cast<std::uint64_t>(i) * slice;
            if (off >= u.frame_bytes) break;
            const std::uint64_t len = std::min<std::uint64_t>(i + 1u == f.packet_count ? u.frame_bytes - off : slice,
                                                              u.frame_bytes - off);
            std::memset(base + off, 0, len);
        }
        c.frames_incomplete.add();
        c.missing_packets.add(missing);
    } else {
        c.frames_complete.add();
    }
    // A gap is lost frames, except those already counted as overflow.
    const std::uint64_t overflowed = u.take_overflow_before(f.frame_number);
    if (u.have_emitted && f.frame_number > u.last_emitted + 1) {
        const std::uint64_t gap = f.frame_number - u.last_emitted - 1;
        // Saturating: a corrupted frame_number (a jump near 2^64) must not wrap
        // the counter (found by tests/fuzz; regressions/fuzz_daq1/frames-lost-wrap.bin).
        if (gap > overflowed) c.frames_lost.add(std::min(gap - overflowed, UINT64_MAX - c.frames_lost.get()));
    }
    u.have_emitted = true;
    u.last_emitted = f.frame_number;
    c.last_frame_number.set(f.frame_number);
    frame out;
    out.unit_id = u.id;
    out.missing_packets = missing;
    out.packet_count = f.packet_count;
    out.test_pattern = f.test_pattern;
    out.channels = u.frame_bytes / 2;
    out.stream = u.stream;
    out.frame_number = f.frame_number;
    out.timestamp_ns = f.timestamp_ns;
    out.assembled_ns = now_ns;
    out.samples = samples;
    out.pool = &_pool;
    out.block = f.block;
    out.row = f.row;
    out.block_rows = f.block_rows;
    out.taken = f.taken;
    [[maybe_unused]] const bool pushed = _out.try_push(out);
    assert(pushed && "checked for room above; this thread is the only producer");
    _counters.frames_out.add();
    _out_unsignalled = true;
}

void assembler::emit_ready(unit_state& u, std::uint64_t now_ns, std::uint64_t below) {
    while (!u.window.empty() && u.window.front().frame_number < below &&
           u.window.front().received == u.window.front().packet_count) {
        const bool eos = u.window.front().eos;
        close_front(u, now_ns);
        if (eos) stream_closed(u);
    }
}

// An END_OF_STREAM frame was closed. Frames after it (already open) belong
// to the unit's next stream, numbered on from it. When nothing is open, the
// stream is over: its loss is settled and the next packet may start a new
// stream anywhere.
void assembler::stream_closed(unit_state& u) {
    if (!u.window.empty()) return;
    settle_seq(u);
    next_stream(u, false);  // whether it goes back is known at its first frame (find_or_open)
    u.ended = true;
    u.prev_last = u.last_emitted;
}

void assembler::close_all(unit_state& u, std::uint64_t now_ns) {
    while (!u.window.empty()) close_front(u, now_ns);
}

void assembler::expire(std::uint64_t now_ns) {
    expire_units(now_ns);
    wake_output();
}

void assembler::expire_units(std::uint64_t now_ns) {
    for (auto* u : _active) {
        bool closed = false;
        while (!u->window.empty() && now_ns - u->window.front().opened_ns > _timeout_ns) {
            const bool eos = u->window.front().eos;
            close_front(*u, now_ns);
            closed = true;
            if (eos) stream_closed(*u);
        }
        if (closed) emit_ready(*u, now_ns);
        // A unit gone quiet gives its block up: its frames so far can be
        // written and the block reused (a run that ended, a flood of unit ids).
        if (u->has_block && u->window.empty() && now_ns - u->last_ns() > _timeout_ns) seal(*u);
        // Held packets that no new stream followed within the timeout.
        if (!u->held.empty() && now_ns - u->last_ns() > _timeout_ns) release_held(*u);
    }
}

void assembler::flush_all() {
    const std::uint64_t now = common::monotonic_ns();
    for (auto* u : _active) {
        release_held(*u);  // first: late ones' sequence numbers are not lost
        close_all(*u, now);
        settle_seq(*u);
        seal(*u);  // every block goes back to the pool once the writer is done
    }
    wake_output();
}

// ---- blocks ----

std::uint32_t assembler::max_frame_bytes() const noexcept {
    return static_cast<std::uint32_t>(std::min<std::size_t>(_cfg.assembly.max_frame_bytes, _pool.block_bytes()));
}

// The next row of the unit's current block, a new block when it has none
// (or it is full); false when the pool has no block free.
bool assembler::take_row(unit_state& u, std::uint32_t& block, std::uint32_t& row, std::uint32_t& rows) {
    // Where the writer's file chunks start (block_pool::phase), a new block starts.
    if (u.has_block && u.next_row != 0 && (u.taken + _pool.phase(u.id)) % u.block_rows == 0) seal(u);
    if (!u.has_block) {
        const auto b = _pool.acquire();
        if (!b) return false;
        u.has_block = true;
        u.block = *b;
        u.next_row = 0;
        // A chunk's rows, as the writer stores them; never more than the
        // block holds (a pool built with smaller blocks: the writer copies).
        u.block_rows = std::min<std::uint32_t>(chunk_rows(_cfg.storage.chunk_bytes, u.frame_bytes / 2),
                                               static_cast<std::uint32_t>(_pool.block_bytes() / u.frame_bytes));
    }
    _pool.ref(u.block);
    block = u.block;
    rows = u.block_rows;
    row = u.next_row++;
    ++u.taken;
    if (u.next_row == u.block_rows) seal(u);
    return true;
}

// The unit's frames take no more rows from its current block; the block
// goes back to the pool once its frames are written.
void assembler::seal(unit_state& u) {
    if (!u.has_block) return;
    u.has_block = false;
    _pool.drop(u.block);
}


// ---- telemetry ----

namespace {

using telemetry::kind;

// One row per unit counter: its series (label "unit", plus `state` where set).
struct unit_series {
    telemetry::descriptor d;
    counter unit_counters::*member;
    const char* state = nullptr;
};
const telemetry::descriptor frames_total{
    "daq_frames_total",
    "Frames by unit and state: complete, incomplete (stored with missing packets), lost (frame_number gaps), "
    "overflow (no frame buffer free)",
    kind::counter, "unit,state"};
const unit_series unit_table[] = {
    {{"daq_unit_stream_restarts_total",
      "New streams of a unit not announced by END_OF_STREAM: its frame numbers restarted or jumped "
      "(docs/PROTOCOL.md \"Streams\")",
      kind::counter, "unit"},
     &unit_counters::stream_restarts},
    {{"daq_packets_lost_total", "Packets lost (packet_seq gaps), by unit", kind::counter, "unit"},
     &unit_counters::packets_lost},
    {{"daq_packets_duplicate_total", "Duplicate packets, by unit", kind::counter, "unit"}, &unit_counters::duplicates},
    {{"daq_packets_late_total", "Packets of frames already closed, by unit", kind::counter, "unit"},
     &unit_counters::late},
    {frames_total, &unit_counters::frames_complete, "complete"},
    {frames_total, &unit_counters::frames_incomplete, "incomplete"},
    {frames_total, &unit_counters::frames_lost, "lost"},
    {frames_total, &unit_counters::frames_overflow, "overflow"},
    {{"daq_unit_bytes_received_total", "Payload bytes of the valid packets that reached frame assembly, by unit",
      kind::counter, "unit"},
     &unit_counters::bytes},
    {{"daq_unit_last_frame_number", "The newest frame number seen from the unit", kind::gauge, "unit"},
     &unit_counters::last_frame_number},
};
const telemetry::descriptor packets_received{
    "daq_packets_received_total", "Valid packets that reached frame assembly, by link and unit (duplicates included)",
    kind::counter, "link,unit"};
const telemetry::descriptor unit_channels{"daq_unit_channels", "Channels per frame of the unit", kind::gauge, "unit"};

}  // namespace

void assembler::report(telemetry::snapshot& out) const {
    const std::size_t links = std::max<std::size_t>(1, _cfg.acquisition.listen.size());
    constexpr std::size_t max_links = unit_counters::max_links;
    // Every family is listed (HELP, TYPE) before any unit has been seen.
    out.of(packets_received);
    for (const auto& row : unit_table) out.of(row.d);
    out.of(unit_channels);
    const std::uint32_t units = unit_count();
    for (std::uint32_t i = 0; i < units; ++i) {
        const auto& u = unit_at(i);
        const bool exported = u.retired.get() == 0;
        const std::string id = std::to_string(u.unit_id);
        for (const auto& row : unit_table) {
            telemetry::label_set l{{"unit", id}};
            if (row.state) l.emplace_back("state", row.state);
            out.add(row.d, std::move(l), static_cast<double>((u.*row.member).get()), exported);
        }
        out.add(unit_channels, {{"unit", id}}, u.channels.load(std::memory_order_relaxed), exported);
        for (std::size_t l = 0; l < std::min(links, max_links); ++l) {
            // Links beyond the last index are counted in the last one.
            const std::string link = l + 1 == max_links && links > max_links ? fmt::format("{}+", l) : std::to_string(l);
            out.add(packets_received, {{"link", link}, {"unit", id}}, static_cast<double>(u.packets_by_link[l].get()),
                    exported);
        }
    }
    acquisition::report_invalid(out, _counters.invalid);
}

}  // namespace daqd::processing
