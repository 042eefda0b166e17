// writeback_pacer: bounded dirty pages behind the run file's write front
// (writeback.hpp).
#include "writeback.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <system_error>

#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

namespace daqd::storage {

namespace {

// The page cache holds large folios (up to 2 MiB here), and DONTNEED drops
// only the folios wholly inside its range: each range reaches back this far
// over the previous one, so a folio left on a boundary is dropped next time.
constexpr std::uint64_t folio_overlap = 2ull << 20;

std::uint64_t elapsed_ns(std::chrono::steady_clock::time_point since) {
    return static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - since).count());
}

}  // namespace

writeback_pacer::writeback_pacer(writeback_counters* counters, bool threaded)
    : _threaded(threaded), _counters(counters != nullptr ? *counters : _own_counters) {}

writeback_pacer::~writeback_pacer() {
    if (_helper.joinable()) {
        {
            std::lock_guard lock(_mutex);
            _stopping = true;
        }
        _wake.notify_one();
        _helper.join();
    }
    for (const auto& t : _files) ::close(t->fd);  // abandoned: the kernel writes the rest back
}

void writeback_pacer::attach(hid_t file, hid_t fapl, const std::string& name,
                             const writeback_options& options) noexcept {
    detach(true);
    if (options.mode != writeback_mode::paced) return;
    // Only the sec2 driver hands out a POSIX descriptor (the default; daqd
    // sets no other).
    const char* why = nullptr;
    int err = 0;
    int fd = -1;
    void* handle = nullptr;
    if (H5Pget_driver(fapl) != H5FD_SEC2) {
        why = "the file driver is not sec2";
    } else if (H5Fget_vfd_handle(file, fapl, &handle) < 0 || handle == nullptr) {
        H5Eclear2(H5E_DEFAULT);
        why = "H5Fget_vfd_handle failed";
    } else if (fd = ::fcntl(*static_cast<int*>(handle), F_DUPFD_CLOEXEC, 0); fd < 0) {
        err = errno;
        why = "dup failed";
    } else if (_threaded && !_helper.joinable()) {
        try {
            _helper = std::thread([this] { run(); });
        } catch (const std::system_error& e) {
            ::close(fd);
            err = e.code().value();
            why = "cannot start its thread";
        }
    }
    if (why != nullptr) {
        _counters.errors.add_shared();
        if (!_attach_error_logged) {
            _attach_error_logged = true;
            spdlog::warn("writeback pacing: not pacing {}: {}{}{}; the kernel writes it back (logged once per run)", name,
                         why, err != 0 ? ": " : "", err != 0 ? std::strerror(err) : "");
        }
        return;
    }
    try {
        auto t = std::make_unique<tracked>();
        t->fd = fd;
        t->name = name;
        t->step = std::max<std::uint64_t>(options.step_bytes, 4096);
        t->window = options.window_bytes;
        std::lock_guard lock(_mutex);
        _files.push_back(std::move(t));
        _current = _files.back().get();
    } catch (...) {
        ::close(fd);
        _counters.errors.add_shared();
        return;
    }
    _signalled = 0;
}

void writeback_pacer::note() noexcept {
    if (_current == nullptr) return;
    struct stat st {};
    if (::fstat(_current->fd, &st) != 0) return;  // cannot happen on our own descriptor
    const auto size = static_cast<std::uint64_t>(st.st_size);
    if (size < _signalled + _current->step) return;
    {
        std::lock_guard lock(_mutex);
        _current->front = size;
    }
    _signalled = size;
    kick();
}

void writeback_pacer::detach(bool finish) noexcept {
    if (_current == nullptr) return;
    {
        std::lock_guard lock(_mutex);
        _current->detached = true;
        _current->finish = finish;
        _current = nullptr;
    }
    kick();
}

// The helper thread has work: wake it, or (no thread) do it here.
void writeback_pacer::kick() noexcept {
    if (_threaded)
        _wake.notify_one();
    else
        run_inline();
}

bool writeback_pacer::has_work(const tracked& t) const noexcept {
    if (t.detached) return true;
    if (t.front >= t.started + t.step) return true;
    if (t.settled >= t.started) return false;
    const std::uint64_t piece_end = std::min(t.settled + t.step, t.started);
    return t.front >= piece_end + t.window;
}

void writeback_pacer::run() noexcept {
    ::pthread_setname_np(::pthread_self(), "daqd-writeback");
    std::unique_lock lock(_mutex);
    for (;;) {
        _wake.wait(lock, [&] {
            return _stopping ||
                   std::any_of(_files.begin(), _files.end(), [&](const auto& f) { return has_work(*f); });
        });
        if (_stopping) return;
        work_one(lock);
    }
}

void writeback_pacer::run_inline() noexcept {
    std::unique_lock lock(_mutex);
    while (work_one(lock)) {
    }
}

bool writeback_pacer::work_one(std::unique_lock<std::mutex>& lock) noexcept {
    const auto it = std::find_if(_files.begin(), _files.end(), [&](const auto& f) { return has_work(*f); });
    if (it == _files.end()) return false;
    tracked* t = it->get();
    const std::uint64_t front = t->front;
    const bool detached = t->detached;
    const bool finish = t->finish;
    lock.unlock();
    const bool done = work(*t, front, detached, finish);
    lock.lock();
    if (done) {
        ::close(t->fd);
        _files.erase(std::find_if(_files.begin(), _files.end(), [&](const auto& f) { return f.get() == t; }));
    }
    return true;
}

bool writeback_pacer::work(tracked& t, std::uint64_t front, bool detached, bool finish) noexcept {
    if (detached) {
        if (!finish) return true;
        // The file is closed: its size now is its end.
        struct stat st {};
        if (::fstat(t.fd, &st) == 0) front = std::max(front, static_cast<std::uint64_t>(st.st_size));
    }
    if (front > t.started && (detached || front >= t.started + t.step)) {
        // Asynchronous: queues the range's dirty pages for writing and returns
        // (it may block while the device's queue is full: on this thread).
        if (::sync_file_range(t.fd, static_cast<off64_t>(t.started), static_cast<off64_t>(front - t.started),
                              SYNC_FILE_RANGE_WRITE) != 0)
            failed(t, "sync_file_range(SYNC_FILE_RANGE_WRITE)", errno);
        t.started = front;
    }
    if (detached) {
        settle(t, t.started, true);
        return true;
    }
    const std::uint64_t end = front > t.window ? front - t.window : 0;
    settle(t, std::min(end, t.started), false);
    return false;
}

void writeback_pacer::settle(tracked& t, std::uint64_t end, bool to_eof) noexcept {
    while (t.settled < end) {
        {
            std::lock_guard lock(_mutex);
            if (_stopping) return;
        }
        const std::uint64_t len = std::min(t.step, end - t.settled);
        const auto off = static_cast<off64_t>(t.settled);
        bool ok = true;
        const auto t0 = std::chrono::steady_clock::now();
        if (::sync_file_range(t.fd, off, static_cast<off64_t>(len),
                              SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER) != 0) {
            ok = false;
            failed(t, "sync_file_range(WAIT_BEFORE|WRITE|WAIT_AFTER)", errno);
        }
        _counters.wait_ns.add_shared(elapsed_ns(t0));
        // Clean pages only: a page rewritten meanwhile stays (the kernel
        // writes it). The last piece of a finished file reaches to its end
        // (length 0), so the folio holding the last partial page goes too.
        const std::uint64_t from = t.settled > folio_overlap ? t.settled - folio_overlap : 0;
        const bool last = to_eof && t.settled + len >= end;
        if (const int rc = ::posix_fadvise(t.fd, static_cast<off_t>(from),
                                           last ? 0 : static_cast<off_t>(t.settled + len - from), POSIX_FADV_DONTNEED);
            rc != 0) {
            ok = false;
            failed(t, "posix_fadvise(POSIX_FADV_DONTNEED)", rc);
        }
        if (ok) {
            _counters.bytes.add_shared(len);
            succeeded();
        }
        t.settled += len;
    }
}

void writeback_pacer::failed(const tracked& t, const char* call, int err) noexcept {
    _counters.errors.add_shared();
    if (_failing) return;
    _failing = true;
    spdlog::warn("writeback pacing: {} failed on {}: {}; the run goes on, the kernel writes back what the pacing "
                 "misses (logged again when pacing works again)",
                 call, t.name, std::strerror(err));
}

void writeback_pacer::succeeded() noexcept {
    if (!_failing) return;
    _failing = false;
    spdlog::info("writeback pacing works again");
}

}  // namespace daqd::storage
