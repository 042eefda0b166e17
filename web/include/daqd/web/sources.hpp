#pragma once
// What the web layer reads and drives. The data path publishes counters
// (relaxed atomics written by their owning thread) and the live tap; the web
// layer only reads them. Run control goes through callbacks that the daqd
// executable binds to its pipeline, so this library does not depend on it.
//
// Owner: the daqd executable builds both and hands them to web::service; they
// must outlive it. Threads: the views are read by the web threads at any time.
#include "daqd/acquisition/packet_ring.hpp"
#include "daqd/acquisition/receiver.hpp"
#include "daqd/config/config.hpp"
#include "daqd/processing/assembler.hpp"
#include "daqd/processing/live_tap.hpp"
#include "daqd/processing/processor.hpp"
#include "daqd/storage/run_writer.hpp"
#include "daqd/web/run_catalog.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace daqd::web {

struct daq_view {
    const config::config* cfg = nullptr;
    const acquisition::receiver* receiver = nullptr;
    // The packet rings; with one ring, every link shares it.
    std::vector<const acquisition::packet_ring*> rings;
    const processing::assembler* assembler = nullptr;
    const storage::writer* writer = nullptr;
    const processing::live_tap* tap = nullptr;
    const processing::processor* processor = nullptr;  // null without processing stages
    std::string version;
    std::string processing_backend = "none";  // "cpu", "cuda", or "none" (no calibrate stage)
    std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();

    [[nodiscard]] const acquisition::packet_ring* ring_of_link(std::size_t link) const noexcept {
        if (rings.empty()) return nullptr;
        return rings.size() == 1 ? rings.front() : rings[std::min(link, rings.size() - 1)];
    }
};

struct run_info {
    std::string name;
    std::chrono::system_clock::time_point started;
    std::uint64_t frames_before = 0;  // writer counters when it started
    std::uint64_t bytes_before = 0;
    std::string error;  // not empty: the run failed (disk full, …) and no longer writes
};

// Blocking calls (they wait for the writer thread): the web server makes them
// from its worker thread, never from the thread serving requests.
struct run_controls {
    std::function<std::string(const std::string&)> check_name;  // error message, or "" when the name is fine
    std::function<void(const std::string&)> start;              // throws std::exception on failure
    std::function<std::optional<storage::run_stats>()> stop;    // nullopt: no run was active
    std::function<std::optional<run_info>()> current;           // any thread
    // Reads closed run files' metadata for the run catalogue (run_catalog.hpp):
    // daqd binds run_catalog::helper_reader (a child process per file, with a
    // deadline). Empty: read in the calling process (tests).
    std::function<std::vector<run_file_entry>(const std::vector<std::filesystem::path>&)> read_run_files;
};

}  // namespace daqd::web
