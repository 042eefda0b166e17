// The shared-memory packet ring: layout, producer/consumer order across
// wrap-around, full ring, two threads, a read-only watcher in this process and
// in a second process, naming and cleanup.
#include "acq_test_util.hpp"
#include "daqd/acquisition/daq1.hpp"
#include "daqd/acquisition/packet_ring.hpp"

#include <catch2/catch.hpp>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#ifndef RING_WATCH_CHILD
#error "RING_WATCH_CHILD must name the ring_watch_child executable"
#endif

using daqd::acquisition::packet_ring;
using daqd::acquisition::slot_header;
using acq_test::unique_ring_name;
namespace daq1 = daqd::acquisition::daq1;

namespace {

bool shm_exists(const std::string& name) {
    const int fd = ::shm_open(("/" + name).c_str(), O_RDONLY, 0);
    if (fd < 0) return false;
    ::close(fd);
    return true;
}

// Producer side: writes `value` as the slot's 8 data bytes.
void put_u64(packet_ring& r, std::uint64_t seq, std::uint64_t value) {
    auto& s = *r.slot(seq);
    s.bytes = sizeof value;
    s.data_offset = 0;
    s.segment_bytes = 0;
    s.link = static_cast<std::uint16_t>(seq & 0xffff);
    std::memcpy(r.slot_data(seq), &value, sizeof value);
}

std::uint64_t get_u64(const packet_ring& r, std::uint64_t seq) {
    std::uint64_t v;
    std::memcpy(&v, r.slot_data(seq), sizeof v);
    return v;
}

// A DAQ1 datagram into slot `seq` (not published).
void put_datagram(packet_ring& r, std::uint64_t seq) {
    const auto d = acq_test::make_datagram(static_cast<std::uint32_t>(seq), 200);
    auto& s = *r.slot(seq);
    s.bytes = static_cast<std::uint32_t>(d.size());
    s.data_offset = 0;
    s.segment_bytes = 0;
    s.link = 0;
    std::memcpy(r.slot_data(seq), d.data(), d.size());
}

struct child_result {
    int exit_code = -1;  // -1: did not exit normally
    std::string out;
};

// fork + exec of ring_watch_child; waits (deadline) for it and collects stdout.
class watch_child {
public:
    explicit watch_child(const std::vector<std::string>& args) {
        int fds[2];
        REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
        std::vector<std::string> argv_s{RING_WATCH_CHILD};
        argv_s.insert(argv_s.end(), args.begin(), args.end());
        std::vector<char*> argv;
        for (auto& a : argv_s) argv.push_back(a.data());
        argv.push_back(nullptr);
        _pid = ::fork();
        REQUIRE(_pid >= 0);
        if (_pid == 0) {
            ::dup2(fds[1], STDOUT_FILENO);  // dup2 clears O_CLOEXEC on the copy
            ::execv(argv[0], argv.data());
            _exit(127);
        }
        ::close(fds[1]);
        _out_fd = fds[0];
    }
    ~watch_child() {
        if (_pid > 0) {
            ::kill(_pid, SIGKILL);
            ::waitpid(_pid, nullptr, 0);
        }
        if (_out_fd >= 0) ::close(_out_fd);
    }
    child_result wait(std::chrono::seconds timeout) {
        child_result r;
        int status = 0;
        const bool exited = acq_test::wait_until(
            [&] {
                const pid_t p = ::waitpid(_pid, &status, WNOHANG);
                return p == _pid;
            },
            timeout);
        if (!exited) return r;  // the destructor kills it
        _pid = -1;
        if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
        char buf[256];
        ssize_t n;
        while ((n = ::read(_out_fd, buf, sizeof buf)) > 0) r.out.append(buf, static_cast<std::size_t>(n));
        return r;
    }

private:
    pid_t _pid = -1;
    int _out_fd = -1;
};

}  // namespace

TEST_CASE("packet_ring: layout of the shared memory", "[acquisition][ring]") {
    const auto name = unique_ring_name();
    packet_ring r(name, 64, 1000);
    CHECK(r.name() == name);
    CHECK(r.slot_count() == 64);
    CHECK(r.data_bytes() == 1000);
    const auto& h = r.header();
    CHECK(h.magic == daqd::acquisition::ring_magic);
    CHECK(h.version == daqd::acquisition::ring_layout_version);
    CHECK(h.header_bytes == 4096);
    CHECK(h.slot_count == 64);
    CHECK(h.data_bytes == 1000);
    CHECK(h.slot_stride == 1088);  // 32 + 1000 rounded up to 64
    CHECK(h.producer_pid == static_cast<std::uint64_t>(::getpid()));
    CHECK(h.head.load() == 0);
    CHECK(h.tail.load() == 0);
    CHECK(h.dropped.load() == 0);
    const auto* base = reinterpret_cast<const std::byte*>(&h);
    CHECK(reinterpret_cast<const std::byte*>(r.slot(0)) - base == 4096);
    CHECK(reinterpret_cast<const std::byte*>(r.slot(1)) - reinterpret_cast<const std::byte*>(r.slot(0)) == 1088);
    CHECK(r.slot_data(0) == reinterpret_cast<std::byte*>(r.slot(0)) + sizeof(slot_header));
    CHECK(r.slot(64) == r.slot(0));  // slot index wraps
    CHECK(r.slot(65) == r.slot(1));
    CHECK(r.free_slots() == 64);
    CHECK(r.available() == 0);
    // The whole mapping is writable: the last byte of the last slot.
    r.slot_data(63)[999] = std::byte{0x42};
    struct stat st {};
    const int fd = ::shm_open(("/" + name).c_str(), O_RDONLY, 0);
    REQUIRE(fd >= 0);
    REQUIRE(::fstat(fd, &st) == 0);
    ::close(fd);
    CHECK(static_cast<std::uint64_t>(st.st_size) == 4096 + 64 * 1088);
}

TEST_CASE("packet_ring: slot_count must be a power of two", "[acquisition][ring]") {
    CHECK_THROWS_AS(packet_ring(unique_ring_name(), 0, 64), std::invalid_argument);
    CHECK_THROWS_AS(packet_ring(unique_ring_name(), 3, 64), std::invalid_argument);
    CHECK_THROWS_AS(packet_ring(unique_ring_name(), 1000, 64), std::invalid_argument);
    CHECK_NOTHROW(packet_ring(unique_ring_name(), 1, 64));
}

TEST_CASE("packet_ring: producer and consumer wrap around in order on one thread", "[acquisition][ring]") {
    packet_ring r(unique_ring_name(), 64, 64);
    constexpr std::uint64_t total = 1000;
    std::uint64_t pushed = 0;
    std::uint64_t popped = 0;
    unsigned round = 0;
    while (popped < total) {
        ++round;
        // Push a varying batch, as much as is free.
        const std::uint64_t want = std::min<std::uint64_t>((round * 37u) % 64u + 1u, total - pushed);
        // free_slots() may be conservative (a cached tail) but never
        // reports room that is not there, nor none when there is some.
        const std::uint64_t free = r.free_slots();
        REQUIRE(free <= 64 - (pushed - popped));
        REQUIRE((free > 0) == (pushed - popped < 64));
        const std::uint64_t n = std::min(want, free);
        REQUIRE(r.producer_head() == pushed);
        for (std::uint64_t i = 0; i < n; ++i) put_u64(r, pushed + i, pushed + i);
        if (n) r.publish(pushed + n);
        pushed += n;
        REQUIRE(r.header().head.load() == pushed);
        // Consume a different varying batch.
        const std::uint64_t avail = r.available();  // likewise conservative
        REQUIRE(avail <= pushed - popped);
        REQUIRE((avail > 0) == (pushed > popped));
        const std::uint64_t m = std::min<std::uint64_t>(avail, (round * 23u) % 50u + 1u);
        REQUIRE(r.consumer_tail() == popped);
        for (std::uint64_t i = 0; i < m; ++i) {
            const auto seq = popped + i;
            INFO("seq " << seq);
            REQUIRE(r.slot(seq)->bytes == 8);
            REQUIRE(r.slot(seq)->link == (seq & 0xffff));
            REQUIRE(get_u64(r, seq) == seq);
        }
        r.consume(m);
        popped += m;
        REQUIRE(r.header().tail.load() == popped);
    }
    CHECK(pushed == total);
    CHECK(popped == total);
    CHECK(total / 64 >= 10);  // the ring wrapped many times
    CHECK(r.available() == 0);
    CHECK(r.consumer_tail_fresh() == total);
    CHECK(r.free_slots() == 64);
}

TEST_CASE("packet_ring: a full ring has no free slot until the consumer moves", "[acquisition][ring]") {
    packet_ring r(unique_ring_name(), 64, 64);
    for (std::uint64_t i = 0; i < 64; ++i) {
        REQUIRE(r.free_slots() == 64 - i);
        put_u64(r, i, i);
        r.publish(i + 1);
    }
    CHECK(r.free_slots() == 0);
    CHECK(r.fill_ratio() == 1.0);
    CHECK(r.available() == 64);
    CHECK(r.free_slots() == 0);  // asking again changes nothing
    r.consume(1);
    CHECK(r.free_slots() == 1);
    CHECK(r.fill_ratio() == Approx(63.0 / 64.0));
    put_u64(r, 64, 64);
    r.publish(65);
    CHECK(r.free_slots() == 0);
    // The consumer still sees slots 1..64 in order (slot 64 reuses slot 0's memory).
    std::uint64_t seen = 0;
    while (seen < 64) {
        const std::uint64_t n = r.available();
        REQUIRE(n > 0);
        for (std::uint64_t i = 0; i < n; ++i) CHECK(get_u64(r, 1 + seen + i) == 1 + seen + i);
        r.consume(n);
        seen += n;
    }
    CHECK(seen == 64);
    CHECK(r.available() == 0);
    CHECK(r.consumer_tail_fresh() == 65);
    CHECK(r.free_slots() == 64);
    CHECK(r.fill_ratio() == 0.0);
}

TEST_CASE("packet_ring: producer and consumer threads, 200000 slots in order", "[acquisition][ring][threads]") {
    packet_ring r(unique_ring_name(), 64, 64);
    constexpr std::uint64_t total = 200000;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    std::atomic<bool> timed_out{false};
    std::thread producer([&] {
        std::uint64_t next = 0;
        while (next < total) {
            const std::uint64_t free = r.free_slots();
            if (free == 0) {
                if (std::chrono::steady_clock::now() > deadline) {
                    timed_out = true;
                    return;
                }
                std::this_thread::yield();
                continue;
            }
            const std::uint64_t n = std::min<std::uint64_t>({free, total - next, 1 + next % 7});
            for (std::uint64_t i = 0; i < n; ++i) put_u64(r, next + i, next + i);
            next += n;
            r.publish(next);
        }
    });
    std::uint64_t expect = 0;
    std::uint64_t errors = 0;
    std::uint64_t first_error_seq = 0, first_error_value = 0;
    while (expect < total && !timed_out) {
        const std::uint64_t n = r.available();
        if (n == 0) {
            if (std::chrono::steady_clock::now() > deadline) {
                timed_out = true;
                break;
            }
            std::this_thread::yield();
            continue;
        }
        for (std::uint64_t i = 0; i < n; ++i) {
            const std::uint64_t v = get_u64(r, expect + i);
            if (v != expect + i || r.slot(expect + i)->bytes != 8) {
                if (errors++ == 0) {
                    first_error_seq = expect + i;
                    first_error_value = v;
                }
            }
        }
        expect += n;
        r.consume(n);
    }
    producer.join();
    CHECK_FALSE(timed_out);
    INFO("first wrong slot " << first_error_seq << " held " << first_error_value);
    CHECK(errors == 0);
    CHECK(expect == total);
    CHECK(r.header().head.load() == total);
    CHECK(r.header().tail.load() == total);
}

TEST_CASE("packet_ring: a read-only attach in the same process sees the producer", "[acquisition][ring]") {
    const auto name = unique_ring_name();
    packet_ring r(name, 64, 256);
    for (std::uint64_t i = 0; i < 5; ++i) put_datagram(r, i);
    r.publish(5);
    auto w = packet_ring::attach_read_only(name);
    CHECK(w.name() == name);
    CHECK(w.slot_count() == 64);
    CHECK(w.data_bytes() == 256);
    CHECK(w.header().head.load() == 5);
    CHECK(w.header().tail.load() == 0);
    for (std::uint64_t i = 0; i < 5; ++i) {
        REQUIRE(w.slot(i)->bytes == 200);
        CHECK(std::memcmp(w.slot_data(i), r.slot_data(i), 200) == 0);
        std::uint32_t magic;
        std::memcpy(&magic, w.slot_data(i), 4);
        CHECK(magic == daq1::magic);
    }
    // Later publications and consumption show through the shared mapping.
    put_datagram(r, 5);
    r.publish(6);
    r.consume(2);
    CHECK(w.header().head.load() == 6);
    CHECK(w.header().tail.load() == 2);
    CHECK(w.fill_ratio() == Approx(4.0 / 64.0));
    CHECK(std::memcmp(w.slot_data(5), r.slot_data(5), 200) == 0);
    // The watcher's mapping is read-only: it does not unlink the name either.
    { auto w2 = packet_ring::attach_read_only(name); }
    CHECK(shm_exists(name));
}

TEST_CASE("packet_ring: a watcher in a second process sees the published DAQ1 packets", "[acquisition][ring][process]") {
    const auto name = unique_ring_name();
    packet_ring r(name, 64, 256);
    // Some packets before the watcher starts, the rest while it waits; none consumed.
    for (std::uint64_t i = 0; i < 20; ++i) put_datagram(r, i);
    r.publish(20);
    watch_child child({name, "64"});
    for (std::uint64_t i = 20; i < 64; ++i) {
        put_datagram(r, i);
        r.publish(i + 1);
    }
    CHECK(r.free_slots() == 0);
    const auto res = child.wait(std::chrono::seconds(40));
    INFO("child stdout: " << res.out);
    CHECK(res.exit_code == 0);
    CHECK(res.out == "seen 64\n");
    CHECK(r.header().tail.load() == 0);  // the watcher did not consume
}

TEST_CASE("packet_ring: the second-process watcher detects what it must", "[acquisition][ring][process]") {
    const auto name = unique_ring_name();
    packet_ring r(name, 64, 256);
    SECTION("fewer packets than expected: timeout, exit 1") {
        for (std::uint64_t i = 0; i < 10; ++i) put_datagram(r, i);
        r.publish(10);
        watch_child child({name, "11", "200"});
        const auto res = child.wait(std::chrono::seconds(20));
        CHECK(res.exit_code == 1);
        CHECK(res.out.empty());
    }
    SECTION("a slot without DAQ1 magic: exit 1") {
        for (std::uint64_t i = 0; i < 10; ++i) put_datagram(r, i);
        r.slot_data(7)[0] = std::byte{'X'};
        r.publish(10);
        watch_child child({name, "10"});
        const auto res = child.wait(std::chrono::seconds(40));
        CHECK(res.exit_code == 1);
    }
    SECTION("a missing ring: exit 1") {
        watch_child child({name + "-missing", "1"});
        const auto res = child.wait(std::chrono::seconds(40));
        CHECK(res.exit_code == 1);
    }
}

TEST_CASE("packet_ring: attach_read_only on a missing name throws naming it", "[acquisition][ring]") {
    const auto name = unique_ring_name() + "-missing";
    REQUIRE_FALSE(shm_exists(name));
    CHECK_THROWS_AS(packet_ring::attach_read_only(name), std::runtime_error);
    CHECK_THROWS_WITH(packet_ring::attach_read_only(name), Catch::Contains(name));
}

TEST_CASE("packet_ring: attach_read_only rejects something that is not a ring", "[acquisition][ring]") {
    const auto name = unique_ring_name();
    const std::string path = "/" + name;
    const int fd = ::shm_open(path.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
    REQUIRE(fd >= 0);
    SECTION("too small") {
        REQUIRE(::ftruncate(fd, 100) == 0);
        CHECK_THROWS_WITH(packet_ring::attach_read_only(name), Catch::Contains(name));
    }
    SECTION("no magic") {
        REQUIRE(::ftruncate(fd, 8192) == 0);
        CHECK_THROWS_WITH(packet_ring::attach_read_only(name), Catch::Contains(name));
    }
    ::close(fd);
    ::shm_unlink(path.c_str());
}

TEST_CASE("packet_ring: the creator unlinks its name, a moved-from ring does not", "[acquisition][ring]") {
    const auto name = unique_ring_name();
    {
        std::optional<packet_ring> a;
        a.emplace(name, 64, 64);
        CHECK(shm_exists(name));
        put_u64(*a, 0, 1234);
        a->publish(1);
        packet_ring b(std::move(*a));
        a.reset();  // the moved-from ring neither unlinks nor unmaps
        CHECK(shm_exists(name));
        CHECK(b.header().head.load() == 1);
        CHECK(get_u64(b, 0) == 1234);
        CHECK(b.available() == 1);
    }
    CHECK_FALSE(shm_exists(name));
    errno = 0;
    CHECK(::shm_open(("/" + name).c_str(), O_RDONLY, 0) == -1);
    CHECK(errno == ENOENT);
    CHECK_THROWS_WITH(packet_ring::attach_read_only(name), Catch::Contains(name));
}

namespace {
// Creates ring `name` in a child process that then dies without cleaning up
// (as kill -9 leaves it); returns the dead child's pid.
pid_t ring_of_a_dead_process(const std::string& name) {
    const pid_t pid = ::fork();
    if (pid == 0) {
        try {
            new packet_ring(name, 16, 128);  // never destroyed: the name stays
        } catch (...) {
            ::_exit(1);
        }
        ::_exit(0);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    REQUIRE(WIFEXITED(status));
    REQUIRE(WEXITSTATUS(status) == 0);
    return pid;
}
}  // namespace

TEST_CASE("packet_ring: a stale ring of the same name (its process dead) is replaced", "[acquisition][ring]") {
    const auto name = unique_ring_name();
    ring_of_a_dead_process(name);
    REQUIRE(shm_exists(name));
    {
        packet_ring r(name, 32, 256);
        auto w = packet_ring::attach_read_only(name);
        CHECK(w.slot_count() == 32);
        CHECK(w.data_bytes() == 256);
        CHECK(w.header().producer_pid == static_cast<std::uint64_t>(::getpid()));
    }
    CHECK_FALSE(shm_exists(name));
}

TEST_CASE("packet_ring: the name of a live process's ring is refused, and that ring left alone", "[acquisition][ring]") {
    const auto name = unique_ring_name();
    int ready[2];
    REQUIRE(::pipe(ready) == 0);
    const pid_t pid = ::fork();
    if (pid == 0) {
        packet_ring r(name, 16, 128);
        char c = 1;
        (void)!::write(ready[1], &c, 1);
        ::pause();  // alive until killed
        ::_exit(0);
    }
    char c = 0;
    REQUIRE(::read(ready[0], &c, 1) == 1);
    CHECK_THROWS_WITH(packet_ring(name, 16, 128),
                      Catch::Contains("running process (pid " + std::to_string(pid) + ")") &&
                          Catch::Contains("acquisition.ring_name"));
    CHECK(shm_exists(name));  // not unlinked
    auto w = packet_ring::attach_read_only(name);
    CHECK(w.header().producer_pid == static_cast<std::uint64_t>(pid));
    CHECK(daqd::acquisition::remove_stale_rings(name.substr(0, name.rfind('-'))).empty());  // alive: kept
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    ::close(ready[0]);
    ::close(ready[1]);
    ::shm_unlink(("/" + name).c_str());
}

TEST_CASE("packet_ring: a file of that name that is not a ring is refused, not deleted", "[acquisition][ring]") {
    const auto name = unique_ring_name();
    const int fd = ::shm_open(("/" + name).c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
    REQUIRE(fd >= 0);
    REQUIRE(::ftruncate(fd, 4096) == 0);
    ::close(fd);
    CHECK_THROWS_WITH(packet_ring(name, 16, 128), Catch::Contains("is not a daqd packet ring"));
    CHECK(shm_exists(name));
    ::shm_unlink(("/" + name).c_str());
}

TEST_CASE("packet_ring: remove_stale_rings removes the rings of dead processes only", "[acquisition][ring]") {
    // The pattern as in acquisition.ring_name: "<prefix>{pid}"; rings are "<prefix><pid>-<n>".
    const std::string prefix = "daqd-stale-test-" + std::to_string(::getpid()) + "-";
    const pid_t dead = ::fork();
    if (dead == 0) {
        new packet_ring(daqd::acquisition::ring_shm_name(prefix + "{pid}", 0), 16, 128);
        new packet_ring(daqd::acquisition::ring_shm_name(prefix + "{pid}", 1), 16, 128);
        ::_exit(0);
    }
    ::waitpid(dead, nullptr, 0);
    const std::string dead0 = prefix + std::to_string(dead) + "-0";
    const std::string dead1 = prefix + std::to_string(dead) + "-1";
    REQUIRE(shm_exists(dead0));
    REQUIRE(shm_exists(dead1));
    packet_ring mine(daqd::acquisition::ring_shm_name(prefix + "{pid}", 0), 16, 128);
    auto removed = daqd::acquisition::remove_stale_rings(prefix + "{pid}");
    std::sort(removed.begin(), removed.end());
    CHECK(removed == std::vector<std::string>{dead0, dead1});
    CHECK_FALSE(shm_exists(dead0));
    CHECK_FALSE(shm_exists(dead1));
    CHECK(shm_exists(mine.name()));  // this process's own ring stays
}

TEST_CASE("packet_ring: a ring larger than the memory available is refused, naming the key", "[acquisition][ring]") {
    const auto avail = daqd::acquisition::memory_available();
    REQUIRE(avail.has_value());
    // Slots of 1 MiB, enough of them (a power of two) to exceed what is available.
    std::uint64_t slots = 1;
    while (slots * (1ull << 20) <= *avail) slots *= 2;
    const auto name = unique_ring_name();
    CHECK_THROWS_WITH(packet_ring(name, slots, (1ull << 20) - 64),
                      Catch::Contains("acquisition.ring_slots") && Catch::Contains("memory available"));
    CHECK_FALSE(shm_exists(name));
}

TEST_CASE("packet_ring: ring_shm_name substitutes the pid and appends the index", "[acquisition][ring]") {
    const auto pid = std::to_string(::getpid());
    CHECK(daqd::acquisition::ring_shm_name("daqd-{pid}", 0) == "daqd-" + pid + "-0");
    CHECK(daqd::acquisition::ring_shm_name("x", 3) == "x-3");
}
