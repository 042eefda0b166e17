// daq-ringwatch: map a running daqd's packet ring read-only and watch the
// packets go by — per-unit packet rates, without disturbing the server.
//
//   daq-ringwatch daqd-12345-0 [--seconds N] [--json]
//
// The ring's name is in daqd's start-up log (/dev/shm/<name>). The watcher
// never writes to the ring; it samples published slots behind `head`, and
// if it falls more than a ring behind it re-syncs and says how much it skipped.
#include "daqd/acquisition/daq1.hpp"
#include "daqd/acquisition/packet_ring.hpp"

#include <fmt/format.h>

#include <chrono>
#include <cstring>
#include <iostream>
#include <map>
#include <thread>

namespace acq = daqd::acquisition;

int main(int argc, char** argv) {
    std::string name;
    double seconds = 5;
    bool json = false;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--seconds" && i + 1 < argc) {
            seconds = std::stod(argv[++i]);
        } else if (a == "--json") {
            json = true;
        } else if (a == "--help" || a == "-h") {
            std::cout << "usage: daq-ringwatch RING_NAME [--seconds N] [--json]\n"
                         "  RING_NAME as logged by daqd, e.g. daqd-12345-0 (/dev/shm/daqd-12345-0)\n";
            return 0;
        } else if (name.empty()) {
            name = a;
            if (name.rfind("/dev/shm/", 0) == 0) name = name.substr(9);
        } else {
            std::cerr << "daq-ringwatch: unexpected argument '" << a << "'\n";
            return 2;
        }
    }
    if (name.empty()) {
        std::cerr << "daq-ringwatch: give the ring name (see daqd's log), e.g. daqd-12345-0\n";
        return 2;
    }
    try {
        auto ring = acq::packet_ring::attach_read_only(name);
        auto& h = ring.header();
        const std::uint64_t start = h.head.load(std::memory_order_acquire);
        std::uint64_t next = start;
        std::uint64_t seen = 0, skipped = 0, bad = 0;
        std::map<std::uint16_t, std::uint64_t> per_unit;
        const auto t0 = std::chrono::steady_clock::now();
        const auto end = t0 + std::chrono::duration<double>(seconds);
        while (std::chrono::steady_clock::now() < end) {
            const std::uint64_t head = h.head.load(std::memory_order_acquire);
            if (head - next > ring.slot_count() / 2) {  // too far behind: the producer may be overwriting
                skipped += head - next;
                next = head;
            }
            for (; next < head; ++next) {
                const acq::slot_header s = *ring.slot(next);
                if (s.bytes == 0) continue;
                const std::byte* d = ring.slot_data(next) + s.data_offset;
                const std::uint32_t seg = s.segment_bytes ? s.segment_bytes : s.bytes;
                for (std::uint32_t off = 0; off + acq::daq1::min_datagram_bytes <= s.bytes; off += seg) {
                    const auto hd = acq::daq1::decode_header(d + off);
                    if (hd.magic != acq::daq1::magic) {
                        ++bad;
                        continue;
                    }
                    ++seen;
                    ++per_unit[hd.unit_id];
                }
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
        }
        const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        const std::uint64_t published = h.head.load() - start;
        if (json) {
            std::string units;
            for (auto [u, n] : per_unit) units += fmt::format("{}\"{}\":{}", units.empty() ? "" : ",", u, n);
            std::cout << fmt::format(
                "{{\"ring\":\"{}\",\"seconds\":{:.3f},\"published\":{},\"seen\":{},\"skipped_slots\":{},"
                "\"not_daq1\":{},\"ring_dropped\":{},\"fill\":{:.4f},\"units\":{{{}}}}}\n",
                name, secs, published, seen, skipped, bad, h.dropped.load(), ring.fill_ratio(), units);
        } else {
            std::cout << fmt::format("ring /dev/shm/{} ({} slots, producer pid {}): {} slots published in {:.1f} s, "
                                     "{} packets seen, {} slots skipped, fill {:.1f} %\n",
                                     name, ring.slot_count(), h.producer_pid, published, secs, seen, skipped,
                                     100 * ring.fill_ratio());
            for (auto [u, n] : per_unit) std::cout << fmt::format("  unit {:5}  {:10} packets  {:10.0f} /s\n", u, n, n / secs);
        }
        return bad ? 1 : 0;
    } catch (const std::exception& e) {
        std::cerr << "daq-ringwatch: " << e.what() << "\n";
        return 2;
    }
}
