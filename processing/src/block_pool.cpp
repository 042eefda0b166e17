#include "daqd/processing/block_pool.hpp"

#include <sys/mman.h>

#include <cassert>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>

namespace daqd::processing {

namespace {
// Checked before any member is built from it (the free queue asserts on 0).
std::size_t checked_count(std::size_t blocks, std::size_t block_bytes) {
    if (blocks == 0 || block_bytes == 0) throw std::invalid_argument("block_pool: empty pool");
    if (blocks > (1u << 31) || block_bytes > (std::size_t{1} << 40) / blocks)
        throw std::invalid_argument("block_pool: pool too large");
    return blocks;
}
}  // namespace

block_pool::block_pool(std::size_t blocks, std::size_t block_bytes, bool calibrated_area)
    : _blocks(checked_count(blocks, block_bytes)),
      _block_bytes((block_bytes + 63) / 64 * 64),
      _refs(std::make_unique<std::atomic<std::uint32_t>[]>(_blocks)),
      _phase(std::make_unique<std::atomic<std::uint32_t>[]>(65536)),
      _free(_blocks) {
    _spare.reserve(_blocks);
    // Anonymous mapping: pages are only committed when a frame first uses them.
    void* p = ::mmap(nullptr, _blocks * _block_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        throw std::runtime_error("block_pool: mmap of " + std::to_string(_blocks * _block_bytes) +
                                 " bytes: " + std::strerror(errno));
    _memory = static_cast<std::byte*>(p);
    if (calibrated_area) {
        // Twice the sample bytes: one float32 per 16-bit sample.
        void* c = ::mmap(nullptr, 2 * _blocks * _block_bytes, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (c == MAP_FAILED) {
            const int err = errno;
            ::munmap(_memory, _blocks * _block_bytes);
            throw std::runtime_error("block_pool: mmap of the calibrated area (" +
                                     std::to_string(2 * _blocks * _block_bytes) + " bytes): " + std::strerror(err));
        }
        _calibrated = static_cast<std::byte*>(c);
    }
    // Block 0 on top of the stack.
    for (std::size_t i = _blocks; i-- > 0;) _spare.push_back(static_cast<std::uint32_t>(i));
    _spare_count.store(_spare.size(), std::memory_order_relaxed);
}

block_pool::~block_pool() {
    if (_memory) ::munmap(_memory, _blocks * _block_bytes);
    if (_calibrated) ::munmap(_calibrated, 2 * _blocks * _block_bytes);
}

void block_pool::release(std::uint32_t index) noexcept {
    assert(index < _blocks && "block_pool: release of a block it does not own");
    assert(_refs[index].load(std::memory_order_relaxed) == 0 && "block_pool: release of a block still referenced");
    [[maybe_unused]] const bool ok = _free.try_push(index);
    assert(ok && "block_pool: a block was released twice");
}

}  // namespace daqd::processing
