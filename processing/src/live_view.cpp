#include "daqd/processing/live_view.hpp"

#include <algorithm>

namespace daqd::processing {

struct live_view::slot {
    mutable std::mutex mutex;
    live_snapshot data;  // guarded by mutex
    bool calibrated = false;
    bool dose = false;
};

live_view::live_view(std::chrono::milliseconds interval)
    : _interval(interval),
      _by_id(std::make_unique<std::atomic<slot*>[]>(max_units)),
      _order(std::make_unique<std::atomic<slot*>[]>(max_units)) {
    for (std::size_t i = 0; i < max_units; ++i) {
        _by_id[i].store(nullptr, std::memory_order_relaxed);
        _order[i].store(nullptr, std::memory_order_relaxed);
    }
}

live_view::~live_view() = default;

live_view::slot* live_view::add_unit(std::uint16_t unit_id, std::uint32_t channels, bool calibrated, bool dose) {
    if (slot* s = _by_id[unit_id].load(std::memory_order_acquire)) return s;
    auto s = std::make_unique<slot>();
    s->calibrated = calibrated;
    s->dose = dose;
    s->data.unit_id = unit_id;
    s->data.channels = channels;
    s->data.raw.assign(channels, 0);
    if (calibrated) s->data.calibrated.assign(channels, 0.0f);
    if (dose) s->data.dose.assign(channels, 0.0);
    slot* raw = s.get();
    _owned.push_back(std::move(s));
    const std::uint32_t n = _count.load(std::memory_order_relaxed);
    _order[n].store(raw, std::memory_order_release);
    _by_id[unit_id].store(raw, std::memory_order_release);
    _count.store(n + 1, std::memory_order_release);
    return raw;
}

void live_view::publish(slot& s, const frame& f, std::span<const double> dose, std::uint64_t dose_frames,
                        std::uint64_t now_ns) {
    std::lock_guard lock(s.mutex);
    auto& d = s.data;
    const std::size_t n = std::min<std::size_t>(f.channels, d.raw.size());
    d.frame_number = f.frame_number;
    d.timestamp_ns = f.timestamp_ns;
    d.missing_packets = f.missing_packets;
    d.published_ns = now_ns;
    ++d.publications;
    std::copy_n(f.samples, n, d.raw.begin());
    if (s.calibrated && f.calibrated != nullptr) std::copy_n(f.calibrated, n, d.calibrated.begin());
    if (s.dose && dose.size() == d.dose.size()) {
        std::copy(dose.begin(), dose.end(), d.dose.begin());
        d.dose_frames = dose_frames;
    }
}

std::vector<std::uint16_t> live_view::units() const {
    std::vector<std::uint16_t> out;
    const std::uint32_t n = _count.load(std::memory_order_acquire);
    out.reserve(n);
    for (std::uint32_t i = 0; i < n; ++i) out.push_back(_order[i].load(std::memory_order_acquire)->data.unit_id);
    return out;
}

bool live_view::snapshot(std::uint16_t unit_id, live_snapshot& out) const {
    const slot* s = _by_id[unit_id].load(std::memory_order_acquire);
    if (s == nullptr) return false;
    std::lock_guard lock(s->mutex);
    if (s->data.publications == 0) return false;
    const auto& d = s->data;
    out.unit_id = d.unit_id;
    out.channels = d.channels;
    out.frame_number = d.frame_number;
    out.timestamp_ns = d.timestamp_ns;
    out.missing_packets = d.missing_packets;
    out.published_ns = d.published_ns;
    out.publications = d.publications;
    out.raw.assign(d.raw.begin(), d.raw.end());
    out.calibrated.assign(d.calibrated.begin(), d.calibrated.end());
    out.dose.assign(d.dose.begin(), d.dose.end());
    out.dose_frames = d.dose_frames;
    return true;
}

}  // namespace daqd::processing
