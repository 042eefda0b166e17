#pragma once
// Processing stages: steps that run on batches of frames between assembly
// and the writer, in the order `processing.stages` lists them.
//
//   calibrate  per channel (raw - pedestal) x gain, values below the
//              channel's threshold set to 0; float32 into frame::calibrated
//   dose       per unit and channel, the float64 running sum of calibrated
//              values (since the current run started)
//   live       at most once per publication interval per unit, copies the
//              unit's latest frame and running dose into the live_view
//   pedestal   (the pedestal run only) per channel mean and standard
//              deviation of the raw samples over the first N complete frames
//              of each unit (Welford, float64)
//
// The arithmetic of calibrate and dose runs on the backend (CPU or CUDA):
// when dose follows calibrate, as the order rules require, the two are one
// pass over the data (one fused kernel on CUDA) and the dose stage only keeps
// count. Order rules (checked by the configuration): each stage at most once,
// in the order calibrate, dose, live; dose needs calibrate.
//
// Owned by the processor; every call on the processing thread (tests: one
// thread). Per-unit state is created in add_unit(), once per unit, before
// the unit's first batch; run() does not allocate, lock (except `live`, once
// per publication) or log.
#include "daqd/processing/backend.hpp"
#include "daqd/processing/calibration.hpp"
#include "daqd/processing/frame.hpp"
#include "daqd/processing/live_view.hpp"

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace daqd::processing {

// What the processing thread knows about a unit (one per unit id, created
// on its first frame).
struct unit_context {
    std::uint16_t unit_id = 0;
    std::uint32_t channels = 0;           // of the unit's first frame; stages size their state by it
    bool size_changed = false;            // later frames came with another size (they skip the stages)
    unit_constants constants;             // filled when calibrating
    std::uint64_t frames = 0;             // frames processed
    std::uint64_t dose_frames = 0;        // frames in the running dose since the last reset
    std::uint64_t next_live_ns = 0;       // the live stage's next publication
    live_view::slot* live = nullptr;
    std::vector<double> dose_scratch;     // the live stage's copy of the running dose
    // The live stage's held-back newest frame (see live_stage).
    std::uint64_t live_batch = 0;
    bool live_staged = false;
    frame live_staged_frame;
    std::vector<std::uint16_t> live_staged_raw;
    std::vector<float> live_staged_calibrated;
};

// One batch: consecutive frames taken from the assembler's queue (any mix of
// units, each unit's frames in order), plus what the stages need to find
// their per-unit state.
struct frame_batch {
    std::span<frame> frames;
    std::uint64_t now_ns = 0;                     // one clock read per batch
    bool queue_empty = false;                     // no frame was waiting behind this batch
    unit_context* const* units_by_id = nullptr;   // 65536 entries; set for every unit in `frames`

    [[nodiscard]] unit_context& unit_of(const frame& f) const noexcept { return *units_by_id[f.unit_id]; }
};

class stage {
public:
    virtual ~stage() = default;
    [[nodiscard]] virtual std::string_view name() const noexcept = 0;
    // A new unit: set up its per-unit state (may allocate).
    virtual void add_unit(unit_context& /*u*/) {}
    // Runs over every frame of the batch.
    virtual void run(frame_batch& batch) = 0;
    // The processing thread is idle (nothing queued); `force`: it is stopping.
    virtual void tick(std::uint64_t /*now_ns*/, bool /*force*/) {}
};

// calibrate: backend.calibrate() into each frame's calibrated row; with
// `with_dose` the backend adds the rows to the running dose in the same pass.
class calibrate_stage final : public stage {
public:
    calibrate_stage(backend& b, bool with_dose, threshold_policy policy,
                    std::shared_ptr<const calibration_set> calibration);
    std::string_view name() const noexcept override { return "calibrate"; }
    void add_unit(unit_context& u) override;  // resolves and uploads the unit's constants (logs identity once)
    void run(frame_batch& batch) override;
    // A new threshold for every unit from now on: each unit's constants
    // resolved again and handed to the backend (between two batches).
    void set_policy(const threshold_policy& policy, std::span<unit_context* const> units);
    [[nodiscard]] const threshold_policy& policy() const noexcept { return _policy; }

private:
    backend& _backend;
    bool _with_dose;
    threshold_policy _policy;
    std::shared_ptr<const calibration_set> _calibration;
};

// dose: the backend already summed (fused with calibrate); counts the frames
// of each unit's running dose.
class dose_stage final : public stage {
public:
    std::string_view name() const noexcept override { return "dose"; }
    void run(frame_batch& batch) override;
};

// live: publishes each unit's newest frame of the batch when its interval
// has passed (with the running dose read from the backend when `dose`): one
// copy per unit per interval while frames keep coming. So that the view ends
// on the last frame when a unit pauses or stops, the newest unpublished frame
// of a batch after which nothing is queued (the thread is about to idle, not
// the hot path) is copied aside and published from tick() when its interval
// has passed (or at stop).
class live_stage final : public stage {
public:
    live_stage(live_view& view, backend* dose_from, bool calibrated);
    std::string_view name() const noexcept override { return "live"; }
    void add_unit(unit_context& u) override;
    void run(frame_batch& batch) override;
    void tick(std::uint64_t now_ns, bool force) override;

private:
    void publish(unit_context& u, const frame& f, std::uint64_t now_ns);
    live_view& _view;
    backend* _dose_from;  // null: no dose stage
    bool _calibrated;
    std::uint64_t _interval_ns;
    std::uint64_t _batches = 0;
    std::vector<unit_context*> _staged;  // units holding a frame aside (capacity: every unit)
};

// pedestal: Welford mean and variance per channel, float64, of the first
// `frames_wanted` complete frames of each unit (incomplete frames, whose
// missing samples are 0, are skipped and counted).
class pedestal_stage final : public stage {
public:
    explicit pedestal_stage(std::uint64_t frames_wanted);
    ~pedestal_stage() override;
    std::string_view name() const noexcept override { return "pedestal"; }
    void add_unit(unit_context& u) override;
    void run(frame_batch& batch) override;

    // ---- any thread ----
    [[nodiscard]] std::uint32_t units_seen() const noexcept { return _seen.load(std::memory_order_acquire); }
    [[nodiscard]] std::uint32_t units_complete() const noexcept { return _complete.load(std::memory_order_acquire); }
    [[nodiscard]] std::uint64_t frames_wanted() const noexcept { return _wanted; }

    // ---- after the processing thread stopped ----
    // pedestal = mean, noise = sample standard deviation (n - 1), gain = 1,
    // for every unit with at least 2 frames; `frames` = frames used.
    [[nodiscard]] calibration_set result() const;
    // Complete frames taken and incomplete frames skipped, per unit id.
    struct unit_progress {
        std::uint16_t unit_id;
        std::uint64_t frames;
        std::uint64_t skipped_incomplete;
    };
    [[nodiscard]] std::vector<unit_progress> progress() const;

private:
    struct accumulator;
    std::uint64_t _wanted;
    std::vector<std::unique_ptr<accumulator>> _by_id;   // 65536
    std::vector<accumulator*> _order;
    std::atomic<std::uint32_t> _seen{0};
    std::atomic<std::uint32_t> _complete{0};
};

}  // namespace daqd::processing
