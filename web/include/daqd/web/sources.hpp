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
struct run_controls {
    std::function<std::string(const std::string&)> check_name;  // error message, or "" when the name is fine
    // Starts run `name`; `compression` "none" or "bslz4" for this run, "" for
    // storage.compression. Throws std::exception on failure.
    std::function<void(const std::string& name, const std::string& compression)> start;
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
