// The live view's lock-free publication (live_view.hpp).
#include "daqd/processing/live_view.hpp"

#include <algorithm>
#include <bit>
#include <cstring>
#include <new>

namespace daqd::processing {

namespace {

constexpr int read_attempts = 64;

// Values packed into 64-bit words, stored and loaded as relaxed atomics.
template <typename T>
void store_packed(std::atomic<std::uint64_t>* words, const T* values, std::uint32_t n) noexcept {
    constexpr std::uint32_t per_word = sizeof(std::uint64_t) / sizeof(T);
    for (std::uint32_t w = 0, first = 0; first < n; ++w, first += per_word) {
        std::uint64_t v = 0;
        std::memcpy(&v, values + first, std::min(per_word, n - first) * sizeof(T));
        words[w].store(v, std::memory_order_relaxed);
    }
}

template <typename T>
void load_packed(const std::atomic<std::uint64_t>* words, T* values, std::uint32_t n) noexcept {
    constexpr std::uint32_t per_word = sizeof(std::uint64_t) / sizeof(T);
    for (std::uint32_t w = 0, first = 0; first < n; ++w, first += per_word) {
        const std::uint64_t v = words[w].load(std::memory_order_relaxed);
        std::memcpy(values + first, &v, std::min(per_word, n - first) * sizeof(T));
    }
}

template <typename T>
std::unique_ptr<std::atomic<std::uint64_t>[]> packed_words(std::uint32_t n) {
    constexpr std::uint32_t per_word = sizeof(std::uint64_t) / sizeof(T);
    return std::make_unique<std::atomic<std::uint64_t>[]>((n + per_word - 1) / per_word);
}

}  // namespace

struct live_buffer {
    std::atomic<std::uint64_t> seq{0};  // odd while the publisher fills it
    std::atomic<std::uint64_t> frame_number{0};
    std::atomic<std::uint64_t> timestamp_ns{0};
    std::atomic<std::uint64_t> missing_packets{0};
    std::atomic<std::uint64_t> dose_frames{0};
    std::atomic<std::uint64_t> published_ns{0};
    std::atomic<std::uint64_t> publications{0};
    std::unique_ptr<std::atomic<std::uint64_t>[]> samples;     // uint16, four to a word
    std::unique_ptr<std::atomic<std::uint64_t>[]> calibrated;  // float, two to a word; null: none
    std::unique_ptr<std::atomic<std::uint64_t>[]> dose;        // double, one a word; null: none
};

struct live_view::slot {
    std::uint16_t unit_id = 0;
    std::uint32_t channels = 0;
    const char* dose_kind = "none";
    std::atomic<int> published{-1};  // the buffer readers use; -1: none yet
    std::uint64_t publications = 0;  // publisher only
    live_buffer buffers[2];
};

live_view::live_view(std::chrono::nanoseconds interval)
    : _interval(interval),
      _by_id(std::make_unique<std::atomic<slot*>[]>(max_units)),
      _order(std::make_unique<std::atomic<slot*>[]>(max_units)) {}

live_view::~live_view() = default;

live_view::slot* live_view::add_unit(std::uint16_t unit_id, std::uint32_t channels, bool calibrated,
                                     const char* dose_kind) {
    if (slot* s = _by_id[unit_id].load(std::memory_order_acquire)) return s;
    if (channels == 0 || channels > max_channels) return nullptr;
    const bool dose = std::strcmp(dose_kind, "none") != 0;
    std::unique_ptr<slot> s;
    try {
        s = std::make_unique<slot>();
        for (auto& b : s->buffers) {
            b.samples = packed_words<std::uint16_t>(channels);
            if (calibrated) b.calibrated = packed_words<float>(channels);
            if (dose) b.dose = packed_words<double>(channels);
        }
        _owned.reserve(_owned.size() + 1);
    } catch (const std::bad_alloc&) {
        return nullptr;
    }
    s->unit_id = unit_id;
    s->channels = channels;
    s->dose_kind = dose_kind;
    slot* raw = s.get();
    _owned.push_back(std::move(s));
    const std::uint32_t n = _count.load(std::memory_order_relaxed);
    _order[n].store(raw, std::memory_order_release);
    _by_id[unit_id].store(raw, std::memory_order_release);
    _count.store(n + 1, std::memory_order_release);
    return raw;
}

void live_view::publish(slot& s, const frame& f, std::span<const double> dose, std::uint64_t dose_frames,
                        std::uint64_t now_ns) noexcept {
    const int next = s.published.load(std::memory_order_relaxed) == 0 ? 1 : 0;
    live_buffer& b = s.buffers[next];
    const std::uint64_t seq = b.seq.load(std::memory_order_relaxed);
    b.seq.store(seq + 1, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_release);
    const std::uint32_t n = std::min(f.channels, s.channels);
    b.frame_number.store(f.frame_number, std::memory_order_relaxed);
    b.timestamp_ns.store(f.timestamp_ns, std::memory_order_relaxed);
    b.missing_packets.store(f.missing_packets, std::memory_order_relaxed);
    b.published_ns.store(now_ns, std::memory_order_relaxed);
    b.publications.store(++s.publications, std::memory_order_relaxed);
    if (f.samples != nullptr) store_packed(b.samples.get(), f.samples, n);
    if (b.calibrated && f.calibrated != nullptr) store_packed(b.calibrated.get(), f.calibrated, n);
    if (b.dose && dose.size() == s.channels) {
        store_packed(b.dose.get(), dose.data(), s.channels);
        b.dose_frames.store(dose_frames, std::memory_order_relaxed);
    }
    b.seq.store(seq + 2, std::memory_order_release);
    s.published.store(next, std::memory_order_release);
}

std::vector<std::uint16_t> live_view::units() const {
    std::vector<std::uint16_t> out;
    const std::uint32_t n = _count.load(std::memory_order_acquire);
    out.reserve(n);
    for (std::uint32_t i = 0; i < n; ++i) out.push_back(_order[i].load(std::memory_order_acquire)->unit_id);
    return out;
}

bool live_view::has_unit(std::uint16_t unit_id) const noexcept {
    return _by_id[unit_id].load(std::memory_order_acquire) != nullptr;
}

bool live_view::read(std::uint16_t unit_id, live_frame& out) const {
    const slot* s = _by_id[unit_id].load(std::memory_order_acquire);
    if (s == nullptr) return false;
    const std::uint32_t n = s->channels;
    out.unit_id = s->unit_id;
    out.channels = n;
    out.dose_kind = s->dose_kind;
    out.samples.resize(n);
    out.calibrated.resize(s->buffers[0].calibrated ? n : 0);
    out.dose.resize(s->buffers[0].dose ? n : 0);
    for (int attempt = 0; attempt < read_attempts; ++attempt) {
        const int index = s->published.load(std::memory_order_acquire);
        if (index < 0) return false;
        const live_buffer& b = s->buffers[index];
        const std::uint64_t before = b.seq.load(std::memory_order_acquire);
        if (before & 1u) continue;
        out.frame_number = b.frame_number.load(std::memory_order_relaxed);
        out.timestamp_ns = b.timestamp_ns.load(std::memory_order_relaxed);
        out.missing_packets = static_cast<std::uint16_t>(b.missing_packets.load(std::memory_order_relaxed));
        out.published_ns = b.published_ns.load(std::memory_order_relaxed);
        out.publications = b.publications.load(std::memory_order_relaxed);
        out.dose_frames = b.dose_frames.load(std::memory_order_relaxed);
        load_packed(b.samples.get(), out.samples.data(), n);
        if (!out.calibrated.empty()) load_packed(b.calibrated.get(), out.calibrated.data(), n);
        if (!out.dose.empty()) load_packed(b.dose.get(), out.dose.data(), n);
        std::atomic_thread_fence(std::memory_order_acquire);
        if (b.seq.load(std::memory_order_relaxed) == before) return true;
    }
    return false;
}

}  // namespace daqd::processing
