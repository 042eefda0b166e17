#include "daqd/acquisition/packet_ring.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cstddef>
#include <fstream>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <utility>

namespace daqd::acquisition {

namespace {
[[noreturn]] void fail(const std::string& call, const std::string& name) {
    throw std::runtime_error(call + "(/dev/shm/" + name + "): " + std::strerror(errno));
}
std::uint64_t round_up(std::uint64_t v, std::uint64_t to) { return (v + to - 1) / to * to; }
}  // namespace

std::string ring_shm_name(const std::string& pattern, unsigned index) {
    std::string name = pattern;
    if (auto pos = name.find("{pid}"); pos != std::string::npos) name.replace(pos, 5, std::to_string(::getpid()));
    return name + "-" + std::to_string(index);
}

std::uint64_t ring_map_bytes(std::uint64_t slot_count, std::uint64_t data_bytes) {
    return 4096 + round_up(sizeof(slot_header) + data_bytes, 64) * slot_count;
}

std::optional<std::uint64_t> memory_available() {
    std::ifstream in("/proc/meminfo");
    std::string key;
    std::uint64_t kib = 0;
    std::string unit;
    while (in >> key >> kib >> unit)
        if (key == "MemAvailable:") return kib * 1024;
    return std::nullopt;
}

std::optional<std::uint64_t> shm_free_bytes() {
    struct statvfs v {};
    if (::statvfs("/dev/shm", &v) != 0) return std::nullopt;
    return std::uint64_t{v.f_bavail} * std::uint64_t{v.f_frsize};
}

namespace {

// The pid that created the ring behind fd, if fd holds a daqd ring header.
std::optional<pid_t> ring_owner(int fd) {
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size < static_cast<off_t>(sizeof(ring_header)))
        return std::nullopt;
    ring_header h{};
    if (::pread(fd, &h, offsetof(ring_header, head), 0) != static_cast<ssize_t>(offsetof(ring_header, head)))
        return std::nullopt;
    if (h.magic != ring_magic || h.producer_pid == 0 || h.producer_pid > INT32_MAX) return std::nullopt;
    return static_cast<pid_t>(h.producer_pid);
}

bool process_alive(pid_t pid) { return ::kill(pid, 0) == 0 || errno == EPERM; }

}  // namespace

std::vector<std::string> remove_stale_rings(const std::string& pattern) {
    std::vector<std::string> removed;
    // Only names the pattern makes: with "{pid}", any pid; without, the pattern itself.
    const auto pos = pattern.find("{pid}");
    const std::string before = pos == std::string::npos ? pattern : pattern.substr(0, pos);
    const std::string after = pos == std::string::npos ? std::string() : pattern.substr(pos + 5);
    DIR* d = ::opendir("/dev/shm");
    if (d == nullptr) return removed;
    while (const dirent* e = ::readdir(d)) {
        const std::string name = e->d_name;
        if (name.size() <= before.size() + after.size() || name.compare(0, before.size(), before) != 0) continue;
        std::string rest = name.substr(before.size());
        if (pos != std::string::npos) {
            std::size_t digits = 0;
            while (digits < rest.size() && rest[digits] >= '0' && rest[digits] <= '9') ++digits;
            if (digits == 0) continue;
            rest = rest.substr(digits);
        }
        if (rest.compare(0, after.size(), after) != 0) continue;
        rest = rest.substr(after.size());  // "-<index>"
        if (rest.size() < 2 || rest[0] != '-' ||
            rest.find_first_not_of("0123456789", 1) != std::string::npos)
            continue;
        const int fd = ::openat(::dirfd(d), name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
        if (fd < 0) continue;
        const auto owner = ring_owner(fd);
        ::close(fd);
        if (!owner || *owner == ::getpid() || process_alive(*owner)) continue;
        if (::shm_unlink(("/" + name).c_str()) == 0) {
            spdlog::warn("removed stale packet ring /dev/shm/{} (its daqd, pid {}, is gone)", name, *owner);
            removed.push_back(name);
        }
    }
    ::closedir(d);
    return removed;
}

packet_ring::packet_ring(std::string name, std::uint64_t slot_count, std::uint64_t data_bytes)
    : _name(std::move(name)), _owner(true) {
    if (slot_count == 0 || (slot_count & (slot_count - 1)) != 0)
        throw std::invalid_argument("packet_ring: slot_count must be a power of two");
    _slot_count = slot_count;
    _mask = slot_count - 1;
    _data_bytes = data_bytes;
    _stride = round_up(sizeof(slot_header) + data_bytes, 64);
    _map_bytes = ring_map_bytes(slot_count, data_bytes);
    // A ring the machine cannot back fails later, at the first page the
    // kernel cannot give (the receiver then gets EFAULT): refuse it now.
    if (const auto avail = memory_available(); avail && _map_bytes > *avail)
        throw std::runtime_error(fmt::format(
            "the packet ring needs {} bytes (acquisition.ring_slots = {} x slots of {} bytes), more than the {} bytes "
            "of memory available; lower acquisition.ring_slots or acquisition.max_datagram_bytes",
            _map_bytes, slot_count, _stride, *avail));
    const std::string path = "/" + _name;
    int fd = ::shm_open(path.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0640);
    if (fd < 0 && errno == EEXIST) {
        // Replace it only when it is a ring whose process is gone; never take
        // a live daqd's ring (a fixed acquisition.ring_name on two servers).
        const int old = ::shm_open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW, 0);
        const auto owner = old >= 0 ? ring_owner(old) : std::nullopt;
        if (old >= 0) ::close(old);
        if (!owner)
            throw std::runtime_error(fmt::format(
                "/dev/shm/{} exists and is not a daqd packet ring; choose another acquisition.ring_name", _name));
        if (*owner != ::getpid() && process_alive(*owner))
            throw std::runtime_error(fmt::format(
                "/dev/shm/{} is the packet ring of a running process (pid {}); two servers cannot share "
                "acquisition.ring_name (keep \"{{pid}}\" in it)",
                _name, *owner));
        spdlog::warn("packet ring /dev/shm/{} was left by pid {}, which is gone; replacing it", _name, *owner);
        ::shm_unlink(path.c_str());
        fd = ::shm_open(path.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0640);
    }
    if (fd < 0) fail("shm_open", _name);
    // Reserve every page now: a tmpfs smaller than the ring (Docker's 64 MiB
    // /dev/shm) must fail here, not at a receive in the middle of a run.
    int err = ::ftruncate(fd, static_cast<off_t>(_map_bytes)) != 0 ? errno : 0;
    if (err == 0) err = ::posix_fallocate(fd, 0, static_cast<off_t>(_map_bytes));
    if (err != 0) {
        ::close(fd);
        ::shm_unlink(path.c_str());
        const auto shm_free = shm_free_bytes();
        // Anonymous shared memory is backed by the same RAM without /dev/shm's
        // size limit; a watcher attaches through /proc/<pid>/fd.
        fd = ::memfd_create(_name.c_str(), MFD_CLOEXEC);
        int merr = fd < 0 ? errno : 0;
        if (merr == 0 && ::ftruncate(fd, static_cast<off_t>(_map_bytes)) != 0) merr = errno;
        if (merr == 0) merr = ::posix_fallocate(fd, 0, static_cast<off_t>(_map_bytes));
        if (merr != 0) {
            if (fd >= 0) ::close(fd);
            throw std::runtime_error(fmt::format(
                "cannot reserve {} bytes for the packet ring (acquisition.ring_slots = {}): /dev/shm/{}: {} "
                "({} bytes free there); memfd: {}",
                _map_bytes, slot_count, _name, std::strerror(err), shm_free.value_or(0), std::strerror(merr)));
        }
        _memfd = true;
        _name = fmt::format("/proc/{}/fd/{}", ::getpid(), fd);
        spdlog::warn("/dev/shm has {} bytes free, the packet ring needs {} ({}): the ring is in anonymous memory "
                     "(memfd) instead; daq-ringwatch attaches to it as {}",
                     shm_free.value_or(0), _map_bytes, std::strerror(err), _name);
    }
    map(fd, true);
    if (_memfd)
        _memfd_fd = fd;  // kept open: /proc/<pid>/fd/<fd> is how a watcher finds it
    else
        ::close(fd);
    auto* h = new (_base) ring_header{};
    h->magic = ring_magic;
    h->version = ring_layout_version;
    h->header_bytes = 4096;
    h->slot_count = slot_count;
    h->slot_stride = _stride;
    h->data_bytes = data_bytes;
    h->producer_pid = static_cast<std::uint64_t>(::getpid());
    h->head.store(0, std::memory_order_relaxed);
    h->tail.store(0, std::memory_order_relaxed);
    h->dropped.store(0, std::memory_order_release);
    _header = h;
    _slots = _base + 4096;
}

void packet_ring::map(int fd, bool writable) {
    void* p = ::mmap(nullptr, _map_bytes, writable ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) fail("mmap", _name);
    _base = static_cast<std::byte*>(p);
}

packet_ring packet_ring::attach_read_only(const std::string& name) {
    packet_ring r;
    r._name = name;
    // A name, or a path such as /proc/<pid>/fd/<n> (a ring in a memfd).
    const std::string path = "/" + name;
    int fd = !name.empty() && name.front() == '/' ? ::open(name.c_str(), O_RDONLY | O_CLOEXEC)
                                                  : ::shm_open(path.c_str(), O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0) fail("shm_open", name);
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
        ::close(fd);
        fail("fstat", name);
    }
    r._map_bytes = static_cast<std::size_t>(st.st_size);
    if (r._map_bytes < 4096) {
        ::close(fd);
        throw std::runtime_error("/dev/shm/" + name + " is too small to be a daqd packet ring");
    }
    r.map(fd, false);
    ::close(fd);
    r._header = reinterpret_cast<ring_header*>(r._base);
    if (r._header->magic != ring_magic || r._header->version != ring_layout_version)
        throw std::runtime_error("/dev/shm/" + name + " is not a daqd packet ring (bad magic or version)");
    r._slot_count = r._header->slot_count;
    r._mask = r._slot_count - 1;
    r._stride = r._header->slot_stride;
    r._data_bytes = r._header->data_bytes;
    r._slots = r._base + r._header->header_bytes;
    if (4096 + r._stride * r._slot_count > r._map_bytes)
        throw std::runtime_error("/dev/shm/" + name + ": header disagrees with its size");
    return r;
}

packet_ring::packet_ring(packet_ring&& o) noexcept
    : _name(std::move(o._name)), _owner(std::exchange(o._owner, false)), _memfd(o._memfd),
      _memfd_fd(std::exchange(o._memfd_fd, -1)), _base(std::exchange(o._base, nullptr)),
      _map_bytes(o._map_bytes), _header(o._header), _slots(o._slots), _slot_count(o._slot_count), _mask(o._mask),
      _stride(o._stride), _data_bytes(o._data_bytes), _producer_head(o._producer_head),
      _cached_tail(o._cached_tail), _on_publish(o._on_publish), _on_publish_context(o._on_publish_context), _consumer_tail(o._consumer_tail), _cached_head(o._cached_head) {}

packet_ring::~packet_ring() {
    if (_base) ::munmap(_base, _map_bytes);
    if (_memfd_fd >= 0) ::close(_memfd_fd);
    if (_owner && !_memfd) ::shm_unlink(("/" + _name).c_str());
}

}  // namespace daqd::acquisition
