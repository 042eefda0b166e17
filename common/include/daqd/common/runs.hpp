#pragma once
// Runs as the run controls and the run catalogue describe them
// (storage/run_catalog.hpp lists them; the web API serves them).
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace daqd::common {

struct run_file_entry {
    std::string file;          // file name within output_dir
    std::uint64_t size_bytes = 0;
    bool read = false;         // metadata read (frames, times valid)
    std::string error;         // why it could not be read
    std::string format;        // root attribute format ("daq1-run"; other HDF5 files are not listed)
    std::string run_name;      // root attribute run_name (or from the file name)
    std::uint64_t frames = 0;  // rows over all units
    std::string started_at;    // root attributes (ISO 8601 UTC)
    std::string stopped_at;    // empty while written, or when daqd died
};

struct run_entry {
    std::string name;
    std::vector<run_file_entry> files;  // in order
    std::uint64_t size_bytes = 0;
    std::uint64_t frames = 0;
    bool complete = true;               // every file read
    bool active = false;                // being recorded now (not read: see the live counters)
    std::string started_at;             // first file
    std::string stopped_at;             // last file
    std::filesystem::file_time_type modified{};
};

// The run being recorded.
struct run_info {
    std::string name;
    std::chrono::system_clock::time_point started;
    std::uint64_t frames_before = 0;  // writer counters when it started
    std::uint64_t bytes_before = 0;
    std::string error;  // not empty: the run failed (disk full, …) and no longer writes
    std::string compression = "none";  // how its chunks are stored: "none", "bslz4"
    std::uint64_t compress_in_before = 0;   // compressor bytes in/out when it started
    std::uint64_t compress_out_before = 0;
};

// A run as it was stopped.
struct run_result {
    std::string run_name;
    std::vector<std::filesystem::path> files;
    std::uint64_t frames_written = 0;
    std::uint64_t bytes_written = 0;
    std::uint64_t frames_rejected = 0;
    bool failed = false;
    std::string error;
};

}  // namespace daqd::common
