#include "pedestal_run.hpp"

#include "daqd/common/event.hpp"
#include "daqd/storage/calibration_file.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <span>

namespace daqd {

namespace {
constexpr std::uint64_t quiet_ns = 300'000'000;  // no new unit for this long: every unit is in
}  // namespace

pedestal_run::pedestal_run(std::string name, std::filesystem::path file, std::uint64_t frames,
                           std::size_t listed_units)
    : _name(std::move(name)), _file(std::move(file)), _wanted(frames), _listed(listed_units), _stage(frames),
      _by_id(65536, nullptr) {}

pedestal_run::~pedestal_run() = default;

bool pedestal_run::take(const processing::frame& f) noexcept {
    if (finished()) return false;
    try {
        processing::unit_context* u = _by_id[f.unit_id];
        if (u == nullptr) {
            auto ctx = std::make_unique<processing::unit_context>();
            ctx->unit_id = f.unit_id;
            ctx->channels = f.channels;
            _stage.add_unit(*ctx);
            u = _by_id[f.unit_id] = ctx.get();
            _units.push_back(std::move(ctx));
        }
        if (f.channels == u->channels && f.samples != nullptr) {
            processing::frame copy = f;
            processing::frame_batch batch{std::span<processing::frame>(&copy, 1), 0, false, nullptr};
            _stage.run(batch);
        }
    } catch (const std::exception& e) {
        // Only allocation can throw here (a new unit): the run ends with what it has.
        spdlog::error("pedestal run {}: {}", _name, e.what());
        finish();
        return false;
    }
    if (!done_now(common::monotonic_ns())) return true;
    finish();
    return false;
}

bool pedestal_run::idle() noexcept {
    if (finished()) return false;
    if (!done_now(common::monotonic_ns())) return true;
    finish();
    return false;
}

bool pedestal_run::done_now(std::uint64_t now_ns) noexcept {
    const std::uint32_t seen = _stage.units_seen();
    const bool all = seen >= std::max<std::size_t>(1, _listed) && _stage.units_complete() == seen;
    if (!all) {
        _all_in = false;
        return false;
    }
    if (!_all_in) _all_in_since_ns = now_ns;
    _all_in = true;
    return now_ns - _all_in_since_ns >= quiet_ns;
}

void pedestal_run::finish() noexcept {
    if (finished()) return;
    outcome o;
    o.stopped = std::chrono::system_clock::now();
    try {
        const auto set = _stage.result();
        for (const auto& p : _stage.progress()) {
            o.units += fmt::format("{}u{}: {} frames{}", o.units.empty() ? "" : ", ", p.unit_id, p.frames,
                                   p.skipped_incomplete ? fmt::format(" ({} incomplete skipped)", p.skipped_incomplete)
                                                        : std::string());
            o.frames += p.frames;
        }
        if (set.units.empty()) {
            o.failed = true;
            o.error = fmt::format("no unit sent 2 complete frames{}",
                                  o.units.empty() ? std::string() : " (" + o.units + ")");
        } else {
            for (const auto& [id, u] : set.units)
                if (u.frames < _wanted)
                    spdlog::warn("pedestal run {}: unit {} has only {} of {} frames (stopped early)", _name, id,
                                 u.frames, _wanted);
            storage::write_calibration_file(
                _file, set,
                fmt::format("pedestal run {}: mean and standard deviation of up to {} complete frames per unit",
                            _name, _wanted));
            spdlog::info("pedestal run {} -> {} ({}); use it with --calibration {} (or processing.calibration_file)",
                         _name, _file.string(), o.units, _file.string());
        }
    } catch (const std::exception& e) {
        o.failed = true;
        o.error = e.what();
    }
    if (o.failed) spdlog::error("pedestal run {} FAILED: {}", _name, o.error);
    {
        std::lock_guard lock(_mutex);
        _outcome = std::move(o);
    }
    _finished.store(true, std::memory_order_release);
}

pedestal_run::outcome pedestal_run::result() const {
    std::lock_guard lock(_mutex);
    return _outcome;
}

}  // namespace daqd
