#pragma once
// The receiver: one thread that takes datagrams from one or more UDP sockets
// ("links") straight into the packet ring, validates their headers, and counts
// everything it sees.
//
// Owned by the pipeline; start() launches its thread (common::worker), stop()
// drains what the kernel already queued, then joins. Without a thread
// (worker().start_pumped()) the caller receives with worker().pump().
// Counters are written only by the receiver thread (relaxed atomics) and may
// be read by any thread at any time.
//
// Backends (io_uring multishot recvmsg with a provided-buffer ring, or
// recvmmsg) sit behind receive_backend and are chosen once at start; see
// acquisition/README.md for the rationale of `auto`.
#include "daqd/acquisition/daq1.hpp"
#include "daqd/acquisition/packet_ring.hpp"
#include "daqd/common/event.hpp"
#include "daqd/common/telemetry.hpp"
#include "daqd/common/worker.hpp"
#include "daqd/config/config.hpp"

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace daqd::acquisition {

using telemetry::counter;

struct link_counters {
    counter datagrams;       // DAQ1-valid datagrams put into the ring
    counter bytes;           // UDP payload bytes of all datagrams seen (valid or not)
    counter ring_dropped;    // valid or not, dropped because the ring was full
    counter kernel_drops;    // the socket's drop count reported by SO_RXQ_OVFL
    counter truncated;       // datagrams larger than a ring slot (cut by the kernel), counted invalid too
    std::array<counter, daq1::drop_reason_count> invalid;  // by reason
    [[nodiscard]] std::uint64_t invalid_total() const noexcept {
        std::uint64_t s = 0;
        for (const auto& c : invalid) s += c.get();
        return s;
    }
};

// Datagrams dropped as invalid, by reason: counted where the reason is
// decided (receiver, assembler), one family.
extern const telemetry::descriptor packets_invalid;
void report_invalid(telemetry::snapshot& out, const std::array<counter, daq1::drop_reason_count>& invalid);

// A bound UDP socket of one link.
struct link_socket {
    int fd = -1;
    config::endpoint endpoint;  // as bound (the real port when 0 was asked)
    std::uint64_t rcvbuf_bytes = 0;  // what the kernel granted
};

// The receiver thread's work, per backend; called on that thread only.
class receive_backend {
public:
    virtual ~receive_backend() = default;
    // One pass over every link; returns how many datagrams it took.
    virtual std::uint64_t receive() = 0;
    // Sleeps until a link has data, `wake` is signalled or `timeout` passes.
    virtual void sleep(common::wake_event& wake, std::chrono::microseconds timeout) = 0;
    // The longest sleep the backend allows (its own polling).
    [[nodiscard]] virtual std::chrono::microseconds sleep_limit() const { return common::idle_policy::longest_sleep; }
    // After stop: takes what the sockets still hold.
    virtual void drain() = 0;
    [[nodiscard]] virtual const char* name() const noexcept = 0;
};

class receiver final : private common::worker_body {
public:
    // Binds every listen endpoint (throws std::runtime_error naming the call
    // and address on failure) and sets the chosen backend up.
    // `first_link`: the index of cfg.listen[0] among all of daqd's links (a
    // receive shard takes a group of them): slots, counters and metric
    // labels carry the global index. `shard`: names the thread
    // (daqd-receive, daqd-receive-1, ...).
    receiver(const config::acquisition_config& cfg, packet_ring& ring, common::wake_event& consumer_wake,
             std::uint16_t first_link = 0, std::uint16_t shard = 0);
    ~receiver();
    receiver(const receiver&) = delete;
    receiver& operator=(const receiver&) = delete;

    void start() { _worker->start(); }
    void stop() noexcept { _worker->stop(); }  // idempotent
    [[nodiscard]] common::worker& worker() noexcept { return *_worker; }

    [[nodiscard]] const char* backend_name() const noexcept;
    [[nodiscard]] const std::vector<link_socket>& links() const noexcept { return _links; }
    [[nodiscard]] const link_counters& counters(std::size_t link) const noexcept { return *_counters[link]; }
    [[nodiscard]] std::size_t link_count() const noexcept { return _links.size(); }
    [[nodiscard]] std::uint16_t first_link() const noexcept { return _first_link; }
    // Any thread: the links' counters into `out` (descriptors in receiver.cpp).
    void report(telemetry::snapshot& out) const;

private:
    bool pass() override { return _backend->receive() > 0; }
    void sleep(common::wake_event& wake, std::chrono::microseconds timeout) override { _backend->sleep(wake, timeout); }
    [[nodiscard]] std::chrono::microseconds sleep_limit() const override { return _backend->sleep_limit(); }
    void drain() override;

    std::vector<link_socket> _links;
    std::vector<std::unique_ptr<link_counters>> _counters;
    std::uint16_t _first_link = 0;
    common::wake_event _wake;  // nothing feeds the receiver but its sockets: this event only carries stop
    std::unique_ptr<receive_backend> _backend;
    std::optional<common::worker> _worker;  // after the backend it runs
};

// ---- shared by the backends (acquisition/src) ----
struct backend_context {
    const config::acquisition_config& cfg;
    packet_ring& ring;
    common::wake_event& consumer_wake;
    const common::wake_event& wake;  // the receiver thread's own: signalled to stop it
    std::vector<link_socket>& links;
    std::vector<std::unique_ptr<link_counters>>& counters;
    std::uint16_t first_link = 0;  // global index of links[0]
};

std::unique_ptr<receive_backend> make_recvmmsg_backend(backend_context ctx);
// Returns nullptr (with the reason in `why`) when io_uring is unavailable.
std::unique_ptr<receive_backend> make_io_uring_backend(backend_context ctx, std::string& why);

// Opens, configures and binds one UDP socket (non-blocking, SO_RXQ_OVFL,
// optional UDP_GRO, receive buffer sized for `cfg.socket_buffer_datagrams`).
link_socket open_link(const config::endpoint& ep, const config::acquisition_config& cfg);

// What the kernel charges a queued datagram of `datagram_bytes` against the
// receive buffer (its skb truesize): rounded up to a power of two with the
// headers and shared info, plus the sk_buff itself.
std::uint64_t kernel_datagram_cost(std::uint64_t datagram_bytes) noexcept;

}  // namespace daqd::acquisition
