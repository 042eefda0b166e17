// writer: the thread that owns every HDF5 call of the server.
//
// Control threads never touch HDF5: start_run/stop_run/stop hand a command to
// the writer thread and wait for its result (std::promise), so the serial,
// non-thread-safe HDF5 build is only ever used from this one thread.
#include "daqd/storage/h5.hpp"
#include "daqd/storage/run_writer.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <future>

namespace daqd::storage {

namespace {

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
}

// Adaptive wait: a short spin, a few yields, then sleep on the wake_event.
constexpr int spin_rounds = 64;
constexpr int yield_rounds = 16;
constexpr auto idle_wait = std::chrono::milliseconds(100);
// Frames handled between checks for commands and flush deadlines.
constexpr int batch = 256;

}  // namespace

struct writer::command {
    enum class kind { start_run, stop_run, shutdown, call };
    kind what = kind::start_run;
    run_options options;
    std::function<void()> fn;  // kind::call
    std::promise<std::optional<run_stats>> result;
};

writer::writer(common::spsc_queue<processing::frame>& in, processing::frame_pool& pool, common::wake_event& in_ready)
    : _in(in), _pool(pool), _in_ready(in_ready) {
    h5::init_library();  // early: before anything else in the process touches HDF5
}

writer::~writer() {
    try {
        stop();
    } catch (const std::exception& e) {
        spdlog::error("writer: stopping failed: {}", e.what());
    }
}

std::string writer::run_error() const {
    std::lock_guard lock(_error_mutex);
    return _run_error;
}

void writer::start() {
    std::lock_guard control(_control_mutex);
    if (_thread.joinable()) return;
    _stopping.store(false, std::memory_order_release);
    _thread = std::thread([this] { loop(); });
}

std::optional<run_stats> writer::post(std::shared_ptr<command> cmd) {
    auto done = cmd->result.get_future();
    {
        std::lock_guard lock(_command_mutex);
        _command = std::move(cmd);
        _command_pending.store(true, std::memory_order_release);
    }
    _in_ready.signal();
    return done.get();  // rethrows what the writer thread set (storage_error)
}

void writer::start_run(const run_options& options) {
    std::lock_guard control(_control_mutex);
    if (!_thread.joinable()) throw storage_error("cannot start run '" + options.run_name + "': the writer thread is not running");
    auto cmd = std::make_shared<command>();
    cmd->what = command::kind::start_run;
    cmd->options = options;
    post(std::move(cmd));
}

std::optional<run_stats> writer::stop_run() {
    std::lock_guard control(_control_mutex);
    if (!_thread.joinable()) return std::nullopt;
    auto cmd = std::make_shared<command>();
    cmd->what = command::kind::stop_run;
    return post(std::move(cmd));
}

void writer::run_on_writer_thread(std::function<void()> fn) {
    std::lock_guard control(_control_mutex);
    if (!_thread.joinable()) {
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
    if (!_thread.joinable()) return;
    auto cmd = std::make_shared<command>();
    cmd->what = command::kind::shutdown;
    try {
        post(std::move(cmd));
    } catch (...) {
        _thread.join();
        throw;
    }
    _thread.join();
}

// Everything below runs on the writer thread.
void writer::loop() {
    std::unique_ptr<run_file> run;
    bool run_failed = false;
    std::chrono::milliseconds flush_interval{1000};
    auto next_flush = std::chrono::steady_clock::now();

    // One error line per failed run: the file, the cause, the free space
    // (run_file puts the free space into its error).
    auto fail_run = [&](const std::exception& e) {
        run_failed = true;
        const auto& s = run->stats();
        const std::string file = s.files.empty() ? std::string("?") : s.files.back().string();
        const std::string message = s.error.empty() ? std::string(e.what()) : s.error;
        spdlog::error("run '{}' FAILED, no longer writing to {}: {}", s.run_name, file, message);
        {
            std::lock_guard lock(_error_mutex);
            _run_error = message;
        }
        _counters.run_failures.add();
    };

    // Moves the run's written counts into the counters. After a failure the
    // run may count fewer frames than before (those in a file that is gone,
    // or past its last flush): they leave frames_written for frames_failed,
    // so that daq_frames_written_total never claims a frame that is in no file.
    std::map<std::uint16_t, std::uint64_t> unwritten_reported;  // per unit, this run
    auto account = [&](std::uint64_t frames_before, std::uint64_t bytes_before) {
        const auto& s = run->stats();
        if (s.frames_written >= frames_before) {
            _counters.frames_written.add(s.frames_written - frames_before);
        } else {
            const std::uint64_t lost = frames_before - s.frames_written;
            _counters.frames_written.sub(lost);
            _counters.frames_failed.add(lost);
            for (const auto& [id, u] : s.units) {
                auto& reported = unwritten_reported[id];
                if (_observer && u.frames_unwritten > reported) _observer->on_unwritten(id, u.frames_unwritten - reported);
                reported = u.frames_unwritten;
            }
        }
        if (s.bytes_written >= bytes_before)
            _counters.bytes_written.add(s.bytes_written - bytes_before);
        else
            _counters.bytes_written.sub(bytes_before - s.bytes_written);
    };

    auto handle_frame = [&](const processing::frame& f) {
        bool written = false;
        bool appended = false;
        const bool observed = run && !run_failed;  // shown to the observer inside
        if (run && !run_failed) {
            const auto& s = run->stats();
            const std::uint64_t frames_before = s.frames_written;
            const std::uint64_t bytes_before = s.bytes_written;
            const std::uint64_t unwritten_before = s.frames_unwritten;
            try {
                run->append(f);
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
            if (!written && run_failed) _counters.frames_failed.add();
        } else if (run) {
            _counters.frames_failed.add();
        } else {
            _counters.frames_unrecorded.add();
        }
        if (_observer && !observed) _observer->on_frame(f, false);
        _pool.release(f.pool_index);
    };

    auto flush_run = [&] {
        const auto t0 = std::chrono::steady_clock::now();
        const std::uint64_t frames_before = run->stats().frames_written;
        const std::uint64_t bytes_before = run->stats().bytes_written;
        try {
            run->flush();
        } catch (const std::exception& e) {
            fail_run(e);
            account(frames_before, bytes_before);
            return;
        }
        const auto t1 = std::chrono::steady_clock::now();
        _counters.flushes.add();
        _counters.flush.observe_ns(
            static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count()));
    };

    // Handles the frames queued right now (not those pushed meanwhile).
    auto drain_snapshot = [&] {
        for (std::size_t n = _in.size(); n > 0; --n) {
            auto f = _in.try_pop();
            if (!f) break;
            handle_frame(*f);
        }
    };

    auto finish_run = [&]() -> run_stats {
        const std::uint64_t frames_before = run->stats().frames_written;
        const std::uint64_t bytes_before = run->stats().bytes_written;
        try {
            run->close();
        } catch (const std::exception& e) {
            if (!run_failed) fail_run(e);
        }
        account(frames_before, bytes_before);
        run_stats s = run->stats();
        run.reset();
        run_failed = false;
        {
            std::lock_guard lock(_error_mutex);
            _run_error.clear();
        }
        _run_active.store(false, std::memory_order_release);
        spdlog::info("run '{}' stopped: {} frames, {} bytes, {} file(s), {} flushes{}", s.run_name, s.frames_written,
                     s.bytes_written, s.files.size(), s.flushes, s.failed ? " (FAILED, see the error above)" : "");
        return s;
    };

    auto handle_command = [&] {
        std::shared_ptr<command> cmd;
        {
            std::lock_guard lock(_command_mutex);
            cmd = std::move(_command);
            _command_pending.store(false, std::memory_order_release);
        }
        if (!cmd) return;
        switch (cmd->what) {
        case command::kind::start_run:
            // A failed run has stopped writing already: a new run replaces it
            // (after the operator made room, say).
            if (run && run_failed) {
                drain_snapshot();
                finish_run();
            }
            if (run) {
                cmd->result.set_exception(std::make_exception_ptr(storage_error(
                    "cannot start run '" + cmd->options.run_name + "': run '" + run->stats().run_name + "' is active")));
                return;
            }
            try {
                run = std::make_unique<run_file>(cmd->options);
                run_failed = false;
                unwritten_reported.clear();
                flush_interval = std::max(cmd->options.flush_interval, std::chrono::milliseconds(1));
                next_flush = std::chrono::steady_clock::now() + flush_interval;
                _run_active.store(true, std::memory_order_release);
                spdlog::info("run '{}' started: {}", cmd->options.run_name, run->stats().files.front().string());
                cmd->result.set_value(std::nullopt);
            } catch (...) {
                run.reset();
                cmd->result.set_exception(std::current_exception());
            }
            return;
        case command::kind::stop_run:
            if (!run) {
                cmd->result.set_value(std::nullopt);
                return;
            }
            drain_snapshot();
            cmd->result.set_value(finish_run());
            return;
        case command::kind::call:
            try {
                cmd->fn();
                cmd->result.set_value(std::nullopt);
            } catch (...) {
                cmd->result.set_exception(std::current_exception());
            }
            return;
        case command::kind::shutdown:
            _stopping.store(true, std::memory_order_release);  // the loop ends whatever happens below
            drain_snapshot();
            if (run) finish_run();
            cmd->result.set_value(std::nullopt);
            return;
        }
    };

    int idle = 0;
    while (!_stopping.load(std::memory_order_acquire)) {
        if (_command_pending.load(std::memory_order_acquire)) {
            try {
                handle_command();
            } catch (const std::exception& e) {
                spdlog::error("writer: command failed: {}", e.what());
            }
            continue;
        }
        int n = 0;
        for (; n < batch; ++n) {
            auto f = _in.try_pop();
            if (!f) break;
            handle_frame(*f);
        }
        if (run && !run_failed && std::chrono::steady_clock::now() >= next_flush) {
            flush_run();
            next_flush = std::chrono::steady_clock::now() + flush_interval;
        }
        if (n > 0) {
            idle = 0;
            continue;
        }
        ++idle;
        if (idle <= spin_rounds) {
            cpu_relax();
            continue;
        }
        if (idle <= spin_rounds + yield_rounds) {
            std::this_thread::yield();
            continue;
        }
        _in_ready.prepare_wait();
        if (!_in.empty() || _command_pending.load(std::memory_order_acquire)) {
            _in_ready.cancel_wait();
            idle = 0;
            continue;
        }
        auto timeout = std::chrono::duration_cast<std::chrono::microseconds>(idle_wait);
        if (run && !run_failed) {
            const auto until_flush = std::chrono::duration_cast<std::chrono::microseconds>(
                next_flush - std::chrono::steady_clock::now());
            timeout = std::clamp(until_flush, std::chrono::microseconds(0), timeout);
        }
        _in_ready.wait(timeout);
        idle = 0;
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
    {{"daq_storage_flushes", "Flushes of the active run", kind::counter, "", false}, &writer_counters::flushes},
};
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
    out.add_histogram(flush_seconds, {}, _counters.flush);
    out.add_histogram(stage_seconds, {{"stage", "write"}, {"backend", "hdf5"}}, _counters.flush);
    out.add_histogram(latency_seconds, {}, _counters.latency);
}

}  // namespace daqd::storage
