// daq-inspect: summarises and verifies daq1-run HDF5 files (docs/DATASET.md).
//
//   daq-inspect [--json] [--verify] FILE...
//
// FILE... is one run: one file, or the files of a rotated series in order.
// Exit status: 0 fine, 1 --verify found problems, 2 unreadable input or usage.
// Single-threaded; opens files read-only (SWMR read when a writer is live).
#include "daqd/acquisition/daq1.hpp"
#include "daqd/storage/h5.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

namespace fs = std::filesystem;
namespace h5 = daqd::storage::h5;
using daqd::storage::storage_error;

constexpr int exit_ok = 0;
constexpr int exit_problems = 1;
constexpr int exit_unreadable = 2;
constexpr std::size_t max_problem_lines = 10;

// Input that cannot be read at all (exit 2).
struct unreadable : std::runtime_error {
    using std::runtime_error::runtime_error;
};

struct problem_list {
    std::vector<std::string> shown;
    std::uint64_t count = 0;
    void add(std::string line) {
        if (shown.size() < max_problem_lines) shown.push_back(std::move(line));
        ++count;
    }
};

struct file_summary {
    std::string path;
    std::uint64_t frames = 0;  // rows over all units
    std::uint64_t size_bytes = 0;
    std::optional<std::string> stopped_at;
};

struct unit_summary {
    std::uint16_t unit = 0;
    std::uint32_t channels = 0;
    std::uint64_t frames = 0;
    std::uint64_t first_frame = 0;
    std::uint64_t last_frame = 0;
    std::uint64_t frames_lost_in_gaps = 0;
    std::uint64_t incomplete_frames = 0;
    std::uint64_t missing_packets = 0;
    std::uint64_t first_timestamp_ns = 0;
    std::uint64_t last_timestamp_ns = 0;
    std::uint64_t samples_checked = 0;
    std::uint64_t samples_not_checked = 0;  // detector data: no pattern to check them against
    // What its rows hold (the unit group's data_source, else the file's):
    // "test_pattern", "detector", or "unknown" (a file older than the
    // attribute: checked against the pattern, as then).
    std::string data_source = "unknown";
    std::uint32_t streams = 1;  // streams seen (docs/DATASET.md "Streams")
    std::int64_t stream = -1;   // the stream of the last file read
};

struct run_summary {
    std::optional<std::string> run_name;
    std::optional<std::int64_t> format_version;
    std::optional<std::string> format;
    std::optional<std::string> started_at;
    std::optional<std::string> stopped_at;  // of the last file
    std::optional<std::string> server_version;
    std::vector<file_summary> files;
    std::map<std::uint16_t, unit_summary> units;
    std::uint64_t total_frames = 0;
    std::uint64_t samples_checked = 0;
    // storage.compression: the root attribute `compression` ("none" when
    // absent), and per dataset name the bytes its rows hold and the bytes
    // its chunks take in the files.
    std::string compression = "none";
    // The root attribute data_source of each file, combined: "test_pattern",
    // "detector", "mixed", "none" (no rows), or "unknown" (no attribute).
    std::string data_source;
    struct stored {
        std::uint64_t bytes = 0;
        std::uint64_t stored_bytes = 0;
        std::string filter;  // "bslz4", "none", or the filter's id
    };
    std::map<std::string, stored> datasets;
};

// ---- attribute reading -------------------------------------------------------

enum class attr_kind { missing, string, integer, other };

attr_kind attribute_kind(hid_t obj, const char* name, const std::string& where) {
    const htri_t exists = H5Aexists(obj, name);
    if (exists < 0) h5::fail("H5Aexists", where);
    if (exists == 0) return attr_kind::missing;
    h5::attribute a(h5::check_id(H5Aopen(obj, name, H5P_DEFAULT), "H5Aopen", where));
    h5::datatype t(h5::check_id(H5Aget_type(a.get()), "H5Aget_type", where));
    switch (H5Tget_class(t.get())) {
    case H5T_STRING: return attr_kind::string;
    case H5T_INTEGER: return attr_kind::integer;
    default: return attr_kind::other;
    }
}

// Reads a scalar string attribute, variable- or fixed-length.
std::optional<std::string> read_string_attr(hid_t obj, const char* name, const std::string& where) {
    if (attribute_kind(obj, name, where) != attr_kind::string) return std::nullopt;
    h5::attribute a(h5::check_id(H5Aopen(obj, name, H5P_DEFAULT), "H5Aopen", where));
    h5::datatype ft(h5::check_id(H5Aget_type(a.get()), "H5Aget_type", where));
    h5::datatype mt(h5::check_id(H5Tcopy(H5T_C_S1), "H5Tcopy", where));
    h5::check(H5Tset_cset(mt.get(), H5Tget_cset(ft.get())), "H5Tset_cset", where);
    const htri_t vlen = H5Tis_variable_str(ft.get());
    if (vlen < 0) h5::fail("H5Tis_variable_str", where);
    if (vlen > 0) {
        h5::check(H5Tset_size(mt.get(), H5T_VARIABLE), "H5Tset_size", where);
        char* p = nullptr;
        h5::check(H5Aread(a.get(), mt.get(), &p), "H5Aread", where);
        std::string s = p != nullptr ? p : "";
        H5free_memory(p);
        return s;
    }
    const std::size_t size = H5Tget_size(ft.get());
    if (size == 0) h5::fail("H5Tget_size", where);
    h5::check(H5Tset_size(mt.get(), size), "H5Tset_size", where);
    std::string s(size, '\0');
    h5::check(H5Aread(a.get(), mt.get(), s.data()), "H5Aread", where);
    while (!s.empty() && s.back() == '\0') s.pop_back();
    return s;
}

std::optional<std::int64_t> read_int_attr(hid_t obj, const char* name, const std::string& where) {
    if (attribute_kind(obj, name, where) != attr_kind::integer) return std::nullopt;
    h5::attribute a(h5::check_id(H5Aopen(obj, name, H5P_DEFAULT), "H5Aopen", where));
    std::int64_t v = 0;
    h5::check(H5Aread(a.get(), H5T_NATIVE_INT64, &v), "H5Aread", where);
    return v;
}

const char* kind_name(attr_kind k) {
    switch (k) {
    case attr_kind::missing: return "missing";
    case attr_kind::string: return "a string";
    case attr_kind::integer: return "an integer";
    default: return "of another type";
    }
}

// ---- one file ------------------------------------------------------------------

struct inspector {
    bool verify = false;
    std::string file_source = "unknown";  // the root data_source of the file being read
    problem_list problems;
    run_summary run;
    std::map<std::uint16_t, bool> unit_has_last;  // per unit: a previous row exists (across files)

    h5::file open_file(const std::string& path) {
        std::error_code ec;
        if (!fs::exists(path, ec)) throw unreadable(fmt::format("{}: no such file", path));
        if (!fs::is_regular_file(path, ec)) throw unreadable(fmt::format("{}: not a regular file", path));
        const htri_t is_hdf5 = H5Fis_hdf5(path.c_str());
        if (is_hdf5 <= 0) {
            H5Eclear2(H5E_DEFAULT);
            throw unreadable(fmt::format("{}: not an HDF5 file (or not readable)", path));
        }
        // A live run is open for SWMR writing: read it as a SWMR reader. A
        // closed file opens either way. While the writer adds a unit it has
        // the file open without SWMR for a moment: retry for a while.
        const auto fapl = h5::swmr_read_access(path);
        for (int attempt = 0;; ++attempt) {
            hid_t id = H5Fopen(path.c_str(), H5F_ACC_RDONLY | H5F_ACC_SWMR_READ, fapl.get());
            if (id < 0) {
                H5Eclear2(H5E_DEFAULT);
                id = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
            }
            if (id >= 0) return h5::file(id);
            if (attempt >= 10) throw unreadable(fmt::format("{}: cannot open: {}", path, h5::error_stack()));
            H5Eclear2(H5E_DEFAULT);
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
    }

    void check_root(hid_t f, const std::string& path, std::size_t index) {
        const std::string w = "/ in " + path;
        // Types first (layout), then values. A master file of several hosts
        // (daqctl; docs/DATASET.md "Master file") keeps each host's
        // configuration under /hosts/<tag>, not as the root's `config`.
        const bool master = attribute_kind(f, "master_version", w) == attr_kind::integer;
        for (const char* name : {"format", "run_name", "started_at", "server_version", "config"}) {
            if (master && std::string_view(name) == "config") continue;
            const attr_kind k = attribute_kind(f, name, w);
            if (k != attr_kind::string)
                problems.add(fmt::format("{}: root attribute '{}' is {}, expected a string", path, name, kind_name(k)));
        }
        {
            const attr_kind k = attribute_kind(f, "format_version", w);
            if (k != attr_kind::integer)
                problems.add(fmt::format("{}: root attribute 'format_version' is {}, expected an integer", path, kind_name(k)));
        }
        const attr_kind stopped = attribute_kind(f, "stopped_at", w);
        if (stopped != attr_kind::missing && stopped != attr_kind::string)
            problems.add(fmt::format("{}: root attribute 'stopped_at' is {}, expected a string", path, kind_name(stopped)));

        file_source = read_string_attr(f, "data_source", w).value_or("unknown");
        if (file_source != "unknown" && file_source != "test_pattern" && file_source != "detector" &&
            file_source != "mixed" && file_source != "none")
            problems.add(fmt::format("{}: root attribute 'data_source' is '{}', expected 'test_pattern', 'detector', "
                                     "'mixed' or 'none'", path, file_source));
        if (run.data_source.empty() || run.data_source == "none")
            run.data_source = file_source;
        else if (file_source != "none" && file_source != run.data_source)
            run.data_source = run.data_source == "unknown" || file_source == "unknown" ? "unknown" : "mixed";
        if (const auto c = read_string_attr(f, "compression", w)) {
            run.compression = *c;
            if (*c != "none" && *c != "bslz4")
                problems.add(fmt::format("{}: root attribute 'compression' is '{}', expected 'none' or 'bslz4'", path, *c));
        }
        const auto format = read_string_attr(f, "format", w);
        const auto version = read_int_attr(f, "format_version", w);
        const auto name = read_string_attr(f, "run_name", w);
        if (format && *format != "daq1-run")
            problems.add(fmt::format("{}: format is '{}', expected 'daq1-run'", path, *format));
        if (version && *version != 1)
            problems.add(fmt::format("{}: format_version is {}, expected 1", path, *version));
        if (index == 0) {
            run.format = format;
            run.format_version = version;
            run.run_name = name;
            run.started_at = read_string_attr(f, "started_at", w);
            run.server_version = read_string_attr(f, "server_version", w);
        } else if (name && run.run_name && *name != *run.run_name) {
            problems.add(fmt::format("{}: run_name is '{}', the first file's is '{}'", path, *name, *run.run_name));
        }
        if (!format && !version && !name)
            throw unreadable(fmt::format("{}: not a daq1-run file (no format, format_version or run_name attribute)", path));
    }

    // Checks a dataset's type against the expected unsigned integer size.
    bool check_type(hid_t ds, std::size_t bytes, const std::string& where) {
        h5::datatype t(h5::check_id(H5Dget_type(ds), "H5Dget_type", where));
        const bool ok = H5Tget_class(t.get()) == H5T_INTEGER && H5Tget_size(t.get()) == bytes &&
                        H5Tget_sign(t.get()) == H5T_SGN_NONE;
        if (!ok) problems.add(fmt::format("{}: dtype is not uint{}", where, bytes * 8));
        return ok;
    }

    // Dimensions of a dataset, or nullopt (with a problem) when the rank is wrong.
    std::optional<std::vector<hsize_t>> dims_of(hid_t ds, int rank, const std::string& where) {
        h5::dataspace s(h5::check_id(H5Dget_space(ds), "H5Dget_space", where));
        const int r = H5Sget_simple_extent_ndims(s.get());
        if (r < 0) h5::fail("H5Sget_simple_extent_ndims", where);
        if (r != rank) {
            problems.add(fmt::format("{}: rank {}, expected {}", where, r, rank));
            return std::nullopt;
        }
        std::vector<hsize_t> d(static_cast<std::size_t>(rank));
        h5::check(H5Sget_simple_extent_dims(s.get(), d.data(), nullptr), "H5Sget_simple_extent_dims", where);
        return d;
    }

    template <typename T>
    void read_rows(hid_t ds, hid_t memtype, hsize_t start, hsize_t rows, hsize_t cols, T* out, const std::string& where) {
        const int rank = cols == 0 ? 1 : 2;
        const hsize_t offset[2] = {start, 0};
        const hsize_t count[2] = {rows, cols};
        h5::dataspace fs_(h5::check_id(H5Dget_space(ds), "H5Dget_space", where));
        h5::check(H5Sselect_hyperslab(fs_.get(), H5S_SELECT_SET, offset, nullptr, count, nullptr), "H5Sselect_hyperslab",
                  where);
        h5::dataspace ms(h5::check_id(H5Screate_simple(rank, count, nullptr), "H5Screate_simple", where));
        h5::check(H5Dread(ds, memtype, ms.get(), fs_.get(), H5P_DEFAULT, out), "H5Dread", where);
    }

    // Adds a dataset's bytes and stored bytes to the run's summary.
    void count_storage(hid_t ds, const char* name, std::uint64_t bytes, const std::string& where) {
        auto& st = run.datasets[name];
        st.bytes += bytes;
        st.stored_bytes += H5Dget_storage_size(ds);
        h5::plist dcpl(h5::check_id(H5Dget_create_plist(ds), "H5Dget_create_plist", where));
        const int n = H5Pget_nfilters(dcpl.get());
        std::string filter = "none";
        for (int i = 0; i < n; ++i) {
            unsigned flags = 0, cd[8] = {};
            std::size_t ncd = 8;
            const H5Z_filter_t id = H5Pget_filter2(dcpl.get(), static_cast<unsigned>(i), &flags, &ncd, cd, 0, nullptr, nullptr);
            filter = id == 32008 && ncd > 4 && cd[4] == 2 ? std::string("bslz4") : fmt::format("filter {}", id);
        }
        if (st.filter.empty()) st.filter = filter;
        else if (st.filter != filter) st.filter = "mixed";
    }

    void inspect_unit(hid_t f, const std::string& path, const std::string& gname, file_summary& fsum) {
        std::uint16_t unit_from_name = 0;
        {
            const std::string digits = gname.substr(1);
            bool ok = gname.size() > 1 && gname[0] == 'u' && digits.size() <= 5;
            for (char c : digits) ok = ok && c >= '0' && c <= '9';
            if (!ok || std::stoul(digits) > 0xffff) {
                problems.add(fmt::format("{}: unexpected object /units/{} (expected u<unit_id>)", path, gname));
                return;
            }
            unit_from_name = static_cast<std::uint16_t>(std::stoul(digits));
        }
        const std::string gpath = "/units/" + gname;
        const std::string gw = gpath + " in " + path;
        h5::group g(h5::check_id(H5Gopen2(f, gpath.c_str(), H5P_DEFAULT), "H5Gopen2", gw));
        const auto unit_id = read_int_attr(g.get(), "unit_id", gw);
        const auto channels_attr = read_int_attr(g.get(), "channels", gw);
        if (!unit_id) problems.add(fmt::format("{}: {}: integer attribute 'unit_id' missing", path, gpath));
        else if (*unit_id != unit_from_name)
            problems.add(fmt::format("{}: {}: unit_id is {}, the group name says {}", path, gpath, *unit_id, unit_from_name));
        if (!channels_attr || *channels_attr <= 0) {
            problems.add(fmt::format("{}: {}: positive integer attribute 'channels' missing", path, gpath));
            return;
        }
        const auto channels = static_cast<std::uint32_t>(*channels_attr);
        // A unit's new stream (its frame numbers went back, or its frame size
        // changed) starts in a new file: rows ascend within a stream only.
        const std::int64_t stream = read_int_attr(g.get(), "stream", gw).value_or(0);
        auto& us = run.units[unit_from_name];
        if (us.stream >= 0 && stream != us.stream) {
            if (stream < us.stream)
                problems.add(fmt::format("{}: {}: stream {} after stream {} (files out of order?)", path, gpath, stream,
                                         us.stream));
            ++us.streams;
            us.channels = 0;
            unit_has_last[unit_from_name] = false;
        }
        us.stream = stream;

        // Datasets: present, types, shapes, equal lengths.
        h5::dataset dsets[4];
        const char* names[4] = {"raw", "frame_number", "timestamp_ns", "missing_packets"};
        const std::size_t sizes[4] = {2, 8, 8, 2};
        h5::plist dapl(h5::check_id(H5Pcreate(H5P_DATASET_ACCESS), "H5Pcreate", gw));
        // No chunk cache: whole-chunk reads then go straight into our buffers.
        h5::check(H5Pset_chunk_cache(dapl.get(), 0, 0, 1.0), "H5Pset_chunk_cache", gw);
        bool layout_ok = true;
        hsize_t rows = 0;
        for (int i = 0; i < 4; ++i) {
            const std::string w = fmt::format("{}: {}/{}", path, gpath, names[i]);
            const std::string dpath = gpath + "/" + names[i];
            const htri_t exists = H5Lexists(g.get(), names[i], H5P_DEFAULT);
            if (exists <= 0) {
                H5Eclear2(H5E_DEFAULT);
                problems.add(fmt::format("{}: dataset missing", w));
                layout_ok = false;
                continue;
            }
            dsets[i] = h5::dataset(h5::check_id(H5Dopen2(f, dpath.c_str(), dapl.get()), "H5Dopen2", w));
            if (!check_type(dsets[i].get(), sizes[i], w)) layout_ok = false;
            const auto d = dims_of(dsets[i].get(), i == 0 ? 2 : 1, w);
            if (!d) {
                layout_ok = false;
                continue;
            }
            if (i == 0) {
                rows = (*d)[0];
                if ((*d)[1] != channels) {
                    problems.add(fmt::format("{}: shape [{}, {}], expected {} channels", w, (*d)[0], (*d)[1], channels));
                    layout_ok = false;
                }
            } else if ((*d)[0] != rows && dsets[0]) {
                problems.add(fmt::format("{}: {} rows, raw has {}", w, (*d)[0], rows));
                layout_ok = false;
            }
        }
        for (int i = 0; i < 4; ++i)
            if (dsets[i]) count_storage(dsets[i].get(), names[i], rows * (i == 0 ? channels : 1) * sizes[i], gw);
        if (H5Lexists(g.get(), "calibrated", H5P_DEFAULT) > 0) {
            h5::dataset cal(h5::check_id(H5Dopen2(g.get(), "calibrated", H5P_DEFAULT), "H5Dopen2", gw));
            count_storage(cal.get(), "calibrated", rows * channels * 4, gw);
        }
        H5Eclear2(H5E_DEFAULT);
        auto& u = run.units[unit_from_name];
        if (u.channels != 0 && u.channels != channels) {
            problems.add(fmt::format("{}: {}: {} channels, an earlier file has {}", path, gpath, channels, u.channels));
            layout_ok = false;
        }
        u.unit = unit_from_name;
        u.channels = channels;
        // Check the samples against the test pattern only where one was sent
        // (docs/DATASET.md "data_source"): the unit's attribute, else the file's.
        {
            std::string source = read_string_attr(g.get(), "data_source", gw).value_or(file_source);
            if (source == "mixed" || source == "none") source = "unknown";
            if (source != "unknown" && source != "test_pattern" && source != "detector") {
                problems.add(fmt::format("{}: {}: attribute 'data_source' is '{}', expected 'test_pattern' or "
                                         "'detector'", path, gpath, source));
                source = "unknown";
            }
            if (u.data_source == "unknown" || u.data_source == source) u.data_source = source;
            else if (source != "unknown") u.data_source = "mixed";
        }
        if (!layout_ok) return;

        // Rows, a block of whole chunks at a time.
        hsize_t block = 1;
        {
            h5::plist dcpl(h5::check_id(H5Dget_create_plist(dsets[0].get()), "H5Dget_create_plist", gw));
            hsize_t chunk[2] = {0, 0};
            if (H5Pget_layout(dcpl.get()) == H5D_CHUNKED &&
                H5Pget_chunk(dcpl.get(), 2, chunk) == 2 && chunk[0] > 0)
                block = chunk[0];
            else
                block = std::max<hsize_t>(1, (4u << 20) / (2u * channels));
            H5Eclear2(H5E_DEFAULT);
        }
        std::vector<std::uint64_t> fn(block), ts(block);
        std::vector<std::uint16_t> mp(block);
        // Detector data (no TEST_PATTERN flag) has no expected value per sample.
        const bool check_pattern = verify && u.data_source != "detector" && u.data_source != "mixed";
        std::vector<std::uint16_t> raw(check_pattern ? block * channels : 0);
        const std::string wraw = gpath + "/raw in " + path;
        bool& has_last = unit_has_last[unit_from_name];
        for (hsize_t start = 0; start < rows; start += block) {
            const hsize_t n = std::min(block, rows - start);
            read_rows(dsets[1].get(), H5T_NATIVE_UINT64, start, n, 0, fn.data(), gpath + "/frame_number in " + path);
            read_rows(dsets[2].get(), H5T_NATIVE_UINT64, start, n, 0, ts.data(), gpath + "/timestamp_ns in " + path);
            read_rows(dsets[3].get(), H5T_NATIVE_UINT16, start, n, 0, mp.data(), gpath + "/missing_packets in " + path);
            if (check_pattern) read_rows(dsets[0].get(), H5T_NATIVE_UINT16, start, n, channels, raw.data(), wraw);
            for (hsize_t r = 0; r < n; ++r) {
                const std::uint64_t frame = fn[r];
                if (!has_last) {
                    u.first_frame = frame;
                    u.first_timestamp_ns = ts[r];
                    has_last = true;
                } else if (frame <= u.last_frame) {
                    problems.add(fmt::format("{}: unit {} row {}: frame_number {} after {} (not strictly ascending)",
                                             path, unit_from_name, start + r, frame, u.last_frame));
                } else {
                    u.frames_lost_in_gaps += frame - u.last_frame - 1;
                }
                u.last_frame = frame;
                u.last_timestamp_ns = ts[r];
                ++u.frames;
                if (mp[r] > 0) {
                    ++u.incomplete_frames;
                    u.missing_packets += mp[r];
                }
                if (check_pattern)
                    check_samples(path, unit_from_name, frame, mp[r] > 0, raw.data() + r * channels, channels);
            }
        }
        if (check_pattern) u.samples_checked += rows * channels;
        else if (verify) u.samples_not_checked += rows * channels;
        fsum.frames += rows;
    }

    void check_samples(const std::string& path, std::uint16_t unit, std::uint64_t frame, bool incomplete,
                       const std::uint16_t* row, std::uint32_t channels) {
        const auto base = daqd::acquisition::daq1::test_pattern(frame, unit, 0);
        // Fast pass (vectorises): any deviation at all?
        std::uint16_t bad = 0;
        std::uint16_t e = base;
        if (!incomplete) {
            for (std::uint32_t c = 0; c < channels; ++c, ++e) bad |= static_cast<std::uint16_t>(row[c] ^ e);
        } else {
            for (std::uint32_t c = 0; c < channels; ++c, ++e)
                bad |= static_cast<std::uint16_t>((row[c] != e) & (row[c] != 0));
        }
        if (bad == 0) return;
        for (std::uint32_t c = 0; c < channels; ++c) {
            const auto expected = daqd::acquisition::daq1::test_pattern(frame, unit, c);
            const std::uint16_t got = row[c];
            if (got == expected || (incomplete && got == 0)) continue;
            problems.add(fmt::format("{}: unit {} frame_number {} channel {}: expected {}{}, got {}", path, unit, frame, c,
                                     expected, incomplete ? " or 0 (incomplete frame)" : "", got));
        }
    }

    void inspect_file(const std::string& path, std::size_t index) {
        h5::file f = open_file(path);
        file_summary fsum;
        fsum.path = path;
        std::error_code ec;
        fsum.size_bytes = fs::file_size(path, ec);
        check_root(f.get(), path, index);
        fsum.stopped_at = read_string_attr(f.get(), "stopped_at", "/ in " + path);
        const htri_t has_units = H5Lexists(f.get(), "units", H5P_DEFAULT);
        if (has_units <= 0) {
            H5Eclear2(H5E_DEFAULT);
            problems.add(fmt::format("{}: group /units missing", path));
        } else {
            std::vector<std::string> names;
            {
                h5::group g(h5::check_id(H5Gopen2(f.get(), "units", H5P_DEFAULT), "H5Gopen2", "/units in " + path));
                auto collect = [](hid_t, const char* name, const H5L_info_t*, void* data) -> herr_t {
                    static_cast<std::vector<std::string>*>(data)->emplace_back(name);
                    return 0;
                };
                hsize_t idx = 0;
                h5::check(H5Literate(g.get(), H5_INDEX_NAME, H5_ITER_INC, &idx, collect, &names), "H5Literate",
                          "/units in " + path);
            }
            // Numeric order of unit ids.
            std::sort(names.begin(), names.end(), [](const std::string& a, const std::string& b) {
                return a.size() != b.size() ? a.size() < b.size() : a < b;
            });
            for (const auto& n : names) inspect_unit(f.get(), path, n, fsum);
        }
        run.total_frames += fsum.frames;
        run.stopped_at = fsum.stopped_at;
        run.files.push_back(std::move(fsum));
    }
};

// ---- output --------------------------------------------------------------------

std::string human_bytes(double b) {
    const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int i = 0;
    while (b >= 1024.0 && i < 4) {
        b /= 1024.0;
        ++i;
    }
    return i == 0 ? fmt::format("{:.0f} {}", b, units[i]) : fmt::format("{:.1f} {}", b, units[i]);
}

// The root attribute data_source in words.
std::string source_text(const std::string& s) {
    if (s == "test_pattern") return "test_pattern (every frame carried DAQ1's TEST_PATTERN flag)";
    if (s == "detector") return "detector (no frame carried TEST_PATTERN: --verify checks the layout, not the samples)";
    if (s == "mixed") return "mixed (some units or frames carried TEST_PATTERN, others not; see each unit)";
    if (s == "none") return "none (no frames)";
    return "unknown (no data_source attribute: a file of an older daqd; --verify checks the samples against the test "
           "pattern)";
}

double span_s(const unit_summary& u) {
    return u.frames > 1 ? static_cast<double>(u.last_timestamp_ns - u.first_timestamp_ns) * 1e-9 : 0.0;
}
double rate_hz(const unit_summary& u) {
    const double s = span_s(u);
    return s > 0 ? static_cast<double>(u.frames - 1) / s : 0.0;
}

void print_text(const inspector& in) {
    const auto& r = in.run;
    fmt::print("run            {}\n", r.run_name.value_or("(missing)"));
    fmt::print("format         {} version {}\n", r.format.value_or("(missing)"),
               r.format_version ? std::to_string(*r.format_version) : std::string("(missing)"));
    fmt::print("server         {}\n", r.server_version.value_or("(missing)"));
    fmt::print("started        {}\n", r.started_at.value_or("(missing)"));
    fmt::print("stopped        {}\n", r.stopped_at.value_or("(not set: still being written, or the writer died)"));
    fmt::print("data source    {}\n", source_text(r.data_source));
    fmt::print("files          {}\n", r.files.size());
    for (const auto& f : r.files)
        fmt::print("  {}  {} rows, {}{}\n", f.path, f.frames, human_bytes(static_cast<double>(f.size_bytes)),
                   f.stopped_at ? "" : "  (no stopped_at)");
    for (const auto& [id, u] : r.units) {
        fmt::print("unit {}\n", id);
        fmt::print("  channels     {}\n", u.channels);
        fmt::print("  data source  {}\n", u.data_source);
        fmt::print("  frames       {}", u.frames);
        if (u.frames > 0) fmt::print("  (frame_number {} .. {})", u.first_frame, u.last_frame);
        fmt::print("\n");
        fmt::print("  lost (gaps)  {}\n", u.frames_lost_in_gaps);
        if (u.streams > 1) fmt::print("  streams      {} (frame numbering restarted; frame_number range is the last stream's)\n", u.streams);
        fmt::print("  incomplete   {} frames, {} missing packets\n", u.incomplete_frames, u.missing_packets);
        if (u.frames > 0)
            fmt::print("  time span    {:.6f} s (timestamp_ns {} .. {}), {:.3f} frames/s\n", span_s(u),
                       u.first_timestamp_ns, u.last_timestamp_ns, rate_hz(u));
        fmt::print("  data         {}\n", human_bytes(static_cast<double>(u.frames) * u.channels * 2.0));
    }
    fmt::print("total frames   {}\n", r.total_frames);
    fmt::print("compression    {}\n", r.compression == "bslz4" ? "bslz4 (bitshuffle + LZ4, HDF5 filter 32008)" : r.compression);
    for (const auto& [name, d] : r.datasets)
        fmt::print("  {:<16} {} stored in {}{}\n", name, human_bytes(static_cast<double>(d.bytes)),
                   human_bytes(static_cast<double>(d.stored_bytes)),
                   d.stored_bytes > 0 ? fmt::format(" (ratio {:.2f}, {})", static_cast<double>(d.bytes) / static_cast<double>(d.stored_bytes), d.filter)
                                      : std::string());
}

nlohmann::ordered_json to_json(const inspector& in) {
    const auto& r = in.run;
    nlohmann::ordered_json j;
    auto opt = [](const auto& o) -> nlohmann::ordered_json {
        if (o) return *o;
        return nullptr;
    };
    j["run_name"] = opt(r.run_name);
    j["format"] = opt(r.format);
    j["format_version"] = opt(r.format_version);
    j["server_version"] = opt(r.server_version);
    j["started_at"] = opt(r.started_at);
    j["stopped_at"] = opt(r.stopped_at);
    j["data_source"] = r.data_source.empty() ? "unknown" : r.data_source;
    j["files"] = nlohmann::ordered_json::array();
    for (const auto& f : r.files)
        j["files"].push_back({{"path", f.path}, {"frames", f.frames}, {"size_bytes", f.size_bytes},
                              {"stopped_at", opt(f.stopped_at)}});
    j["units"] = nlohmann::ordered_json::array();
    for (const auto& [id, u] : r.units) {
        nlohmann::ordered_json ju;
        ju["unit"] = u.unit;
        ju["channels"] = u.channels;
        ju["data_source"] = u.data_source;
        ju["streams"] = u.streams;
        ju["frames"] = u.frames;
        ju["first_frame"] = u.frames > 0 ? nlohmann::ordered_json(u.first_frame) : nullptr;
        ju["last_frame"] = u.frames > 0 ? nlohmann::ordered_json(u.last_frame) : nullptr;
        ju["frames_lost_in_gaps"] = u.frames_lost_in_gaps;
        ju["incomplete_frames"] = u.incomplete_frames;
        ju["missing_packets"] = u.missing_packets;
        ju["first_timestamp_ns"] = u.frames > 0 ? nlohmann::ordered_json(u.first_timestamp_ns) : nullptr;
        ju["last_timestamp_ns"] = u.frames > 0 ? nlohmann::ordered_json(u.last_timestamp_ns) : nullptr;
        ju["time_span_s"] = span_s(u);
        ju["frame_rate_hz"] = rate_hz(u);
        ju["data_bytes"] = static_cast<std::uint64_t>(u.frames) * u.channels * 2u;
        j["units"].push_back(std::move(ju));
    }
    j["total_frames"] = r.total_frames;
    j["compression"] = r.compression;
    j["datasets"] = nlohmann::ordered_json::object();
    for (const auto& [name, d] : r.datasets)
        j["datasets"][name] = {{"bytes", d.bytes},
                               {"stored_bytes", d.stored_bytes},
                               {"ratio", d.stored_bytes > 0 ? static_cast<double>(d.bytes) / static_cast<double>(d.stored_bytes) : 0.0},
                               {"filter", d.filter}};
    return j;
}

void usage(std::FILE* to) {
    fmt::print(to,
               "usage: daq-inspect [--json] [--verify] FILE...\n"
               "  Summarises one run: one file, or the files of a rotated series in order.\n"
               "  --json    print the summary as one JSON object\n"
               "  --verify  check the layout, and every sample against the DAQ1 test pattern where the\n"
               "            file says one was sent (data_source; detector data: the layout only)\n"
               "exit status: 0 ok, 1 verification problems, 2 unreadable input or usage error\n");
}

}  // namespace

int main(int argc, char** argv) {
    bool json = false;
    bool verify = false;
    std::vector<std::string> files;
    for (int i = 1; i < argc; ++i) {
        const std::string_view a = argv[i];
        if (a == "--json") json = true;
        else if (a == "--verify") verify = true;
        else if (a == "-h" || a == "--help") {
            usage(stdout);
            return exit_ok;
        } else if (a.size() > 1 && a[0] == '-' && a != "--") {
            fmt::print(stderr, "daq-inspect: unknown option {}\n", a);
            usage(stderr);
            return exit_unreadable;
        } else if (a != "--") files.emplace_back(a);
    }
    if (files.empty()) {
        usage(stderr);
        return exit_unreadable;
    }

    h5::init_library();
    inspector in;
    in.verify = verify;
    try {
        for (std::size_t i = 0; i < files.size(); ++i) in.inspect_file(files[i], i);
    } catch (const unreadable& e) {
        fmt::print(stderr, "daq-inspect: {}\n", e.what());
        return exit_unreadable;
    } catch (const storage_error& e) {
        fmt::print(stderr, "daq-inspect: cannot read input: {}\n", e.what());
        return exit_unreadable;
    } catch (const std::exception& e) {
        fmt::print(stderr, "daq-inspect: {}\n", e.what());
        return exit_unreadable;
    }

    std::uint64_t samples = 0, not_checked = 0;
    std::string detector_units;
    for (const auto& [id, u] : in.run.units) {
        samples += u.samples_checked;
        not_checked += u.samples_not_checked;
        if (u.samples_not_checked > 0) detector_units += fmt::format("{}u{}", detector_units.empty() ? "" : ", ", id);
    }
    // What --verify did not check, and why, in words.
    const std::string not_checked_text =
        not_checked == 0 ? std::string()
                         : fmt::format("; {} samples of {} not checked: detector data (no TEST_PATTERN flag), no "
                                       "pattern to compare with",
                                       not_checked, detector_units);
    if (json) {
        auto j = to_json(in);
        if (verify)
            j["verify"] = {{"ok", in.problems.count == 0},
                           {"problems", in.problems.count},
                           {"samples_checked", samples},
                           {"samples_not_checked", not_checked},
                           {"pattern_checked", samples > 0},
                           {"first_problems", in.problems.shown}};
        fmt::print("{}\n", j.dump(2));
    } else {
        print_text(in);
    }
    // With --verify the problems are the result (stdout, or inside the JSON);
    // without, layout problems are warnings on stderr.
    if (in.problems.count > 0 && !(json && verify)) {
        std::FILE* to = verify ? stdout : stderr;
        for (const auto& line : in.problems.shown) fmt::print(to, "{}{}\n", verify ? "" : "warning: ", line);
        if (in.problems.count > in.problems.shown.size())
            fmt::print(to, "... {} problems in all\n", in.problems.count);
    }
    if (verify) {
        if (in.problems.count == 0) {
            if (!json)
                fmt::print("verify         OK ({} frames, layout checked, {} samples checked against the test pattern{})\n",
                           in.run.total_frames, samples, not_checked_text);
            return exit_ok;
        }
        if (!json) fmt::print("verify         FAILED: {} problem(s)\n", in.problems.count);
        return exit_problems;
    }
    return exit_ok;
}
