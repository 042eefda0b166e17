#include "daqd/common/worker.hpp"

#include <pthread.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cassert>
#include <stdexcept>

namespace daqd::common {

namespace {

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
}

}  // namespace

worker::worker(std::string name, wake_event& wake, worker_body& body)
    : _name(std::move(name)), _wake(wake), _body(body) {}

worker::~worker() { stop(); }

void worker::start() {
    assert(!running() && "a worker runs once at a time");
    if (_thread.joinable()) _thread.join();  // one that ended by itself
    _stop.store(false, std::memory_order_relaxed);
    _state.store(state::threaded, std::memory_order_release);  // before the thread can end
    _thread = std::thread([this] { run(); });
}

void worker::start_pumped() {
    assert(!running() && "a worker runs once at a time");
    _state.store(state::pumped, std::memory_order_release);
}

bool worker::pump() {
    assert(pumped() && "pump() drives a worker started with start_pumped()");
    return _body.pass();
}

void worker::stop() noexcept {
    switch (_state.load(std::memory_order_acquire)) {
    case state::idle:
    case state::stopped:
        return;
    case state::threaded:
    case state::ended:
        _stop.store(true, std::memory_order_release);
        _wake.signal();
        _thread.join();
        break;
    case state::pumped:
        try {
            _body.drain();
        } catch (...) {
            fail(std::current_exception());
        }
        break;
    }
    _state.store(state::stopped, std::memory_order_release);
}

std::string worker::failure() const {
    std::lock_guard lock(_failure_mutex);
    return _failure;
}

void worker::fail(std::exception_ptr e) noexcept {
    std::string what = "unknown exception";
    try {
        std::rethrow_exception(e);
    } catch (const std::exception& x) {
        what = x.what();
    } catch (...) {
    }
    spdlog::error("thread {} failed and stopped: {}", _name, what);
    std::lock_guard lock(_failure_mutex);
    if (_failure.empty()) _failure = std::move(what);
}

void worker::run() noexcept {
    // Named by itself, before its first pass. Linux keeps 15 characters.
    [[maybe_unused]] const int rc = ::pthread_setname_np(::pthread_self(), _name.substr(0, 15).c_str());
    try {
        std::uint64_t idle_since = 0;  // 0: the last pass found work
        while (!_stop.load(std::memory_order_acquire)) {
            if (_body.pass()) {
                idle_since = 0;
                continue;
            }
            const std::uint64_t now = monotonic_ns();
            if (idle_since == 0) idle_since = now;
            if (now - idle_since < idle_policy::spin_ns) {
                cpu_relax();
                continue;
            }
            idle_since = 0;
            // Announce the sleep, then look once more: a producer that queued
            // meanwhile either is seen here or sees the flag and signals.
            _wake.prepare_wait();
            if (_body.input_waiting() || _stop.load(std::memory_order_acquire)) {
                _wake.cancel_wait();
                continue;
            }
            _body.sleep(_wake, std::min(_body.sleep_limit(), idle_policy::longest_sleep));
            _wake.cancel_wait();
        }
        _body.drain();
    } catch (...) {
        fail(std::current_exception());
    }
    _state.store(state::ended, std::memory_order_release);
    _body.thread_ending();
}

}  // namespace daqd::common
