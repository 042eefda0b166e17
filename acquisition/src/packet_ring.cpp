#include "daqd/acquisition/packet_ring.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

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

packet_ring::packet_ring(std::string name, std::uint64_t slot_count, std::uint64_t data_bytes)
    : _name(std::move(name)), _owner(true) {
    if (slot_count == 0 || (slot_count & (slot_count - 1)) != 0)
        throw std::invalid_argument("packet_ring: slot_count must be a power of two");
    _slot_count = slot_count;
    _mask = slot_count - 1;
    _data_bytes = data_bytes;
    _stride = round_up(sizeof(slot_header) + data_bytes, 64);
    const std::string path = "/" + _name;
    int fd = ::shm_open(path.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0640);
    if (fd < 0 && errno == EEXIST) {
        // A ring of a process that died without cleaning up (names carry the pid).
        spdlog::warn("packet ring /dev/shm/{} exists (left by a dead process?); replacing it", _name);
        ::shm_unlink(path.c_str());
        fd = ::shm_open(path.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0640);
    }
    if (fd < 0) fail("shm_open", _name);
    _map_bytes = 4096 + _stride * slot_count;
    if (::ftruncate(fd, static_cast<off_t>(_map_bytes)) != 0) {
        const int e = errno;
        ::close(fd);
        ::shm_unlink(path.c_str());
        errno = e;
        fail("ftruncate", _name);
    }
    map(fd, true);
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
    const std::string path = "/" + name;
    int fd = ::shm_open(path.c_str(), O_RDONLY | O_CLOEXEC, 0);
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
    : _name(std::move(o._name)), _owner(std::exchange(o._owner, false)), _base(std::exchange(o._base, nullptr)),
      _map_bytes(o._map_bytes), _header(o._header), _slots(o._slots), _slot_count(o._slot_count), _mask(o._mask),
      _stride(o._stride), _data_bytes(o._data_bytes), _producer_head(o._producer_head),
      _cached_tail(o._cached_tail), _consumer_tail(o._consumer_tail), _cached_head(o._cached_head) {}

packet_ring::~packet_ring() {
    if (_base) ::munmap(_base, _map_bytes);
    if (_owner) ::shm_unlink(("/" + _name).c_str());
}

}  // namespace daqd::acquisition
