#pragma once
// The runs on disk: <output_dir>/*.h5 grouped into runs (a rotated run's
// <name>_NNNNN.h5 files are one run), with size, frames and time span.
//
// Owner: the daqd executable (bound into the web API's run controls).
// Threads: the web server's worker thread only.
//
// Reading files, and why not in this process: HDF5 1.10 (Debian's
// thread-safe build) runs every call under one global lock, and on some
// damaged files its SWMR open retries forever. A catalogue read in daqd
// (on the writer thread, as it once was, or any other) would then stop
// every HDF5 user, recording included, and SIGTERM would hang. So the
// catalogue never opens a file itself: `file_reader` does. daqd's reader
// (helper_reader) starts one child process per file (daqd itself with
// helper_flag), all at once, and kills those that have not answered by the
// deadline; such a file is listed with an `error`. The files of the active
// run are never read: its numbers come from the writer's live counters.
// What was read (an error included) is cached by name, size and
// modification time, so a file costs one read per change; at most
// max_reads_per_list files are read per call (the others show up without
// frames and are read next time). A call is bounded by about one deadline.
#include "daqd/common/runs.hpp"

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace daqd::storage {

using common::run_entry;
using common::run_file_entry;

class run_catalog {
public:
    static constexpr std::size_t max_reads_per_list = 16;
    // How long one file may take in its helper process.
    static constexpr std::chrono::milliseconds read_deadline{2000};
    // The hidden command-line flag of the helper: `daqd --read-run-file PATH`.
    static constexpr const char* helper_flag = "--read-run-file";
    // Reads the metadata of some files; one entry per path, in order.
    using file_reader = std::function<std::vector<run_file_entry>(const std::vector<std::filesystem::path>&)>;

    explicit run_catalog(std::filesystem::path output_dir);

    // Runs in output_dir, newest first. `active_run`: the run being written.
    // `reader` reads the files not cached (empty: read_in_process).
    std::vector<run_entry> list(const std::optional<std::string>& active_run, const file_reader& reader);

    // True when a file of run `name` (<name>.h5 or <name>_NNNNN.h5) exists.
    bool exists(const std::string& name) const;
    // The files of run `name` on disk, in order (for the active run).
    std::vector<std::filesystem::path> files_of(const std::string& name) const;

    // "<name>_<5+ digits>.h5" -> name; "<name>.h5" -> name; else nullopt
    // (also for dot files and calibration files, "<name>.calib.h5").
    static std::optional<std::string> run_of_file(const std::string& file_name, bool& series);

    // Reads one closed file's metadata. HDF5: call only where HDF5 may be used.
    static run_file_entry read_file(const std::filesystem::path& path);
    // read_file for each, on the calling thread (tests, tools).
    static std::vector<run_file_entry> read_in_process(const std::vector<std::filesystem::path>& paths);
    // A reader that runs `exe helper_flag PATH` per file, all at once, and
    // kills what has not answered within `deadline` (the entry then has an
    // error). Thread: the caller of list().
    static file_reader helper_reader(std::filesystem::path exe, std::chrono::milliseconds deadline);
    // The helper's main: prints read_file(path) as one JSON object on stdout.
    static int helper_main(const char* path);

private:
    struct cached {
        std::uint64_t size = 0;
        std::filesystem::file_time_type mtime{};
        run_file_entry entry;
    };
    std::filesystem::path _dir;
    std::map<std::string, cached> _cache;  // by file name
};

}  // namespace daqd::storage
