// Crash recovery (recovery.hpp, journal.hpp): files built in the states a
// crash leaves them in, mended, and every remaining value checked.
//
// Each file is written by a forked child that creates it the way run_file
// does (libver latest, chunked datasets, SWMR write), writes the chunks and
// extents the case asks for, flushes, and _exit()s without closing: the
// superblock keeps its "open for write" flags, exactly as after kill -9.
#include "storage_test_util.hpp"

#include "daqd/storage/journal.hpp"
#include "daqd/storage/recovery.hpp"

#include <catch2/catch.hpp>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <iterator>
#include <map>
#include <sstream>

using namespace storage_test;
namespace storage = daqd::storage;

namespace {

constexpr std::uint16_t unit = 3;
constexpr std::uint32_t channels = 3;

// The values of row `i` when its frame number is `fn` (fn 0: padding, all zero).
std::uint64_t ts_of(std::uint64_t fn) { return fn == 0 ? 0 : 1'000'000 + fn * 1000; }
std::uint16_t missing_of(std::uint64_t fn) { return static_cast<std::uint16_t>(fn % 3); }
std::uint16_t raw_of(std::uint64_t fn, std::uint32_t c) { return fn == 0 ? 0 : pattern(fn, unit, c); }

// What the crash left: rows per chunk, the frame numbers of the rows as the
// writer's buffers held them (0 = zero padding), and per dataset its extent
// and the chunks that reached the file.
struct crash_state {
    hsize_t chunk_rows = 4;
    std::vector<std::uint64_t> rows;  // frame numbers, padding included
    struct ds_state {
        hsize_t extent = 0;
        std::vector<hsize_t> chunks;  // chunk indices written
    };
    std::map<std::string, ds_state> ds;  // raw, frame_number, timestamp_ns, missing_packets
};

std::vector<std::uint64_t> iota(std::uint64_t first, std::size_t n) {
    std::vector<std::uint64_t> v(n);
    for (std::size_t i = 0; i < n; ++i) v[i] = first + i;
    return v;
}

crash_state::ds_state all(hsize_t extent, std::vector<hsize_t> chunks) { return {extent, std::move(chunks)}; }

// In a child process: builds `path` as `s` says and dies without closing it
// (or, `closed`, closes it: a close that went through after a write error).
void write_crashed_file(const fs::path& path, const crash_state& s, bool closed = false) {
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        auto die = [](int code) { ::_exit(code); };
        H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
        const hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
        H5Pset_libver_bounds(fapl, H5F_LIBVER_LATEST, H5F_LIBVER_LATEST);
        const hid_t f = H5Fcreate(path.c_str(), H5F_ACC_EXCL, H5P_DEFAULT, fapl);
        if (f < 0) die(10);
        const hid_t units = H5Gcreate2(f, "units", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        const hid_t g = H5Gcreate2(units, ("u" + std::to_string(unit)).c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (g < 0) die(11);
        for (const auto& [name, v] : std::map<std::string, std::int32_t>{{"unit_id", unit}, {"channels", channels}}) {
            const hid_t as = H5Screate(H5S_SCALAR);
            const hid_t at = H5Acreate2(g, name.c_str(), H5T_STD_I32LE, as, H5P_DEFAULT, H5P_DEFAULT);
            if (at < 0 || H5Awrite(at, H5T_NATIVE_INT32, &v) < 0) die(18);
            H5Aclose(at);
            H5Sclose(as);
        }
        const std::map<std::string, hid_t> types{{"raw", H5T_STD_U16LE},
                                                 {"frame_number", H5T_STD_U64LE},
                                                 {"timestamp_ns", H5T_STD_U64LE},
                                                 {"missing_packets", H5T_STD_U16LE}};
        for (const auto& [name, type] : types) {
            const int rank = name == "raw" ? 2 : 1;
            const hsize_t dims[2] = {0, channels};
            const hsize_t maxdims[2] = {H5S_UNLIMITED, channels};
            const hsize_t chunk[2] = {s.chunk_rows, channels};
            const hid_t sp = H5Screate_simple(rank, dims, maxdims);
            const hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
            H5Pset_chunk(dcpl, rank, chunk);
            const hid_t d = H5Dcreate2(g, name.c_str(), type, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
            if (d < 0) die(12);
            H5Dclose(d);
            H5Pclose(dcpl);
            H5Sclose(sp);
        }
        H5Gclose(g);
        H5Gclose(units);
        if (H5Fstart_swmr_write(f) < 0) die(13);
        const std::string gp = "/units/u" + std::to_string(unit) + "/";
        for (const auto& [name, st] : s.ds) {
            const hid_t d = H5Dopen2(f, (gp + name).c_str(), H5P_DEFAULT);
            if (d < 0) die(14);
            const hsize_t dims[2] = {st.extent, channels};
            if (H5Dset_extent(d, dims) < 0) die(15);
            for (const hsize_t k : st.chunks) {
                std::vector<std::uint64_t> u64(s.chunk_rows);
                std::vector<std::uint16_t> u16(s.chunk_rows * (name == "raw" ? channels : 1));
                for (hsize_t r = 0; r < s.chunk_rows; ++r) {
                    const hsize_t i = k * s.chunk_rows + r;
                    const std::uint64_t fn = i < s.rows.size() ? s.rows[i] : 0;
                    if (name == "frame_number") u64[r] = fn;
                    if (name == "timestamp_ns") u64[r] = ts_of(fn);
                    if (name == "missing_packets") u16[r] = missing_of(fn);
                    if (name == "raw")
                        for (std::uint32_t c = 0; c < channels; ++c) u16[r * channels + c] = raw_of(fn, c);
                }
                const hsize_t offset[2] = {k * s.chunk_rows, 0};
                const bool wide = name == "frame_number" || name == "timestamp_ns";
                const void* buf = wide ? static_cast<const void*>(u64.data()) : static_cast<const void*>(u16.data());
                const std::size_t bytes = wide ? u64.size() * 8 : u16.size() * 2;
                if (H5Dwrite_chunk(d, H5P_DEFAULT, 0, offset, bytes, buf) < 0) die(16);
            }
            H5Dclose(d);
        }
        if (H5Fflush(f, H5F_SCOPE_GLOBAL) < 0) die(17);
        if (closed && H5Fclose(f) < 0) die(19);
        die(0);  // the crash: the file is never closed (unless `closed`)
    }
    int st = 0;
    REQUIRE(::waitpid(pid, &st, 0) == pid);
    REQUIRE(WIFEXITED(st));
    REQUIRE(WEXITSTATUS(st) == 0);
}

// 10 frames in chunks of 4: frame_number, timestamp_ns, missing_packets
// reached chunk 2, raw only chunk 1 (a crash, or a disk-full write, came
// between the writes).
crash_state raw_lacks_last_chunk() {
    crash_state s;
    s.rows = iota(100, 10);
    s.ds["frame_number"] = all(10, {0, 1, 2});
    s.ds["timestamp_ns"] = all(10, {0, 1, 2});
    s.ds["missing_packets"] = all(10, {0, 1, 2});
    s.ds["raw"] = all(10, {0, 1});
    return s;
}

// The rows recovery must keep: the first `n` of s.rows, every column.
expected_rows first_rows(const crash_state& s, std::size_t n) {
    expected_rows e;
    e.channels = channels;
    for (std::size_t i = 0; i < n; ++i) {
        const auto fn = s.rows.at(i);
        e.frame_number.push_back(fn);
        e.timestamp_ns.push_back(ts_of(fn));
        e.missing_packets.push_back(missing_of(fn));
        for (std::uint32_t c = 0; c < channels; ++c) e.raw.push_back(raw_of(fn, c));
    }
    return e;
}

// A plain (non-SWMR) open fails while the file is marked open for write.
bool opens_plainly(const fs::path& p) {
    h5::init_library();
    const hid_t id = H5Fopen(p.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    if (id < 0) {
        H5Eclear2(H5E_DEFAULT);
        return false;
    }
    H5Fclose(id);
    return true;
}

std::uint64_t recovered_frames_attr(hid_t f) {
    h5::attribute a(H5Aopen(f, "recovered_frames", H5P_DEFAULT));
    REQUIRE(a);
    std::uint64_t v = 0;
    REQUIRE(H5Aread(a.get(), H5T_NATIVE_UINT64, &v) >= 0);
    return v;
}

// Builds, recovers, and checks: `keep` rows stay, each with its values.
void check_recovery(const crash_state& s, std::size_t keep, std::uint64_t trimmed) {
    temp_dir dir;
    const fs::path file = dir.path() / "crash.h5";
    write_crashed_file(file, s);
    REQUIRE_FALSE(opens_plainly(file));
    const auto r = storage::recover_run_file(file);
    INFO(r.error);
    REQUIRE(r.error.empty());
    CHECK(r.was_open);
    CHECK(r.recovered);
    CHECK(r.frames_kept == keep);
    CHECK(r.rows_trimmed == trimmed);
    REQUIRE(opens_plainly(file));
    auto f = open_read(file);
    check_unit(f.get(), unit, first_rows(s, keep));
    CHECK(has_attr(f.get(), "recovered_at"));
    CHECK(recovered_frames_attr(f.get()) == keep);
}

std::string bytes_of(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace

TEST_CASE("recovery: raw's last chunk never written while frame_number's is: the rows of that chunk go",
          "[storage][recovery]") {
    const crash_state s = raw_lacks_last_chunk();
    check_recovery(s, 8, 2);
}

TEST_CASE("recovery: a missing chunk in the middle of the extent cuts there", "[storage][recovery]") {
    // timestamp_ns lacks chunk 1 of 3 (its extent was set, the write lost).
    crash_state s;
    s.rows = iota(7, 12);
    s.ds["frame_number"] = all(12, {0, 1, 2});
    s.ds["timestamp_ns"] = all(12, {0, 2});
    s.ds["missing_packets"] = all(12, {0, 1, 2});
    s.ds["raw"] = all(12, {0, 1, 2});
    check_recovery(s, 4, 8);
}

TEST_CASE("recovery: trailing zero rows (a chunk padded before its rows came) are trimmed", "[storage][recovery]") {
    // 6 frames; every dataset's extent says 8: rows 6 and 7 are padding zeros.
    crash_state s;
    s.rows = iota(100, 6);
    for (const char* d : {"raw", "frame_number", "timestamp_ns", "missing_packets"}) s.ds[d] = all(8, {0, 1});
    check_recovery(s, 6, 2);
}

TEST_CASE("recovery: frame numbers going backwards end the run's rows there", "[storage][recovery]") {
    // Stale data after row 4: 100..104 then 50, 51, 52.
    crash_state s;
    s.rows = {100, 101, 102, 103, 104, 50, 51, 52};
    for (const char* d : {"raw", "frame_number", "timestamp_ns", "missing_packets"}) s.ds[d] = all(8, {0, 1});
    check_recovery(s, 5, 3);
}

TEST_CASE("recovery: a chunk partly flushed, extents caught mid-update", "[storage][recovery]") {
    // The last flush wrote chunk 1 with 2 of its 4 rows (the rest zero);
    // then the writer began the next update: raw's extent went to 7, the
    // others' to 8. Kept: the 6 rows of the flush.
    crash_state s;
    s.rows = iota(1000, 6);
    s.ds["raw"] = all(7, {0, 1});
    s.ds["frame_number"] = all(8, {0, 1});
    s.ds["timestamp_ns"] = all(8, {0, 1});
    s.ds["missing_packets"] = all(8, {0, 1});
    check_recovery(s, 6, 2);
}

TEST_CASE("recovery: a missing raw chunk and zero padding together: both rules apply", "[storage][recovery]") {
    // frame_number holds 6 frames then padding in chunk 1, and a chunk 2;
    // raw lacks chunk 2. The chunk rule keeps 8 rows, the ascending rule 6.
    crash_state s;
    s.rows = iota(500, 6);
    s.rows.resize(8, 0);
    for (std::uint64_t fn : {900, 901, 902, 903}) s.rows.push_back(fn);
    s.ds["frame_number"] = all(12, {0, 1, 2});
    s.ds["timestamp_ns"] = all(12, {0, 1, 2});
    s.ds["missing_packets"] = all(12, {0, 1, 2});
    s.ds["raw"] = all(12, {0, 1});
    check_recovery(s, 6, 6);
}

TEST_CASE("recovery: a file closed with a chunk raw lacks (disk full, the close went through) is mended too",
          "[storage][recovery]") {
    temp_dir dir;
    const fs::path file = dir.path() / "closed-short.h5";
    const crash_state s = raw_lacks_last_chunk();
    write_crashed_file(file, s, true);
    REQUIRE(opens_plainly(file));
    storage::journal::add(dir.path(), file);  // daqd created it and did not finish it
    const auto results = storage::recover_run_files(dir.path());
    REQUIRE(results.size() == 1);
    const auto& r = results[0];
    INFO(r.error);
    REQUIRE(r.error.empty());
    CHECK_FALSE(r.was_open);
    CHECK(r.closed_inconsistent);
    CHECK(r.recovered);
    CHECK(r.frames_kept == 8);
    CHECK(r.rows_trimmed == 2);
    auto f = open_read(file);
    check_unit(f.get(), unit, first_rows(s, 8));
    CHECK(recovered_frames_attr(f.get()) == 8);
    CHECK(storage::journal::list(dir.path()).empty());
    f.reset();
    // Whole now: a second pass leaves it as it is.
    const auto before = bytes_of(file);
    const auto again = storage::recover_run_file(file);
    CHECK(again.error.empty());
    CHECK_FALSE(again.recovered);
    CHECK(bytes_of(file) == before);
}

TEST_CASE("recovery: a file closed properly is left as it is", "[storage][recovery]") {
    temp_dir dir;
    const fs::path file = dir.path() / "closed.h5";
    {
        h5::init_library();
        h5::file f(H5Fcreate(file.c_str(), H5F_ACC_EXCL, H5P_DEFAULT, H5P_DEFAULT));
        REQUIRE(f);
    }
    const auto before = bytes_of(file);
    const auto r = storage::recover_run_file(file);
    CHECK(r.error.empty());
    CHECK_FALSE(r.was_open);
    CHECK_FALSE(r.recovered);
    CHECK(bytes_of(file) == before);
}

TEST_CASE("recovery at start mends only the files of daqd's journal", "[storage][recovery]") {
    temp_dir dir;
    temp_dir elsewhere;
    crash_state s;
    s.rows = iota(1, 8);
    for (const char* d : {"raw", "frame_number", "timestamp_ns", "missing_packets"}) s.ds[d] = all(8, {0, 1});

    const fs::path ours = dir.path() / "ours.h5";         // daqd's run, crashed: in the journal
    const fs::path foreign = dir.path() / "foreign.h5";   // another program's file, left open: not in the journal
    const fs::path target = elsewhere.path() / "t.h5";    // reached through a symlink named in the journal
    const fs::path link = dir.path() / "link.h5";
    const fs::path busy = dir.path() / "busy.h5";         // in the journal, but another process has it open
    for (const auto& p : {ours, foreign, target, busy}) write_crashed_file(p, s);
    storage::journal::add(dir.path(), ours);
    storage::journal::add(dir.path(), busy);
    // link.h5 was daqd's file once (an entry for it); a symlink took its name since.
    std::ofstream(link) << "x";
    storage::journal::add(dir.path(), link);
    fs::remove(link);
    std::error_code ec;
    fs::create_symlink(target, link, ec);
    REQUIRE_FALSE(ec);

    // Another live process holds busy.h5 open.
    const pid_t holder = ::fork();
    REQUIRE(holder >= 0);
    if (holder == 0) {
        const int fd = ::open(busy.c_str(), O_RDONLY);
        (void)fd;
        ::pause();
        ::_exit(0);
    }
    // Wait until it has the file open (its /proc/<pid>/fd shows it).
    bool open_seen = false;
    for (int i = 0; i < 200 && !open_seen; ++i) {
        for (const auto& e : fs::directory_iterator("/proc/" + std::to_string(holder) + "/fd", ec))
            if (fs::equivalent(e.path(), busy, ec)) open_seen = true;
        if (!open_seen) ::usleep(10'000);
    }
    REQUIRE(open_seen);

    const auto foreign_before = bytes_of(foreign);
    const auto target_before = bytes_of(target);
    const auto busy_before = bytes_of(busy);
    const auto results = storage::recover_run_files(dir.path());
    ::kill(holder, SIGKILL);
    ::waitpid(holder, nullptr, 0);

    std::map<std::string, storage::recovery_result> by_name;
    for (const auto& r : results) by_name[r.file.filename().string()] = r;
    REQUIRE(by_name.count("ours.h5") == 1);
    CHECK(by_name["ours.h5"].recovered);
    CHECK(opens_plainly(ours));
    CHECK(by_name.count("foreign.h5") == 0);
    CHECK(bytes_of(foreign) == foreign_before);
    REQUIRE(by_name.count("link.h5") == 1);
    CHECK_FALSE(by_name["link.h5"].recovered);
    CHECK(bytes_of(target) == target_before);
    REQUIRE(by_name.count("busy.h5") == 1);
    CHECK_FALSE(by_name["busy.h5"].recovered);
    CHECK(by_name["busy.h5"].error.find("open in another process") != std::string::npos);
    CHECK(bytes_of(busy) == busy_before);

    // The journal: ours cleared (mended), busy kept for the next start, link cleared (never valid).
    std::vector<std::string> left;
    for (const auto& e : storage::journal::list(dir.path())) left.push_back(e.file);
    CHECK(left == std::vector<std::string>{"busy.h5"});

    // Once nobody holds it, the next start mends it.
    const auto again = storage::recover_run_files(dir.path());
    REQUIRE(again.size() == 1);
    CHECK(again[0].recovered);
    CHECK(opens_plainly(busy));
    CHECK(storage::journal::list(dir.path()).empty());
}

TEST_CASE("recover_run_file refuses a symlink", "[storage][recovery]") {
    temp_dir dir;
    crash_state s;
    s.rows = iota(1, 4);
    for (const char* d : {"raw", "frame_number", "timestamp_ns", "missing_packets"}) s.ds[d] = all(4, {0});
    const fs::path target = dir.path() / "t.h5";
    write_crashed_file(target, s);
    const fs::path link = dir.path() / "l.h5";
    fs::create_symlink(target, link);
    const auto before = bytes_of(target);
    const auto r = storage::recover_run_file(link);
    CHECK_FALSE(r.recovered);
    CHECK(r.error.find("symlink") != std::string::npos);
    CHECK(bytes_of(target) == before);
}
