#pragma once
// The runs on disk: <output_dir>/*.h5 grouped into runs (a rotated run's
// <name>_NNNNN.h5 files are one run), with size, frames and time span.
//
// Owner: web::api. Threads: the web server's worker thread only (list() waits
// for the writer thread). HDF5 safety: Debian's HDF5 is the serial build,
// not thread-safe even across different files, so every HDF5 call is made
// through `with_hdf5` (the writer thread, between frames). The files of the
// active run are never opened: its numbers come from the writer's live
// counters. Closed files do not change, so what was read is cached by
// path, size and modification time; at most max_reads_per_list files are
// read per call (the others show up without frames and are read next time).
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace daqd::web {

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

class run_catalog {
public:
    static constexpr std::size_t max_reads_per_list = 64;
    using hdf5_runner = std::function<void(std::function<void()>)>;

    explicit run_catalog(std::filesystem::path output_dir);

    // Runs in output_dir, newest first. `active_run`: the run being written.
    std::vector<run_entry> list(const std::optional<std::string>& active_run, const hdf5_runner& with_hdf5);

    // True when a file of run `name` (<name>.h5 or <name>_NNNNN.h5) exists.
    bool exists(const std::string& name) const;
    // The files of run `name` on disk, in order (for the active run).
    std::vector<std::filesystem::path> files_of(const std::string& name) const;

    // "<name>_<5+ digits>.h5" -> name; "<name>.h5" -> name; else nullopt
    // (also for dot files and calibration files, "<name>.calib.h5").
    static std::optional<std::string> run_of_file(const std::string& file_name, bool& series);

    // Reads one closed file's metadata. HDF5: call only where HDF5 may be used.
    static run_file_entry read_file(const std::filesystem::path& path);

private:
    struct cached {
        std::uint64_t size = 0;
        std::filesystem::file_time_type mtime{};
        run_file_entry entry;
    };
    std::filesystem::path _dir;
    std::map<std::string, cached> _cache;  // by file name
};

}  // namespace daqd::web
