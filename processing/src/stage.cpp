// The processing stages (include/daqd/processing/stage.hpp). The pedestal
// accumulation loop is compiled with -O3 (processing/CMakeLists.txt).
#include "daqd/processing/stage.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>

namespace daqd::processing {

// ---------------------------------------------------------------- calibrate

calibrate_stage::calibrate_stage(backend& b, bool with_dose, threshold_policy policy,
                                 std::shared_ptr<const calibration_set> calibration)
    : _backend(b), _with_dose(with_dose), _policy(policy), _calibration(std::move(calibration)) {
    if (!_calibration) _calibration = std::make_shared<calibration_set>();
}

void calibrate_stage::add_unit(unit_context& u) {
    std::string fallback;
    u.constants = _calibration->resolve(u.unit_id, u.channels, _policy, &fallback);
    if (u.constants.identity)
        spdlog::warn("unit {}: no calibration constants ({}): calibrating with pedestal 0, gain 1, noise 0", u.unit_id,
                     fallback);
    else
        spdlog::info("unit {}: calibration constants from {}", u.unit_id, u.constants.source);
    _backend.add_unit(u.constants);
}

void calibrate_stage::run(frame_batch& batch) { _backend.calibrate(batch.frames, _with_dose); }

void calibrate_stage::set_policy(const threshold_policy& policy, std::span<unit_context* const> units) {
    _policy = policy;
    for (unit_context* u : units) {
        u->constants = _calibration->resolve(u->unit_id, u->channels, _policy);
        _backend.update_unit(u->constants);
    }
}

// ---------------------------------------------------------------- dose

void dose_stage::run(frame_batch& batch) {
    for (const frame& f : batch.frames) ++batch.unit_of(f).dose_frames;
}

// ---------------------------------------------------------------- live

live_stage::live_stage(live_view& view, backend* dose_from, bool calibrated)
    : _view(view), _dose_from(dose_from), _calibrated(calibrated),
      _interval_ns(static_cast<std::uint64_t>(std::chrono::nanoseconds(view.interval()).count())) {}

void live_stage::add_unit(unit_context& u) {
    u.live = _view.add_unit(u.unit_id, u.channels, _calibrated, _dose_from != nullptr ? "calibrated" : "none");
    if (_dose_from != nullptr) u.dose_scratch.assign(u.channels, 0.0);
    u.live_staged_raw.assign(u.channels, 0);
    if (_calibrated) u.live_staged_calibrated.assign(u.channels, 0.0f);
    _staged.reserve(max_units);
}

void live_stage::publish(unit_context& u, const frame& f, std::uint64_t now_ns) {
    u.next_live_ns = now_ns + _interval_ns;
    std::span<const double> dose;
    if (_dose_from != nullptr && _dose_from->read_dose(u.unit_id, u.dose_scratch)) dose = u.dose_scratch;
    _view.publish(*u.live, f, dose, u.dose_frames, now_ns);
}

void live_stage::run(frame_batch& batch) {
    ++_batches;
    // Newest first: each unit's newest frame of the batch is the candidate.
    for (std::size_t i = batch.frames.size(); i-- > 0;) {
        const frame& f = batch.frames[i];
        unit_context& u = batch.unit_of(f);
        if (u.live == nullptr || u.live_batch == _batches) continue;
        u.live_batch = _batches;
        if (batch.now_ns >= u.next_live_ns) {
            publish(u, f, batch.now_ns);
            u.live_staged = false;  // newer than what was held aside
            continue;
        }
        if (!batch.queue_empty) continue;
        // Nothing queued behind this batch: hold the frame aside for tick().
        u.live_staged_frame = f;
        std::copy_n(f.samples, f.channels, u.live_staged_raw.begin());
        u.live_staged_frame.samples = u.live_staged_raw.data();
        if (_calibrated && f.calibrated != nullptr) {
            std::copy_n(f.calibrated, f.channels, u.live_staged_calibrated.begin());
            u.live_staged_frame.calibrated = u.live_staged_calibrated.data();
        } else {
            u.live_staged_frame.calibrated = nullptr;
        }
        if (!u.live_staged) _staged.push_back(&u);
        u.live_staged = true;
    }
}

void live_stage::tick(std::uint64_t now_ns, bool force) {
    for (std::size_t i = 0; i < _staged.size();) {
        unit_context& u = *_staged[i];
        if (u.live_staged && !force && now_ns < u.next_live_ns) {
            ++i;
            continue;
        }
        if (u.live_staged) publish(u, u.live_staged_frame, now_ns);
        u.live_staged = false;
        _staged[i] = _staged.back();
        _staged.pop_back();
    }
}

// ---------------------------------------------------------------- pedestal

struct pedestal_stage::accumulator {
    std::uint16_t unit_id = 0;
    std::uint32_t channels = 0;
    std::uint64_t n = 0;
    std::uint64_t skipped = 0;
    std::vector<double> mean;
    std::vector<double> m2;
};

pedestal_stage::pedestal_stage(std::uint64_t frames_wanted) : _wanted(frames_wanted), _by_id(max_units) {}

pedestal_stage::~pedestal_stage() = default;

void pedestal_stage::add_unit(unit_context& u) {
    auto a = std::make_unique<accumulator>();
    a->unit_id = u.unit_id;
    a->channels = u.channels;
    a->mean.assign(u.channels, 0.0);
    a->m2.assign(u.channels, 0.0);
    _order.push_back(a.get());
    _by_id[u.unit_id] = std::move(a);
    _seen.fetch_add(1, std::memory_order_release);
}

namespace {
// One Welford step for every channel of a row.
void welford_row(const std::uint16_t* __restrict raw, double* __restrict mean, double* __restrict m2, double inv_n,
                 std::size_t channels) noexcept {
    for (std::size_t c = 0; c < channels; ++c) {
        const double x = raw[c];
        const double d = x - mean[c];
        mean[c] += d * inv_n;
        m2[c] += d * (x - mean[c]);
    }
}
}  // namespace

void pedestal_stage::run(frame_batch& batch) {
    for (const frame& f : batch.frames) {
        accumulator& a = *_by_id[f.unit_id];
        if (a.n >= _wanted) continue;
        if (f.missing_packets > 0) {
            ++a.skipped;
            continue;
        }
        ++a.n;
        welford_row(f.samples, a.mean.data(), a.m2.data(), 1.0 / static_cast<double>(a.n), a.channels);
        if (a.n == _wanted) _complete.fetch_add(1, std::memory_order_release);
    }
}

calibration_set pedestal_stage::result() const {
    calibration_set set;
    for (const accumulator* a : _order) {
        if (a->n < 2) continue;
        unit_constants u;
        u.unit_id = a->unit_id;
        u.channels = a->channels;
        u.frames = a->n;
        u.pedestal.resize(a->channels);
        u.noise.resize(a->channels);
        u.gain.assign(a->channels, 1.0f);
        for (std::uint32_t c = 0; c < a->channels; ++c) {
            u.pedestal[c] = static_cast<float>(a->mean[c]);
            u.noise[c] = static_cast<float>(std::sqrt(a->m2[c] / static_cast<double>(a->n - 1)));
        }
        set.units.emplace(u.unit_id, std::move(u));
    }
    return set;
}

std::vector<pedestal_stage::unit_progress> pedestal_stage::progress() const {
    std::vector<unit_progress> out;
    for (const accumulator* a : _order) out.push_back({a->unit_id, a->n, a->skipped});
    return out;
}

}  // namespace daqd::processing
