#pragma once
// Runs as the run controls and the run catalogue describe them
// (storage/run_catalog.hpp lists them; the web API serves them).
#include "daqd/common/telemetry.hpp"

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
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
    std::string data_source;   // root attribute data_source ("test_pattern", "detector", …; empty: none)
    std::string compression;   // root attribute compression ("bslz4"; empty: raw)
    std::string server_version;
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

// What daqd took and lost, added up over links and units: since daqd started
// (of() of a snapshot: the lifetime counts) or over one run (the difference
// of the counts at its stop and at its start). /api/v1/status, the answer to
// a run stop, the exit summary and --summary-json show both, each labelled.
struct run_counts {
    std::uint64_t packets_received = 0;   // valid DAQ1 datagrams taken into the ring
    std::uint64_t bytes_received = 0;     // UDP payload bytes seen
    std::uint64_t packets_lost = 0;       // packet_seq gaps
    std::uint64_t duplicates = 0;
    std::uint64_t late = 0;
    std::uint64_t invalid = 0;            // every drop reason
    std::uint64_t kernel_drops = 0;
    std::uint64_t ring_dropped = 0;
    std::uint64_t frames_complete = 0;
    std::uint64_t frames_incomplete = 0;
    std::uint64_t frames_lost = 0;
    std::uint64_t frames_overflow = 0;
    std::uint64_t frames_written = 0;
    std::uint64_t bytes_written = 0;
    std::uint64_t frames_failed = 0;      // arrived after the run had failed (daq_frames_unwritten_total)

    // The counts of a telemetry snapshot (since daqd started).
    static run_counts of(const telemetry::snapshot& t);
    // this - before, field by field (0 where a counter went down: frames of
    // deleted files are taken back out of frames_written).
    [[nodiscard]] run_counts since(const run_counts& before) const;
    // name -> value, in this order (JSON objects, tests).
    [[nodiscard]] std::vector<std::pair<const char*, std::uint64_t>> fields() const;
    bool operator==(const run_counts&) const = default;
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
    run_counts counts_before;               // the lifetime counts when it started
    std::string kind = "data";              // "data", or "pedestal" (frames go to a calibration file)
    bool name_generated = false;            // named by storage.run_name_pattern, not by whoever started it
    std::string started_by;                 // "command line", "api"
    std::vector<std::string> files;         // a pedestal run: its calibration file (name within output_dir)
    std::uint64_t pedestal_frames = 0;      // a pedestal run: complete frames wanted per unit
    std::uint32_t pedestal_units_seen = 0;  // … units seen, and those with all their frames
    std::uint32_t pedestal_units_complete = 0;
    // A run of several hosts (daqctl, docs/OPERATIONS.md "Several hosts"):
    // `run` is its name on every host, `host` this host's tag; `name` (the
    // files' stem) is then <run>_<host>. Without a tag, run == name.
    std::string run;
    std::string host;
    // "recording", or "prepared": its file exists, nothing is recorded until
    // it is committed (or it is aborted at prepare_deadline).
    std::string state = "recording";
    std::chrono::steady_clock::time_point prepare_deadline{};
    std::string metadata_json = "{}";       // what the start request said of the run ("meta")
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
    run_counts counts;  // over the run: from its start to its stop
    std::chrono::system_clock::time_point started{}, stopped{};
    std::string kind = "data";
    std::string run;   // the run's name on every host ("" : run_name)
    std::string host;  // this host's tag, or ""
};

}  // namespace daqd::common
