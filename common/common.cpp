#include "daqd/common/event.hpp"
#include "daqd/common/log_once.hpp"

#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>

namespace daqd::common {

wake_event::wake_event() : _fd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
    if (_fd < 0) throw std::runtime_error(std::string("eventfd: ") + std::strerror(errno));
}

wake_event::~wake_event() {
    if (_fd >= 0) ::close(_fd);
}

void wake_event::signal() noexcept {
    const std::uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(_fd, &one, sizeof one);
}

void wake_event::wait(std::chrono::microseconds timeout) noexcept {
    pollfd p{_fd, POLLIN, 0};
    const int ms = static_cast<int>((timeout.count() + 999) / 1000);
    ::poll(&p, 1, ms);
    std::uint64_t v;
    [[maybe_unused]] auto n = ::read(_fd, &v, sizeof v);
    _sleeping.store(false, std::memory_order_relaxed);
}

std::uint64_t monotonic_ns() noexcept {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<std::uint64_t>(ts.tv_nsec);
}

void edge_logger::on(std::uint64_t total_so_far) noexcept {
    _last_ns = monotonic_ns();
    if (_active) return;
    _active = true;
    _at_start = total_so_far;
    spdlog::warn("{}: started", _what);
}

void edge_logger::off(std::uint64_t total_so_far) noexcept {
    if (!_active) return;
    // A condition that comes and goes within a second is one episode: one
    // line when it starts, one when it has been quiet for a second.
    if (monotonic_ns() - _last_ns < quiet_ns) return;
    _active = false;
    spdlog::warn("{}: stopped after {} events", _what, total_so_far - _at_start + 1);
}

}  // namespace daqd::common
