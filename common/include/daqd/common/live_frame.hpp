#pragma once
// What a reader of the live view gets: a copy of one unit's latest
// publication (processing/live_view.hpp publishes it; the web page's
// GET /api/v1/units/<id>/live reads it).
#include <cstdint>
#include <vector>

namespace daqd::common {

struct live_frame {
    std::uint16_t unit_id = 0;
    std::uint32_t channels = 0;
    std::uint64_t frame_number = 0;
    std::uint64_t timestamp_ns = 0;      // the unit's clock at the trigger
    std::uint16_t missing_packets = 0;   // of that frame
    std::uint64_t published_ns = 0;      // monotonic clock of the publication (ns)
    std::uint64_t publications = 0;      // how many times this unit was published
    std::vector<std::uint16_t> samples;  // the frame's raw samples (channels)
    std::vector<float> calibrated;       // calibrated (channels); empty without the calibrate stage
    // The running dose per channel, by dose_kind: "calibrated" (the dose
    // stage: float64 sum of the calibrated values of every frame since the
    // run started), "raw" (no live stage: the sum of the raw samples of the
    // published frames, one per publication interval, since daqd started),
    // "none" (a live stage without the dose stage: empty).
    std::vector<double> dose;
    std::uint64_t dose_frames = 0;       // frames summed into `dose`
    const char* dose_kind = "none";
};

}  // namespace daqd::common
