#pragma once
// The CUDA calibration engine: calibrate + threshold + dose fused in one
// kernel, constants resident on the device, frames batched through pinned
// host memory with asynchronous copies on several streams so that the
// host-to-device copy of one chunk, the kernel of another and the
// device-to-host copy of a third overlap.
//
// This header is plain C++ (no CUDA types) so that g++-compiled code can use
// the engine; the implementation is src/cuda_engine.cu. It builds on its own
// with CMake + nvcc + a C++ compiler (processing/cuda/CMakeLists.txt).
//
// Owner: daqd's CUDA backend (processing/src/backend.cpp) or a standalone
// tool. Thread: one thread at a time uses an engine (in daqd the processing
// thread); the engine keeps its CUDA streams and buffers to itself.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace daqd::kernels {

// True when the CUDA runtime finds at least one usable device; otherwise
// false and, if `why` is given, the reason (e.g. "no CUDA device", the driver's
// error text).
bool cuda_device_available(std::string* why = nullptr);

// One frame to calibrate: `channels` raw samples in, `channels` floats out,
// with the constants of the unit registered as `unit`.
struct cuda_frame {
    const std::uint16_t* raw = nullptr;
    float* out = nullptr;
    std::uint32_t channels = 0;
    std::uint32_t unit = 0;  // as returned by cuda_engine::add_unit
};

class cuda_engine {
public:
    // max_channels: the most channels one frame may have. Allocates pinned
    // host and device buffers for `streams` chunks in flight, each of
    // `chunk_frames` frames (and at least one frame of max_channels).
    // Throws std::runtime_error naming the failing CUDA call.
    explicit cuda_engine(std::size_t max_channels, std::size_t chunk_frames = 64, int streams = 3);
    ~cuda_engine();
    cuda_engine(const cuda_engine&) = delete;
    cuda_engine& operator=(const cuda_engine&) = delete;

    // Uploads one unit's constants (channels floats each) and allocates its
    // float64 dose on the device (zeroed). Returns the unit's handle. Once per
    // unit, not per frame (synchronous).
    std::uint32_t add_unit(std::uint32_t channels, const float* pedestal, const float* gain, const float* threshold);
    // Replaces a unit's constants (its channel count and dose kept), between
    // two process() calls (synchronous).
    void update_unit(std::uint32_t unit, const float* pedestal, const float* gain, const float* threshold);

    // Calibrates n frames (and adds them to their unit's dose when `dose`).
    // Returns when every `out` row is written. Internally pipelined in chunks
    // over the streams.
    void process(const cuda_frame* frames, std::size_t n, bool dose);

    // Copies a unit's dose (channels doubles) to `out` (synchronous).
    void read_dose(std::uint32_t unit, double* out);
    // Zeroes every unit's dose.
    void reset_dose();

    [[nodiscard]] std::string device_name() const;

    // ---- for benchmarks: the parts of process() timed alone ----
    // Runs the fused kernel once over `frames` frames of `channels` channels
    // already on the device (unit 0's constants), synchronously; returns
    // seconds elapsed on the device (CUDA events).
    double time_kernel_only(std::uint32_t channels, std::size_t frames, bool dose, int repeats);

private:
    struct impl;
    std::unique_ptr<impl> _impl;
};

}  // namespace daqd::kernels
