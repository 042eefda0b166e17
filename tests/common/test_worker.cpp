// common::worker: the stop protocol (idle wake-up, drain, idempotence), a
// body that throws, the passes a watchdog sees, the thread's name and CPUs, driving a body without a
// thread, and combined_worker (two bodies on one thread).
#include "daqd/common/spsc_queue.hpp"
#include "daqd/common/worker.hpp"
#include "wait_until.hpp"

#include <catch2/catch.hpp>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <future>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

using daqd::common::spsc_queue;
using daqd::common::wake_event;
using daqd::common::worker;
using daqd::common::worker_body;
using namespace std::chrono_literals;

namespace {

using daqd_test::wait_until;

// Takes numbers from a queue, in order, and records what the worker asked of it.
struct counting_body final : worker_body {
    explicit counting_body(spsc_queue<int>& q) : in(q) {}

    bool pass() override {
        if (drained) bad_order = true;  // no pass after drain()
        bool any = false;
        while (auto v = in.try_pop()) {
            if (*v != next) bad_order = true;
            ++next;
            any = true;
        }
        taken.store(next, std::memory_order_release);
        return any;
    }
    bool input_waiting() override { return !in.empty(); }
    void sleep(wake_event& wake, std::chrono::microseconds timeout) override {
        sleeps.fetch_add(1);
        wake.wait(timeout);
    }
    void drain() override {
        while (auto v = in.try_pop()) {
            if (*v != next) bad_order = true;
            ++next;
        }
        taken.store(next, std::memory_order_release);
        drained = true;
        drains.fetch_add(1);
    }
    void thread_ending() noexcept override { endings.fetch_add(1); }

    spsc_queue<int>& in;
    int next = 0;
    bool drained = false;
    bool bad_order = false;
    std::atomic<int> taken{0};
    std::atomic<int> sleeps{0};
    std::atomic<int> drains{0};
    std::atomic<int> endings{0};
};

// Pushes [from, to) as a producer does: push, then notify once per batch.
void produce(spsc_queue<int>& q, wake_event& ready, int from, int to) {
    for (int i = from; i < to; ++i)
        while (!q.try_push(i)) {
            ready.notify();
            std::this_thread::yield();
        }
    ready.notify();
}

}  // namespace

TEST_CASE("worker: the body runs until stop, sleeps when idle, and drains everything queued before stop",
          "[common][worker]") {
    spsc_queue<int> q(1024);
    wake_event ready;
    counting_body body(q);
    worker w("test-counting", ready, body);
    w.start();
    CHECK(w.running());
    CHECK(w.threaded());

    produce(q, ready, 0, 500);
    REQUIRE(wait_until([&] { return body.taken.load() == 500; }, 10s));
    // Idle, it sleeps on the wake event; the producer's notify wakes it.
    REQUIRE(wait_until([&] { return body.sleeps.load() > 0; }, 10s));
    produce(q, ready, 500, 700);
    REQUIRE(wait_until([&] { return body.taken.load() == 700; }, 10s));

    // Queued right before the stop: the drain takes it.
    produce(q, ready, 700, 1700);
    w.stop();
    CHECK_FALSE(w.running());
    CHECK(body.taken.load() == 1700);
    CHECK(body.drains.load() == 1);
    CHECK(body.endings.load() == 1);
    CHECK_FALSE(body.bad_order);
    CHECK(w.failure().empty());

    // Stop is idempotent.
    w.stop();
    CHECK(body.drains.load() == 1);
    CHECK(body.endings.load() == 1);
}

namespace {

// Sleeps with no timeout: only a signal of the wake event ends its sleep.
struct sleeper_body final : worker_body {
    bool pass() override { return false; }
    void sleep(wake_event& wake, std::chrono::microseconds) override {
        asleep.store(true);
        pollfd p{wake.fd(), POLLIN, 0};
        ::poll(&p, 1, -1);
        wake.wait(0us);  // consume the signal
    }
    void drain() override { drained.store(true); }
    std::atomic<bool> asleep{false};
    std::atomic<bool> drained{false};
};

}  // namespace

TEST_CASE("worker: stop wakes a sleeping body at once", "[common][worker]") {
    wake_event ready;
    sleeper_body body;
    worker w("test-sleeper", ready, body);
    w.start();
    REQUIRE(wait_until([&] { return body.asleep.load(); }, 10s));
    // A body that sleeps until signalled: stop() returns only because it signals.
    auto stopped = std::async(std::launch::async, [&] { w.stop(); });
    const bool returned = stopped.wait_for(10s) == std::future_status::ready;
    if (!returned) ready.signal();  // let the thread go, so that the test ends
    stopped.wait();
    CHECK(returned);
    CHECK(body.drained.load());
}

namespace {

struct throwing_body final : worker_body {
    bool pass() override {
        if (++passes == 3) throw std::runtime_error("the body broke");
        return true;
    }
    void drain() override { drained = true; }
    void thread_ending() noexcept override { ended.store(true); }
    int passes = 0;
    bool drained = false;
    std::atomic<bool> ended{false};
};

}  // namespace

TEST_CASE("worker: an exception in the body is reported, the thread ends, the process goes on", "[common][worker]") {
    wake_event ready;
    throwing_body body;
    worker w("test-throwing", ready, body);
    w.start();
    REQUIRE(wait_until([&] { return body.ended.load(); }, 10s));
    CHECK_FALSE(w.threaded());
    CHECK_FALSE(w.running());
    CHECK(w.failure() == "the body broke");
    w.stop();
    w.stop();
    CHECK_FALSE(body.drained);  // a body that threw is not asked to drain
    CHECK(w.failure() == "the body broke");
}

TEST_CASE("worker: passes() moves while the thread runs, idle or busy, and status() says what a watchdog needs",
          "[common][worker]") {
    spsc_queue<int> q(1024);
    wake_event ready;
    counting_body body(q);
    worker w("test-passes", ready, body);
    CHECK(w.passes() == 0);
    w.start();
    // Idle: it sleeps at most idle_policy::longest_sleep between passes.
    REQUIRE(wait_until([&] { return body.sleeps.load() > 0; }, 10s));
    const auto idle = w.passes();
    REQUIRE(wait_until([&] { return w.passes() > idle + 2; }, 10s));
    produce(q, ready, 0, 500);
    REQUIRE(wait_until([&] { return body.taken.load() == 500; }, 10s));
    const auto s = w.status();
    CHECK(s.name == "test-passes");
    CHECK(s.running);
    CHECK(s.failure.empty());
    CHECK(s.passes > idle);
    w.stop();
    CHECK_FALSE(w.status().running);

    throwing_body broken;
    worker t("test-broken", ready, broken);
    t.start();
    REQUIRE(wait_until([&] { return broken.ended.load(); }, 10s));
    CHECK(t.status().failure == "the body broke");
    CHECK(t.status().passes == 3);
    t.stop();
}

namespace {

struct naming_body final : worker_body {
    bool pass() override {
        if (name.empty()) {
            char buf[16] = {};
            ::pthread_getname_np(::pthread_self(), buf, sizeof buf);
            name = buf;
            seen.store(true);
        }
        return false;
    }
    void drain() override {}
    std::string name;
    std::atomic<bool> seen{false};
};

}  // namespace

TEST_CASE("worker: the thread carries the worker's name, cut to what Linux keeps", "[common][worker]") {
    wake_event ready;
    naming_body body;
    worker w("daqd-a-long-thread-name", ready, body);
    w.start();
    REQUIRE(wait_until([&] { return body.seen.load(); }, 10s));
    w.stop();
    CHECK(body.name == "daqd-a-long-thr");
}

TEST_CASE("worker: without a thread the caller pumps, and stop drains on the caller", "[common][worker]") {
    spsc_queue<int> q(64);
    wake_event ready;
    counting_body body(q);
    worker w("test-pumped", ready, body);

    w.stop();  // never started: nothing happens
    CHECK(body.drains.load() == 0);

    w.start_pumped();
    CHECK(w.running());
    CHECK(w.pumped());
    CHECK_FALSE(w.threaded());
    CHECK_FALSE(w.pump());
    produce(q, ready, 0, 10);
    CHECK(w.pump());
    CHECK(body.taken.load() == 10);
    produce(q, ready, 10, 15);
    w.stop();
    CHECK(body.taken.load() == 15);
    CHECK(body.drains.load() == 1);
    CHECK(body.endings.load() == 0);  // no thread ended
    w.stop();
    CHECK(body.drains.load() == 1);
    CHECK_FALSE(body.bad_order);
}

namespace {

// Records, on the worker's thread, the CPUs it may run on and where it runs.
struct affinity_body final : worker_body {
    bool pass() override {
        if (!seen.load()) {
            cpu_set_t set;
            CPU_ZERO(&set);
            if (::pthread_getaffinity_np(::pthread_self(), sizeof set, &set) == 0)
                for (unsigned c = 0; c < CPU_SETSIZE; ++c)
                    if (CPU_ISSET(c, &set)) allowed.push_back(c);
            running_on = ::sched_getcpu();
            seen.store(true);
        }
        return false;
    }
    void drain() override {}
    std::vector<unsigned> allowed;
    int running_on = -1;
    std::atomic<bool> seen{false};
};

}  // namespace

TEST_CASE("worker: a pinned worker's thread runs only on the CPUs it was given", "[common][worker]") {
    wake_event ready;
    affinity_body body;
    worker w("test-pinned", ready, body);
    w.pin({0});  // CPU 0 exists everywhere
    CHECK(w.cpus() == std::vector<unsigned>{0});
    w.start();
    REQUIRE(wait_until([&] { return body.seen.load(); }, 10s));
    w.stop();
    CHECK(body.allowed == std::vector<unsigned>{0});
    CHECK(body.running_on == 0);
}

TEST_CASE("worker: a CPU set the kernel refuses leaves the thread running unpinned", "[common][worker]") {
    wake_event ready;
    affinity_body body;
    worker w("test-badpin", ready, body);
    w.pin({CPU_SETSIZE * 4 - 1});  // no machine here has it: pthread_setaffinity_np fails
    w.start();
    REQUIRE(wait_until([&] { return body.seen.load(); }, 10s));
    w.stop();
    CHECK_FALSE(body.allowed.empty());
    CHECK(w.failure().empty());
}

TEST_CASE("cpu_list_text writes ranges as taskset does", "[common][worker]") {
    CHECK(daqd::common::cpu_list_text({}).empty());
    CHECK(daqd::common::cpu_list_text({3}) == "3");
    CHECK(daqd::common::cpu_list_text({0, 1, 2, 4, 6, 7}) == "0-2,4,6-7");
}

namespace {

// Upstream of a combined worker: moves numbers from `in` to `mid` (bounded
// per pass, as a receiver takes one batch), sleeps on its wake event.
struct upstream_body final : worker_body {
    upstream_body(spsc_queue<int>& in, spsc_queue<int>& mid) : in(in), mid(mid) {}
    bool pass() override {
        if (drained) bad_order = true;
        bool any = false;
        for (int i = 0; i < 8 && mid.size() < mid.capacity(); ++i) {
            auto v = in.try_pop();
            if (!v) break;
            if (!mid.try_push(*v)) lost.fetch_add(1);
            any = true;
        }
        return any;
    }
    bool input_waiting() override { return !in.empty(); }
    [[nodiscard]] std::chrono::microseconds sleep_limit() const override { return 50'000us; }
    void sleep(wake_event& wake, std::chrono::microseconds timeout) override {
        last_timeout.store(timeout.count());
        wake.wait(timeout);
    }
    void drain() override {
        // What is left upstream must fit: the combined drain emptied `mid` first.
        while (auto v = in.try_pop())
            if (!mid.try_push(*v)) lost.fetch_add(1);
        drained = true;
        order.push_back('u');
    }
    void thread_ending() noexcept override { endings.fetch_add(1); }
    spsc_queue<int>& in;
    spsc_queue<int>& mid;
    bool drained = false;
    bool bad_order = false;
    std::vector<char> order;
    std::atomic<long> last_timeout{-1};
    std::atomic<int> lost{0};
    std::atomic<int> endings{0};
};

}  // namespace

TEST_CASE("combined_worker: one thread makes both passes, sleeps at most as long as either body allows, and stops "
          "upstream first with nothing lost",
          "[common][worker]") {
    spsc_queue<int> in(4096), mid(64);
    wake_event in_ready, mid_ready;
    upstream_body up(in, mid);
    counting_body down(mid);
    worker up_worker("test-up", in_ready, up);
    worker down_worker("test-down", mid_ready, down);
    daqd::common::combined_worker both("test-up+down", up_worker, down_worker);
    auto& w = both.get();
    CHECK(w.name() == "test-up+down");
    w.start();
    CHECK_FALSE(up_worker.running());
    CHECK_FALSE(down_worker.running());

    produce(in, in_ready, 0, 500);
    REQUIRE(wait_until([&] { return down.taken.load() == 500; }, 10s));
    // Idle, it sleeps as the upstream body does (its sleep(), its wake
    // event), for no longer than the shorter limit (the downstream's is the
    // default 100 ms, the upstream's 50 ms).
    REQUIRE(wait_until([&] { return up.last_timeout.load() >= 0; }, 10s));
    CHECK(up.last_timeout.load() == 50'000);
    CHECK(down.sleeps.load() == 0);

    // Far more than the queue between them holds, queued right before the
    // stop: the drain passes both until neither finds work, then drains
    // upstream, then downstream.
    produce(in, in_ready, 500, 4000);
    w.stop();
    CHECK(up.lost.load() == 0);
    CHECK(down.taken.load() == 4000);
    CHECK(up.order == std::vector<char>{'u'});
    CHECK(down.drains.load() == 1);
    CHECK(up.endings.load() == 1);
    CHECK(down.endings.load() == 1);
    CHECK_FALSE(down.bad_order);
    CHECK_FALSE(up.bad_order);
    CHECK(w.failure().empty());
}

TEST_CASE("combined_worker: a body that throws is the combined thread's failure, under its name", "[common][worker]") {
    spsc_queue<int> q(16);
    wake_event a_ready, b_ready;
    counting_body a(q);
    throwing_body b;
    worker wa("test-a", a_ready, a);
    worker wb("test-b", b_ready, b);
    daqd::common::combined_worker both("test-a+b", wa, wb);
    both.get().start();
    REQUIRE(wait_until([&] { return b.ended.load(); }, 10s));
    CHECK(both.get().failure() == "the body broke");
    CHECK(wa.failure().empty());
    CHECK(wb.failure().empty());
    both.get().stop();
    CHECK(a.endings.load() == 1);
}

TEST_CASE("combined_worker: pumped, each pump() is both passes and stop() drains on the caller", "[common][worker]") {
    spsc_queue<int> in(256), mid(16);
    wake_event in_ready, mid_ready;
    upstream_body up(in, mid);
    counting_body down(mid);
    worker up_worker("test-up", in_ready, up);
    worker down_worker("test-down", mid_ready, down);
    daqd::common::combined_worker both("test-up+down", up_worker, down_worker);
    both.get().start_pumped();
    produce(in, in_ready, 0, 5);
    CHECK(both.get().pump());
    CHECK(down.taken.load() == 5);  // taken downstream in the same pass
    produce(in, in_ready, 5, 200);
    both.get().stop();
    CHECK(down.taken.load() == 200);
    CHECK(up.lost.load() == 0);
    CHECK(up.endings.load() == 0);  // no thread ended
}
