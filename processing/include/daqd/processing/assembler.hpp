#pragma once
// Frame assembly: rebuilds frames from the packets in the packet ring(s), per
// unit, with a bounded reordering window, and hands complete or closed
// frames to the next stage in ascending frame_number order per unit.
//
// Owned by the pipeline. One thread (the assembler thread, a common::worker
// started by start(), or the caller's with worker().start_pumped() and
// worker().pump()) consumes the rings and produces into the output queue; it
// is the only thread that acquires from the block_pool. Counters may be read
// from any thread at any time (relaxed atomics written by the assembler
// thread only).
//
// What is counted (docs/PROTOCOL.md "Loss, reordering and duplicates"):
//  - lost packets: gaps in packet_seq, settled once a sequence number leaves a
//    window of `seq_window` packets (so reordering within it is not loss), and
//    when the stream ends (END_OF_STREAM or stop); wrap at 2^32 handled;
//  - duplicates: a packet_seq already seen, or a packet_index already filled;
//  - late: a packet of a frame already closed;
//  - frames complete / incomplete (kept, missing samples 0) / lost (gaps in
//    frame_number between stored frames) / overflow (no block free in the
//    pool).
//
// Where the bytes go (block_pool.hpp): each payload is copied once, from its
// ring slot into its frame's row of a block; a unit's frames take the rows
// of its current block in the order they open, so frames arriving complete
// and in order fill a block that is exactly the chunk the writer stores.
//
// What one unit (or a spoofed packet) cannot do (docs/PROTOCOL.md "Streams"):
//  - move its window or its loss base with one packet: a frame_number more
//    than assembly.max_frame_jump ahead of its stream, or more than
//    reorder_frames behind it, is held aside (at most restart_packets
//    packets). A plausible packet releases them (counted late, or dropped as
//    frame_out_of_window). Only restart_packets held packets spanning two
//    frames, with no plausible packet between, start a new stream there,
//    replaying the held packets: a restart of the unit's frame numbers, not
//    2^40 lost frames. A stream whose numbers go back gets the next
//    `stream` index, so the writer can keep rows ascending per file.
//  - grow the server without bound: at most units.max_learned learned units
//    at once (a learned unit silent for units.learned_idle_s gives its slot
//    up), per-unit memory sized by the unit's own packet count.
//  - be dropped forever after changing its frame size: a learned unit is
//    relearned after units.relearn_quiet without a frame of the old size.
#include "daqd/acquisition/daq1.hpp"
#include "daqd/acquisition/packet_ring.hpp"
#include "daqd/acquisition/receiver.hpp"
#include "daqd/common/event.hpp"
#include "daqd/common/log_once.hpp"
#include "daqd/common/spsc_queue.hpp"
#include "daqd/common/worker.hpp"
#include "daqd/config/config.hpp"
#include "daqd/processing/frame.hpp"
#include "daqd/processing/block_pool.hpp"

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

namespace daqd::processing {

using telemetry::counter;

struct unit_counters {
    std::uint16_t unit_id = 0;
    std::atomic<std::uint32_t> channels{0};  // changes when a learned unit is relearned
    counter packets;         // valid packets that reached the assembler (duplicates included)
    counter bytes;           // their payload bytes
    counter packets_lost;    // from packet_seq gaps
    counter duplicates;
    counter late;
    counter frames_complete;
    counter frames_incomplete;
    counter frames_lost;     // gaps in frame_number
    counter frames_overflow; // dropped: no frame buffer free (the writer is behind)
    counter missing_packets; // summed over incomplete frames
    counter stream_restarts; // new streams that did not follow an END_OF_STREAM (numbering restarted or jumped)
    counter stream;          // index of the unit's current stream (frame::stream)
    counter retired;         // 1 while the unit's learned slot is given up (silent); its counters stay
    counter last_frame_number;
    counter last_receive_ns;
    // Valid packets by the link (listen endpoint) they came in on; links
    // beyond the last index are counted in the last one.
    static constexpr std::size_t max_links = 16;
    std::array<counter, max_links> packets_by_link;
};

// Which receive shard owns each unit id (acquisition.shards): the first
// shard whose assembler sees a unit claims it, for as long as daqd runs;
// its packets arriving on a link of another shard are dropped there
// (unit_on_other_shard, logged once per unit). Shared by the shards'
// assemblers; any thread.
class unit_claims {
public:
    unit_claims() : _owner(std::make_unique<std::atomic<std::uint16_t>[]>(max_units)) {}
    // True when `shard` owns the unit now (it claimed it, now or before).
    bool claim(std::uint16_t unit, std::uint16_t shard) noexcept {
        std::uint16_t expected = 0;
        const auto mine = static_cast<std::uint16_t>(shard + 1);
        return _owner[unit].compare_exchange_strong(expected, mine, std::memory_order_acq_rel) || expected == mine;
    }
    // The owning shard, or -1.
    [[nodiscard]] int owner(std::uint16_t unit) const noexcept {
        return static_cast<int>(_owner[unit].load(std::memory_order_acquire)) - 1;
    }

private:
    std::unique_ptr<std::atomic<std::uint16_t>[]> _owner;
};

struct assembler_counters {
    std::array<counter, acquisition::daq1::drop_reason_count> invalid;  // reasons decided here
    counter frames_out;
};

class assembler final : private common::worker_body {
public:
    static constexpr std::uint32_t seq_window = 8192;  // packets of reordering tolerated by loss counting

    // `claims`, `shard`: with several receive shards, the table they share
    // and this assembler's shard (null: one shard, no claims).
    assembler(const config::config& cfg, std::vector<acquisition::packet_ring*> rings, common::wake_event& in_ready,
              block_pool& pool, common::spsc_queue<frame>& out, common::wake_event& out_ready,
              unit_claims* claims = nullptr, std::uint16_t shard = 0);
    ~assembler();
    assembler(const assembler&) = delete;
    assembler& operator=(const assembler&) = delete;

    void start() { _worker.start(); }
    // Drains the rings (call after the receiver stopped), closes every open
    // frame, settles loss counts, and joins the thread.
    void stop() noexcept { _worker.stop(); }
    [[nodiscard]] common::worker& worker() noexcept { return _worker; }

    // ---- for tests and single-threaded use: the thread's body in pieces ----
    // Each is one batch: the frames it hands on carry `now_ns` as their
    // assembled_ns, and the output's consumer is woken once at its end.
    // Processes what the rings hold now; returns the number of slots consumed.
    std::size_t poll(std::uint64_t now_ns);
    // Closes frames older than the timeout.
    void expire(std::uint64_t now_ns);
    // Closes every open frame and settles the sequence windows (reads the clock once).
    void flush_all();
    // Handles one datagram (header already validated by the receiver).
    void on_packet(const std::byte* datagram, std::uint32_t bytes, std::uint64_t now_ns, std::uint16_t link = 0);

    // ---- readers, any thread ----
    [[nodiscard]] std::uint32_t unit_count() const noexcept { return _unit_count.load(std::memory_order_acquire); }
    [[nodiscard]] const unit_counters& unit_at(std::uint32_t i) const noexcept {
        return *_unit_list[i].load(std::memory_order_acquire);
    }
    [[nodiscard]] const assembler_counters& counters() const noexcept { return _counters; }
    // The units' counters into `out` (descriptors in assembler.cpp). Units
    // whose learned slot was given up keep their counters but are left out
    // of /metrics (exported false), so its series stay bounded.
    void report(telemetry::snapshot& out) const;

private:
    struct open_frame;
    struct unit_state;
    unit_state* unit_for(const acquisition::daq1::header& h, std::uint64_t now_ns,
                         acquisition::daq1::drop_reason& why);
    unit_state* learn(const acquisition::daq1::header& h, bool configured);
    bool reclaim_one(std::uint64_t now_ns);
    void relearn(unit_state& u, const acquisition::daq1::header& h, std::uint64_t now_ns);
    void next_stream(unit_state& u, bool back);
    bool implausible(const unit_state& u, std::uint64_t fnum) const noexcept;
    void hold(unit_state& u, const acquisition::daq1::header& h, const std::byte* datagram, std::uint32_t bytes,
              std::uint64_t now_ns);
    void release_held(unit_state& u);
    void take_packet(unit_state& u, const acquisition::daq1::header& h, const std::byte* datagram,
                     std::uint32_t bytes, std::uint64_t now_ns);
    void stream_closed(unit_state& u);
    void track_seq(unit_state& u, std::uint32_t seq, bool& duplicate);
    void settle_seq(unit_state& u);
    open_frame* find_or_open(unit_state& u, const acquisition::daq1::header& h, std::uint64_t now_ns, bool& late);
    void close_front(unit_state& u, std::uint64_t now_ns);
    void emit_ready(unit_state& u, std::uint64_t now_ns, std::uint64_t below = ~0ull);
    void close_all(unit_state& u, std::uint64_t now_ns);
    bool take_row(unit_state& u, std::uint32_t& block, std::uint32_t& row, std::uint32_t& rows);
    void seal(unit_state& u);
    [[nodiscard]] std::uint32_t max_frame_bytes() const noexcept;
    // The batch pieces without the wake-up; wake_output() ends every batch.
    std::size_t take_rings(std::uint64_t now_ns);
    void take_datagram(const std::byte* datagram, std::uint32_t bytes, std::uint64_t now_ns, std::uint16_t link);
    void expire_units(std::uint64_t now_ns);
    void wake_output() noexcept;
    // The thread's body (common::worker_body).
    bool pass() override;
    bool input_waiting() override;
    [[nodiscard]] std::chrono::microseconds sleep_limit() const override;
    void drain() override;

    const config::config& _cfg;
    std::vector<acquisition::packet_ring*> _rings;
    common::wake_event& _in_ready;
    block_pool& _pool;
    common::spsc_queue<frame>& _out;
    common::wake_event& _out_ready;
    std::vector<std::unique_ptr<unit_state>> _units;           // by unit id, assembler thread only
    std::vector<unit_state*> _active;                          // units seen, assembler thread only
    std::unique_ptr<std::atomic<unit_counters*>[]> _unit_list;  // published in order of appearance
    std::atomic<std::uint32_t> _unit_count{0};
    std::vector<std::uint32_t> _expected_bytes;                // configured frame_bytes by unit id (0: none)
    std::vector<std::unique_ptr<unit_counters>> _counters_of;  // by unit id, kept when a slot is reclaimed
    std::uint32_t _learned = 0;                                 // learned units holding state now
    unit_claims* _claims;
    std::uint16_t _shard;
    std::vector<bool> _claim_warned;  // by unit id
    common::edge_logger _unit_limit_log{"units.max_learned reached: packets of new unit ids are dropped"};
    assembler_counters _counters;
    std::uint64_t _timeout_ns;
    std::uint64_t _last_expire_ns = 0;
    bool _out_unsignalled = false;  // frames queued since the consumer was last woken
    common::worker _worker{_shard == 0 ? std::string("daqd-assemble") : "daqd-assemble-" + std::to_string(_shard),
                           _in_ready, *this};  // last: its thread ends before the rest goes
};

}  // namespace daqd::processing
