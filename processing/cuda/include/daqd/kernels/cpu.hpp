#pragma once
// The calibration arithmetic on the CPU: the reference every backend must
// match, and the loops daqd's CPU backend runs.
//
// Header-only and dependency-free (standard C++ only) so that the standalone
// CUDA build in processing/cuda can compare the GPU against it without the
// rest of daqd. No state, no allocation: callers own every buffer; any thread.
//
// The formula, per channel c of a frame:
//     v = (float(raw[c]) - pedestal[c]) * gain[c]      two float32 roundings, no FMA
//     calibrated[c] = v < threshold[c] ? 0 : v
//     dose[c] += double(calibrated[c])                 float64 accumulation
// Compile with -fno-fast-math -ffp-contract=off (processing/CMakeLists.txt does)
// so the subtraction and the product are rounded separately, as the CUDA
// kernel does with __fsub_rn/__fmul_rn: the float32 results are then
// bit-identical on both.
#include <cstddef>
#include <cstdint>

namespace daqd::kernels {

// Calibrates one row of n channels. No aliasing between the arrays.
inline void calibrate_row(const std::uint16_t* __restrict raw, const float* __restrict pedestal,
                          const float* __restrict gain, const float* __restrict threshold, float* __restrict out,
                          std::size_t n) noexcept {
    for (std::size_t c = 0; c < n; ++c) {
        const float v = (static_cast<float>(raw[c]) - pedestal[c]) * gain[c];
        out[c] = v < threshold[c] ? 0.0f : v;
    }
}

// dose[c] += calibrated[c] over one row.
inline void accumulate_row(const float* __restrict calibrated, double* __restrict dose, std::size_t n) noexcept {
    for (std::size_t c = 0; c < n; ++c) dose[c] += static_cast<double>(calibrated[c]);
}

// Calibrates one row and adds it to the running dose, in blocks of 512
// channels: the block's calibrated values are added while they are still in
// the L1 cache (two simple loops vectorise; one loop doing both does not,
// with GCC 12).
inline void calibrate_dose_row(const std::uint16_t* __restrict raw, const float* __restrict pedestal,
                               const float* __restrict gain, const float* __restrict threshold, float* __restrict out,
                               double* __restrict dose, std::size_t n) noexcept {
    constexpr std::size_t block = 512;
    for (std::size_t at = 0; at < n; at += block) {
        const std::size_t m = n - at < block ? n - at : block;
        calibrate_row(raw + at, pedestal + at, gain + at, threshold + at, out + at, m);
        accumulate_row(out + at, dose + at, m);
    }
}

// Per-channel threshold from the policy: absolute (the same value for every
// channel) or k x noise. One float32 product per channel, computed once when
// the constants are loaded and then shared by every backend.
inline void make_threshold(bool noise_mode, float value, const float* noise, float* out, std::size_t n) noexcept {
    for (std::size_t c = 0; c < n; ++c) out[c] = noise_mode ? value * noise[c] : value;
}

}  // namespace daqd::kernels
