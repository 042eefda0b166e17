#pragma once
// The packet ring: a single-producer single-consumer ring of datagram slots
// in POSIX shared memory (/dev/shm/<name>), so that datagrams are received
// straight into it and a second process can map it read-only to watch them.
//
// Owned by the pipeline. The receiver thread is the only producer, the
// assembler thread the only consumer; they run concurrently. Any number of
// watcher processes may map it read-only (packet_ring::attach_read_only);
// they see published slots but cannot hold the producer back, so a watcher
// that falls behind by more than slot_count slots reads overwritten data and
// must re-sync from `head`.
//
// Memory layout (docs/PROTOCOL.md "Shared-memory packet ring"):
//   [ring_header: 4096 bytes][slot 0][slot 1]...[slot N-1]
//   slot = [slot_header: 32 bytes][data: data_bytes], stride rounded to 64.
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace daqd::acquisition {

inline constexpr std::uint64_t ring_magic = 0x474e495244514144ull;  // "DAQDRING"
inline constexpr std::uint32_t ring_layout_version = 1;

struct ring_header {
    std::uint64_t magic;
    std::uint32_t version;
    std::uint32_t header_bytes;
    std::uint64_t slot_count;   // a power of two
    std::uint64_t slot_stride;  // bytes from one slot to the next
    std::uint64_t data_bytes;   // usable bytes per slot after the slot header
    std::uint64_t producer_pid;
    alignas(64) std::atomic<std::uint64_t> head;  // slots published so far (monotonic)
    alignas(64) std::atomic<std::uint64_t> tail;  // slots consumed so far (monotonic)
    alignas(64) std::atomic<std::uint64_t> dropped;  // datagrams dropped because the ring was full
};
static_assert(sizeof(ring_header) <= 4096);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

// Written by the producer before it publishes the slot.
struct slot_header {
    std::uint32_t bytes;          // received bytes at data + data_offset; 0: skip this slot
    std::uint16_t data_offset;    // where the first datagram starts within the slot's data
    std::uint16_t segment_bytes;  // 0: one datagram; else GRO: datagrams of this size (last may be shorter)
    std::uint16_t link;           // index of the link (listen endpoint) it came in on
    std::uint16_t reserved;
    std::uint32_t reserved2;
    std::uint64_t invalid_mask;   // GRO: bit i set = segment i failed validation (already counted)
    std::uint64_t receive_ns;     // monotonic clock when the receiver saw it
};
static_assert(sizeof(slot_header) == 32);

class packet_ring {
public:
    // Creates /dev/shm/<name> with every page reserved. A stale ring of a
    // dead process is replaced; a live process's ring is refused; a ring
    // larger than the memory available is refused (naming the keys). When
    // /dev/shm cannot hold it, the ring lives in a memfd instead and name()
    // becomes /proc/<pid>/fd/<n> (said once in the log).
    packet_ring(std::string name, std::uint64_t slot_count, std::uint64_t data_bytes);
    // Maps an existing ring read-only (a watcher in another process): a
    // /dev/shm name, or a path (/proc/<pid>/fd/<n>).
    static packet_ring attach_read_only(const std::string& name);
    ~packet_ring();  // unmaps; the creator also unlinks the name
    packet_ring(packet_ring&& other) noexcept;
    packet_ring& operator=(packet_ring&&) = delete;
    packet_ring(const packet_ring&) = delete;

    [[nodiscard]] const std::string& name() const noexcept { return _name; }
    [[nodiscard]] std::uint64_t slot_count() const noexcept { return _slot_count; }
    [[nodiscard]] std::uint64_t data_bytes() const noexcept { return _data_bytes; }

    [[nodiscard]] slot_header* slot(std::uint64_t seq) const noexcept {
        return reinterpret_cast<slot_header*>(_slots + (seq & _mask) * _stride);
    }
    [[nodiscard]] std::byte* slot_data(std::uint64_t seq) const noexcept {
        return reinterpret_cast<std::byte*>(slot(seq)) + sizeof(slot_header);
    }
    [[nodiscard]] ring_header& header() const noexcept { return *_header; }

    // Producer side. Slots [head, head + free) may be written.
    [[nodiscard]] std::uint64_t producer_head() const noexcept { return _producer_head; }
    [[nodiscard]] std::uint64_t free_slots() noexcept {
        std::uint64_t used = _producer_head - _cached_tail;
        if (used == _slot_count) {
            _cached_tail = _header->tail.load(std::memory_order_acquire);
            used = _producer_head - _cached_tail;
        }
        return _slot_count - used;
    }
    // Re-reads the consumer's index (the producer's view of what is free).
    [[nodiscard]] std::uint64_t consumer_tail_fresh() noexcept {
        _cached_tail = _header->tail.load(std::memory_order_acquire);
        return _cached_tail;
    }
    void publish(std::uint64_t new_head) noexcept {
        const std::uint64_t from = _producer_head;
        _producer_head = new_head;
        _header->head.store(new_head, std::memory_order_release);
        if (_on_publish != nullptr) [[unlikely]]
            _on_publish(_on_publish_context, *this, from, new_head);
    }

    // Consumer side. Slots [tail, available end) may be read.
    [[nodiscard]] std::uint64_t consumer_tail() const noexcept { return _consumer_tail; }
    [[nodiscard]] std::uint64_t available() noexcept {
        if (_cached_head == _consumer_tail) _cached_head = _header->head.load(std::memory_order_acquire);
        return _cached_head - _consumer_tail;
    }
    void consume(std::uint64_t count) noexcept {
        _consumer_tail += count;
        _header->tail.store(_consumer_tail, std::memory_order_release);
    }

    // Tests: `fn` runs on the producer thread right after every publish (the
    // moment a consumer may read slots [from, to)), before the producer does
    // anything else. Set before the producer starts. One branch per publish
    // (per batch, not per datagram) when unset.
    using publish_observer = void (*)(void* context, const packet_ring& ring, std::uint64_t from, std::uint64_t to);
    void set_publish_observer(publish_observer fn, void* context) noexcept {
        _on_publish = fn;
        _on_publish_context = context;
    }

    // Either side or a watcher.
    [[nodiscard]] double fill_ratio() const noexcept {
        const auto h = _header->head.load(std::memory_order_acquire);
        const auto t = _header->tail.load(std::memory_order_acquire);
        return static_cast<double>(h - t) / static_cast<double>(_slot_count);
    }

private:
    packet_ring() = default;
    void map(int fd, bool writable);

    std::string _name;
    bool _owner = false;
    bool _memfd = false;  // the ring is a memfd, not a /dev/shm name
    int _memfd_fd = -1;
    std::byte* _base = nullptr;
    std::size_t _map_bytes = 0;
    ring_header* _header = nullptr;
    std::byte* _slots = nullptr;
    std::uint64_t _slot_count = 0;
    std::uint64_t _mask = 0;
    std::uint64_t _stride = 0;
    std::uint64_t _data_bytes = 0;
    // producer-local
    alignas(64) std::uint64_t _producer_head = 0;
    std::uint64_t _cached_tail = 0;
    publish_observer _on_publish = nullptr;
    void* _on_publish_context = nullptr;
    // consumer-local
    alignas(64) std::uint64_t _consumer_tail = 0;
    std::uint64_t _cached_head = 0;
};

// The shared-memory name for a ring: ring_name with "{pid}" replaced, then "-<index>".
std::string ring_shm_name(const std::string& pattern, unsigned index);

// Bytes a ring of these dimensions maps (header + slots).
std::uint64_t ring_map_bytes(std::uint64_t slot_count, std::uint64_t data_bytes);
// MemAvailable from /proc/meminfo, and the free bytes of /dev/shm.
std::optional<std::uint64_t> memory_available();
std::optional<std::uint64_t> shm_free_bytes();
// Unlinks the /dev/shm rings that `pattern` (acquisition.ring_name) names
// whose creating process is gone (kill -9 leaves them); never a live one's,
// never a file that is not a daqd ring. Returns the names removed.
std::vector<std::string> remove_stale_rings(const std::string& pattern);

}  // namespace daqd::acquisition
