#pragma once
// live_tap: the latest frame and the running per-channel sum of the raw
// samples ("dose", until calibration exists) of every unit, for live views
// (the web status page and /api/v1/units/<id>/live).
//
// Owner: the pipeline. Threads: the writer thread is the only writer (it calls
// on_frame() for every frame, see frame_observer); any thread may read at any
// time. Nothing takes a lock:
//  - per frame the writer adds the samples to the unit's dose accumulator
//    (writer-thread memory) and counts the frame;
//  - at most every `publish_interval` per unit it copies the latest frame and
//    the dose into one of two buffers (the one readers are not pointed at),
//    each guarded by a sequence counter (seqlock, stores and loads are
//    relaxed atomics), then flips the published index;
//  - a reader copies the published buffer and retries when its sequence
//    counter changed meanwhile. The writer never waits for readers.
// Units with more than max_channels channels are counted but not published.
//
// With the `live` processing stage (processing.stages), the processing
// thread's live_view (live_view.hpp) is attached before the writer starts:
// read() then returns its publication — the latest frame, its calibrated row
// and the running calibrated dose of the current run — and on_frame() only
// counts frames (no per-frame sum on the writer thread).
#include "daqd/processing/frame_observer.hpp"
#include "daqd/processing/live_view.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <vector>

namespace daqd::processing {

struct live_frame {
    std::uint16_t unit_id = 0;
    std::uint32_t channels = 0;
    std::uint64_t frame_number = 0;
    std::uint64_t timestamp_ns = 0;      // the unit's clock at the trigger
    std::uint16_t missing_packets = 0;   // of that frame
    std::uint64_t dose_frames = 0;       // frames summed into `dose`
    std::uint64_t published_ns = 0;      // monotonic clock when it was published
    std::vector<std::uint16_t> samples;  // the latest frame (published), channels values
    // The running dose per channel: with an attached live_view and the dose
    // stage, the float64 sum of calibrated values since the run started
    // (dose_kind "calibrated"); otherwise the sum of the raw samples since
    // daqd started ("raw"); empty with a live_view but no dose stage ("none").
    std::vector<double> dose;
    const char* dose_kind = "raw";
    std::vector<float> calibrated;       // the latest frame calibrated (attached live_view with calibrate), else empty
};

class live_tap final : public frame_observer {
public:
    static constexpr std::uint32_t max_channels = 1u << 18;  // larger units: no live view (memory)

    explicit live_tap(std::chrono::nanoseconds publish_interval = std::chrono::milliseconds(100));
    ~live_tap() override;
    live_tap(const live_tap&) = delete;
    live_tap& operator=(const live_tap&) = delete;

    // Before the writer thread starts: read() serves `view`'s publications.
    void attach(const live_view* view) noexcept { _view = view; }

    // Writer thread.
    void on_frame(const frame& f, bool written) noexcept override;
    void on_unwritten(std::uint16_t unit_id, std::uint64_t frames) noexcept override;

    // ---- readers, any thread ----
    [[nodiscard]] std::uint32_t unit_count() const noexcept { return _count.load(std::memory_order_acquire); }
    // Unit ids in order of appearance, i < unit_count().
    [[nodiscard]] std::uint16_t unit_id_at(std::uint32_t i) const noexcept;
    [[nodiscard]] bool has_unit(std::uint16_t unit_id) const noexcept;
    // Frames of the unit appended to a run (over all runs), frames seen.
    [[nodiscard]] std::uint64_t frames_written(std::uint16_t unit_id) const noexcept;
    [[nodiscard]] std::uint64_t frames_seen(std::uint16_t unit_id) const noexcept;
    // Copies the latest published frame and dose of `unit_id`. False when the
    // unit has published nothing yet (unknown, too large, or no frame yet).
    bool read(std::uint16_t unit_id, live_frame& out) const;

private:
    struct unit_slot;
    void publish(unit_slot& u, const frame& f, std::uint64_t now_ns) noexcept;

    std::uint64_t _interval_ns;
    const live_view* _view = nullptr;
    std::unique_ptr<std::atomic<unit_slot*>[]> _by_id;   // published slots by unit id
    std::unique_ptr<std::atomic<unit_slot*>[]> _list;    // in order of appearance
    std::atomic<std::uint32_t> _count{0};
    std::vector<std::unique_ptr<unit_slot>> _owned;      // writer thread (and the destructor)
};

}  // namespace daqd::processing
