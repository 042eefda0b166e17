// live_tap: per-unit frame counts and the raw live view (live_tap.hpp).
#include "daqd/processing/live_tap.hpp"

#include <time.h>

#include <algorithm>
#include <new>
#include <string>

namespace daqd::processing {

namespace {

std::uint64_t coarse_now_ns() noexcept {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<std::uint64_t>(ts.tv_nsec);
}

}  // namespace

struct live_tap::unit_slot {
    std::uint16_t unit_id = 0;
    std::uint32_t channels = 0;  // of its first frame: the live view keeps that layout
    telemetry::counter frames_written;
    telemetry::counter frames_seen;
    // writer thread only
    live_view::slot* live = nullptr;  // null: no raw live view (attached view, too large, no memory)
    std::vector<double> dose;         // sum of the published frames
    std::uint64_t dose_frames = 0;
    std::uint64_t last_publish_ns = 0;
};

live_tap::live_tap(std::chrono::nanoseconds publish_interval)
    : _interval_ns(static_cast<std::uint64_t>(std::max<std::int64_t>(0, publish_interval.count()))),
      _raw(publish_interval),
      _by_id(std::make_unique<std::atomic<unit_slot*>[]>(max_units)),
      _list(std::make_unique<std::atomic<unit_slot*>[]>(max_units)) {
    _owned.reserve(64);
}

live_tap::~live_tap() = default;

std::uint16_t live_tap::unit_id_at(std::uint32_t i) const noexcept {
    return _list[i].load(std::memory_order_acquire)->unit_id;
}

bool live_tap::has_unit(std::uint16_t unit_id) const noexcept {
    return _by_id[unit_id].load(std::memory_order_acquire) != nullptr;
}

std::uint64_t live_tap::frames_written(std::uint16_t unit_id) const noexcept {
    const unit_slot* u = _by_id[unit_id].load(std::memory_order_acquire);
    return u ? u->frames_written.get() : 0;
}

std::uint64_t live_tap::frames_seen(std::uint16_t unit_id) const noexcept {
    const unit_slot* u = _by_id[unit_id].load(std::memory_order_acquire);
    return u ? u->frames_seen.get() : 0;
}

bool live_tap::has_live(std::uint16_t unit_id) const noexcept {
    return (_attached ? *_attached : _raw).has_unit(unit_id);
}

void live_tap::on_unwritten(std::uint16_t unit_id, std::uint64_t frames) noexcept {
    if (unit_slot* u = _by_id[unit_id].load(std::memory_order_relaxed)) u->frames_written.sub(frames);
}

void live_tap::on_frame(const frame& f, bool written) noexcept {
    unit_slot* u = _by_id[f.unit_id].load(std::memory_order_relaxed);
    if (u == nullptr) {
        // A new unit: allocate once (not per frame). Out of memory: not counted.
        try {
            auto slot = std::make_unique<unit_slot>();
            slot->unit_id = f.unit_id;
            slot->channels = f.channels;
            if (_attached == nullptr && f.samples != nullptr) {
                slot->live = _raw.add_unit(f.unit_id, f.channels, false, "raw");
                if (slot->live) slot->dose.assign(f.channels, 0.0);
            }
            u = slot.get();
            _owned.push_back(std::move(slot));
        } catch (const std::bad_alloc&) {
            return;
        }
        const std::uint32_t n = _count.load(std::memory_order_relaxed);
        _list[n].store(u, std::memory_order_release);
        _by_id[f.unit_id].store(u, std::memory_order_release);
        _count.store(n + 1, std::memory_order_release);
    }
    u->frames_seen.add();
    if (written) u->frames_written.add();
    // A unit that changed its frame size (a new stream): the view keeps the first layout.
    if (u->live == nullptr || f.channels != u->channels || f.samples == nullptr) return;
    const std::uint64_t now = coarse_now_ns();
    if (u->dose_frames > 0 && now - u->last_publish_ns < _interval_ns) return;
    for (std::uint32_t c = 0; c < u->channels; ++c) u->dose[c] += f.samples[c];
    ++u->dose_frames;
    _raw.publish(*u->live, f, u->dose, u->dose_frames, now);
    u->last_publish_ns = now;
}

bool live_tap::read(std::uint16_t unit_id, live_frame& out) const {
    return (_attached ? *_attached : _raw).read(unit_id, out);
}

namespace {

const telemetry::descriptor frames_written_total{"daq_frames_written_total", "Frames appended to a run file, by unit",
                                                 telemetry::kind::counter, "unit"};
const telemetry::descriptor unit_live{"daq_unit_live", "1 when the unit has a live view", telemetry::kind::gauge,
                                      "unit", false};

}  // namespace

void live_tap::report(telemetry::snapshot& out) const {
    out.of(frames_written_total);
    for (std::uint32_t i = 0, n = unit_count(); i < n; ++i) {
        const unit_slot* u = _list[i].load(std::memory_order_acquire);
        const std::string id = std::to_string(u->unit_id);
        out.add(frames_written_total, {{"unit", id}}, static_cast<double>(u->frames_written.get()));
        out.add(unit_live, {{"unit", id}}, has_live(u->unit_id) ? 1 : 0);
    }
}

}  // namespace daqd::processing
