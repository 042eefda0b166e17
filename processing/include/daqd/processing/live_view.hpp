#pragma once
// The live view: per unit, the latest frame (raw and, when calibrating,
// calibrated) and the running dose, for the web page
// (GET /api/v1/units/<id>/live).
//
// Owned by the pipeline. Written by the processing thread's `live` stage at
// most once per publication interval per unit (one copy of one frame, under
// that unit's mutex: no copy, lock or allocation per frame). Read by any
// thread (the web server) through snapshot(), which copies under the same
// mutex. Unit slots are created once per unit and never freed while the
// live_view exists.
#include "daqd/processing/frame.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

namespace daqd::processing {

// What a reader gets: a copy of one unit's latest publication.
struct live_snapshot {
    std::uint16_t unit_id = 0;
    std::uint32_t channels = 0;
    std::uint64_t frame_number = 0;
    std::uint64_t timestamp_ns = 0;
    std::uint16_t missing_packets = 0;
    std::uint64_t published_ns = 0;   // monotonic clock (common::monotonic_ns) of the publication
    std::uint64_t publications = 0;   // how many times this unit was published
    std::vector<std::uint16_t> raw;   // channels samples
    std::vector<float> calibrated;    // channels values, empty when the calibrate stage is off
    std::vector<double> dose;         // running dose (channels), empty when the dose stage is off
    std::uint64_t dose_frames = 0;    // frames summed into `dose`
};

class live_view {
public:

    explicit live_view(std::chrono::milliseconds interval);
    ~live_view();
    live_view(const live_view&) = delete;
    live_view& operator=(const live_view&) = delete;

    struct slot;

    // ---- processing thread ----
    // Creates the unit's slot (once per unit; allocates its buffers).
    slot* add_unit(std::uint16_t unit_id, std::uint32_t channels, bool calibrated, bool dose);
    // Copies the frame (and the dose, if any) into the slot.
    void publish(slot& s, const frame& f, std::span<const double> dose, std::uint64_t dose_frames,
                 std::uint64_t now_ns);

    // ---- any thread ----
    // Units with a slot, in order of appearance.
    [[nodiscard]] std::vector<std::uint16_t> units() const;
    // Copies a unit's latest publication into `out` (reusing its vectors);
    // false when the unit has no slot or nothing was published yet.
    bool snapshot(std::uint16_t unit_id, live_snapshot& out) const;
    [[nodiscard]] std::chrono::milliseconds interval() const noexcept { return _interval; }

private:
    std::chrono::milliseconds _interval;
    std::unique_ptr<std::atomic<slot*>[]> _by_id;
    std::unique_ptr<std::atomic<slot*>[]> _order;
    std::atomic<std::uint32_t> _count{0};
    std::vector<std::unique_ptr<slot>> _owned;  // processing thread only
};

}  // namespace daqd::processing
