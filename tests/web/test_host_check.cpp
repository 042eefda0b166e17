// Host checks against a fake /proc/sys and /sys tree and real directories.
#include "daqd/acquisition/packet_ring.hpp"
#include "daqd/acquisition/receiver.hpp"
#include "daqd/acquisition/host_check.hpp"
#include "web_test_util.hpp"

#include <catch2/catch.hpp>

#include <fstream>

using namespace daqd::acquisition;
using daqd::common::check_status;
using Catch::Matchers::Contains;
using web_test::temp_dir;
namespace fs = std::filesystem;

namespace {

void put(const fs::path& p, const std::string& text) {
    fs::create_directories(p.parent_path());
    std::ofstream(p) << text << "\n";
}

}  // namespace

TEST_CASE("rmem_max below the requested buffer fails with the sysctl that fixes it", "[web]") {
    temp_dir root("proc");
    put(root / "net/core/rmem_max", "212992");
    const auto c = check_rmem_max(root.path, 37748736, false);
    CHECK(c.name == "rmem_max");
    CHECK(c.status == check_status::failing);
    CHECK(c.fix == "sysctl -w net.core.rmem_max=37748736");
    CHECK_THAT(c.detail, Contains("212992") && Contains("SO_RCVBUFFORCE"));

    SECTION("with SO_RCVBUFFORCE the cap does not apply: ok, and both facts are reported") {
        const auto f = check_rmem_max(root.path, 37748736, true);
        CHECK(f.status == check_status::ok);
        CHECK_THAT(f.detail, Contains("SO_RCVBUFFORCE") && Contains("sysctl -w net.core.rmem_max=37748736"));
    }
    SECTION("large enough") {
        put(root / "net/core/rmem_max", "67108864");
        CHECK(check_rmem_max(root.path, 37748736, false).status == check_status::ok);
    }
    SECTION("unreadable: unknown, not failing") {
        fs::remove(root / "net/core/rmem_max");
        CHECK(check_rmem_max(root.path, 37748736, false).status == check_status::unknown);
    }
}

TEST_CASE("netdev_max_backlog below 10000 fails with its sysctl", "[web]") {
    temp_dir root("proc");
    put(root / "net/core/netdev_max_backlog", "1000");
    const auto c = check_netdev_backlog(root.path, 10000);
    CHECK(c.status == check_status::failing);
    CHECK(c.fix == "sysctl -w net.core.netdev_max_backlog=10000");
    put(root / "net/core/netdev_max_backlog", "250000");
    CHECK(check_netdev_backlog(root.path, 10000).status == check_status::ok);
}

TEST_CASE("fewer cores than busy threads fails", "[web]") {
    CHECK(check_cores(2, 4).status == check_status::failing);
    CHECK_THAT(check_cores(2, 4).detail, Contains("receiver, assembler, writer, web"));
    CHECK(check_cores(4, 4).status == check_status::ok);
    CHECK(check_cores(64, 4).status == check_status::ok);
}

TEST_CASE("output directory: missing, not a directory, unwritable, fine", "[web]") {
    temp_dir dir("out");
    SECTION("missing, its parent writable: ok, daqd creates it (and the check leaves nothing behind)") {
        const auto c = check_output_dir(dir / "runs/deeper");
        CHECK(c.status == check_status::ok);
        CHECK_THAT(c.detail, Contains("does not exist yet: daqd will create it at start"));
        CHECK_THAT(c.detail, Contains(dir.path.string() + " is writable"));
        CHECK(fs::is_empty(dir.path));
    }
    SECTION("missing, under a directory daqd cannot write: mkdir -p and chown") {
        fs::path parent;
        if (::geteuid() == 0) {
            parent = "/proc/self";
        } else {
            parent = dir / "ro";
            fs::create_directories(parent);
            fs::permissions(parent, fs::perms::owner_read | fs::perms::owner_exec);
        }
        const auto c = check_output_dir(parent / "runs");
        CHECK(c.status == check_status::failing);
        CHECK_THAT(c.detail, Contains("daqd cannot create it in " + parent.string()));
        CHECK_THAT(c.fix, Contains("mkdir -p " + (parent / "runs").string()));
    }
    SECTION("missing, under a regular file") {
        put(dir / "file", "x");
        const auto c = check_output_dir(dir / "file/runs");
        CHECK(c.status == check_status::failing);
        CHECK_THAT(c.detail, Contains("is not a directory"));
    }
    SECTION("a regular file") {
        put(dir / "file", "x");
        const auto c = check_output_dir(dir / "file");
        CHECK(c.status == check_status::failing);
        CHECK_THAT(c.detail, Contains("not a directory"));
    }
    SECTION("unwritable: chown") {
        // Root may write anywhere its mode says no: use a place nobody may create files in.
        fs::path target;
        if (::geteuid() == 0) {
            target = "/proc/self";
        } else {
            target = dir / "ro";
            fs::create_directories(target);
            fs::permissions(target, fs::perms::owner_read | fs::perms::owner_exec);
        }
        const auto c = check_output_dir(target);
        CHECK(c.status == check_status::failing);
        CHECK_THAT(c.detail, Contains("cannot create files"));
        CHECK_FALSE(c.fix.empty());
        if (::geteuid() != 0) CHECK_THAT(c.fix, Contains("chown"));
    }
    SECTION("writable; the probe file is gone afterwards") {
        const auto c = check_output_dir(dir.path);
        CHECK(c.status == check_status::ok);
        CHECK(fs::is_empty(dir.path));
    }
}

TEST_CASE("free space", "[web]") {
    temp_dir dir("free");
    CHECK(check_free_space(dir.path, 0).status == check_status::ok);
    const auto c = check_free_space(dir.path, 1ull << 62);
    CHECK(c.status == check_status::failing);
    CHECK_THAT(c.fix, Contains("df -h"));
    // A directory that does not exist yet: its nearest existing parent counts.
    CHECK(check_free_space(dir / "not/yet", 0).status == check_status::ok);
}

TEST_CASE("CPU frequency governor", "[web]") {
    temp_dir sys("sys");
    SECTION("none readable: unknown, not failing") {
        CHECK(check_governor(sys.path).status == check_status::unknown);
    }
    SECTION("all performance") {
        put(sys / "devices/system/cpu/cpu0/cpufreq/scaling_governor", "performance");
        put(sys / "devices/system/cpu/cpu1/cpufreq/scaling_governor", "performance");
        CHECK(check_governor(sys.path).status == check_status::ok);
    }
    SECTION("powersave somewhere: cpupower") {
        put(sys / "devices/system/cpu/cpu0/cpufreq/scaling_governor", "performance");
        put(sys / "devices/system/cpu/cpu1/cpufreq/scaling_governor", "powersave");
        fs::create_directories(sys / "devices/system/cpu/cpufreq");  // not a cpuN directory
        const auto c = check_governor(sys.path);
        CHECK(c.status == check_status::failing);
        CHECK(c.fix == "cpupower frequency-set -g performance");
        CHECK_THAT(c.detail, Contains("powersave (1 CPUs)"));
    }
}

TEST_CASE("run_host_checks: every check, report with the fixes, exit status", "[web]") {
    temp_dir proc("proc"), sys("sys"), out("out");
    put(proc / "net/core/rmem_max", "1000");
    put(proc / "net/core/netdev_max_backlog", "20000");
    host_check_inputs in;
    in.proc_sys = proc.path;
    in.sys = sys.path;
    in.output_dir = out.path;
    in.rcvbuf_request = 4096;
    in.cores = 8;
    in.min_free_bytes = 0;
    auto checks = run_host_checks(in);
    REQUIRE(checks.size() == 8);
    CHECK(any_failing(checks));
    const std::string report = format_report(checks);
    CHECK_THAT(report, Contains("FAIL ] rmem_max") && Contains("fix: sysctl -w net.core.rmem_max=4096"));
    CHECK_THAT(report, Contains("cpu_governor"));
    CHECK_THAT(report, Contains("numa: no thread is pinned"));
    put(proc / "net/core/rmem_max", "8192");
    CHECK_FALSE(any_failing(run_host_checks(in)));
}

TEST_CASE("check_ring_memory: a ring larger than the memory available fails, naming the key and a size that fits",
          "[web]") {
    const std::uint64_t gib = 1ull << 30;
    auto c = check_ring_memory(154 * gib, 16777216, 24 * gib, 12 * gib);
    CHECK(c.status == check_status::failing);
    CHECK_THAT(c.detail, Contains("acquisition.ring_slots = 16777216") && Contains("refuse to start"));
    CHECK_THAT(c.fix, Contains("acquisition.ring_slots = 1048576"));  // 154 GiB / 16 = 9.6 GiB <= 12 GiB
    c = check_ring_memory(144 << 20, 16384, 24 * gib, 64 << 20);  // Docker's 64 MiB /dev/shm
    CHECK(c.status == check_status::ok);
    CHECK_THAT(c.detail, Contains("memfd"));
    c = check_ring_memory(144 << 20, 16384, 24 * gib, 12 * gib);
    CHECK(c.status == check_status::ok);
    CHECK_THAT(c.detail, !Contains("memfd"));
}

TEST_CASE("host_inputs_for sizes the buffer request as the receiver does", "[web]") {
    daqd::config::config cfg;
    cfg.acquisition.socket_buffer_datagrams = 1000;
    cfg.acquisition.expected_datagram_bytes = 1472;
    const auto in = host_inputs_for(cfg);
    CHECK(in.rcvbuf_request == 1000 * daqd::acquisition::kernel_datagram_cost(1472) / 2);
    CHECK(in.cores >= 1);
    CHECK(in.output_dir == cfg.storage.output_dir);
    CHECK(in.ring_bytes == daqd::acquisition::ring_map_bytes(cfg.acquisition.ring_slots,
                                                             cfg.acquisition.max_datagram_bytes + 128));
    CHECK(in.memory_available > 0);
}

TEST_CASE("numa: the node of each pinned CPU set, and the data path's threads on two nodes fail", "[web]") {
    temp_dir sys("sys");
    put(sys / "devices/system/node/node0/cpulist", "0-3");
    put(sys / "devices/system/node/node1/cpulist", "4-7");
    CHECK(check_numa(sys.path, {}).status == check_status::ok);
    CHECK_THAT(check_numa(sys.path, {}).detail, Contains("no thread is pinned"));

    auto c = check_numa(sys.path, {{"threads.receiver_cpus", {2}}, {"threads.writer_cpus", {3}},
                                   {"threads.http_cpus", {6}, false}});
    CHECK(c.name == "numa");
    CHECK(c.status == check_status::ok);  // the HTTP threads are off the data path
    CHECK_THAT(c.detail, Contains("threads.receiver_cpus = \"2\": node 0 (CPUs 2)") &&
                             Contains("threads.http_cpus = \"6\": node 1 (CPUs 6)"));

    c = check_numa(sys.path, {{"threads.receiver_cpus", {2, 3}}, {"threads.writer_cpus", {4}}});
    CHECK(c.status == check_status::failing);
    CHECK_THAT(c.detail, Contains("span NUMA nodes 0, 1") && Contains("threads.writer_cpus = \"4\": node 1"));
    CHECK_THAT(c.fix, Contains("threads.*_cpus") && Contains("nodeN/cpulist"));

    // One set across both nodes spans them too.
    CHECK(check_numa(sys.path, {{"threads.receiver_cpus", {3, 4}}}).status == check_status::failing);

    SECTION("from the cpuN/nodeM links when node*/cpulist is missing") {
        temp_dir links("sys2");
        put(links / "devices/system/cpu/cpu0/node0/x", "");
        put(links / "devices/system/cpu/cpu1/node1/x", "");
        const auto l = check_numa(links.path, {{"threads.receiver_cpus", {0}}, {"threads.assembler_cpus", {1}}});
        CHECK(l.status == check_status::failing);
        CHECK_THAT(l.detail, Contains("threads.assembler_cpus = \"1\": node 1"));
    }
    SECTION("no NUMA information: unknown, not failing") {
        temp_dir empty("sys3");
        CHECK(check_numa(empty.path, {{"threads.receiver_cpus", {0}}}).status == check_status::unknown);
    }
}

TEST_CASE("host_inputs_for: pinned CPU sets and the busy threads follow [threads]", "[web]") {
    daqd::config::config cfg;
    cfg.threads.receiver_cpus = "0";
    cfg.threads.assembler_cpus = "0";
    cfg.threads.processor_cpus = "0";  // no processing stages: no such thread
    cfg.threads.combine_receive_assembly = "off";
    auto in = host_inputs_for(cfg);
    CHECK(in.busy_threads == 4);
    REQUIRE(in.pinned.size() == 2);
    CHECK(in.pinned[0].key == "threads.receiver_cpus");
    CHECK(in.pinned[1].key == "threads.assembler_cpus");
    cfg.threads.combine_receive_assembly = "on";  // assembly runs on the receiver's thread
    in = host_inputs_for(cfg);
    CHECK(in.busy_threads == 3);
    REQUIRE(in.pinned.size() == 1);
    CHECK(in.pinned[0].cpus == std::vector<unsigned>{0});
    CHECK_THAT(check_cores(2, in.busy_threads, in.busy_what).detail, Contains("receiver and assembler on one thread"));
}
