#pragma once
// What the web layer reads and drives, and nothing more: the telemetry
// snapshot (every counter of the data path, common/telemetry.hpp), the live
// view reader, and the run controls. The daqd executable binds them to its
// pipeline and run catalogue (daqd/web_glue.cpp), tests to theirs; this
// library includes no acquisition, processing or storage header.
//
// Owner: web::service (copies). Threads: telemetry and live are called from
// the web server's io thread; the run controls as noted.
#include "daqd/common/live_frame.hpp"
#include "daqd/common/runs.hpp"
#include "daqd/common/telemetry.hpp"
#include "daqd/config/config.hpp"

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace daqd::web {

using common::run_entry;
using common::run_file_entry;
using common::run_info;
using common::run_result;

struct daq_view {
    const config::config* cfg = nullptr;
    // A snapshot of every counter now (pipeline::telemetry). Any thread.
    std::function<telemetry::snapshot()> telemetry;
    // Copies a unit's latest live publication; false: none (yet). Any thread.
    std::function<bool(std::uint16_t, common::live_frame&)> live;
};

// Blocking calls (they wait for the writer thread or read files): the web
// server makes them from its worker thread, never from the thread serving
// requests. `current` may be called from any thread.
// A run start as the API asked for it (POST /api/v1/runs; docs/OPERATIONS.md).
struct run_start {
    std::string name;
    std::string compression;  // "none", "bslz4", or "" for storage.compression
    std::string host;         // host tag: files <name>_<host>.h5 ("" : <name>.h5)
    using meta_value = std::variant<std::string, std::int64_t, double, bool>;
    std::vector<std::pair<std::string, meta_value>> meta;  // "meta", key by key
    std::string meta_json = "{}";                          // … and as JSON text
    bool prepare = false;             // two-phase start: created, recording at commit
    unsigned prepare_timeout_s = 30;  // aborted without a commit by then
    bool name_generated = false;
};

struct run_controls {
    std::function<std::string(const std::string&)> check_name;  // error message, or "" when the name is fine
    // Starts (or prepares) a run. Throws std::exception on failure.
    std::function<void(const run_start& request)> start;
    // A prepared run (by run name or file stem) starts recording; throws when none is.
    std::function<void(const std::string& name)> commit;
    // A prepared or recording run is stopped and its files deleted (their names).
    std::function<std::vector<std::string>(const std::string& name)> abort;
    // Starts a pedestal run `name` of `frames` complete frames per unit (its
    // calibration file <output_dir>/<name>.calib.h5). Throws std::exception.
    std::function<void(const std::string& name, std::uint64_t frames)> start_pedestal;
    // The name of a run started without one (storage.run_name_pattern).
    std::function<std::string()> next_name;
    std::function<std::optional<run_result>()> stop;            // nullopt: no run was active
    std::function<std::optional<run_info>()> current;           // any thread
    // The run catalogue (storage/run_catalog.hpp): runs on disk newest
    // first, given the active run; whether a run of that name has a file;
    // the files of a run.
    std::function<std::vector<run_entry>(const std::optional<std::string>&)> list;
    std::function<bool(const std::string&)> exists;
    std::function<std::vector<std::filesystem::path>(const std::string&)> files_of;
};

}  // namespace daqd::web
