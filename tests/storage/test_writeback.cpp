// Writeback pacing (storage.writeback = "paced", storage/src/writeback.hpp):
// the files a paced run writes hold every row, and the pacing is seen to
// have written back and dropped what it promises, in run_file and in the
// writer's metrics.
#include "daqd/storage/run_writer.hpp"
#include "storage_test_util.hpp"
#include "wait_until.hpp"

#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/vfs.h>
#include <fcntl.h>
#include <unistd.h>

#include <optional>
#include <thread>

using namespace storage_test;
using daqd::storage::run_file;
using daqd::storage::run_options;
using daqd::storage::writeback_counters;
using daqd::storage::writeback_mode;

namespace {

constexpr std::uint32_t channels = 1024;  // 2 KiB frames
constexpr std::uint16_t units = 4;
constexpr std::uint64_t step = 64 * 1024;
constexpr std::uint64_t window = 256 * 1024;

run_options paced_options(const fs::path& dir, const std::string& name) {
    run_options o;
    o.output_dir = dir;
    o.run_name = name;
    o.chunk_bytes = 256 * 1024;  // 128 rows of 2 KiB per chunk
    o.config_text = "test";
    o.server_version = "test";
    o.writeback.mode = writeback_mode::paced;
    o.writeback.step_bytes = step;
    o.writeback.window_bytes = window;
    return o;
}

// Appends `frames` frames to every unit (frame numbers first..), flushing
// every 256 rounds, and records them in `want`.
void append_rounds(run_file& rf, std::map<std::uint16_t, expected_rows>& want, std::uint64_t first,
                   std::uint64_t frames) {
    for (std::uint64_t i = first; i < first + frames; ++i) {
        for (std::uint16_t u = 1; u <= units; ++u) {
            owned_frame of(u, channels, i);
            rf.append(of.f);
            want[u].add(of.f);
        }
        if (i % 256 == 255) rf.flush();
    }
}

std::uint64_t total_size(const std::vector<fs::path>& files) {
    std::uint64_t n = 0;
    for (const auto& p : files) n += fs::file_size(p);
    return n;
}

// Share of the file's pages in the page cache (mincore), or -1 where the
// file system keeps every page in memory (tmpfs: nothing to drop).
double resident_share(const fs::path& p) {
    struct statfs sfs {};
    REQUIRE(::statfs(p.c_str(), &sfs) == 0);
    if (sfs.f_type == TMPFS_MAGIC || sfs.f_type == RAMFS_MAGIC) return -1;
    const int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
    REQUIRE(fd >= 0);
    const auto size = static_cast<std::size_t>(fs::file_size(p));
    void* m = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
    ::close(fd);
    REQUIRE(m != MAP_FAILED);
    const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    std::vector<unsigned char> vec((size + page - 1) / page);
    REQUIRE(::mincore(m, size, vec.data()) == 0);
    ::munmap(m, size);
    std::size_t resident = 0;
    for (auto v : vec) resident += v & 1u;
    return static_cast<double>(resident) / static_cast<double>(vec.size());
}

std::string py_rows_script(const temp_dir& dir) {
    // argv: path, rows per unit, first frame number. Plain (non-SWMR) open:
    // the file was closed cleanly. Checks shapes, frame numbers and samples.
    return write_text(dir.path() / "check_rows.py", R"PY(
import sys, h5py, numpy as np
path, rows, first = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with h5py.File(path, 'r') as f:
    units = sorted(int(k[1:]) for k in f['units'])
    assert units == [1, 2, 3, 4], units
    for u in units:
        g = f['units/u%d' % u]
        raw, fn = g['raw'], g['frame_number']
        assert raw.shape == (rows, 1024) and fn.shape == (rows,), (u, raw.shape, fn.shape)
        fnv = fn[:].astype(np.uint64)
        assert (fnv == np.arange(first, first + rows, dtype=np.uint64)).all(), 'frame numbers differ'
        c = np.arange(raw.shape[1], dtype=np.uint64)
        expect = ((fnv[:, None] * 7 + u * 13 + c[None, :]) % 65536).astype(np.uint16)
        assert (raw[:] == expect).all(), 'samples differ'
print('OK')
)PY")
        .string();
}

}  // namespace

TEST_CASE("a paced run writes every row, and the pacing writes back and drops what it passed", "[storage][writeback]") {
    temp_dir dir;
    writeback_counters counters;
    std::map<std::uint16_t, expected_rows> want;
    constexpr std::uint64_t frames = 1536;  // per unit: 4 x 1536 x 2 KiB = 12 MiB of samples
    const fs::path path = dir.path() / "paced.h5";
    {
        run_file rf(paced_options(dir.path(), "paced"), &counters);
        append_rounds(rf, want, 0, frames);
        rf.flush();
        // While the run is open: everything more than a window (plus the
        // step the writer hands over at a time, and the piece being waited
        // for) behind the file's end has been written back and dropped.
        const std::uint64_t size = fs::file_size(path);
        REQUIRE(size > 12ull << 20);
        const std::uint64_t promised = size - window - 2 * step;
        CHECK(daqd_test::wait_until([&] { return counters.bytes.get() >= promised; }, std::chrono::seconds(30),
                                    std::chrono::milliseconds(1)));
        INFO("paced " << counters.bytes.get() << " of " << size << " bytes");
        CHECK(counters.bytes.get() <= size);
        CHECK(counters.wait_ns.get() > 0);
        // A closed file is finished by the helper: every byte of it.
        rf.close();
        REQUIRE_FALSE(rf.stats().failed);
        const std::uint64_t final_size = fs::file_size(path);
        CHECK(daqd_test::wait_until([&] { return counters.bytes.get() == final_size; }, std::chrono::seconds(30),
                                    std::chrono::milliseconds(1)));
        CHECK(counters.errors.get() == 0);
    }
    // Dropped from the page cache: only pages rewritten after they were
    // dropped (HDF5 metadata: a few dozen KiB here) are left. Not on tmpfs,
    // which has no disk to write back to.
    if (const double share = resident_share(path); share >= 0) CHECK(share < 0.05);
    else WARN("tmpfs: page cache residency not checked");

    h5::file f = open_read(path);
    for (std::uint16_t u = 1; u <= units; ++u) check_unit(f.get(), u, want[u]);
    f.reset();
    if (!python_has_h5py()) {
        WARN("h5py not available: the h5py check is skipped");
        return;
    }
    const auto r = run_command(std::string(python) + " " + py_rows_script(dir) + " " + shell_quote(path.string()) + " " +
                               std::to_string(frames) + " 0");
    INFO(r.output);
    CHECK(r.exit_code == 0);
}

TEST_CASE("a paced run rotating over several files finishes every file it closed", "[storage][writeback]") {
    temp_dir dir;
    writeback_counters counters;
    std::map<std::uint16_t, expected_rows> want;
    auto opt = paced_options(dir.path(), "rotating");
    opt.rotate_bytes = 3ull << 20;
    std::vector<fs::path> files;
    {
        run_file rf(opt, &counters);
        append_rounds(rf, want, 0, 1024);  // 8 MiB of samples: 3 files
        rf.close();
        REQUIRE_FALSE(rf.stats().failed);
        files = rf.stats().files;
        REQUIRE(files.size() == 3);
        const std::uint64_t all = total_size(files);
        CHECK(daqd_test::wait_until([&] { return counters.bytes.get() == all; }, std::chrono::seconds(30),
                                    std::chrono::milliseconds(1)));
        CHECK(counters.errors.get() == 0);
    }
    // Every row once, in order, across the files.
    std::map<std::uint16_t, std::uint64_t> next;
    for (const auto& p : files) {
        h5::file f = open_read(p);
        for (std::uint16_t u = 1; u <= units; ++u) {
            const std::string name = "/units/u" + std::to_string(u) + "/frame_number";
            h5::dataset d(H5Dopen2(f.get(), name.c_str(), H5P_DEFAULT));
            REQUIRE(d);
            for (const auto fn : read_all<std::uint64_t>(d.get(), H5T_NATIVE_UINT64)) CHECK(fn == next[u]++);
        }
    }
    for (std::uint16_t u = 1; u <= units; ++u) CHECK(next[u] == 1024);
}

TEST_CASE("storage.writeback = kernel: no pacing, nothing counted", "[storage][writeback]") {
    temp_dir dir;
    writeback_counters counters;
    std::map<std::uint16_t, expected_rows> want;
    auto opt = paced_options(dir.path(), "kernel");
    opt.writeback.mode = writeback_mode::kernel;
    {
        run_file rf(opt, &counters);
        append_rounds(rf, want, 0, 512);
        rf.close();
        REQUIRE_FALSE(rf.stats().failed);
    }
    CHECK(counters.bytes.get() == 0);
    CHECK(counters.wait_ns.get() == 0);
    CHECK(counters.errors.get() == 0);
    h5::file f = open_read(dir.path() / "kernel.h5");
    for (std::uint16_t u = 1; u <= units; ++u) check_unit(f.get(), u, want[u]);
}

TEST_CASE("the writer reports the pacing in its metrics, with and without a thread", "[storage][writeback]") {
    const bool threaded = GENERATE(true, false);
    INFO((threaded ? "writer thread" : "pumped writer"));
    temp_dir dir;
    daqd::processing::block_pool pool(256, channels * 2);
    daqd::common::spsc_queue<daqd::processing::frame> queue(256);
    daqd::common::wake_event ready;
    daqd::storage::writer w(queue, ready);
    if (threaded)
        w.start();
    else
        w.worker().start_pumped();
    auto metric = [&](std::string_view name) {
        daqd::telemetry::snapshot s;
        w.report(s);
        REQUIRE(s.find(name) != nullptr);
        return s.sum(name);
    };
    CHECK(metric("daq_storage_writeback_bytes_total") == 0);
    CHECK(metric("daq_storage_writeback_wait_seconds_total") == 0);
    CHECK(metric("daq_storage_writeback_errors_total") == 0);
    w.start_run(paced_options(dir.path(), "metrics"));
    for (std::uint64_t i = 0; i < 1024; ++i) {
        for (std::uint16_t u = 1; u <= units; ++u) {
            std::optional<std::uint32_t> idx;
            while (!(idx = pool.acquire())) {
                if (!threaded) w.worker().pump();
                std::this_thread::yield();
            }
            daqd::processing::frame f;
            f.unit_id = u;
            f.channels = channels;
            f.packet_count = 1;
            f.pool = &pool;  // one frame per block
            f.block = *idx;
            f.block_rows = 1;
            f.frame_number = i;
            f.samples = reinterpret_cast<std::uint16_t*>(pool.data(*idx));
            for (std::uint32_t c = 0; c < channels; ++c) f.samples[c] = pattern(i, u, c);
            REQUIRE(queue.try_push(f));  // never full: the pool has as many buffers as the queue slots
            ready.notify();
        }
        if (!threaded)
            while (w.worker().pump()) {
            }
    }
    const auto stats = w.stop_run();  // writes what is queued, closes the run
    REQUIRE(stats);
    REQUIRE_FALSE(stats->failed);
    CHECK(stats->frames_written == 1024 * units);
    const double size = static_cast<double>(fs::file_size(dir.path() / "metrics.h5"));
    // The run is closed: the pacing finished its file (on its helper thread,
    // or right away on a pumped writer).
    CHECK(daqd_test::wait_until([&] { return metric("daq_storage_writeback_bytes_total") == size; },
                                std::chrono::seconds(30), std::chrono::milliseconds(1)));
    CHECK(metric("daq_storage_writeback_wait_seconds_total") > 0);
    CHECK(metric("daq_storage_writeback_errors_total") == 0);
    w.stop();
}
