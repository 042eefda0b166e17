#pragma once
// systemd's service notifications (sd_notify(3), Type=notify units;
// docs/OPERATIONS.md "Running as a systemd service"):
//
//   READY=1       once start-up is done: sockets bound, rings mapped, the
//                 data path's threads started, the HTTP server bound;
//   WATCHDOG=1    every WATCHDOG_USEC/2, from a thread of its own, only while
//                 the data path is alive (liveness_monitor);
//   RELOADING=1   while a SIGHUP reload runs, READY=1 after it;
//   STOPPING=1    when draining starts.
//
// Where NOTIFY_SOCKET is unset (daqd not started by systemd) every call does
// nothing (libsystemd reads it at each call: it stays in the environment); where WATCHDOG_USEC is unset (or WATCHDOG_PID names another
// process) there is no watchdog thread.
//
// Owned by main; its calls are made by main. The watchdog thread calls the
// probe it was given, which must be safe from any thread while the
// watchdog runs (pipeline::thread_status() is).
#include "daqd/common/worker.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace daqd {

// Whether the data path is alive, from successive looks at its threads: it
// is when every thread runs, none has failed, and each made a pass since
// the previous look. An idle thread makes a pass at least every
// common::idle_policy::longest_sleep (0.1 s), so looks farther apart than
// that see every healthy thread move; a thread stuck in a call (a hung
// write, a deadlock) or spinning inside one pass does not.
//
// Pure and single-threaded (the watchdog thread's).
class liveness_monitor {
public:
    // "" when alive; otherwise what is wrong, in words, naming the thread.
    std::string check(const std::vector<common::worker_status>& threads, std::uint64_t now_ns);

private:
    struct seen {
        std::uint64_t passes = 0;
        std::uint64_t since_ns = 0;  // when `passes` was first seen at that value
    };
    std::map<std::string, seen> _last;  // by thread name
};

class service_notifier {
public:
    using probe = std::function<std::vector<common::worker_status>()>;

    // Reads NOTIFY_SOCKET and the watchdog's interval (sd_watchdog_enabled) once.
    service_notifier();
    ~service_notifier();  // stops the watchdog thread
    service_notifier(const service_notifier&) = delete;
    service_notifier& operator=(const service_notifier&) = delete;

    [[nodiscard]] bool enabled() const noexcept { return _enabled; }
    // WATCHDOG_USEC; zero without a watchdog.
    [[nodiscard]] std::chrono::microseconds watchdog_usec() const noexcept { return _watchdog; }

    // `status`: a line for `systemctl status` (STATUS=), may be empty.
    void ready(const std::string& status);
    void reloading();
    void reloaded(const std::string& status);
    void stopping(const std::string& status);

    // Starts the watchdog thread: every watchdog_usec()/2 it asks `threads`
    // and pings when the data path is alive. When it is not, it logs why
    // (once, and once when it is alive again) and looks again every 0.25 s
    // at most, pinging as soon as it is. Does nothing without a watchdog.
    void start_watchdog(probe threads);
    // Stops the thread (no ping after it returns). Idempotent.
    void stop_watchdog();

private:
    void send(const std::string& state);
    void watch(probe threads);

    bool _enabled = false;
    std::chrono::microseconds _watchdog{0};
    std::atomic<bool> _send_failed{false};  // logged once (main and the watchdog thread send)
    std::mutex _mutex;
    std::condition_variable _wake;
    bool _stop = false;  // guarded by _mutex
    std::thread _thread;
};

}  // namespace daqd
