// cuda_equivalence: the CUDA engine against the CPU reference.
//
// For odd and even channel counts (1, 33, 4096, 4097), two units with their
// own constants, frames of both units interleaved, absolute and k x noise
// thresholds, frames with zeroed slices (incomplete frames) and batch sizes
// from 1 to more than a chunk, it checks that every calibrated value is
// bit-identical to daqd::kernels::calibrate_row and that the float64 dose
// agrees within 1e-9 relative (of the sum of |values|; the GPU adds in another
// order).
//
// Exit status 0: all equal, or no CUDA device (prints "SKIPPED: ..."); 1: a
// difference (the first ones are printed). Needs only the CUDA runtime.
#include "daqd/kernels/cpu.hpp"
#include "daqd/kernels/cuda_engine.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace {

struct unit_consts {
    std::vector<float> pedestal, noise, gain, threshold;
};

unit_consts make_unit(std::uint32_t channels, bool noise_mode, float value, std::mt19937_64& rng) {
    std::normal_distribution<float> ped(1000.0f, 50.0f);
    std::uniform_real_distribution<float> sig(3.0f, 8.0f);
    std::uniform_real_distribution<float> g(0.5f, 2.0f);
    unit_consts u;
    u.pedestal.resize(channels);
    u.noise.resize(channels);
    u.gain.resize(channels);
    u.threshold.resize(channels);
    for (std::uint32_t c = 0; c < channels; ++c) {
        u.pedestal[c] = ped(rng);
        u.noise[c] = sig(rng);
        u.gain[c] = g(rng);
    }
    daqd::kernels::make_threshold(noise_mode, value, u.noise.data(), u.threshold.data(), channels);
    return u;
}

int failures = 0;

void fail(const std::string& what) {
    if (++failures <= 20) std::fprintf(stderr, "cuda_equivalence: %s\n", what.c_str());
}

void run_case(daqd::kernels::cuda_engine& engine, std::uint32_t channels, bool noise_mode, float value,
              std::size_t batch, std::size_t batches, std::mt19937_64& rng) {
    // Two units: handles from the engine, same constants on the CPU side.
    unit_consts u[2] = {make_unit(channels, noise_mode, value, rng), make_unit(channels, noise_mode, value, rng)};
    std::uint32_t handle[2];
    for (int k = 0; k < 2; ++k)
        handle[k] = engine.add_unit(channels, u[k].pedestal.data(), u[k].gain.data(), u[k].threshold.data());
    std::vector<double> cpu_dose[2] = {std::vector<double>(channels, 0.0), std::vector<double>(channels, 0.0)};
    std::vector<double> abs_sum[2] = {std::vector<double>(channels, 0.0), std::vector<double>(channels, 0.0)};
    std::normal_distribution<double> noise(0.0, 5.0);
    std::uniform_real_distribution<double> u01(0.0, 1.0);

    std::vector<std::uint16_t> raw(batch * channels);
    std::vector<float> gpu(batch * channels), cpu(batch * channels);
    std::vector<daqd::kernels::cuda_frame> frames(batch);
    std::vector<int> unit_of(batch);
    for (std::size_t b = 0; b < batches; ++b) {
        for (std::size_t f = 0; f < batch; ++f) {
            const int k = u01(rng) < 0.5 ? 0 : 1;
            unit_of[f] = k;
            std::uint16_t* row = raw.data() + f * channels;
            for (std::uint32_t c = 0; c < channels; ++c) {
                double v = u[k].pedestal[c] + noise(rng);
                if (u01(rng) < 0.05) v += 200.0 * u01(rng);  // hits
                row[c] = static_cast<std::uint16_t>(std::clamp(std::lround(v), 0l, 65535l));
            }
            if (f % 5 == 3) {  // an incomplete frame: a zeroed slice
                const std::uint32_t from = channels / 3, to = std::min<std::uint32_t>(channels, from + 700);
                for (std::uint32_t c = from; c < to; ++c) row[c] = 0;
            }
            frames[f] = {row, gpu.data() + f * channels, channels, handle[k]};
        }
        engine.process(frames.data(), frames.size(), true);
        for (std::size_t f = 0; f < batch; ++f) {
            const int k = unit_of[f];
            daqd::kernels::calibrate_dose_row(raw.data() + f * channels, u[k].pedestal.data(), u[k].gain.data(),
                                              u[k].threshold.data(), cpu.data() + f * channels, cpu_dose[k].data(),
                                              channels);
            for (std::uint32_t c = 0; c < channels; ++c) abs_sum[k][c] += std::fabs(cpu[f * channels + c]);
        }
        if (std::memcmp(gpu.data(), cpu.data(), gpu.size() * sizeof(float)) != 0) {
            for (std::size_t i = 0; i < gpu.size(); ++i)
                if (std::memcmp(&gpu[i], &cpu[i], sizeof(float)) != 0) {
                    fail("channels=" + std::to_string(channels) + " batch=" + std::to_string(batch) + " frame " +
                         std::to_string(i / channels) + " channel " + std::to_string(i % channels) + ": gpu " +
                         std::to_string(gpu[i]) + " cpu " + std::to_string(cpu[i]));
                    break;
                }
        }
    }
    for (int k = 0; k < 2; ++k) {
        std::vector<double> gpu_dose(channels);
        engine.read_dose(handle[k], gpu_dose.data());
        for (std::uint32_t c = 0; c < channels; ++c) {
            const double tol = 1e-9 * std::max(1.0, abs_sum[k][c]);
            if (std::fabs(gpu_dose[c] - cpu_dose[k][c]) > tol) {
                fail("channels=" + std::to_string(channels) + " batch=" + std::to_string(batch) + " dose of unit " +
                     std::to_string(k) + " channel " + std::to_string(c) + ": gpu " + std::to_string(gpu_dose[c]) +
                     " cpu " + std::to_string(cpu_dose[k][c]));
                break;
            }
        }
    }
}

}  // namespace

int main() {
    std::string why;
    if (!daqd::kernels::cuda_device_available(&why)) {
        std::printf("cuda_equivalence: SKIPPED: %s (nothing to compare)\n", why.c_str());
        return 0;
    }
    try {
        std::mt19937_64 rng(12345);
        int cases = 0;
        for (std::uint32_t channels : {1u, 33u, 4096u, 4097u}) {
            daqd::kernels::cuda_engine engine(8192, 64, 3);
            for (bool noise_mode : {false, true})
                for (std::size_t batch : {std::size_t{1}, std::size_t{7}, std::size_t{300}}) {
                    run_case(engine, channels, noise_mode, noise_mode ? 5.0f : 12.5f, batch, batch == 1 ? 20 : 3, rng);
                    ++cases;
                }
            std::printf("cuda_equivalence: %u channels done on %s\n", channels, engine.device_name().c_str());
        }
        if (failures) {
            std::printf("cuda_equivalence: FAILED (%d differences)\n", failures);
            return 1;
        }
        std::printf("cuda_equivalence: %d cases: calibrated bit-identical, dose within 1e-9\n", cases);
        return 0;
    } catch (const std::exception& e) {
        std::printf("cuda_equivalence: FAILED: %s\n", e.what());
        return 1;
    }
}
