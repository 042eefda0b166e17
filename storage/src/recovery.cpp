// Recovery of run files left open by a crash: see recovery.hpp.
#include "daqd/storage/recovery.hpp"

#include "daqd/storage/h5.hpp"
#include "daqd/storage/journal.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <map>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <span>
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

// Rows of `ds` that are stored: the extent, cut at the first chunk that was
// never allocated (a row there would read as the fill value, not as data).
// The writer writes chunks in order, so a crash leaves missing chunks at the
// end; a hole further up is cut at as well.
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
    for (hsize_t start = 0; start < dims[0]; start += chunk[0]) {
        const hsize_t offset[2] = {start, 0};
        unsigned mask = 0;
        haddr_t addr = HADDR_UNDEF;
        hsize_t size = 0;
        h5::check(H5Dget_chunk_info_by_coord(ds, offset, &mask, &addr, &size), "H5Dget_chunk_info_by_coord", where);
        if (addr == HADDR_UNDEF || size == 0) return start;
    }
    return dims[0];
}

// Rows of a unit's frame numbers that are frames: the writer stores them
// strictly ascending, so the first row that does not ascend (the zero
// padding of a chunk written before its rows arrived, or stale data) and
// everything after it is not. The one place that says which sequences are
// valid: a rule for restarts (a new stream) belongs here.
hsize_t consistent_prefix(std::span<const std::uint64_t> fn) {
    for (std::size_t i = 1; i < fn.size(); ++i)
        if (fn[i] <= fn[i - 1]) return i;
    return fn.size();
}

// Reads the first `rows` frame numbers of `ds` and returns how many of them
// are consistent (consistent_prefix).
hsize_t ascending_rows(hid_t ds, hsize_t rows, const std::string& where) {
    if (rows < 2) return rows;
    std::vector<std::uint64_t> fn(rows);
    h5::dataspace file_space(h5::check_id(H5Dget_space(ds), "H5Dget_space", where));
    const hsize_t start[1] = {0};
    const hsize_t count[1] = {rows};
    h5::check(H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, start, nullptr, count, nullptr),
              "H5Sselect_hyperslab", where);
    h5::dataspace mem_space(h5::check_id(H5Screate_simple(1, count, nullptr), "H5Screate_simple", where));
    h5::check(H5Dread(ds, H5T_NATIVE_UINT64, mem_space.get(), file_space.get(), H5P_DEFAULT, fn.data()), "H5Dread",
              where);
    return consistent_prefix(fn);
}

// Other processes that have the file (dev, ino) open, from /proc/*/fd (ours
// not counted). Only processes we may inspect are seen (all of them as root).
std::vector<pid_t> other_openers(dev_t dev, ino_t ino) {
    std::vector<pid_t> out;
    const pid_t self = ::getpid();
    DIR* proc = ::opendir("/proc");
    if (proc == nullptr) return out;
    while (const dirent* pe = ::readdir(proc)) {
        char* end = nullptr;
        const long pid = std::strtol(pe->d_name, &end, 10);
        if (end == pe->d_name || *end != '\0' || pid <= 0 || pid == self) continue;
        const std::string fd_dir = fmt::format("/proc/{}/fd", pid);
        DIR* fds = ::opendir(fd_dir.c_str());
        if (fds == nullptr) continue;
        while (const dirent* fe = ::readdir(fds)) {
            if (fe->d_name[0] == '.') continue;
            struct stat st {};
            if (::fstatat(::dirfd(fds), fe->d_name, &st, 0) == 0 && st.st_dev == dev && st.st_ino == ino) {
                out.push_back(static_cast<pid_t>(pid));
                break;
            }
        }
        ::closedir(fds);
    }
    ::closedir(proc);
    return out;
}

std::string pid_list(const std::vector<pid_t>& pids) {
    std::string s;
    for (const pid_t p : pids) {
        std::string comm;
        if (FILE* f = std::fopen(fmt::format("/proc/{}/comm", p).c_str(), "r")) {
            char buf[64] = "";
            if (std::fgets(buf, sizeof buf, f) != nullptr) comm = buf;
            std::fclose(f);
            while (!comm.empty() && comm.back() == '\n') comm.pop_back();
        }
        s += fmt::format("{}{}{}", s.empty() ? "" : ", ", p, comm.empty() ? std::string() : " (" + comm + ")");
    }
    return s;
}

struct unit_fix {
    std::string group;
    std::vector<std::string> datasets;  // row datasets of the unit
    hsize_t extent = 0;
    hsize_t keep = 0;
};

// Per unit of an open run file: its row datasets, their largest extent and
// the rows to keep (stored in every dataset, frame numbers consistent).
std::vector<unit_fix> plan(hid_t fid, const std::string& where) {
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
                keep = ascending_rows(ds.get(), std::min(keep, dims[0]), w);
            }
            u.keep = keep;
            fixes.push_back(std::move(u));
        }
    }
    return fixes;
}

}  // namespace

recovery_result recover_run_file(const fs::path& path) {
    h5::init_library();
    recovery_result r;
    r.file = path;
    const std::string where = path.string();
    int fd = -1;
    try {
        // The file itself, never what a symlink points to; held open so that
        // HDF5 opens exactly this inode (through /proc/self/fd), whatever
        // happens to the name meanwhile.
        fd = ::open(where.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0) {
            const int err = errno;
            throw storage_error(err == ELOOP ? fmt::format("{} is a symlink: not followed (name the file itself)", where)
                                             : fmt::format("open failed on {}: {}", where, std::strerror(err)));
        }
        struct stat st {};
        if (::fstat(fd, &st) != 0) throw storage_error(fmt::format("fstat failed on {}: {}", where, std::strerror(errno)));
        if (!S_ISREG(st.st_mode)) throw storage_error(fmt::format("{} is not a regular file", where));
        if (const auto pids = other_openers(st.st_dev, st.st_ino); !pids.empty())
            throw storage_error(fmt::format("{} is open in another process ({}): not touched", where, pid_list(pids)));
        const std::string hdf5_path = fmt::format("/proc/self/fd/{}", fd);
        {
            auto fapl = file_access(false, where);
            const hid_t id = H5Fopen(hdf5_path.c_str(), H5F_ACC_RDONLY, fapl.get());
            if (id >= 0) {
                // Closed, but is it whole? A close can go through after a
                // write error (disk full: the metadata fitted, a chunk did
                // not), leaving a unit's datasets of different lengths or
                // rows that were never stored. Such a file is mended too; a
                // file daqd closed properly always passes.
                h5::file f(id);
                const auto fixes = plan(f.get(), where);
                f.reset();
                const bool whole = std::all_of(fixes.begin(), fixes.end(), [](const unit_fix& u) {
                    return u.keep == u.extent;
                });
                if (whole) {
                    ::close(fd);
                    return r;  // closed properly (or never left open): nothing to do
                }
                r.closed_inconsistent = true;
            } else {
                H5Eclear2(H5E_DEFAULT);
                r.was_open = true;
            }
        }
        auto fapl = file_access(true, where);
        h5::file f(h5::check_id(H5Fopen(hdf5_path.c_str(), H5F_ACC_RDWR, fapl.get()), "H5Fopen (clearing status flags)",
                                where));
        const hid_t fid = f.get();
        const std::vector<unit_fix> fixes = plan(fid, where);
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
    if (fd >= 0) ::close(fd);
    return r;
}

std::map<std::uint16_t, std::uint64_t> rows_kept(const fs::path& path) {
    h5::init_library();
    const std::string where = path.string();
    auto fapl = file_access(false, where);
    hid_t id = H5Fopen(where.c_str(), H5F_ACC_RDONLY | H5F_ACC_SWMR_READ, fapl.get());
    if (id < 0) {
        H5Eclear2(H5E_DEFAULT);
        id = H5Fopen(where.c_str(), H5F_ACC_RDONLY, fapl.get());
    }
    h5::file f(h5::check_id(id, "H5Fopen (read-only)", where));
    std::map<std::uint16_t, std::uint64_t> out;
    for (const auto& u : plan(f.get(), where)) {
        const auto slash = u.group.rfind("/u");
        if (slash == std::string::npos) continue;
        out[static_cast<std::uint16_t>(std::strtoul(u.group.c_str() + slash + 2, nullptr, 10))] = u.keep;
    }
    f.close("H5Fclose", where);
    return out;
}

std::vector<recovery_result> recover_run_files(const fs::path& dir) {
    std::vector<recovery_result> out;
    std::vector<journal::entry> entries;
    try {
        entries = journal::list(dir);
    } catch (const std::exception& e) {
        spdlog::error("recovery: {}; no file recovered", e.what());
        return out;
    }
    for (const auto& e : entries) {
        const fs::path f = dir / e.file;
        struct stat st {};
        if (::lstat(f.c_str(), &st) != 0) {
            spdlog::info("recovery: {} (left open by daqd pid {}) no longer exists; journal entry cleared", f.string(),
                         e.pid);
            journal::remove(dir, f);
            continue;
        }
        if (!S_ISREG(st.st_mode) || st.st_dev != e.dev || st.st_ino != e.ino) {
            recovery_result r;
            r.file = f;
            r.error = fmt::format("{} is not the file daqd pid {} created (a symlink or another file now has its name); "
                                  "not touched (daqd --recover FILE mends a file you name)",
                                  f.string(), e.pid);
            spdlog::error("recovery: {}", r.error);
            journal::remove(dir, f);
            out.push_back(std::move(r));
            continue;
        }
        auto r = recover_run_file(f);
        if (r.recovered)
            spdlog::warn("recovered {}: {}; kept {} frames up to its last flush{}", f.string(),
                         r.was_open ? "it was left open for write (daqd stopped without closing it)"
                                    : "it was closed after a write error with rows some of its datasets lack",
                         r.frames_kept,
                         r.rows_trimmed ? fmt::format(", dropped {} rows past it", r.rows_trimmed) : std::string());
        else if (!r.error.empty())
            spdlog::error("cannot recover {}: {}", f.string(), r.error);
        // Mended or closed after all: done with it. A failure keeps the entry
        // (a process that has the file open may let go of it by the next start).
        if (r.error.empty()) journal::remove(dir, f);
        if (r.recovered || !r.error.empty()) out.push_back(std::move(r));
    }
    return out;
}

}  // namespace daqd::storage
