#pragma once
// The live view: per unit, the latest published frame (raw and, when
// calibrating, calibrated) and the running dose, for the web page
// (GET /api/v1/units/<id>/live). The one publication mechanism of the data
// path: one publishing thread, any readers, no lock.
//
// Who publishes: the processing thread's `live` stage (calibrated frames and
// the dose stage's running dose), or, when no live stage runs, the writer
// thread's live_tap (raw frames at the publication interval, live_tap.hpp).
//
//  - a unit's slot is made once (add_unit allocates two buffers);
//  - publish() fills the buffer readers are not pointed at, under a sequence
//    counter (odd while written; stores and loads are relaxed atomics), then
//    points readers at it;
//  - read() copies the published buffer and retries when its sequence
//    counter changed meanwhile (the publisher went round both buffers).
// The publisher never waits for readers. Slots live as long as the view.
#include "daqd/common/live_frame.hpp"
#include "daqd/processing/frame.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

namespace daqd::processing {

using common::live_frame;

class live_view {
public:
    static constexpr std::uint32_t max_channels = 1u << 18;  // larger units: no live view (memory)

    explicit live_view(std::chrono::nanoseconds interval);
    ~live_view();
    live_view(const live_view&) = delete;
    live_view& operator=(const live_view&) = delete;

    struct slot;

    // ---- the publishing thread ----
    // The unit's slot, made on first call (allocates). nullptr when the unit
    // has more than max_channels channels or memory ran out: no live view.
    // `dose_kind`: what publish()'s dose is ("calibrated", "raw"; "none": no dose).
    slot* add_unit(std::uint16_t unit_id, std::uint32_t channels, bool calibrated, const char* dose_kind);
    // Copies the frame (its first channels samples, calibrated values when
    // the slot has them) and the dose into the slot.
    void publish(slot& s, const frame& f, std::span<const double> dose, std::uint64_t dose_frames,
                 std::uint64_t now_ns) noexcept;

    // ---- any thread ----
    // Units with a slot, in order of appearance.
    [[nodiscard]] std::vector<std::uint16_t> units() const;
    [[nodiscard]] bool has_unit(std::uint16_t unit_id) const noexcept;
    // Copies a unit's latest publication into `out` (reusing its vectors);
    // false when the unit has no slot or nothing was published yet.
    bool read(std::uint16_t unit_id, live_frame& out) const;
    [[nodiscard]] std::chrono::nanoseconds interval() const noexcept { return _interval; }

private:
    std::chrono::nanoseconds _interval;
    std::unique_ptr<std::atomic<slot*>[]> _by_id;
    std::unique_ptr<std::atomic<slot*>[]> _order;
    std::atomic<std::uint32_t> _count{0};
    std::vector<std::unique_ptr<slot>> _owned;  // the publishing thread only
};

}  // namespace daqd::processing
