#pragma once
// Calibration files (format `daq1-calibration`, version 1; docs/CALIBRATION.md):
//
//   /                      attrs format="daq1-calibration", format_version=1,
//                          created_at, description
//   /units/u<id>/          attrs unit_id, channels, frames
//       pedestal  float32 [channels]
//       noise     float32 [channels]
//       gain      float32 [channels]
//
// Called by the main thread before the writer thread starts (loading) and
// after it stopped (the pedestal run's result): HDF5 is used by one thread
// at a time (storage/README.md). Failures throw storage_error naming the
// file, the object and the HDF5 error.
#include "daqd/processing/calibration.hpp"
#include "daqd/storage/error.hpp"

#include <filesystem>
#include <string>

namespace daqd::storage {

inline constexpr const char* calibration_format = "daq1-calibration";
inline constexpr int calibration_format_version = 1;

// Loads every unit of the file; `file` of the result is the path.
processing::calibration_set read_calibration_file(const std::filesystem::path& path);

// Writes a new file (refuses to overwrite an existing one). Units whose
// arrays do not all have `channels` values are refused.
void write_calibration_file(const std::filesystem::path& path, const processing::calibration_set& set,
                            const std::string& description);

}  // namespace daqd::storage
