#include "daqd/common/worker.hpp"

#include <pthread.h>
#include <spdlog/spdlog.h>

#include <sched.h>

#include <algorithm>
#include <cassert>
#include <cstring>
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

// "0,2-3": runs of consecutive CPUs as ranges.
std::string cpu_list_text(const std::vector<unsigned>& cpus) {
    std::string out;
    for (std::size_t i = 0; i < cpus.size();) {
        std::size_t j = i;
        while (j + 1 < cpus.size() && cpus[j + 1] == cpus[j] + 1) ++j;
        if (!out.empty()) out += ',';
        out += std::to_string(cpus[i]);
        if (j > i) out += '-' + std::to_string(cpus[j]);
        i = j + 1;
    }
    return out;
}

namespace {

// The CPUs the calling thread may run on, as text ("?" when unknown).
std::string own_cpus_text() {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (::pthread_getaffinity_np(::pthread_self(), sizeof set, &set) != 0) return "?";
    std::vector<unsigned> cpus;
    for (unsigned c = 0; c < CPU_SETSIZE; ++c)
        if (CPU_ISSET(c, &set)) cpus.push_back(c);
    return cpu_list_text(cpus);
}

}  // namespace

// Once at the thread's start: an unpinned thread runs where the process may,
// a pinned one where it was told to, or (with a warning) unpinned when the
// kernel refuses the set (a CPU outside the process's cpuset, offline).
void name_and_pin_this_thread(const std::string& name, const std::vector<unsigned>& cpus) noexcept {
    [[maybe_unused]] const int named = ::pthread_setname_np(::pthread_self(), name.substr(0, 15).c_str());
    if (cpus.empty()) {
        spdlog::debug("thread {}: not pinned, runs on CPUs {}", name, own_cpus_text());
        return;
    }
    const unsigned highest = *std::max_element(cpus.begin(), cpus.end());
    cpu_set_t* set = CPU_ALLOC(highest + 1);
    if (set == nullptr) {
        spdlog::warn("thread {}: cannot pin to CPUs {}: CPU_ALLOC failed; it runs unpinned", name, cpu_list_text(cpus));
        return;
    }
    const std::size_t bytes = CPU_ALLOC_SIZE(highest + 1);
    CPU_ZERO_S(bytes, set);
    for (unsigned c : cpus) CPU_SET_S(c, bytes, set);
    const int rc = ::pthread_setaffinity_np(::pthread_self(), bytes, set);
    CPU_FREE(set);
    if (rc != 0)
        spdlog::warn("thread {}: cannot pin to CPUs {}: pthread_setaffinity_np: {}; it runs unpinned on CPUs {}", name,
                     cpu_list_text(cpus), std::strerror(rc), own_cpus_text());
    else
        spdlog::info("thread {}: pinned to CPUs {}", name, own_cpus_text());
}

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

void worker::pin(std::vector<unsigned> cpus) {
    assert(!running() && "pin a worker before it starts");
    std::sort(cpus.begin(), cpus.end());
    cpus.erase(std::unique(cpus.begin(), cpus.end()), cpus.end());
    _cpus = std::move(cpus);
}

void worker::start_pumped() {
    assert(!running() && "a worker runs once at a time");
    _state.store(state::pumped, std::memory_order_release);
}

bool worker::pump() {
    assert(pumped() && "pump() drives a worker started with start_pumped()");
    _passes.store(_passes.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
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

worker_status worker::status() const { return {_name, running(), failure(), passes()}; }

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
    // Named and pinned by itself, before its first pass. Linux keeps 15 characters.
    name_and_pin_this_thread(_name, _cpus);
    if (::pthread_getcpuclockid(::pthread_self(), &_clock) == 0) _clock_ready.store(true, std::memory_order_release);
    try {
        std::uint64_t idle_since = 0;  // 0: the last pass found work
        while (!_stop.load(std::memory_order_acquire)) {
            _passes.store(_passes.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
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
    if (timespec t{}; ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t) == 0)
        _cpu_ns_final.store(static_cast<std::uint64_t>(t.tv_sec) * 1'000'000'000ull + static_cast<std::uint64_t>(t.tv_nsec),
                            std::memory_order_relaxed);
    _clock_ready.store(false, std::memory_order_release);
    _state.store(state::ended, std::memory_order_release);
    _body.thread_ending();
}

double worker::cpu_seconds() const noexcept {
    if (_clock_ready.load(std::memory_order_acquire)) {
        if (timespec t{}; ::clock_gettime(_clock, &t) == 0)
            return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) / 1e9;
    }
    return static_cast<double>(_cpu_ns_final.load(std::memory_order_relaxed)) / 1e9;
}

// ---- combined_worker ----

combined_worker::combined_worker(std::string name, worker& upstream, worker& downstream)
    : _body(upstream._body, downstream._body), _worker(std::move(name), upstream._wake, _body) {
    assert(!upstream.running() && !downstream.running() && "the combined stages' own workers do not run");
}

bool combined_worker::body::pass() {
    const bool took = up.pass();
    return down.pass() || took;
}

void combined_worker::body::drain() {
    // Bounded like the receiver's own drain: a sender that never stops must
    // not hold the stop up forever.
    for (int i = 0; i < 100000; ++i) {
        const bool took = up.pass();
        if (!down.pass() && !took) break;
    }
    up.drain();
    down.drain();
}

}  // namespace daqd::common
