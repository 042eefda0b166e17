#include "service_notify.hpp"

#include <fmt/format.h>
#include <pthread.h>
#include <spdlog/spdlog.h>
#include <systemd/sd-daemon.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <ctime>

namespace daqd {

std::string liveness_monitor::check(const std::vector<common::worker_status>& threads, std::uint64_t now_ns) {
    std::string wrong;
    for (const auto& t : threads) {
        auto [it, first] = _last.try_emplace(t.name, seen{t.passes, now_ns});
        seen& s = it->second;
        std::string why;
        if (!t.failure.empty())
            why = fmt::format("thread {} failed: {}", t.name, t.failure);
        else if (!t.running)
            why = fmt::format("thread {} no longer runs", t.name);
        else if (!first && t.passes == s.passes)
            why = fmt::format("thread {} made no pass for {:.1f} s", t.name,
                              static_cast<double>(now_ns - s.since_ns) / 1e9);
        if (t.passes != s.passes) s = {t.passes, now_ns};
        if (!why.empty()) wrong += (wrong.empty() ? "" : "; ") + why;
    }
    if (threads.empty()) wrong = "no data-path thread to watch";
    return wrong;
}

service_notifier::service_notifier() {
    const char* socket = std::getenv("NOTIFY_SOCKET");
    _enabled = socket != nullptr && socket[0] != '\0';
    if (!_enabled) return;
    std::uint64_t usec = 0;
    // > 0: WATCHDOG_USEC is set (and WATCHDOG_PID, if set, is this process).
    if (::sd_watchdog_enabled(0, &usec) > 0 && usec > 0) _watchdog = std::chrono::microseconds(usec);
    if (_watchdog.count() > 0 && _watchdog < std::chrono::seconds(1))
        spdlog::warn("systemd watchdog: WatchdogSec of {} ms is shorter than 1 s; an idle data-path thread "
                     "makes a pass only every {} ms",
                     _watchdog.count() / 1000, common::idle_policy::longest_sleep.count() / 1000);
}

service_notifier::~service_notifier() { stop_watchdog(); }

void service_notifier::send(const std::string& state) {
    if (!_enabled) return;
    const int rc = ::sd_notify(0, state.c_str());
    if (rc < 0 && !_send_failed.exchange(true))
        spdlog::warn("sd_notify to NOTIFY_SOCKET failed: {} (systemd is not told {}; logged once)", std::strerror(-rc),
                     state.substr(0, state.find('\n')));
}

void service_notifier::ready(const std::string& status) {
    send(status.empty() ? std::string("READY=1") : "READY=1\nSTATUS=" + status);
}

void service_notifier::reloading() {
    timespec now{};
    ::clock_gettime(CLOCK_MONOTONIC, &now);
    const auto usec = static_cast<std::uint64_t>(now.tv_sec) * 1'000'000u + static_cast<std::uint64_t>(now.tv_nsec) / 1000u;
    send(fmt::format("RELOADING=1\nMONOTONIC_USEC={}", usec));
}

void service_notifier::reloaded(const std::string& status) { ready(status); }

void service_notifier::stopping(const std::string& status) {
    send(status.empty() ? std::string("STOPPING=1") : "STOPPING=1\nSTATUS=" + status);
}

void service_notifier::start_watchdog(probe threads) {
    if (!_enabled || _watchdog.count() == 0 || _thread.joinable()) return;
    {
        std::lock_guard lock(_mutex);
        _stop = false;
    }
    spdlog::info("systemd watchdog: WatchdogSec {:.1f} s, a ping every {:.1f} s while every data-path thread "
                 "makes progress",
                 static_cast<double>(_watchdog.count()) / 1e6, static_cast<double>(_watchdog.count()) / 2e6);
    _thread = std::thread([this, threads = std::move(threads)]() mutable { watch(std::move(threads)); });
}

void service_notifier::stop_watchdog() {
    {
        std::lock_guard lock(_mutex);
        _stop = true;
    }
    _wake.notify_all();
    if (_thread.joinable()) _thread.join();
}

void service_notifier::watch(probe threads) {
    ::pthread_setname_np(::pthread_self(), "daqd-watchdog");
    using clock = std::chrono::steady_clock;
    const auto interval = std::chrono::duration_cast<clock::duration>(_watchdog / 2);
    const auto retry = std::min<clock::duration>(interval, std::chrono::milliseconds(250));
    liveness_monitor monitor;
    bool alive = true;
    auto next = clock::now();  // the first look right away: READY=1 was just sent
    std::unique_lock lock(_mutex);
    for (;;) {
        if (_wake.wait_until(lock, next, [&] { return _stop; })) return;
        lock.unlock();
        const std::string wrong = monitor.check(threads(), common::monotonic_ns());
        if (wrong.empty()) {
            send("WATCHDOG=1");
            if (!alive) spdlog::warn("systemd watchdog: every data-path thread makes progress again: pings resume");
            alive = true;
            next = clock::now() + interval;
        } else {
            if (alive)
                spdlog::error("systemd watchdog: no ping: {} (systemd restarts daqd after WatchdogSec without one)",
                              wrong);
            alive = false;
            next = clock::now() + retry;
        }
        lock.lock();
    }
}

}  // namespace daqd
