#pragma once
// The writer's compression pool (storage.compression = "bslz4", docs/STORAGE.md
// "Compression"): whole chunks are compressed here, on threads of their own,
// never on the receive, assembly or writer threads.
//
// The writer (run_file) hands over a chunk_job holding the chunk's arrays
// (pointers into a block of the assembler's pool, or copies it owns) and goes
// on appending; a worker thread compresses every array of the job into the
// job's own output buffers (bitshuffle + LZ4, codec/bslz4.hpp) and marks it
// done; the writer writes done jobs in the order it submitted them
// (H5Dwrite_chunk, filter mask 0). Jobs in flight are bounded by the run file
// (run_file::impl::max_in_flight); when that many wait the writer waits for
// the oldest one, and its own input queue, bounded and counted, takes the
// backlog: the receiver is never blocked. Without threads (threads == 0) the
// caller compresses on submit (tests, the pumped writer).
#include "daqd/common/event.hpp"
#include "daqd/common/telemetry.hpp"

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace daqd::storage {

enum class compression_kind { none, bslz4 };

// Counters of the pool; several threads write them (add_shared).
struct compressor_counters {
    telemetry::counter bytes_in;    // chunk bytes compressed (padding of partial chunks included)
    telemetry::counter bytes_out;   // compressed bytes produced
    telemetry::counter chunks;      // arrays compressed (one per dataset and chunk)
    telemetry::counter busy_ns;     // worker time compressing
    telemetry::counter wait_ns;     // writer-thread time waiting for a job (too many in flight, flush, close)
    telemetry::counter failures;    // jobs that failed (the run fails with the message)
    telemetry::counter in_flight;   // gauge: jobs submitted, not yet written
    telemetry::counter capacity;    // gauge: the most jobs in flight before the writer waits
};

// One chunk of one unit: up to five arrays (raw, frame_number, timestamp_ns,
// missing_packets, calibrated), compressed into `out`.
struct chunk_job {
    static constexpr std::size_t max_parts = 5;
    struct part {
        const void* in = nullptr;    // the array (in a block, or in `owned`)
        std::size_t bytes = 0;
        std::uint32_t elem_size = 1;
        std::vector<unsigned char> owned;  // the array's copy, when the job owns it
        std::vector<unsigned char> out;    // compressed; capacity kept across reuses
        std::size_t out_bytes = 0;
    };
    std::array<part, max_parts> parts;
    std::size_t count = 0;
    std::atomic<bool> done{false};
    std::string error;  // set before done, when compression failed
    std::uint64_t submitted_ns = 0;

    void reset() noexcept {
        for (auto& p : parts) {
            p.in = nullptr;
            p.bytes = 0;
            p.out_bytes = 0;
        }
        count = 0;
        done.store(false, std::memory_order_relaxed);
        error.clear();
    }
};

class compressor {
public:
    // `threads` worker threads named daqd-compress-<k> (0: none, submit()
    // compresses on the caller). `ready`, when given, is notified whenever a
    // job is done (the writer's wake-up event).
    compressor(unsigned threads, compressor_counters* counters, common::wake_event* ready = nullptr);
    ~compressor();  // finishes every job queued, then joins
    compressor(const compressor&) = delete;
    compressor& operator=(const compressor&) = delete;

    void submit(std::shared_ptr<chunk_job> job);
    // Blocks until `job` is done; the time counts in wait_ns.
    void wait(const chunk_job& job);
    [[nodiscard]] unsigned threads() const noexcept { return static_cast<unsigned>(_threads.size()); }
    [[nodiscard]] compressor_counters* counters() const noexcept { return _counters; }

    // Compresses every part of `job` on the calling thread.
    static void run(chunk_job& job, compressor_counters* counters) noexcept;

private:
    void loop(unsigned index);

    compressor_counters* _counters;
    common::wake_event* _ready;
    std::mutex _mutex;
    std::condition_variable _work;  // a job queued, or stopping
    std::condition_variable _done;  // a job done (wait())
    std::deque<std::shared_ptr<chunk_job>> _queue;
    bool _stopping = false;
    std::vector<std::thread> _threads;
};

// The number of compression threads storage.compress_threads = 0 stands for:
// half the CPUs daqd may use, at least 1, at most 8.
unsigned default_compress_threads() noexcept;

}  // namespace daqd::storage
