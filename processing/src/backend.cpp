// The CPU backend and the backend choice. Compiled with -O3 -fno-fast-math
// -ffp-contract=off (processing/CMakeLists.txt): the row loops vectorise and
// keep the float32 rounding of the reference.
#include "daqd/processing/backend.hpp"

#include "daqd/kernels/cpu.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <vector>

#ifdef DAQD_HAVE_CUDA
#include "daqd/kernels/cuda_engine.hpp"
#endif

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace daqd::processing {

namespace {


// One frame's row loops, built twice (AVX2 and baseline x86-64) and chosen
// at load time for the CPU. Same IEEE float32 operations either way (no FMA:
// -ffp-contract=off, and "avx2" does not enable FMA), so the values do not
// depend on the clone.
// Not under the sanitizers: their runtimes are not ready when the ifunc
// resolver runs at load time (ThreadSanitizer crashes there).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__) && \
    !defined(__SANITIZE_THREAD__)
#define DAQD_ROW_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define DAQD_ROW_CLONES
#endif

// Copies n floats with non-temporal (streaming) stores when dst is 16-byte
// aligned: the calibrated rows are written once and read later by the writer
// thread, so they need not displace the cache, and the stores skip the
// read-for-ownership of the destination line (a third of the memory traffic
// of calibrate). Callers issue one store fence before the rows are published.
inline void stream_copy(float* __restrict dst, const float* __restrict src, std::size_t n) noexcept {
#if defined(__SSE2__)
    if ((reinterpret_cast<std::uintptr_t>(dst) & 15u) == 0) {
        std::size_t i = 0;
        for (; i + 4 <= n; i += 4) _mm_stream_ps(dst + i, _mm_load_ps(src + i));
        for (; i < n; ++i) dst[i] = src[i];
        return;
    }
#endif
    std::memcpy(dst, src, n * sizeof(float));
}

// Calibrates one block of at most `block` channels of one row: the
// vectorised loops of daqd/kernels/cpu.hpp into an L1-resident scratch block,
// the dose added from there, then the block streamed to the row.
constexpr std::size_t block = 512;

DAQD_ROW_CLONES
void calibrate_block(const std::uint16_t* raw, const float* pedestal, const float* gain, const float* threshold,
                     float* out, double* dose, std::size_t m) noexcept {
    alignas(64) float scratch[block];
    kernels::calibrate_row(raw, pedestal, gain, threshold, scratch, m);
    if (dose != nullptr) kernels::accumulate_row(scratch, dose, m);
    stream_copy(out, scratch, m);
}

class cpu_backend final : public backend {
public:
    cpu_backend() : _units(max_units) {}

    std::string_view name() const noexcept override { return "cpu"; }
    std::string description() const override { return "cpu"; }

    void add_unit(const unit_constants& c) override {
        auto u = std::make_unique<unit>();
        u->constants = c;
        u->dose.assign(c.channels, 0.0);
        _units[c.unit_id] = std::move(u);
    }

    void update_unit(const unit_constants& c) override {
        unit* u = _units[c.unit_id].get();
        if (u == nullptr || u->constants.channels != c.channels) return add_unit(c);
        u->constants = c;
    }

    // Frame by frame, each row in blocks (a block-major order over the batch
    // keeps the dose in L1 but measured slower: the streamed rows interleave).
    void calibrate(std::span<frame> frames, bool dose) override {
        for (frame& f : frames) {
            unit& u = *_units[f.unit_id];
            const auto& c = u.constants;
            for (std::size_t at = 0; at < f.channels; at += block) {
                const std::size_t m = std::min<std::size_t>(block, f.channels - at);
                calibrate_block(f.samples + at, c.pedestal.data() + at, c.gain.data() + at, c.threshold.data() + at,
                                f.calibrated + at, dose ? u.dose.data() + at : nullptr, m);
            }
        }
#if defined(__SSE2__)
        _mm_sfence();  // the streamed rows are visible before the frames are handed on
#endif
    }

    bool read_dose(std::uint16_t unit_id, std::span<double> out) override {
        const unit* u = _units[unit_id].get();
        if (u == nullptr || out.size() != u->dose.size()) return false;
        std::copy(u->dose.begin(), u->dose.end(), out.begin());
        return true;
    }

    void reset_dose() override {
        for (auto& u : _units)
            if (u) std::fill(u->dose.begin(), u->dose.end(), 0.0);
    }

private:
    struct unit {
        unit_constants constants;
        std::vector<double> dose;
    };
    std::vector<std::unique_ptr<unit>> _units;  // by unit id
};

#ifdef DAQD_HAVE_CUDA
class cuda_backend final : public backend {
public:
    cuda_backend(std::size_t max_channels, std::size_t batch_frames)
        : _engine(max_channels, std::max<std::size_t>(16, std::min<std::size_t>(batch_frames, 256)), 3),
          _handles(max_units, no_unit), _channels(max_units, 0) {
        _frames.reserve(std::max<std::size_t>(batch_frames, 1));
    }

    std::string_view name() const noexcept override { return "cuda"; }
    std::string description() const override { return "cuda (" + _engine.device_name() + ")"; }

    void add_unit(const unit_constants& c) override {
        _handles[c.unit_id] = _engine.add_unit(c.channels, c.pedestal.data(), c.gain.data(), c.threshold.data());
        _channels[c.unit_id] = c.channels;
    }

    void update_unit(const unit_constants& c) override {
        if (_handles[c.unit_id] == no_unit || _channels[c.unit_id] != c.channels) return add_unit(c);
        _engine.update_unit(_handles[c.unit_id], c.pedestal.data(), c.gain.data(), c.threshold.data());
    }

    void calibrate(std::span<frame> frames, bool dose) override {
        _frames.clear();  // capacity kept: no allocation for batches up to batch_frames
        for (const frame& f : frames) _frames.push_back({f.samples, f.calibrated, f.channels, _handles[f.unit_id]});
        _engine.process(_frames.data(), _frames.size(), dose);
    }

    bool read_dose(std::uint16_t unit_id, std::span<double> out) override {
        if (_handles[unit_id] == no_unit || out.size() != _channels[unit_id]) return false;
        _engine.read_dose(_handles[unit_id], out.data());
        return true;
    }

    void reset_dose() override { _engine.reset_dose(); }

private:
    static constexpr std::uint32_t no_unit = ~0u;
    kernels::cuda_engine _engine;
    std::vector<std::uint32_t> _handles;   // engine handle by unit id
    std::vector<std::uint32_t> _channels;  // by unit id
    std::vector<kernels::cuda_frame> _frames;
};
#endif

}  // namespace

std::unique_ptr<backend> make_cpu_backend() { return std::make_unique<cpu_backend>(); }

bool cuda_built() noexcept {
#ifdef DAQD_HAVE_CUDA
    return true;
#else
    return false;
#endif
}

std::unique_ptr<backend> make_cuda_backend([[maybe_unused]] std::size_t max_channels,
                                           [[maybe_unused]] std::size_t batch_frames) {
#ifdef DAQD_HAVE_CUDA
    std::string why;
    if (!kernels::cuda_device_available(&why)) throw std::runtime_error(why);
    return std::make_unique<cuda_backend>(max_channels, batch_frames);
#else
    throw std::runtime_error("daqd was built without CUDA");
#endif
}

std::unique_ptr<backend> make_backend(std::string_view requested, std::size_t max_channels, std::size_t batch_frames,
                                      std::string& why) {
    if (requested == "cpu") {
        why = "processing.backend = \"cpu\"";
        return make_cpu_backend();
    }
    if (requested == "cuda") {
        try {
            auto b = make_cuda_backend(max_channels, batch_frames);
            why = "processing.backend = \"cuda\"";
            return b;
        } catch (const std::exception& e) {
            throw std::runtime_error(fmt::format("processing.backend = \"cuda\": {}", e.what()));
        }
    }
    if (requested != "auto") throw std::runtime_error(fmt::format("unknown processing backend '{}'", requested));
    if (!cuda_built()) {
        why = "auto: daqd was built without CUDA";
        return make_cpu_backend();
    }
    try {
        auto b = make_cuda_backend(max_channels, batch_frames);
        why = "auto: CUDA device found";
        return b;
    } catch (const std::exception& e) {
        why = fmt::format("auto: {}", e.what());
        return make_cpu_backend();
    }
}

}  // namespace daqd::processing
