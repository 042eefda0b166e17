#pragma once
// live_tap: the writer's frame observer. Counts every frame per unit (seen,
// and appended to a run: daq_frames_written_total), and, when no `live`
// processing stage runs, feeds the live view with raw frames: at most once
// per publication interval per unit it publishes the frame and adds its
// samples to the unit's raw dose (the sum of the published frames since
// daqd started; dose_kind "raw"). Nothing is done per sample per frame.
//
// Owner: the pipeline. Threads: the writer thread calls on_frame() for every
// frame (frame_observer); any thread reads. With a live stage, attach() its
// view before the writer starts: read() then serves that view and on_frame()
// only counts.
#include "daqd/common/telemetry.hpp"
#include "daqd/processing/frame_observer.hpp"
#include "daqd/processing/live_view.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <vector>

namespace daqd::processing {

class live_tap final : public frame_observer {
public:
    static constexpr std::uint32_t max_channels = live_view::max_channels;

    explicit live_tap(std::chrono::nanoseconds publish_interval = std::chrono::milliseconds(100));
    ~live_tap() override;
    live_tap(const live_tap&) = delete;
    live_tap& operator=(const live_tap&) = delete;

    // Before the writer thread starts: read() serves `view` (the live stage's).
    void attach(const live_view* view) noexcept { _attached = view; }

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
    // True when read() can serve the unit (a live view slot exists).
    [[nodiscard]] bool has_live(std::uint16_t unit_id) const noexcept;
    // Copies the unit's latest publication. False when it has published
    // nothing yet (unknown, too large, or no frame yet).
    bool read(std::uint16_t unit_id, live_frame& out) const;
    // Any thread: frames written per unit and which units have a live view.
    void report(telemetry::snapshot& out) const;

private:
    struct unit_slot;

    std::uint64_t _interval_ns;
    live_view _raw;                        // published by on_frame() when nothing is attached
    const live_view* _attached = nullptr;  // the live stage's view
    std::unique_ptr<std::atomic<unit_slot*>[]> _by_id;
    std::unique_ptr<std::atomic<unit_slot*>[]> _list;  // in order of appearance
    std::atomic<std::uint32_t> _count{0};
    std::vector<std::unique_ptr<unit_slot>> _owned;  // writer thread (and the destructor)
};

}  // namespace daqd::processing
