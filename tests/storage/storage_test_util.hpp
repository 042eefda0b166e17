#pragma once
// Helpers of the storage tests: a temporary directory, frames carrying the
// DAQ1 test pattern, reading run files back with the HDF5 C API, and running
// subprocesses (daq-inspect, /usr/bin/python3 with h5py).
#include "daqd/acquisition/daq1.hpp"
#include "daqd/processing/frame.hpp"
#include "daqd/storage/h5.hpp"
#include "temp_dir.hpp"

#include <catch2/catch.hpp>
#include <hdf5.h>
#include <sys/wait.h>

#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

namespace storage_test {

namespace fs = std::filesystem;
namespace h5 = daqd::storage::h5;

// A fresh directory under the system temp dir, removed at scope exit.
struct temp_dir : daqd_test::temp_dir {
    temp_dir() : daqd_test::temp_dir("daqd_storage_test") {}
};

inline std::uint16_t pattern(std::uint64_t frame, std::uint16_t unit, std::uint32_t channel) {
    return daqd::acquisition::daq1::test_pattern(frame, unit, channel);
}

// A frame with its own sample storage (for run_file tests, no pool).
struct owned_frame {
    std::vector<std::uint16_t> samples;
    daqd::processing::frame f;

    owned_frame(std::uint16_t unit, std::uint32_t channels, std::uint64_t frame_number, std::uint16_t missing = 0)
        : samples(channels) {
        for (std::uint32_t c = 0; c < channels; ++c) samples[c] = pattern(frame_number, unit, c);
        // An incomplete frame: the missing packets' samples are zero.
        if (missing > 0)
            for (std::uint32_t c = 0; c < channels && c < 3u * missing; ++c) samples[c] = 0;
        f.unit_id = unit;
        f.missing_packets = missing;
        f.packet_count = 4;
        f.test_pattern = true;  // the samples are the test pattern, as daq-sim sends it
        f.channels = channels;
        f.frame_number = frame_number;
        f.timestamp_ns = 1'000'000'000ull + frame_number * 1'000'000ull;  // 1 kHz
        f.samples = samples.data();
    }
    owned_frame(const owned_frame&) = delete;
    owned_frame& operator=(const owned_frame&) = delete;
};

// What the tests expect one unit to contain.
struct expected_rows {
    std::uint32_t channels = 0;
    std::vector<std::uint64_t> frame_number;
    std::vector<std::uint64_t> timestamp_ns;
    std::vector<std::uint16_t> missing_packets;
    std::vector<std::uint16_t> raw;  // rows * channels

    void add(const daqd::processing::frame& f) {
        channels = f.channels;
        frame_number.push_back(f.frame_number);
        timestamp_ns.push_back(f.timestamp_ns);
        missing_packets.push_back(f.missing_packets);
        raw.insert(raw.end(), f.samples, f.samples + f.channels);
    }
};

// ---- reading back with the HDF5 C API ----------------------------------------

inline h5::file open_read(const fs::path& p) {
    h5::init_library();
    const hid_t id = H5Fopen(p.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    if (id < 0) FAIL("cannot open " << p << ": " << h5::error_stack());
    return h5::file(id);
}

inline bool has_attr(hid_t obj, const char* name) { return H5Aexists(obj, name) > 0; }

inline std::string read_string_attr(hid_t obj, const char* name, bool* variable_utf8 = nullptr) {
    h5::attribute a(H5Aopen(obj, name, H5P_DEFAULT));
    REQUIRE(a);
    h5::datatype t(H5Aget_type(a.get()));
    REQUIRE(H5Tget_class(t.get()) == H5T_STRING);
    h5::dataspace s(H5Aget_space(a.get()));
    REQUIRE(H5Sget_simple_extent_type(s.get()) == H5S_SCALAR);
    const bool vlen = H5Tis_variable_str(t.get()) > 0;
    if (variable_utf8 != nullptr) *variable_utf8 = vlen && H5Tget_cset(t.get()) == H5T_CSET_UTF8;
    REQUIRE(vlen);
    h5::datatype mt(H5Tcopy(H5T_C_S1));
    H5Tset_size(mt.get(), H5T_VARIABLE);
    H5Tset_cset(mt.get(), H5T_CSET_UTF8);
    char* p = nullptr;
    REQUIRE(H5Aread(a.get(), mt.get(), &p) >= 0);
    std::string out = p != nullptr ? p : "";
    H5free_memory(p);
    return out;
}

inline std::int64_t read_int_attr(hid_t obj, const char* name) {
    h5::attribute a(H5Aopen(obj, name, H5P_DEFAULT));
    REQUIRE(a);
    h5::datatype t(H5Aget_type(a.get()));
    REQUIRE(H5Tget_class(t.get()) == H5T_INTEGER);
    std::int64_t v = 0;
    REQUIRE(H5Aread(a.get(), H5T_NATIVE_INT64, &v) >= 0);
    return v;
}

inline std::vector<std::string> attr_names(hid_t obj) {
    std::vector<std::string> names;
    hsize_t idx = 0;
    H5Aiterate2(
        obj, H5_INDEX_NAME, H5_ITER_INC, &idx,
        [](hid_t, const char* name, const H5A_info_t*, void* data) -> herr_t {
            static_cast<std::vector<std::string>*>(data)->emplace_back(name);
            return 0;
        },
        &names);
    return names;
}

inline std::vector<std::string> link_names(hid_t group) {
    std::vector<std::string> names;
    hsize_t idx = 0;
    H5Literate(
        group, H5_INDEX_NAME, H5_ITER_INC, &idx,
        [](hid_t, const char* name, const H5L_info_t*, void* data) -> herr_t {
            static_cast<std::vector<std::string>*>(data)->emplace_back(name);
            return 0;
        },
        &names);
    return names;
}

inline std::vector<hsize_t> dims_of(hid_t ds, std::vector<hsize_t>* maxdims = nullptr) {
    h5::dataspace s(H5Dget_space(ds));
    const int rank = H5Sget_simple_extent_ndims(s.get());
    std::vector<hsize_t> d(static_cast<std::size_t>(rank)), m(static_cast<std::size_t>(rank));
    H5Sget_simple_extent_dims(s.get(), d.data(), m.data());
    if (maxdims != nullptr) *maxdims = m;
    return d;
}

template <typename T>
std::vector<T> read_all(hid_t ds, hid_t memtype) {
    const auto d = dims_of(ds);
    std::size_t n = 1;
    for (auto x : d) n *= x;
    std::vector<T> out(n);
    if (n > 0) REQUIRE(H5Dread(ds, memtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data()) >= 0);
    return out;
}

// Checks one unit group of an open file against what was appended.
inline void check_unit(hid_t file, std::uint16_t unit, const expected_rows& want) {
    INFO("unit " << unit);
    const std::string gpath = "/units/u" + std::to_string(unit);
    h5::group g(H5Gopen2(file, gpath.c_str(), H5P_DEFAULT));
    REQUIRE(g);
    CHECK(read_int_attr(g.get(), "unit_id") == unit);
    CHECK(read_int_attr(g.get(), "channels") == want.channels);
    h5::dataset raw(H5Dopen2(g.get(), "raw", H5P_DEFAULT));
    h5::dataset fn(H5Dopen2(g.get(), "frame_number", H5P_DEFAULT));
    h5::dataset ts(H5Dopen2(g.get(), "timestamp_ns", H5P_DEFAULT));
    h5::dataset mp(H5Dopen2(g.get(), "missing_packets", H5P_DEFAULT));
    REQUIRE((raw && fn && ts && mp));
    const hsize_t rows = want.frame_number.size();
    CHECK(dims_of(raw.get()) == std::vector<hsize_t>{rows, want.channels});
    CHECK(dims_of(fn.get()) == std::vector<hsize_t>{rows});
    CHECK(dims_of(ts.get()) == std::vector<hsize_t>{rows});
    CHECK(dims_of(mp.get()) == std::vector<hsize_t>{rows});
    CHECK(read_all<std::uint64_t>(fn.get(), H5T_NATIVE_UINT64) == want.frame_number);
    CHECK(read_all<std::uint64_t>(ts.get(), H5T_NATIVE_UINT64) == want.timestamp_ns);
    CHECK(read_all<std::uint16_t>(mp.get(), H5T_NATIVE_UINT16) == want.missing_packets);
    CHECK(read_all<std::uint16_t>(raw.get(), H5T_NATIVE_UINT16) == want.raw);
}

// The superblock (version 2/3) starts with the 8-byte signature, then the
// version, size of offsets, size of lengths, and the file status flags:
// bit 0 open for writing, bit 2 open for SWMR writing.
struct superblock_info {
    int version = -1;
    int status_flags = -1;
};
inline superblock_info read_superblock(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::array<unsigned char, 12> b{};
    in.read(reinterpret_cast<char*>(b.data()), b.size());
    REQUIRE(in.gcount() == 12);
    REQUIRE(b[1] == 'H');
    REQUIRE(b[2] == 'D');
    REQUIRE(b[3] == 'F');
    return {b[8], b[11]};
}

// ---- subprocesses ------------------------------------------------------------

struct command_result {
    int exit_code = -1;
    std::string output;  // stdout and stderr together
};

inline std::string shell_quote(const std::string& s) {
    std::string out = "'";
    for (char c : s) {
        if (c == '\'') out += "'\\''";
        else out += c;
    }
    return out + "'";
}

inline command_result run_command(const std::string& cmd) {
    command_result r;
    std::FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
    REQUIRE(p != nullptr);
    char buf[4096];
    std::size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
    const int status = ::pclose(p);
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return r;
}

inline const char* python = "/usr/bin/python3";

inline bool python_has_h5py() {
    static const bool has = [] {
        if (!fs::exists(python)) return false;
        return run_command(std::string(python) + " -c 'import h5py, numpy'").exit_code == 0;
    }();
    return has;
}

inline fs::path write_text(const fs::path& p, const std::string& text) {
    std::ofstream out(p);
    out << text;
    return p;
}

}  // namespace storage_test
