// run_file: one run written as one HDF5 file or a numbered series of files.
// Layout: docs/DATASET.md. Design notes: storage/README.md.
#include "daqd/common/event.hpp"
#include "daqd/storage/h5.hpp"
#include "daqd/storage/journal.hpp"
#include "daqd/storage/recovery.hpp"
#include "daqd/storage/run_writer.hpp"
#include "daqd/kernels/cpu.hpp"
#include "writeback.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <chrono>
#include <cstring>
#include <ctime>
#include <cstdlib>
#include <deque>
#include <optional>
#include <variant>
#include <thread>

#include <sys/stat.h>
#include <sys/statvfs.h>

namespace daqd::storage {

namespace {

namespace fs = std::filesystem;

constexpr const char* format_name = "daq1-run";
constexpr int format_version = 1;

enum ds_index : std::size_t { ds_raw = 0, ds_frame_number, ds_timestamp_ns, ds_missing_packets, ds_count };
constexpr std::array<const char*, ds_count> ds_names{"raw", "frame_number", "timestamp_ns", "missing_packets"};

// Element sizes of the four datasets, and of `calibrated`.
constexpr std::array<std::uint32_t, ds_count> ds_elem_size{2, 8, 8, 2};
constexpr std::uint32_t calibrated_elem_size = 4;

// Bytes of one row over all four datasets.
constexpr std::uint64_t row_bytes(std::uint32_t channels) noexcept {
    return std::uint64_t{channels} * 2u + 8u + 8u + 2u;
}

// "<run>_<digits>.h5" with at least five digits.
bool is_series_file_of(const std::string& name, const std::string& run) {
    const std::string prefix = run + "_";
    const std::string suffix = ".h5";
    if (name.size() < prefix.size() + 5 + suffix.size()) return false;
    if (name.compare(0, prefix.size(), prefix) != 0) return false;
    if (name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) return false;
    for (std::size_t i = prefix.size(); i < name.size() - suffix.size(); ++i)
        if (name[i] < '0' || name[i] > '9') return false;
    return true;
}

// Fault injection for the slow-disk tests (docs/RELIABILITY.md): every chunk
// write sleeps this long. DAQD_FAULT_SLOW_WRITE_US, read once; 0 when unset.
std::chrono::microseconds fault_slow_write() {
    static const std::chrono::microseconds delay = [] {
        const char* v = std::getenv("DAQD_FAULT_SLOW_WRITE_US");
        if (v == nullptr || *v == '\0') return std::chrono::microseconds(0);
        const long long us = std::strtoll(v, nullptr, 10);
        if (us > 0) spdlog::warn("fault injection: every chunk write sleeps {} us (DAQD_FAULT_SLOW_WRITE_US)", us);
        return std::chrono::microseconds(us > 0 ? us : 0);
    }();
    return delay;
}

// Fault injection for the buffering test (docs/RELIABILITY.md): the 10th
// chunk write of the process stalls this long, once.
// DAQD_FAULT_WRITE_STALL_MS, read once; 0 when unset.
void fault_stall_once() {
    static const long long stall_ms = [] {
        const char* v = std::getenv("DAQD_FAULT_WRITE_STALL_MS");
        const long long ms = v == nullptr ? 0 : std::strtoll(v, nullptr, 10);
        if (ms > 0) spdlog::warn("fault injection: the 10th chunk write stalls {} ms (DAQD_FAULT_WRITE_STALL_MS)", ms);
        return ms > 0 ? ms : 0;
    }();
    static int writes = 0;
    if (stall_ms == 0 || ++writes != 10) return;
    spdlog::warn("fault injection: chunk write stalls {} ms now", stall_ms);
    std::this_thread::sleep_for(std::chrono::milliseconds(stall_ms));
}

// The first file of a run that does not rotate by size is <run>.h5; a unit
// starting a new stream (docs/DATASET.md "Streams") continues the run in
// <run>_00001.h5, ...
fs::path run_file_path(const run_options& o, std::uint32_t index) {
    if (o.rotate_bytes == 0 && index == 0) return o.output_dir / (o.run_name + ".h5");
    return o.output_dir / fmt::format("{}_{:05}.h5", o.run_name, index);
}

}  // namespace

struct run_file::impl {
    // Per-unit state: the chunk buffers being filled and the row counts of
    // the current file. Dataset handles belong to the current file.
    struct unit_state {
        std::uint16_t unit_id = 0;
        std::uint32_t channels = 0;
        std::uint32_t stream = 0;  // the stream (frame::stream) whose rows this file holds
        bool in_file = false;      // its group and datasets exist in the current file
        // What its frames held (DAQ1's TEST_PATTERN flag): the last frame
        // appended, and the rows of this file with and without the flag.
        bool test_pattern = false;
        std::uint64_t pattern_rows = 0;
        std::uint64_t detector_rows = 0;
        hsize_t chunk_rows = 0;
        std::string group_path;  // "/units/u3"
        // The open chunk's samples: rows 0..rows_in_chunk-1 of a block of
        // the assembler's pool, handed to HDF5 as they are (`direct`), or
        // gathered here in `raw` (and `calibrated`) by a copy.
        struct direct_rows {
            processing::block_pool* pool = nullptr;  // null: the rows are in raw/calibrated
            std::uint32_t block = 0;
            const std::uint16_t* raw = nullptr;
            const float* calibrated = nullptr;  // with `calibrated` datasets
        } direct;
        std::vector<std::uint16_t> raw;
        std::vector<std::uint64_t> frame_number;
        std::vector<std::uint64_t> timestamp_ns;
        std::vector<std::uint16_t> missing_packets;
        hsize_t rows_in_chunk = 0;     // rows of the open (last) chunk
        hsize_t rows_flushed = 0;      // rows_in_chunk when that chunk was last written partially
        hsize_t file_rows = 0;         // rows in the current file, rows_in_chunk included
        hsize_t extent = 0;            // extent currently set in the file
        hsize_t rows_stored = 0;       // rows whose chunks were written without error
        hsize_t rows_durable = 0;      // rows in the file as of its last completed H5Fflush/close
        bool have_last = false;
        std::uint64_t last_frame = 0;
        bool warned_order = false;
        bool warned_channels = false;
        std::array<h5::dataset, ds_count> ds;
        std::array<std::string, ds_count> where;  // "/units/u3/raw in <file>"
        // Processing (run_options::processing): the calibrated chunk buffer
        // (chunk_rows x channels), the dose of the current file, the constants.
        std::vector<float> calibrated;
        std::vector<double> dose;
        bool dose_dirty = false;
        processing::unit_constants constants;
        h5::dataset cal_ds;
        h5::dataset dose_ds;
        std::string cal_where;
        std::string dose_where;
    };

    run_options opt;
    run_stats stats;
    std::string started_at;
    std::uint32_t file_index = 0;
    fs::path path;      // current file
    std::string where;  // current file, for messages
    h5::plist fapl;
    h5::file file;
    std::map<std::uint16_t, unit_state> units;  // node-based: pointers stay valid
    // The files of the run as created (identity from lstat) and, once closed
    // cleanly, the rows each unit has in them: after a failure only frames
    // in files that still exist count as written.
    struct file_record {
        fs::path path;
        dev_t dev = 0;
        ino_t ino = 0;
        bool closed = false;
        std::map<std::uint16_t, std::uint64_t> unit_rows;  // when closed
    };
    std::vector<file_record> records;
    bool warned_taken_name = false;
    unit_state* last_unit = nullptr;
    std::uint64_t file_bytes = 0;  // row payload in the current file
    std::size_t pending_units = 0;  // units appended to whose objects are not in the file yet
    bool closed = false;
    bool closing = false;  // finalize_file() of the run's last file (close())
    std::optional<run_accounting> accounting;  // written by that finalize_file()
    // Disk space: bytes that may still be written before free space must be
    // read again (statvfs), and whether the reserve is being spent on closing.
    std::uint64_t space_budget = 0;
    bool using_reserve = false;
    // storage.writeback (writeback.hpp): the writer's pacer, or one of our own.
    std::unique_ptr<writeback_pacer> own_pacer;
    writeback_pacer* pacer = nullptr;
    // storage.compression (compressor.hpp): chunks submitted to the pool and
    // not yet written, oldest first; they are written in this order. A
    // chunk whose rows are in a block holds a reference to the block until
    // it is compressed.
    struct pending_chunk {
        std::shared_ptr<chunk_job> job;
        unit_state* u = nullptr;
        hsize_t start = 0;  // first row of the chunk
        hsize_t end = 0;    // rows of the unit in the file once it is written
        bool full = false;
        processing::block_pool* pool = nullptr;  // the block `job` reads, if any
        std::uint32_t block = 0;
        hsize_t skip = 0;  // leading rows written (and handed on) by an earlier partial write
    };
    std::deque<pending_chunk> pending;
    std::vector<std::shared_ptr<chunk_job>> spare_jobs;
    std::unique_ptr<compressor> own_compressor;  // when run_options::compress is null
    compressor* comp = nullptr;
    std::size_t max_in_flight = 0;
    // Of the current file: uncompressed row bytes of the full chunks written,
    // and what they take compressed (rotation by size counts stored bytes).
    std::uint64_t file_raw_stored = 0;
    std::uint64_t file_stored = 0;
    // Of the run: row bytes of the chunks written (full or partial) and what
    // they took compressed, for the ratio of rows not yet compressed.
    std::uint64_t run_rows_raw = 0;
    std::uint64_t run_rows_stored = 0;

    [[nodiscard]] bool compressed() const noexcept { return opt.compression == compression_kind::bslz4; }

    impl(run_options o, writeback_counters* wb, writeback_pacer* shared_pacer)
        : opt(std::move(o)),
          own_pacer(shared_pacer == nullptr ? std::make_unique<writeback_pacer>(wb) : nullptr),
          pacer(shared_pacer == nullptr ? own_pacer.get() : shared_pacer) {
        h5::init_library();
        stats.run_name = opt.run_name;
        if (opt.chunk_bytes == 0) opt.chunk_bytes = 1;
        if (compressed()) {
            if (opt.compress == nullptr) own_compressor = std::make_unique<compressor>(0, nullptr);
            comp = opt.compress != nullptr ? opt.compress : own_compressor.get();
            max_in_flight = opt.compress_in_flight != 0 ? opt.compress_in_flight
                                                        : std::max<std::size_t>(4, 4 * std::size_t{comp->threads()});
            if (auto* c = comp->counters()) c->capacity.set(max_in_flight);
        }
        refuse_existing();
        fapl = h5::plist(h5::check_id(H5Pcreate(H5P_FILE_ACCESS), "H5Pcreate", "file access plist"));
        h5::check(H5Pset_libver_bounds(fapl.get(), H5F_LIBVER_LATEST, H5F_LIBVER_LATEST), "H5Pset_libver_bounds",
                  "file access plist");
        // HDF5 1.10 SWMR readers hold a shared flock for as long as they keep
        // the file open: with locking, our read-write reopen (new unit,
        // stopped_at) would fail whenever someone follows the run live.
        // Exclusivity of the writer comes from H5F_ACC_EXCL and the name check.
        h5::check(H5Pset_file_locking(fapl.get(), false, true), "H5Pset_file_locking", "file access plist");
        started_at = h5::iso8601_utc_now();
        bool created = false;
        try {
            create_file(created);
        } catch (...) {
            release_handles();
            // Do not leave a half-made first file behind: it would block the name.
            if (created) {
                std::error_code ec;
                fs::remove(path, ec);
            }
            throw;
        }
    }

    ~impl() {
        release_handles();
        abandon_pending();
        for (auto& [id, u] : units) drop_direct(u);
    }

    void refuse_existing() const {
        std::error_code ec;
        if (!fs::is_directory(opt.output_dir, ec))
            throw storage_error(fmt::format("cannot create run '{}': output directory {} does not exist or is not a directory",
                                            opt.run_name, opt.output_dir.string()));
        try {
            for (const auto& entry : fs::directory_iterator(opt.output_dir)) {
                const std::string name = entry.path().filename().string();
                if (name == opt.run_name + ".h5" || is_series_file_of(name, opt.run_name))
                    throw storage_error(fmt::format("run '{}' already exists: {} (refusing to overwrite)",
                                                    opt.run_name, entry.path().string()));
            }
        } catch (const fs::filesystem_error& e) {
            throw storage_error(fmt::format("cannot create run '{}': cannot list output directory {}: {}",
                                            opt.run_name, opt.output_dir.string(), e.code().message()));
        }
    }

    // ---- small HDF5 helpers ----------------------------------------------

    void write_string_attr(hid_t loc, const char* name, const std::string& value, const std::string& loc_name) {
        h5::write_string_attr(loc, name, value, fmt::format("attribute {} of {} in {}", name, loc_name, where));
    }

    void write_double_attr(hid_t loc, const char* name, double value, const std::string& loc_name) {
        const std::string w = fmt::format("attribute {} of {} in {}", name, loc_name, where);
        h5::dataspace s(h5::check_id(H5Screate(H5S_SCALAR), "H5Screate", w));
        h5::attribute a(h5::check_id(H5Acreate2(loc, name, H5T_IEEE_F64LE, s.get(), H5P_DEFAULT, H5P_DEFAULT),
                                     "H5Acreate2", w));
        h5::check(H5Awrite(a.get(), H5T_NATIVE_DOUBLE, &value), "H5Awrite", w);
        a.close("H5Aclose", w);
    }

    void write_int_attr(hid_t loc, const char* name, std::int64_t value, const std::string& loc_name) {
        const std::string w = fmt::format("attribute {} of {} in {}", name, loc_name, where);
        h5::dataspace s(h5::check_id(H5Screate(H5S_SCALAR), "H5Screate", w));
        h5::attribute a(h5::check_id(H5Acreate2(loc, name, H5T_STD_I32LE, s.get(), H5P_DEFAULT, H5P_DEFAULT),
                                     "H5Acreate2", w));
        const auto v = static_cast<std::int32_t>(value);
        h5::check(H5Awrite(a.get(), H5T_NATIVE_INT32, &v), "H5Awrite", w);
        a.close("H5Aclose", w);
    }

    void write_u64_attr(hid_t loc, const char* name, std::uint64_t value, const std::string& loc_name) {
        const std::string w = fmt::format("attribute {} of {} in {}", name, loc_name, where);
        h5::dataspace s(h5::check_id(H5Screate(H5S_SCALAR), "H5Screate", w));
        h5::attribute a(h5::check_id(H5Acreate2(loc, name, H5T_STD_U64LE, s.get(), H5P_DEFAULT, H5P_DEFAULT),
                                     "H5Acreate2", w));
        h5::check(H5Awrite(a.get(), H5T_NATIVE_UINT64, &value), "H5Awrite", w);
        a.close("H5Aclose", w);
    }

    // A 1-D int64 array attribute (a unit's `shape`), or a scalar int64
    // (metadata) when `scalar`.
    void write_i64_attr(hid_t loc, const char* name, const std::vector<std::int64_t>& values, bool scalar,
                        const std::string& loc_name) {
        const std::string w = fmt::format("attribute {} of {} in {}", name, loc_name, where);
        const hsize_t dims[1] = {values.size()};
        h5::dataspace s(h5::check_id(scalar ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, dims, nullptr),
                                     "H5Screate", w));
        h5::attribute a(h5::check_id(H5Acreate2(loc, name, H5T_STD_I64LE, s.get(), H5P_DEFAULT, H5P_DEFAULT),
                                     "H5Acreate2", w));
        h5::check(H5Awrite(a.get(), H5T_NATIVE_INT64, values.data()), "H5Awrite", w);
        a.close("H5Aclose", w);
    }

    // A boolean attribute as h5py writes one (enum FALSE = 0, TRUE = 1 over
    // int8): h5py reads it back as numpy.bool_.
    void write_bool_attr(hid_t loc, const char* name, bool value, const std::string& loc_name) {
        const std::string w = fmt::format("attribute {} of {} in {}", name, loc_name, where);
        h5::datatype t(h5::check_id(H5Tenum_create(H5T_NATIVE_INT8), "H5Tenum_create", w));
        const std::int8_t f = 0, tr = 1;
        h5::check(H5Tenum_insert(t.get(), "FALSE", &f), "H5Tenum_insert", w);
        h5::check(H5Tenum_insert(t.get(), "TRUE", &tr), "H5Tenum_insert", w);
        h5::dataspace s(h5::check_id(H5Screate(H5S_SCALAR), "H5Screate", w));
        h5::attribute a(h5::check_id(H5Acreate2(loc, name, t.get(), s.get(), H5P_DEFAULT, H5P_DEFAULT), "H5Acreate2", w));
        const std::int8_t v = value ? 1 : 0;
        h5::check(H5Awrite(a.get(), t.get(), &v), "H5Awrite", w);
        a.close("H5Aclose", w);
    }

    // A dataset's `units` and `description` (docs/DATASET.md).
    void describe(hid_t loc, const char* name, const char* units, const char* description, const std::string& parent) {
        const std::string w = parent + "/" + name;
        h5::dataset d(h5::check_id(H5Dopen2(loc, name, H5P_DEFAULT), "H5Dopen2", w + " in " + where));
        write_string_attr(d.get(), "units", units, w);
        write_string_attr(d.get(), "description", description, w);
        d.close("H5Dclose", w + " in " + where);
    }

    hid_t make_group(hid_t loc, const char* name, const char* nx_class, const std::string& path) {
        const hid_t g = h5::check_id(H5Gcreate2(loc, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), "H5Gcreate2",
                                     path + " in " + where);
        if (nx_class != nullptr) write_string_attr(g, "NX_class", nx_class, path);
        return g;
    }

    // ---- file lifecycle ----------------------------------------------------

    void set_path(std::uint32_t index) {
        file_index = index;
        path = run_file_path(opt, index);
        where = path.string();
    }

    // Creates the current file with every unit seen so far and starts SWMR
    // writing. `created` is set once the file exists on disk.
    void create_file(bool& created) {
        set_path(file_index);
        file = h5::file(h5::check_id(H5Fcreate(where.c_str(), H5F_ACC_EXCL, H5P_DEFAULT, fapl.get()), "H5Fcreate", where));
        created = true;
        pacer->attach(file.get(), fapl.get(), where, opt.writeback);
        stats.files.push_back(path);
        {
            struct stat st {};
            if (::lstat(where.c_str(), &st) != 0)
                throw storage_error(fmt::format("lstat failed on {} just created: {}", where, std::strerror(errno)));
            records.push_back(file_record{path, st.st_dev, st.st_ino, false, {}});
        }
        // Before any frame goes in: a crash from now on leaves a file that
        // start-up recovery may mend (journal.hpp).
        journal::add(opt.output_dir, path);
        file_bytes = 0;
        file_raw_stored = file_stored = 0;
        const hid_t f = file.get();
        write_string_attr(f, "format", format_name, "/");
        write_int_attr(f, "format_version", format_version, "/");
        write_string_attr(f, "run_name", opt.run_name, "/");
        write_string_attr(f, "started_at", started_at, "/");
        write_string_attr(f, "server_version", opt.server_version, "/");
        write_string_attr(f, "config", opt.config_text, "/");
        if (compressed()) write_string_attr(f, "compression", "bslz4", "/");
        write_string_attr(f, "run", opt.run.empty() ? opt.run_name : opt.run, "/");
        if (!opt.host.empty()) write_string_attr(f, "host", opt.host, "/");
        // NeXus (docs/DATASET.md "NeXus"): the file an NXroot, /entry the
        // NXentry whose NXinstrument holds each unit's group (a hard link to
        // /units/u<id>, an NXdetector) — the /units layout stays as it was.
        write_string_attr(f, "NX_class", "NXroot", "/");
        write_string_attr(f, "default", "entry", "/");
        {
            h5::group entry(make_group(f, "entry", "NXentry", "/entry"));
            write_string_attr(entry.get(), "title", opt.run.empty() ? opt.run_name : opt.run, "/entry");
            h5::group inst(make_group(entry.get(), "instrument", "NXinstrument", "/entry/instrument"));
            inst.close("H5Gclose", "/entry/instrument in " + where);
            entry.close("H5Gclose", "/entry in " + where);
            h5::group g(make_group(f, "units", "NXcollection", "/units"));
            g.close("H5Gclose", "/units in " + where);
            h5::group m(make_group(f, "metadata", "NXcollection", "/metadata"));
            write_metadata(m.get());
            m.close("H5Gclose", "/metadata in " + where);
        }
        for (auto& [id, u] : units) {
            drop_direct(u);
            u.file_rows = u.rows_in_chunk = u.rows_flushed = u.extent = u.rows_stored = u.rows_durable = 0;
            u.pattern_rows = u.detector_rows = 0;
            // The dose is per file: a new file of the series starts from 0.
            std::fill(u.dose.begin(), u.dose.end(), 0.0);
            u.dose_dirty = false;
            create_unit_objects(u);
            u.in_file = true;
        }
        pending_units = 0;
        write_data_source();
        start_swmr();
    }

    // /metadata: one attribute per key given at run start, and "json".
    void write_metadata(hid_t m) {
        write_string_attr(m, "json", opt.metadata_json.empty() ? "{}" : opt.metadata_json, "/metadata");
        for (const auto& item : opt.metadata) {
            const char* k = item.key.c_str();
            if (const auto* sv = std::get_if<std::string>(&item.value))
                write_string_attr(m, k, *sv, "/metadata");
            else if (const auto* iv = std::get_if<std::int64_t>(&item.value))
                write_i64_attr(m, k, {*iv}, true, "/metadata");
            else if (const auto* dv = std::get_if<double>(&item.value))
                write_double_attr(m, k, *dv, "/metadata");
            else
                write_bool_attr(m, k, std::get<bool>(item.value), "/metadata");
        }
    }

    // /accounting (the run's last file, at close): the run's counts and each unit's.
    void write_accounting() {
        if (!accounting) return;
        const hid_t f = file.get();
        if (H5Lexists(f, "accounting", H5P_DEFAULT) > 0) return;
        h5::group a(make_group(f, "accounting", "NXcollection", "/accounting"));
        write_string_attr(a.get(), "description",
                          "the run's own counts, from its start to its stop, over all its files", "/accounting");
        for (const auto& [k, v] : accounting->totals) write_u64_attr(a.get(), k.c_str(), v, "/accounting");
        for (const auto& [id, fields] : accounting->units) {
            const std::string name = fmt::format("u{}", id);
            const std::string path = "/accounting/" + name;
            h5::group ug(make_group(a.get(), name.c_str(), nullptr, path));
            write_int_attr(ug.get(), "unit_id", id, path);
            for (const auto& [k, v] : fields) write_u64_attr(ug.get(), k.c_str(), v, path);
            ug.close("H5Gclose", path + " in " + where);
        }
        a.close("H5Gclose", "/accounting in " + where);
    }

    void start_swmr() {
        h5::check(H5Fstart_swmr_write(file.get()), "H5Fstart_swmr_write", where);
        for (auto& [id, u] : units)
            if (u.in_file) open_datasets(u);
    }

    void create_unit_objects(unit_state& u) {
        const std::string gw = u.group_path + " in " + where;
        h5::group g(h5::check_id(H5Gcreate2(file.get(), u.group_path.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                                 "H5Gcreate2", gw));
        write_int_attr(g.get(), "unit_id", u.unit_id, u.group_path);
        write_int_attr(g.get(), "channels", u.channels, u.group_path);
        write_int_attr(g.get(), "stream", u.stream, u.group_path);
        write_string_attr(g.get(), "data_source", u.test_pattern ? "test_pattern" : "detector", u.group_path);
        write_string_attr(g.get(), "NX_class", "NXdetector", u.group_path);
        if (auto it = opt.unit_shapes.find(u.unit_id); it != opt.unit_shapes.end() && !it->second.empty()) {
            std::uint64_t product = 1;
            for (auto e : it->second) product *= e;
            if (product == u.channels)  // a learned unit of another size has no geometry
                write_i64_attr(g.get(), "shape", std::vector<std::int64_t>(it->second.begin(), it->second.end()), false,
                               u.group_path);
        }
        const std::array<hid_t, ds_count> types{H5T_STD_U16LE, H5T_STD_U64LE, H5T_STD_U64LE, H5T_STD_U16LE};
        for (std::size_t i = 0; i < ds_count; ++i) {
            const std::string w = u.group_path + "/" + ds_names[i] + " in " + where;
            const int rank = i == ds_raw ? 2 : 1;
            const hsize_t dims[2] = {0, u.channels};
            const hsize_t maxdims[2] = {H5S_UNLIMITED, u.channels};
            const hsize_t chunk[2] = {u.chunk_rows, u.channels};
            h5::dataspace s(h5::check_id(H5Screate_simple(rank, dims, maxdims), "H5Screate_simple", w));
            h5::plist dcpl(h5::check_id(H5Pcreate(H5P_DATASET_CREATE), "H5Pcreate", w));
            h5::check(H5Pset_chunk(dcpl.get(), rank, chunk), "H5Pset_chunk", w);
            h5::check(H5Pset_obj_track_times(dcpl.get(), false), "H5Pset_obj_track_times", w);
            set_compression(dcpl.get(), ds_elem_size[i], w);
            h5::dataset d(h5::check_id(
                H5Dcreate2(g.get(), ds_names[i], types[i], s.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT), "H5Dcreate2", w));
            d.close("H5Dclose", w);
        }
        describe(g.get(), "raw", "counts", "ADC samples, one row per frame (channels in readout order; `shape` of the group gives the geometry)", u.group_path);
        describe(g.get(), "frame_number", "1", "the hardware unit's frame counter (DAQ1 frame_number)", u.group_path);
        describe(g.get(), "timestamp_ns", "ns", "the unit's timestamp of the frame (DAQ1 timestamp_ns)", u.group_path);
        describe(g.get(), "missing_packets", "1", "packets of the frame that never came (0: complete; missing samples are 0)", u.group_path);
        if (opt.processing.calibrated) create_processing_objects(u, g.get());
        g.close("H5Gclose", gw);
        // The unit as the NeXus view sees it (the same group, not a copy).
        const std::string link = fmt::format("/entry/instrument/u{}", u.unit_id);
        h5::check(H5Lcreate_hard(file.get(), u.group_path.c_str(), file.get(), link.c_str(), H5P_DEFAULT, H5P_DEFAULT),
                  "H5Lcreate_hard", link + " in " + where);
    }

    // /units/u<id>/calibrated, /dose, /calibration/{pedestal,noise,gain,threshold}.
    void create_processing_objects(unit_state& u, hid_t g) {
        {
            const std::string w = u.group_path + "/calibrated in " + where;
            const hsize_t dims[2] = {0, u.channels};
            const hsize_t maxdims[2] = {H5S_UNLIMITED, u.channels};
            const hsize_t chunk[2] = {u.chunk_rows, u.channels};
            h5::dataspace s(h5::check_id(H5Screate_simple(2, dims, maxdims), "H5Screate_simple", w));
            h5::plist dcpl(h5::check_id(H5Pcreate(H5P_DATASET_CREATE), "H5Pcreate", w));
            h5::check(H5Pset_chunk(dcpl.get(), 2, chunk), "H5Pset_chunk", w);
            h5::check(H5Pset_obj_track_times(dcpl.get(), false), "H5Pset_obj_track_times", w);
            set_compression(dcpl.get(), calibrated_elem_size, w);
            h5::dataset d(h5::check_id(
                H5Dcreate2(g, "calibrated", H5T_IEEE_F32LE, s.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT), "H5Dcreate2",
                w));
            d.close("H5Dclose", w);
            describe(g, "calibrated", "calibrated units", "(raw - pedestal) x gain, 0 below the channel's threshold", u.group_path);
        }
        if (opt.processing.dose) {
            // One chunk holding the whole array, rewritten with H5Dwrite_chunk.
            const std::string w = u.group_path + "/dose in " + where;
            const hsize_t dims[1] = {u.channels};
            h5::dataspace s(h5::check_id(H5Screate_simple(1, dims, dims), "H5Screate_simple", w));
            h5::plist dcpl(h5::check_id(H5Pcreate(H5P_DATASET_CREATE), "H5Pcreate", w));
            h5::check(H5Pset_chunk(dcpl.get(), 1, dims), "H5Pset_chunk", w);
            h5::check(H5Pset_obj_track_times(dcpl.get(), false), "H5Pset_obj_track_times", w);
            h5::dataset d(h5::check_id(
                H5Dcreate2(g, "dose", H5T_IEEE_F64LE, s.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT), "H5Dcreate2", w));
            d.close("H5Dclose", w);
            describe(g, "dose", "calibrated units", "per channel, the sum of the calibrated rows of this file", u.group_path);
        }
        const std::string cpath = u.group_path + "/calibration";
        const std::string cw = cpath + " in " + where;
        h5::group cg(h5::check_id(H5Gcreate2(g, "calibration", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), "H5Gcreate2", cw));
        const auto& k = u.constants;
        write_string_attr(cg.get(), "source", k.source, cpath);
        write_int_attr(cg.get(), "identity", k.identity ? 1 : 0, cpath);
        write_string_attr(cg.get(), "threshold_mode", std::string(processing::name(opt.processing.threshold.mode)), cpath);
        write_double_attr(cg.get(), "threshold_value", opt.processing.threshold.value, cpath);
        write_int_attr(cg.get(), "frames", static_cast<std::int64_t>(std::min<std::uint64_t>(k.frames, INT32_MAX)), cpath);
        const std::array<std::pair<const char*, const std::vector<float>*>, 4> arrays{
            {{"pedestal", &k.pedestal}, {"noise", &k.noise}, {"gain", &k.gain}, {"threshold", &k.threshold}}};
        for (const auto& [name, values] : arrays) {
            const std::string w = cpath + "/" + name + " in " + where;
            const hsize_t dims[1] = {values->size()};
            h5::dataspace s(h5::check_id(H5Screate_simple(1, dims, nullptr), "H5Screate_simple", w));
            h5::dataset d(h5::check_id(
                H5Dcreate2(cg.get(), name, H5T_IEEE_F32LE, s.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), "H5Dcreate2",
                w));
            h5::check(H5Dwrite(d.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, values->data()), "H5Dwrite", w);
            d.close("H5Dclose", w);
        }
        describe(cg.get(), "pedestal", "counts", "per channel, the mean of the raw samples without signal", cpath);
        describe(cg.get(), "noise", "counts", "per channel, the standard deviation of the raw samples without signal", cpath);
        describe(cg.get(), "gain", "calibrated units per count", "per channel, the gain applied after the pedestal", cpath);
        describe(cg.get(), "threshold", "calibrated units", "per channel, calibrated values below it are stored as 0", cpath);
        cg.close("H5Gclose", cw);
    }

    // Declares filter 32008 (bitshuffle + LZ4) with its cd_values on a
    // dataset: the chunks are compressed by the pool and written as they
    // are, so HDF5 never runs the filter while writing.
    void set_compression(hid_t dcpl, std::uint32_t elem_size, const std::string& w) {
        if (!compressed()) return;
        const auto cd = codec::bslz4_cd_values(elem_size);
        h5::check(H5Pset_filter(dcpl, static_cast<H5Z_filter_t>(codec::bslz4_filter_id), H5Z_FLAG_MANDATORY, cd.size(),
                                cd.data()),
                  "H5Pset_filter (bitshuffle/LZ4, filter 32008)", w);
    }

    void open_datasets(unit_state& u) {
        for (std::size_t i = 0; i < ds_count; ++i) {
            u.where[i] = u.group_path + "/" + ds_names[i] + " in " + where;
            const std::string p = u.group_path + "/" + ds_names[i];
            u.ds[i] = h5::dataset(h5::check_id(H5Dopen2(file.get(), p.c_str(), H5P_DEFAULT), "H5Dopen2", u.where[i]));
        }
        if (opt.processing.calibrated) {
            u.cal_where = u.group_path + "/calibrated in " + where;
            const std::string p = u.group_path + "/calibrated";
            u.cal_ds = h5::dataset(h5::check_id(H5Dopen2(file.get(), p.c_str(), H5P_DEFAULT), "H5Dopen2", u.cal_where));
        }
        if (opt.processing.calibrated && opt.processing.dose) {
            u.dose_where = u.group_path + "/dose in " + where;
            const std::string p = u.group_path + "/dose";
            u.dose_ds = h5::dataset(h5::check_id(H5Dopen2(file.get(), p.c_str(), H5P_DEFAULT), "H5Dopen2", u.dose_where));
        }
    }

    void close_file_checked() {
        retire_all();
        for (auto& [id, u] : units) {
            for (std::size_t i = 0; i < ds_count; ++i) u.ds[i].close("H5Dclose", u.where[i]);
            u.cal_ds.close("H5Dclose", u.cal_where);
            u.dose_ds.close("H5Dclose", u.dose_where);
        }
        file.close("H5Fclose", where);
    }

    // Reopens the current file read-write without SWMR (file locking is off,
    // see the constructor). Retried briefly against transient failures.
    void reopen_rdwr() {
        for (int attempt = 0;; ++attempt) {
            const hid_t id = H5Fopen(where.c_str(), H5F_ACC_RDWR, fapl.get());
            if (id >= 0) {
                file = h5::file(id);
                return;
            }
            if (attempt >= 3) h5::fail("H5Fopen (read-write)", where);
            H5Eclear2(H5E_DEFAULT);
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
    }

    // Closes handles without throwing (failure paths, destructor). A close
    // that fails after a write error is expected (its flush fails too); see
    // h5::init_library() for why that is safe.
    void release_handles() noexcept {
        abandon_pending();
        bool ok = true;
        for (auto& [id, u] : units) {
            for (auto& d : u.ds) ok = d.reset() && ok;
            ok = u.cal_ds.reset() && ok;
            ok = u.dose_ds.reset() && ok;
        }
        ok = file.reset() && ok;
        if (!ok) spdlog::debug("run '{}': closing {} after an error failed as well", opt.run_name, where);
        pacer->detach(false);
    }

    // ---- disk space ----------------------------------------------------------

    // Free bytes for unprivileged writers on the output file system, or nullopt.
    std::optional<std::uint64_t> free_space() const {
        struct statvfs v {};
        if (::statvfs(opt.output_dir.c_str(), &v) != 0) return std::nullopt;
        return std::uint64_t{v.f_bavail} * std::uint64_t{v.f_frsize};
    }

    // Reads the free space again: what may be written before the reserve.
    void refresh_space_budget() {
        if (opt.reserve_bytes == 0) return;
        const auto free = free_space();
        space_budget = !free ? UINT64_MAX : (*free > opt.reserve_bytes ? *free - opt.reserve_bytes : 0);
    }

    // Before writing `bytes`: throws disk_full_error when that would eat into
    // the reserve (unless the reserve is what is being spent now, closing).
    void ensure_space(std::uint64_t bytes) {
        if (opt.reserve_bytes == 0 || using_reserve) return;
        if (space_budget < bytes) refresh_space_budget();
        if (space_budget < bytes) {
            const auto free = free_space().value_or(0);
            throw disk_full_error(fmt::format(
                "disk full: {} has {} bytes free, less than the {} bytes needed plus storage.reserve_bytes = {} "
                "kept for closing; {} closed with the {} frames appended so far",
                opt.output_dir.string(), free, bytes, opt.reserve_bytes, where, stats.frames_written));
        }
        space_budget -= bytes;
    }

    // ---- data path ---------------------------------------------------------

    // Makes the datasets' extent cover `rows` (default: every row appended).
    // With compression, only rows whose chunks are written: a SWMR reader
    // must never see rows of a chunk still being compressed.
    void set_extent(unit_state& u) { set_extent(u, u.file_rows); }
    void set_extent(unit_state& u, hsize_t rows) {
        if (rows <= u.extent) return;
        const hsize_t dims[2] = {rows, u.channels};
        for (std::size_t i = 0; i < ds_count; ++i)
            h5::check(H5Dset_extent(u.ds[i].get(), dims), "H5Dset_extent", u.where[i]);
        if (u.cal_ds) h5::check(H5Dset_extent(u.cal_ds.get(), dims), "H5Dset_extent", u.cal_where);
        u.extent = rows;
    }

    // Writes the open chunk of every dataset of u (whole, or partial with the
    // unused rows zeroed) after making the extent cover it.
    void write_chunk(unit_state& u) {
        const hsize_t start = u.file_rows - u.rows_in_chunk;
        const hsize_t r = u.rows_in_chunk;
        const hsize_t n = u.chunk_rows;
        // A whole chunk in a block goes to HDF5 from there. A partial one is
        // copied first: the assembler is still filling the block's later rows.
        const bool from_block = u.direct.pool != nullptr && r == n;
        if (u.direct.pool != nullptr && !from_block) copy_direct_rows(u);
        if (r < n) zero_padding(u);
        if (compressed()) {
            submit_chunk(u, start, from_block);
            return;
        }
        ensure_space(u.raw.size() * 2u + u.chunk_rows * (8u + 8u + 2u) + u.calibrated.size() * sizeof(float));
        if (const auto delay = fault_slow_write(); delay.count() > 0) std::this_thread::sleep_for(delay);
        fault_stall_once();
        set_extent(u);
        const std::uint64_t t0 = common::monotonic_ns();
        const hsize_t offset[2] = {start, 0};
        const std::array<std::pair<const void*, std::size_t>, ds_count> bufs{{
            {from_block ? u.direct.raw : u.raw.data(), u.raw.size() * sizeof(std::uint16_t)},
            {u.frame_number.data(), u.frame_number.size() * sizeof(std::uint64_t)},
            {u.timestamp_ns.data(), u.timestamp_ns.size() * sizeof(std::uint64_t)},
            {u.missing_packets.data(), u.missing_packets.size() * sizeof(std::uint16_t)},
        }};
        for (std::size_t i = 0; i < ds_count; ++i)
            h5::check(H5Dwrite_chunk(u.ds[i].get(), H5P_DEFAULT, 0, offset, bufs[i].second, bufs[i].first),
                      "H5Dwrite_chunk", u.where[i]);
        if (u.cal_ds)
            h5::check(H5Dwrite_chunk(u.cal_ds.get(), H5P_DEFAULT, 0, offset, u.calibrated.size() * sizeof(float),
                                     from_block ? u.direct.calibrated : u.calibrated.data()),
                      "H5Dwrite_chunk", u.cal_where);
        u.rows_stored = u.file_rows;
        stats.write_ns += common::monotonic_ns() - t0;
        pacer->note();
        if (opt.sink != nullptr && r > u.rows_flushed) {
            // The new rows only: rows of a chunk written partially before were handed on then.
            const hsize_t skip = u.rows_flushed;
            const auto frames = static_cast<std::uint32_t>(r - skip);
            sunk_chunk sc = sunk_frames(u, start + skip, frames, u.frame_number.data() + skip,
                                        u.timestamp_ns.data() + skip, u.missing_packets.data() + skip);
            const std::size_t row_raw = std::size_t{u.channels} * sizeof(std::uint16_t);
            sc.arrays[sc.array_count++] = {"raw", "<u2", (from_block ? u.direct.raw : u.raw.data()) + skip * u.channels,
                                           frames * row_raw, 2, frames, 0};
            if (u.cal_ds)
                sc.arrays[sc.array_count++] = {"calibrated", "<f4",
                                               (from_block ? u.direct.calibrated : u.calibrated.data()) + skip * u.channels,
                                               frames * std::size_t{u.channels} * sizeof(float), 4, frames, 0};
            opt.sink->chunk_written(sc);
        }
        if (r == n) {
            ++(from_block ? stats.chunks_direct : stats.chunks_compacted);
            drop_direct(u);
        }
    }

    // ---- compression (compressor.hpp) ----------------------------------------

    // Zeroes the rows of the open chunk after rows_in_chunk (they are stored
    // in a partial chunk).
    void zero_padding(unit_state& u) {
        const hsize_t r = u.rows_in_chunk;
        std::fill(u.raw.begin() + static_cast<std::ptrdiff_t>(r * u.channels), u.raw.end(), std::uint16_t{0});
        std::fill(u.frame_number.begin() + static_cast<std::ptrdiff_t>(r), u.frame_number.end(), 0);
        std::fill(u.timestamp_ns.begin() + static_cast<std::ptrdiff_t>(r), u.timestamp_ns.end(), 0);
        std::fill(u.missing_packets.begin() + static_cast<std::ptrdiff_t>(r), u.missing_packets.end(), 0);
        if (!u.calibrated.empty())
            std::fill(u.calibrated.begin() + static_cast<std::ptrdiff_t>(r * u.channels), u.calibrated.end(), 0.0f);
    }

    std::shared_ptr<chunk_job> take_job() {
        if (spare_jobs.empty()) return std::make_shared<chunk_job>();
        auto job = std::move(spare_jobs.back());
        spare_jobs.pop_back();
        job->reset();
        return job;
    }

    // Hands the open chunk of u (rows start..file_rows) to the pool: a full
    // chunk in a block is compressed from there (the block stays referenced
    // until then), anything else from a copy the job owns, since the unit's
    // buffers fill on at once. Written later, in order, by retire_front().
    void submit_chunk(unit_state& u, hsize_t start, bool from_block) {
        while (pending.size() >= max_in_flight) retire_front();
        auto job = take_job();
        auto add = [&](const void* src, std::size_t bytes, std::uint32_t elem_size, bool copy) {
            auto& p = job->parts[job->count++];
            p.bytes = bytes;
            p.elem_size = elem_size;
            if (copy) {
                p.owned.resize(bytes);
                std::memcpy(p.owned.data(), src, bytes);
                p.in = nullptr;
            } else {
                p.in = src;
            }
        };
        add(from_block ? u.direct.raw : u.raw.data(), u.raw.size() * sizeof(std::uint16_t), ds_elem_size[ds_raw],
            !from_block);
        add(u.frame_number.data(), u.frame_number.size() * sizeof(std::uint64_t), ds_elem_size[ds_frame_number], true);
        add(u.timestamp_ns.data(), u.timestamp_ns.size() * sizeof(std::uint64_t), ds_elem_size[ds_timestamp_ns], true);
        add(u.missing_packets.data(), u.missing_packets.size() * sizeof(std::uint16_t), ds_elem_size[ds_missing_packets],
            true);
        if (u.cal_ds)
            add(from_block ? u.direct.calibrated : u.calibrated.data(), u.calibrated.size() * sizeof(float),
                calibrated_elem_size, !from_block);
        pending_chunk c{job, &u, start, u.file_rows, u.rows_in_chunk == u.chunk_rows, nullptr, 0, u.rows_flushed};
        if (c.full) {
            ++(from_block ? stats.chunks_direct : stats.chunks_compacted);
            if (from_block) {
                // The block's reference moves to the pending chunk.
                c.pool = u.direct.pool;
                c.block = u.direct.block;
                u.direct = {};
            } else {
                drop_direct(u);
            }
        }
        if (auto* k = comp->counters()) k->in_flight.add_shared(1);
        comp->submit(std::move(job));
        pending.push_back(std::move(c));
    }

    // Writes the oldest pending chunk, waiting for its compression. A write
    // that fails leaves it first in line: after a disk-full error the file
    // is closed with it (the reserve pays), so no chunk is skipped.
    void retire_front() {
        pending_chunk& c = pending.front();
        comp->wait(*c.job);
        if (c.pool != nullptr) {
            c.pool->unref_release(c.block);  // compressed: the block is not read again
            c.pool = nullptr;
        }
        if (!c.job->error.empty()) {
            const std::string message = fmt::format("{} in {}: {}", c.u->group_path, where, c.job->error);
            pop_front_pending();
            throw storage_error(message);
        }
        write_compressed(c);
        spare_jobs.push_back(c.job);
        pop_front_pending();
    }

    void pop_front_pending() noexcept {
        pending.pop_front();
        if (auto* k = comp->counters()) k->in_flight.sub(1);  // the writer thread's, as the adds
    }

    void retire_ready() {
        while (!pending.empty() && pending.front().job->done.load(std::memory_order_acquire)) retire_front();
    }

    void retire_all() {
        while (!pending.empty()) retire_front();
    }

    // After a failure, or when the run file goes: waits for the pool to be
    // done with every pending chunk, writes none of them, gives the blocks back.
    void abandon_pending() noexcept {
        while (!pending.empty()) {
            auto& c = pending.front();
            try {
                comp->wait(*c.job);
            } catch (...) {
            }
            if (c.pool != nullptr) c.pool->unref_release(c.block);
            pop_front_pending();
        }
    }

    void write_compressed(const pending_chunk& c) {
        unit_state& u = *c.u;
        const chunk_job& job = *c.job;
        std::uint64_t stored = 0, in = 0;
        for (std::size_t i = 0; i < job.count; ++i) {
            stored += job.parts[i].out_bytes;
            in += job.parts[i].bytes;
        }
        ensure_space(stored);
        if (const auto delay = fault_slow_write(); delay.count() > 0) std::this_thread::sleep_for(delay);
        fault_stall_once();
        set_extent(u, c.end);
        const std::uint64_t t0 = common::monotonic_ns();
        const hsize_t offset[2] = {c.start, 0};
        for (std::size_t i = 0; i < job.count; ++i) {
            const auto& p = job.parts[i];
            const bool cal = i == ds_count;
            h5::check(H5Dwrite_chunk(cal ? u.cal_ds.get() : u.ds[i].get(), H5P_DEFAULT, 0, offset, p.out_bytes,
                                     p.out.data()),
                      "H5Dwrite_chunk", cal ? u.cal_where : u.where[i]);
        }
        u.rows_stored = std::max(u.rows_stored, c.end);
        stats.write_ns += common::monotonic_ns() - t0;
        stats.chunk_bytes_in += in;
        stats.chunk_bytes_stored += stored;
        const std::uint64_t rows_raw = (c.end - c.start) * (row_bytes(u.channels) + (u.cal_ds ? 4ull * u.channels : 0));
        run_rows_raw += rows_raw;
        run_rows_stored += stored;
        if (c.full) {
            file_raw_stored += rows_raw;
            file_stored += stored;
        }
        pacer->note();
        if (opt.sink != nullptr && c.end - c.start > c.skip) {
            // As stored (compressed, the whole chunk); its new rows begin at skip.
            const auto frames = static_cast<std::uint32_t>(c.end - c.start - c.skip);
            const auto* fn = reinterpret_cast<const std::uint64_t*>(job.parts[ds_frame_number].owned.data());
            const auto* ts = reinterpret_cast<const std::uint64_t*>(job.parts[ds_timestamp_ns].owned.data());
            const auto* mp = reinterpret_cast<const std::uint16_t*>(job.parts[ds_missing_packets].owned.data());
            sunk_chunk sc = sunk_frames(u, c.start + c.skip, frames, fn + c.skip, ts + c.skip, mp + c.skip);
            const auto rows = static_cast<std::uint32_t>(u.chunk_rows);
            const auto skip = static_cast<std::uint32_t>(c.skip);
            sc.arrays[sc.array_count++] = {"raw", "<u2", job.parts[ds_raw].out.data(), job.parts[ds_raw].out_bytes, 2,
                                           rows, skip};
            if (job.count > ds_count)
                sc.arrays[sc.array_count++] = {"calibrated", "<f4", job.parts[ds_count].out.data(),
                                               job.parts[ds_count].out_bytes, 4, rows, skip};
            opt.sink->chunk_written(sc);
        }
    }

    // A chunk for the sink (chunk_sink.hpp): `frames` rows of u from row `row` of the current file.
    sunk_chunk sunk_frames(const unit_state& u, hsize_t row, std::uint32_t frames, const std::uint64_t* fn,
                           const std::uint64_t* ts, const std::uint16_t* mp) const {
        sunk_chunk sc;
        sc.unit_id = u.unit_id;
        sc.channels = u.channels;
        sc.file_index = file_index;
        sc.file_row = row;
        sc.frames = frames;
        sc.frame_number = fn;
        sc.timestamp_ns = ts;
        sc.missing_packets = mp;
        sc.compression = opt.compression;
        return sc;
    }

    // ---- rows in blocks (one copy: processing/README.md) --------------------

    // Copies the open chunk's rows that are still in a block into raw (and
    // calibrated); the block stays referenced (its rows are read-only now).
    void copy_direct_rows(unit_state& u) {
        const std::size_t rows = u.rows_in_chunk;
        std::memcpy(u.raw.data(), u.direct.raw, rows * u.channels * sizeof(std::uint16_t));
        if (!u.calibrated.empty())
            std::memcpy(u.calibrated.data(), u.direct.calibrated, rows * u.channels * sizeof(float));
        stats.rows_copied += rows;
    }

    // The open chunk's rows leave the block for good: into raw, and the
    // chunk will be written from there (compacted).
    void gather(unit_state& u) {
        copy_direct_rows(u);
        drop_direct(u);
    }

    void drop_direct(unit_state& u) noexcept {
        if (u.direct.pool == nullptr) return;
        u.direct.pool->unref_release(u.direct.block);
        u.direct = {};
    }

    // Takes frame f's row into the open chunk: without a copy when it is the
    // next row of the block the chunk is in (or row 0 of a block that starts
    // the chunk), else by a copy into raw (and calibrated).
    void take_row(unit_state& u, const processing::frame& f) {
        const hsize_t r = u.rows_in_chunk;
        const bool calibrated = !u.calibrated.empty();
        const bool same_shape = f.pool != nullptr && f.block_rows == u.chunk_rows;
        const bool in_block = same_shape && f.row == r && (!calibrated || f.calibrated != nullptr);
        // Out of phase (a run or stream started mid-block, a frame rejected):
        // the assembler starts its next block where this file's next chunk starts.
        if (same_shape && (f.row == 0) != (r == 0))
            f.pool->set_phase(f.unit_id, static_cast<std::uint32_t>((r + u.chunk_rows - f.taken % u.chunk_rows) % u.chunk_rows));
        if (u.direct.pool != nullptr) {
            const bool next = in_block && f.pool == u.direct.pool && f.block == u.direct.block &&
                              (!calibrated || f.calibrated == u.direct.calibrated + r * u.channels);
            if (next) return;
            gather(u);  // a hole or a reordered frame: this chunk is gathered by a copy
        } else if (r == 0 && in_block) {
            f.pool->ref(f.block);
            u.direct = {f.pool, f.block, f.samples, calibrated ? f.calibrated : nullptr};
            return;
        }
        std::memcpy(u.raw.data() + r * u.channels, f.samples, std::size_t{u.channels} * 2u);
        if (calibrated) {
            float* row = u.calibrated.data() + r * u.channels;
            if (f.calibrated != nullptr)
                std::memcpy(row, f.calibrated, std::size_t{u.channels} * sizeof(float));
            else
                std::fill(row, row + u.channels, 0.0f);
        }
        ++stats.rows_copied;
    }

    // After a failed write (the disk refused, say): cut every unit's datasets
    // back to the rows whose chunks were written, so that a reader never
    // sees rows of a chunk that is not in the file. Best effort, never throws.
    // Returns the rows appended but not in the file.
    std::uint64_t salvage() noexcept {
        std::uint64_t dropped = 0;
        for (auto& [id, u] : units) {
            dropped += u.file_rows - std::min(u.file_rows, u.rows_stored);
            if (u.extent <= u.rows_stored) continue;
            const hsize_t dims[2] = {u.rows_stored, u.channels};
            for (auto& d : u.ds)
                if (d && H5Dset_extent(d.get(), dims) < 0) H5Eclear2(H5E_DEFAULT);
            if (u.cal_ds && H5Dset_extent(u.cal_ds.get(), dims) < 0) H5Eclear2(H5E_DEFAULT);
            u.extent = u.rows_stored;
        }
        return dropped;
    }

    // Rewrites the unit's dose (the sum of the calibrated rows of this file).
    void write_dose(unit_state& u) {
        const hsize_t offset[1] = {0};
        h5::check(H5Dwrite_chunk(u.dose_ds.get(), H5P_DEFAULT, 0, offset, u.dose.size() * sizeof(double), u.dose.data()),
                  "H5Dwrite_chunk", u.dose_where);
        u.dose_dirty = false;
    }

    // What the current file stores once `next` more raw bytes are appended:
    // raw, its row bytes; compressed, the full chunks as written plus the
    // rows not yet in one at the run's compression ratio so far (1 before
    // the first chunk).
    [[nodiscard]] std::uint64_t stored_estimate(std::uint64_t next) const noexcept {
        if (!compressed()) return file_bytes + next;
        const double pending = static_cast<double>(file_bytes - file_raw_stored + next);
        const double ratio = run_rows_raw == 0 ? 1.0
                                               : static_cast<double>(run_rows_stored) / static_cast<double>(run_rows_raw);
        return file_stored + static_cast<std::uint64_t>(pending * ratio);
    }

    // Writes the unit's partial chunk if it holds rows not yet in the file.
    void write_partial_chunk(unit_state& u) {
        if (u.rows_in_chunk > 0 && u.rows_in_chunk != u.rows_flushed) {
            write_chunk(u);
            u.rows_flushed = u.rows_in_chunk;
        }
        if (!compressed()) set_extent(u);  // compressed: as each chunk is written
        if (u.dose_dirty && u.dose_ds) write_dose(u);
    }

    // Creates the objects of every unit that appeared since the last time, in
    // one pass: objects cannot be created in SWMR write mode, so the file is
    // left, reopened and SWMR re-entered once for all of them (not once per
    // unit: a flood of new unit ids must not stall the writer).
    void create_pending_units() {
        if (pending_units == 0) return;
        for (auto& [id, u] : units)
            if (u.in_file) write_partial_chunk(u);
        close_file_checked();
        for (auto& [id, u] : units)
            if (u.in_file) u.rows_durable = u.file_rows;
        check_file_present();  // never reopen another file that took the name
        reopen_rdwr();
        std::string ids;
        std::size_t n = 0;
        for (auto& [id, u] : units) {
            if (u.in_file) continue;
            create_unit_objects(u);
            u.in_file = true;
            if (n++ < 8) ids += fmt::format("{}u{}", ids.empty() ? "" : ", ", id);
        }
        pending_units = 0;
        write_data_source();
        start_swmr();
        if (n > 8) ids += fmt::format(" and {} more", n - 8);
        if (file_bytes > 0)
            spdlog::info("run '{}': unit(s) {} added mid-run to {}; SWMR readers must reopen the file to see them",
                         opt.run_name, ids, where);
        else
            spdlog::debug("run '{}': unit(s) {} added to {}", opt.run_name, ids, where);
    }

    // Writes every partial chunk holding rows not yet in the file.
    void write_partial_chunks() {
        create_pending_units();
        for (auto& [id, u] : units) write_partial_chunk(u);
    }

    // Chunk buffers and constants for the unit's frame size. Rows per chunk
    // are capped so that a unit with few channels (or a flood of one-packet
    // units) does not cost megabytes of metadata chunks per unit.
    void size_unit(unit_state& u, std::uint32_t channels) {
        u.channels = channels;
        u.chunk_rows = processing::chunk_rows(opt.chunk_bytes, channels);  // as the assembler's blocks
        u.raw.assign(u.chunk_rows * channels, 0);
        u.frame_number.assign(u.chunk_rows, 0);
        u.timestamp_ns.assign(u.chunk_rows, 0);
        u.missing_packets.assign(u.chunk_rows, 0);
        if (opt.processing.calibrated) {
            u.calibrated.assign(u.chunk_rows * channels, 0.0f);
            if (opt.processing.dose) u.dose.assign(channels, 0.0);
            static const processing::calibration_set no_calibration;
            const auto& set = opt.processing.calibration ? *opt.processing.calibration : no_calibration;
            u.constants = set.resolve(u.unit_id, channels, opt.processing.threshold);
        }
        stats.units[u.unit_id].channels = channels;
    }

    // The unit started a new stream (its frame numbers went back, or its
    // frame size changed): rows ascend within every file, so the run goes on
    // in the next file, whose unit group says which stream it holds.
    void start_stream(unit_state& u, const processing::frame& f) {
        finalize_file();
        u.stream = f.stream;
        u.have_last = false;
        u.warned_order = false;
        u.warned_channels = false;
        if (f.channels != u.channels) size_unit(u, f.channels);
        next_file();
        spdlog::info("run '{}': unit {} started stream {} at frame {}; the run continues in {}", opt.run_name,
                     f.unit_id, f.stream, f.frame_number, where);
    }

    // The root attribute data_source: what the rows of this file hold, as
    // far as the file goes now ("none" before any row). Written whenever the
    // file is open for write outside SWMR (a unit added, the file closed).
    void write_data_source() {
        std::uint64_t pattern = 0, detector = 0;
        bool any_unit = false;
        for (const auto& [id, u] : units) {
            if (!u.in_file) continue;
            any_unit = true;
            pattern += u.pattern_rows;
            detector += u.detector_rows;
        }
        std::string source = "none";
        if (pattern > 0 && detector > 0)
            source = "mixed";
        else if (pattern > 0)
            source = "test_pattern";
        else if (detector > 0)
            source = "detector";
        else if (any_unit) {
            // Units in the file and no row flushed yet: what their frames said.
            bool p = false, d = false;
            for (const auto& [id, u] : units)
                if (u.in_file) (u.test_pattern ? p : d) = true;
            source = p && d ? "mixed" : p ? "test_pattern" : "detector";
        }
        h5::replace_string_attr(file.get(), "data_source", source, fmt::format("attribute data_source of / in {}", where));
    }

    unit_state& add_unit(const processing::frame& f) {
        unit_state u;
        u.unit_id = f.unit_id;
        u.test_pattern = f.test_pattern;
        u.stream = f.stream;
        u.group_path = fmt::format("/units/u{}", f.unit_id);
        size_unit(u, f.channels);
        // Its group and datasets are made with the other new units' at the
        // next flush, or when its first chunk is full (create_pending_units).
        auto [it, inserted] = units.emplace(f.unit_id, std::move(u));
        ++pending_units;
        return it->second;
    }

    void finalize_file() {
        write_partial_chunks();
        // Every row is in the file now (partial chunks are written from copies).
        for (auto& [id, u] : units) drop_direct(u);
        close_file_checked();
        for (auto& [id, u] : units) u.rows_durable = u.file_rows;
        check_file_present();
        reopen_rdwr();
        write_data_source();
        write_string_attr(file.get(), "stopped_at", h5::iso8601_utc_now(), "/");
        if (closing) write_accounting();
        file.close("H5Fclose", where);
        pacer->detach(true);
        auto& rec = records.back();
        rec.closed = true;
        for (auto& [id, u] : units) rec.unit_rows[id] = u.file_rows;
        journal::remove(opt.output_dir, path);
    }

    void rotate() {
        finalize_file();
        next_file();
        spdlog::info("run '{}': continuing in {}", opt.run_name, where);
    }

    // Creates the next file of the series: the next number whose name is
    // free. A name taken meanwhile (someone put a file there) is skipped,
    // logged once per run; H5F_ACC_EXCL still refuses one that appears in
    // between.
    void next_file() {
        std::uint32_t next = file_index + 1;
        for (int tries = 0;; ++next, ++tries) {
            struct stat st {};
            const fs::path p = run_file_path(opt, next);
            if (::lstat(p.c_str(), &st) != 0 && errno == ENOENT) break;
            if (tries >= 1000)
                throw storage_error(fmt::format("run '{}': no free file name after {} (1000 taken)", opt.run_name,
                                                run_file_path(opt, file_index + 1).string()));
            if (!warned_taken_name) {
                warned_taken_name = true;
                spdlog::warn("run '{}': {} exists already (not written by this run); skipping to the next free name",
                             opt.run_name, p.string());
            }
        }
        set_path(next);
        bool created = false;
        create_file(created);
    }

    // Throws storage_error when the current file is no longer at its path:
    // deleted, its directory removed or unmounted, or replaced by another
    // file. Writing on would store frames in a file nobody can open.
    void check_file_present() const {
        const auto& rec = records.back();
        struct stat st {};
        if (::lstat(where.c_str(), &st) != 0) {
            const int err = errno;
            throw storage_error(fmt::format(
                "run file {} is gone ({}: {}): the file or its directory {} was deleted or unmounted while the run "
                "was written",
                where, "lstat", std::strerror(err), opt.output_dir.string()));
        }
        if (st.st_dev != rec.dev || st.st_ino != rec.ino)
            throw storage_error(fmt::format("run file {} was replaced by another file (inode {} instead of {}) while the "
                                            "run was written",
                                            where, static_cast<unsigned long long>(st.st_ino),
                                            static_cast<unsigned long long>(rec.ino)));
    }

    // After a failure: count as written only the rows of files that still
    // exist (same inode) — of a closed file every row, of the current one
    // the rows of its last completed flush. Returns the frames no longer
    // counted.
    std::uint64_t recount_written() noexcept {
        std::map<std::uint16_t, std::uint64_t> rows;
        for (std::size_t i = 0; i < records.size(); ++i) {
            const auto& rec = records[i];
            struct stat st {};
            const bool present = ::lstat(rec.path.c_str(), &st) == 0 && st.st_dev == rec.dev && st.st_ino == rec.ino;
            if (!present) continue;
            if (rec.closed) {
                for (const auto& [id, n] : rec.unit_rows) rows[id] += n;
            } else if (i + 1 == records.size()) {
                // What the file holds now, as a reader (after recovery) will
                // find it: the disk may have taken more than the last flush.
                // Read in a fresh open (our handles are released); if that
                // fails, the last flush is what is surely there.
                try {
                    for (const auto& [id, n] : rows_kept(rec.path)) rows[id] += n;
                } catch (const std::exception& e) {
                    spdlog::debug("run '{}': cannot count the rows of {} ({}); counting those of its last flush",
                                  opt.run_name, rec.path.string(), e.what());
                    for (const auto& [id, u] : units) rows[id] += u.rows_durable;
                }
            }
        }
        const std::uint64_t before = stats.frames_written;
        std::uint64_t frames = 0;
        std::uint64_t bytes = 0;
        for (auto& [id, s] : stats.units) {
            const auto it = rows.find(id);
            const std::uint64_t n = it == rows.end() ? 0 : std::min<std::uint64_t>(it->second, s.frames_written);
            s.frames_unwritten += s.frames_written - n;
            s.frames_written = n;
            frames += n;
            bytes += n * (row_bytes(s.channels) + (opt.processing.calibrated ? 4ull * s.channels : 0));
        }
        stats.frames_written = std::min(frames, before);
        stats.bytes_written = std::min(bytes, stats.bytes_written);
        stats.frames_unwritten += before - stats.frames_written;
        return before - stats.frames_written;
    }

    void append(const processing::frame& f) {
        if (f.channels == 0 || f.samples == nullptr) {
            ++stats.frames_rejected;
            return;
        }
        unit_state* u = last_unit;
        if (u == nullptr || u->unit_id != f.unit_id) {
            auto it = units.find(f.unit_id);
            u = it == units.end() ? nullptr : &it->second;
        }
        if (u != nullptr && f.stream != u->stream) start_stream(*u, f);
        if (u != nullptr) {
            if (f.channels != u->channels) {
                ++stats.frames_rejected;
                if (!u->warned_channels) {
                    u->warned_channels = true;
                    spdlog::warn("run '{}': unit {} sent a frame of {} channels, the run has {}; such frames are not recorded",
                                 opt.run_name, f.unit_id, f.channels, u->channels);
                }
                return;
            }
            if (u->have_last && f.frame_number <= u->last_frame) {
                ++stats.frames_rejected;
                if (!u->warned_order) {
                    u->warned_order = true;
                    spdlog::warn("run '{}': unit {} frame {} after frame {}; frames out of order are not recorded",
                                 opt.run_name, f.unit_id, f.frame_number, u->last_frame);
                }
                return;
            }
        }
        const std::uint64_t rb = row_bytes(f.channels) + (opt.processing.calibrated ? 4ull * f.channels : 0);
        if (!pending.empty()) retire_ready();
        if (opt.rotate_bytes > 0 && file_bytes > 0) {
            // Rotation by size counts what the file stores (stored_estimate).
            // Before the run has compressed anything the ratio is unknown:
            // the open chunks are compressed once to learn it, rather than
            // cutting the first file at raw size.
            if (compressed() && run_rows_raw == 0 && stored_estimate(rb) > opt.rotate_bytes) {
                write_partial_chunks();
                retire_all();
            }
            if (stored_estimate(rb) > opt.rotate_bytes) rotate();
        }
        if (u == nullptr) u = &add_unit(f);
        last_unit = u;
        if (f.calibrated != nullptr && opt.processing.calibrated && f.threshold_epoch != opt.processing.threshold_epoch) {
            // Calibrated before the run's threshold was taken up: the same
            // arithmetic as the backends (bit-identical), the run's constants.
            const auto& k = u->constants;
            kernels::calibrate_row(f.samples, k.pedestal.data(), k.gain.data(), k.threshold.data(), f.calibrated,
                                   f.channels);
            ++stats.frames_recalibrated;
        }

        take_row(*u, f);
        u->test_pattern = f.test_pattern;
        ++(f.test_pattern ? u->pattern_rows : u->detector_rows);
        u->frame_number[u->rows_in_chunk] = f.frame_number;
        u->timestamp_ns[u->rows_in_chunk] = f.timestamp_ns;
        u->missing_packets[u->rows_in_chunk] = f.missing_packets;
        if (!u->dose.empty() && f.calibrated != nullptr) {
            // The per-file dose, summed here from the rows of this file (a
            // row without calibrated values is stored as zeros).
            double* d = u->dose.data();
            for (std::uint32_t c = 0; c < u->channels; ++c) d[c] += static_cast<double>(f.calibrated[c]);
            u->dose_dirty = true;
        }
        ++u->rows_in_chunk;
        ++u->file_rows;
        u->have_last = true;
        u->last_frame = f.frame_number;
        file_bytes += rb;

        auto& s = stats.units[f.unit_id];
        if (s.frames_written == 0) s.first_frame = f.frame_number;
        s.last_frame = f.frame_number;
        ++s.frames_written;
        ++stats.frames_written;
        stats.bytes_written += rb;

        if (u->rows_in_chunk == u->chunk_rows) {
            if (!u->in_file) create_pending_units();
            write_chunk(*u);
            u->rows_in_chunk = 0;
            u->rows_flushed = 0;
        }
    }

    void flush() {
        write_partial_chunks();
        retire_all();
        h5::check(H5Fflush(file.get(), H5F_SCOPE_GLOBAL), "H5Fflush", where);
        pacer->note();
        check_file_present();
        for (auto& [id, u] : units) u.rows_durable = u.file_rows;
        ++stats.flushes;
        refresh_space_budget();  // others write to the same file system too
    }

    void close() {
        if (closed) return;
        closed = true;
        if (stats.failed) {
            release_handles();
            return;
        }
        closing = true;
        finalize_file();
    }

    // Runs an operation; on any failure marks the run failed, gives up the
    // file handles (nothing more is written) and rethrows.
    template <typename F>
    void guarded(F&& fn) {
        if (stats.failed) throw storage_error(stats.error);
        if (closed && !file) throw storage_error(fmt::format("run '{}' is closed", opt.run_name));
        try {
            fn();
        } catch (const disk_full_error& e) {
            stats.failed = true;
            if (stats.error.empty()) stats.error = e.what();
            // The reserve pays for closing the file with every frame appended.
            using_reserve = true;
            try {
                finalize_file();
            } catch (const std::exception& close_error) {
                stats.error += fmt::format("; closing {} failed too: {}", where, close_error.what());
                release_handles();
                if (const auto lost = recount_written(); lost > 0)
                    stats.error += fmt::format(" ({} frames appended are not in any file)", lost);
            }
            closed = true;
            throw;
        } catch (const std::exception& e) {
            stats.failed = true;
            if (stats.error.empty()) {
                stats.error = e.what();
                if (const auto free = free_space())
                    stats.error += fmt::format(" ({} bytes free in {})", *free, opt.output_dir.string());
            }
            salvage();
            release_handles();
            if (const auto lost = recount_written(); lost > 0)
                stats.error += fmt::format(" ({} frames appended are not in any file)", lost);
            throw;
        }
    }
};

run_file::run_file(run_options options, writeback_counters* writeback)
    : _impl(std::make_unique<impl>(std::move(options), writeback, nullptr)) {}

run_file::run_file(run_options options, writeback_pacer& pacer)
    : _impl(std::make_unique<impl>(std::move(options), nullptr, &pacer)) {}

run_file::~run_file() {
    if (!_impl || _impl->closed) return;
    try {
        close();
    } catch (const std::exception& e) {
        spdlog::error("run '{}': closing failed: {}", _impl->opt.run_name, e.what());
    }
}

void run_file::append(const processing::frame& f) {
    _impl->guarded([&] { _impl->append(f); });
}

void run_file::flush() {
    _impl->guarded([&] { _impl->flush(); });
}

void run_file::poll() {
    if (_impl->pending.empty()) return;
    _impl->guarded([&] { _impl->retire_ready(); });
}

bool run_file::chunks_ready() const noexcept {
    return !_impl->pending.empty() && _impl->pending.front().job->done.load(std::memory_order_acquire);
}

void run_file::set_accounting(run_accounting accounting) { _impl->accounting = std::move(accounting); }

void run_file::close() {
    if (_impl->closed) return;
    if (_impl->stats.failed) {
        _impl->close();
        return;
    }
    _impl->guarded([&] { _impl->close(); });
}

const run_stats& run_file::stats() const noexcept { return _impl->stats; }

}  // namespace daqd::storage
