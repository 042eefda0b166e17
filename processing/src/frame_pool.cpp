#include "daqd/processing/frame_pool.hpp"

#include <sys/mman.h>

#include <cassert>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>

namespace daqd::processing {

namespace {
// Checked before any member is built from it (the free queue asserts on 0).
std::size_t checked_count(std::size_t buffers, std::size_t buffer_bytes) {
    if (buffers == 0 || buffer_bytes == 0) throw std::invalid_argument("frame_pool: empty pool");
    if (buffers > (1u << 31) || buffer_bytes > (std::size_t{1} << 40) / buffers)
        throw std::invalid_argument("frame_pool: pool too large");
    return buffers;
}
}  // namespace

frame_pool::frame_pool(std::size_t buffers, std::size_t buffer_bytes, bool calibrated_area)
    : _buffers(checked_count(buffers, buffer_bytes)), _buffer_bytes((buffer_bytes + 63) / 64 * 64), _free(_buffers) {
    // Anonymous mapping: pages are only committed when a frame first uses them.
    void* p = ::mmap(nullptr, _buffers * _buffer_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        throw std::runtime_error("frame_pool: mmap of " + std::to_string(_buffers * _buffer_bytes) +
                                 " bytes: " + std::strerror(errno));
    _memory = static_cast<std::byte*>(p);
    if (calibrated_area) {
        // Twice the sample bytes: one float32 per 16-bit sample.
        void* c = ::mmap(nullptr, 2 * _buffers * _buffer_bytes, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (c == MAP_FAILED) {
            const int err = errno;
            ::munmap(_memory, _buffers * _buffer_bytes);
            throw std::runtime_error("frame_pool: mmap of the calibrated area (" +
                                     std::to_string(2 * _buffers * _buffer_bytes) + " bytes): " + std::strerror(err));
        }
        _calibrated = static_cast<std::byte*>(c);
    }
    for (std::size_t i = 0; i < _buffers; ++i) {
        [[maybe_unused]] const bool ok = _free.try_push(static_cast<std::uint32_t>(i));
        assert(ok);
    }
}

frame_pool::~frame_pool() {
    if (_memory) ::munmap(_memory, _buffers * _buffer_bytes);
    if (_calibrated) ::munmap(_calibrated, 2 * _buffers * _buffer_bytes);
}

void frame_pool::release(std::uint32_t index) noexcept {
    assert(index < _buffers && "frame_pool: release of a buffer it does not own");
    [[maybe_unused]] const bool ok = _free.try_push(index);
    assert(ok && "frame_pool: a buffer was released twice");
}

}  // namespace daqd::processing
