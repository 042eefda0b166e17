// writer: the thread between the assembler's queue and run_file, with a real
// block_pool and spsc_queue; the test thread plays the assembler.
#include "daqd/storage/run_writer.hpp"
#include "storage_test_util.hpp"

#include <sys/resource.h>

#include <csignal>
#include <optional>
#include <thread>

using namespace storage_test;
using daqd::processing::frame;
using daqd::processing::block_pool;
using daqd::storage::run_options;
using daqd::storage::run_stats;
using daqd::storage::storage_error;
using daqd::storage::writer;

namespace {

struct pipeline {
    block_pool pool;
    daqd::common::spsc_queue<frame> queue;
    daqd::common::wake_event ready;
    writer w;

    pipeline(std::size_t buffers, std::size_t buffer_bytes, std::size_t queue_capacity)
        : pool(buffers, buffer_bytes), queue(queue_capacity), w(queue, ready) {
        w.start();
    }

    // Acquires a buffer, fills the pattern, queues the frame (as the assembler does).
    frame push(std::uint16_t unit, std::uint32_t channels, std::uint64_t frame_number, std::uint16_t missing = 0) {
        std::optional<std::uint32_t> idx;
        while (!(idx = pool.acquire())) std::this_thread::yield();
        frame f;
        f.unit_id = unit;
        f.channels = channels;
        f.missing_packets = missing;
        f.packet_count = 2;
        f.pool = &pool;  // one frame per block: its only row
        f.block = *idx;
        f.row = 0;
        f.block_rows = 1;
        f.frame_number = frame_number;
        f.timestamp_ns = 5'000'000'000ull + frame_number * 250'000ull;
        f.samples = reinterpret_cast<std::uint16_t*>(pool.data(*idx));
        REQUIRE(channels * 2u <= pool.block_bytes());
        for (std::uint32_t c = 0; c < channels; ++c) f.samples[c] = pattern(frame_number, unit, c);
        while (!queue.try_push(f)) {
            ready.notify();
            std::this_thread::yield();
        }
        ready.notify();
        return f;
    }

    // Waits until the writer has given every buffer back.
    void wait_drained() {
        for (int i = 0; i < 10'000 && pool.available() != pool.blocks(); ++i)
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        REQUIRE(pool.available() == pool.blocks());
    }
};

run_options options_for(const fs::path& dir, const std::string& name) {
    run_options o;
    o.output_dir = dir;
    o.run_name = name;
    o.chunk_bytes = 1024;
    o.flush_interval = std::chrono::milliseconds(10);
    o.config_text = "test";
    o.server_version = "test";
    return o;
}

// Records what a frame will look like in the file (the samples are copied
// before the buffer can be reused).
void expect(std::map<std::uint16_t, expected_rows>& want, const frame& f) { want[f.unit_id].add(f); }

}  // namespace

TEST_CASE("writer records queued frames into the active run and gives every buffer back", "[storage]") {
    temp_dir dir;
    pipeline p(16, 64 * 2, 8);
    std::map<std::uint16_t, expected_rows> want;

    // No run: frames are counted as unrecorded, buffers still released.
    for (std::uint64_t i = 0; i < 5; ++i) p.push(1, 64, i);
    p.wait_drained();
    CHECK(p.w.counters().frames_unrecorded.get() == 5);
    CHECK_FALSE(p.w.run_active());
    CHECK_FALSE(p.w.stop_run().has_value());

    p.w.start_run(options_for(dir.path(), "w1"));
    CHECK(p.w.run_active());
    for (std::uint64_t i = 0; i < 300; ++i) {
        expect(want, p.push(1, 64, 100 + i, i % 50 == 7 ? 1 : 0));
        if (i >= 100) expect(want, p.push(2, 32, 9000 + i));  // unit 2 appears mid-run
        if (i == 150) std::this_thread::sleep_for(std::chrono::milliseconds(60));  // let flushes happen
    }
    const auto stats = p.w.stop_run();  // drains the queue first
    REQUIRE(stats.has_value());
    CHECK_FALSE(p.w.run_active());
    p.wait_drained();
    CHECK_FALSE(stats->failed);
    CHECK(stats->error.empty());
    CHECK(stats->run_name == "w1");
    CHECK(stats->frames_written == 300 + 200);
    REQUIRE(stats->files.size() == 1);
    CHECK(stats->files[0] == dir.path() / "w1.h5");
    CHECK(stats->units.at(1).frames_written == 300);
    CHECK(stats->units.at(2).frames_written == 200);
    CHECK(stats->units.at(2).first_frame == 9100);
    CHECK(stats->flushes >= 1);
    CHECK(p.w.counters().frames_written.get() == 500);
    CHECK(p.w.counters().bytes_written.get() == stats->bytes_written);
    CHECK(p.w.counters().flushes.get() >= 1);
    CHECK(p.w.counters().flush.sum_ns.get() > 0);
    CHECK(p.w.counters().frames_unrecorded.get() == 5);
    CHECK(p.w.counters().frames_failed.get() == 0);
    {
        h5::file f = open_read(dir.path() / "w1.h5");
        CHECK(has_attr(f.get(), "stopped_at"));
        for (const auto& [unit, rows] : want) check_unit(f.get(), unit, rows);
    }
    CHECK_FALSE(p.w.stop_run().has_value());

    // The name is taken now: start_run reports it synchronously and the
    // writer stays usable.
    CHECK_THROWS_AS(p.w.start_run(options_for(dir.path(), "w1")), storage_error);
    CHECK_FALSE(p.w.run_active());
    p.w.start_run(options_for(dir.path(), "w2"));
    CHECK_THROWS_AS(p.w.start_run(options_for(dir.path(), "w3")), storage_error);  // one run at a time
    std::map<std::uint16_t, expected_rows> want2;
    for (std::uint64_t i = 0; i < 20; ++i) expect(want2, p.push(4, 16, i));
    // stop() drains and closes the active run.
    p.w.stop();
    CHECK(p.pool.available() == p.pool.blocks());
    CHECK_FALSE(p.w.run_active());
    h5::file f = open_read(dir.path() / "w2.h5");
    CHECK(has_attr(f.get(), "stopped_at"));
    check_unit(f.get(), 4, want2[4]);
    CHECK_THROWS_AS(p.w.start_run(options_for(dir.path(), "w4")), storage_error);  // thread gone
}

TEST_CASE("writer flushes at flush_interval so the live file can be read meanwhile", "[storage]") {
    temp_dir dir;
    pipeline p(8, 256 * 2, 4);
    auto opt = options_for(dir.path(), "live");
    opt.chunk_bytes = 1 << 20;  // one big partial chunk: only flushes make rows visible
    opt.flush_interval = std::chrono::milliseconds(20);
    p.w.start_run(opt);
    for (std::uint64_t i = 0; i < 123; ++i) p.push(3, 256, i);
    p.wait_drained();
    const auto flushes = p.w.counters().flushes.get();
    for (int i = 0; i < 500 && p.w.counters().flushes.get() < flushes + 2; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    REQUIRE(p.w.counters().flushes.get() >= flushes + 2);
    auto r = run_command(shell_quote(DAQ_INSPECT) + " --verify --json " + shell_quote((dir.path() / "live.h5").string()));
    INFO(r.output);
    CHECK(r.exit_code == 0);
    CHECK(r.output.find("\"total_frames\": 123") != std::string::npos);
    CHECK(r.output.find("\"stopped_at\": null") != std::string::npos);
    const auto stats = p.w.stop_run();
    REQUIRE(stats.has_value());
    CHECK(stats->frames_written == 123);
}

namespace {
// Limits the size of files this process may write (a full disk, without
// needing one); restores the limit and SIGXFSZ on scope exit.
struct file_size_limit {
    rlimit old{};
    void (*old_handler)(int) = nullptr;
    explicit file_size_limit(rlim_t bytes) {
        getrlimit(RLIMIT_FSIZE, &old);
        old_handler = std::signal(SIGXFSZ, SIG_IGN);  // write() fails with EFBIG instead
        rlimit lim = old;
        lim.rlim_cur = bytes;
        setrlimit(RLIMIT_FSIZE, &lim);
    }
    ~file_size_limit() {
        setrlimit(RLIMIT_FSIZE, &old);
        std::signal(SIGXFSZ, old_handler);
    }
};
}  // namespace

TEST_CASE("writer: a write error fails the run, not the thread", "[storage]") {
    temp_dir dir;
    pipeline p(32, 4096 * 2, 16);
    auto opt = options_for(dir.path(), "full");
    opt.chunk_bytes = 64 * 1024;  // 8 rows of 4096 channels per chunk
    p.w.start_run(opt);
    std::optional<run_stats> stats;
    {
        file_size_limit limit(512 * 1024);
        for (std::uint64_t i = 0; i < 400; ++i) p.push(1, 4096, i);  // 3.2 MB
        stats = p.w.stop_run();
        p.wait_drained();
    }
    REQUIRE(stats.has_value());
    CHECK(stats->failed);
    INFO(stats->error);
    CHECK(stats->error.find((dir.path() / "full.h5").string()) != std::string::npos);
    CHECK(stats->error.find(" failed on ") != std::string::npos);
    CHECK(p.w.counters().frames_failed.get() > 0);
    CHECK(p.w.counters().frames_written.get() + p.w.counters().frames_failed.get() == 400);
    CHECK_FALSE(p.w.run_active());

    // The thread is alive and the next run works.
    p.w.start_run(options_for(dir.path(), "after"));
    std::map<std::uint16_t, expected_rows> want;
    for (std::uint64_t i = 0; i < 10; ++i) expect(want, p.push(2, 100, i));
    const auto after = p.w.stop_run();
    REQUIRE(after.has_value());
    CHECK_FALSE(after->failed);
    CHECK(after->frames_written == 10);
    h5::file f = open_read(dir.path() / "after.h5");
    check_unit(f.get(), 2, want[2]);
}

TEST_CASE("writer: start_run before start() is an error, not a hang", "[storage]") {
    temp_dir dir;
    daqd::common::spsc_queue<frame> q(2);
    daqd::common::wake_event ev;
    writer w(q, ev);
    CHECK_THROWS_AS(w.start_run(options_for(dir.path(), "x")), storage_error);
    CHECK_FALSE(w.stop_run().has_value());
    w.stop();
}

namespace {

// The test thread plays the assembler with blocks of several rows: a unit's
// frames take the rows of its block in order (block_pool.hpp).
struct block_filler {
    block_pool& pool;
    std::uint32_t rows;
    std::optional<std::uint32_t> block;
    std::uint32_t next_row = 0;
    std::uint64_t taken = 0;

    // A frame in the next row (or in row `row` of the current block: a
    // reordered frame that opened earlier).
    frame make(std::uint16_t unit, std::uint32_t channels, std::uint64_t number, std::uint32_t row) {
        frame f;
        f.unit_id = unit;
        f.channels = channels;
        f.packet_count = 1;
        f.frame_number = number;
        f.timestamp_ns = 5'000'000'000ull + number * 250'000ull;
        f.pool = &pool;
        f.block = *block;
        f.row = row;
        f.block_rows = rows;
        f.taken = taken - next_row + row;
        f.samples = reinterpret_cast<std::uint16_t*>(pool.data(*block)) + std::size_t{row} * channels;
        for (std::uint32_t c = 0; c < channels; ++c) f.samples[c] = pattern(number, unit, c);
        return f;
    }
    // Takes the next row (a new block when needed); returns its index.
    std::uint32_t take() {
        if (!block) {
            while (!(block = pool.acquire())) std::this_thread::yield();
            next_row = 0;
        }
        pool.ref(*block);
        ++taken;
        return next_row++;
    }
    // The block is full (or given up): the assembler's reference goes.
    void seal() {
        if (block) pool.drop(*block);
        block.reset();
    }
};

void queue_frame(pipeline& p, const frame& f) {
    while (!p.queue.try_push(f)) {
        p.ready.notify();
        std::this_thread::yield();
    }
    p.ready.notify();
}

}  // namespace

TEST_CASE("writer: a full block is written as the chunk, without a copy, a reordered frame makes its chunk compacted, "
          "counted, and every block comes back",
          "[storage][blocks]") {
    temp_dir dir;
    // 64 channels = 128 bytes a frame; chunks of 1024 bytes: 8 rows, and 8-row blocks.
    pipeline p(8, 1024, 256);
    block_filler b{p.pool, 8};
    std::map<std::uint16_t, expected_rows> want;
    p.w.start_run(options_for(dir.path(), "direct"));
    // 5 chunks' worth in order: 5 blocks handed to HDF5 as they are.
    std::uint64_t n = 0;
    for (int chunk = 0; chunk < 5; ++chunk) {
        for (int r = 0; r < 8; ++r) {
            const frame f = b.make(1, 64, n++, b.take());
            expect(want, f);
            queue_frame(p, f);
        }
        b.seal();
    }
    // One more chunk with frames 41 and 42 opened the other way round
    // (rows 2 and 1): emitted in frame order, so this chunk is gathered.
    std::vector<frame> chunk;
    for (int r = 0; r < 8; ++r) chunk.push_back(b.make(1, 64, n + r, b.take()));
    b.seal();
    std::swap(chunk[1].row, chunk[2].row);
    std::swap(chunk[1].samples, chunk[2].samples);
    std::swap(chunk[1].taken, chunk[2].taken);
    for (std::uint32_t c = 0; c < 64; ++c) {
        chunk[1].samples[c] = pattern(chunk[1].frame_number, 1, c);
        chunk[2].samples[c] = pattern(chunk[2].frame_number, 1, c);
    }
    for (const auto& f : chunk) {
        expect(want, f);
        queue_frame(p, f);
    }
    n += 8;
    // And 3 rows of a seventh chunk: written partially at the stop, from a copy.
    for (int r = 0; r < 3; ++r) {
        const frame f = b.make(1, 64, n++, b.take());
        expect(want, f);
        queue_frame(p, f);
    }
    b.seal();
    const auto stats = p.w.stop_run();
    REQUIRE(stats.has_value());
    CHECK_FALSE(stats->failed);
    CHECK(stats->frames_written == n);
    CHECK(stats->chunks_direct == 5);
    CHECK(stats->chunks_compacted == 1);
    CHECK(p.w.counters().chunks_direct.get() == 5);
    CHECK(p.w.counters().chunks_compacted.get() == 1);
    // Copied: the gathered chunk's 8 rows, and the last partial chunk's 3 rows
    // (perhaps more than once: once per flush while it was partial).
    CHECK(stats->rows_copied >= 8 + 3);
    p.wait_drained();  // every block back: frames released, the run file's references dropped
    h5::file f = open_read(dir.path() / "direct.h5");
    check_unit(f.get(), 1, want[1]);
}

TEST_CASE("writer with compression: full blocks are compressed from the block on the pool, every block comes back, "
          "the file holds every frame",
          "[storage][blocks][compression]") {
    temp_dir dir;
    pipeline p(8, 1024, 256);
    block_filler b{p.pool, 8};
    std::map<std::uint16_t, expected_rows> want;
    auto o = options_for(dir.path(), "packed");
    o.compression = daqd::storage::compression_kind::bslz4;
    o.compress_threads = 2;
    p.w.start_run(o);
    std::uint64_t n = 0;
    for (int chunk = 0; chunk < 40; ++chunk) {
        for (int r = 0; r < 8; ++r) {
            const frame f = b.make(1, 64, n++, b.take());
            expect(want, f);
            queue_frame(p, f);
        }
        b.seal();
    }
    for (int r = 0; r < 5; ++r) {  // a partial chunk at the stop
        const frame f = b.make(1, 64, n++, b.take());
        expect(want, f);
        queue_frame(p, f);
    }
    b.seal();
    const auto stats = p.w.stop_run();
    REQUIRE(stats.has_value());
    CHECK_FALSE(stats->failed);
    CHECK(stats->frames_written == n);
    CHECK(stats->chunks_direct == 40);
    const auto& k = p.w.counters().compress;
    CHECK(k.in_flight.get() == 0);
    CHECK(k.bytes_in.get() > k.bytes_out.get());
    CHECK(k.chunks.get() >= 41 * 4);
    p.wait_drained();  // the pool's chunks held their blocks until compressed
    h5::file f = open_read(dir.path() / "packed.h5");
    check_unit(f.get(), 1, want[1]);
    CHECK(read_string_attr(f.get(), "compression") == "bslz4");
}
