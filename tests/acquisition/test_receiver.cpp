// The receiver, with both backends (recvmmsg, io_uring) running the same
// tests: real UDP datagrams over loopback into a packet ring.
//
// Sending is paced where the test needs every datagram to reach the receiver:
// after each burst the test waits (with a deadline) until the receiver has
// accounted for it, so a small socket buffer cannot drop anything.
#include "acq_test_util.hpp"
#include "daqd/acquisition/daq1.hpp"
#include "daqd/acquisition/packet_ring.hpp"
#include "daqd/acquisition/receiver.hpp"
#include "daqd/common/event.hpp"
#include "daqd/config/config.hpp"

#include <arpa/inet.h>
#include <catch2/catch.hpp>
#include <netinet/in.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace acq = daqd::acquisition;
namespace daq1 = acq::daq1;
namespace config = daqd::config;
using acq::packet_ring;
using acq::receiver;
using acq_test::make_datagram;
using acq_test::unique_ring_name;
using acq_test::wait_until;
using daq1::drop_reason;
using namespace std::chrono_literals;

namespace {

struct recvmmsg_backend {
    static constexpr config::receiver_backend value = config::receiver_backend::recvmmsg;
    static constexpr const char* name = "recvmmsg";
};
struct io_uring_backend {
    static constexpr config::receiver_backend value = config::receiver_backend::io_uring;
    static constexpr const char* name = "io_uring";
};

// A receiver on its own ring, set up as the pipeline does.
struct rx_setup {
    config::acquisition_config cfg;
    std::unique_ptr<packet_ring> ring;
    daqd::common::wake_event wake;
    std::unique_ptr<receiver> rx;

    rx_setup(config::receiver_backend backend, std::vector<config::endpoint> listen, std::uint32_t ring_slots = 1024,
             std::uint32_t socket_buffer_datagrams = 32768, std::uint32_t batch = 64) {
        cfg.listen = std::move(listen);
        cfg.batch = batch;
        cfg.backend = backend;
        cfg.ring_slots = ring_slots;
        cfg.socket_buffer_datagrams = socket_buffer_datagrams;
        ring = std::make_unique<packet_ring>(unique_ring_name(), ring_slots, cfg.max_datagram_bytes + 128);
        rx = std::make_unique<receiver>(cfg, *ring, wake);
    }
    ~rx_setup() {
        rx.reset();  // before the ring it writes into
    }
    const acq::link_counters& counters(std::size_t l = 0) const { return rx->counters(l); }
    // Everything the receiver has taken from link l, whatever became of it.
    std::uint64_t accounted(std::size_t l = 0) const {
        const auto& c = counters(l);
        return c.datagrams.get() + c.invalid_total() + c.ring_dropped.get();
    }
};

template <typename Backend>
std::unique_ptr<rx_setup> setup(std::vector<config::endpoint> listen = {{"127.0.0.1", 0}},
                                std::uint32_t ring_slots = 1024, std::uint32_t socket_buffer_datagrams = 32768,
                                std::uint32_t batch = 64) {
    auto s = std::make_unique<rx_setup>(Backend::value, std::move(listen), ring_slots, socket_buffer_datagrams, batch);
    REQUIRE(std::string(s->rx->backend_name()) == Backend::name);
    return s;
}

// A plain UDP socket sending to one endpoint.
class udp_sender {
public:
    explicit udp_sender(const config::endpoint& to) {
        const bool v6 = to.host.find(':') != std::string::npos;
        _fd = ::socket(v6 ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (_fd < 0) throw std::runtime_error("socket");
        if (v6) {
            auto* a = reinterpret_cast<sockaddr_in6*>(&_to);
            a->sin6_family = AF_INET6;
            a->sin6_port = htons(to.port);
            ::inet_pton(AF_INET6, to.host.c_str(), &a->sin6_addr);
            _len = sizeof(sockaddr_in6);
        } else {
            auto* a = reinterpret_cast<sockaddr_in*>(&_to);
            a->sin_family = AF_INET;
            a->sin_port = htons(to.port);
            ::inet_pton(AF_INET, to.host.c_str(), &a->sin_addr);
            _len = sizeof(sockaddr_in);
        }
    }
    ~udp_sender() { ::close(_fd); }
    udp_sender(const udp_sender&) = delete;
    udp_sender& operator=(const udp_sender&) = delete;

    // Thread-safe (no Catch assertion): true when the whole datagram was sent.
    bool try_send(const std::vector<std::byte>& d) const {
        const ssize_t n = ::sendto(_fd, d.data(), d.size(), 0, reinterpret_cast<const sockaddr*>(&_to), _len);
        return n == static_cast<ssize_t>(d.size());
    }
    void send(const std::vector<std::byte>& d) const {
        INFO("sendto of " << d.size() << " bytes: " << std::strerror(errno));
        REQUIRE(try_send(d));
    }

private:
    int _fd = -1;
    sockaddr_storage _to{};
    socklen_t _len = 0;
};

struct received {
    std::uint16_t link;
    std::uint16_t segment_bytes;
    std::uint64_t receive_ns;
    std::vector<std::byte> data;
};

// The consumer side of the ring.
struct ring_reader {
    packet_ring& ring;
    std::uint64_t skipped = 0;  // published slots with bytes == 0 (skip slots)

    // Takes slots until `n` holding data were read or `timeout` passed.
    std::vector<received> take(std::size_t n, std::chrono::milliseconds timeout) {
        std::vector<received> out;
        wait_until(
            [&] {
                std::uint64_t avail;
                while (out.size() < n && (avail = ring.available()) > 0) {
                    for (std::uint64_t i = 0; i < avail && out.size() < n; ++i) {
                        const std::uint64_t seq = ring.consumer_tail();
                        const auto& s = *ring.slot(seq);
                        if (s.bytes == 0) {
                            ++skipped;
                        } else {
                            const std::byte* p = ring.slot_data(seq) + s.data_offset;
                            received r{s.link, s.segment_bytes, s.receive_ns, std::vector<std::byte>(p, p + s.bytes)};
                            if (s.data_offset + std::uint64_t{s.bytes} > ring.data_bytes()) r.data.clear();
                            out.push_back(std::move(r));
                        }
                        ring.consume(1);
                    }
                }
                return out.size() >= n;
            },
            timeout);
        return out;
    }
    // Takes every slot published now (after the receiver stopped).
    std::vector<received> take_all() {
        const std::uint64_t pending = ring.header().head.load() - ring.consumer_tail();
        std::vector<received> out;
        for (std::uint64_t i = 0; i < pending; ++i) {
            const std::uint64_t seq = ring.consumer_tail();
            const auto& s = *ring.slot(seq);
            if (s.bytes == 0) {
                ++skipped;
            } else {
                const std::byte* p = ring.slot_data(seq) + s.data_offset;
                out.push_back(received{s.link, s.segment_bytes, s.receive_ns, std::vector<std::byte>(p, p + s.bytes)});
            }
            ring.consume(1);
        }
        return out;
    }
};

std::uint32_t seq_of(const std::vector<std::byte>& d) { return daq1::decode_header(d.data()).packet_seq; }

// Sends `datagrams` in bursts; after each burst waits until `accounted()`
// reaches `base` plus what was sent so far.
template <typename Accounted>
void send_paced(const udp_sender& tx, const std::vector<std::vector<std::byte>>& datagrams, Accounted&& accounted,
                std::uint64_t base = 0, std::size_t burst = 32) {
    for (std::size_t i = 0; i < datagrams.size(); i += burst) {
        const std::size_t end = std::min(i + burst, datagrams.size());
        for (std::size_t k = i; k < end; ++k) tx.send(datagrams[k]);
        INFO("waiting for the receiver to account for " << end << " datagrams");
        REQUIRE(wait_until([&] { return accounted() >= base + end; }, 10s));
    }
}

std::uint64_t read_proc_u64(const char* path) {
    std::ifstream f(path);
    std::uint64_t v = 0;
    f >> v;
    return v;
}

}  // namespace

TEMPLATE_TEST_CASE("receiver: binds, reports the real port, uses the chosen backend", "[acquisition][receiver]",
                   recvmmsg_backend, io_uring_backend) {
    auto s = setup<TestType>();
    REQUIRE(s->rx->link_count() == 1);
    const auto& l = s->rx->links()[0];
    CHECK(l.fd >= 0);
    CHECK(l.endpoint.host == "127.0.0.1");
    CHECK(l.endpoint.port != 0);
    CHECK(std::string(s->rx->backend_name()) == TestType::name);
    // Stopping one that never started, twice, is fine.
    s->rx->stop();
    s->rx->stop();
}

TEMPLATE_TEST_CASE("receiver: 5000 valid datagrams reach the ring in order, byte for byte", "[acquisition][receiver]",
                   recvmmsg_backend, io_uring_backend) {
    auto s = setup<TestType>();
    s->rx->start();
    udp_sender tx(s->rx->links()[0].endpoint);
    ring_reader rd{*s->ring};
    constexpr std::uint32_t total = 5000;
    constexpr std::size_t burst = 50;
    std::uint64_t total_bytes = 0;
    std::uint64_t mismatches = 0, bad_link = 0, bad_time = 0, bad_segment = 0;
    std::uint32_t first_bad = ~0u;
    for (std::uint32_t base = 0; base < total; base += burst) {
        std::vector<std::vector<std::byte>> sent;
        const std::uint64_t t0 = daqd::common::monotonic_ns();
        for (std::uint32_t i = 0; i < burst; ++i) {
            const std::uint32_t seq = base + i;
            // sizes from the 42-byte minimum to the 9000-byte maximum
            const std::size_t size = seq % 500 == 499 ? daq1::max_datagram_bytes : 42 + 2 * ((seq * 97u) % 715u);
            sent.push_back(make_datagram(seq, size));
            tx.send(sent.back());
            total_bytes += size;
        }
        const auto got = rd.take(sent.size(), 10s);
        const std::uint64_t t1 = daqd::common::monotonic_ns();
        INFO("burst starting at " << base);
        REQUIRE(got.size() == sent.size());
        for (std::size_t i = 0; i < sent.size(); ++i) {
            if (got[i].data != sent[i]) {
                ++mismatches;
                first_bad = std::min(first_bad, base + static_cast<std::uint32_t>(i));
            }
            bad_link += got[i].link != 0;
            bad_segment += got[i].segment_bytes != 0;
            bad_time += got[i].receive_ns < t0 || got[i].receive_ns > t1;
        }
    }
    s->rx->stop();
    INFO("first datagram that differs: " << first_bad);
    CHECK(mismatches == 0);
    CHECK(bad_link == 0);
    CHECK(bad_segment == 0);
    CHECK(bad_time == 0);
    const auto& c = s->counters();
    CHECK(c.datagrams.get() == total);
    CHECK(c.bytes.get() == total_bytes);
    CHECK(c.invalid_total() == 0);
    CHECK(c.ring_dropped.get() == 0);
    CHECK(c.truncated.get() == 0);
    CHECK(c.kernel_drops.get() == 0);
    CHECK(rd.skipped == 0);
    CHECK(rd.take_all().empty());
    CHECK(s->ring->header().dropped.load() == 0);
}

TEMPLATE_TEST_CASE("receiver: malformed datagrams are counted by reason and never published",
                   "[acquisition][receiver]", recvmmsg_backend, io_uring_backend) {
    auto s = setup<TestType>();
    s->rx->start();
    udp_sender tx(s->rx->links()[0].endpoint);

    struct bad {
        std::vector<std::byte> d;
        drop_reason why;
    };
    std::vector<bad> bads;
    auto with = [](std::uint32_t seq, auto&& change, std::size_t size = 200) {
        auto d = make_datagram(seq, size);
        auto h = daq1::decode_header(d.data());
        change(h, d);
        daq1::encode_header(h, d.data());
        return d;
    };
    auto cut = [](std::vector<std::byte> d, std::size_t n) {
        d.resize(n);
        return d;
    };
    bads.push_back({cut(make_datagram(1000, 200), 41), drop_reason::too_short});
    bads.push_back({cut(make_datagram(1001, 200), 40), drop_reason::too_short});
    bads.push_back({cut(make_datagram(1014, 200), 1), drop_reason::too_short});
    bads.push_back({std::vector<std::byte>(), drop_reason::too_short});  // an empty datagram
    bads.push_back({with(1002, [](daq1::header& h, auto&) { h.magic = 0x32514144; }), drop_reason::bad_magic});
    bads.push_back({with(1003, [](daq1::header& h, auto&) { h.version = 2; }), drop_reason::bad_version});
    bads.push_back({with(1004, [](daq1::header& h, auto&) { h.flags = 0x04; }), drop_reason::unknown_flags});
    bads.push_back({with(1005, [](daq1::header& h, auto&) { h.flags = 0x80; }), drop_reason::unknown_flags});
    bads.push_back({with(1006, [](daq1::header& h, auto&) { h.packet_count = 0; }), drop_reason::zero_packet_count});
    bads.push_back({with(1007, [](daq1::header& h, auto&) { h.packet_index = 1; }),  // == count
                    drop_reason::packet_index_out_of_range});
    bads.push_back({with(1008, [](daq1::header& h, auto&) { h.frame_bytes = 0; }), drop_reason::frame_bytes_zero});
    bads.push_back({with(1009, [](daq1::header& h, auto&) { h.frame_bytes = 161; }), drop_reason::frame_bytes_odd});
    bads.push_back({with(1010, [](daq1::header& h, auto&) { h.frame_bytes = daq1::max_frame_bytes + 2; }),
                    drop_reason::frame_bytes_too_large});
    bads.push_back({with(
                        1011, [](daq1::header& h, auto&) { h.frame_bytes = 400; }, 201),
                    drop_reason::payload_odd});
    bads.push_back({with(
                        1012,
                        [](daq1::header& h, auto&) {
                            h.frame_bytes = 400;
                            h.payload_offset = 3;
                        }),
                    drop_reason::payload_offset_odd});
    bads.push_back({with(1013, [](daq1::header& h, auto&) { h.payload_offset = 2; }),  // 2 + 160 > 160
                    drop_reason::payload_beyond_frame});

    // Valid datagrams in between (every other one), so skipping is exercised.
    std::vector<std::vector<std::byte>> valid;
    std::vector<std::vector<std::byte>> all;
    std::uint64_t all_bytes = 0;
    for (std::size_t i = 0; i < bads.size(); ++i) {
        valid.push_back(make_datagram(static_cast<std::uint32_t>(i), 100 + 2 * i));
        all.push_back(valid.back());
        all.push_back(bads[i].d);
    }
    for (const auto& d : all) all_bytes += d.size();
    send_paced(tx, all, [&] { return s->accounted(); }, 0, 8);
    s->rx->stop();  // publishes everything it took

    const auto& c = s->counters();
    CHECK(c.datagrams.get() == valid.size());
    CHECK(c.invalid_total() == bads.size());
    CHECK(c.bytes.get() == all_bytes);
    CHECK(c.truncated.get() == 0);
    CHECK(c.ring_dropped.get() == 0);
    std::array<std::uint64_t, daq1::drop_reason_count> expect{};
    for (const auto& b : bads) ++expect[static_cast<std::size_t>(b.why)];
    for (std::size_t r = 0; r < daq1::drop_reason_count; ++r) {
        INFO("reason " << daq1::name(static_cast<drop_reason>(r)));
        CHECK(c.invalid[r].get() == expect[r]);
    }
    // The ring holds exactly the valid datagrams, in order (a backend may
    // publish skip slots with bytes 0 in place of invalid ones).
    ring_reader rd{*s->ring};
    const auto got = rd.take_all();
    REQUIRE(got.size() == valid.size());
    for (std::size_t i = 0; i < valid.size(); ++i) {
        INFO("valid datagram " << i);
        CHECK(got[i].data == valid[i]);
    }
    CHECK(rd.skipped <= bads.size());
}

TEMPLATE_TEST_CASE("receiver: a datagram larger than a ring slot is counted truncated, not published",
                   "[acquisition][receiver]", recvmmsg_backend, io_uring_backend) {
    auto s = setup<TestType>();
    s->rx->start();
    udp_sender tx(s->rx->links()[0].endpoint);
    // Valid as DAQ1 (a 16 MiB frame), but larger than the slot (9000 + 128).
    auto big = make_datagram(7, 9200);
    auto h = daq1::decode_header(big.data());
    h.frame_bytes = daq1::max_frame_bytes;
    daq1::encode_header(h, big.data());
    const auto after = make_datagram(8, 1000);
    tx.send(big);
    tx.send(after);
    REQUIRE(wait_until([&] { return s->accounted() >= 2; }, 10s));
    s->rx->stop();
    const auto& c = s->counters();
    CHECK(c.truncated.get() == 1);
    CHECK(c.invalid[static_cast<std::size_t>(drop_reason::payload_beyond_frame)].get() == 1);
    CHECK(c.invalid_total() == 1);
    CHECK(c.datagrams.get() == 1);
    ring_reader rd{*s->ring};
    const auto got = rd.take_all();
    REQUIRE(got.size() == 1);
    CHECK(got[0].data == after);
}

TEMPLATE_TEST_CASE("receiver: two links, IPv4 and IPv6, served by one receiver", "[acquisition][receiver]",
                   recvmmsg_backend, io_uring_backend) {
    auto s = setup<TestType>({{"127.0.0.1", 0}, {"::1", 0}});
    REQUIRE(s->rx->link_count() == 2);
    CHECK(s->rx->links()[1].endpoint.host == "::1");
    CHECK(s->rx->links()[1].endpoint.port != 0);
    s->rx->start();
    udp_sender tx4(s->rx->links()[0].endpoint);
    udp_sender tx6(s->rx->links()[1].endpoint);
    // Unit 100 + link, so that the content says where it was sent.
    std::vector<std::vector<std::byte>> sent[2];
    constexpr std::uint32_t per_link = 1000;
    ring_reader rd{*s->ring};
    std::vector<received> got;
    for (std::uint32_t i = 0; i < per_link; i += 20) {
        for (std::uint32_t k = i; k < i + 20; ++k) {
            sent[0].push_back(make_datagram(k, 300 + 2 * (k % 50), 100));
            sent[1].push_back(make_datagram(k, 300 + 2 * (k % 50), 101));
            tx4.send(sent[0].back());
            tx6.send(sent[1].back());
        }
        auto part = rd.take(40, 10s);
        REQUIRE(part.size() == 40);
        for (auto& r : part) got.push_back(std::move(r));
    }
    s->rx->stop();
    CHECK(s->counters(0).datagrams.get() == per_link);
    CHECK(s->counters(1).datagrams.get() == per_link);
    std::vector<std::vector<std::byte>> by_link[2];
    std::uint64_t wrong_link = 0;
    for (auto& r : got) {
        REQUIRE(r.link < 2);
        if (daq1::decode_header(r.data.data()).unit_id != 100 + r.link) ++wrong_link;
        by_link[r.link].push_back(std::move(r.data));
    }
    CHECK(wrong_link == 0);
    // Per link, the order of sending is kept.
    CHECK(by_link[0] == sent[0]);
    CHECK(by_link[1] == sent[1]);
    CHECK(rd.take_all().empty());
}

TEMPLATE_TEST_CASE("receiver: a full ring drops and counts, never blocks, and recovers", "[acquisition][receiver]",
                   recvmmsg_backend, io_uring_backend) {
    constexpr std::uint32_t slots = 256;
    auto s = setup<TestType>({{"127.0.0.1", 0}}, slots);
    s->rx->start();
    udp_sender tx(s->rx->links()[0].endpoint);
    const auto& c = s->counters();
    std::vector<std::vector<std::byte>> first;
    constexpr std::uint32_t sent_first = slots + 300;
    for (std::uint32_t i = 0; i < sent_first; ++i) first.push_back(make_datagram(i, 200 + 2 * (i % 100)));
    // Nobody consumes: the receiver keeps taking datagrams, into the ring
    // while it has room, then into the void, counted.
    send_paced(tx, first, [&] { return c.datagrams.get() + c.ring_dropped.get(); });
    CHECK(c.datagrams.get() == slots);
    CHECK(c.ring_dropped.get() == sent_first - slots);
    CHECK(s->ring->header().dropped.load() == sent_first - slots);
    CHECK(c.invalid_total() == 0);
    CHECK(c.kernel_drops.get() == 0);
    // The ring holds the first slot_count datagrams, in order.
    REQUIRE(wait_until([&] { return s->ring->header().head.load() == slots; }, 10s));
    ring_reader rd{*s->ring};
    auto got = rd.take(slots, 10s);
    REQUIRE(got.size() == slots);
    for (std::uint32_t i = 0; i < slots; ++i) {
        INFO("slot " << i);
        REQUIRE(got[i].data == first[i]);
    }
    // Everything consumed: new datagrams flow again, in order, nothing dropped.
    std::vector<std::vector<std::byte>> second;
    for (std::uint32_t i = 0; i < 600; ++i) second.push_back(make_datagram(sent_first + i, 300));
    std::vector<received> got2;
    for (std::size_t i = 0; i < second.size(); i += 50) {
        for (std::size_t k = i; k < i + 50; ++k) tx.send(second[k]);
        auto part = rd.take(50, 10s);
        REQUIRE(part.size() == 50);
        for (auto& r : part) got2.push_back(std::move(r));
    }
    for (std::size_t i = 0; i < second.size(); ++i) {
        INFO("datagram " << i << " after the recovery");
        REQUIRE(got2[i].data == second[i]);
    }
    CHECK(c.ring_dropped.get() == sent_first - slots);
    CHECK(c.datagrams.get() == slots + second.size());
    // The receiver thread is not stuck: stop() returns promptly.
    const auto t0 = std::chrono::steady_clock::now();
    s->rx->stop();
    CHECK(std::chrono::steady_clock::now() - t0 < 2s);
    CHECK(rd.take_all().empty());
}

TEMPLATE_TEST_CASE("receiver: a full ring under continuous traffic: what is published is intact and in order",
                   "[acquisition][receiver][stress]", recvmmsg_backend, io_uring_backend) {
    // A consumer that frees one slot at a time while the ring is full and
    // datagrams keep coming: the receiver switches between dropping and
    // receiving into the ring many times. Every datagram it counts as put
    // into the ring must reach the consumer exactly once, in sending order.
    // batch 1 keeps the receiver's loop short, so that the consumer's moves
    // land on every part of it.
    constexpr std::uint32_t slots = 64;
    auto s = setup<TestType>({{"127.0.0.1", 0}}, slots, 32768, 1);
    // The ring-full edge logger would log twice per round.
    const auto level = spdlog::get_level();
    spdlog::set_level(spdlog::level::err);
    struct restore {
        spdlog::level::level_enum l;
        ~restore() { spdlog::set_level(l); }
    } restore_level{level};
    s->rx->start();
    udp_sender tx(s->rx->links()[0].endpoint);
    std::atomic<bool> stop_sending{false};
    std::atomic<std::uint32_t> sent{0};
    std::atomic<std::uint32_t> send_failures{0};
    std::thread sender([&] {
        std::uint32_t i = 0;
        for (; !stop_sending.load(std::memory_order_relaxed); ++i)
            if (!tx.try_send(make_datagram(i, 64 + 2 * (i % 16)))) send_failures.fetch_add(1);
        sent.store(i);
    });
    auto& ring = *s->ring;
    std::uint64_t delivered = 0, corrupt = 0, out_of_order = 0, full_events = 0;
    std::int64_t last_seq = -1;
    std::uint32_t first_problem_seq = 0;
    auto consume_one = [&] {
        const std::uint64_t seq = ring.consumer_tail();
        const auto& sl = *ring.slot(seq);
        if (sl.bytes != 0) {
            const std::byte* p = ring.slot_data(seq) + sl.data_offset;
            const std::vector<std::byte> d(p, p + sl.bytes);
            const std::uint32_t k = d.size() >= daq1::header_bytes ? seq_of(d) : 0;
            if (d.size() < daq1::header_bytes || d != make_datagram(k, 64 + 2 * (k % 16))) {
                if (corrupt++ == 0 && out_of_order == 0) first_problem_seq = k;
            } else if (static_cast<std::int64_t>(k) <= last_seq) {
                if (out_of_order++ == 0 && corrupt == 0) first_problem_seq = k;
            } else {
                last_seq = k;
            }
            ++delivered;
        }
        ring.consume(1);
    };
    // Each time the ring is full, free one slot after a varying pause (so the
    // consumer's moves fall at every point of the receiver's loop), many times.
    // DAQD_STRESS_ROUNDS=<n> runs it longer.
    const char* rounds_env = std::getenv("DAQD_STRESS_ROUNDS");
    const std::uint64_t rounds = rounds_env ? std::strtoull(rounds_env, nullptr, 10) : 5000;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(3 * rounds + 30000);
    std::uint64_t lcg = 12345;
    while (full_events < rounds && std::chrono::steady_clock::now() < deadline) {
        if (ring.header().head.load() - ring.consumer_tail() < slots) {
            std::this_thread::yield();
            continue;
        }
        ++full_events;
        lcg = lcg * 6364136223846793005ull + 1442695040888963407ull;
        const std::uint64_t pause_ns = (lcg >> 33) % 2000;
        const std::uint64_t until = daqd::common::monotonic_ns() + pause_ns;
        while (daqd::common::monotonic_ns() < until) {
        }
        consume_one();
    }
    stop_sending.store(true);
    const std::uint32_t total = [&] {
        sender.join();
        return sent.load();
    }();
    s->rx->stop();
    while (ring.header().head.load() > ring.consumer_tail()) consume_one();
    const auto& c = s->counters();
    INFO("sent " << total << ", delivered " << delivered << ", ring_dropped " << c.ring_dropped.get()
                  << ", kernel_drops " << c.kernel_drops.get() << ", ring full " << full_events
                  << " times; first problem at datagram " << first_problem_seq);
    CHECK(send_failures.load() == 0);
    CHECK(corrupt == 0);
    CHECK(out_of_order == 0);
    CHECK(delivered == c.datagrams.get());
    CHECK(c.datagrams.get() + c.ring_dropped.get() <= total);
    CHECK(c.ring_dropped.get() > 0);  // the ring really was full
    // On a loaded machine the deadline may cut the rounds short; enough of
    // them must still have happened for the test to mean something.
    CHECK(full_events >= std::min<std::uint64_t>(rounds, 1000));
    CHECK(c.invalid_total() == 0);
}

TEMPLATE_TEST_CASE("receiver: stop() drains what the kernel already holds", "[acquisition][receiver]",
                   recvmmsg_backend, io_uring_backend) {
    auto s = setup<TestType>();
    const auto& link = s->rx->links()[0];
    // As many as the socket buffer surely holds without help, and the ring too.
    const std::uint64_t fit = link.rcvbuf_bytes / acq::kernel_datagram_cost(1472) / 2;
    const std::uint32_t n = static_cast<std::uint32_t>(std::min<std::uint64_t>({500, fit, s->ring->slot_count()}));
    REQUIRE(n >= 50);
    s->rx->start();
    udp_sender tx(link.endpoint);
    std::vector<std::vector<std::byte>> sent;
    for (std::uint32_t i = 0; i < n; ++i) sent.push_back(make_datagram(i, 1472));
    for (const auto& d : sent) tx.send(d);
    s->rx->stop();
    const auto& c = s->counters();
    CHECK(c.datagrams.get() == n);
    CHECK(c.kernel_drops.get() == 0);
    CHECK(c.ring_dropped.get() == 0);
    ring_reader rd{*s->ring};
    const auto got = rd.take_all();
    REQUIRE(got.size() == n);
    for (std::uint32_t i = 0; i < n; ++i) {
        INFO("datagram " << i);
        REQUIRE(got[i].data == sent[i]);
    }
}

TEMPLATE_TEST_CASE("receiver: the socket receive buffer, requested vs granted", "[acquisition][receiver]",
                   recvmmsg_backend, io_uring_backend) {
    const std::uint64_t rmem_max = read_proc_u64("/proc/sys/net/core/rmem_max");
    SECTION("a small request is granted in full") {
        auto s = setup<TestType>({{"127.0.0.1", 0}}, 1024, 64);
        const std::uint64_t wanted = 64 * acq::kernel_datagram_cost(1472);
        const std::uint64_t ask = wanted / 2;  // the kernel doubles what it is asked
        const std::uint64_t granted = s->rx->links()[0].rcvbuf_bytes;
        CHECK(granted > 0);
        INFO("rmem_max " << rmem_max << ", wanted " << wanted << ", granted " << granted);
        // With CAP_NET_ADMIN (SO_RCVBUFFORCE) exactly what was asked, without it capped at rmem_max.
        CHECK((granted == 2 * ask || granted == 2 * std::min(ask, rmem_max)));
        if (rmem_max >= ask) CHECK(granted == wanted);
    }
    SECTION("a large request gets at least what the system allows") {
        auto s = setup<TestType>({{"127.0.0.1", 0}}, 1024, 32768);
        const std::uint64_t wanted = 32768 * acq::kernel_datagram_cost(1472);
        const std::uint64_t granted = s->rx->links()[0].rcvbuf_bytes;
        INFO("rmem_max " << rmem_max << ", wanted " << wanted << ", granted " << granted);
        CHECK(granted > 0);
        CHECK(granted >= std::min(wanted, 2 * rmem_max));
        CHECK(granted <= wanted + 4096);
    }
}

TEST_CASE("receiver: the kernel's cost of a datagram", "[acquisition][receiver]") {
    CHECK(acq::kernel_datagram_cost(1472) == 2304);
    CHECK(acq::kernel_datagram_cost(8972) == 16640);
    CHECK(acq::kernel_datagram_cost(42) == 512 + 256);
    // monotonic in the datagram size
    std::uint64_t prev = 0;
    for (std::uint64_t b = 0; b <= 65535; b += 101) {
        const auto cost = acq::kernel_datagram_cost(b);
        CHECK(cost >= prev);
        CHECK(cost > b);
        prev = cost;
    }
}

TEMPLATE_TEST_CASE("receiver: a failing bind throws naming the address", "[acquisition][receiver]", recvmmsg_backend,
                   io_uring_backend) {
    auto s = setup<TestType>();
    const auto taken = s->rx->links()[0].endpoint;
    config::acquisition_config cfg;
    cfg.backend = TestType::value;
    cfg.ring_slots = 64;
    cfg.listen = {taken};
    packet_ring ring(unique_ring_name(), 64, cfg.max_datagram_bytes + 128);
    daqd::common::wake_event wake;
    CHECK_THROWS_WITH(receiver(cfg, ring, wake), Catch::Contains(taken.to_string()));
    cfg.listen = {{"not-an-address", 0}};
    CHECK_THROWS_AS(receiver(cfg, ring, wake), std::runtime_error);
}

TEMPLATE_TEST_CASE("receiver: a consumer reading each slot the moment it is published finds it whole",
                   "[acquisition][receiver]", recvmmsg_backend, io_uring_backend) {
    // The publish order (slot header and data first, then the head), in the
    // release build: a check runs on the receiver thread at the very moment
    // of each publish (packet_ring's publish observer) and reads the slots
    // just published; the consumer then poisons every header before giving
    // the slot back, so a head published before its slot is written shows
    // the poison, deterministically, whatever the timing.
    auto s = setup<TestType>({{"127.0.0.1", 0}}, 1024);
    auto size_of = [](std::uint64_t seq) -> std::size_t { return 42 + 2 * ((seq * 131u) % 600u); };
    struct check {
        std::size_t (*size_of)(std::uint64_t);
        std::uint64_t next = 0;  // datagram number of the next valid slot
        std::atomic<std::uint64_t> checked{0};  // slots checked: the consumer takes only those
        std::uint64_t bad = 0;
        std::string first_bad;
    } c{+[](std::uint64_t seq) -> std::size_t { return 42 + 2 * ((seq * 131u) % 600u); }};
    s->ring->set_publish_observer(
        [](void* ctx, const packet_ring& r, std::uint64_t from, std::uint64_t to) {
            auto& k = *static_cast<check*>(ctx);
            for (std::uint64_t q = from; q < to; ++q) {
                const auto& h = *r.slot(q);
                const std::uint32_t bytes = h.bytes;
                const std::uint32_t offset = h.data_offset;
                bool ok = bytes == k.size_of(k.next) && h.link == 0 && offset + bytes <= r.data_bytes();
                if (ok) {
                    const auto want = acq_test::make_datagram(static_cast<std::uint32_t>(k.next), bytes);
                    ok = std::memcmp(r.slot_data(q) + offset, want.data(), bytes) == 0;
                }
                if (!ok && k.bad++ == 0)
                    k.first_bad = "datagram " + std::to_string(k.next) + ": slot says " + std::to_string(bytes) +
                                  " bytes at offset " + std::to_string(offset) + ", expected " +
                                  std::to_string(k.size_of(k.next));
                ++k.next;
            }
            k.checked.store(to, std::memory_order_release);
        },
        &c);
    s->rx->start();
    udp_sender tx(s->rx->links()[0].endpoint);
    constexpr std::uint32_t total = 64 * 320;  // bursts of 64
    std::atomic<bool> sending{true};
    std::atomic<std::uint64_t> seen{0};
    std::thread consumer([&] {
        auto& r = *s->ring;
        std::uint64_t n_seen = 0;
        const auto deadline = std::chrono::steady_clock::now() + 60s;
        while ((sending.load(std::memory_order_acquire) || r.available() > 0) &&
               std::chrono::steady_clock::now() < deadline) {
            const std::uint64_t tail = r.consumer_tail();
            const std::uint64_t n = std::min(r.available(), c.checked.load(std::memory_order_acquire) - tail);
            if (n == 0) continue;
            for (std::uint64_t i = 0; i < n; ++i) {
                auto& h = *r.slot(tail + i);
                h.bytes = 0xffffffffu;  // poison before the slot goes back to the producer
                h.data_offset = 0xffff;
                h.link = 0xffff;
                std::memset(r.slot_data(tail + i), 0xee, 64);
            }
            n_seen += n;
            r.consume(n);
            seen.store(n_seen, std::memory_order_release);
        }
    });
    for (std::uint32_t base = 0; base < total; base += 64) {
        for (std::uint32_t i = base; i < base + 64; ++i) tx.send(acq_test::make_datagram(i, size_of(i)));
        // Paced: the consumer has given this burst back before the next is
        // sent, so the ring never fills (a drop would shift every datagram).
        if (!wait_until([&] { return seen.load(std::memory_order_acquire) >= base + 64; }, 10s)) break;
    }
    sending.store(false, std::memory_order_release);
    consumer.join();
    s->rx->stop();
    INFO(c.first_bad);
    CHECK(seen.load() == total);
    CHECK(c.checked.load() == total);
    CHECK(c.bad == 0);
    CHECK(s->counters().ring_dropped.get() == 0);
}
