// The processing thread (include/daqd/processing/processor.hpp).
#include "daqd/processing/processor.hpp"

#include "daqd/config/config.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <stdexcept>
#include <utility>

namespace daqd::processing {

namespace {


// Wraps the CUDA backend: if a device call fails mid-run, logs once and goes
// on with the CPU backend (constants re-registered; the running dose of the
// live view restarts from 0 — the run file's dose is summed by the writer
// from the calibrated rows, so it stays exact).
class failover_backend final : public backend {
public:
    explicit failover_backend(std::unique_ptr<backend> primary) : _current(std::move(primary)) {}

    std::string_view name() const noexcept override { return _current->name(); }
    std::string description() const override { return _current->description(); }

    void add_unit(const unit_constants& c) override {
        _constants.push_back(c);
        guarded([&] { _current->add_unit(c); });
    }
    void update_unit(const unit_constants& c) override {
        for (auto& k : _constants)
            if (k.unit_id == c.unit_id) k = c;
        guarded([&] { _current->update_unit(c); });
    }
    void calibrate(std::span<frame> frames, bool dose) override {
        guarded([&] { _current->calibrate(frames, dose); });
    }
    bool read_dose(std::uint16_t unit_id, std::span<double> out) override {
        bool ok = false;
        guarded([&] { ok = _current->read_dose(unit_id, out); });
        return ok;
    }
    void reset_dose() override {
        guarded([&] { _current->reset_dose(); });
    }

private:
    template <typename F>
    void guarded(F&& fn) {
        try {
            fn();
        } catch (const std::exception& e) {
            if (_failed) throw;
            _failed = true;
            spdlog::error("processing: the {} backend failed ({}); continuing on the CPU", _current->name(), e.what());
            _current = make_cpu_backend();
            for (const auto& c : _constants) _current->add_unit(c);
            fn();
        }
    }
    std::unique_ptr<backend> _current;
    std::vector<unit_constants> _constants;
    bool _failed = false;
};

}  // namespace

processor::processor(const processor_options& o, common::queue_set<frame> in,
                     common::wake_event& in_ready, common::spsc_queue<frame>& out, common::wake_event& out_ready,
                     live_view* live)
    : _in(std::move(in)), _in_ready(in_ready), _out(out), _out_ready(out_ready),
      _batch_frames(std::max<std::size_t>(1, o.batch_frames)), _units(max_units), _units_by_id(max_units, nullptr) {
    if (_out.capacity() < _in.capacity())
        throw std::invalid_argument("processor: its output queue must hold as many frames as its input queue");
    _batch.reserve(_batch_frames);
    _passing.reserve(_batch_frames);
    _active.reserve(max_units);

    if (o.pedestal_frames > 0) {
        auto p = std::make_unique<pedestal_stage>(o.pedestal_frames);
        _pedestal = p.get();
        _stages.push_back(std::move(p));
        _stage_names.emplace_back("pedestal");
        spdlog::info("processing: pedestal run, {} complete frames per unit", o.pedestal_frames);
        return;
    }

    const auto has = [&](std::string_view s) { return std::find(o.stages.begin(), o.stages.end(), s) != o.stages.end(); };
    const bool calibrate = has("calibrate");
    const bool dose = has("dose");
    const bool with_live = has("live");
    // The configuration's rule, for stages that did not come through it (tests, tools).
    if (auto err = config::stage_order_error(o.stages); !err.empty()) throw std::invalid_argument(err);
    if (with_live && live == nullptr) throw std::invalid_argument("processor: the live stage needs a live_view");
    _calibrates = calibrate;
    if (calibrate) {
        std::string why;
        auto b = make_backend(o.backend, std::max<std::size_t>(1, o.max_frame_bytes / 2), _batch_frames, why);
        if (b->name() == "cuda") b = std::make_unique<failover_backend>(std::move(b));
        spdlog::info("processing: backend {} ({})", b->description(), why);
        _backend = std::move(b);
        auto c = std::make_unique<calibrate_stage>(*_backend, dose, o.threshold, o.calibration);
        _calibrate = c.get();
        _stages.push_back(std::move(c));
        _stage_names.emplace_back("calibrate");
        if (dose) {
            _stages.push_back(std::make_unique<dose_stage>());
            _stage_names.emplace_back("dose");
        }
    }
    if (with_live) {
        _stages.push_back(std::make_unique<live_stage>(*live, dose ? _backend.get() : nullptr, calibrate));
        _stage_names.emplace_back("live");
    }
    spdlog::info("processing: stages [{}] on batches of up to {} frames", fmt::join(_stage_names, ", "), _batch_frames);
}

processor::~processor() { _worker.stop(); }

std::string_view processor::backend_name() const noexcept { return _backend ? _backend->name() : "cpu"; }

unit_context& processor::add_unit(const frame& f) {
    auto u = std::make_unique<unit_context>();
    u->unit_id = f.unit_id;
    u->channels = f.channels;
    unit_context* raw = u.get();
    _units[f.unit_id] = std::move(u);
    _units_by_id[f.unit_id] = raw;
    _active.push_back(raw);
    for (auto& s : _stages) s->add_unit(*raw);
    return *raw;
}

std::size_t processor::run_batch(std::size_t n) {
    _batch.clear();
    _passing.clear();
    for (std::size_t i = 0; i < n; ++i) {
        auto f = _in.try_pop();
        if (!f) break;
        unit_context* u = _units_by_id[f->unit_id];
        if (u == nullptr) u = &add_unit(*f);
        if (f->channels != u->channels) {
            // Stages keep per-channel state of the unit's first frame size.
            if (!u->size_changed)
                spdlog::warn("processing: unit {} now sends {} channels (it had {}): its frames pass on unprocessed "
                             "(calibrated rows stored as zeros) until daqd restarts",
                             f->unit_id, f->channels, u->channels);
            u->size_changed = true;
            f->calibrated = nullptr;
            _passing.push_back(*f);
            continue;
        }
        if (_calibrates) {
            // The frame's own row in its block's calibrated area; a frame
            // built by hand (no pool) has none and is not calibrated.
            f->calibrated = f->pool != nullptr && f->pool->has_calibrated()
                                ? f->pool->calibrated(f->block) + std::size_t{f->row} * f->channels
                                : nullptr;
            if (f->calibrated == nullptr) {
                _passing.push_back(*f);
                continue;
            }
        }
        _batch.push_back(*f);
    }
    if (_batch.empty()) {
        for (const frame& f : _passing) [[maybe_unused]] const bool pushed = _out.try_push(f);
        if (!_passing.empty()) {
            _out_ready.notify();
            _counters.frames.add(_passing.size());
        }
        return _passing.size();
    }
    if (_threshold_pending.load(std::memory_order_acquire)) apply_threshold();
    if (_calibrate != nullptr) {
        const std::uint8_t epoch = _epoch.load(std::memory_order_relaxed);
        for (frame& f : _batch) f.threshold_epoch = epoch;
    }
    const std::uint64_t reset = _dose_reset.load(std::memory_order_acquire);
    if (reset != _dose_reset_seen) {
        _dose_reset_seen = reset;
        if (_backend) _backend->reset_dose();
        for (auto* u : _active) u->dose_frames = 0;
    }
    frame_batch b{std::span<frame>(_batch.data(), _batch.size()), common::monotonic_ns(), _in.empty(),
                  _units_by_id.data()};
    try {
        for (auto& s : _stages) s->run(b);
    } catch (const std::exception& e) {
        // Not expected (the CUDA backend fails over to the CPU): keep the data
        // flowing, uncalibrated (the writer stores zeros), and say it once.
        if (!_failed) spdlog::error("processing: a stage failed ({}); frames pass on uncalibrated", e.what());
        _failed = true;
        for (frame& f : _batch) f.calibrated = nullptr;
    }
    // A unit's frames of the old size come before those of the new one in
    // the input, so handing the batch on first keeps each unit's order.
    for (const frame& f : _batch) {
        [[maybe_unused]] const bool pushed = _out.try_push(f);
    }
    for (const frame& f : _passing) {
        [[maybe_unused]] const bool pushed = _out.try_push(f);
    }
    _out_ready.notify();
    _counters.busy_ns.add(common::monotonic_ns() - b.now_ns);
    _counters.frames.add(_batch.size() + _passing.size());
    _counters.batches.add();
    return _batch.size() + _passing.size();
}

void processor::request_threshold(const threshold_policy& policy, std::uint8_t epoch) {
    std::lock_guard lock(_threshold_mutex);
    _threshold_wanted = std::make_pair(policy, epoch);
    _threshold_pending.store(true, std::memory_order_release);
}

// Processing thread, between two batches: frames of the batches before keep
// the threshold they were calibrated with, and their epoch.
void processor::apply_threshold() {
    std::optional<std::pair<threshold_policy, std::uint8_t>> wanted;
    {
        std::lock_guard lock(_threshold_mutex);
        wanted = std::exchange(_threshold_wanted, std::nullopt);
        _threshold_pending.store(false, std::memory_order_release);
    }
    if (!wanted || _calibrate == nullptr) return;
    const auto before = _calibrate->policy();
    try {
        _calibrate->set_policy(wanted->first, _active);
    } catch (const std::exception& e) {
        spdlog::error("processing: the new threshold could not be applied ({}); frames pass on uncalibrated", e.what());
        _failed = true;
    }
    _epoch.store(wanted->second, std::memory_order_release);
    if (before.mode != wanted->first.mode || before.value != wanted->first.value)
        spdlog::info("processing: threshold now {} {} (was {} {}) for {} unit(s)", name(wanted->first.mode),
                     wanted->first.value, name(before.mode), before.value, _active.size());
}

std::size_t processor::poll() {
    const std::size_t waiting = _in.size();
    if (waiting > _counters.backlog_peak.get()) _counters.backlog_peak.set(waiting);
    std::size_t done = 0;
    while (done < waiting) {
        const std::size_t n = std::min(_batch_frames, waiting - done);
        const std::size_t taken = run_batch(n);
        if (taken == 0) break;
        done += taken;
    }
    return done;
}

bool processor::pass() {
    if (poll() > 0) return true;
    tick(common::monotonic_ns(), false);
    return false;
}

// The live stage publishes by the clock, with no frame to wake the thread.
std::chrono::microseconds processor::sleep_limit() const { return std::chrono::microseconds(2000); }

// The assembler stops (and flushes) before the processor is told to: once
// the queue is found empty it is drained for good.
void processor::drain() {
    while (poll() > 0) {
    }
    tick(common::monotonic_ns(), true);
}

void processor::tick(std::uint64_t now_ns, bool force) {
    for (auto& s : _stages) s->tick(now_ns, force);
}

// ---- telemetry ----

namespace {

using telemetry::kind;

const telemetry::descriptor processing_frames{"daq_processing_frames_total", "Frames through the processing stages",
                                              kind::counter, "backend"};
const telemetry::descriptor processing_busy{"daq_processing_busy_seconds_total",
                                            "Time the processing thread spent in its stages", kind::counter, "backend"};
const telemetry::descriptor processing_backlog{"daq_processing_backlog_peak",
                                               "Most frames found waiting for the processing thread at once",
                                               kind::gauge};

}  // namespace

void processor::report(telemetry::snapshot& out) const {
    const std::string backend(backend_name());
    out.add(processing_frames, {{"backend", backend}}, static_cast<double>(_counters.frames.get()));
    out.add(processing_busy, {{"backend", backend}}, static_cast<double>(_counters.busy_ns.get()) / 1e9);
    out.add(processing_backlog, {}, static_cast<double>(_counters.backlog_peak.get()));
}

}  // namespace daqd::processing
