#pragma once
// The frame buffer: preallocated blocks, each shaped like one stored chunk.
//
// The assembler copies each packet's payload straight into a row of a block
// (processing/README.md "The frame buffer: one copy"): a unit's frames take the rows of its
// current block in the order they open, so when frames arrive complete and
// in order, a full block *is* the chunk the writer stores, and the writer
// hands the block's memory to HDF5 as it is. Rows per block for a unit of
// `channels` channels: chunk_rows() (frame.hpp), the same the writer uses.
//
// Owned by the pipeline (one pool per receive shard). Blocks are handed out
// by index: the assembler acquires, the writer releases. Each block counts
// references: the assembler holds one while the block is a unit's current
// block, every frame in it holds one until the writer is done with its row,
// and a run file holds one while a chunk of it is still to be written from
// the block. The thread dropping the last reference gets the block back:
// the writer thread puts it on the free list (unref_release(); an
// spsc_queue whose producer is the writer and whose consumer is the
// assembler), the assembler keeps it for its next acquire (drop()).
//
// Optionally each block has a calibrated area alongside: one float32 per
// 16-bit sample (2 x block_bytes) at the same index, written by the
// processing thread, row for row. Both areas are anonymous mappings: memory
// is committed only for the bytes frames really use.
#include "daqd/common/spsc_queue.hpp"

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

namespace daqd::processing {

class block_pool {
public:
    block_pool(std::size_t blocks, std::size_t block_bytes, bool calibrated_area = false);
    ~block_pool();
    block_pool(const block_pool&) = delete;
    block_pool& operator=(const block_pool&) = delete;

    // The acquiring thread: a free block with one reference (its caller's).
    // The most recently freed first (a stack): a daqd at a low rate keeps
    // reusing a few blocks and never commits the memory of the others.
    [[nodiscard]] std::optional<std::uint32_t> acquire() noexcept {
        while (auto b = _free.try_pop()) _spare.push_back(*b);
        if (_spare.empty()) return std::nullopt;
        const std::uint32_t b = _spare.back();
        _spare.pop_back();
        _spare_count.store(_spare.size(), std::memory_order_relaxed);
        _refs[b].store(1, std::memory_order_relaxed);
        return b;
    }
    // Any thread holding a reference may add one.
    void ref(std::uint32_t index) noexcept { _refs[index].fetch_add(1, std::memory_order_relaxed); }
    // The acquiring thread drops a reference; a block whose last reference
    // it was is kept for its next acquire().
    void drop(std::uint32_t index) noexcept {
        if (unref(index)) {
            _spare.push_back(index);
            _spare_count.store(_spare.size(), std::memory_order_relaxed);
        }
    }
    // The releasing thread drops a reference; a block whose last reference
    // it was goes back on the free list.
    void unref_release(std::uint32_t index) noexcept {
        if (unref(index)) release(index);
    }

    // Row phase of a unit's blocks against the run file's chunks: the writer
    // sets it when a frame's row is not the row its file chunk is at (a run
    // or a stream started mid-block, frames rejected), and the assembler then
    // starts the unit's next block where a file chunk starts: at the frame
    // whose per-unit row count `taken` (frame::taken) satisfies
    // (taken + phase) % rows == 0. Relaxed: a stale value costs one more
    // gathered chunk, never a wrong row.
    void set_phase(std::uint16_t unit, std::uint32_t phase) noexcept {
        _phase[unit].store(phase, std::memory_order_relaxed);
    }
    [[nodiscard]] std::uint32_t phase(std::uint16_t unit) const noexcept {
        return _phase[unit].load(std::memory_order_relaxed);
    }

    [[nodiscard]] std::byte* data(std::uint32_t index) const noexcept {
        return _memory + static_cast<std::size_t>(index) * _block_bytes;
    }
    // The calibrated area of block `index` (null without one).
    [[nodiscard]] float* calibrated(std::uint32_t index) const noexcept {
        return _calibrated == nullptr
                   ? nullptr
                   : reinterpret_cast<float*>(_calibrated + static_cast<std::size_t>(index) * 2u * _block_bytes);
    }
    [[nodiscard]] bool has_calibrated() const noexcept { return _calibrated != nullptr; }
    [[nodiscard]] std::size_t block_bytes() const noexcept { return _block_bytes; }
    [[nodiscard]] std::size_t blocks() const noexcept { return _blocks; }
    // Blocks free now, on the free list or kept by the acquirer (any thread;
    // exact once the pipeline is stopped).
    [[nodiscard]] std::size_t available() const noexcept {
        return _free.size() + _spare_count.load(std::memory_order_relaxed);
    }
    // Bytes of address space reserved (blocks, and calibrated areas).
    [[nodiscard]] std::size_t reserved_bytes() const noexcept {
        return _blocks * _block_bytes * (_calibrated != nullptr ? 3u : 1u);
    }

private:
    [[nodiscard]] bool unref(std::uint32_t index) noexcept {
        return _refs[index].fetch_sub(1, std::memory_order_acq_rel) == 1;
    }
    void release(std::uint32_t index) noexcept;

    std::size_t _blocks;
    std::size_t _block_bytes;
    std::byte* _memory = nullptr;
    std::byte* _calibrated = nullptr;  // blocks x 2 x block_bytes, or null
    std::unique_ptr<std::atomic<std::uint32_t>[]> _refs;
    std::unique_ptr<std::atomic<std::uint32_t>[]> _phase;  // by unit id
    common::spsc_queue<std::uint32_t> _free;
    std::vector<std::uint32_t> _spare;  // acquiring thread only
    std::atomic<std::size_t> _spare_count{0};
};

}  // namespace daqd::processing
