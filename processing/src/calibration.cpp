#include "daqd/processing/calibration.hpp"

#include "daqd/kernels/cpu.hpp"

#include <fmt/format.h>

namespace daqd::processing {

std::string_view name(threshold_mode m) noexcept { return m == threshold_mode::absolute ? "absolute" : "noise"; }

unit_constants identity_constants(std::uint16_t unit_id, std::uint32_t channels, std::string why) {
    unit_constants u;
    u.unit_id = unit_id;
    u.channels = channels;
    u.pedestal.assign(channels, 0.0f);
    u.noise.assign(channels, 0.0f);
    u.gain.assign(channels, 1.0f);
    u.identity = true;
    u.source = std::move(why);
    return u;
}

unit_constants calibration_set::resolve(std::uint16_t unit_id, std::uint32_t channels, const threshold_policy& policy,
                                        std::string* fallback) const {
    unit_constants u;
    const auto it = units.find(unit_id);
    std::string why;
    if (file.empty() && units.empty()) {
        why = "identity: no calibration file";
    } else if (it == units.end()) {
        why = fmt::format("identity: unit {} is not in {}", unit_id, file.empty() ? "the calibration" : file);
    } else if (it->second.channels != channels) {
        why = fmt::format("identity: {} has {} channels for unit {}, the unit sends {}",
                          file.empty() ? "the calibration" : file, it->second.channels, unit_id, channels);
    }
    if (why.empty()) {
        u = it->second;
        if (u.source.empty()) u.source = file.empty() ? "calibration set (not from a file)" : file;
    } else {
        u = identity_constants(unit_id, channels, why);
        if (fallback != nullptr) *fallback = why;
    }
    u.threshold.resize(channels);
    kernels::make_threshold(policy.mode == threshold_mode::noise, policy.value, u.noise.data(), u.threshold.data(),
                            channels);
    return u;
}

}  // namespace daqd::processing
