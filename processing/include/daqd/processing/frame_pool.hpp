#pragma once
// Preallocated frame buffers, all of one size (assembly.max_frame_bytes).
//
// Owned by the pipeline. Buffers are handed out by index: the assembler
// acquires, the writer releases. The free list is an spsc_queue whose
// producer is the releasing thread and whose consumer is the acquiring
// thread, so exactly one thread may call acquire() and one (other or same)
// thread may call release().
//
// Optionally each buffer has a calibrated area alongside: buffer_bytes / 2
// float32 values (one per 16-bit sample) at the same index, written by the
// processing thread and read by the writer before it releases the index.
// Both areas are anonymous mappings: memory is committed only for the bytes
// frames really use.
#include "daqd/common/spsc_queue.hpp"

#include <cstddef>
#include <cstdint>
#include <optional>

namespace daqd::processing {

class frame_pool {
public:
    frame_pool(std::size_t buffers, std::size_t buffer_bytes, bool calibrated_area = false);
    ~frame_pool();
    frame_pool(const frame_pool&) = delete;
    frame_pool& operator=(const frame_pool&) = delete;

    [[nodiscard]] std::optional<std::uint32_t> acquire() noexcept { return _free.try_pop(); }
    void release(std::uint32_t index) noexcept;

    [[nodiscard]] std::uint16_t* data(std::uint32_t index) const noexcept {
        return reinterpret_cast<std::uint16_t*>(_memory + static_cast<std::size_t>(index) * _buffer_bytes);
    }
    // The calibrated row of buffer `index` (null without a calibrated area).
    [[nodiscard]] float* calibrated(std::uint32_t index) const noexcept {
        return _calibrated == nullptr ? nullptr
                                      : reinterpret_cast<float*>(_calibrated + static_cast<std::size_t>(index) * 2u * _buffer_bytes);
    }
    [[nodiscard]] bool has_calibrated() const noexcept { return _calibrated != nullptr; }
    [[nodiscard]] std::size_t buffer_bytes() const noexcept { return _buffer_bytes; }
    [[nodiscard]] std::size_t buffers() const noexcept { return _buffers; }
    [[nodiscard]] std::size_t available() const noexcept { return _free.size(); }

private:
    std::size_t _buffers;
    std::size_t _buffer_bytes;
    std::byte* _memory = nullptr;
    std::byte* _calibrated = nullptr;  // buffers x 2 x buffer_bytes, or null
    common::spsc_queue<std::uint32_t> _free;
};

}  // namespace daqd::processing
