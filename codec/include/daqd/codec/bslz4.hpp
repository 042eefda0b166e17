#pragma once
// bitshuffle + LZ4 chunks, byte for byte as HDF5 filter 32008 stores them
// (the bitshuffle plugin's "bslz4", what DECTRIS and Jungfraujoch write).
// Header-only: daqd's writer, its HDF5 filter (storage/src/h5_filter.cpp),
// daq-inspect and daqload's native extension (tools/daqload/daqload/_native.cpp)
// share it. Needs liblz4 only, never the plugin. Format (codec/README.md):
//
//   chunk  = u64 BE uncompressed bytes | u32 BE block bytes | block* | leftover
//   block  = u32 BE n | n bytes: LZ4 block (LZ4_compress_default) of the
//            bit-transposed elements of the block
//
// Blocks hold `block_elems` elements (a multiple of 8; 0 = the plugin's
// default, 8192 bytes' worth, at least 128), then one shorter block of the
// remaining elements rounded down to a multiple of 8; the last (elements % 8)
// elements follow as they are. The transpose of a block of n elements of
// elem_size bytes writes bit k of byte j of element i to bit (i % 8) of byte
// (j * 8 + k) * n / 8 + i / 8.
#include <lz4.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace daqd::codec {

inline constexpr unsigned bslz4_filter_id = 32008;    // HDF5 registered filter: bitshuffle
inline constexpr unsigned bslz4_compression_lz4 = 2;  // cd_values[4]
inline constexpr std::size_t bslz4_header_bytes = 12;

// The plugin's default block: 8192 bytes' worth of elements, a multiple of 8, at least 128.
inline std::size_t bslz4_default_block_elems(std::size_t elem_size) noexcept {
    std::size_t b = 8192 / (elem_size == 0 ? 1 : elem_size);
    b -= b % 8;
    return std::max<std::size_t>(b, 128);
}

// The filter's cd_values as stored on a dataset: major/minor version of the
// format (0.3, Debian's plugin), element size, block size in elements (0:
// default), compression (2 = LZ4).
inline std::vector<unsigned> bslz4_cd_values(std::size_t elem_size) {
    return {0u, 3u, static_cast<unsigned>(elem_size), 0u, bslz4_compression_lz4};
}

namespace detail {

inline void put_be32(unsigned char* p, std::uint32_t v) noexcept {
    p[0] = static_cast<unsigned char>(v >> 24);
    p[1] = static_cast<unsigned char>(v >> 16);
    p[2] = static_cast<unsigned char>(v >> 8);
    p[3] = static_cast<unsigned char>(v);
}
inline void put_be64(unsigned char* p, std::uint64_t v) noexcept {
    put_be32(p, static_cast<std::uint32_t>(v >> 32));
    put_be32(p + 4, static_cast<std::uint32_t>(v));
}
inline std::uint32_t get_be32(const unsigned char* p) noexcept {
    return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) | std::uint32_t{p[3]};
}
inline std::uint64_t get_be64(const unsigned char* p) noexcept {
    return (std::uint64_t{get_be32(p)} << 32) | get_be32(p + 4);
}

// Transposes the 8x8 bit matrix held in x (byte r, bit c) to (byte c, bit r).
inline std::uint64_t transpose8x8(std::uint64_t x) noexcept {
    std::uint64_t t = (x ^ (x >> 7)) & 0x00AA00AA00AA00AAull;
    x = x ^ t ^ (t << 7);
    t = (x ^ (x >> 14)) & 0x0000CCCC0000CCCCull;
    x = x ^ t ^ (t << 14);
    t = (x ^ (x >> 28)) & 0x00000000F0F0F0F0ull;
    return x ^ t ^ (t << 28);
}

// Elements [first, first + 8*groups) of a block of n: portable, one 8x8 bit
// transpose per byte of eight elements.
inline void shuffle_scalar(const unsigned char* in, unsigned char* out, std::size_t n, std::size_t es, std::size_t first,
                           std::size_t groups) noexcept {
    const std::size_t row = n / 8;
    for (std::size_t g = first / 8; g < first / 8 + groups; ++g) {
        for (std::size_t j = 0; j < es; ++j) {
            std::uint64_t x = 0;
            for (std::size_t b = 0; b < 8; ++b) x |= std::uint64_t{in[(g * 8 + b) * es + j]} << (8 * b);
            x = transpose8x8(x);
            for (std::size_t k = 0; k < 8; ++k) out[(j * 8 + k) * row + g] = static_cast<unsigned char>(x >> (8 * k));
        }
    }
}

inline void unshuffle_scalar(const unsigned char* in, unsigned char* out, std::size_t n, std::size_t es,
                             std::size_t first, std::size_t groups) noexcept {
    const std::size_t row = n / 8;
    for (std::size_t g = first / 8; g < first / 8 + groups; ++g) {
        for (std::size_t j = 0; j < es; ++j) {
            std::uint64_t x = 0;
            for (std::size_t k = 0; k < 8; ++k) x |= std::uint64_t{in[(j * 8 + k) * row + g]} << (8 * k);
            x = transpose8x8(x);
            for (std::size_t b = 0; b < 8; ++b) out[(g * 8 + b) * es + j] = static_cast<unsigned char>(x >> (8 * b));
        }
    }
}

#if defined(__SSE2__)
// Joins es vectors of one byte position each (v[j] = byte j of 16 elements)
// into the 16 elements of es bytes: the inverse of shuffle_tiles' byte split.
inline void join_bytes(__m128i* v, std::size_t es) noexcept {
    __m128i t[8];
    for (std::size_t round = 1; round < es; round *= 2) {
        for (std::size_t m = 0; m < es / 2; ++m) {
            const __m128i a = v[m], b = v[es / 2 + m];
            t[2 * m] = _mm_unpacklo_epi8(a, b);
            t[2 * m + 1] = _mm_unpackhi_epi8(a, b);
        }
        for (std::size_t m = 0; m < es; ++m) v[m] = t[m];
    }
}

// Bits of 16 bytes into two bytes of each of 8 bit rows: mask k = bit k of
// each byte (bit i = byte i).
inline void bit_rows(__m128i x, unsigned char* out, std::size_t row) noexcept {
    for (int k = 7; k >= 0; --k) {
        const auto m = static_cast<std::uint16_t>(_mm_movemask_epi8(x));
        std::memcpy(out + static_cast<std::size_t>(k) * row, &m, 2);
        x = _mm_slli_epi16(x, 1);
    }
}
#endif

#if defined(__SSE2__)
// 16 elements at a time for a compile-time element size: the byte split and
// the bit rows unrolled, the vectors in registers (a loop over a run-time
// element size compiles to memcpy calls at -O2 and runs at half the speed).
template <std::size_t ES>
inline std::size_t shuffle_tiles(const unsigned char* in, unsigned char* out, std::size_t n) noexcept {
    const std::size_t row = n / 8;
    const __m128i low = _mm_set1_epi16(0x00FF);
    std::size_t done = 0;
    for (; done + 16 <= n; done += 16) {
        __m128i v[ES];
        for (std::size_t m = 0; m < ES; ++m)
            v[m] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + done * ES + m * 16));
        for (std::size_t round = 1; round < ES; round *= 2) {
            __m128i t[ES];
            for (std::size_t m = 0; m < ES / 2; ++m) {
                const __m128i a = v[2 * m], b = v[2 * m + 1];
                t[m] = _mm_packus_epi16(_mm_and_si128(a, low), _mm_and_si128(b, low));
                t[ES / 2 + m] = _mm_packus_epi16(_mm_srli_epi16(a, 8), _mm_srli_epi16(b, 8));
            }
            for (std::size_t m = 0; m < ES; ++m) v[m] = t[m];
        }
        for (std::size_t j = 0; j < ES; ++j) bit_rows(v[j], out + j * 8 * row + done / 8, row);
    }
    return done;
}
#endif

// Bit-transposes a block of n elements (n a multiple of 8) from in to out.
inline void shuffle_block(const unsigned char* in, unsigned char* out, std::size_t n, std::size_t es) noexcept {
    std::size_t done = 0;
#if defined(__SSE2__)
    switch (es) {
        case 1: done = shuffle_tiles<1>(in, out, n); break;
        case 2: done = shuffle_tiles<2>(in, out, n); break;
        case 4: done = shuffle_tiles<4>(in, out, n); break;
        case 8: done = shuffle_tiles<8>(in, out, n); break;
        default: break;
    }
#endif
    if (done < n) shuffle_scalar(in, out, n, es, done, (n - done) / 8);
}

#if defined(__SSE2__)
// join_bytes for a compile-time element size: unrolled, the vectors stay in
// registers (a loop over a run-time es becomes memcpy calls at -O2).
template <std::size_t ES>
inline void join_bytes_n(__m128i* v) noexcept {
    for (std::size_t round = 1; round < ES; round *= 2) {
        __m128i t[ES];
        for (std::size_t m = 0; m < ES / 2; ++m) {
            t[2 * m] = _mm_unpacklo_epi8(v[m], v[ES / 2 + m]);
            t[2 * m + 1] = _mm_unpackhi_epi8(v[m], v[ES / 2 + m]);
        }
        for (std::size_t m = 0; m < ES; ++m) v[m] = t[m];
    }
}

// Swaps bit i + S of a[k] with bit i of b (per byte, i with bit S clear): one
// stage of the 8x8 bit transpose across 8 vectors (M: the bits i).
template <int S>
inline void swap_bits(__m128i& a, __m128i& b, __m128i m) noexcept {
    const __m128i t = _mm_and_si128(_mm_xor_si128(_mm_srli_epi16(a, S), b), m);
    b = _mm_xor_si128(b, t);
    a = _mm_xor_si128(a, _mm_slli_epi16(t, S));
}

// Un-transposes elements [done, done + 128) of a block of n (ES = 1, 2, 4, 8).
// Per byte j: the 16 bytes of its 8 bit rows (r[k]: bit k of byte j, bit i
// of byte p = element 8p + i) are bit-transposed across the 8 vectors
// (afterwards bit k of byte p of r[i] = bit i of byte p of row k: byte j of
// element 8p + i), then byte-transposed (unpacks) into 8 vectors of 16
// consecutive elements; the ES byte vectors of every 16 elements are then
// interleaved into elements (join_bytes).
template <std::size_t ES>
inline void unshuffle_tile128(const unsigned char* in, unsigned char* out, std::size_t n, std::size_t done) noexcept {
    const std::size_t row = n / 8;
    const __m128i m1 = _mm_set1_epi8(0x55), m2 = _mm_set1_epi8(0x33), m4 = _mm_set1_epi8(0x0F);
    __m128i q[ES][8];  // q[j][m]: byte j of elements done + 16m … done + 16m + 15
    for (std::size_t j = 0; j < ES; ++j) {
        __m128i r[8];
        for (std::size_t k = 0; k < 8; ++k)
            r[k] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + (j * 8 + k) * row + done / 8));
        for (std::size_t k = 0; k < 4; ++k) swap_bits<4>(r[k], r[k + 4], m4);
        swap_bits<2>(r[0], r[2], m2);
        swap_bits<2>(r[1], r[3], m2);
        swap_bits<2>(r[4], r[6], m2);
        swap_bits<2>(r[5], r[7], m2);
        for (std::size_t k = 0; k < 8; k += 2) swap_bits<1>(r[k], r[k + 1], m1);
        __m128i a[8], b[8];
        for (std::size_t k = 0; k < 4; ++k) {
            a[k] = _mm_unpacklo_epi8(r[2 * k], r[2 * k + 1]);      // groups 0..7: elements 2k, 2k+1 of each
            a[k + 4] = _mm_unpackhi_epi8(r[2 * k], r[2 * k + 1]);  // groups 8..15
        }
        for (std::size_t h = 0; h < 2; ++h) {
            b[4 * h + 0] = _mm_unpacklo_epi16(a[4 * h + 0], a[4 * h + 1]);  // elements 0..3, groups +0..3
            b[4 * h + 1] = _mm_unpackhi_epi16(a[4 * h + 0], a[4 * h + 1]);  // elements 0..3, groups +4..7
            b[4 * h + 2] = _mm_unpacklo_epi16(a[4 * h + 2], a[4 * h + 3]);  // elements 4..7, groups +0..3
            b[4 * h + 3] = _mm_unpackhi_epi16(a[4 * h + 2], a[4 * h + 3]);  // elements 4..7, groups +4..7
            q[j][4 * h + 0] = _mm_unpacklo_epi32(b[4 * h + 0], b[4 * h + 2]);
            q[j][4 * h + 1] = _mm_unpackhi_epi32(b[4 * h + 0], b[4 * h + 2]);
            q[j][4 * h + 2] = _mm_unpacklo_epi32(b[4 * h + 1], b[4 * h + 3]);
            q[j][4 * h + 3] = _mm_unpackhi_epi32(b[4 * h + 1], b[4 * h + 3]);
        }
    }
    for (std::size_t m = 0; m < 8; ++m) {
        __m128i v[ES];
        for (std::size_t j = 0; j < ES; ++j) v[j] = q[j][m];
        join_bytes_n<ES>(v);
        unsigned char* o = out + (done + 16 * m) * ES;
        for (std::size_t t = 0; t < ES; ++t) _mm_storeu_si128(reinterpret_cast<__m128i*>(o + t * 16), v[t]);
    }
}

template <std::size_t ES>
inline std::size_t unshuffle_tiles(const unsigned char* in, unsigned char* out, std::size_t n) noexcept {
    std::size_t done = 0;
    for (; done + 128 <= n; done += 128) unshuffle_tile128<ES>(in, out, n, done);
    return done;
}
#endif

inline void unshuffle_block(const unsigned char* in, unsigned char* out, std::size_t n, std::size_t es) noexcept {
    std::size_t done = 0;
#if defined(__SSE2__)
    if (es == 1 || es == 2 || es == 4 || es == 8) {
        const std::size_t row = n / 8;
        const __m128i low = _mm_set1_epi16(0x00FF);
        switch (es) {
            case 1: done = unshuffle_tiles<1>(in, out, n); break;
            case 2: done = unshuffle_tiles<2>(in, out, n); break;
            case 4: done = unshuffle_tiles<4>(in, out, n); break;
            default: done = unshuffle_tiles<8>(in, out, n); break;
        }
        for (; done + 16 <= n; done += 16) {
            __m128i v[8];
            for (std::size_t j = 0; j < es; ++j) {
                // Two bytes (16 elements) of the 8 bit rows of byte j, as
                // [row0 lo, row0 hi, row1 lo, ...], then lows before highs.
                std::uint16_t w[8];
                for (std::size_t k = 0; k < 8; ++k) std::memcpy(&w[k], in + (j * 8 + k) * row + done / 8, 2);
                __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w));
                x = _mm_packus_epi16(_mm_and_si128(x, low), _mm_srli_epi16(x, 8));
                // Bit e of each byte: byte j of element e (low mask byte) and e + 8 (high).
                alignas(16) unsigned char b[16];
                for (int e = 7; e >= 0; --e) {
                    const auto m = static_cast<std::uint16_t>(_mm_movemask_epi8(x));
                    b[e] = static_cast<unsigned char>(m);
                    b[e + 8] = static_cast<unsigned char>(m >> 8);
                    x = _mm_slli_epi16(x, 1);
                }
                v[j] = _mm_load_si128(reinterpret_cast<const __m128i*>(b));
            }
            join_bytes(v, es);
            for (std::size_t m = 0; m < es; ++m)
                _mm_storeu_si128(reinterpret_cast<__m128i*>(out + done * es + m * 16), v[m]);
        }
    }
#endif
    if (done < n) unshuffle_scalar(in, out, n, es, done, (n - done) / 8);
}

}  // namespace detail

// Bit-transposes one block of n elements (n a multiple of 8), as bitshuffle does.
inline void bitshuffle_block(const void* in, void* out, std::size_t n, std::size_t elem_size) noexcept {
    detail::shuffle_block(static_cast<const unsigned char*>(in), static_cast<unsigned char*>(out), n, elem_size);
}
inline void bitunshuffle_block(const void* in, void* out, std::size_t n, std::size_t elem_size) noexcept {
    detail::unshuffle_block(static_cast<const unsigned char*>(in), static_cast<unsigned char*>(out), n, elem_size);
}

// Most bytes bslz4_compress writes for `bytes` of input.
inline std::size_t bslz4_bound(std::size_t bytes, std::size_t elem_size, std::size_t block_elems = 0) noexcept {
    if (elem_size == 0) return 0;
    if (block_elems == 0) block_elems = bslz4_default_block_elems(elem_size);
    const std::size_t n = bytes / elem_size;
    const std::size_t full = n / block_elems;
    std::size_t last = n % block_elems;
    last -= last % 8;
    std::size_t out = bslz4_header_bytes + full * (4 + static_cast<std::size_t>(LZ4_compressBound(
                                                          static_cast<int>(block_elems * elem_size))));
    if (last > 0) out += 4 + static_cast<std::size_t>(LZ4_compressBound(static_cast<int>(last * elem_size)));
    return out + (n % 8) * elem_size;
}

// Scratch space of one compressing or decompressing thread (one block).
struct bslz4_scratch {
    std::vector<unsigned char> block;
};

// Compresses `bytes` bytes (whole elements of elem_size) into out, whose
// capacity must be at least bslz4_bound(bytes, elem_size). Returns the bytes
// written, header included.
inline std::size_t bslz4_compress(const void* in_v, std::size_t bytes, std::size_t elem_size, void* out_v,
                                  bslz4_scratch& scratch, std::size_t block_elems = 0) {
    if (elem_size == 0 || bytes % elem_size != 0)
        throw std::invalid_argument("bslz4: input is not a whole number of elements");
    if (block_elems == 0) block_elems = bslz4_default_block_elems(elem_size);
    if (block_elems % 8 != 0) throw std::invalid_argument("bslz4: block size is not a multiple of 8 elements");
    const auto* in = static_cast<const unsigned char*>(in_v);
    auto* out = static_cast<unsigned char*>(out_v);
    const std::size_t n = bytes / elem_size;
    detail::put_be64(out, bytes);
    detail::put_be32(out + 8, static_cast<std::uint32_t>(block_elems * elem_size));
    std::size_t pos = bslz4_header_bytes;
    scratch.block.resize(block_elems * elem_size);
    std::size_t done = 0;
    auto one_block = [&](std::size_t elems) {
        const std::size_t b = elems * elem_size;
        detail::shuffle_block(in + done * elem_size, scratch.block.data(), elems, elem_size);
        const int cap = LZ4_compressBound(static_cast<int>(b));
        const int c = LZ4_compress_default(reinterpret_cast<const char*>(scratch.block.data()),
                                           reinterpret_cast<char*>(out + pos + 4), static_cast<int>(b), cap);
        if (c <= 0) throw std::runtime_error("bslz4: LZ4_compress_default failed");
        detail::put_be32(out + pos, static_cast<std::uint32_t>(c));
        pos += 4 + static_cast<std::size_t>(c);
        done += elems;
    };
    for (std::size_t i = 0; i < n / block_elems; ++i) one_block(block_elems);
    if (const std::size_t last = (n % block_elems) - (n % block_elems) % 8; last > 0) one_block(last);
    const std::size_t left = (n - done) * elem_size;
    if (left > 0) std::memcpy(out + pos, in + done * elem_size, left);  // in may be null when bytes == 0
    return pos + left;
}

// The uncompressed size a chunk's header declares, or nullopt when `size`
// bytes cannot hold a header.
inline std::optional<std::uint64_t> bslz4_uncompressed_bytes(const void* in, std::size_t size) noexcept {
    if (size < bslz4_header_bytes) return std::nullopt;
    return detail::get_be64(static_cast<const unsigned char*>(in));
}

// Decompresses a chunk of `size` bytes into out (capacity out_capacity).
// Returns the bytes written, or an error message: a damaged or hostile chunk
// never reads or writes out of bounds.
struct bslz4_result {
    std::size_t bytes = 0;
    const char* error = nullptr;  // null: success
};

inline bslz4_result bslz4_decompress(const void* in_v, std::size_t size, std::size_t elem_size, void* out_v,
                                     std::size_t out_capacity, bslz4_scratch& scratch) noexcept {
    const auto* in = static_cast<const unsigned char*>(in_v);
    auto* out = static_cast<unsigned char*>(out_v);
    if (elem_size == 0) return {0, "element size 0"};
    if (size < bslz4_header_bytes) return {0, "chunk shorter than its header"};
    const std::uint64_t total = detail::get_be64(in);
    const std::uint32_t block_bytes = detail::get_be32(in + 8);
    if (total > out_capacity) return {0, "chunk larger than the buffer it is read into"};
    if (total % elem_size != 0) return {0, "chunk size is not a whole number of elements"};
    if (block_bytes == 0 || block_bytes % elem_size != 0 || (block_bytes / elem_size) % 8 != 0)
        return {0, "invalid block size"};
    if (block_bytes > (64u << 20)) return {0, "block size over 64 MiB"};
    const std::size_t block_elems = block_bytes / elem_size;
    const std::size_t n = static_cast<std::size_t>(total) / elem_size;
    try {
        if (scratch.block.size() < block_bytes) scratch.block.resize(block_bytes);
    } catch (...) {
        return {0, "out of memory"};
    }
    std::size_t pos = bslz4_header_bytes;
    std::size_t done = 0;
    auto one_block = [&](std::size_t elems) -> const char* {
        const std::size_t b = elems * elem_size;
        if (size - pos < 4) return "chunk ends inside a block header";
        const std::uint32_t c = detail::get_be32(in + pos);
        pos += 4;
        if (c > size - pos || c > static_cast<std::uint32_t>(INT32_MAX)) return "block runs past the end of the chunk";
        const int d = LZ4_decompress_safe(reinterpret_cast<const char*>(in + pos),
                                          reinterpret_cast<char*>(scratch.block.data()), static_cast<int>(c),
                                          static_cast<int>(b));
        if (d < 0 || static_cast<std::size_t>(d) != b) return "LZ4 block is damaged";
        pos += c;
        detail::unshuffle_block(scratch.block.data(), out + done * elem_size, elems, elem_size);
        done += elems;
        return nullptr;
    };
    for (std::size_t i = 0; i < n / block_elems; ++i)
        if (const char* e = one_block(block_elems)) return {0, e};
    if (const std::size_t last = (n % block_elems) - (n % block_elems) % 8; last > 0)
        if (const char* e = one_block(last)) return {0, e};
    const std::size_t left = (n - done) * elem_size;
    if (size - pos != left) return {0, "chunk length does not match its blocks"};
    std::memcpy(out + done * elem_size, in + pos, left);
    return {static_cast<std::size_t>(total), nullptr};
}

// Reads some elements of a chunk: the blocks are independent LZ4 streams, so
// only those holding the elements asked for are decompressed; the others'
// headers are walked over. For readers that want a few rows of a chunk.
//
//   bslz4_block_reader r(in, size, elem_size);
//   if (r.error()) …;                          // header damaged
//   r.read(first, last, out, cap, scratch);    // elements [first, last), ascending calls
//   r.finish();                                // the chunk's length adds up
//
// read() writes the whole blocks around [first, last) to their place in out
// (out + element * elem_size; out_capacity must hold r.bytes()) and nothing
// else; a range may start inside the block the range before ended in. Like bslz4_decompress, a damaged or hostile chunk gives an error
// message, never a read or write out of bounds; a block that is skipped is
// not checked beyond its length.
class bslz4_block_reader {
public:
    bslz4_block_reader(const void* in, std::size_t size, std::size_t elem_size) noexcept
        : in_(static_cast<const unsigned char*>(in)), size_(size), es_(elem_size) {
        if (elem_size == 0) {
            error_ = "element size 0";
            return;
        }
        if (size < bslz4_header_bytes) {
            error_ = "chunk shorter than its header";
            return;
        }
        total_ = detail::get_be64(in_);
        const std::uint32_t block_bytes = detail::get_be32(in_ + 8);
        if (total_ % elem_size != 0) {
            error_ = "chunk size is not a whole number of elements";
        } else if (block_bytes == 0 || block_bytes % elem_size != 0 || (block_bytes / elem_size) % 8 != 0) {
            error_ = "invalid block size";
        } else if (block_bytes > (64u << 20)) {
            error_ = "block size over 64 MiB";
        } else if (total_ > (std::uint64_t{1} << 40)) {
            error_ = "chunk declares over 1 TiB";
        } else {
            block_elems_ = block_bytes / elem_size;
            n_ = static_cast<std::size_t>(total_) / elem_size;
            full_blocks_ = n_ / block_elems_;
            last_block_ = (n_ % block_elems_) - (n_ % block_elems_) % 8;
            pos_ = bslz4_header_bytes;
        }
    }

    const char* error() const noexcept { return error_; }
    std::uint64_t bytes() const noexcept { return total_; }

    const char* read(std::size_t first, std::size_t last, void* out_v, std::size_t out_capacity,
                     bslz4_scratch& scratch) noexcept {
        if (error_ != nullptr) return error_;
        if (out_capacity < total_) return error_ = "chunk larger than the buffer it is read into";
        if (last > n_ || first > last) return error_ = "elements asked for are outside the chunk";
        if (first < asked_) return error_ = "elements asked for out of order";
        if (first == last) return nullptr;
        asked_ = last;  // [first, done_) lies in the last block decoded, for the range before
        auto* out = static_cast<unsigned char*>(out_v);
        const std::size_t blocks = full_blocks_ + (last_block_ > 0 ? 1 : 0);
        while (block_ < blocks && done_ < last) {
            const std::size_t elems = block_ < full_blocks_ ? block_elems_ : last_block_;
            if (size_ - pos_ < 4) return error_ = "chunk ends inside a block header";
            const std::uint32_t c = detail::get_be32(in_ + pos_);
            pos_ += 4;
            if (c > size_ - pos_ || c > static_cast<std::uint32_t>(INT32_MAX))
                return error_ = "block runs past the end of the chunk";
            if (done_ + elems > first) {
                const std::size_t b = elems * es_;
                try {
                    if (scratch.block.size() < b) scratch.block.resize(b);
                } catch (...) {
                    return error_ = "out of memory";
                }
                const int d = LZ4_decompress_safe(reinterpret_cast<const char*>(in_ + pos_),
                                                  reinterpret_cast<char*>(scratch.block.data()), static_cast<int>(c),
                                                  static_cast<int>(b));
                if (d < 0 || static_cast<std::size_t>(d) != b) return error_ = "LZ4 block is damaged";
                detail::unshuffle_block(scratch.block.data(), out + done_ * es_, elems, es_);
            }
            pos_ += c;
            done_ += elems;
            ++block_;
        }
        if (block_ == blocks && last > done_) {  // the last n % 8 elements, stored as they are
            if (const char* e = check_tail()) return e;
            std::memcpy(out + done_ * es_, in_ + pos_, (n_ - done_) * es_);
        }
        return nullptr;
    }

    // Walks the remaining block headers: the chunk's length must add up.
    const char* finish() noexcept {
        if (error_ != nullptr) return error_;
        const std::size_t blocks = full_blocks_ + (last_block_ > 0 ? 1 : 0);
        for (; block_ < blocks; ++block_) {
            if (size_ - pos_ < 4) return error_ = "chunk ends inside a block header";
            const std::uint32_t c = detail::get_be32(in_ + pos_);
            pos_ += 4;
            if (c > size_ - pos_) return error_ = "block runs past the end of the chunk";
            pos_ += c;
            done_ += block_ < full_blocks_ ? block_elems_ : last_block_;
        }
        return check_tail();
    }

private:
    const char* check_tail() noexcept {
        if (size_ - pos_ != (n_ - done_) * es_) return error_ = "chunk length does not match its blocks";
        return nullptr;
    }

    const unsigned char* in_;
    std::size_t size_;
    std::size_t es_;
    const char* error_ = nullptr;
    std::uint64_t total_ = 0;
    std::size_t block_elems_ = 0, n_ = 0, full_blocks_ = 0, last_block_ = 0;
    std::size_t pos_ = 0, done_ = 0, block_ = 0, asked_ = 0;
};

// Convenience for tools and tests.
inline std::vector<unsigned char> bslz4_compress(const void* in, std::size_t bytes, std::size_t elem_size) {
    std::vector<unsigned char> out(bslz4_bound(bytes, elem_size));
    bslz4_scratch s;
    out.resize(bslz4_compress(in, bytes, elem_size, out.data(), s));
    return out;
}

}  // namespace daqd::codec
