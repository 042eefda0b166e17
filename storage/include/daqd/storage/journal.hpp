#pragma once
// The run-file journal: which files in an output directory daqd itself
// created for a run and has not closed yet.
//
// <output_dir>/.daqd-journal/<file name> holds one entry per such file: the
// pid that created it and the file's device and inode. run_file writes the
// entry (fsync'd, with the directory) right after it creates a file and
// removes it when the file is closed cleanly; so after a crash the journal
// names exactly the files the crash left open, and start-up recovery
// (recovery.hpp) mends those and nothing else: not another program's HDF5
// file, not a file reached through a symlink, not a file that was replaced
// (different inode) since. A SWMR writer holds no lock a reader could test,
// hence a journal rather than a lock.
//
// The journal directory and its entries are opened without following
// symlinks and must be owned by the effective user; anything else is refused
// (storage_error) rather than written through.
//
// Thread: whoever owns the run_file (the writer thread), or the main thread
// at start-up before the writer runs. No HDF5.
#include <sys/types.h>

#include <filesystem>
#include <string>
#include <vector>

namespace daqd::storage::journal {

struct entry {
    std::string file;  // file name within the output directory (no '/')
    pid_t pid = 0;     // the daqd that created it
    dev_t dev = 0;     // identity of the file when it was created
    ino_t ino = 0;
};

// <output_dir>/.daqd-journal
std::filesystem::path dir_of(const std::filesystem::path& output_dir);

// Records `file` (in output_dir, just created by this process): lstat's
// identity, this pid; the entry and the directory are fsync'd before it
// returns. Throws storage_error naming the call and the path.
void add(const std::filesystem::path& output_dir, const std::filesystem::path& file);

// Clears the entry of `file` (closed cleanly). Never throws; a failure is logged.
void remove(const std::filesystem::path& output_dir, const std::filesystem::path& file) noexcept;

// The entries (an empty list when there is no journal). Entries that cannot
// be read or parsed are logged and skipped. Throws storage_error when the
// journal directory is not a directory owned by us (a symlink, say).
std::vector<entry> list(const std::filesystem::path& output_dir);

}  // namespace daqd::storage::journal
