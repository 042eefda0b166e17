#pragma once
// The processing thread: takes frames from the assembler's queue in batches,
// runs the configured stages on each batch, and hands the frames on to the
// writer's queue.
//
//   assembler ──frame queue──▶ processor (stages on batches) ──frame queue──▶ writer
//
// Owned by the pipeline, which creates it only when `processing.stages` is
// not empty (or for a pedestal run). One thread (a common::worker: start(),
// or the caller's with worker().start_pumped() and worker().pump()) runs the
// stages; counters, backend_name() and pedestal progress may be read from any
// thread. The output queue holds as many frames as the input queue, which
// holds every row the block pool has, so pushing never fails and the
// processor never blocks: when it falls behind, frames wait in its input
// queue (the peak is counted in `backlog_peak`) and, once the pool is
// exhausted, the assembler counts `frames_overflow` — the receiver is never
// held up. Calibrated rows go into the calibrated area of the frame's own
// block, same row (block_pool.hpp).
#include "daqd/common/telemetry.hpp"
#include "daqd/common/event.hpp"
#include "daqd/common/spsc_queue.hpp"
#include "daqd/common/worker.hpp"
#include "daqd/processing/backend.hpp"
#include "daqd/processing/calibration.hpp"
#include "daqd/processing/frame.hpp"
#include "daqd/processing/block_pool.hpp"
#include "daqd/processing/live_view.hpp"
#include "daqd/processing/stage.hpp"

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace daqd::processing {

using telemetry::counter;

struct processor_options {
    std::vector<std::string> stages;        // subsequence of calibrate, dose, live (config::stage_order_error)
    std::string backend = "auto";           // "auto", "cpu", "cuda"
    std::shared_ptr<const calibration_set> calibration;  // null: none (identity constants)
    threshold_policy threshold;
    std::size_t batch_frames = 64;          // most frames per batch
    std::uint64_t pedestal_frames = 0;      // > 0: a pedestal run; the only stage is `pedestal`
    std::uint32_t max_frame_bytes = 65536;  // largest frame (sizes the backend's batch buffers)
};

struct processor_counters {
    counter frames;        // frames that went through the stages
    counter batches;
    counter busy_ns;       // time spent in the stages
    counter backlog_peak;  // most frames found waiting in the input queue at once
};

class processor final : private common::worker_body {
public:
    // Chooses the backend (logs the choice once) and builds the stages.
    // Throws std::runtime_error when the backend cannot be had ("cuda"
    // without CUDA) or the stages are not valid. `live` may be null when no
    // `live` stage is configured.
    processor(const processor_options& options, common::queue_set<frame> in,
              common::wake_event& in_ready, common::spsc_queue<frame>& out, common::wake_event& out_ready,
              live_view* live);
    ~processor();
    processor(const processor&) = delete;
    processor& operator=(const processor&) = delete;

    void start() { _worker.start(); }
    // Call after the assembler stopped: processes everything still queued,
    // then joins the thread.
    void stop() noexcept { _worker.stop(); }
    [[nodiscard]] common::worker& worker() noexcept { return _worker; }

    // Single-threaded use (tests): processes the frames queued now, in
    // batches; returns how many.
    std::size_t poll();
    // The thread is idle (tests: call after poll()); `force`: publish what
    // the live stage holds aside now.
    void tick(std::uint64_t now_ns, bool force);

    // Any thread: zero the running dose before the next batch (a run starts).
    void request_dose_reset() noexcept { _dose_reset.fetch_add(1, std::memory_order_release); }
    // Any thread: calibrate with `policy` from the next batch on, frames
    // stamped with `epoch` (frame::threshold_epoch). Logged once applied.
    void request_threshold(const threshold_policy& policy, std::uint8_t epoch);
    // The epoch of the threshold batches are calibrated with now.
    [[nodiscard]] std::uint8_t threshold_epoch() const noexcept { return _epoch.load(std::memory_order_acquire); }

    [[nodiscard]] std::string_view backend_name() const noexcept;  // "cpu" or "cuda"
    // Any thread: the counters into `out` (descriptors in processor.cpp).
    void report(telemetry::snapshot& out) const;
    [[nodiscard]] const std::vector<std::string>& stage_names() const noexcept { return _stage_names; }
    [[nodiscard]] const processor_counters& counters() const noexcept { return _counters; }
    [[nodiscard]] bool calibrates() const noexcept { return _calibrates; }
    // The pedestal stage of a pedestal run (null otherwise).
    [[nodiscard]] const pedestal_stage* pedestal() const noexcept { return _pedestal; }

private:
    // The thread's body (common::worker_body).
    bool pass() override;
    bool input_waiting() override { return !_in.empty(); }
    [[nodiscard]] std::chrono::microseconds sleep_limit() const override;
    void drain() override;
    std::size_t run_batch(std::size_t n);  // frames taken from the input
    unit_context& add_unit(const frame& f);

    common::queue_set<frame> _in;  // one queue per receive shard
    common::wake_event& _in_ready;
    common::spsc_queue<frame>& _out;
    common::wake_event& _out_ready;
    std::size_t _batch_frames;
    std::unique_ptr<backend> _backend;
    std::vector<std::unique_ptr<stage>> _stages;
    std::vector<std::string> _stage_names;
    pedestal_stage* _pedestal = nullptr;
    bool _calibrates = false;
    std::vector<frame> _batch;                                // capacity batch_frames
    // Frames of a unit whose frame size changed after its first frame (the
    // assembler relearned it): the stages' per-unit state (constants, dose,
    // pedestal sums) has the first size, so they pass on uncalibrated.
    std::vector<frame> _passing;                              // capacity batch_frames
    std::vector<std::unique_ptr<unit_context>> _units;        // by unit id
    std::vector<unit_context*> _units_by_id;                  // 65536 pointers, for frame_batch
    std::vector<unit_context*> _active;
    std::atomic<std::uint64_t> _dose_reset{0};
    std::uint64_t _dose_reset_seen = 0;
    // A threshold asked for (request_threshold), taken before the next batch.
    std::mutex _threshold_mutex;
    std::optional<std::pair<threshold_policy, std::uint8_t>> _threshold_wanted;  // guarded by _threshold_mutex
    std::atomic<bool> _threshold_pending{false};
    std::atomic<std::uint8_t> _epoch{0};
    calibrate_stage* _calibrate = nullptr;
    void apply_threshold();
    bool _failed = false;
    processor_counters _counters;
    common::worker _worker{"daqd-process", _in_ready, *this};  // last: its thread ends before the rest goes
};

}  // namespace daqd::processing
