#pragma once
// Host checks: does this machine give daqd what its configuration needs?
// Socket receive buffer limit, network backlog, cores, output directory
// (exists, writable, free space), CPU frequency governor, the NUMA nodes of
// pinned threads. Each check says what it found and the exact command (or
// setting) that fixes it.
//
// Used by `daqd --check-host` and at start (results logged and exported as
// daq_host_check{check}). Plain functions without state: any thread. The
// /proc/sys and /sys roots and the output directory are parameters, so tests
// run them against a fake tree.
#include "daqd/common/host_check.hpp"
#include "daqd/config/config.hpp"

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace daqd::acquisition {

using common::check_status;
using common::host_check;

// A thread's CPU set from the configuration (threads.*_cpus).
struct pinned_cpus {
    std::string key;            // "threads.receiver_cpus"
    std::vector<unsigned> cpus;  // not empty
    bool data_path = true;      // false for the HTTP threads (off the data path)
};

struct host_check_inputs {
    std::filesystem::path proc_sys = "/proc/sys";
    std::filesystem::path sys = "/sys";
    std::filesystem::path output_dir = "./runs";
    std::uint64_t rcvbuf_request = 0;  // bytes daqd asks per socket with SO_RCVBUF(FORCE)
    bool can_force_rcvbuf = false;     // SO_RCVBUFFORCE works here (root / CAP_NET_ADMIN)
    unsigned cores = 1;                // CPUs daqd may run on
    unsigned busy_threads = 4;         // receiver, assembler, writer, web
    std::string busy_what = "receiver, assembler, writer, web";
    std::vector<pinned_cpus> pinned;   // the threads.*_cpus that are set
    std::uint64_t min_free_bytes = 1ull << 30;
    std::uint64_t min_backlog = 10000;  // recommended for >= 1 Gbit/s
    std::uint64_t ring_bytes = 0;       // what the packet ring maps (0: not checked)
    std::uint32_t ring_slots = 0;       // acquisition.ring_slots, for the message
    std::uint64_t memory_available = 0;  // MemAvailable (0: unknown)
    std::uint64_t shm_free = 0;          // free bytes of /dev/shm (0: unknown)
};

// net.core.rmem_max >= rcvbuf_request; with can_force the cap does not apply
// (reported, not failing).
host_check check_rmem_max(const std::filesystem::path& proc_sys, std::uint64_t rcvbuf_request, bool can_force);
host_check check_netdev_backlog(const std::filesystem::path& proc_sys, std::uint64_t min_backlog);
host_check check_cores(unsigned cores, unsigned busy_threads,
                       const std::string& busy_what = "receiver, assembler, writer, web");
// Exists, is a directory, and a file can be created in it.
host_check check_output_dir(const std::filesystem::path& dir);
// Free space of the file system holding dir (or its nearest existing parent).
host_check check_free_space(const std::filesystem::path& dir, std::uint64_t min_free_bytes);
// The packet ring fits in the memory available (else daqd refuses to start);
// when /dev/shm is smaller than the ring, daqd puts it in a memfd (said, ok).
host_check check_ring_memory(std::uint64_t ring_bytes, std::uint32_t ring_slots, std::uint64_t memory_available,
                             std::uint64_t shm_free);
// Every readable cpu*/cpufreq/scaling_governor is "performance"; none readable: unknown.
host_check check_governor(const std::filesystem::path& sys);
// The NUMA node of each pinned CPU set, from sys/devices/system/node/node*/cpulist
// (else sys/devices/system/cpu/cpuN/nodeM): ok when the data path's pinned
// threads are on one node (or nothing is pinned); failing when they span
// nodes (a frame then crosses the interconnect between threads); unknown
// without NUMA information.
host_check check_numa(const std::filesystem::path& sys, const std::vector<pinned_cpus>& pinned);

std::vector<host_check> run_host_checks(const host_check_inputs& in);

// The inputs on this host for `cfg`: buffer request as acquisition sizes it,
// an SO_RCVBUFFORCE probe, the CPUs of this process's affinity mask, the
// busy threads (3 when receive and assembly share one), the pinned CPU sets.
host_check_inputs host_inputs_for(const config::config& cfg);

[[nodiscard]] bool any_failing(const std::vector<host_check>& checks) noexcept;
// One line per check, "fix:" lines under failing ones.
std::string format_report(const std::vector<host_check>& checks);

// Free bytes for unprivileged users on the file system holding `dir` (or its
// nearest existing parent); false when none can be determined.
bool free_bytes(const std::filesystem::path& dir, std::uint64_t& free, std::uint64_t& total);

}  // namespace daqd::acquisition
