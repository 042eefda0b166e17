// systemd notifications (service_notify.hpp): the liveness verdict from
// successive looks at the data-path threads, and what the notifier sends to
// a NOTIFY_SOCKET (an AF_UNIX datagram socket of the test's own), or not.
#include "service_notify.hpp"
#include "notify_socket.hpp"

#include <catch2/catch.hpp>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>

using daqd::common::worker_status;
using daqd_test::notify_socket;
using namespace std::chrono_literals;

namespace {

constexpr std::uint64_t ms = 1'000'000;

}  // namespace

TEST_CASE("liveness: alive while every thread runs and moves, a stuck, ended or failed thread is named",
          "[daqd][service]") {
    daqd::liveness_monitor m;
    std::vector<worker_status> t{{"daqd-receive", true, "", 10}, {"daqd-write", true, "", 5}};
    CHECK(m.check(t, 0) == "");  // first look: running, not failed
    t[0].passes = 20;
    t[1].passes = 6;
    CHECK(m.check(t, 500 * ms) == "");
    t[0].passes = 30;  // the writer stays at 6
    CHECK(m.check(t, 1000 * ms) == "thread daqd-write made no pass for 0.5 s");
    t[0].passes = 40;
    CHECK(m.check(t, 1300 * ms) == "thread daqd-write made no pass for 0.8 s");
    t[0].passes = 50;
    t[1].passes = 7;  // moves again
    CHECK(m.check(t, 1500 * ms) == "");

    SECTION("a thread that ended, one that failed") {
        t[0].running = false;
        t[1].failure = "H5Dwrite_chunk failed";
        t[1].running = false;
        CHECK(m.check(t, 2000 * ms) ==
              "thread daqd-receive no longer runs; thread daqd-write failed: H5Dwrite_chunk failed");
    }
    SECTION("nothing to watch") { CHECK(m.check({}, 2000 * ms) == "no data-path thread to watch"); }
}

TEST_CASE("sd_notify: nothing is sent, and no watchdog runs, without NOTIFY_SOCKET", "[daqd][service]") {
    ::unsetenv("NOTIFY_SOCKET");
    ::setenv("WATCHDOG_USEC", "1000000", 1);
    daqd::service_notifier n;
    CHECK_FALSE(n.enabled());
    CHECK(n.watchdog_usec().count() == 0);
    std::atomic<int> looks{0};
    n.start_watchdog([&] {
        ++looks;
        return std::vector<worker_status>{};
    });
    n.ready("x");
    n.stopping("y");
    n.stop_watchdog();
    CHECK(looks == 0);
    ::unsetenv("WATCHDOG_USEC");
}

TEST_CASE("sd_notify: READY, RELOADING, STOPPING with their status, WATCHDOG pings while the probe's threads move, "
          "none while one is stuck",
          "[daqd][service]") {
    notify_socket sock((std::filesystem::temp_directory_path() / ("daqd-notify-" + std::to_string(::getpid()))).string());
    ::setenv("NOTIFY_SOCKET", sock.path.c_str(), 1);
    ::setenv("WATCHDOG_USEC", "400000", 1);  // a look every 0.2 s
    daqd::service_notifier n;  // libsystemd reads NOTIFY_SOCKET at each call: kept to the end
    REQUIRE(n.enabled());
    CHECK(n.watchdog_usec() == 400ms);

    n.ready("receiving on 127.0.0.1:4660");
    CHECK(sock.next(1s) == "READY=1\nSTATUS=receiving on 127.0.0.1:4660");
    n.reloading();
    const std::string reloading = sock.next(1s);
    CHECK(reloading.rfind("RELOADING=1\nMONOTONIC_USEC=", 0) == 0);
    n.reloaded("");
    CHECK(sock.next(1s) == "READY=1");

    std::atomic<std::uint64_t> passes{0};
    std::atomic<bool> stuck{false};
    n.start_watchdog([&] {
        if (!stuck) ++passes;
        return std::vector<worker_status>{{"daqd-write", true, "", passes.load()}};
    });
    CHECK(sock.next(1s) == "WATCHDOG=1");
    CHECK(sock.next(1s) == "WATCHDOG=1");
    stuck = true;
    // At most one ping in flight, then none while stuck.
    (void)sock.next(300ms);
    CHECK(sock.next(700ms).empty());
    stuck = false;
    CHECK(sock.next(1s) == "WATCHDOG=1");
    n.stop_watchdog();
    n.stopping("draining");
    CHECK(sock.next(1s) == "STOPPING=1\nSTATUS=draining");
    CHECK(sock.next(300ms).empty());
    ::unsetenv("NOTIFY_SOCKET");
    ::unsetenv("WATCHDOG_USEC");
}
