#pragma once
// chunk_sink: what the writer hands on besides the file (the live stream,
// stream/README.md, docs/STREAM.md): every chunk as it was stored, the run's
// start and end, and a look at every frame for a rate-limited preview.
//
// Owner: whoever implements it (the pipeline owns the stream sender). Threads:
// every call is made by the writer thread (or the pumping thread); a sink must
// be quick, must not block on I/O and must not throw. It is set on the writer
// before the writer thread starts and outlives it.
#include "daqd/processing/frame.hpp"
#include "daqd/storage/compressor.hpp"

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace daqd::storage {

struct run_options;
struct run_stats;

// One array of a stored chunk: its bytes as written to the file (bitshuffle +
// LZ4 with the filter's 12-byte header when compressed, else the rows).
struct sunk_array {
    std::string_view name;   // "raw", "calibrated"
    std::string_view dtype;  // numpy's: "<u2", "<f4"
    const void* data = nullptr;
    std::size_t bytes = 0;
    std::uint32_t elem_size = 0;
    // Rows the bytes decode to (rows of a compressed chunk: the whole chunk,
    // zero padding included) and the row of those where this chunk's new
    // frames begin.
    std::uint32_t rows = 0;
    std::uint32_t first_row = 0;
};

// One chunk of one unit, as written: `frames` new frames (their per-frame
// columns below, uncompressed) and the arrays they are rows of. A partial
// chunk written at a flush and later rewritten fuller hands on only the
// frames not handed on before (first_row says where they begin).
struct sunk_chunk {
    std::uint16_t unit_id = 0;
    std::uint32_t channels = 0;
    std::uint32_t file_index = 0;  // of the run's files (rotation, streams)
    std::uint64_t file_row = 0;    // row of the first new frame in that file
    std::uint32_t frames = 0;
    const std::uint64_t* frame_number = nullptr;
    const std::uint64_t* timestamp_ns = nullptr;
    const std::uint16_t* missing_packets = nullptr;
    compression_kind compression = compression_kind::none;
    std::array<sunk_array, 2> arrays{};
    std::size_t array_count = 0;
};

class chunk_sink {
public:
    virtual ~chunk_sink() = default;
    // The run's file was created; before any of its chunks.
    virtual void run_started(const run_options& options) noexcept = 0;
    // A chunk was written to the run's file (after the write succeeded).
    virtual void chunk_written(const sunk_chunk& chunk) noexcept = 0;
    // The run was closed (stats final); after all of its chunks.
    virtual void run_ended(const run_stats& stats) noexcept = 0;
    // Every frame the writer takes from its queue, run or not (a preview).
    virtual void frame_seen(const processing::frame& f) noexcept = 0;
};

}  // namespace daqd::storage
