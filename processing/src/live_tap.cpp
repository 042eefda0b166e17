// live_tap: lock-free publication of each unit's latest frame and dose.
// The protocol (one writer, any readers) is described in live_tap.hpp.
#include "daqd/processing/live_tap.hpp"

#include <time.h>

#include <algorithm>
#include <cstring>
#include <new>

namespace daqd::processing {

namespace {

std::uint64_t coarse_now_ns() noexcept {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<std::uint64_t>(ts.tv_nsec);
}

constexpr int read_attempts = 64;

}  // namespace

// One published copy: samples packed four to a word, dose one per word.
struct live_buffer {
    std::atomic<std::uint64_t> seq{0};  // odd while the writer fills it
    std::atomic<std::uint64_t> frame_number{0};
    std::atomic<std::uint64_t> timestamp_ns{0};
    std::atomic<std::uint64_t> missing_packets{0};
    std::atomic<std::uint64_t> dose_frames{0};
    std::atomic<std::uint64_t> published_ns{0};
    std::unique_ptr<std::atomic<std::uint64_t>[]> samples;  // (channels + 3) / 4 words
    std::unique_ptr<std::atomic<std::uint64_t>[]> dose;     // channels words
};

struct live_tap::unit_slot {
    std::uint16_t unit_id = 0;
    std::uint32_t channels = 0;
    bool publishable = false;
    std::atomic<std::uint64_t> frames_written{0};
    std::atomic<std::uint64_t> frames_seen{0};
    std::atomic<int> published{-1};  // index of the buffer readers use; -1: none yet
    live_buffer buffers[2];
    // writer thread only
    std::vector<std::uint64_t> dose;
    std::uint64_t dose_frames = 0;
    std::uint64_t last_publish_ns = 0;
};

live_tap::live_tap(std::chrono::nanoseconds publish_interval)
    : _interval_ns(static_cast<std::uint64_t>(std::max<std::int64_t>(0, publish_interval.count()))),
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
    return u ? u->frames_written.load(std::memory_order_relaxed) : 0;
}

std::uint64_t live_tap::frames_seen(std::uint16_t unit_id) const noexcept {
    const unit_slot* u = _by_id[unit_id].load(std::memory_order_acquire);
    return u ? u->frames_seen.load(std::memory_order_relaxed) : 0;
}

void live_tap::on_unwritten(std::uint16_t unit_id, std::uint64_t frames) noexcept {
    unit_slot* u = _by_id[unit_id].load(std::memory_order_relaxed);
    if (u == nullptr) return;
    const std::uint64_t n = u->frames_written.load(std::memory_order_relaxed);
    u->frames_written.store(n - std::min(n, frames), std::memory_order_relaxed);
}

void live_tap::on_frame(const frame& f, bool written) noexcept {
    unit_slot* u = _by_id[f.unit_id].load(std::memory_order_relaxed);
    if (u == nullptr) {
        // A new unit: allocate once (not per frame). Out of memory: no live view.
        try {
            auto slot = std::make_unique<unit_slot>();
            slot->unit_id = f.unit_id;
            slot->channels = f.channels;
            slot->publishable = f.channels > 0 && f.channels <= max_channels && f.samples != nullptr;
            if (slot->publishable) {
                slot->dose.assign(f.channels, 0);
                for (auto& b : slot->buffers) {
                    b.samples = std::make_unique<std::atomic<std::uint64_t>[]>((f.channels + 3) / 4);
                    b.dose = std::make_unique<std::atomic<std::uint64_t>[]>(f.channels);
                }
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
    u->frames_seen.store(u->frames_seen.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    if (written)
        u->frames_written.store(u->frames_written.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    if (_view != nullptr) return;  // the processing thread's live view publishes
    // A unit that changed its frame size (a new stream): keep the first layout.
    if (!u->publishable || f.channels != u->channels || f.samples == nullptr) return;
    std::uint64_t* d = u->dose.data();
    const std::uint16_t* s = f.samples;
    for (std::uint32_t c = 0; c < u->channels; ++c) d[c] += s[c];
    ++u->dose_frames;
    const std::uint64_t now = coarse_now_ns();
    if (u->published.load(std::memory_order_relaxed) < 0 || now - u->last_publish_ns >= _interval_ns) publish(*u, f, now);
}

void live_tap::publish(unit_slot& u, const frame& f, std::uint64_t now_ns) noexcept {
    const int current = u.published.load(std::memory_order_relaxed);
    const int next = current == 0 ? 1 : 0;
    live_buffer& b = u.buffers[next];
    const std::uint64_t seq = b.seq.load(std::memory_order_relaxed);
    b.seq.store(seq + 1, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_release);
    b.frame_number.store(f.frame_number, std::memory_order_relaxed);
    b.timestamp_ns.store(f.timestamp_ns, std::memory_order_relaxed);
    b.missing_packets.store(f.missing_packets, std::memory_order_relaxed);
    b.dose_frames.store(u.dose_frames, std::memory_order_relaxed);
    b.published_ns.store(now_ns, std::memory_order_relaxed);
    const std::uint32_t words = (u.channels + 3) / 4;
    for (std::uint32_t w = 0; w < words; ++w) {
        std::uint64_t v = 0;
        const std::uint32_t first = w * 4;
        std::memcpy(&v, f.samples + first, std::min<std::uint32_t>(4, u.channels - first) * sizeof(std::uint16_t));
        b.samples[w].store(v, std::memory_order_relaxed);
    }
    for (std::uint32_t c = 0; c < u.channels; ++c) b.dose[c].store(u.dose[c], std::memory_order_relaxed);
    b.seq.store(seq + 2, std::memory_order_release);
    u.published.store(next, std::memory_order_release);
    u.last_publish_ns = now_ns;
}

bool live_tap::read(std::uint16_t unit_id, live_frame& out) const {
    if (_view != nullptr) {
        thread_local live_snapshot snap;  // reused: no allocation per read once warm
        if (!_view->snapshot(unit_id, snap)) return false;
        out.unit_id = snap.unit_id;
        out.channels = snap.channels;
        out.frame_number = snap.frame_number;
        out.timestamp_ns = snap.timestamp_ns;
        out.missing_packets = snap.missing_packets;
        out.dose_frames = snap.dose_frames;
        out.published_ns = snap.published_ns;
        out.samples.assign(snap.raw.begin(), snap.raw.end());
        out.calibrated.assign(snap.calibrated.begin(), snap.calibrated.end());
        out.dose.assign(snap.dose.begin(), snap.dose.end());
        out.dose_kind = snap.dose.empty() ? "none" : "calibrated";
        return true;
    }
    out.dose_kind = "raw";
    out.calibrated.clear();
    const unit_slot* u = _by_id[unit_id].load(std::memory_order_acquire);
    if (u == nullptr || !u->publishable) return false;
    out.unit_id = u->unit_id;
    out.channels = u->channels;
    out.samples.resize(u->channels);
    out.dose.resize(u->channels);
    const std::uint32_t words = (u->channels + 3) / 4;
    for (int attempt = 0; attempt < read_attempts; ++attempt) {
        const int index = u->published.load(std::memory_order_acquire);
        if (index < 0) return false;
        const live_buffer& b = u->buffers[index];
        const std::uint64_t before = b.seq.load(std::memory_order_acquire);
        if (before & 1u) continue;  // being written (the writer went round both buffers)
        out.frame_number = b.frame_number.load(std::memory_order_relaxed);
        out.timestamp_ns = b.timestamp_ns.load(std::memory_order_relaxed);
        out.missing_packets = static_cast<std::uint16_t>(b.missing_packets.load(std::memory_order_relaxed));
        out.dose_frames = b.dose_frames.load(std::memory_order_relaxed);
        out.published_ns = b.published_ns.load(std::memory_order_relaxed);
        for (std::uint32_t w = 0; w < words; ++w) {
            const std::uint64_t v = b.samples[w].load(std::memory_order_relaxed);
            const std::uint32_t first = w * 4;
            std::memcpy(out.samples.data() + first, &v,
                        std::min<std::uint32_t>(4, u->channels - first) * sizeof(std::uint16_t));
        }
        for (std::uint32_t c = 0; c < u->channels; ++c)
            out.dose[c] = static_cast<double>(b.dose[c].load(std::memory_order_relaxed));
        std::atomic_thread_fence(std::memory_order_acquire);
        if (b.seq.load(std::memory_order_relaxed) == before) return true;
    }
    return false;
}

}  // namespace daqd::processing
