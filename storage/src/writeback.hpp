#pragma once
// writeback_pacer: keeps the dirty and cached pages of a run file bounded
// (storage.writeback = "paced"; docs/PERFORMANCE.md "Writeback pacing
// (issue 11)"). Internal to the storage library.
//
// Without it the writer's pwrite (inside H5Dwrite_chunk) fills the page cache
// until the kernel's dirty limit, and from then on pays for the kernel's
// throttling and reclaim on the data path: its cost per byte jumps mid-run.
// With it, a helper thread starts writeback of every `step` bytes the file
// grew by (sync_file_range WRITE) and, once a range is more than `window`
// bytes behind the write front, waits until it is on the disk and drops it
// from the page cache (sync_file_range WAIT_BEFORE|WRITE|WAIT_AFTER, then
// posix_fadvise DONTNEED). The front is the file's size: HDF5 appends chunks
// at the end of the file; what it rewrites earlier (metadata, a partial
// chunk) is left to the kernel (DONTNEED never drops a dirty page).
//
// Owned by the writer (one for all its runs, so that the helper finishes a
// run's last file after the run_file is gone), or by a run_file made without
// one (daq-write-bench, tests). The run_file attaches each file it creates
// (when its run_options say paced), notes its writes and detaches it when
// closing it. attach/note/detach: the writer thread (HDF5 is only called
// there, in attach); one file is attached at a time. The helper thread,
// started at the first attach, never calls HDF5: it works on its own dup()
// of the file's descriptor, so HDF5 may close and reopen the file (new unit,
// stopped_at) while the helper still uses it. The helper closes that
// descriptor when it has finished a detached file; at destruction what is
// still pending is abandoned to the kernel.
//
// Failures never fail the run: every failed call is counted
// (writeback_counters::errors) and logged once when failing starts and once
// when it works again.
#include "daqd/storage/run_writer.hpp"

#include <hdf5.h>

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

namespace daqd::storage {

class writeback_pacer {
public:
    // `counters` nullptr: counted in a member nobody reads. threaded false:
    // no helper thread; its work runs on the writer thread inside note() and
    // detach() (for a writer without a thread, worker().start_pumped(): the
    // caller is the only thread anyway).
    explicit writeback_pacer(writeback_counters* counters, bool threaded = true);
    ~writeback_pacer();  // abandons pending work, closes every descriptor, joins the helper

    [[nodiscard]] bool threaded() const noexcept { return _threaded; }
    writeback_pacer(const writeback_pacer&) = delete;
    writeback_pacer& operator=(const writeback_pacer&) = delete;

    // Writer thread: `file` (opened with `fapl`, the sec2 driver) was just
    // created; its writes are paced from now on with `options`' step and
    // window. A file still attached is detached first (finish = true).
    void attach(hid_t file, hid_t fapl, const std::string& name, const writeback_options& options) noexcept;
    // Writer thread: the attached file was written to (a chunk, a flush).
    // One fstat; the helper is woken once per `step` bytes of growth.
    void note() noexcept;
    // Writer thread: no more writes to the attached file. finish: the helper
    // writes back and drops the rest of it (asynchronously); else it only
    // closes its descriptor (failure paths). No-op when none is attached.
    void detach(bool finish) noexcept;

private:
    // One file: the writer's part under _mutex, the helper's without.
    struct tracked {
        int fd = -1;           // our dup(); closed by the helper (or the destructor)
        std::string name;      // for messages
        std::uint64_t step = 0;
        std::uint64_t window = 0;
        std::uint64_t front = 0;  // guarded: file size at the writer's last wake-up
        bool detached = false;    // guarded
        bool finish = false;      // guarded
        std::uint64_t started = 0;  // helper: writeback started for [0, started)
        std::uint64_t settled = 0;  // helper: waited for and dropped up to here
    };

    void run() noexcept;  // the helper thread
    void kick() noexcept;
    void run_inline() noexcept;  // not threaded: the helper's work, on the writer thread, until none is left
    // Under _mutex (released meanwhile): does the work of one file that has
    // some; false when none has.
    bool work_one(std::unique_lock<std::mutex>& lock) noexcept;
    [[nodiscard]] bool has_work(const tracked& t) const noexcept;  // under _mutex
    // Helper thread, without _mutex. Returns true when a detached file is done.
    bool work(tracked& t, std::uint64_t front, bool detached, bool finish) noexcept;
    // Waits for [settled, end) and drops it, in steps; stops early when
    // stopping. to_eof: the file is finished, the last drop reaches its end.
    void settle(tracked& t, std::uint64_t end, bool to_eof) noexcept;
    void failed(const tracked& t, const char* call, int err) noexcept;
    void succeeded() noexcept;

    const bool _threaded;
    writeback_counters _own_counters;
    writeback_counters& _counters;
    // Writer thread.
    tracked* _current = nullptr;  // attached file (owned by _files until the helper erases it after detach)
    std::uint64_t _signalled = 0;  // front handed to the helper last
    bool _attach_error_logged = false;
    std::thread _helper;  // started at the first attach
    // Shared.
    std::mutex _mutex;
    std::condition_variable _wake;
    std::deque<std::unique_ptr<tracked>> _files;  // guarded
    bool _stopping = false;                       // guarded
    // Helper thread.
    bool _failing = false;
};

}  // namespace daqd::storage
