// writer: the thread that owns every HDF5 call of the server.
//
// Control threads never touch HDF5: start_run/stop_run/stop hand a command to
// the writer thread and wait for its result (std::promise), so the serial,
// non-thread-safe HDF5 build is only ever used from this one thread.
#include "daqd/storage/h5.hpp"
#include "daqd/storage/run_writer.hpp"
#include "writeback.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <future>

namespace daqd::storage {

namespace {

// Frames handled between checks for commands and flush deadlines.
constexpr int batch = 256;

}  // namespace

struct writer::command {
    enum class kind { start_run, stop_run, call };
    kind what = kind::start_run;
    run_options options;
    std::function<void()> fn;  // kind::call
    bool held = false;         // kind::start_run: a prepared run (start_run's `held`)
    std::promise<std::optional<run_stats>> result;
};

writer::writer(common::queue_set<processing::frame> in, common::wake_event& in_ready)
    : _in(std::move(in)), _in_ready(in_ready) {
    h5::init_library();  // early: before anything else in the process touches HDF5
}

writer::~writer() { stop(); }

std::string writer::run_error() const {
    std::lock_guard lock(_error_mutex);
    return _run_error;
}

void writer::start() {
    std::lock_guard control(_control_mutex);
    if (!_worker.running()) _worker.start();
}

std::optional<run_stats> writer::post(std::shared_ptr<command> cmd) {
    auto done = cmd->result.get_future();
    if (_worker.pumped()) {
        execute(*cmd);  // the caller is the writer thread
        return done.get();
    }
    {
        // thread_ending() answers a command handed over before the thread
        // ended; this refuses those after.
        std::lock_guard lock(_command_mutex);
        if (!_worker.threaded())
            throw storage_error("the writer thread has ended (" + _worker.failure() + "); restart daqd");
        _command = std::move(cmd);
        _command_pending.store(true, std::memory_order_release);
    }
    _in_ready.signal();
    return done.get();  // rethrows what the writer thread set (storage_error)
}

void writer::start_run(const run_options& options, bool held) {
    std::lock_guard control(_control_mutex);
    if (!_worker.running()) throw storage_error("cannot start run '" + options.run_name + "': the writer thread is not running");
    auto cmd = std::make_shared<command>();
    cmd->what = command::kind::start_run;
    cmd->options = options;
    cmd->held = held;
    post(std::move(cmd));
}

void writer::commit_run() noexcept { _held.store(false, std::memory_order_release); }

std::optional<run_stats> writer::stop_run() {
    std::lock_guard control(_control_mutex);
    if (!_worker.running()) return std::nullopt;
    auto cmd = std::make_shared<command>();
    cmd->what = command::kind::stop_run;
    return post(std::move(cmd));
}

void writer::run_on_writer_thread(std::function<void()> fn) {
    std::lock_guard control(_control_mutex);
    if (!_worker.threaded()) {
        fn();  // no writer thread: nobody else uses HDF5 through the writer
        return;
    }
    auto cmd = std::make_shared<command>();
    cmd->what = command::kind::call;
    cmd->fn = std::move(fn);
    post(std::move(cmd));
}

void writer::stop() {
    std::lock_guard control(_control_mutex);
    _worker.stop();
}

// Everything below runs on the writer thread (or the pumping caller).

// One error line per failed run: the file, the cause, the free space
// (run_file puts the free space into its error).
void writer::fail_run(const std::exception& e) {
    _run_failed = true;
    const auto& s = _run->stats();
    const std::string file = s.files.empty() ? std::string("?") : s.files.back().string();
    const std::string message = s.error.empty() ? std::string(e.what()) : s.error;
    spdlog::error("run '{}' FAILED, no longer writing to {}: {}", s.run_name, file, message);
    {
        std::lock_guard lock(_error_mutex);
        _run_error = message;
    }
    _counters.run_failures.add();
}

// Moves the run's written counts into the counters. After a failure the
// run may count fewer frames than before (those in a file that is gone,
// or past its last flush): they leave frames_written for frames_failed,
// so that daq_frames_written_total never claims a frame that is in no file.
void writer::account(std::uint64_t frames_before, std::uint64_t bytes_before) {
    const auto& s = _run->stats();
    account_copies();
    if (s.frames_written >= frames_before) {
        _counters.frames_written.add(s.frames_written - frames_before);
    } else {
        const std::uint64_t lost = frames_before - s.frames_written;
        _counters.frames_written.sub(lost);
        _counters.frames_failed.add(lost);
        for (const auto& [id, u] : s.units) {
            auto& reported = _unwritten_reported[id];
            if (_observer && u.frames_unwritten > reported) _observer->on_unwritten(id, u.frames_unwritten - reported);
            reported = u.frames_unwritten;
        }
    }
    if (s.bytes_written >= bytes_before)
        _counters.bytes_written.add(s.bytes_written - bytes_before);
    else
        _counters.bytes_written.sub(bytes_before - s.bytes_written);
}

// The run's chunk counts since the last look (they only grow).
void writer::account_copies() {
    const auto& s = _run->stats();
    // Per frame appended: nothing to move unless a chunk was written (write_ns
    // moves with every chunk count) or rows were copied.
    if (s.write_ns == _copies_seen.write_ns && s.rows_copied == _copies_seen.rows_copied) return;
    _counters.chunks_direct.add(s.chunks_direct - _copies_seen.chunks_direct);
    _counters.chunks_compacted.add(s.chunks_compacted - _copies_seen.chunks_compacted);
    _counters.rows_copied.add(s.rows_copied - _copies_seen.rows_copied);
    _counters.write_ns.add(s.write_ns - _copies_seen.write_ns);
    _copies_seen = {s.chunks_direct, s.chunks_compacted, s.rows_copied, s.write_ns};
}

void writer::handle_frame(const processing::frame& f) {
    bool written = false;
    bool appended = false;
    // A prepared run (start_run(…, held)) records nothing until commit_run().
    const bool held = _run && _held.load(std::memory_order_acquire);
    const bool observed = _run && !_run_failed && !held;  // shown to the observer inside
    if (observed) {
        const auto& s = _run->stats();
        const std::uint64_t frames_before = s.frames_written;
        const std::uint64_t bytes_before = s.bytes_written;
        const std::uint64_t unwritten_before = s.frames_unwritten;
        try {
            _run->append(f);
        } catch (const std::exception& e) {
            fail_run(e);
        }
        // Appended, even if the failure it caused took it back out:
        // the observer counts it, and account() below takes it back.
        appended = s.frames_written + s.frames_unwritten > frames_before + unwritten_before;
        // A disk-full stop still closes the file with this frame in it.
        written = s.frames_written > frames_before;
        if (written && f.assembled_ns != 0) {
            const std::uint64_t now = common::monotonic_ns();
            const std::uint64_t ns = now > f.assembled_ns ? now - f.assembled_ns : 0;
            _counters.latency.observe_ns(ns);
        }
        if (_observer) _observer->on_frame(f, appended);
        account(frames_before, bytes_before);
        if (!written && _run_failed) _counters.frames_failed.add();
    } else if (_run && !held) {
        _counters.frames_failed.add();
    } else {
        if (_sink != nullptr && !_sink->take(f)) _sink = nullptr;
        _counters.frames_unrecorded.add();
    }
    if (_observer && !observed) _observer->on_frame(f, false);
    if (_chunk_sink != nullptr) _chunk_sink->frame_seen(f);
    f.release();  // the run file holds its own reference while it still needs the row
}

void writer::flush_run() {
    const auto t0 = std::chrono::steady_clock::now();
    const std::uint64_t frames_before = _run->stats().frames_written;
    const std::uint64_t bytes_before = _run->stats().bytes_written;
    try {
        _run->flush();
    } catch (const std::exception& e) {
        fail_run(e);
        account(frames_before, bytes_before);
        return;
    }
    const auto t1 = std::chrono::steady_clock::now();
    account_copies();
    const auto flush_ns = static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count());
    _counters.flushes.add();
    _counters.flush.observe_ns(flush_ns);
    _counters.write_ns.add(flush_ns);
}

// Handles the frames queued right now (not those pushed meanwhile).
void writer::drain_snapshot() {
    for (std::size_t n = _in.size(); n > 0; --n) {
        auto f = _in.try_pop();
        if (!f) break;
        handle_frame(*f);
    }
}

run_stats writer::finish_run() {
    if (_accounting && !_run_failed) {
        try {
            _run->set_accounting(_accounting());
        } catch (const std::exception& e) {
            spdlog::error("run '{}': its accounting is not in the file: {}", _run->stats().run_name, e.what());
        }
    }
    const std::uint64_t frames_before = _run->stats().frames_written;
    const std::uint64_t bytes_before = _run->stats().bytes_written;
    try {
        _run->close();
    } catch (const std::exception& e) {
        if (!_run_failed) fail_run(e);
    }
    account(frames_before, bytes_before);
    run_stats s = _run->stats();
    _run.reset();
    _held.store(false, std::memory_order_release);
    if (_chunk_sink != nullptr) _chunk_sink->run_ended(s);
    _run_failed = false;
    {
        std::lock_guard lock(_error_mutex);
        _run_error.clear();
    }
    _run_active.store(false, std::memory_order_release);
    spdlog::info("run '{}' stopped: {} frames, {} bytes, {} file(s), {} flushes{}", s.run_name, s.frames_written,
                 s.bytes_written, s.files.size(), s.flushes, s.failed ? " (FAILED, see the error above)" : "");
    return s;
}

void writer::execute(command& cmd) {
    switch (cmd.what) {
    case command::kind::start_run:
        // A failed run has stopped writing already: a new run replaces it
        // (after the operator made room, say).
        if (_run && _run_failed) {
            drain_snapshot();
            finish_run();
        }
        if (_run) {
            cmd.result.set_exception(std::make_exception_ptr(storage_error(
                "cannot start run '" + cmd.options.run_name + "': run '" + _run->stats().run_name + "' is active")));
            return;
        }
        try {
            // One pacer for every run: its helper thread finishes a run's
            // last file after the run. A pumped writer's pacer has no thread.
            if (!_pacer || _pacer->threaded() == _worker.pumped())
                _pacer = std::make_unique<writeback_pacer>(&_counters.writeback, !_worker.pumped());
            run_options options = cmd.options;
            if (options.compression != compression_kind::none) {
                // One pool for every run, rebuilt only when its size changes.
                const unsigned threads = _worker.pumped()          ? 0u
                                         : options.compress_threads ? options.compress_threads
                                                                    : default_compress_threads();
                if (!_compressor || _compressor->threads() != threads) {
                    _compressor.reset();
                    _compressor = std::make_unique<compressor>(threads, &_counters.compress, &_in_ready);
                    if (threads > 0) spdlog::info("compression: bitshuffle/LZ4 on {} thread(s)", threads);
                }
                options.compress = _compressor.get();
            }
            options.sink = _chunk_sink;
            _run = std::make_unique<run_file>(options, *_pacer);
            // Set here, on the writer thread, with the run: frames of a run
            // already active are never held by a start that is refused.
            _held.store(cmd.held, std::memory_order_release);
            _run_failed = false;
            _unwritten_reported.clear();
            _copies_seen = {};
            _flush_interval = std::max(cmd.options.flush_interval, std::chrono::milliseconds(1));
            _next_flush = std::chrono::steady_clock::now() + _flush_interval;
            _run_active.store(true, std::memory_order_release);
            if (_chunk_sink != nullptr) _chunk_sink->run_started(options);
            spdlog::info("run '{}' started: {}", cmd.options.run_name, _run->stats().files.front().string());
            cmd.result.set_value(std::nullopt);
        } catch (...) {
            _run.reset();
            cmd.result.set_exception(std::current_exception());
        }
        return;
    case command::kind::stop_run:
        if (!_run) {
            cmd.result.set_value(std::nullopt);
            return;
        }
        drain_snapshot();
        cmd.result.set_value(finish_run());
        return;
    case command::kind::call:
        try {
            cmd.fn();
            cmd.result.set_value(std::nullopt);
        } catch (...) {
            cmd.result.set_exception(std::current_exception());
        }
        return;
    }
}

bool writer::pass() {
    if (_command_pending.load(std::memory_order_acquire)) {
        std::shared_ptr<command> cmd;
        {
            std::lock_guard lock(_command_mutex);
            cmd = std::move(_command);
            _command_pending.store(false, std::memory_order_release);
        }
        if (cmd) {
            try {
                execute(*cmd);
            } catch (const std::exception& e) {
                spdlog::error("writer: command failed: {}", e.what());
            }
        }
        return true;
    }
    int n = 0;
    for (; n < batch; ++n) {
        auto f = _in.try_pop();
        if (!f) break;
        handle_frame(*f);
    }
    if (n == 0 && _sink != nullptr && !_run && !_sink->idle()) _sink = nullptr;
    if (_run && !_run_failed && _run->chunks_ready()) {
        poll_run();
        ++n;
    }
    if (_run && !_run_failed && std::chrono::steady_clock::now() >= _next_flush) {
        flush_run();
        _next_flush = std::chrono::steady_clock::now() + _flush_interval;
    }
    return n > 0;
}

bool writer::input_waiting() {
    return !_in.empty() || _command_pending.load(std::memory_order_acquire) ||
           (_run && !_run_failed && _run->chunks_ready());
}

// Writes the chunks the compression pool has done.
void writer::poll_run() {
    const std::uint64_t frames_before = _run->stats().frames_written;
    const std::uint64_t bytes_before = _run->stats().bytes_written;
    try {
        _run->poll();
    } catch (const std::exception& e) {
        fail_run(e);
        account(frames_before, bytes_before);
        return;
    }
    account_copies();
}

// An active run is flushed on time even when no frame comes.
std::chrono::microseconds writer::sleep_limit() const {
    const auto longest = common::idle_policy::longest_sleep;
    if (!_run || _run_failed) return longest;
    const auto until_flush =
        std::chrono::duration_cast<std::chrono::microseconds>(_next_flush - std::chrono::steady_clock::now());
    return std::clamp(until_flush, std::chrono::microseconds(0), longest);
}

// Upstream has stopped: what is queued is everything. The active run closes
// with all of it.
void writer::drain() {
    drain_snapshot();
    _closed_by_stop.reset();
    if (_run) _closed_by_stop = finish_run();
}

// The command in flight is answered: no control thread waits for a writer
// thread that is gone (post() refuses the later ones).
void writer::thread_ending() noexcept {
    std::lock_guard lock(_command_mutex);
    if (_command) {
        _command->result.set_exception(std::make_exception_ptr(
            storage_error("the writer thread has ended (" + _worker.failure() + "); restart daqd")));
        _command.reset();
        _command_pending.store(false, std::memory_order_release);
    }
}

// ---- telemetry ----

namespace {

using telemetry::kind;

struct writer_series {
    telemetry::descriptor d;
    telemetry::counter writer_counters::*member;
};
const writer_series writer_table[] = {
    {{"daq_frames_unrecorded_total", "Frames that arrived while no run was active", kind::counter},
     &writer_counters::frames_unrecorded},
    {{"daq_storage_bytes_written_total", "Row payload bytes appended to run files (2 x channels + 18 per frame)",
      kind::counter},
     &writer_counters::bytes_written},
    {{"daq_storage_run_failures_total", "Runs that failed while writing (disk full, write error)", kind::counter},
     &writer_counters::run_failures},
    {{"daq_frames_unwritten_total", "Frames not written because the run had failed (disk full, write error)",
      kind::counter},
     &writer_counters::frames_failed},
    // For the status page: the per-unit daq_frames_written_total is the live tap's.
    {{"daq_storage_frames_written", "Frames appended to run files (all units)", kind::counter, "", false},
     &writer_counters::frames_written},
    {{"daq_storage_chunk_compactions_total",
      "Full raw chunks whose rows the writer gathered by a copy before writing them (a frame reordered or lost "
      "inside the chunk, a run or stream starting mid-block); the others go to HDF5 from the assembler's block",
      kind::counter},
     &writer_counters::chunks_compacted},
    {{"daq_storage_chunks_direct_total",
      "Full raw chunks written straight from the assembler's block, with no copy after the socket's", kind::counter},
     &writer_counters::chunks_direct},
    {{"daq_storage_rows_copied_total",
      "Frame rows the writer copied: gathering compacted chunks, and partial chunks written at each flush",
      kind::counter},
     &writer_counters::rows_copied},

    {{"daq_storage_flushes", "Flushes of the active run", kind::counter, "", false}, &writer_counters::flushes},
};
// storage.writeback = "paced" (the pacer's helper thread counts these).
struct writeback_series {
    telemetry::descriptor d;
    telemetry::counter writeback_counters::*member;
    double scale;
};
const writeback_series writeback_table[] = {
    {{"daq_storage_writeback_bytes_total",
      "Bytes of run files the writeback pacing saw written to the disk and dropped from the page cache",
      kind::counter},
     &writeback_counters::bytes, 1.0},
    {{"daq_storage_writeback_wait_seconds_total",
      "Time the writeback pacing's helper thread waited for the disk (not the writer thread's time)", kind::counter},
     &writeback_counters::wait_ns, 1e-9},
    {{"daq_storage_writeback_errors_total",
      "Failed sync_file_range / posix_fadvise calls of the writeback pacing (the run goes on)", kind::counter},
     &writeback_counters::errors, 1.0},
};
// storage.compression = "bslz4" (the pool's threads and the writer count these).
struct compress_series {
    telemetry::descriptor d;
    telemetry::counter compressor_counters::*member;
    double scale;
};
const compress_series compress_table[] = {
    {{"daq_compress_bytes_in_total",
      "Bytes of chunks compressed (storage.compression = \"bslz4\"; partial chunks rewritten at each flush included)",
      kind::counter},
     &compressor_counters::bytes_in, 1.0},
    {{"daq_compress_bytes_out_total", "Bytes the compressed chunks take", kind::counter},
     &compressor_counters::bytes_out, 1.0},
    {{"daq_compress_chunks_total", "Dataset chunks compressed (one per dataset and chunk)", kind::counter},
     &compressor_counters::chunks, 1.0},
    {{"daq_compress_seconds_total", "Seconds the compression threads spent compressing (all threads)", kind::counter},
     &compressor_counters::busy_ns, 1e-9},
    {{"daq_compress_wait_seconds_total",
      "Seconds the writer thread waited for compression (too many chunks in flight, a flush, a file closing)",
      kind::counter},
     &compressor_counters::wait_ns, 1e-9},
    {{"daq_compress_failures_total", "Chunks whose compression failed (the run fails with the message)",
      kind::counter},
     &compressor_counters::failures, 1.0},
    {{"daq_compress_queue_chunks", "Chunks handed to the compression pool and not yet written", kind::gauge},
     &compressor_counters::in_flight, 1.0},
    {{"daq_compress_queue_capacity_chunks",
      "Chunks in flight at which the writer waits for the oldest (its own queue takes the backlog)", kind::gauge},
     &compressor_counters::capacity, 1.0},
};
const telemetry::descriptor compress_ratio{
    "daq_compress_ratio", "Bytes in over bytes out of the compressor since start (0 before the first chunk)",
    kind::gauge};

const telemetry::descriptor write_seconds{
    "daq_storage_write_seconds_total",
    "Seconds the writer thread spent in chunk writes and flushes (the page cache, and the disk when it pushes back): "
    "near 1 per second, writing is the limit",
    kind::counter};
const telemetry::descriptor flush_seconds{"daq_storage_flush_seconds",
                                          "Duration of one flush of the active run (partial chunks written, H5Fflush)",
                                          kind::histogram};
const telemetry::descriptor stage_seconds{"daq_stage_seconds",
                                          "Duration of a processing stage by stage and backend. Measured today: "
                                          "stage=write, backend=hdf5 = one flush of the run file (as "
                                          "daq_storage_flush_seconds)",
                                          kind::histogram, "stage,backend"};
const telemetry::descriptor latency_seconds{
    "daq_frame_latency_seconds",
    "Frames written, by the time from their assembly to their append to the run file (queues, processing stages, "
    "writer backlog; not the flush)",
    kind::histogram};

}  // namespace

void writer::report(telemetry::snapshot& out) const {
    for (const auto& row : writer_table) out.add(row.d, {}, static_cast<double>((_counters.*row.member).get()));
    out.add(write_seconds, {}, static_cast<double>(_counters.write_ns.get()) / 1e9);
    for (const auto& row : writeback_table)
        out.add(row.d, {}, static_cast<double>((_counters.writeback.*row.member).get()) * row.scale);
    for (const auto& row : compress_table)
        out.add(row.d, {}, static_cast<double>((_counters.compress.*row.member).get()) * row.scale);
    const auto cin = _counters.compress.bytes_in.get(), cout = _counters.compress.bytes_out.get();
    out.add(compress_ratio, {}, cout == 0 ? 0.0 : static_cast<double>(cin) / static_cast<double>(cout));
    out.add_histogram(flush_seconds, {}, _counters.flush);
    out.add_histogram(stage_seconds, {{"stage", "write"}, {"backend", "hdf5"}}, _counters.flush);
    out.add_histogram(latency_seconds, {}, _counters.latency);
}

}  // namespace daqd::storage
