#pragma once
// A wake-up signal between threads: an eventfd that one side signals and the
// other waits on with a timeout. Used for adaptive waiting: a consumer spins
// briefly on its queue, then sleeps here; the producer signals only when the
// consumer said it is going to sleep, so the hot path pays one relaxed load.
#include <atomic>
#include <chrono>
#include <cstdint>

namespace daqd::common {

class wake_event {
public:
    wake_event();
    ~wake_event();
    wake_event(const wake_event&) = delete;
    wake_event& operator=(const wake_event&) = delete;

    // Producer: wake the consumer if it is (about to be) asleep.
    void notify() noexcept {
        if (_sleeping.load(std::memory_order_seq_cst)) signal();
    }
    // Consumer: call prepare_wait(), re-check the queue, then wait().
    void prepare_wait() noexcept { _sleeping.store(true, std::memory_order_seq_cst); }
    void cancel_wait() noexcept { _sleeping.store(false, std::memory_order_relaxed); }
    // Sleeps until notified or the timeout passes; clears the sleeping flag.
    void wait(std::chrono::microseconds timeout) noexcept;
    // Unconditional wake (stop requests).
    void signal() noexcept;
    [[nodiscard]] int fd() const noexcept { return _fd; }

private:
    int _fd = -1;
    std::atomic<bool> _sleeping{false};
};

// Monotonic nanoseconds, for timeouts and rates.
std::uint64_t monotonic_ns() noexcept;

}  // namespace daqd::common
