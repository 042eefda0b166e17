#pragma once
// The one shape of every data-path thread (receiver, assembler, processor,
// writer): a body that makes passes over its input, a worker that owns the
// thread, idles by one policy and stops by one protocol.
//
// A worker is owned by the component whose body it runs, and driven by one
// control thread (start, stop); running() and failure() may be read from any
// thread. Without a thread (start_pumped) the control thread itself makes
// the passes with pump(): tests and fuzzers drive the real wiring that way.
//
// Stop protocol: stop() asks the body to stop, the body then drains what is
// upstream of it (its caller stops the upstream threads first) and the thread
// is joined. stop() is idempotent. A body that throws on its thread is
// reported (logged with the thread's name, kept in failure()) and its thread
// ends; the process goes on.
//
// A worker may be pinned to CPUs (pin()): its thread sets its own affinity
// when it starts and logs which CPUs it got; a failure to pin is a warning
// and the thread runs unpinned. combined_worker runs two bodies next to each
// other on the data path on one thread.
#include "daqd/common/event.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <ctime>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace daqd::common {

// How an idle data-path thread waits. After its last pass that found work it
// keeps making passes for `spin_ns`, then sleeps on its wake event (or its
// sockets) for at most its body's sleep_limit() and never more than
// `longest_sleep`.
//
// Rationale: the data arrives in trains (a GSO batch, a burst of frames), so
// the next item often comes within microseconds of the last one; catching it
// by spinning saves the producer's eventfd write and this thread's sleep and
// wake-up. Between trains every microsecond spun is lost, on a small machine
// taken from the thread that is busy, and at the rates daqd mostly runs the
// spinning is a large part of its CPU per packet. A pass costs a different
// time in each thread (an empty recvmmsg about 1 us on the 2-vCPU VM, a look
// at the packet ring or a frame queue well under 0.1 us), so the policy
// counts time, not passes. 4 us is some 64 looks at a queue, or a few empty
// receives. Measured on the VM (docs/PERFORMANCE.md, "One idle policy"):
// 1, 2 and 4 us cost about the same CPU per packet at 800 Mbit/s (2 and
// 4 us also at 2.4 Gbit/s), 8 us about 20 % more: 4 us is the longest of
// them that costs no more per packet.
struct idle_policy {
    static constexpr std::uint64_t spin_ns = 4'000;
    // A bound on how late a lost wake-up is noticed (wake_event's
    // prepare_wait/recheck leaves a small window on x86, where the producer's
    // queue store may pass its load of the sleeping flag).
    static constexpr std::chrono::microseconds longest_sleep{100'000};
};

// Names the calling thread (Linux keeps 15 characters) and pins it to `cpus`
// (empty: not pinned), logging which CPUs it got; a failure to pin is a
// warning and the thread runs unpinned. Workers call it at their thread's
// start; other long-lived threads (the HTTP server's) too.
void name_and_pin_this_thread(const std::string& name, const std::vector<unsigned>& cpus) noexcept;
// "0,2-3": sorted CPU numbers as taskset and threads.*_cpus write them.
std::string cpu_list_text(const std::vector<unsigned>& cpus);

// A look at a worker from any thread: what a watchdog needs
// (daqd/service_notify.hpp) to tell a data path that moves from one that is
// stuck or has lost a thread.
struct worker_status {
    std::string name;
    bool running = false;      // running()
    std::string failure;       // failure()
    std::uint64_t passes = 0;  // passes()
};

// What a worker runs. Implemented by the component that owns the worker;
// every call is made on the worker's thread (or the pumping thread).
class worker_body {
public:
    // One pass over the input: handles what is there now (and the body's own
    // timers). Returns true when it did any work.
    virtual bool pass() = 0;
    // Asked after the worker announced its sleep (wake_event::prepare_wait):
    // true when input arrived meanwhile, so the worker passes again instead.
    // A cheap look, not a pass.
    virtual bool input_waiting() { return false; }
    // The longest this body may sleep: its own timers (a flush, an expiry).
    [[nodiscard]] virtual std::chrono::microseconds sleep_limit() const { return idle_policy::longest_sleep; }
    // Sleeps until `wake` is signalled or `timeout` passes. Bodies whose
    // input is not a queue (sockets) override it to wait on both.
    virtual void sleep(wake_event& wake, std::chrono::microseconds timeout) { wake.wait(timeout); }
    // After stop was asked, with every thread upstream stopped: handles
    // everything still upstream of this body, then returns.
    virtual void drain() = 0;
    // Last call on the worker's thread, after drain() or after the body
    // threw; threaded() is false from before this call on.
    virtual void thread_ending() noexcept {}

protected:
    ~worker_body() = default;
};

class worker {
public:
    // `name`: the thread's name (at most 15 characters: ps, top, gdb).
    // `wake`: the event its producer signals; stop() signals it too.
    worker(std::string name, wake_event& wake, worker_body& body);
    ~worker();  // stop(); owners stop it in their own destructor, while the body is whole
    worker(const worker&) = delete;
    worker& operator=(const worker&) = delete;

    // Starts the thread. Not while running (a stopped worker may start again).
    void start();
    // No thread: the caller makes the passes with pump() and stop() drains
    // on the caller. Not while running.
    void start_pumped();
    // Pumped: one pass on the calling thread (exceptions reach the caller).
    // Returns true when it did any work.
    bool pump();
    // The stop protocol (above). Never started: does nothing.
    void stop() noexcept;

    // Started (either way), not stopped, and its thread (if any) still runs.
    [[nodiscard]] bool running() const noexcept {
        const state s = _state.load(std::memory_order_acquire);
        return s == state::threaded || s == state::pumped;
    }
    // Its thread runs the body (false once the body returned or threw).
    [[nodiscard]] bool threaded() const noexcept { return _state.load(std::memory_order_acquire) == state::threaded; }
    [[nodiscard]] bool pumped() const noexcept { return _state.load(std::memory_order_acquire) == state::pumped; }
    // What the body threw, or empty.
    [[nodiscard]] std::string failure() const;
    // Passes made so far (by its thread, or pumped). A thread that runs and
    // is healthy makes one at least every idle_policy::longest_sleep, idle
    // or not; one stuck in a call, or inside one long pass, makes none.
    [[nodiscard]] std::uint64_t passes() const noexcept { return _passes.load(std::memory_order_relaxed); }
    [[nodiscard]] worker_status status() const;
    [[nodiscard]] const std::string& name() const noexcept { return _name; }
    // Any thread: CPU seconds its thread has used (its last thread's, once
    // that ended; 0 when it never had one). What ran out when frames are
    // lost: a thread near 1 CPU second per second, or the writer's time in
    // writes (storage's daq_storage_write_seconds_total).
    [[nodiscard]] double cpu_seconds() const noexcept;

    // The CPUs its thread is pinned to from its next start() (empty: not
    // pinned, the default). Not while running; a pumped worker runs on its
    // caller and is never pinned.
    void pin(std::vector<unsigned> cpus);
    [[nodiscard]] const std::vector<unsigned>& cpus() const noexcept { return _cpus; }

private:
    friend class combined_worker;  // runs this worker's body on its own thread
    // ended: the thread has returned and waits to be joined.
    enum class state { idle, threaded, pumped, ended, stopped };
    void run() noexcept;
    void fail(std::exception_ptr e) noexcept;

    const std::string _name;
    wake_event& _wake;
    worker_body& _body;
    std::atomic<state> _state{state::idle};
    std::atomic<bool> _stop{false};
    mutable std::mutex _failure_mutex;
    std::string _failure;  // guarded by _failure_mutex
    std::vector<unsigned> _cpus;
    // Its thread's CPU clock while it runs; its last reading once it ended.
    std::atomic<bool> _clock_ready{false};
    clockid_t _clock{};
    std::atomic<std::uint64_t> _cpu_ns_final{0};
    // Written by the thread that makes the passes only (a relaxed store, no
    // locked instruction); read now and then by a watchdog.
    std::atomic<std::uint64_t> _passes{0};
    std::thread _thread;
};

// One thread for two stages next to each other on the data path, upstream
// and downstream of one queue (the receiver and the assembler, issue 11: on
// a machine with few cores the two threads mostly wake each other up). Each
// pass is the upstream body's pass, then the downstream body's, so what the
// first queued is taken in the same pass, with no wake-up between them. Idle,
// it sleeps as the upstream body does (on its sockets, and the upstream
// worker's wake event, which carries stop), at most as long as either body
// allows (the assembler's frame expiry).
//
// Stop: both bodies pass until neither finds work (so the queue between them
// never fills while the upstream one empties its input), then the upstream
// body drains, then the downstream one: nothing taken in is lost.
//
// It borrows the two workers' bodies; their own workers stay idle (never
// started) while it exists, and it must be destroyed before them. A failure
// of either body is this worker's (its name in the log and failure()).
// Owned and driven like a worker, through get(); one control thread.
class combined_worker {
public:
    combined_worker(std::string name, worker& upstream, worker& downstream);
    ~combined_worker() { _worker.stop(); }
    combined_worker(const combined_worker&) = delete;
    combined_worker& operator=(const combined_worker&) = delete;

    [[nodiscard]] worker& get() noexcept { return _worker; }

private:
    struct body final : worker_body {
        body(worker_body& up, worker_body& down) : up(up), down(down) {}
        bool pass() override;
        bool input_waiting() override { return up.input_waiting() || down.input_waiting(); }
        [[nodiscard]] std::chrono::microseconds sleep_limit() const override {
            return std::min(up.sleep_limit(), down.sleep_limit());
        }
        void sleep(wake_event& wake, std::chrono::microseconds timeout) override { up.sleep(wake, timeout); }
        void drain() override;
        void thread_ending() noexcept override {
            up.thread_ending();
            down.thread_ending();
        }
        worker_body& up;
        worker_body& down;
    };
    body _body;
    worker _worker;  // last: stopped before the body goes
};

}  // namespace daqd::common
