#pragma once
// A bounded single-producer single-consumer queue for trivially copyable items.
//
// Owned by whoever wires two threads together (the pipeline). One thread calls
// try_push, one other thread calls try_pop/front; the two may run concurrently,
// nothing else may. Indices live on their own cache lines and each side caches
// the other's index, re-reading it only when the queue looks full or empty
// (after rigtorp/SPSCQueue).
#include <atomic>
#include <cassert>
#include <cstddef>
#include <memory>
#include <optional>
#include <vector>
#include <new>
#include <optional>
#include <type_traits>

namespace daqd::common {

inline constexpr std::size_t cache_line = 64;

template <typename T>
class spsc_queue {
    static_assert(std::is_trivially_copyable_v<T>, "spsc_queue holds plain values");

public:
    explicit spsc_queue(std::size_t capacity)
        : _capacity(capacity + 1), _slots(std::make_unique<T[]>(capacity + 1)) {
        assert(capacity > 0 && "spsc_queue capacity must be positive");
    }
    spsc_queue(const spsc_queue&) = delete;
    spsc_queue& operator=(const spsc_queue&) = delete;

    // Producer side.
    [[nodiscard]] bool try_push(const T& value) noexcept {
        const std::size_t head = _head.load(std::memory_order_relaxed);
        std::size_t next = head + 1;
        if (next == _capacity) next = 0;
        if (next == _cached_tail) {
            _cached_tail = _tail.load(std::memory_order_acquire);
            if (next == _cached_tail) return false;
        }
        _slots[head] = value;
        _head.store(next, std::memory_order_release);
        return true;
    }

    // Consumer side.
    [[nodiscard]] std::optional<T> try_pop() noexcept {
        const std::size_t tail = _tail.load(std::memory_order_relaxed);
        if (tail == _cached_head) {
            _cached_head = _head.load(std::memory_order_acquire);
            if (tail == _cached_head) return std::nullopt;
        }
        T value = _slots[tail];
        std::size_t next = tail + 1;
        if (next == _capacity) next = 0;
        _tail.store(next, std::memory_order_release);
        return value;
    }

    // Either side; approximate while the other side runs.
    [[nodiscard]] std::size_t size() const noexcept {
        const std::size_t head = _head.load(std::memory_order_acquire);
        const std::size_t tail = _tail.load(std::memory_order_acquire);
        return head >= tail ? head - tail : head + _capacity - tail;
    }
    [[nodiscard]] std::size_t capacity() const noexcept { return _capacity - 1; }
    [[nodiscard]] bool empty() const noexcept { return size() == 0; }

private:
    const std::size_t _capacity;
    const std::unique_ptr<T[]> _slots;
    alignas(cache_line) std::atomic<std::size_t> _head{0};
    std::size_t _cached_tail = 0;  // producer's copy
    alignas(cache_line) std::atomic<std::size_t> _tail{0};
    std::size_t _cached_head = 0;  // consumer's copy
    char _pad[cache_line - sizeof(std::size_t) * 2];
};

// The consumer's side of several spsc_queues (one per receive shard): pops
// from them in turn, so no producer starves the others. Each queue keeps its
// own order; nothing orders items of different queues. The consumer thread
// only (size()/empty() from any thread, approximate).
template <typename T>
class queue_set {
public:
    queue_set(spsc_queue<T>& one) : _queues{&one} {}  // NOLINT(google-explicit-constructor): one queue is a set
    explicit queue_set(std::vector<spsc_queue<T>*> queues) : _queues(std::move(queues)) {}

    std::optional<T> try_pop() noexcept {
        const std::size_t n = _queues.size();
        for (std::size_t k = 0; k < n; ++k) {
            const std::size_t i = (_next + k) % n;
            if (auto v = _queues[i]->try_pop()) {
                _next = i + 1 == n ? 0 : i + 1;
                return v;
            }
        }
        return std::nullopt;
    }
    [[nodiscard]] std::size_t size() const noexcept {
        std::size_t s = 0;
        for (const auto* q : _queues) s += q->size();
        return s;
    }
    [[nodiscard]] bool empty() const noexcept {
        for (const auto* q : _queues)
            if (!q->empty()) return false;
        return true;
    }
    [[nodiscard]] std::size_t capacity() const noexcept {
        std::size_t c = 0;
        for (const auto* q : _queues) c += q->capacity();
        return c;
    }

private:
    std::vector<spsc_queue<T>*> _queues;
    std::size_t _next = 0;
};

}  // namespace daqd::common
