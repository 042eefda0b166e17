// daq-stage-bench: throughput of the processing stages per backend, against
// memcpy of the same bytes in the same run (the CPU memory-bandwidth
// ceiling). docs/PERFORMANCE.md "Processing stages".
//
// Frames of --channels channels (default 4096) live in a pool-sized area
// (--frames buffers, default 4096 = 32 MiB of samples, more than the caches)
// with a float32 calibrated area alongside, as in daqd. For each batch size
// (1..1024) it times, round-robin over the whole area:
//   memcpy          the raw bytes of each frame copied to a second area
//   calibrate       (raw - pedestal) x gain, threshold, into the calibrated area
//   calibrate+dose  the same, and the running float64 dose (one pass)
//   pedestal        Welford mean/variance of the raw samples (the pedestal run)
// and prints frames/s, GB/s of raw input, and the ratio to memcpy. The CUDA
// backend is timed too when daqd was built with it and a device is present.
//
// usage: daq-stage-bench [--channels N] [--frames N] [--seconds S] [--batches 1,16,1024]
#include "daqd/common/event.hpp"
#include "daqd/processing/backend.hpp"
#include "daqd/processing/calibration.hpp"
#include "daqd/processing/stage.hpp"

#include <spdlog/spdlog.h>

#include <sys/mman.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

using namespace daqd::processing;

namespace {

double now_s() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct options {
    std::uint32_t channels = 4096;
    std::size_t frames = 4096;
    double seconds = 0.4;
    std::vector<std::size_t> batches{1, 4, 16, 64, 256, 1024};
};

options parse(int argc, char** argv) {
    options o;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto next = [&]() -> std::string {
            if (i + 1 >= argc) {
                std::fprintf(stderr, "daq-stage-bench: %s needs a value\n", a.c_str());
                std::exit(2);
            }
            return argv[++i];
        };
        if (a == "--channels") o.channels = static_cast<std::uint32_t>(std::stoul(next()));
        else if (a == "--frames") o.frames = std::stoul(next());
        else if (a == "--seconds") o.seconds = std::stod(next());
        else if (a == "--batches") {
            o.batches.clear();
            std::string list = next();
            for (std::size_t p = 0; p < list.size();) {
                const std::size_t q = list.find(',', p);
                o.batches.push_back(std::stoul(list.substr(p, q - p)));
                p = q == std::string::npos ? list.size() : q + 1;
            }
        } else if (a == "-h" || a == "--help") {
            std::puts("usage: daq-stage-bench [--channels N] [--frames N] [--seconds S] [--batches 1,16,1024]");
            std::exit(0);
        } else {
            std::fprintf(stderr, "daq-stage-bench: unknown option %s\n", a.c_str());
            std::exit(2);
        }
    }
    return o;
}

// Memory like the frame pool's: anonymous mappings, touched once before timing.
template <typename T>
T* map_area(std::size_t count) {
    void* p = ::mmap(nullptr, count * sizeof(T), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        std::perror("mmap");
        std::exit(1);
    }
    std::memset(p, 0, count * sizeof(T));
    return static_cast<T*>(p);
}

struct bench {
    options o;
    std::uint16_t* raw = nullptr;
    float* calibrated = nullptr;
    std::uint16_t* copy = nullptr;
    std::vector<frame> frames;

    explicit bench(const options& opt) : o(opt) {
        const std::size_t n = o.frames * o.channels;
        raw = map_area<std::uint16_t>(n);
        calibrated = map_area<float>(n);
        copy = map_area<std::uint16_t>(n);
        std::mt19937_64 rng(1);
        std::normal_distribution<double> noise(1000.0, 5.0);
        for (std::size_t i = 0; i < n; ++i) raw[i] = static_cast<std::uint16_t>(noise(rng));
        frames.resize(o.frames);
        for (std::size_t f = 0; f < o.frames; ++f) {
            frames[f].unit_id = 0;
            frames[f].channels = o.channels;
            frames[f].frame_number = f;
            frames[f].samples = raw + f * o.channels;
            frames[f].calibrated = calibrated + f * o.channels;
        }
    }

    // Calls fn(first, count) over the frames, batch by batch, for o.seconds;
    // returns frames per second.
    template <typename F>
    double time(std::size_t batch, F&& fn) {
        std::size_t done = 0, at = 0;
        fn(0, std::min(batch, o.frames));  // warm-up
        const double t0 = now_s();
        double t1 = t0;
        while (t1 - t0 < o.seconds) {
            for (int k = 0; k < 16; ++k) {
                const std::size_t n = std::min(batch, o.frames - at);
                fn(at, n);
                done += n;
                at = (at + n) % o.frames;
            }
            t1 = now_s();
        }
        return static_cast<double>(done) / (t1 - t0);
    }
};

// The stage chain of one run on one backend, with per-unit state set up.
struct chain {
    std::unique_ptr<backend> b;
    std::vector<std::unique_ptr<stage>> stages;
    std::vector<unit_context*> by_id = std::vector<unit_context*>(65536, nullptr);
    unit_context unit;

    chain(std::unique_ptr<backend> backend, bool calibrate, bool dose, std::uint64_t pedestal_frames,
          std::uint32_t channels)
        : b(std::move(backend)) {
        auto set = std::make_shared<calibration_set>();
        unit_constants k;
        k.unit_id = 0;
        k.channels = channels;
        k.pedestal.assign(channels, 1000.0f);
        k.noise.assign(channels, 5.0f);
        k.gain.assign(channels, 1.01f);
        set->units.emplace(0, k);
        if (calibrate)
            stages.push_back(std::make_unique<calibrate_stage>(*b, dose, threshold_policy{threshold_mode::noise, 3.0f}, set));
        if (dose) stages.push_back(std::make_unique<dose_stage>());
        if (pedestal_frames) stages.push_back(std::make_unique<pedestal_stage>(pedestal_frames));
        unit.unit_id = 0;
        unit.channels = channels;
        by_id[0] = &unit;
        for (auto& s : stages) s->add_unit(unit);
    }

    void run(frame* f, std::size_t n) {
        frame_batch batch{std::span<frame>(f, n), 0, false, by_id.data()};
        for (auto& s : stages) s->run(batch);
    }
};

}  // namespace

int main(int argc, char** argv) {
    const options o = parse(argc, argv);
    spdlog::set_level(spdlog::level::warn);
    bench b(o);
    const double raw_frame_bytes = 2.0 * o.channels;
    std::printf("daq-stage-bench: %u channels per frame (%.0f bytes raw), %zu frame buffers (%.0f MiB raw + %.0f MiB "
                "calibrated), %.2f s per figure\n",
                o.channels, raw_frame_bytes, o.frames, o.frames * raw_frame_bytes / 1048576.0,
                o.frames * raw_frame_bytes * 2 / 1048576.0, o.seconds);

    struct variant {
        std::string name;
        std::string backend;
        bool calibrate, dose;
        std::uint64_t pedestal;
    };
    std::vector<variant> variants{{"calibrate", "cpu", true, false, 0},
                                  {"calibrate+dose", "cpu", true, true, 0},
                                  {"pedestal", "cpu", false, false, ~0ull}};
    std::string why;
    try {
        make_cuda_backend(o.channels, 1024);
        variants.push_back({"calibrate+dose", "cuda", true, true, 0});
    } catch (const std::exception& e) {
        why = e.what();
    }
    std::printf("cuda backend: %s\n\n", why.empty() ? "timed below" : ("not timed (" + why + ")").c_str());
    std::printf("%6s  %-15s %-5s %12s %10s %12s %7s\n", "batch", "stage", "bknd", "frames/s", "GB/s raw",
                "memcpy GB/s", "ratio");
    for (std::size_t batch : o.batches) {
        for (const auto& v : variants) {
            std::unique_ptr<backend> be = v.backend == "cuda" ? make_cuda_backend(o.channels, batch) : make_cpu_backend();
            chain c(std::move(be), v.calibrate, v.dose, v.pedestal, o.channels);
            // memcpy of the same bytes, measured right before (same batch, same run).
            const double mc = b.time(batch, [&](std::size_t at, std::size_t n) {
                for (std::size_t i = 0; i < n; ++i)
                    std::memcpy(b.copy + (at + i) * o.channels, b.frames[at + i].samples, 2u * o.channels);
            });
            const double st = b.time(batch, [&](std::size_t at, std::size_t n) { c.run(b.frames.data() + at, n); });
            std::printf("%6zu  %-15s %-5s %12.0f %10.2f %12.2f %7.2f\n", batch, v.name.c_str(), v.backend.c_str(), st,
                        st * raw_frame_bytes / 1e9, mc * raw_frame_bytes / 1e9, st / mc);
            std::fflush(stdout);
        }
    }
    return 0;
}
