#pragma once
// One rebuilt frame as it travels from the assembler to the writer.
//
// A frame is a small descriptor; its samples live in a buffer of the
// frame_pool. The assembler fills it, hands the descriptor to the writer
// through an spsc_queue, and the writer gives the buffer back to the pool when
// it has copied the samples into its chunk buffers.
//
// With processing stages (daqd/processing/processor.hpp) the descriptor
// passes through the processing thread first; when it calibrates, it points
// `calibrated` at the frame's float32 row in the pool's calibrated area (same
// buffer index, released together with the samples).
#include <cstddef>
#include <cstdint>

namespace daqd::processing {

// Unit ids are 16-bit: per-unit tables indexed by id have this many entries.
inline constexpr std::size_t max_units = 65536;

struct frame {
    std::uint16_t unit_id = 0;
    std::uint16_t missing_packets = 0;  // 0 for a complete frame
    std::uint16_t packet_count = 0;
    std::uint32_t channels = 0;
    std::uint32_t pool_index = 0;  // which frame_pool buffer holds the samples
    std::uint32_t stream = 0;      // the unit's stream: +1 each time its frame numbers go back or its
                                   // frame size changes (the writer starts the next file then)
    std::uint64_t frame_number = 0;
    std::uint64_t timestamp_ns = 0;
    std::uint64_t assembled_ns = 0;    // monotonic clock of the assembler pass that handed it on (read once per pass)
    std::uint16_t* samples = nullptr;  // channels samples, host order
    float* calibrated = nullptr;       // channels calibrated values, or null (not calibrated)
};

}  // namespace daqd::processing
