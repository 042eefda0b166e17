#pragma once
// The pipeline: one daqd instance's data path, wired together.
//
//   sockets → receiver → packet ring (shm) → assembler → frame queue → writer → run files
//                                                 ↑ frame buffer (blocks) ←────┘
//
// With processing stages (`processing.stages`, or a pedestal run) a
// processing thread sits between assembly and the writer, with a second
// frame queue:  assembler → frame queue → processor → frame queue → writer.
//
// Receive shards (acquisition.shards): the links are split in listen order
// into groups; each shard has its own receiver, packet ring (shm name
// <ring_name>-<shard>), frame buffer and assembler, and its own frame queue
// into the one processor or writer, which takes from the shards' queues in
// turn. Units belong to one shard (processing::unit_claims).
//
// Each stage is a common::worker. The stages are built upstream first and
// stop in that order: each drains what is upstream of it before anything
// downstream stops, so nothing taken in is lost. start() gives each stage a
// thread; start(drive::pump) gives none, and the caller moves the data with
// pump() (tests, fuzzers: the real wiring on one thread).
//
// Receive and assembly run on one thread (common::combined_worker, named
// daqd-recv+asm) or on a thread each (daqd-receive, daqd-assemble), as
// threads.combine_receive_assembly says: "auto" combines them where daqd may
// run on at most 2 CPUs (issue 11). The choice is logged at construction.
// Each worker is pinned to its threads.*_cpus (the combined one to
// threads.receiver_cpus).
//
// Owned by main, also driven by the web API. start()/stop() and the run
// control calls are made by one control thread at a time (main, then the web
// server's worker while it runs, then main again); counters, current_run()
// and the live tap may be read from any thread while the data path runs.
#include "daqd/acquisition/packet_ring.hpp"
#include "daqd/acquisition/receiver.hpp"
#include "daqd/common/event.hpp"
#include "daqd/common/runs.hpp"
#include "daqd/common/telemetry.hpp"
#include "daqd/common/worker.hpp"
#include "daqd/common/spsc_queue.hpp"
#include "daqd/config/config.hpp"
#include "daqd/processing/assembler.hpp"
#include "daqd/processing/block_pool.hpp"
#include "daqd/processing/live_tap.hpp"
#include "daqd/processing/live_view.hpp"
#include "daqd/processing/processor.hpp"
#include "daqd/storage/run_writer.hpp"
#include "daqd/stream/sender.hpp"

#include <atomic>
#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace daqd {

class pedestal_run;

// What a person wants to know after a run (or at any moment).
struct summary {
    std::string run_name;
    std::vector<std::string> files;
    std::string receiver_backend;
    double seconds = 0;                   // since daqd started
    std::uint64_t runs = 0;               // runs started since then
    std::uint64_t packets_received = 0;   // valid DAQ1 packets taken into the ring
    std::uint64_t bytes_received = 0;     // UDP payload bytes seen
    std::uint64_t packets_lost = 0;       // packet_seq gaps
    std::uint64_t duplicates = 0;
    std::uint64_t late = 0;
    std::uint64_t ring_dropped = 0;
    std::uint64_t kernel_drops = 0;
    std::uint64_t invalid_total = 0;
    std::map<std::string, std::uint64_t> invalid;  // by reason, non-zero only
    std::uint64_t frames_complete = 0;
    std::uint64_t frames_incomplete = 0;
    std::uint64_t frames_lost = 0;
    std::uint64_t frames_overflow = 0;
    std::uint64_t frames_written = 0;
    std::uint64_t frames_unrecorded = 0;
    std::uint64_t frames_failed = 0;      // arrived after a run had failed (disk full, write error)
    std::uint64_t frames_rejected = 0;    // out of order for the run (a unit restarted its frame numbers)
    std::uint64_t bytes_written = 0;
    std::string processing_backend = "none";  // "cpu", "cuda", or "none" (no calibrate stage)
    std::uint64_t frames_processed = 0;       // frames through the processing stages
    std::uint64_t processing_backlog_peak = 0;  // most frames waiting for the processing thread at once
    bool run_failed = false;
    std::string run_error;
    struct unit {
        std::uint16_t id;
        std::uint32_t channels;
        std::uint64_t packets, lost, duplicates, late, complete, incomplete, frames_lost, overflow;
    };
    std::vector<unit> units;

    // The last run's own counts (from its start to its stop), when one ran.
    std::optional<common::run_result> last_run;

    // The lifetime counts above, labelled "lifetime (… since daqd started, N runs)".
    [[nodiscard]] std::string one_line() const;
    // The last run's counts, labelled "run NAME (… s, this run only)"; "" when no run ran.
    [[nodiscard]] std::string run_line() const;
    [[nodiscard]] std::string to_json() const;
};

// What a run start asks for (pipeline::start_run).
struct run_request {
    std::string name;  // the run's name (on every host of a several-host run)
    std::optional<storage::compression_kind> compression;  // this run's, instead of storage.compression
    std::string started_by = "command line";               // what the run's metadata says of it
    bool name_generated = false;
    // A host tag: this daqd's files are <name>_<host>.h5 (several hosts
    // write one run into one directory); "" : <name>.h5.
    std::string host;
    // Whoever started it says (the API's "meta"): stored in every file.
    std::vector<storage::run_options::meta_item> metadata;
    std::string metadata_json = "{}";
    // Two-phase start (daqctl): the name and the disk are checked and the
    // file is created, but nothing is recorded until commit_run(); without a
    // commit within prepare_timeout the run is aborted (expire_prepared()).
    bool prepare = false;
    std::chrono::seconds prepare_timeout{30};
};

class pipeline {
public:
    // Binds sockets, maps the ring, loads the calibration file; throws on
    // failure. pedestal_frames > 0: a pedestal run (the processing thread
    // runs only the pedestal stage, over that many frames per unit).
    explicit pipeline(const config::config& cfg, std::uint64_t pedestal_frames = 0);
    ~pipeline();
    pipeline(const pipeline&) = delete;
    pipeline& operator=(const pipeline&) = delete;

    // threads: one thread per stage. pump: no thread; the calling thread
    // drives every stage with pump() and is the writer thread (run control
    // calls run their HDF5 work on it).
    enum class drive { threads, pump };
    void start(drive how = drive::threads);
    // drive::pump: one pass of every stage, upstream first; true when any
    // stage did some work.
    bool pump();
    // Stops receiving, drains every ring and queue, closes an active run.
    void stop();

    // `compression`: this run's, instead of storage.compression.
    // `started_by`, `name_generated`: what the run's metadata says of it.
    // Throws std::runtime_error (bad name, file exists, …).
    void start_run(const std::string& name, std::optional<storage::compression_kind> compression = std::nullopt,
                   std::string started_by = "command line", bool name_generated = false);
    void start_run(run_request request);
    // A prepared run (run_request::prepare) starts recording now; `name` is
    // its run name or its files' stem. Throws std::runtime_error when no
    // such run is prepared.
    void commit_run(const std::string& name);
    // A prepared or recording run (by run name or stem) is stopped and its
    // files deleted; returns their names. Throws when no such run is active.
    std::vector<std::string> abort_run(const std::string& name);
    // Control thread, now and then (main's loop): aborts a prepared run
    // whose prepare_timeout has passed; true when it did.
    bool expire_prepared();
    // processing.threshold / threshold_mode changed (SIGHUP): with no run
    // recording, the processor takes it at its next batch; during a run, at
    // the next run's start, so that a run file's calibrated rows all agree
    // with the threshold its calibration group records. Returns what the
    // log says of it. Control thread.
    std::string set_threshold(const processing::threshold_policy& policy);
    // A SIGHUP reload happened (any thread): daq_config_reloads_total{result}.
    void count_reload(bool applied) noexcept;
    // The files' stem of a run on a host: <run>_<host>, or <run>.
    [[nodiscard]] static std::string file_stem(const std::string& run, const std::string& host) {
        return host.empty() ? run : run + "_" + host;
    }
    // A pedestal run while serving (pedestal_run.hpp): the writer thread
    // hands `frames` complete frames per unit to it; it writes
    // <output_dir>/NAME.calib.h5 when every unit has them, or at stop_run().
    // Throws std::runtime_error (a run active, the file exists, bad name).
    void start_pedestal(const std::string& name, std::uint64_t frames, std::string started_by = "api",
                        bool name_generated = false);
    // The name of the next run started without one: storage.run_name_pattern
    // with one above the highest number a run or calibration file in
    // output_dir has, and above the last name given out (control thread).
    std::string next_run_name();
    // Whether `name` is the last one next_run_name() gave out.
    [[nodiscard]] bool name_was_generated(const std::string& name) const { return name == _generated_name; }
    // The run (or pedestal run) as it ended, with its own counts (nullopt: none was active).
    std::optional<common::run_result> stop_run();

    // Every module's counters now (any thread): what /metrics, the status
    // page, the exit summary and --summary-json all render.
    [[nodiscard]] telemetry::snapshot telemetry() const;
    [[nodiscard]] summary snapshot() const;
    [[nodiscard]] std::size_t shard_count() const noexcept { return _shards.size(); }
    [[nodiscard]] const acquisition::receiver& receiver(std::size_t shard = 0) const noexcept {
        return *_shards[shard]->receiver;
    }
    [[nodiscard]] const acquisition::packet_ring& ring(std::size_t shard = 0) const noexcept {
        return *_shards[shard]->ring;
    }
    [[nodiscard]] const processing::assembler& assembler(std::size_t shard = 0) const noexcept {
        return *_shards[shard]->assembler;
    }
    [[nodiscard]] const processing::block_pool& pool(std::size_t shard = 0) const noexcept {
        return *_shards[shard]->pool;
    }
    // One thread receives and assembles each shard (threads.combine_receive_assembly).
    [[nodiscard]] bool receive_assembly_combined() const noexcept { return _shards.front()->combined != nullptr; }
    static constexpr std::string_view combined_thread_name = "daqd-recv+asm";
    [[nodiscard]] storage::writer& writer() noexcept { return *_writer; }
    [[nodiscard]] const processing::live_tap& live_tap() const noexcept { return *_tap; }
    // The live stream's sender (null without stream.listen).
    [[nodiscard]] stream::sender* stream() noexcept { return _stream.get(); }
    [[nodiscard]] const stream::sender* stream() const noexcept { return _stream.get(); }
    // The processing thread (null without stages) and the live view its
    // `live` stage feeds (null without it; live_tap() reads through it).
    [[nodiscard]] const processing::processor* processor() const noexcept { return _processor.get(); }
    [[nodiscard]] const processing::live_view* live_view() const noexcept { return _live.get(); }
    // "cpu", "cuda", or "none" without a calibrate stage (the metric label).
    [[nodiscard]] std::string processing_backend() const;
    // A pedestal run's result, after stop(): pedestal, noise (gain 1) per unit.
    [[nodiscard]] processing::calibration_set pedestal_result() const;

    // Every data-path thread (each stage's worker, upstream first) as a
    // watchdog sees it; any thread, while the pipeline exists.
    [[nodiscard]] std::vector<common::worker_status> thread_status() const;

    // The run being recorded, if any (any thread).
    using active_run = common::run_info;
    [[nodiscard]] std::optional<active_run> current_run() const;

private:
    // A frame queue between two stages, and the event its consumer sleeps on.
    struct frame_hop {
        explicit frame_hop(std::size_t frames) : queue(frames) {}
        common::spsc_queue<processing::frame> queue;
        common::wake_event ready;
    };

    // One receive shard: its links, threads, ring and frame buffer.
    struct shard {
        config::acquisition_config acquisition;  // its links (listen), the rest as configured
        common::wake_event ring_ready;
        std::unique_ptr<acquisition::packet_ring> ring;
        std::unique_ptr<processing::block_pool> pool;
        std::unique_ptr<common::spsc_queue<processing::frame>> frames;  // assembler → processor or writer
        std::unique_ptr<acquisition::receiver> receiver;
        std::unique_ptr<processing::assembler> assembler;
        // Runs the receiver's and the assembler's bodies when combined;
        // destroyed before them (it borrows their bodies).
        std::unique_ptr<common::combined_worker> combined;
    };

    const config::config& _cfg;
    // The data path, upstream first (construction order, stop order).
    processing::unit_claims _claims;
    common::wake_event _frames_ready;           // the shards' queues have frames (processor or writer)
    std::vector<std::unique_ptr<shard>> _shards;
    std::unique_ptr<frame_hop> _processed;      // processor → writer
    std::shared_ptr<const processing::calibration_set> _calibration;
    std::unique_ptr<processing::live_view> _live;
    std::unique_ptr<processing::processor> _processor;
    std::unique_ptr<processing::live_tap> _tap;  // before _writer: it outlives the writer thread
    std::unique_ptr<stream::sender> _stream;     // stream.listen; before _writer: the writer's sink
    std::unique_ptr<storage::writer> _writer;
    std::vector<common::worker*> _stages;  // every stage's worker, upstream first
    std::uint64_t _started_ns = 0;
    std::uint64_t _run_started_ns = 0;
    std::uint64_t _generated_number = 0;  // the last number next_run_name() gave out
    std::string _generated_name;
    std::optional<storage::run_stats> _last_run;
    mutable std::optional<common::run_result> _last_result;  // _last_run with its counts and times
    // A pedestal run over the API (guarded by _active_mutex); the last one
    // that ended stays alive until the next starts (the writer thread may
    // still be returning from it).
    mutable std::shared_ptr<pedestal_run> _pedestal;
    mutable std::shared_ptr<pedestal_run> _pedestal_last;
    common::run_result pedestal_ended(const active_run& a, const pedestal_run& p) const;
    std::atomic<std::uint64_t> _runs_started{0};  // read by telemetry() from any thread
    std::atomic<std::uint64_t> _reloads_applied{0}, _reloads_refused{0};
    std::atomic<double> _last_reload_s{0.0};
    // Records a run that ended (its stats): _last_run, _last_result.
    common::run_result run_ended(const storage::run_stats& stats);
    bool _running = false;
    mutable std::mutex _active_mutex;
    // Run control (start, commit, abort, stop, expiry) one at a time: the web
    // worker and main's expiry of prepared runs both call in.
    std::recursive_mutex _control_mutex;
    mutable std::optional<active_run> _active;  // guarded by _active_mutex
    std::optional<summary> _counts_at_start;     // guarded by _active_mutex: the run's accounting starts here
    // The threshold runs start with (set_threshold), and its epoch
    // (frame::threshold_epoch); control thread.
    processing::threshold_policy _threshold;
    std::uint8_t _threshold_epoch = 0;
    mutable std::optional<common::run_counts> _counts_at_close;  // guarded by _active_mutex: … and ends here
    // The run's own counts and each unit's (since _counts_at_start), for its
    // last file (storage::run_accounting).
    storage::run_accounting accounting() const;
};

// The frame buffer's size (docs/CONFIG.md, assembly.buffer_seconds): blocks
// of one stored chunk each, enough for buffer_seconds at the expected rate,
// within buffer_max_bytes; plus the frames the queues between stages hold.
struct buffer_plan {
    std::size_t blocks = 0;
    std::size_t block_bytes = 0;
    std::size_t queue_frames = 0;
    std::uint64_t rate_mbps = 0;     // expected payload rate, all links
    std::string rate_source;         // where that rate came from
    double seconds = 0;                   // since daqd started
    std::uint64_t runs = 0;               // runs started since then              // what the buffer holds at that rate
    bool capped = false;             // buffer_max_bytes cut it short of buffer_seconds
    std::uint64_t memory_bytes = 0;  // at most (calibrated area included)
    [[nodiscard]] std::string describe() const;  // the start-up log line
};
buffer_plan plan_buffer(const config::config& cfg, bool calibrating);

// Every module's probe into one snapshot. The pipeline's own, and test rigs'
// that wire the modules by hand.
struct telemetry_sources {
    struct shard {
        const acquisition::receiver& receiver;
        const acquisition::packet_ring& ring;
        const processing::block_pool& pool;
        const processing::assembler& assembler;
    };
    std::vector<shard> shards;
    const processing::processor* processor;  // null without processing stages
    const processing::live_tap& tap;
    const storage::writer& writer;
    std::filesystem::path output_dir;
    std::string processing_backend;  // "cpu", "cuda", "none"
    std::optional<common::run_info> current_run;
    std::uint64_t started_ns = 0;    // monotonic; 0: not started
    std::string version;             // daq_build_info
    std::uint64_t runs_started = 0;  // daq_runs_started_total
    const stream::sender* stream = nullptr;  // null without the live stream
};
telemetry::snapshot collect_telemetry(const telemetry_sources& in);

// The summary of a telemetry snapshot (counts only; pipeline::snapshot()
// adds the run's name, files and time).
summary summarize(const telemetry::snapshot& t);

// Run names become file names: letters, digits, '.', '_', '-', not starting
// with '.', at most 100 characters. Returns an error message, or empty.
std::string check_run_name(const std::string& name);

}  // namespace daqd
