#pragma once
// Where the arithmetic of the calibrate and dose stages runs: the CPU or a
// CUDA device, behind one interface, chosen once at start
// (`processing.backend` = "auto" | "cpu" | "cuda").
//
// Owned by the processor (daqd/processing/processor.hpp); every call comes
// from the processing thread (tests: one thread). Both backends give
// bit-identical calibrated float32 values (daqd/kernels/cpu.hpp states the
// formula) and the same float64 dose up to the order of summation.
#include "daqd/processing/calibration.hpp"
#include "daqd/processing/frame.hpp"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

namespace daqd::processing {

class backend {
public:
    virtual ~backend() = default;

    // "cpu" or "cuda" (the metric label `processing_backend`).
    [[nodiscard]] virtual std::string_view name() const noexcept = 0;
    // For the log: the name and the device.
    [[nodiscard]] virtual std::string description() const = 0;

    // Registers a unit's constants (threshold applied) and a zeroed running
    // dose, before the unit's first frame. Once per unit: may allocate.
    virtual void add_unit(const unit_constants& constants) = 0;
    // Replaces a registered unit's constants (same channel count; its
    // running dose kept): a new threshold (processor::request_threshold).
    // Between two calibrate() calls.
    virtual void update_unit(const unit_constants& constants) = 0;

    // Writes every frame's calibrated row (frame::calibrated must point at
    // frame::channels floats) and, when `dose`, adds it to the unit's running
    // dose. No allocation.
    virtual void calibrate(std::span<frame> frames, bool dose) = 0;

    // The unit's running dose (channels values) into `out`; false when the
    // unit is unknown or `out` has the wrong size.
    virtual bool read_dose(std::uint16_t unit_id, std::span<double> out) = 0;
    // Zeroes every unit's running dose (a run started).
    virtual void reset_dose() = 0;
};

// Plain C++ loops (daqd/kernels/cpu.hpp), compiled to vectorise.
std::unique_ptr<backend> make_cpu_backend();

// True when daqd was built with the CUDA backend (DAQD_HAVE_CUDA).
bool cuda_built() noexcept;

// The CUDA backend for frames of up to max_channels channels, batches of up
// to batch_frames. Throws std::runtime_error when daqd was built without
// CUDA, there is no device, or the device cannot be set up.
std::unique_ptr<backend> make_cuda_backend(std::size_t max_channels, std::size_t batch_frames);

// The backend for `requested` ("auto", "cpu", "cuda"). "auto" is CUDA when
// built with it and a device is present, else the CPU; `why` says how the
// choice was made (for the one log line). "cuda" that cannot be had throws
// std::runtime_error.
std::unique_ptr<backend> make_backend(std::string_view requested, std::size_t max_channels, std::size_t batch_frames,
                                      std::string& why);

}  // namespace daqd::processing
