// The CUDA calibration engine (include/daqd/kernels/cuda_engine.hpp).
//
// Data path of process(): the frames are cut into chunks; for each chunk the
// calling thread packs the raw rows into a pinned host buffer, then queues on
// the chunk's stream: host->device copy of the frame descriptors and the raw
// samples, the fused kernel, the device->host copy of the calibrated rows, an
// event. With several streams the copies of one chunk overlap the kernel of
// another and the host packing of the next. A chunk's results are copied from
// pinned memory to the callers' rows when its stream slot is needed again or
// at the end of process().
//
// Arithmetic: __fsub_rn/__fmul_rn (no FMA contraction; also built with
// --fmad=false) so calibrated values are bit-identical to daqd::kernels::
// calibrate_row on the CPU. Dose: each thread sums its channel over a group of
// frames in float64 and adds the sum to the unit's dose with a float64
// atomicAdd, so the order of summation differs from the CPU (results agree
// to ~1e-15 relative, tested to 1e-9).
#include "daqd/kernels/cuda_engine.hpp"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

namespace daqd::kernels {

namespace {

void check(cudaError_t e, const char* call) {
    if (e != cudaSuccess) throw std::runtime_error(std::string(call) + " failed: " + cudaGetErrorString(e));
}

struct frame_desc {
    unsigned long long offset;  // first element of the row in the chunk's buffers
    unsigned int channels;
    unsigned int unit;
};

struct unit_desc {
    const float* pedestal;
    const float* gain;
    const float* threshold;
    double* dose;
    unsigned int channels;
    unsigned int pad;
};

constexpr unsigned block_threads = 256;
constexpr unsigned frames_per_group = 8;  // frames one thread walks through (dose summed in a register)

template <bool Dose>
__global__ void calibrate_kernel(const frame_desc* __restrict__ frames, unsigned n_frames,
                                 const unit_desc* __restrict__ units, const unsigned short* __restrict__ raw,
                                 float* __restrict__ out) {
    const unsigned c = blockIdx.x * blockDim.x + threadIdx.x;
    const unsigned f0 = blockIdx.y * frames_per_group;
    const unsigned f1 = min(f0 + frames_per_group, n_frames);
    double acc = 0.0;
    unsigned acc_unit = ~0u;
    for (unsigned f = f0; f < f1; ++f) {
        const frame_desc fd = frames[f];
        if (c >= fd.channels) continue;
        const unit_desc& u = units[fd.unit];
        const float x = __fmul_rn(__fsub_rn(__uint2float_rn(raw[fd.offset + c]), u.pedestal[c]), u.gain[c]);
        const float v = x < u.threshold[c] ? 0.0f : x;
        out[fd.offset + c] = v;
        if (Dose) {
            if (fd.unit != acc_unit) {
                if (acc_unit != ~0u) atomicAdd(&units[acc_unit].dose[c], acc);
                acc = 0.0;
                acc_unit = fd.unit;
            }
            acc += static_cast<double>(v);
        }
    }
    if (Dose && acc_unit != ~0u) atomicAdd(&units[acc_unit].dose[c], acc);
}

void launch(bool dose, const frame_desc* frames, unsigned n, unsigned max_channels, const unit_desc* units,
            const unsigned short* raw, float* out, cudaStream_t s) {
    const dim3 grid((max_channels + block_threads - 1) / block_threads, (n + frames_per_group - 1) / frames_per_group);
    if (dose)
        calibrate_kernel<true><<<grid, block_threads, 0, s>>>(frames, n, units, raw, out);
    else
        calibrate_kernel<false><<<grid, block_threads, 0, s>>>(frames, n, units, raw, out);
    check(cudaGetLastError(), "calibrate_kernel launch");
}

}  // namespace

bool cuda_device_available(std::string* why) {
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        if (why != nullptr) *why = std::string("CUDA runtime: ") + cudaGetErrorString(e);
        cudaGetLastError();  // clear the sticky-free error state
        return false;
    }
    if (n == 0) {
        if (why != nullptr) *why = "no CUDA device";
        return false;
    }
    return true;
}

struct cuda_engine::impl {
    struct slot {
        cudaStream_t stream = nullptr;
        cudaEvent_t done = nullptr;
        unsigned short* h_raw = nullptr;  // pinned
        float* h_out = nullptr;           // pinned
        frame_desc* h_desc = nullptr;     // pinned
        unsigned short* d_raw = nullptr;
        float* d_out = nullptr;
        frame_desc* d_desc = nullptr;
        std::vector<cuda_frame> frames;   // the chunk's frames (capacity chunk_frames, reused)
        bool busy = false;
    };

    struct unit {
        float* pedestal = nullptr;
        float* gain = nullptr;
        float* threshold = nullptr;
        double* dose = nullptr;
        std::uint32_t channels = 0;
    };

    std::size_t max_channels;
    std::size_t chunk_frames;
    std::size_t chunk_elems;
    std::vector<slot> slots;
    std::size_t next = 0;
    std::vector<unit> units;
    unit_desc* d_units = nullptr;
    std::size_t d_units_cap = 0;
    std::string device;

    impl(std::size_t max_ch, std::size_t cf, int streams)
        : max_channels(std::max<std::size_t>(1, max_ch)), chunk_frames(std::max<std::size_t>(1, cf)) {
        int dev = 0;
        check(cudaGetDevice(&dev), "cudaGetDevice");
        cudaDeviceProp prop{};
        check(cudaGetDeviceProperties(&prop, dev), "cudaGetDeviceProperties");
        device = prop.name;
        // A chunk holds chunk_frames frames of up to 4096 channels, and at
        // least one frame of max_channels.
        chunk_elems = std::max(max_channels, chunk_frames * std::min<std::size_t>(max_channels, 4096));
        slots.resize(static_cast<std::size_t>(std::max(1, streams)));
        for (auto& s : slots) {
            check(cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
            check(cudaEventCreateWithFlags(&s.done, cudaEventDisableTiming), "cudaEventCreateWithFlags");
            check(cudaMallocHost(&s.h_raw, chunk_elems * sizeof(unsigned short)), "cudaMallocHost (raw)");
            check(cudaMallocHost(&s.h_out, chunk_elems * sizeof(float)), "cudaMallocHost (calibrated)");
            check(cudaMallocHost(&s.h_desc, chunk_frames * sizeof(frame_desc)), "cudaMallocHost (descriptors)");
            check(cudaMalloc(&s.d_raw, chunk_elems * sizeof(unsigned short)), "cudaMalloc (raw)");
            check(cudaMalloc(&s.d_out, chunk_elems * sizeof(float)), "cudaMalloc (calibrated)");
            check(cudaMalloc(&s.d_desc, chunk_frames * sizeof(frame_desc)), "cudaMalloc (descriptors)");
            s.frames.reserve(chunk_frames);
        }
    }

    ~impl() {
        cudaDeviceSynchronize();
        for (auto& s : slots) {
            cudaFreeHost(s.h_raw);
            cudaFreeHost(s.h_out);
            cudaFreeHost(s.h_desc);
            cudaFree(s.d_raw);
            cudaFree(s.d_out);
            cudaFree(s.d_desc);
            if (s.done) cudaEventDestroy(s.done);
            if (s.stream) cudaStreamDestroy(s.stream);
        }
        for (auto& u : units) {
            cudaFree(u.pedestal);
            cudaFree(u.gain);
            cudaFree(u.threshold);
            cudaFree(u.dose);
        }
        cudaFree(d_units);
    }

    std::uint32_t add_unit(std::uint32_t channels, const float* pedestal, const float* gain, const float* threshold) {
        if (channels == 0 || channels > max_channels)
            throw std::runtime_error("cuda_engine::add_unit: " + std::to_string(channels) +
                                     " channels (engine built for at most " + std::to_string(max_channels) + ")");
        unit u;
        u.channels = channels;
        const std::size_t fb = std::size_t{channels} * sizeof(float);
        check(cudaMalloc(&u.pedestal, fb), "cudaMalloc (pedestal)");
        check(cudaMalloc(&u.gain, fb), "cudaMalloc (gain)");
        check(cudaMalloc(&u.threshold, fb), "cudaMalloc (threshold)");
        check(cudaMalloc(&u.dose, std::size_t{channels} * sizeof(double)), "cudaMalloc (dose)");
        check(cudaMemcpy(u.pedestal, pedestal, fb, cudaMemcpyHostToDevice), "cudaMemcpy (pedestal)");
        check(cudaMemcpy(u.gain, gain, fb, cudaMemcpyHostToDevice), "cudaMemcpy (gain)");
        check(cudaMemcpy(u.threshold, threshold, fb, cudaMemcpyHostToDevice), "cudaMemcpy (threshold)");
        check(cudaMemset(u.dose, 0, std::size_t{channels} * sizeof(double)), "cudaMemset (dose)");
        units.push_back(u);
        // The device's table of units: regrown (rarely) and re-uploaded whole.
        if (units.size() > d_units_cap) {
            check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
            cudaFree(d_units);
            d_units = nullptr;
            d_units_cap = std::max<std::size_t>(16, d_units_cap * 2);
            check(cudaMalloc(&d_units, d_units_cap * sizeof(unit_desc)), "cudaMalloc (unit table)");
        }
        std::vector<unit_desc> table(units.size());
        for (std::size_t i = 0; i < units.size(); ++i)
            table[i] = {units[i].pedestal, units[i].gain, units[i].threshold, units[i].dose, units[i].channels, 0};
        check(cudaMemcpy(d_units, table.data(), table.size() * sizeof(unit_desc), cudaMemcpyHostToDevice),
              "cudaMemcpy (unit table)");
        return static_cast<std::uint32_t>(units.size() - 1);
    }

    void update_unit(std::uint32_t handle, const float* pedestal, const float* gain, const float* threshold) {
        if (handle >= units.size()) throw std::runtime_error("cuda_engine::update_unit: no unit " + std::to_string(handle));
        const unit& u = units[handle];
        const std::size_t fb = std::size_t{u.channels} * sizeof(float);
        // Nothing in flight reads the old constants any more.
        check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
        check(cudaMemcpy(u.pedestal, pedestal, fb, cudaMemcpyHostToDevice), "cudaMemcpy (pedestal)");
        check(cudaMemcpy(u.gain, gain, fb, cudaMemcpyHostToDevice), "cudaMemcpy (gain)");
        check(cudaMemcpy(u.threshold, threshold, fb, cudaMemcpyHostToDevice), "cudaMemcpy (threshold)");
    }

    // Waits for a slot's chunk and hands its calibrated rows to the callers.
    void finish(slot& s) {
        if (!s.busy) return;
        check(cudaEventSynchronize(s.done), "cudaEventSynchronize");
        for (std::size_t j = 0; j < s.frames.size(); ++j)
            std::memcpy(s.frames[j].out, s.h_out + s.h_desc[j].offset, std::size_t{s.frames[j].channels} * sizeof(float));
        s.frames.clear();
        s.busy = false;
    }

    void process(const cuda_frame* frames, std::size_t n, bool dose) {
        try {
            process_chunks(frames, n, dose);
        } catch (...) {
            // Leave no chunk behind that would later be copied to rows the
            // caller has moved on from.
            cudaDeviceSynchronize();
            for (auto& s : slots) {
                s.frames.clear();
                s.busy = false;
            }
            throw;
        }
    }

    void process_chunks(const cuda_frame* frames, std::size_t n, bool dose) {
        std::size_t i = 0;
        while (i < n) {
            slot& s = slots[next];
            finish(s);
            std::size_t elems = 0;
            unsigned max_ch = 0;
            while (i < n && s.frames.size() < chunk_frames && elems + frames[i].channels <= chunk_elems) {
                const cuda_frame& f = frames[i];
                if (f.unit >= units.size() || f.channels != units[f.unit].channels)
                    throw std::runtime_error("cuda_engine::process: frame does not match its unit's constants");
                std::memcpy(s.h_raw + elems, f.raw, std::size_t{f.channels} * sizeof(unsigned short));
                s.h_desc[s.frames.size()] = {elems, f.channels, f.unit};
                s.frames.push_back(f);
                elems += f.channels;
                max_ch = std::max(max_ch, f.channels);
                ++i;
            }
            if (s.frames.empty())
                throw std::runtime_error("cuda_engine::process: a frame of " + std::to_string(frames[i].channels) +
                                         " channels exceeds the engine's " + std::to_string(max_channels));
            const auto count = static_cast<unsigned>(s.frames.size());
            check(cudaMemcpyAsync(s.d_desc, s.h_desc, count * sizeof(frame_desc), cudaMemcpyHostToDevice, s.stream),
                  "cudaMemcpyAsync (descriptors)");
            check(cudaMemcpyAsync(s.d_raw, s.h_raw, elems * sizeof(unsigned short), cudaMemcpyHostToDevice, s.stream),
                  "cudaMemcpyAsync (raw)");
            launch(dose, s.d_desc, count, max_ch, d_units, s.d_raw, s.d_out, s.stream);
            check(cudaMemcpyAsync(s.h_out, s.d_out, elems * sizeof(float), cudaMemcpyDeviceToHost, s.stream),
                  "cudaMemcpyAsync (calibrated)");
            check(cudaEventRecord(s.done, s.stream), "cudaEventRecord");
            s.busy = true;
            next = (next + 1) % slots.size();
        }
        // Oldest first.
        for (std::size_t k = 0; k < slots.size(); ++k) finish(slots[(next + k) % slots.size()]);
    }

    void read_dose(std::uint32_t u, double* out) {
        if (u >= units.size()) throw std::runtime_error("cuda_engine::read_dose: unknown unit");
        check(cudaMemcpy(out, units[u].dose, std::size_t{units[u].channels} * sizeof(double), cudaMemcpyDeviceToHost),
              "cudaMemcpy (dose)");
    }

    void reset_dose() {
        for (auto& u : units)
            check(cudaMemset(u.dose, 0, std::size_t{u.channels} * sizeof(double)), "cudaMemset (dose)");
        check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
    }

    double time_kernel_only(std::uint32_t channels, std::size_t frames, bool dose, int repeats) {
        if (units.empty() || units[0].channels != channels)
            throw std::runtime_error("cuda_engine::time_kernel_only: unit 0 must have the benchmark's channel count");
        const std::size_t elems = std::size_t{channels} * frames;
        unsigned short* d_raw = nullptr;
        float* d_out = nullptr;
        frame_desc* d_desc = nullptr;
        cudaEvent_t a = nullptr, b = nullptr;
        std::vector<frame_desc> desc(frames);
        for (std::size_t f = 0; f < frames; ++f) desc[f] = {f * channels, channels, 0};
        double seconds = 0;
        try {
            check(cudaMalloc(&d_raw, elems * sizeof(unsigned short)), "cudaMalloc (bench raw)");
            check(cudaMalloc(&d_out, elems * sizeof(float)), "cudaMalloc (bench out)");
            check(cudaMalloc(&d_desc, frames * sizeof(frame_desc)), "cudaMalloc (bench descriptors)");
            check(cudaMemset(d_raw, 0x11, elems * sizeof(unsigned short)), "cudaMemset");
            check(cudaMemcpy(d_desc, desc.data(), frames * sizeof(frame_desc), cudaMemcpyHostToDevice), "cudaMemcpy");
            check(cudaEventCreate(&a), "cudaEventCreate");
            check(cudaEventCreate(&b), "cudaEventCreate");
            const unsigned n = static_cast<unsigned>(frames);
            launch(dose, d_desc, n, channels, d_units, d_raw, d_out, nullptr);  // warm-up
            check(cudaEventRecord(a, nullptr), "cudaEventRecord");
            for (int r = 0; r < repeats; ++r) launch(dose, d_desc, n, channels, d_units, d_raw, d_out, nullptr);
            check(cudaEventRecord(b, nullptr), "cudaEventRecord");
            check(cudaEventSynchronize(b), "cudaEventSynchronize");
            float ms = 0;
            check(cudaEventElapsedTime(&ms, a, b), "cudaEventElapsedTime");
            seconds = ms / 1000.0 / std::max(1, repeats);
        } catch (...) {
            cudaFree(d_raw);
            cudaFree(d_out);
            cudaFree(d_desc);
            if (a) cudaEventDestroy(a);
            if (b) cudaEventDestroy(b);
            throw;
        }
        cudaFree(d_raw);
        cudaFree(d_out);
        cudaFree(d_desc);
        cudaEventDestroy(a);
        cudaEventDestroy(b);
        return seconds;
    }
};

cuda_engine::cuda_engine(std::size_t max_channels, std::size_t chunk_frames, int streams)
    : _impl(std::make_unique<impl>(max_channels, chunk_frames, streams)) {}

cuda_engine::~cuda_engine() = default;

std::uint32_t cuda_engine::add_unit(std::uint32_t channels, const float* pedestal, const float* gain,
                                    const float* threshold) {
    return _impl->add_unit(channels, pedestal, gain, threshold);
}

void cuda_engine::update_unit(std::uint32_t unit, const float* pedestal, const float* gain, const float* threshold) {
    _impl->update_unit(unit, pedestal, gain, threshold);
}

void cuda_engine::process(const cuda_frame* frames, std::size_t n, bool dose) { _impl->process(frames, n, dose); }

void cuda_engine::read_dose(std::uint32_t unit, double* out) { _impl->read_dose(unit, out); }

void cuda_engine::reset_dose() { _impl->reset_dose(); }

std::string cuda_engine::device_name() const { return _impl->device; }

double cuda_engine::time_kernel_only(std::uint32_t channels, std::size_t frames, bool dose, int repeats) {
    return _impl->time_kernel_only(channels, frames, dose, repeats);
}

}  // namespace daqd::kernels
