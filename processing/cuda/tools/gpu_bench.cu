// gpu_bench: throughput of the CUDA calibration engine for 4096-channel
// frames, against what the hardware could do with the same bytes.
//
//  end to end   cuda_engine::process() (pack into pinned memory, host->device,
//               fused calibrate+threshold+dose kernel, device->host, unpack),
//               frames/s and GB/s of raw input, batch sizes 1..1024;
//  copy ceiling a plain pinned host->device copy of the raw bytes plus a
//               device->host copy of the calibrated bytes (the transfer the
//               engine cannot avoid), same sizes, same run;
//  kernel only  the fused kernel on data already on the device, GB/s of
//               bytes moved (2 B in + 4 B out per channel), against a
//               device-to-device cudaMemcpy (read + write bytes per second).
//
// usage: gpu_bench [--channels N] [--seconds S]     (prints one table)
// Needs a CUDA device; without one it says so and exits 0.
#include "daqd/kernels/cuda_engine.hpp"

#include <cuda_runtime.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

void check(cudaError_t e, const char* what) {
    if (e != cudaSuccess) {
        std::fprintf(stderr, "gpu_bench: %s: %s\n", what, cudaGetErrorString(e));
        std::exit(1);
    }
}

double now_s() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

int main(int argc, char** argv) {
    std::uint32_t channels = 4096;
    double seconds = 0.5;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (std::strcmp(argv[i], "--channels") == 0) channels = static_cast<std::uint32_t>(std::atoi(argv[i + 1]));
        else if (std::strcmp(argv[i], "--seconds") == 0) seconds = std::atof(argv[i + 1]);
    }
    std::string why;
    if (!daqd::kernels::cuda_device_available(&why)) {
        std::printf("gpu_bench: no GPU figures: %s\n", why.c_str());
        return 0;
    }
    const std::size_t max_batch = 1024;
    const std::size_t raw_bytes_frame = std::size_t{channels} * 2;
    std::vector<std::uint16_t> raw(max_batch * channels);
    for (std::size_t i = 0; i < raw.size(); ++i) raw[i] = static_cast<std::uint16_t>(1000 + (i * 7919) % 64);
    std::vector<float> out(max_batch * channels);
    std::vector<float> ped(channels, 1000.0f), gain(channels, 1.0f), thr(channels, 15.0f);

    daqd::kernels::cuda_engine engine(channels, 256, 3);
    const std::uint32_t unit = engine.add_unit(channels, ped.data(), gain.data(), thr.data());
    std::printf("gpu_bench: %s, %u channels per frame\n", engine.device_name().c_str(), channels);

    // Copy ceiling: pinned buffers, H2D of raw + D2H of the float rows.
    std::uint16_t* h_raw = nullptr;
    float* h_out = nullptr;
    void* d_a = nullptr;
    void* d_b = nullptr;
    const std::size_t max_raw = max_batch * raw_bytes_frame, max_out = max_batch * channels * 4;
    check(cudaMallocHost(&h_raw, max_raw), "cudaMallocHost");
    check(cudaMallocHost(&h_out, max_out), "cudaMallocHost");
    check(cudaMalloc(&d_a, max_out), "cudaMalloc");
    check(cudaMalloc(&d_b, max_out), "cudaMalloc");
    std::memcpy(h_raw, raw.data(), max_raw);

    std::printf("%6s %14s %12s %14s %8s\n", "batch", "frames/s", "GB/s raw", "copy GB/s raw", "ratio");
    for (std::size_t batch : {1, 4, 16, 64, 256, 1024}) {
        std::vector<daqd::kernels::cuda_frame> frames(batch);
        for (std::size_t f = 0; f < batch; ++f)
            frames[f] = {raw.data() + f * channels, out.data() + f * channels, channels, unit};
        engine.process(frames.data(), batch, true);  // warm-up
        std::size_t done = 0;
        const double t0 = now_s();
        double t1 = t0;
        while (t1 - t0 < seconds) {
            engine.process(frames.data(), batch, true);
            done += batch;
            t1 = now_s();
        }
        const double e2e = static_cast<double>(done) / (t1 - t0);
        // The same bytes, copied only.
        std::size_t copied = 0;
        const double c0 = now_s();
        double c1 = c0;
        while (c1 - c0 < seconds) {
            check(cudaMemcpy(d_a, h_raw, batch * raw_bytes_frame, cudaMemcpyHostToDevice), "cudaMemcpy H2D");
            check(cudaMemcpy(h_out, d_b, batch * channels * 4, cudaMemcpyDeviceToHost), "cudaMemcpy D2H");
            copied += batch;
            c1 = now_s();
        }
        const double copy = static_cast<double>(copied) / (c1 - c0);
        std::printf("%6zu %14.0f %12.2f %14.2f %8.2f\n", batch, e2e, e2e * raw_bytes_frame / 1e9,
                    copy * raw_bytes_frame / 1e9, e2e / copy);
    }

    // Kernel alone vs device memory bandwidth.
    const std::size_t kframes = 4096;
    const double k = engine.time_kernel_only(channels, kframes, true, 20);
    const double kbytes = static_cast<double>(kframes) * channels * 6.0;  // 2 B read + 4 B written
    cudaEvent_t a, b;
    check(cudaEventCreate(&a), "cudaEventCreate");
    check(cudaEventCreate(&b), "cudaEventCreate");
    const std::size_t dbytes = max_out;
    check(cudaMemcpy(d_b, d_a, dbytes, cudaMemcpyDeviceToDevice), "cudaMemcpy D2D");
    check(cudaEventRecord(a), "cudaEventRecord");
    for (int r = 0; r < 20; ++r) check(cudaMemcpy(d_b, d_a, dbytes, cudaMemcpyDeviceToDevice), "cudaMemcpy D2D");
    check(cudaEventRecord(b), "cudaEventRecord");
    check(cudaEventSynchronize(b), "cudaEventSynchronize");
    float ms = 0;
    check(cudaEventElapsedTime(&ms, a, b), "cudaEventElapsedTime");
    const double d2d = 2.0 * dbytes * 20 / (ms / 1000.0);  // read + write
    std::printf("kernel only: %zu frames in %.3f ms: %.0f frames/s, %.1f GB/s moved; device memcpy %.1f GB/s "
                "(read+write): ratio %.2f\n",
                kframes, k * 1e3, kframes / k, kbytes / k / 1e9, d2d / 1e9, kbytes / k / d2d);
    cudaFreeHost(h_raw);
    cudaFreeHost(h_out);
    cudaFree(d_a);
    cudaFree(d_b);
    return 0;
}
