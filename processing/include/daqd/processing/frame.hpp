#pragma once
// One rebuilt frame as it travels from the assembler to the writer.
//
// A frame is a small descriptor; its samples live in a row of a block of the
// block_pool (block_pool.hpp): row `row` of block `block`, a block holding
// `block_rows` rows of this unit's frames. The assembler fills it and hands
// the descriptor on through an spsc_queue; the writer drops the frame's
// reference on the block when it is done with the row (release()).
//
// With processing stages (daqd/processing/processor.hpp) the descriptor
// passes through the processing thread first; when it calibrates, it points
// `calibrated` at the frame's float32 row in the block's calibrated area
// (same block, same row).
//
// A frame built by hand (tests, benchmarks) has no pool: its samples are
// wherever `samples` points, and release() does nothing.
#include "daqd/processing/block_pool.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace daqd::processing {

// Unit ids are 16-bit: per-unit tables indexed by id have this many entries.
inline constexpr std::size_t max_units = 65536;

// Rows of one stored chunk (and of one block) for frames of `channels`
// 16-bit samples: as many as fit in chunk_bytes, at least 1, at most
// max_chunk_rows (so a unit with few channels does not cost megabytes of
// metadata chunks). The assembler and the writer both use it: a full block
// is a chunk.
inline constexpr std::uint32_t max_chunk_rows = 1024;
[[nodiscard]] constexpr std::uint32_t chunk_rows(std::uint64_t chunk_bytes, std::uint32_t channels) noexcept {
    if (channels == 0) return 1;
    return static_cast<std::uint32_t>(
        std::clamp<std::uint64_t>(chunk_bytes / (2ull * channels), 1, max_chunk_rows));
}

struct frame {
    std::uint16_t unit_id = 0;
    std::uint16_t missing_packets = 0;  // 0 for a complete frame
    std::uint16_t packet_count = 0;
    bool test_pattern = false;     // every packet of it carried DAQ1's TEST_PATTERN flag (docs/PROTOCOL.md)
    // Which threshold the processor calibrated it with: the epoch of
    // processor::request_threshold() (8 bits, wraps). The writer recalibrates
    // a frame of another epoch than its run's (storage::run_processing).
    std::uint8_t threshold_epoch = 0;
    std::uint32_t channels = 0;
    std::uint32_t stream = 0;      // the unit's stream: +1 each time its frame numbers go back or its
                                   // frame size changes (the writer starts the next file then)
    std::uint64_t frame_number = 0;
    std::uint64_t timestamp_ns = 0;
    std::uint64_t assembled_ns = 0;    // monotonic clock of the assembler pass that handed it on (read once per pass)
    std::uint16_t* samples = nullptr;  // channels samples, host order
    float* calibrated = nullptr;       // channels calibrated values, or null (not calibrated)
    // Where the samples live: row `row` of block `block` of `pool` (null:
    // a frame built by hand, not in a pool).
    block_pool* pool = nullptr;
    std::uint32_t block = 0;
    std::uint32_t row = 0;
    std::uint32_t block_rows = 0;  // rows of that block (chunk_rows for this unit)
    std::uint64_t taken = 0;       // the unit's rows taken before this one (block_pool::phase)

    // The block's first row (samples of row 0).
    [[nodiscard]] std::uint16_t* block_samples() const noexcept { return samples - std::size_t{row} * channels; }
    // The writer thread, when done with the frame's row: drops its reference.
    void release() const noexcept {
        if (pool != nullptr) pool->unref_release(block);
    }
};

}  // namespace daqd::processing
