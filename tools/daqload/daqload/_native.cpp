// daqload._native: the compressed fast path of daqload (tools/daqload/README.md).
//
// gather() reads HDF5 chunks stored with filter 32008 (bitshuffle + LZ4, the
// codec of codec/include/daqd/codec/bslz4.hpp, shared with daqd's writer:
// nothing here re-implements it) by pread(2) at the byte offset and size
// h5py's get_chunk_info reported, decompresses into a per-thread scratch
// chunk the LZ4 blocks that hold the rows the caller wants (the blocks of a
// chunk are independent) and copies those rows into a preallocated numpy
// buffer (widening uint16 samples to int32 or float32 on the way when asked);
// a whole chunk wanted in order is decompressed straight into the buffer. The GIL is released for all of that, so daqload's I/O threads each
// run a part of the chunk list in parallel.
//
// A damaged or hostile chunk (bad header, LZ4 data, stored size, a file that
// ends early) is reported back, never read or written out of bounds; index
// arrays from Python are checked before the GIL is released.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "daqd/codec/bslz4.hpp"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace py = pybind11;
namespace codec = daqd::codec;

namespace {

using i64_array = py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>;

enum class Convert { copy, u16_to_i32, u16_to_f32 };

// Compressed bytes of the chunk being read, its decompressed rows and the
// codec's block buffer: one set per thread, grown as needed and kept.
struct ThreadScratch {
    std::vector<unsigned char> packed;
    std::vector<unsigned char> chunk;
    codec::bslz4_scratch codec;
};

ThreadScratch& thread_scratch() {
    thread_local ThreadScratch s;
    return s;
}

struct Failure {
    py::ssize_t task = -1;
    std::string kind;  // "damaged" or "io"
    std::string message;
    int err = 0;
};

// Reads exactly n bytes at off. Returns "" or what went wrong (err set for I/O errors).
std::string pread_all(int fd, unsigned char* buf, std::size_t n, std::int64_t off, int& err) {
    std::size_t done = 0;
    while (done < n) {
        const ssize_t got = ::pread(fd, buf + done, n - done, static_cast<off_t>(off + static_cast<std::int64_t>(done)));
        if (got < 0) {
            if (errno == EINTR) continue;
            err = errno;
            return std::string("pread failed: ") + std::strerror(err);
        }
        if (got == 0) return "the file ends inside the chunk (" + std::to_string(done) + " of " + std::to_string(n) +
                             " bytes there): truncated file or wrong chunk offset";
        done += static_cast<std::size_t>(got);
    }
    return {};
}

void convert_row(const unsigned char* src, unsigned char* dst, std::size_t elems, Convert c) noexcept {
    std::size_t i = 0;
    if (c == Convert::u16_to_i32) {
#if defined(__SSE2__)
        const __m128i zero = _mm_setzero_si128();
        for (; i + 8 <= elems; i += 8) {
            const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2 * i));
            _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 4 * i), _mm_unpacklo_epi16(v, zero));
            _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 4 * i + 16), _mm_unpackhi_epi16(v, zero));
        }
#endif
        for (; i < elems; ++i) {
            std::uint16_t s;
            std::memcpy(&s, src + 2 * i, 2);
            const std::int32_t d = s;
            std::memcpy(dst + 4 * i, &d, 4);
        }
    } else {  // u16_to_f32
#if defined(__SSE2__)
        const __m128i zero = _mm_setzero_si128();
        for (; i + 8 <= elems; i += 8) {
            const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2 * i));
            _mm_storeu_ps(reinterpret_cast<float*>(dst + 4 * i), _mm_cvtepi32_ps(_mm_unpacklo_epi16(v, zero)));
            _mm_storeu_ps(reinterpret_cast<float*>(dst + 4 * i + 16), _mm_cvtepi32_ps(_mm_unpackhi_epi16(v, zero)));
        }
#endif
        for (; i < elems; ++i) {
            std::uint16_t s;
            std::memcpy(&s, src + 2 * i, 2);
            const float d = s;
            std::memcpy(dst + 4 * i, &d, 4);
        }
    }
}

// convert_row with non-temporal stores (dst 16-byte aligned): the batch is
// written to memory without first reading its cache lines in (a batch of
// int32 rows is several MiB, far out of cache by the time the trainer reads
// it), which halves the memory traffic of the widening. The caller issues
// _mm_sfence() before it hands the batch over.
void convert_row_nt(const unsigned char* src, unsigned char* dst, std::size_t elems, Convert c) noexcept {
#if defined(__SSE2__)
    if ((reinterpret_cast<std::uintptr_t>(dst) & 15) == 0 && c != Convert::copy) {
        const __m128i zero = _mm_setzero_si128();
        std::size_t i = 0;
        for (; i + 8 <= elems; i += 8) {
            const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2 * i));
            __m128i lo = _mm_unpacklo_epi16(v, zero), hi = _mm_unpackhi_epi16(v, zero);
            if (c == Convert::u16_to_f32) {
                lo = _mm_castps_si128(_mm_cvtepi32_ps(lo));
                hi = _mm_castps_si128(_mm_cvtepi32_ps(hi));
            }
            _mm_stream_si128(reinterpret_cast<__m128i*>(dst + 4 * i), lo);
            _mm_stream_si128(reinterpret_cast<__m128i*>(dst + 4 * i + 16), hi);
        }
        if (i < elems) convert_row(src + 2 * i, dst + 4 * i, elems - i, c);
        return;
    }
#endif
    convert_row(src, dst, elems, c);
}

struct Job {
    const std::int64_t* fds;
    const std::int64_t* offsets;
    const std::int64_t* sizes;
    const std::int64_t* chunk_rows;
    const std::int64_t* row_start;
    const std::int64_t* src_rows;
    const std::int64_t* dst_rows;
    std::size_t elem_size;
    std::size_t row_bytes;       // stored bytes of one row
    std::size_t row_elems;       // elements of one row
    std::size_t dest_row_bytes;  // bytes of one row in dest
    unsigned char* dest;
    Convert convert;
};

std::string size_mismatch(std::uint64_t got, std::size_t want, std::size_t rows) {
    return "chunk holds " + std::to_string(got) + " bytes, expected " + std::to_string(want) + " (" +
           std::to_string(rows) + " rows)";
}

// One chunk: returns false (and fills f) when it cannot be read.
bool one_chunk(const Job& j, py::ssize_t k, ThreadScratch& s, Failure& f) {
    const std::int64_t r0 = j.row_start[k], r1 = j.row_start[k + 1];
    if (r1 == r0) return true;
    const std::size_t crows = static_cast<std::size_t>(j.chunk_rows[k]);
    const std::size_t chunk_bytes = crows * j.row_bytes;
    const std::int64_t stored = j.sizes[k];
    if (stored <= 0 || j.offsets[k] < 0) {  // no stored chunk: HDF5 reads the fill value, 0
        for (std::int64_t r = r0; r < r1; ++r)
            std::memset(j.dest + static_cast<std::size_t>(j.dst_rows[r]) * j.dest_row_bytes, 0, j.dest_row_bytes);
        return true;
    }
    auto fail = [&](const char* kind, std::string msg, int err = 0) {
        f.task = k;
        f.kind = kind;
        f.message = std::move(msg);
        f.err = err;
        return false;
    };
    const std::size_t bound = codec::bslz4_bound(chunk_bytes, j.elem_size);
    if (static_cast<std::uint64_t>(stored) > bound)
        return fail("damaged", "stored size " + std::to_string(stored) + " bytes is more than bitshuffle/LZ4 can produce "
                                   "for a chunk of " + std::to_string(chunk_bytes) + " bytes (" + std::to_string(bound) + ")");
    try {
        if (s.packed.size() < static_cast<std::size_t>(stored)) s.packed.resize(static_cast<std::size_t>(stored));
    } catch (const std::bad_alloc&) {
        return fail("damaged", "out of memory for a chunk of " + std::to_string(stored) + " bytes");
    }
    int err = 0;
    if (std::string e = pread_all(static_cast<int>(j.fds[k]), s.packed.data(), static_cast<std::size_t>(stored),
                                  j.offsets[k], err);
        !e.empty())
        return fail(err ? "io" : "damaged", std::move(e), err);

    // The whole chunk, in order, into consecutive rows of dest: no scratch copy.
    bool direct = j.convert == Convert::copy && j.dest_row_bytes == j.row_bytes &&
                  static_cast<std::size_t>(r1 - r0) == crows;
    for (std::int64_t r = r0; direct && r < r1; ++r)
        direct = j.src_rows[r] == r - r0 && j.dst_rows[r] == j.dst_rows[r0] + (r - r0);
    if (direct) {
        unsigned char* out = j.dest + static_cast<std::size_t>(j.dst_rows[r0]) * j.dest_row_bytes;
        const codec::bslz4_result res = codec::bslz4_decompress(s.packed.data(), static_cast<std::size_t>(stored),
                                                                j.elem_size, out, chunk_bytes, s.codec);
        if (res.error != nullptr) return fail("damaged", res.error);
        if (res.bytes != chunk_bytes) return fail("damaged", size_mismatch(res.bytes, chunk_bytes, crows));
        return true;
    }
    // Some rows: only the LZ4 blocks holding them are decompressed, into the
    // scratch chunk, and each run of rows is copied out while it is in cache.
    codec::bslz4_block_reader reader(s.packed.data(), static_cast<std::size_t>(stored), j.elem_size);
    if (reader.error() != nullptr) return fail("damaged", reader.error());
    if (reader.bytes() != chunk_bytes) return fail("damaged", size_mismatch(reader.bytes(), chunk_bytes, crows));
    try {
        if (s.chunk.size() < chunk_bytes) s.chunk.resize(chunk_bytes);
    } catch (const std::bad_alloc&) {
        return fail("damaged", "out of memory for a chunk of " + std::to_string(chunk_bytes) + " bytes");
    }
    unsigned char* chunk = s.chunk.data();
    std::int64_t r = r0;
    while (r < r1) {
        // A run of source rows a..b-1 (sorted; repeated rows are copied again).
        const std::int64_t a = j.src_rows[r];
        std::int64_t b = a + 1, e = r + 1;
        while (e < r1 && j.src_rows[e] <= b) b = std::max(b, j.src_rows[e++] + 1);
        if (const char* err = reader.read(static_cast<std::size_t>(a) * j.row_elems,
                                          static_cast<std::size_t>(b) * j.row_elems, chunk, chunk_bytes, s.codec))
            return fail("damaged", err);
        for (; r < e; ++r) {
            const unsigned char* src = chunk + static_cast<std::size_t>(j.src_rows[r]) * j.row_bytes;
            unsigned char* dst = j.dest + static_cast<std::size_t>(j.dst_rows[r]) * j.dest_row_bytes;
            if (j.convert == Convert::copy)
                std::memcpy(dst, src, j.row_bytes);
            else
                convert_row(src, dst, j.row_elems, j.convert);
        }
    }
    if (const char* err = reader.finish()) return fail("damaged", err);
    return true;
}

const std::int64_t* checked(const i64_array& a, py::ssize_t n, const char* name) {
    if (a.ndim() != 1 || a.shape(0) < n)
        throw py::value_error(std::string("gather: ") + name + " must be a 1-D array of at least " + std::to_string(n) +
                              " entries");
    return a.data();
}

py::object gather(const i64_array& fds, const i64_array& offsets, const i64_array& sizes, const i64_array& chunk_rows,
                  const i64_array& row_start, const i64_array& src_rows, const i64_array& dst_rows,
                  std::size_t elem_size, std::size_t row_elems, py::array dest, const std::string& convert,
                  py::ssize_t lo, py::ssize_t hi) {
    const py::ssize_t k = fds.ndim() == 1 ? fds.shape(0) : -1;
    if (k < 0) throw py::value_error("gather: fds must be 1-D");
    if (lo < 0 || hi < lo || hi > k) throw py::value_error("gather: task range [lo, hi) outside the task list");
    if (elem_size == 0 || elem_size > 16 || row_elems == 0) throw py::value_error("gather: bad element size or row length");
    Job j{};
    j.fds = checked(fds, k, "fds");
    j.offsets = checked(offsets, k, "offsets");
    j.sizes = checked(sizes, k, "sizes");
    j.chunk_rows = checked(chunk_rows, k, "chunk_rows");
    j.row_start = checked(row_start, k + 1, "row_start");
    const std::int64_t m = j.row_start[k];
    if (j.row_start[0] != 0 || m < 0) throw py::value_error("gather: row_start must run from 0 to the row count");
    j.src_rows = checked(src_rows, m, "src_rows");
    j.dst_rows = checked(dst_rows, m, "dst_rows");
    j.elem_size = elem_size;
    j.row_elems = row_elems;
    j.row_bytes = elem_size * row_elems;
    if (convert == "copy") {
        j.convert = Convert::copy;
        j.dest_row_bytes = j.row_bytes;
    } else if (convert == "u16>i32" || convert == "u16>f32") {
        if (elem_size != 2) throw py::value_error("gather: " + convert + " needs 2-byte stored elements");
        const char want = convert == "u16>i32" ? 'i' : 'f';
        if (dest.dtype().kind() != want || dest.itemsize() != 4)
            throw py::value_error("gather: " + convert + " needs a " + (want == 'i' ? "int32" : "float32") + " buffer");
        j.convert = convert == "u16>i32" ? Convert::u16_to_i32 : Convert::u16_to_f32;
        j.dest_row_bytes = 4 * row_elems;
    } else {
        throw py::value_error("gather: convert must be 'copy', 'u16>i32' or 'u16>f32'");
    }
    if (!dest.writeable() || !(dest.flags() & py::array::c_style))
        throw py::value_error("gather: the destination must be a writable C-contiguous array");
    const auto dest_bytes = static_cast<std::size_t>(dest.nbytes());
    if (dest_bytes % j.dest_row_bytes != 0)
        throw py::value_error("gather: the destination is not a whole number of rows");
    const auto dest_rows = static_cast<std::int64_t>(dest_bytes / j.dest_row_bytes);
    j.dest = static_cast<unsigned char*>(dest.mutable_data());
    // Index checks for the tasks of this call, before the GIL is released.
    for (py::ssize_t t = lo; t < hi; ++t) {
        const std::int64_t a = j.row_start[t], b = j.row_start[t + 1], cr = j.chunk_rows[t];
        if (a < 0 || b < a || b > m) throw py::value_error("gather: row_start is not non-decreasing");
        if (cr <= 0 || static_cast<std::uint64_t>(cr) * j.row_bytes > (std::uint64_t{1} << 31))
            throw py::value_error("gather: chunk of " + std::to_string(cr) + " rows is empty or over 2 GiB");
        for (std::int64_t r = a; r < b; ++r) {
            if (j.src_rows[r] < 0 || j.src_rows[r] >= cr) throw py::index_error("gather: source row outside its chunk");
            if (r > a && j.src_rows[r] < j.src_rows[r - 1])
                throw py::value_error("gather: the source rows of a chunk must be in increasing order");
            if (j.dst_rows[r] < 0 || j.dst_rows[r] >= dest_rows)
                throw py::index_error("gather: destination row outside the buffer");
        }
    }
    Failure f;
    {
        py::gil_scoped_release release;
        ThreadScratch& s = thread_scratch();
        for (py::ssize_t t = lo; t < hi; ++t)
            if (!one_chunk(j, t, s, f)) break;
    }
    if (f.task < 0) return py::none();
    return py::make_tuple(f.task, f.kind, f.message, f.err);
}

// Uncompressed chunks (daqload.Loader): the rows a task wants are read with
// pread, a run of nearby rows (gaps up to max_gap_rows, at most max_run_rows)
// in one call, into the per-thread scratch buffer and copied (or widened) into
// their rows of dest while still in cache; a run wanted whole, in order, into
// consecutive rows of dest of the stored type is read straight into place.
struct PlainJob {
    const std::int64_t* fds;
    const std::int64_t* offsets;
    const std::int64_t* row_start;
    const std::int64_t* src_rows;
    const std::int64_t* dst_rows;
    std::size_t row_bytes;
    std::size_t row_elems;
    std::size_t dest_row_bytes;
    unsigned char* dest;
    Convert convert;
    std::int64_t max_gap_rows;
    std::int64_t max_run_rows;
};

bool plain_chunk(const PlainJob& j, py::ssize_t k, ThreadScratch& s, Failure& f) {
    const std::int64_t r0 = j.row_start[k], r1 = j.row_start[k + 1];
    if (r1 == r0) return true;
    if (j.offsets[k] < 0) {  // no stored chunk: HDF5 reads the fill value, 0
        for (std::int64_t r = r0; r < r1; ++r)
            std::memset(j.dest + static_cast<std::size_t>(j.dst_rows[r]) * j.dest_row_bytes, 0, j.dest_row_bytes);
        return true;
    }
    const int fd = static_cast<int>(j.fds[k]);
    std::int64_t r = r0;
    while (r < r1) {
        const std::int64_t a = j.src_rows[r];
        std::int64_t b = a + 1, e = r + 1;
        while (e < r1 && j.src_rows[e] <= b + j.max_gap_rows && j.src_rows[e] + 1 - a <= j.max_run_rows)
            b = std::max(b, j.src_rows[e++] + 1);
        const std::size_t bytes = static_cast<std::size_t>(b - a) * j.row_bytes;
        const std::int64_t off = j.offsets[k] + a * static_cast<std::int64_t>(j.row_bytes);
        bool direct = j.convert == Convert::copy && e - r == b - a;
        for (std::int64_t x = r; direct && x < e; ++x)
            direct = j.src_rows[x] == a + (x - r) && j.dst_rows[x] == j.dst_rows[r] + (x - r);
        int err = 0;
        if (direct) {
            if (std::string m = pread_all(fd, j.dest + static_cast<std::size_t>(j.dst_rows[r]) * j.dest_row_bytes, bytes,
                                          off, err);
                !m.empty()) {
                f.task = k, f.kind = err ? "io" : "short", f.message = std::move(m), f.err = err;
                return false;
            }
        } else {
            try {
                if (s.packed.size() < bytes) s.packed.resize(bytes);
            } catch (const std::bad_alloc&) {
                f.task = k, f.kind = "io", f.message = "out of memory for " + std::to_string(bytes) + " bytes", f.err = ENOMEM;
                return false;
            }
            if (std::string m = pread_all(fd, s.packed.data(), bytes, off, err); !m.empty()) {
                f.task = k, f.kind = err ? "io" : "short", f.message = std::move(m), f.err = err;
                return false;
            }
            for (std::int64_t x = r; x < e; ++x) {
                const unsigned char* src = s.packed.data() + static_cast<std::size_t>(j.src_rows[x] - a) * j.row_bytes;
                unsigned char* dst = j.dest + static_cast<std::size_t>(j.dst_rows[x]) * j.dest_row_bytes;
                if (j.convert == Convert::copy)
                    std::memcpy(dst, src, j.row_bytes);
                else
                    convert_row_nt(src, dst, j.row_elems, j.convert);
            }
        }
        r = e;
    }
    return true;
}

py::object gather_rows(const i64_array& fds, const i64_array& offsets, const i64_array& chunk_rows,
                       const i64_array& row_start, const i64_array& src_rows, const i64_array& dst_rows,
                       std::size_t elem_size, std::size_t row_elems, py::array dest, const std::string& convert,
                       py::ssize_t lo, py::ssize_t hi, std::int64_t max_gap_rows, std::int64_t max_run_rows) {
    const py::ssize_t k = fds.ndim() == 1 ? fds.shape(0) : -1;
    if (k < 0) throw py::value_error("gather_rows: fds must be 1-D");
    if (lo < 0 || hi < lo || hi > k) throw py::value_error("gather_rows: task range [lo, hi) outside the task list");
    if (elem_size == 0 || elem_size > 16 || row_elems == 0)
        throw py::value_error("gather_rows: bad element size or row length");
    if (max_gap_rows < 0 || max_run_rows < 1) throw py::value_error("gather_rows: bad max_gap_rows or max_run_rows");
    PlainJob j{};
    j.fds = checked(fds, k, "fds");
    j.offsets = checked(offsets, k, "offsets");
    const std::int64_t* crows = checked(chunk_rows, k, "chunk_rows");
    j.row_start = checked(row_start, k + 1, "row_start");
    const std::int64_t m = j.row_start[k];
    if (j.row_start[0] != 0 || m < 0) throw py::value_error("gather_rows: row_start must run from 0 to the row count");
    j.src_rows = checked(src_rows, m, "src_rows");
    j.dst_rows = checked(dst_rows, m, "dst_rows");
    j.row_elems = row_elems;
    j.row_bytes = elem_size * row_elems;
    j.max_gap_rows = max_gap_rows;
    j.max_run_rows = max_run_rows;
    if (convert == "copy") {
        j.convert = Convert::copy;
        j.dest_row_bytes = j.row_bytes;
    } else if (convert == "u16>i32" || convert == "u16>f32") {
        if (elem_size != 2) throw py::value_error("gather_rows: " + convert + " needs 2-byte stored elements");
        const char want = convert == "u16>i32" ? 'i' : 'f';
        if (dest.dtype().kind() != want || dest.itemsize() != 4)
            throw py::value_error("gather_rows: " + convert + " needs a " + (want == 'i' ? "int32" : "float32") +
                                  " buffer");
        j.convert = convert == "u16>i32" ? Convert::u16_to_i32 : Convert::u16_to_f32;
        j.dest_row_bytes = 4 * row_elems;
    } else {
        throw py::value_error("gather_rows: convert must be 'copy', 'u16>i32' or 'u16>f32'");
    }
    if (!dest.writeable() || !(dest.flags() & py::array::c_style))
        throw py::value_error("gather_rows: the destination must be a writable C-contiguous array");
    const auto dest_bytes = static_cast<std::size_t>(dest.nbytes());
    if (dest_bytes % j.dest_row_bytes != 0) throw py::value_error("gather_rows: the destination is not a whole number of rows");
    const auto dest_rows = static_cast<std::int64_t>(dest_bytes / j.dest_row_bytes);
    j.dest = static_cast<unsigned char*>(dest.mutable_data());
    for (py::ssize_t t = lo; t < hi; ++t) {
        const std::int64_t a = j.row_start[t], b = j.row_start[t + 1], cr = crows[t];
        if (a < 0 || b < a || b > m) throw py::value_error("gather_rows: row_start is not non-decreasing");
        if (cr <= 0) throw py::value_error("gather_rows: empty chunk");
        for (std::int64_t r = a; r < b; ++r) {
            if (j.src_rows[r] < 0 || j.src_rows[r] >= cr) throw py::index_error("gather_rows: source row outside its chunk");
            if (r > a && j.src_rows[r] < j.src_rows[r - 1])
                throw py::value_error("gather_rows: the source rows of a chunk must be in increasing order");
            if (j.dst_rows[r] < 0 || j.dst_rows[r] >= dest_rows)
                throw py::index_error("gather_rows: destination row outside the buffer");
        }
    }
    Failure f;
    {
        py::gil_scoped_release release;
        ThreadScratch& s = thread_scratch();
        for (py::ssize_t t = lo; t < hi; ++t)
            if (!plain_chunk(j, t, s, f)) break;
#if defined(__SSE2__)
        _mm_sfence();  // the non-temporal stores are visible before the batch is handed over
#endif
    }
    if (f.task < 0) return py::none();
    return py::make_tuple(f.task, f.kind, f.message, f.err);
}

// Uncompressed chunks from files mapped into memory (daqload.Loader, when the
// run's files are mapped): the rows are copied or widened straight out of the
// page cache into dest, one pass, no system call. base[k] is the address of
// task k's file mapping, limit[k] its length; every row is checked against it.
py::object gather_mapped(const i64_array& base, const i64_array& limit, const i64_array& offsets,
                         const i64_array& chunk_rows, const i64_array& row_start, const i64_array& src_rows,
                         const i64_array& dst_rows, std::size_t elem_size, std::size_t row_elems, py::array dest,
                         const std::string& convert, py::ssize_t lo, py::ssize_t hi) {
    const py::ssize_t k = base.ndim() == 1 ? base.shape(0) : -1;
    if (k < 0) throw py::value_error("gather_mapped: base must be 1-D");
    if (lo < 0 || hi < lo || hi > k) throw py::value_error("gather_mapped: task range [lo, hi) outside the task list");
    if (elem_size == 0 || elem_size > 16 || row_elems == 0)
        throw py::value_error("gather_mapped: bad element size or row length");
    const std::int64_t* b = checked(base, k, "base");
    const std::int64_t* lim = checked(limit, k, "limit");
    const std::int64_t* off = checked(offsets, k, "offsets");
    const std::int64_t* crows = checked(chunk_rows, k, "chunk_rows");
    const std::int64_t* rs = checked(row_start, k + 1, "row_start");
    const std::int64_t m = rs[k];
    if (rs[0] != 0 || m < 0) throw py::value_error("gather_mapped: row_start must run from 0 to the row count");
    const std::int64_t* src = checked(src_rows, m, "src_rows");
    const std::int64_t* dst = checked(dst_rows, m, "dst_rows");
    const std::size_t row_bytes = elem_size * row_elems;
    Convert c;
    std::size_t dest_row_bytes;
    if (convert == "copy") {
        c = Convert::copy;
        dest_row_bytes = row_bytes;
    } else if (convert == "u16>i32" || convert == "u16>f32") {
        if (elem_size != 2) throw py::value_error("gather_mapped: " + convert + " needs 2-byte stored elements");
        const char want = convert == "u16>i32" ? 'i' : 'f';
        if (dest.dtype().kind() != want || dest.itemsize() != 4)
            throw py::value_error("gather_mapped: " + convert + " needs a " + (want == 'i' ? "int32" : "float32") +
                                  " buffer");
        c = convert == "u16>i32" ? Convert::u16_to_i32 : Convert::u16_to_f32;
        dest_row_bytes = 4 * row_elems;
    } else {
        throw py::value_error("gather_mapped: convert must be 'copy', 'u16>i32' or 'u16>f32'");
    }
    if (!dest.writeable() || !(dest.flags() & py::array::c_style))
        throw py::value_error("gather_mapped: the destination must be a writable C-contiguous array");
    const auto dest_bytes = static_cast<std::size_t>(dest.nbytes());
    if (dest_bytes % dest_row_bytes != 0) throw py::value_error("gather_mapped: the destination is not a whole number of rows");
    const auto dest_rows = static_cast<std::int64_t>(dest_bytes / dest_row_bytes);
    auto* out = static_cast<unsigned char*>(dest.mutable_data());
    for (py::ssize_t t = lo; t < hi; ++t) {
        const std::int64_t a = rs[t], e = rs[t + 1], cr = crows[t];
        if (a < 0 || e < a || e > m) throw py::value_error("gather_mapped: row_start is not non-decreasing");
        if (cr <= 0) throw py::value_error("gather_mapped: empty chunk");
        if (off[t] >= 0 && (b[t] == 0 || off[t] + cr * static_cast<std::int64_t>(row_bytes) > lim[t]))
            throw py::index_error("gather_mapped: chunk " + std::to_string(t) + " ends beyond the mapped file");
        for (std::int64_t r = a; r < e; ++r) {
            if (src[r] < 0 || src[r] >= cr) throw py::index_error("gather_mapped: source row outside its chunk");
            if (dst[r] < 0 || dst[r] >= dest_rows) throw py::index_error("gather_mapped: destination row outside the buffer");
        }
    }
    {
        py::gil_scoped_release release;
        for (py::ssize_t t = lo; t < hi; ++t) {
            for (std::int64_t r = rs[t]; r < rs[t + 1]; ++r) {
                unsigned char* d = out + static_cast<std::size_t>(dst[r]) * dest_row_bytes;
                if (off[t] < 0) {
                    std::memset(d, 0, dest_row_bytes);
                    continue;
                }
                const auto* s = reinterpret_cast<const unsigned char*>(b[t] + off[t]) +
                                static_cast<std::size_t>(src[r]) * row_bytes;
                if (c == Convert::copy)
                    std::memcpy(d, s, row_bytes);
                else
                    convert_row_nt(s, d, row_elems, c);
            }
        }
#if defined(__SSE2__)
        _mm_sfence();
#endif
    }
    return py::none();
}

// One chunk in memory (tests, tools): returns the decompressed bytes or raises ValueError.
py::bytes decompress(const py::buffer& data, std::size_t elem_size, std::size_t max_bytes) {
    const py::buffer_info in = data.request();
    const auto size = static_cast<std::size_t>(in.size * in.itemsize);
    std::string out;
    std::string error;
    {
        py::gil_scoped_release release;
        const auto total = codec::bslz4_uncompressed_bytes(in.ptr, size);
        if (!total) {
            error = "chunk shorter than its header";
        } else if (*total > max_bytes) {
            error = "chunk declares " + std::to_string(*total) + " bytes, more than max_bytes " + std::to_string(max_bytes);
        } else {
            out.resize(static_cast<std::size_t>(*total));
            const auto res = codec::bslz4_decompress(in.ptr, size, elem_size, out.data(), out.size(), thread_scratch().codec);
            if (res.error != nullptr) error = res.error;
        }
    }
    if (!error.empty()) throw py::value_error("bslz4: " + error);
    return py::bytes(out);
}

py::bytes compress(const py::buffer& data, std::size_t elem_size) {
    const py::buffer_info in = data.request();
    const auto size = static_cast<std::size_t>(in.size * in.itemsize);
    if (elem_size == 0 || size % elem_size != 0) throw py::value_error("bslz4: input is not a whole number of elements");
    std::vector<unsigned char> out;
    {
        py::gil_scoped_release release;
        out = codec::bslz4_compress(in.ptr, size, elem_size);
    }
    return py::bytes(reinterpret_cast<const char*>(out.data()), out.size());
}

}  // namespace

PYBIND11_MODULE(_native, m) {
    m.doc() = "daqload's native fast path for bitshuffle/LZ4 (HDF5 filter 32008) chunks, on daqd's codec";
    m.attr("FILTER_ID") = codec::bslz4_filter_id;
    m.attr("COMPRESSION_LZ4") = codec::bslz4_compression_lz4;
#if defined(__SSE2__)
    m.attr("SIMD") = "sse2";
#else
    m.attr("SIMD") = "scalar";
#endif
    m.def("gather", &gather, py::arg("fds"), py::arg("offsets"), py::arg("sizes"), py::arg("chunk_rows"),
          py::arg("row_start"), py::arg("src_rows"), py::arg("dst_rows"), py::arg("elem_size"), py::arg("row_elems"),
          py::arg("dest"), py::arg("convert"), py::arg("lo"), py::arg("hi"),
          "Reads, decompresses and scatters chunk tasks lo..hi-1 into dest, with the GIL released.\n\n"
          "Task k: the chunk of chunk_rows[k] rows stored as sizes[k] bytes at offsets[k] of file descriptor\n"
          "fds[k] (size 0 or offset -1: not stored, the rows read as 0); its rows src_rows[r] go to rows\n"
          "dst_rows[r] of dest for r in row_start[k]..row_start[k+1]-1. convert: 'copy' (dest holds stored\n"
          "rows), 'u16>i32' or 'u16>f32' (uint16 samples widened into an int32/float32 dest).\n"
          "Returns None, or (task, kind, message, errno) for the first chunk that could not be read\n"
          "(kind 'damaged' or 'io').");
    m.def("gather_rows", &gather_rows, py::arg("fds"), py::arg("offsets"), py::arg("chunk_rows"), py::arg("row_start"),
          py::arg("src_rows"), py::arg("dst_rows"), py::arg("elem_size"), py::arg("row_elems"), py::arg("dest"),
          py::arg("convert"), py::arg("lo"), py::arg("hi"), py::arg("max_gap_rows") = 4, py::arg("max_run_rows") = 32,
          "As gather, for uncompressed chunks: task k's rows are read with pread from the chunk at offsets[k]\n"
          "(-1: not stored, rows read as 0), nearby rows (gaps up to max_gap_rows, runs of at most\n"
          "max_run_rows) in one call. GIL released. Returns None or (task, kind, message, errno),\n"
          "kind 'io' or 'short' (the file ends early).");
    m.def("gather_mapped", &gather_mapped, py::arg("base"), py::arg("limit"), py::arg("offsets"), py::arg("chunk_rows"),
          py::arg("row_start"), py::arg("src_rows"), py::arg("dst_rows"), py::arg("elem_size"), py::arg("row_elems"),
          py::arg("dest"), py::arg("convert"), py::arg("lo"), py::arg("hi"),
          "As gather_rows, from files mapped into memory: base[k]/limit[k] are the address and length of\n"
          "task k's file mapping. GIL released; every chunk is checked to lie inside its mapping.");
    m.def("decompress", &decompress, py::arg("data"), py::arg("elem_size"), py::arg("max_bytes") = std::size_t{1} << 30,
          "Decompresses one bitshuffle/LZ4 chunk (bytes as HDF5 stores them); ValueError when it is damaged.");
    m.def("compress", &compress, py::arg("data"), py::arg("elem_size"),
          "Compresses bytes (whole elements) into one chunk as filter 32008 stores it.");
}
