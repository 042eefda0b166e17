// Recovery of run files left open by a crash: see recovery.hpp.
#include "daqd/storage/recovery.hpp"

#include "daqd/storage/h5.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <vector>

namespace daqd::storage {

namespace {

namespace fs = std::filesystem;

h5::plist file_access(bool clear_status_flags, const std::string& where) {
    h5::plist fapl(h5::check_id(H5Pcreate(H5P_FILE_ACCESS), "H5Pcreate", where));
    h5::check(H5Pset_file_locking(fapl.get(), false, true), "H5Pset_file_locking", where);
    if (clear_status_flags) {
        // What `h5clear -s` sets: a file access property of the library
        // (H5F_ACS_CLEAR_STATUS_FLAGS_NAME), reachable by name through H5Pset.
        hbool_t clear = 1;
        h5::check(H5Pset(fapl.get(), "clear_status_flags", &clear), "H5Pset(clear_status_flags)", where);
    }
    return fapl;
}

// Rows of `ds` that are stored: the extent, cut at the first chunk (from the
// end) that was never allocated.
hsize_t stored_rows(hid_t ds, const std::string& where) {
    h5::dataspace space(h5::check_id(H5Dget_space(ds), "H5Dget_space", where));
    const int rank = H5Sget_simple_extent_ndims(space.get());
    if (rank < 1 || rank > 2) throw storage_error(where + ": expected a 1- or 2-dimensional dataset");
    hsize_t dims[2] = {0, 0};
    h5::check(H5Sget_simple_extent_dims(space.get(), dims, nullptr), "H5Sget_simple_extent_dims", where);
    h5::plist dcpl(h5::check_id(H5Dget_create_plist(ds), "H5Dget_create_plist", where));
    hsize_t chunk[2] = {0, 0};
    if (H5Pget_layout(dcpl.get()) != H5D_CHUNKED) return dims[0];
    h5::check(H5Pget_chunk(dcpl.get(), 2, chunk), "H5Pget_chunk", where);
    if (chunk[0] == 0) return dims[0];
    hsize_t rows = dims[0];
    while (rows > 0) {
        const hsize_t start = (rows - 1) / chunk[0] * chunk[0];
        const hsize_t offset[2] = {start, 0};
        unsigned mask = 0;
        haddr_t addr = HADDR_UNDEF;
        hsize_t size = 0;
        h5::check(H5Dget_chunk_info_by_coord(ds, offset, &mask, &addr, &size), "H5Dget_chunk_info_by_coord", where);
        if (addr != HADDR_UNDEF && size > 0) break;
        rows = start;
    }
    return rows;
}

// The first `rows` frame numbers must ascend strictly (the writer never
// stores them otherwise): rows past the first that does not are not frames.
hsize_t ascending_rows(hid_t ds, hsize_t rows, const std::string& where) {
    if (rows < 2) return rows;
    std::vector<std::uint64_t> fn(rows);
    h5::check(H5Dread(ds, H5T_NATIVE_UINT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, fn.data()), "H5Dread", where);
    for (hsize_t i = 1; i < rows; ++i)
        if (fn[i] <= fn[i - 1]) return i;
    return rows;
}

struct unit_fix {
    std::string group;
    std::vector<std::string> datasets;  // row datasets of the unit
    hsize_t extent = 0;
    hsize_t keep = 0;
};

}  // namespace

recovery_result recover_run_file(const fs::path& path) {
    h5::init_library();
    recovery_result r;
    r.file = path;
    const std::string where = path.string();
    try {
        {
            auto fapl = file_access(false, where);
            const hid_t id = H5Fopen(where.c_str(), H5F_ACC_RDONLY, fapl.get());
            if (id >= 0) {
                h5::file f(id);
                return r;  // closed properly (or never left open): nothing to do
            }
            H5Eclear2(H5E_DEFAULT);
        }
        auto fapl = file_access(true, where);
        h5::file f(h5::check_id(H5Fopen(where.c_str(), H5F_ACC_RDWR, fapl.get()), "H5Fopen (clearing status flags)",
                                where));
        r.was_open = true;
        const hid_t fid = f.get();
        std::vector<unit_fix> fixes;
        if (H5Lexists(fid, "units", H5P_DEFAULT) > 0) {
            h5::group units(h5::check_id(H5Gopen2(fid, "units", H5P_DEFAULT), "H5Gopen2", "/units in " + where));
            H5G_info_t info{};
            h5::check(H5Gget_info(units.get(), &info), "H5Gget_info", "/units in " + where);
            for (hsize_t i = 0; i < info.nlinks; ++i) {
                char name[256] = "";
                if (H5Lget_name_by_idx(units.get(), ".", H5_INDEX_NAME, H5_ITER_INC, i, name, sizeof name,
                                       H5P_DEFAULT) < 0) {
                    H5Eclear2(H5E_DEFAULT);
                    continue;
                }
                unit_fix u;
                u.group = std::string("/units/") + name;
                for (const char* d : {"raw", "frame_number", "timestamp_ns", "missing_packets", "calibrated"}) {
                    const std::string p = u.group + "/" + d;
                    if (H5Lexists(fid, p.c_str(), H5P_DEFAULT) > 0) u.datasets.push_back(p);
                }
                if (u.datasets.empty()) continue;
                hsize_t keep = ~hsize_t{0};
                for (const auto& p : u.datasets) {
                    const std::string w = p + " in " + where;
                    h5::dataset ds(h5::check_id(H5Dopen2(fid, p.c_str(), H5P_DEFAULT), "H5Dopen2", w));
                    h5::dataspace sp(h5::check_id(H5Dget_space(ds.get()), "H5Dget_space", w));
                    hsize_t dims[2] = {0, 0};
                    h5::check(H5Sget_simple_extent_dims(sp.get(), dims, nullptr), "H5Sget_simple_extent_dims", w);
                    u.extent = std::max(u.extent, dims[0]);
                    keep = std::min(keep, std::min(dims[0], stored_rows(ds.get(), w)));
                }
                const std::string fnp = u.group + "/frame_number";
                if (H5Lexists(fid, fnp.c_str(), H5P_DEFAULT) > 0 && keep > 0) {
                    const std::string w = fnp + " in " + where;
                    h5::dataset ds(h5::check_id(H5Dopen2(fid, fnp.c_str(), H5P_DEFAULT), "H5Dopen2", w));
                    // Read the rows kept so far (a crash leaves at most one flush interval unread).
                    h5::dataspace sp(h5::check_id(H5Dget_space(ds.get()), "H5Dget_space", w));
                    hsize_t dims[1] = {0};
                    h5::check(H5Sget_simple_extent_dims(sp.get(), dims, nullptr), "H5Sget_simple_extent_dims", w);
                    if (dims[0] == keep) keep = ascending_rows(ds.get(), keep, w);
                }
                u.keep = keep;
                fixes.push_back(std::move(u));
            }
        }
        for (const auto& u : fixes) {
            r.frames_kept += u.keep;
            r.rows_trimmed += u.extent - u.keep;
            for (const auto& p : u.datasets) {
                const std::string w = p + " in " + where;
                h5::dataset ds(h5::check_id(H5Dopen2(fid, p.c_str(), H5P_DEFAULT), "H5Dopen2", w));
                h5::dataspace sp(h5::check_id(H5Dget_space(ds.get()), "H5Dget_space", w));
                hsize_t dims[2] = {0, 0};
                const int rank = h5::check(H5Sget_simple_extent_dims(sp.get(), dims, nullptr),
                                           "H5Sget_simple_extent_dims", w);
                if (dims[0] == u.keep) continue;
                dims[0] = u.keep;
                (void)rank;
                h5::check(H5Dset_extent(ds.get(), dims), "H5Dset_extent", w);
            }
        }
        const std::string root = "/ in " + where;
        for (const char* a : {"recovered_at", "recovered_frames"})
            if (H5Aexists(fid, a) > 0) h5::check(H5Adelete(fid, a), "H5Adelete", root);
        h5::write_string_attr(fid, "recovered_at", h5::iso8601_utc_now(), root);
        {
            h5::dataspace s(h5::check_id(H5Screate(H5S_SCALAR), "H5Screate", root));
            h5::attribute a(h5::check_id(
                H5Acreate2(fid, "recovered_frames", H5T_STD_U64LE, s.get(), H5P_DEFAULT, H5P_DEFAULT), "H5Acreate2",
                root));
            const std::uint64_t v = r.frames_kept;
            h5::check(H5Awrite(a.get(), H5T_NATIVE_UINT64, &v), "H5Awrite", root);
            a.close("H5Aclose", root);
        }
        f.close("H5Fclose", where);
        r.recovered = true;
    } catch (const std::exception& e) {
        r.error = e.what();
        H5Eclear2(H5E_DEFAULT);
    }
    return r;
}

std::vector<recovery_result> recover_run_files(const fs::path& dir) {
    std::vector<recovery_result> out;
    std::error_code ec;
    std::vector<fs::path> files;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
        const auto name = it->path().filename().string();
        if (name.empty() || name.front() == '.' || it->path().extension() != ".h5") continue;
        if (!it->is_regular_file(ec)) continue;
        files.push_back(it->path());
    }
    if (ec) spdlog::warn("recovery: cannot list {}: {}", dir.string(), ec.message());
    std::sort(files.begin(), files.end());
    for (const auto& f : files) {
        auto r = recover_run_file(f);
        if (r.recovered)
            spdlog::warn("recovered {}: it was left open for write (daqd stopped without closing it); kept {} frames "
                         "up to its last flush{}",
                         f.string(), r.frames_kept,
                         r.rows_trimmed ? fmt::format(", dropped {} rows past it", r.rows_trimmed) : std::string());
        else if (!r.error.empty())
            spdlog::error("cannot recover {}: {}", f.string(), r.error);
        if (r.was_open || !r.error.empty()) out.push_back(std::move(r));
    }
    return out;
}

}  // namespace daqd::storage
