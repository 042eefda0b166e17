#pragma once
// Mending run files left open by a crash (kill -9, power loss).
//
// A run file is written in SWMR mode: at every flush (storage.flush_interval_ms)
// HDF5 writes the file's metadata in an order that keeps the file readable at
// all times. A writer that dies without closing leaves two things behind:
// the superblock's "open for write" status flags, which make every later
// non-SWMR open (h5py, h5dump, daq-inspect) fail, and possibly chunks or
// extents written after the last flush. recover_run_file() clears the flags
// (as `h5clear -s` does), trims every unit's datasets to the rows present
// in all of them (allocated chunks, frame numbers ascending), and records
// `recovered_at` and `recovered_frames` on the root group. docs/RELIABILITY.md.
//
// daqd calls recover_run_files(output_dir) at start, before its writer thread
// runs (HDF5 is used by this one thread), while holding the output
// directory's lock (so no other daqd is writing these files).
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace daqd::storage {

struct recovery_result {
    std::filesystem::path file;
    bool was_open = false;         // the file had been left open for write
    bool recovered = false;        // flags cleared, file readable now
    std::uint64_t frames_kept = 0;  // rows over all units after trimming
    std::uint64_t rows_trimmed = 0;  // rows dropped past the last consistent one
    std::string error;             // why it could not be recovered (recovered == false)
};

// Checks one file; mends it when it was left open. Never throws.
recovery_result recover_run_file(const std::filesystem::path& file);

// Every *.h5 file in dir (not dot files): the results of those that had been
// left open. Logs one line per mended file and per file that cannot be mended.
std::vector<recovery_result> recover_run_files(const std::filesystem::path& dir);

}  // namespace daqd::storage
