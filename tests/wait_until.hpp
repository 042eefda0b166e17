#pragma once
// Waiting on a condition with a deadline, for tests (never a bare sleep).
#include <chrono>
#include <thread>

namespace daqd_test {

// Polls `pred` every `poll` until it holds or `timeout` passes; returns its last value.
template <typename Pred>
bool wait_until(Pred&& pred, std::chrono::milliseconds timeout,
                std::chrono::microseconds poll = std::chrono::microseconds(100)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        if (pred()) return true;
        if (std::chrono::steady_clock::now() >= deadline) return pred();
        std::this_thread::sleep_for(poll);
    }
}

}  // namespace daqd_test
