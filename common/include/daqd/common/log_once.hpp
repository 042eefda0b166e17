#pragma once
// Edge-triggered logging for conditions that may repeat per packet or frame:
// log once when a condition starts and once when it stops (has not recurred
// for quiet_ns), never per event.
// Owned and called by one thread.
#include <cstdint>
#include <string_view>

namespace daqd::common {

class edge_logger {
public:
    static constexpr std::uint64_t quiet_ns = 1'000'000'000;
    explicit edge_logger(std::string_view what) : _what(what) {}
    // Call on every event of the condition: logs only on the first.
    void on(std::uint64_t total_so_far) noexcept;
    // Call when the condition is known to be over: logs once if it was on
    // and has not recurred for quiet_ns.
    void off(std::uint64_t total_so_far) noexcept;
    [[nodiscard]] bool active() const noexcept { return _active; }

private:
    std::string_view _what;
    bool _active = false;
    std::uint64_t _at_start = 0;
    std::uint64_t _last_ns = 0;  // monotonic time of the last event
};

}  // namespace daqd::common
