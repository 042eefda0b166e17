#pragma once
// Writing runs to HDF5 (docs/DATASET.md).
//
// run_file: the synchronous writer of one run (one file, or a numbered series
// when rotating by size). Not thread-safe: one thread (the writer thread) owns
// it. Every HDF5 call is checked; failures throw storage_error whose message
// names the call, the file, and carries the HDF5 error stack.
//
// writer: the writer thread (a common::worker). It pops frames from a bounded
// spsc_queue fed by the assembler, appends them to the active run (if any),
// and gives every frame buffer back to the block_pool. start_run/stop_run are
// called from a control thread (main, later the web API); they never touch
// HDF5 themselves. Without a thread (worker().start_pumped()) the control
// thread is the writer thread: it makes the passes with worker().pump() and
// runs commands itself.
#include "daqd/common/event.hpp"
#include "daqd/common/telemetry.hpp"
#include "daqd/common/spsc_queue.hpp"
#include "daqd/common/worker.hpp"
#include "daqd/processing/calibration.hpp"
#include "daqd/processing/frame.hpp"
#include "daqd/processing/frame_observer.hpp"
#include "daqd/processing/block_pool.hpp"
#include "daqd/storage/chunk_sink.hpp"
#include "daqd/storage/compressor.hpp"
#include "daqd/storage/error.hpp"

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

namespace daqd::storage {

// What the processing stages add to a run file (docs/DATASET.md,
// docs/CALIBRATION.md). With `calibrated`, every unit gets a `calibrated`
// float32 [n_frames, channels] dataset (chunked like `raw`, direct chunk
// writes; a frame without a calibrated row stores zeros) and a `calibration`
// group with the constants used; with `dose`, a `dose` float64 [channels]
// dataset that the writer sums from the calibrated rows of that file and
// rewrites at every flush and at close.
struct run_processing {
    bool calibrated = false;
    bool dose = false;
    std::shared_ptr<const processing::calibration_set> calibration;  // null: identity for every unit
    processing::threshold_policy threshold;
    // The processor's epoch for `threshold` (frame::threshold_epoch): a
    // frame calibrated under another threshold (queued before the run
    // started with a new one) is calibrated again here with the run's
    // constants, so every row of the file agrees with its calibration group.
    std::uint8_t threshold_epoch = 0;
};

// Who writes the run file's dirty pages back to the disk (storage.writeback,
// docs/PERFORMANCE.md "Writeback pacing (issue 11)").
// paced: a helper thread of the run file starts writeback of every `step`
//   bytes behind the write front (sync_file_range) and, once a range is more
//   than `window` bytes behind, waits for it and drops it from the page cache
//   (posix_fadvise DONTNEED): the file's dirty and cached pages stay bounded,
//   and the writer thread never waits for the disk itself.
// kernel: the kernel's own writeback (dirty_background / dirty limits).
enum class writeback_mode { paced, kernel };

struct writeback_options {
    writeback_mode mode = writeback_mode::paced;
    std::uint64_t step_bytes = 8ull << 20;     // writeback started per this many bytes written
    std::uint64_t window_bytes = 64ull << 20;  // ranges further behind the front are waited for and dropped
};

// What the pacing did (writeback_mode::paced). Written by the pacer's helper
// thread (one run's at a time), read by anyone.
struct writeback_counters {
    telemetry::counter bytes;    // written back and dropped from the page cache
    telemetry::counter wait_ns;  // the helper's time in sync_file_range waiting for the disk
    telemetry::counter errors;   // sync_file_range / posix_fadvise / dup calls that failed
};

class writeback_pacer;  // storage/src/writeback.hpp

struct run_options {
    std::filesystem::path output_dir;
    std::string run_name;              // validated by the caller: [A-Za-z0-9._-], no leading '.'
    std::uint64_t rotate_bytes = 0;    // 0: one file <run>.h5; else <run>_00000.h5, ...
    std::uint32_t chunk_bytes = 1u << 20;  // target size of one raw chunk
    std::chrono::milliseconds flush_interval{1000};
    // Free space kept on the output file system for closing a file cleanly.
    // A chunk write that would leave less is not made: the file is closed
    // with everything appended so far (the reserve pays for that), the run
    // fails with disk_full_error. 0: write until the file system refuses
    // (the file is then left open for write; recover_run_file() mends it).
    std::uint64_t reserve_bytes = 0;
    std::string config_text;           // root attribute "config"
    std::string server_version;        // root attribute "server_version"
    run_processing processing;         // calibrated / dose / constants datasets
    writeback_options writeback;       // storage.writeback
    // storage.compression: bslz4 stores every chunk of raw, calibrated and
    // the per-frame columns bitshuffled + LZ4-compressed (HDF5 filter 32008).
    compression_kind compression = compression_kind::none;
    // Who compresses: the writer's pool (set by the writer), or, when null,
    // the run file itself on the calling thread (tests, tools).
    compressor* compress = nullptr;
    // Threads of the writer's pool (storage.compress_threads; 0: default_compress_threads()).
    std::uint32_t compress_threads = 0;
    // The most chunks submitted and not yet written before the writer waits
    // for the oldest (0: four per compression thread, at least 4).
    std::uint32_t compress_in_flight = 0;
    // The live stream (chunk_sink.hpp): every chunk written is handed on
    // (set by the writer from set_sink(); null: none). stream_info: a JSON
    // object of what the start-of-run message adds (units, calibration).
    chunk_sink* sink = nullptr;
    std::string stream_info;

    // A run across several hosts (docs/DATASET.md "Several hosts"): `run` is
    // the run's name on every host, `host` this host's tag, and run_name
    // (the files' stem) is then <run>_<host>. Root attributes "run" (run_name
    // when empty) and "host" (when set).
    std::string run;
    std::string host;
    // What whoever started the run said of it (the API's "meta"): one
    // attribute per key on group /metadata of every file, and the same as
    // JSON text in its attribute "json".
    struct meta_item {
        std::string key;
        std::variant<std::string, std::int64_t, double, bool> value;
    };
    std::vector<meta_item> metadata;
    std::string metadata_json;
    // Units' frame geometry (units.list[].shape): the `shape` attribute of
    // the unit's group.
    std::map<std::uint16_t, std::vector<std::uint32_t>> unit_shapes;
};

// The run's own accounting, written into its last file when it closes
// (group /accounting; docs/DATASET.md): counts over the run, by name, and
// per unit.
struct run_accounting {
    std::vector<std::pair<std::string, std::uint64_t>> totals;
    std::map<std::uint16_t, std::vector<std::pair<std::string, std::uint64_t>>> units;
};

struct unit_stats {
    std::uint32_t channels = 0;
    std::uint64_t frames_written = 0;  // rows in files that exist (after a failure: recounted)
    std::uint64_t frames_unwritten = 0;  // appended, then found in no file when the run failed
    std::uint64_t first_frame = 0;
    std::uint64_t last_frame = 0;
};

struct run_stats {
    std::string run_name;
    std::vector<std::filesystem::path> files;
    std::map<std::uint16_t, unit_stats> units;
    std::uint64_t frames_written = 0;
    std::uint64_t bytes_written = 0;  // payload of the rows appended, all datasets: 2*channels+18
                                      // per frame, +4*channels with `calibrated` (chunk padding,
                                      // rewrites and the per-file dose not counted)
    std::uint64_t flushes = 0;
    // Full raw chunks written straight from a block of the assembler's pool
    // (no copy since the socket's), and those gathered by a copy first (a
    // frame reordered or lost inside the chunk, a run or stream starting
    // mid-block); rows the writer copied (gathering, and partial chunks at
    // each flush).
    std::uint64_t chunks_direct = 0;
    std::uint64_t chunks_compacted = 0;
    std::uint64_t rows_copied = 0;
    // Compression (storage.compression = "bslz4"): bytes of the chunks
    // written (full chunks and the partial ones rewritten at each flush),
    // before and after compression.
    std::uint64_t chunk_bytes_in = 0;
    std::uint64_t chunk_bytes_stored = 0;
    std::uint64_t write_ns = 0;  // in chunk writes (H5Dwrite_chunk: the page cache, the disk when it pushes back)
    std::uint64_t frames_unwritten = 0;  // appended, then found in no file when the run failed
                                         // (its file gone, or past what the disk took)
    std::uint64_t frames_recalibrated = 0;  // calibrated again with the run's threshold (run_processing)
    std::uint64_t frames_rejected = 0;  // not written: frame_number not ascending within its
                                        // unit, or channel count differs from the unit's first frame
    bool failed = false;
    std::string error;                // first error, when failed
};

class run_file {
public:
    // Creates the first file. Refuses (storage_error) when a file of that run
    // name already exists in output_dir. Paced writeback (options.writeback)
    // by a pacer of its own, counted in `writeback` (must outlive the
    // run_file; nullptr: not counted); what is pending when the run_file is
    // destroyed is left to the kernel.
    explicit run_file(run_options options, writeback_counters* writeback = nullptr);
    // The writer's: paced by the writer's long-lived pacer, which finishes
    // the last file after the run_file is gone.
    run_file(run_options options, writeback_pacer& pacer);
    ~run_file();  // closes if still open; never throws (logs instead)
    run_file(const run_file&) = delete;
    run_file& operator=(const run_file&) = delete;

    // Appends one frame (copies its samples). Frames of one unit arrive in
    // ascending frame_number order.
    void append(const processing::frame& f);
    // Makes everything appended so far durable and visible to SWMR readers.
    void flush();
    // storage.compression: writes the chunks the pool has compressed (in the
    // order they were handed over); append() does too. chunks_ready(): one is.
    void poll();
    [[nodiscard]] bool chunks_ready() const noexcept;
    // Flushes, writes stopped_at, closes every file. Idempotent.
    void close();
    // What close() writes as the run's accounting (before close()).
    void set_accounting(run_accounting accounting);

    [[nodiscard]] const run_stats& stats() const noexcept;

private:
    struct impl;
    std::unique_ptr<impl> _impl;
};

struct writer_counters {
    // All written by the writer thread.
    telemetry::counter frames_written;
    telemetry::counter frames_unrecorded;  // arrived with no run active
    telemetry::counter frames_failed;      // arrived while the run had failed
    telemetry::counter run_failures;       // runs that failed (disk full, write error)
    telemetry::counter bytes_written;
    telemetry::counter flushes;
    telemetry::counter chunks_direct;     // run_stats::chunks_direct, over every run
    telemetry::counter chunks_compacted;  // run_stats::chunks_compacted
    telemetry::counter rows_copied;       // run_stats::rows_copied
    telemetry::counter write_ns;          // run_stats::write_ns, plus flushes
    // Flush durations (seconds).
    static constexpr telemetry::histogram::bounds_type flush_bucket_bounds_s{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                                             0.1,   0.25,   0.5,   1.0,  2.5,   5.0};
    telemetry::histogram flush{flush_bucket_bounds_s};
    // Latency of frames written: from the assembler handing a frame on to
    // the writer appending it (queues, processing, writer backlog).
    static constexpr telemetry::histogram::bounds_type latency_bucket_bounds_s{
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5};
    telemetry::histogram latency{latency_bucket_bounds_s};
    // Written by the active run's writeback helper thread, not the writer thread.
    writeback_counters writeback;
    // Written by the compression pool's threads and the writer thread.
    compressor_counters compress;
};

// Takes the frames the writer receives while no run file is open (a
// pedestal run started over the API, daqd/pedestal_run.hpp). Writer thread
// only; quick, never throws.
class frame_sink {
public:
    virtual ~frame_sink() = default;
    // false: done; the writer lets go of it and shows it no further frame.
    virtual bool take(const processing::frame& f) noexcept = 0;
    // A pass of the writer that took no frame (at least every 0.1 s while
    // idle): false as take().
    virtual bool idle() noexcept { return true; }
};

class writer final : private common::worker_body {
public:
    // `in`: one queue, or one per receive shard (each queue's frames in order).
    writer(common::queue_set<processing::frame> in, common::wake_event& in_ready);
    ~writer();  // stops the thread (closing an active run)
    writer(const writer&) = delete;
    writer& operator=(const writer&) = delete;

    void start();  // starts the thread (worker().start_pumped(): none, the caller pumps)
    // Control thread: starts a run. Throws storage_error if the file cannot
    // be created (name taken, directory unwritable); the error is synchronous.
    // `held` (a prepared run, daqctl's two-phase start): the file is created
    // but frames are taken as with no run (counted unrecorded) until
    // commit_run().
    void start_run(const run_options& options, bool held = false);
    // Any thread: a held run records from the next frame taken on.
    void commit_run() noexcept;
    [[nodiscard]] bool run_held() const noexcept { return _held.load(std::memory_order_acquire); }
    // Control thread: writes every frame already queued, closes the run and
    // returns its stats. Returns nullopt when no run is active.
    std::optional<run_stats> stop_run();
    // Before start(): what a run's last file stores as its accounting
    // (called on the writer thread when a run closes, its frames written).
    void set_accounting_source(std::function<run_accounting()> f) { _accounting = std::move(f); }
    // Control thread: stops the thread after draining the queue and closing
    // the active run (its stats: run_closed_by_stop()).
    void stop();
    [[nodiscard]] std::optional<run_stats> run_closed_by_stop() const { return _closed_by_stop; }
    [[nodiscard]] common::worker& worker() noexcept { return _worker; }
    // Control thread: runs fn on the writer thread between frames and waits
    // for it (exceptions are rethrown here). For HDF5 reads by other
    // components: the serial HDF5 build may only be used by this one thread.
    // Without a writer thread, fn runs on the calling thread.
    void run_on_writer_thread(std::function<void()> fn);
    // Before start(): every frame taken from the queue is shown to `o`.
    void set_observer(processing::frame_observer* o) noexcept { _observer = o; }
    // Before start(): every chunk written, every run's start and end and every
    // frame taken are handed to `s` (the live stream).
    void set_chunk_sink(chunk_sink* s) noexcept { _chunk_sink = s; }
    // Writer thread (run_on_writer_thread): frames taken while no run is
    // active go to `s` (null: to nobody) before their row is given back;
    // they are still counted as unrecorded (no run file holds them).
    void set_sink(frame_sink* s) noexcept { _sink = s; }

    [[nodiscard]] bool run_active() const noexcept { return _run_active.load(std::memory_order_acquire); }
    // Any thread: the active run's error once it has failed (the writer then
    // no longer writes; frames are counted in frames_failed until the run is
    // stopped or another one started), else "".
    [[nodiscard]] std::string run_error() const;
    [[nodiscard]] const writer_counters& counters() const noexcept { return _counters; }
    // Any thread: the counters into `out` (descriptors in writer.cpp).
    void report(telemetry::snapshot& out) const;

private:
    struct command;  // defined in writer.cpp
    std::optional<run_stats> post(std::shared_ptr<command> cmd);  // control thread: hand over, wait

    // The thread's body (common::worker_body) and what it does; writer
    // thread only (or the pumping caller).
    bool pass() override;
    bool input_waiting() override;
    [[nodiscard]] std::chrono::microseconds sleep_limit() const override;
    void drain() override;
    void thread_ending() noexcept override;
    void execute(command& cmd);
    void handle_frame(const processing::frame& f);
    void drain_snapshot();
    void flush_run();
    run_stats finish_run();
    void fail_run(const std::exception& e);
    void account(std::uint64_t frames_before, std::uint64_t bytes_before);
    void account_copies();
    void poll_run();

    common::queue_set<processing::frame> _in;
    common::wake_event& _in_ready;
    writer_counters _counters;
    std::atomic<bool> _run_active{false};
    std::atomic<bool> _held{false};
    std::function<run_accounting()> _accounting;
    mutable std::mutex _error_mutex;
    std::string _run_error;  // guarded by _error_mutex
    std::mutex _command_mutex;
    std::shared_ptr<command> _command;  // guarded by _command_mutex
    std::atomic<bool> _command_pending{false};
    std::mutex _control_mutex;  // serialises start_run/stop_run/stop callers
    processing::frame_observer* _observer = nullptr;
    chunk_sink* _chunk_sink = nullptr;  // the live stream; set before start
    frame_sink* _sink = nullptr;  // writer thread only
    // Writer thread state.
    std::unique_ptr<writeback_pacer> _pacer;  // for every run (storage.writeback = "paced"); outlives _run
    std::unique_ptr<compressor> _compressor;  // storage.compression = "bslz4"; outlives _run
    std::unique_ptr<run_file> _run;
    bool _run_failed = false;
    std::chrono::milliseconds _flush_interval{1000};
    std::chrono::steady_clock::time_point _next_flush{};
    std::map<std::uint16_t, std::uint64_t> _unwritten_reported;  // per unit, this run
    struct copies_seen {
        std::uint64_t chunks_direct = 0, chunks_compacted = 0, rows_copied = 0, write_ns = 0;
    } _copies_seen;  // of the active run, in the counters already
    std::optional<run_stats> _closed_by_stop;
    common::worker _worker{"daqd-write", _in_ready, *this};  // last: its thread ends before the rest goes
};

}  // namespace daqd::storage
