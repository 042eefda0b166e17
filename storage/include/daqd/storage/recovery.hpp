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
// Which files: daqd calls recover_run_files(output_dir) at start, before its
// writer thread runs, while holding the output directory's lock. It mends
// only the files of the directory's journal (journal.hpp): files daqd
// created for a run there and did not close, still the same inode, reached
// without a symlink, and open in no other live process. Any other file is
// left alone; `daqd --recover FILE` (recover_run_file) names one explicitly.
//
// recover_run_file never follows a symlink, refuses a file another process
// has open (/proc/*/fd) and opens, through /proc/self/fd, the very inode it
// checked. HDF5 is used on the calling thread: no other thread may use HDF5
// meanwhile.
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace daqd::storage {

struct recovery_result {
    std::filesystem::path file;
    bool was_open = false;         // the file had been left open for write
    bool closed_inconsistent = false;  // closed, but its datasets disagree (a close that went through after
                                       // a write error): trimmed like a file left open
    bool recovered = false;        // flags cleared, file readable now
    std::uint64_t frames_kept = 0;  // rows over all units after trimming
    std::uint64_t rows_trimmed = 0;  // rows dropped past the last consistent one
    std::uint32_t datasets_rebuilt = 0;  // datasets whose chunk index was torn: their rows kept copied anew
    std::string error;             // why it could not be recovered (recovered == false)
};

// Checks one file; mends it when it was left open, or closed with a unit's
// datasets of different lengths or rows not stored. Refuses (error) a symlink,
// a file that is not regular, a file open in another process. Never throws.
recovery_result recover_run_file(const std::filesystem::path& file);

// The rows per unit id that `file` holds as recovery counts them (stored in
// every dataset, frame numbers ascending), read without changing the file:
// what a reader finds after recovery. Throws storage_error.
std::map<std::uint16_t, std::uint64_t> rows_kept(const std::filesystem::path& file);

// The files of dir's journal: the results of those mended (left open, or
// closed inconsistent) or that could not be mended. Logs one line per mended file and per file that
// cannot be mended; clears the journal entries of files mended or gone.
std::vector<recovery_result> recover_run_files(const std::filesystem::path& dir);

}  // namespace daqd::storage
