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
    h5::plist fapl = h5::swmr_read_access(where);  // rows_kept() may open it as a SWMR reader
    h5::check(H5Pset_file_locking(fapl.get(), false, true), "H5Pset_file_locking", where);
    if (clear_status_flags) {
        // What `h5clear -s` sets: a file access property of the library
        // (H5F_ACS_CLEAR_STATUS_FLAGS_NAME), reachable by name through H5Pset.
        hbool_t clear = 1;
        h5::check(H5Pset(fapl.get(), "clear_status_flags", &clear), "H5Pset(clear_status_flags)", where);
    }
    return fapl;
}

// Where a file's stored bytes end: its EOA (what HDF5 reads up to) or its
// length on disk, whichever is less. A chunk indexed past it cannot be read.
haddr_t stored_end(hid_t fid, std::uint64_t file_bytes, const std::string& where) {
    haddr_t eoa = HADDR_UNDEF;
    h5::check(H5Fget_eoa(fid, &eoa), "H5Fget_eoa", where);
    return std::min<haddr_t>(eoa, file_bytes);
}

// Rows per chunk of `ds` (0: not chunked).
hsize_t chunk_rows(hid_t ds, const std::string& where) {
    h5::plist dcpl(h5::check_id(H5Dget_create_plist(ds), "H5Dget_create_plist", where));
    if (H5Pget_layout(dcpl.get()) != H5D_CHUNKED) return 0;
    hsize_t chunk[2] = {0, 0};
    h5::check(H5Pget_chunk(dcpl.get(), 2, chunk), "H5Pget_chunk", where);
    return chunk[0];
}

// A dataset's chunks as indexed: the rows stored, and where the furthest
// chunk indexed ends.
struct chunk_scan {
    hsize_t rows = 0;  // the extent, cut at the first chunk not stored
    haddr_t end = 0;   // end of the furthest chunk indexed (0: none, or not chunked)
    bool torn = false; // a part of the chunk index could not be read
};

// Rows of `ds` that are stored: the extent, cut at the first chunk that was
// never allocated (a row there would read as the fill value, not as data) or
// that the index places past `file_end` (after a disk-full error HDF5 may
// index a chunk whose bytes never reached the file, or were cut off when it
// closed the file). The writer writes chunks in order, so such chunks are at
// the end; a hole further up is cut at as well.
chunk_scan scan_chunks(hid_t ds, haddr_t file_end, const std::string& where) {
    h5::dataspace space(h5::check_id(H5Dget_space(ds), "H5Dget_space", where));
    const int rank = H5Sget_simple_extent_ndims(space.get());
    if (rank < 1 || rank > 2) throw storage_error(where + ": expected a 1- or 2-dimensional dataset");
    hsize_t dims[2] = {0, 0};
    h5::check(H5Sget_simple_extent_dims(space.get(), dims, nullptr), "H5Sget_simple_extent_dims", where);
    chunk_scan out{dims[0], 0};
    const hsize_t step = chunk_rows(ds, where);
    if (step == 0) return out;
    bool cut = false;
    for (hsize_t start = 0; start < dims[0]; start += step) {
        const hsize_t offset[2] = {start, 0};
        unsigned mask = 0;
        haddr_t addr = HADDR_UNDEF;
        hsize_t size = 0;
        if (H5Dget_chunk_info_by_coord(ds, offset, &mask, &addr, &size) < 0) {
            // The index itself cannot be read here (a block of it torn by a
            // write the disk refused): nothing from here on is stored.
            H5Eclear2(H5E_DEFAULT);
            if (!cut) out.rows = start;
            out.torn = true;
            break;
        }
        const bool indexed = addr != HADDR_UNDEF && size != 0;
        if (indexed) out.end = std::max<haddr_t>(out.end, addr + size);
        if (!cut && (!indexed || addr + size > file_end)) {
            out.rows = start;
            cut = true;
        }
    }
    return out;
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

// Reads rows [first, first + n) of the frame numbers into `out`; false
// (error cleared) when they cannot be read.
bool read_frame_numbers(hid_t ds, hsize_t first, hsize_t n, std::uint64_t* out, const std::string& where) {
    h5::dataspace file_space(h5::check_id(H5Dget_space(ds), "H5Dget_space", where));
    const hsize_t start[1] = {first};
    const hsize_t count[1] = {n};
    h5::check(H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, start, nullptr, count, nullptr),
              "H5Sselect_hyperslab", where);
    h5::dataspace mem_space(h5::check_id(H5Screate_simple(1, count, nullptr), "H5Screate_simple", where));
    if (H5Dread(ds, H5T_NATIVE_UINT64, mem_space.get(), file_space.get(), H5P_DEFAULT, out) >= 0) return true;
    H5Eclear2(H5E_DEFAULT);
    return false;
}

// Reads the first `rows` frame numbers of `ds` and returns how many of them
// are consistent (consistent_prefix). A chunk that cannot be read (its bytes
// are not what the index says: a write cut short by a full disk) ends them.
hsize_t ascending_rows(hid_t ds, hsize_t rows, const std::string& where) {
    if (rows < 2) return rows;
    std::vector<std::uint64_t> fn(rows);
    if (!read_frame_numbers(ds, 0, rows, fn.data(), where)) {
        // Chunk by chunk, up to the first that does not read.
        const hsize_t chunk = chunk_rows(ds, where);
        const hsize_t step = chunk == 0 ? rows : chunk;
        hsize_t readable = 0;
        while (readable < rows) {
            const hsize_t n = std::min(step, rows - readable);
            if (!read_frame_numbers(ds, readable, n, fn.data() + readable, where)) break;
            readable += n;
        }
        fn.resize(readable);
    }
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
    haddr_t chunks_end = 0;  // end of the furthest chunk indexed in any of them
    std::vector<std::string> torn;  // those whose chunk index could not be read whole
};

// Per unit of an open run file: its row datasets, their largest extent and
// the rows to keep (stored in every dataset, frame numbers consistent).
// `file_bytes`: the file's length on disk.
std::vector<unit_fix> plan(hid_t fid, std::uint64_t file_bytes, const std::string& where) {
    std::vector<unit_fix> fixes;
    const haddr_t file_end = stored_end(fid, file_bytes, where);
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
                const auto scan = scan_chunks(ds.get(), file_end, w);
                u.chunks_end = std::max(u.chunks_end, scan.end);
                if (scan.torn) u.torn.push_back(p);
                keep = std::min(keep, std::min(dims[0], scan.rows));
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

// Copies every attribute of `from` onto `to` (the types as stored, variable
// length strings included).
void copy_attributes(hid_t from, hid_t to, const std::string& where) {
    H5O_info_t info{};
    h5::check(H5Oget_info2(from, &info, H5O_INFO_NUM_ATTRS), "H5Oget_info2", where);
    for (hsize_t i = 0; i < info.num_attrs; ++i) {
        h5::attribute a(h5::check_id(H5Aopen_by_idx(from, ".", H5_INDEX_NAME, H5_ITER_INC, i, H5P_DEFAULT, H5P_DEFAULT),
                                     "H5Aopen_by_idx", where));
        char name[256] = "";
        h5::check(static_cast<int>(H5Aget_name(a.get(), sizeof name, name)), "H5Aget_name", where);
        h5::datatype type(h5::check_id(H5Aget_type(a.get()), "H5Aget_type", where));
        h5::datatype mem(h5::check_id(H5Tget_native_type(type.get(), H5T_DIR_ASCEND), "H5Tget_native_type", where));
        h5::dataspace space(h5::check_id(H5Aget_space(a.get()), "H5Aget_space", where));
        const hssize_t n = H5Sget_simple_extent_npoints(space.get());
        std::vector<unsigned char> buf(static_cast<std::size_t>(std::max<hssize_t>(n, 1)) * H5Tget_size(mem.get()));
        h5::check(H5Aread(a.get(), mem.get(), buf.data()), "H5Aread", std::string(name) + " of " + where);
        h5::attribute b(h5::check_id(H5Acreate2(to, name, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT),
                                     "H5Acreate2", std::string(name) + " of " + where));
        const herr_t written = H5Awrite(b.get(), mem.get(), buf.data());
        if (H5Tdetect_class(mem.get(), H5T_VLEN) > 0 || H5Tis_variable_str(mem.get()) > 0)
            H5Dvlen_reclaim(mem.get(), space.get(), H5P_DEFAULT, buf.data());
        h5::check(written, "H5Awrite", std::string(name) + " of " + where);
    }
}

// Replaces dataset `p` by a copy of its first `keep` rows, chunk by chunk as
// stored (nothing decompressed). For a dataset HDF5 cannot shrink: its chunk
// index is torn past `keep` (a block of it half written when the disk
// refused), and shrinking looks up every chunk it drops. The file grows by
// the rows copied.
void rebuild_rows(hid_t fid, const std::string& p, hsize_t keep, const std::string& where) {
    const std::string w = p + " in " + where;
    const std::string tmp = p + ".mending";
    if (H5Lexists(fid, tmp.c_str(), H5P_DEFAULT) > 0)
        h5::check(H5Ldelete(fid, tmp.c_str(), H5P_DEFAULT), "H5Ldelete", tmp + " in " + where);
    {
        h5::dataset old(h5::check_id(H5Dopen2(fid, p.c_str(), H5P_DEFAULT), "H5Dopen2", w));
        h5::plist dcpl(h5::check_id(H5Dget_create_plist(old.get()), "H5Dget_create_plist", w));
        h5::datatype type(h5::check_id(H5Dget_type(old.get()), "H5Dget_type", w));
        h5::dataspace sp(h5::check_id(H5Dget_space(old.get()), "H5Dget_space", w));
        hsize_t dims[2] = {0, 0};
        hsize_t maxdims[2] = {0, 0};
        const int rank = h5::check(H5Sget_simple_extent_dims(sp.get(), dims, maxdims), "H5Sget_simple_extent_dims", w);
        dims[0] = keep;
        h5::dataspace nsp(h5::check_id(H5Screate_simple(rank, dims, maxdims), "H5Screate_simple", w));
        h5::dataset fresh(h5::check_id(
            H5Dcreate2(fid, tmp.c_str(), type.get(), nsp.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT), "H5Dcreate2",
            tmp + " in " + where));
        const hsize_t step = std::max<hsize_t>(chunk_rows(old.get(), w), 1);  // torn: found chunked
        std::vector<unsigned char> buf;
        for (hsize_t start = 0; start < keep; start += step) {
            const hsize_t offset[2] = {start, 0};
            hsize_t bytes = 0;
            h5::check(H5Dget_chunk_storage_size(old.get(), offset, &bytes), "H5Dget_chunk_storage_size", w);
            buf.resize(bytes);
            std::uint32_t mask = 0;
            h5::check(H5Dread_chunk(old.get(), H5P_DEFAULT, offset, &mask, buf.data()), "H5Dread_chunk", w);
            h5::check(H5Dwrite_chunk(fresh.get(), H5P_DEFAULT, mask, offset, bytes, buf.data()), "H5Dwrite_chunk",
                      tmp + " in " + where);
        }
        copy_attributes(old.get(), fresh.get(), w);
        fresh.close("H5Dclose", tmp + " in " + where);
        // Deleting the torn dataset would walk its index to free its
        // chunks, and fail: it is unlinked but kept (a reference count
        // of its own), its space not reused.
        h5::check(H5Oincr_refcount(old.get()), "H5Oincr_refcount", w);
    }
    h5::check(H5Ldelete(fid, p.c_str(), H5P_DEFAULT), "H5Ldelete", w);
    h5::check(H5Lmove(fid, tmp.c_str(), fid, p.c_str(), H5P_DEFAULT, H5P_DEFAULT), "H5Lmove", w);
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
                const auto fixes = plan(f.get(), static_cast<std::uint64_t>(st.st_size), where);
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
        const std::vector<unit_fix> fixes = plan(fid, static_cast<std::uint64_t>(st.st_size), where);
        // Chunks indexed past the file's end (their bytes never reached it)
        // are dropped with the rows trimmed below. HDF5 returns a dropped
        // chunk's space to its free list; for that space to be real, the
        // file's EOA is first moved past every chunk indexed (HDF5 then
        // extends the file to it when it closes, as a sparse tail).
        haddr_t chunks_end = 0;
        for (const auto& u : fixes) chunks_end = std::max(chunks_end, u.chunks_end);
        haddr_t eoa = HADDR_UNDEF;
        h5::check(H5Fget_eoa(fid, &eoa), "H5Fget_eoa", where);
        // (H5Fincrement_filesize sets it to the larger of EOA and the file's
        // length, plus the increment.)
        const haddr_t eoa_or_eof = std::max<haddr_t>(eoa, static_cast<haddr_t>(st.st_size));
        if (chunks_end > eoa)
            h5::check(H5Fincrement_filesize(fid, chunks_end > eoa_or_eof ? chunks_end - eoa_or_eof : 0),
                      "H5Fincrement_filesize", where);
        // First the datasets whose chunk index is torn: HDF5 cannot shrink
        // them (it looks up every chunk it drops), so the rows kept are
        // copied into a new dataset of the same name. Done before any
        // chunk is dropped, while the file's free space is as HDF5 left it.
        for (const auto& u : fixes) {
            r.frames_kept += u.keep;
            r.rows_trimmed += u.extent - u.keep;
            for (const auto& p : u.torn) {
                spdlog::warn("recovery: {} in {}: its chunk index is torn past row {}; copying the {} rows kept into a "
                             "new dataset",
                             p, where, u.keep, u.keep);
                rebuild_rows(fid, p, u.keep, where);
                ++r.datasets_rebuilt;
            }
        }
        for (const auto& u : fixes) {
            for (const auto& p : u.datasets) {
                if (std::find(u.torn.begin(), u.torn.end(), p) != u.torn.end()) continue;
                const std::string w = p + " in " + where;
                h5::dataset ds(h5::check_id(H5Dopen2(fid, p.c_str(), H5P_DEFAULT), "H5Dopen2", w));
                h5::dataspace sp(h5::check_id(H5Dget_space(ds.get()), "H5Dget_space", w));
                hsize_t dims[2] = {0, 0};
                h5::check(H5Sget_simple_extent_dims(sp.get(), dims, nullptr), "H5Sget_simple_extent_dims", w);
                if (dims[0] == u.keep) continue;
                dims[0] = u.keep;
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
    struct stat st {};
    if (::stat(where.c_str(), &st) != 0) throw storage_error(fmt::format("stat failed on {}: {}", where, std::strerror(errno)));
    std::map<std::uint16_t, std::uint64_t> out;
    for (const auto& u : plan(f.get(), static_cast<std::uint64_t>(st.st_size), where)) {
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
