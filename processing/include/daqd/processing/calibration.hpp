#pragma once
// Calibration constants: per unit and channel a pedestal, a noise and a gain
// (docs/CALIBRATION.md), and the threshold policy that turns them into a
// per-channel threshold.
//
// A calibration_set is built once (loaded from a calibration file by
// storage::read_calibration_file, or computed by a pedestal run) and is
// immutable afterwards: the processing thread and the writer thread both
// call resolve() on it concurrently. resolve() allocates (it builds a unit's
// arrays), so it is called once per unit, never per frame.
//
// Units without constants (no file, the unit is not in it, or its channel
// count differs): identity constants, pedestal 0, noise 0, gain 1. The
// processing thread logs that once per unit; the run file records it in the
// unit's calibration group (attribute `source`).
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace daqd::processing {

enum class threshold_mode { absolute, noise };

std::string_view name(threshold_mode m) noexcept;

// `absolute`: the threshold of every channel is `value` (calibrated units);
// `noise`: channel c's threshold is value x noise[c] (float32 product), e.g. 5.0 = 5 sigma.
struct threshold_policy {
    threshold_mode mode = threshold_mode::noise;
    float value = 5.0f;
};

// One unit's constants, channels floats each. `threshold` is filled by
// calibration_set::resolve (empty in a set as loaded).
struct unit_constants {
    std::uint16_t unit_id = 0;
    std::uint32_t channels = 0;
    std::vector<float> pedestal;
    std::vector<float> noise;
    std::vector<float> gain;
    std::vector<float> threshold;
    bool identity = false;       // no constants were found: pedestal 0, noise 0, gain 1
    std::string source;          // the file they came from, or why identity was used
    std::uint64_t frames = 0;    // frames a pedestal run averaged (0: not known)
};

// Identity constants for a unit without calibration (threshold not applied).
unit_constants identity_constants(std::uint16_t unit_id, std::uint32_t channels, std::string why);

class calibration_set {
public:
    std::string file;                             // where it was loaded from ("" when none)
    std::map<std::uint16_t, unit_constants> units;

    // The constants to use for `unit_id` sending `channels`-channel frames,
    // thresholds applied: the set's when it has them for that channel count,
    // otherwise identity (and `fallback`, if given, says why).
    [[nodiscard]] unit_constants resolve(std::uint16_t unit_id, std::uint32_t channels, const threshold_policy& policy,
                                         std::string* fallback = nullptr) const;
};

}  // namespace daqd::processing
