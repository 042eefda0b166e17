// Host checks (host_check.hpp): each reads what it needs from the given
// roots, compares with what the configuration needs, and names the fix.
#include "daqd/acquisition/host_check.hpp"

#include "daqd/acquisition/packet_ring.hpp"
#include "daqd/acquisition/receiver.hpp"
#include "daqd/common/worker.hpp"

#include <fcntl.h>
#include <pwd.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <thread>

namespace daqd::acquisition {

namespace fs = std::filesystem;

namespace {

// The first line of a small file, trimmed; false when unreadable.
bool read_line(const fs::path& p, std::string& out) {
    std::ifstream in(p);
    if (!in) return false;
    std::getline(in, out);
    while (!out.empty() && (out.back() == ' ' || out.back() == '\n' || out.back() == '\r' || out.back() == '\t'))
        out.pop_back();
    return !in.bad();
}

bool read_u64(const fs::path& p, std::uint64_t& v) {
    std::string s;
    if (!read_line(p, s) || s.empty()) return false;
    try {
        std::size_t used = 0;
        v = std::stoull(s, &used);
        return used == s.size();
    } catch (const std::exception&) {
        return false;
    }
}

std::string bytes_text(std::uint64_t b) {
    if (b >= (1ull << 30)) return fmt::format("{:.1f} GiB", static_cast<double>(b) / (1ull << 30));
    if (b >= (1ull << 20)) return fmt::format("{:.1f} MiB", static_cast<double>(b) / (1ull << 20));
    if (b >= (1ull << 10)) return fmt::format("{:.1f} KiB", static_cast<double>(b) / (1ull << 10));
    return fmt::format("{} bytes", b);
}

// Single-quoted for the shell when needed.
std::string shell_quote(const std::string& s) {
    const bool plain = !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || std::strchr("/._-+:,@%", c) != nullptr;
    });
    if (plain) return s;
    std::string q = "'";
    for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return q + "'";
}

std::string user_name() {
    if (const passwd* pw = ::getpwuid(::geteuid())) return pw->pw_name;
    return std::to_string(::geteuid());
}

fs::path nearest_existing(const fs::path& dir) {
    std::error_code ec;
    fs::path p = fs::absolute(dir, ec);
    if (ec) p = dir;
    while (!p.empty() && !fs::exists(p, ec)) {
        const fs::path parent = p.parent_path();
        if (parent == p) break;
        p = parent;
    }
    return p.empty() ? fs::path(".") : p;
}

}  // namespace

host_check check_rmem_max(const fs::path& proc_sys, std::uint64_t rcvbuf_request, bool can_force) {
    host_check c{"rmem_max", check_status::unknown, "", ""};
    std::uint64_t rmem = 0;
    if (!read_u64(proc_sys / "net/core/rmem_max", rmem)) {
        c.detail = fmt::format("cannot read {}", (proc_sys / "net/core/rmem_max").string());
        return c;
    }
    const std::string fix = fmt::format("sysctl -w net.core.rmem_max={}", rcvbuf_request);
    if (rmem >= rcvbuf_request) {
        c.status = check_status::ok;
        c.detail = fmt::format("net.core.rmem_max = {} ({}), daqd asks {} ({}) per socket", rmem, bytes_text(rmem),
                               rcvbuf_request, bytes_text(rcvbuf_request));
        return c;
    }
    if (can_force) {
        c.status = check_status::ok;
        c.detail = fmt::format(
            "net.core.rmem_max = {} ({}) is below the {} ({}) daqd asks per socket, but daqd may use SO_RCVBUFFORCE "
            "here (root or CAP_NET_ADMIN), which bypasses rmem_max; without that privilege run: {}",
            rmem, bytes_text(rmem), rcvbuf_request, bytes_text(rcvbuf_request), fix);
        return c;
    }
    c.status = check_status::failing;
    c.detail = fmt::format(
        "net.core.rmem_max = {} ({}) caps the socket receive buffer below the {} ({}) daqd asks for "
        "(acquisition.socket_buffer_datagrams); bursts will be dropped by the kernel. SO_RCVBUFFORCE would bypass the "
        "cap but needs root or CAP_NET_ADMIN",
        rmem, bytes_text(rmem), rcvbuf_request, bytes_text(rcvbuf_request));
    c.fix = fix;
    return c;
}

host_check check_netdev_backlog(const fs::path& proc_sys, std::uint64_t min_backlog) {
    host_check c{"netdev_max_backlog", check_status::unknown, "", ""};
    std::uint64_t v = 0;
    if (!read_u64(proc_sys / "net/core/netdev_max_backlog", v)) {
        c.detail = fmt::format("cannot read {}", (proc_sys / "net/core/netdev_max_backlog").string());
        return c;
    }
    if (v >= min_backlog) {
        c.status = check_status::ok;
        c.detail = fmt::format("net.core.netdev_max_backlog = {} (>= {})", v, min_backlog);
        return c;
    }
    c.status = check_status::failing;
    c.detail = fmt::format("net.core.netdev_max_backlog = {}; at least {} is recommended for 1 Gbit/s and more "
                           "(packets queued per CPU before the kernel drops them)",
                           v, min_backlog);
    c.fix = fmt::format("sysctl -w net.core.netdev_max_backlog={}", min_backlog);
    return c;
}

host_check check_cores(unsigned cores, unsigned busy_threads, const std::string& busy_what) {
    host_check c{"cores", check_status::ok, "", ""};
    if (cores >= busy_threads) {
        c.detail = fmt::format("{} CPUs for daqd's {} busy threads ({})", cores, busy_threads, busy_what);
        return c;
    }
    c.status = check_status::failing;
    c.detail = fmt::format("{} CPU(s) for daqd's {} busy threads ({}): they share cores, so the peak rate is lower "
                           "and loss under load more likely",
                           cores, busy_threads, busy_what);
    c.fix = fmt::format("no command: run daqd on a machine (or CPU set) with at least {} CPUs, e.g. taskset -c 0-{} daqd …",
                        busy_threads, busy_threads - 1);
    return c;
}

host_check check_output_dir(const fs::path& dir) {
    host_check c{"output_dir", check_status::failing, "", ""};
    const std::string d = dir.string();
    std::error_code ec;
    const auto st = fs::status(dir, ec);
    if (!fs::exists(st)) {
        // daqd creates it at start (create_directories): what counts is
        // whether it can, in the nearest directory that exists.
        const fs::path parent = nearest_existing(dir);
        const std::string pd = parent.string();
        if (!fs::is_directory(parent, ec)) {
            c.detail = fmt::format("output directory {} does not exist, and daqd cannot create it: {} is not a "
                                   "directory", d, pd);
            c.fix = fmt::format("set storage.output_dir to a path under a directory (or remove {})", shell_quote(pd));
            return c;
        }
        const fs::path probe = parent / fmt::format(".daqd-mkdir-test-{}", ::getpid());
        if (::mkdir(probe.c_str(), 0700) != 0) {
            const int err = errno;
            c.detail = fmt::format("output directory {} does not exist, and daqd cannot create it in {}: {}", d, pd,
                                   std::strerror(err));
            c.fix = fmt::format("mkdir -p {0} && chown {1} {0}", shell_quote(d), shell_quote(user_name()));
            return c;
        }
        ::rmdir(probe.c_str());
        c.status = check_status::ok;
        c.detail = fmt::format("output directory {} does not exist yet: daqd will create it at start ({} is "
                               "writable)", d, pd);
        return c;
    }
    if (!fs::is_directory(st)) {
        c.detail = fmt::format("output directory {} is not a directory", d);
        c.fix = fmt::format("rm {0} && mkdir -p {0}   (or set storage.output_dir to a directory)", shell_quote(d));
        return c;
    }
    // Try what daqd will do: create a file there.
    const fs::path probe = dir / fmt::format(".daqd-write-test-{}", ::getpid());
    const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        const int err = errno;
        c.detail = fmt::format("cannot create files in output directory {}: {}", d, std::strerror(err));
        if (err == EROFS)
            c.fix = fmt::format("mount -o remount,rw $(df --output=target {} | tail -1)   (or choose another storage.output_dir)",
                                shell_quote(d));
        else
            c.fix = fmt::format("chown {} {}", shell_quote(user_name()), shell_quote(d));
        return c;
    }
    ::close(fd);
    ::unlink(probe.c_str());
    c.status = check_status::ok;
    c.detail = fmt::format("output directory {} is writable", d);
    return c;
}

bool free_bytes(const fs::path& dir, std::uint64_t& free, std::uint64_t& total) {
    struct statvfs sv{};
    const fs::path p = nearest_existing(dir);
    if (::statvfs(p.c_str(), &sv) != 0) return false;
    free = static_cast<std::uint64_t>(sv.f_bavail) * sv.f_frsize;
    total = static_cast<std::uint64_t>(sv.f_blocks) * sv.f_frsize;
    return true;
}

host_check check_free_space(const fs::path& dir, std::uint64_t min_free_bytes) {
    host_check c{"free_space", check_status::unknown, "", ""};
    std::uint64_t free = 0, total = 0;
    if (!free_bytes(dir, free, total)) {
        c.detail = fmt::format("cannot determine the free space for {}", dir.string());
        return c;
    }
    if (free >= min_free_bytes) {
        c.status = check_status::ok;
        c.detail = fmt::format("{} free of {} for {}", bytes_text(free), bytes_text(total), dir.string());
        return c;
    }
    c.status = check_status::failing;
    c.detail = fmt::format("only {} free of {} for {} (at least {} wanted)", bytes_text(free), bytes_text(total),
                           dir.string(), bytes_text(min_free_bytes));
    c.fix = fmt::format("df -h {}   (then move old runs away, or set storage.output_dir to a larger file system)",
                        shell_quote(nearest_existing(dir).string()));
    return c;
}

host_check check_ring_memory(std::uint64_t ring_bytes, std::uint32_t ring_slots, std::uint64_t memory_available,
                             std::uint64_t shm_free) {
    host_check c{"ring_memory", check_status::unknown, "", ""};
    if (ring_bytes == 0 || memory_available == 0) {
        c.detail = "cannot determine the memory available for the packet ring";
        return c;
    }
    if (ring_bytes > memory_available) {
        c.status = check_status::failing;
        c.detail = fmt::format("the packet ring needs {} (acquisition.ring_slots = {}), more than the {} of memory "
                               "available: daqd would refuse to start",
                               bytes_text(ring_bytes), ring_slots, bytes_text(memory_available));
        std::uint32_t fits = ring_slots;
        while (fits > 64 && static_cast<double>(ring_bytes) * fits / ring_slots > memory_available / 2.0) fits /= 2;
        c.fix = fmt::format("set acquisition.ring_slots = {} (or lower acquisition.max_datagram_bytes)", fits);
        return c;
    }
    c.status = check_status::ok;
    if (shm_free != 0 && ring_bytes > shm_free)
        c.detail = fmt::format("the packet ring needs {}, /dev/shm has {} free: the ring goes to anonymous memory "
                               "(memfd) instead, {} of memory available",
                               bytes_text(ring_bytes), bytes_text(shm_free), bytes_text(memory_available));
    else
        c.detail = fmt::format("the packet ring needs {}: {} of memory available, {} free in /dev/shm",
                               bytes_text(ring_bytes), bytes_text(memory_available), bytes_text(shm_free));
    return c;
}

host_check check_governor(const fs::path& sys) {
    host_check c{"cpu_governor", check_status::unknown, "", ""};
    const fs::path cpus = sys / "devices/system/cpu";
    std::map<std::string, unsigned> governors;
    std::error_code ec;
    for (fs::directory_iterator it(cpus, ec), end; !ec && it != end; it.increment(ec)) {
        const std::string n = it->path().filename().string();
        if (n.size() < 4 || n.compare(0, 3, "cpu") != 0 ||
            !std::all_of(n.begin() + 3, n.end(), [](char ch) { return ch >= '0' && ch <= '9'; }))
            continue;
        std::string g;
        if (read_line(it->path() / "cpufreq/scaling_governor", g) && !g.empty()) ++governors[g];
    }
    if (governors.empty()) {
        c.detail = "no CPU frequency governor readable (no cpufreq, e.g. in a VM): unknown, not a failure";
        return c;
    }
    std::string list;
    for (const auto& [g, n] : governors) list += fmt::format("{}{} ({} CPUs)", list.empty() ? "" : ", ", g, n);
    if (governors.size() == 1 && governors.begin()->first == "performance") {
        c.status = check_status::ok;
        c.detail = "CPU frequency governor: " + list;
        return c;
    }
    c.status = check_status::failing;
    c.detail = "CPU frequency governor: " + list + "; \"performance\" is recommended (no ramp-up delay under bursts)";
    c.fix = "cpupower frequency-set -g performance";
    return c;
}

namespace {

// CPU -> NUMA node, from node*/cpulist, else from the cpuN/nodeM links.
std::map<unsigned, unsigned> numa_nodes(const fs::path& sys) {
    std::map<unsigned, unsigned> node_of;
    auto number_after = [](const std::string& name, std::string_view prefix, unsigned& out) {
        if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) return false;
        const std::string digits = name.substr(prefix.size());
        if (!std::all_of(digits.begin(), digits.end(), [](char ch) { return ch >= '0' && ch <= '9'; }) ||
            digits.size() > 6)
            return false;
        out = static_cast<unsigned>(std::stoul(digits));
        return true;
    };
    std::error_code ec;
    for (fs::directory_iterator it(sys / "devices/system/node", ec), end; !ec && it != end; it.increment(ec)) {
        unsigned node = 0;
        std::string list;
        if (!number_after(it->path().filename().string(), "node", node) || !read_line(it->path() / "cpulist", list))
            continue;
        if (auto cpus = config::parse_cpu_list(list))
            for (unsigned cpu : *cpus) node_of[cpu] = node;
    }
    if (!node_of.empty()) return node_of;
    ec.clear();
    for (fs::directory_iterator it(sys / "devices/system/cpu", ec), end; !ec && it != end; it.increment(ec)) {
        unsigned cpu = 0;
        if (!number_after(it->path().filename().string(), "cpu", cpu)) continue;
        std::error_code ec2;
        for (fs::directory_iterator n(it->path(), ec2), nend; !ec2 && n != nend; n.increment(ec2)) {
            unsigned node = 0;
            if (number_after(n->path().filename().string(), "node", node)) node_of[cpu] = node;
        }
    }
    return node_of;
}

}  // namespace

host_check check_numa(const fs::path& sys, const std::vector<pinned_cpus>& pinned) {
    host_check c{"numa", check_status::ok, "", ""};
    if (pinned.empty()) {
        c.detail = "no thread is pinned (threads.*_cpus): the kernel places them";
        return c;
    }
    const auto node_of = numa_nodes(sys);
    if (node_of.empty()) {
        c.status = check_status::unknown;
        c.detail = fmt::format("no NUMA information under {}: the nodes of the pinned threads are unknown",
                               (sys / "devices/system/node").string());
        return c;
    }
    std::string lines;
    std::map<unsigned, unsigned> data_path_nodes;  // node -> pinned sets of the data path on it
    for (const auto& p : pinned) {
        std::map<unsigned, std::vector<unsigned>> by_node;
        std::vector<unsigned> unknown;
        for (unsigned cpu : p.cpus) {
            const auto it = node_of.find(cpu);
            if (it == node_of.end())
                unknown.push_back(cpu);
            else
                by_node[it->second].push_back(cpu);
        }
        std::string where;
        for (const auto& [node, cpus] : by_node) {
            where += fmt::format("{}node {} (CPUs {})", where.empty() ? "" : ", ", node, common::cpu_list_text(cpus));
            if (p.data_path) ++data_path_nodes[node];
        }
        if (!unknown.empty())
            where += fmt::format("{}no node known for CPUs {}", where.empty() ? "" : ", ", common::cpu_list_text(unknown));
        lines += fmt::format("{}{} = \"{}\": {}", lines.empty() ? "" : "; ", p.key, common::cpu_list_text(p.cpus),
                             where);
    }
    if (data_path_nodes.size() <= 1) {
        c.detail = "pinned threads by NUMA node: " + lines;
        return c;
    }
    std::string nodes;
    for (const auto& [node, n] : data_path_nodes) nodes += fmt::format("{}{}", nodes.empty() ? "" : ", ", node);
    c.status = check_status::failing;
    c.detail = fmt::format("the data path's pinned threads span NUMA nodes {} (every packet and frame then crosses "
                           "between nodes): {}",
                           nodes, lines);
    c.fix = fmt::format("set threads.*_cpus to CPUs of one node (the node of the NIC: cat "
                        "/sys/class/net/IFACE/device/numa_node; its CPUs: cat {}/devices/system/node/nodeN/cpulist)",
                        sys.string());
    return c;
}

std::vector<host_check> run_host_checks(const host_check_inputs& in) {
    return {
        check_rmem_max(in.proc_sys, in.rcvbuf_request, in.can_force_rcvbuf),
        check_netdev_backlog(in.proc_sys, in.min_backlog),
        check_cores(in.cores, in.busy_threads, in.busy_what),
        check_output_dir(in.output_dir),
        check_free_space(in.output_dir, in.min_free_bytes),
        check_ring_memory(in.ring_bytes, in.ring_slots, in.memory_available, in.shm_free),
        check_governor(in.sys),
        check_numa(in.sys, in.pinned),
    };
}

host_check_inputs host_inputs_for(const config::config& cfg) {
    host_check_inputs in;
    in.output_dir = cfg.storage.output_dir;
    // As acquisition's open_link sizes it: datagrams x kernel cost, halved
    // because the kernel doubles what it is given.
    const std::uint64_t wanted = static_cast<std::uint64_t>(cfg.acquisition.socket_buffer_datagrams) *
                                 kernel_datagram_cost(cfg.acquisition.expected_datagram_bytes);
    in.rcvbuf_request = std::min<std::uint64_t>(wanted / 2, 0x7fffffff);
    // As the pipeline makes it: slots of a datagram plus 128 bytes.
    in.ring_slots = cfg.acquisition.ring_slots;
    in.ring_bytes = ring_map_bytes(cfg.acquisition.ring_slots, cfg.acquisition.max_datagram_bytes + 128);
    in.memory_available = memory_available().value_or(0);
    in.shm_free = shm_free_bytes().value_or(0);
    // Probe: does SO_RCVBUFFORCE work for this process?
    const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd >= 0) {
        const int ask = static_cast<int>(in.rcvbuf_request);
        in.can_force_rcvbuf = ::setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &ask, sizeof ask) == 0;
        ::close(fd);
    }
    cpu_set_t set;
    CPU_ZERO(&set);
    if (::sched_getaffinity(0, sizeof set, &set) == 0)
        in.cores = static_cast<unsigned>(CPU_COUNT(&set));
    else
        in.cores = std::max(1u, std::thread::hardware_concurrency());
    // As the pipeline decides it: one thread fewer when receive and assembly
    // share one; a receiver and an assembler (or the one thread) per shard;
    // a packet ring per shard.
    const unsigned shards = std::max(1u, std::min<unsigned>(cfg.acquisition.shards,
                                                            static_cast<unsigned>(cfg.acquisition.listen.size())));
    in.ring_bytes *= shards;
    const bool combined = config::choose_combine(cfg.threads, in.cores).combined;
    if (combined) {
        in.busy_threads = 3;
        in.busy_what = "receiver and assembler on one thread, writer, web";
    }
    if (shards > 1) {
        in.busy_threads += (combined ? 1 : 2) * (shards - 1);
        in.busy_what = fmt::format("{} receive shards ({} each), writer, web", shards,
                                   combined ? "receiver and assembler on one thread" : "receiver, assembler");
    }
    const std::pair<const char*, const std::string*> sets[] = {
        {"threads.receiver_cpus", &cfg.threads.receiver_cpus},   {"threads.assembler_cpus", &cfg.threads.assembler_cpus},
        {"threads.processor_cpus", &cfg.threads.processor_cpus}, {"threads.writer_cpus", &cfg.threads.writer_cpus},
        {"threads.http_cpus", &cfg.threads.http_cpus},
    };
    for (const auto& [key, text] : sets) {
        auto cpus = config::parse_cpu_list(*text);
        if (!cpus || cpus->empty()) continue;
        // Threads that do not run here are not placed: no processing stages, assembly on the receiver's thread.
        const std::string_view k = key;
        if (k == "threads.processor_cpus" && cfg.processing.stages.empty()) continue;
        if (k == "threads.assembler_cpus" && combined) continue;
        in.pinned.push_back({key, std::move(*cpus), k != "threads.http_cpus"});
    }
    return in;
}

bool any_failing(const std::vector<host_check>& checks) noexcept {
    return std::any_of(checks.begin(), checks.end(), [](const host_check& c) { return c.status == check_status::failing; });
}

std::string format_report(const std::vector<host_check>& checks) {
    std::string out;
    for (const auto& c : checks) {
        const char* tag = c.status == check_status::ok ? "  ok  " : c.status == check_status::failing ? " FAIL " : "  ??  ";
        out += fmt::format("[{}] {}: {}\n", tag, c.name, c.detail);
        if (c.status == check_status::failing && !c.fix.empty()) out += fmt::format("         fix: {}\n", c.fix);
    }
    return out;
}

}  // namespace daqd::acquisition
