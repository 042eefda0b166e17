#pragma once
// HDF5 filter 32008 (bitshuffle; with LZ4 when cd_values[4] == 2) on daqd's
// own codec (codec/bslz4.hpp), so that daqd, daq-inspect and the tests read
// (H5Dread) and could write (H5Dwrite) compressed datasets without the
// bitshuffle plugin and its OpenMPI dependency. Registered by
// h5::init_library(), before HDF5 could look for the plugin.
// Header-only: daq-inspect includes h5.hpp without linking daqd's storage.
#include "daqd/codec/bslz4.hpp"

#include <hdf5.h>

#include <cstdlib>
#include <cstring>

namespace daqd::storage::h5 {

namespace bslz4_filter_detail {

// cd_values: [0] major, [1] minor version, [2] element size, [3] block size in
// elements (0: default), [4] compression (0: none, 2: LZ4).
inline std::size_t filter(unsigned flags, std::size_t cd_nelmts, const unsigned cd_values[], std::size_t nbytes,
                          std::size_t* buf_size, void** buf) noexcept {
    if (cd_nelmts < 3 || cd_values[2] == 0) return 0;
    const std::size_t es = cd_values[2];
    const std::size_t block = cd_nelmts > 3 && cd_values[3] != 0 ? cd_values[3] : codec::bslz4_default_block_elems(es);
    const unsigned comp = cd_nelmts > 4 ? cd_values[4] : 0;
    if (comp != 0 && comp != codec::bslz4_compression_lz4) return 0;  // zstd: not in Debian's plugin either
    if (block % 8 != 0) return 0;
    thread_local codec::bslz4_scratch scratch;
    const bool reverse = (flags & H5Z_FLAG_REVERSE) != 0;
    void* out = nullptr;
    std::size_t out_size = 0, produced = 0;
    if (comp == codec::bslz4_compression_lz4) {
        if (reverse) {
            const auto total = codec::bslz4_uncompressed_bytes(*buf, nbytes);
            if (!total || *total > (std::uint64_t{1} << 40)) return 0;
            out_size = static_cast<std::size_t>(*total);
            out = std::malloc(out_size == 0 ? 1 : out_size);
            if (out == nullptr) return 0;
            const auto r = codec::bslz4_decompress(*buf, nbytes, es, out, out_size, scratch);
            if (r.error != nullptr) {
                std::free(out);
                return 0;
            }
            produced = r.bytes;
        } else {
            if (nbytes % es != 0) return 0;
            out_size = codec::bslz4_bound(nbytes, es, block);
            out = std::malloc(out_size);
            if (out == nullptr) return 0;
            try {
                produced = codec::bslz4_compress(*buf, nbytes, es, out, scratch, block);
            } catch (...) {
                std::free(out);
                return 0;
            }
        }
    } else {
        // Bitshuffle alone: blocks transposed, the last (elements % 8) as they are.
        if (nbytes % es != 0) return 0;
        out_size = nbytes;
        out = std::malloc(out_size == 0 ? 1 : out_size);
        if (out == nullptr) return 0;
        const auto* in = static_cast<const unsigned char*>(*buf);
        auto* o = static_cast<unsigned char*>(out);
        const std::size_t n = nbytes / es;
        std::size_t done = 0;
        auto one = [&](std::size_t elems) {
            if (reverse)
                codec::bitunshuffle_block(in + done * es, o + done * es, elems, es);
            else
                codec::bitshuffle_block(in + done * es, o + done * es, elems, es);
            done += elems;
        };
        for (std::size_t i = 0; i < n / block; ++i) one(block);
        if (const std::size_t last = (n % block) - (n % block) % 8; last > 0) one(last);
        std::memcpy(o + done * es, in + done * es, (n - done) * es);
        produced = nbytes;
    }
    std::free(*buf);
    *buf = out;
    *buf_size = out_size;
    return produced;
}

}  // namespace bslz4_filter_detail

// Registers filter 32008, replacing one registered before (the plugin, if
// HDF5 loaded it: its set_local would rewrite the cd_values daqd declares).
// Returns whether it is registered.
inline bool register_bslz4_filter() noexcept {
    static const H5Z_class2_t cls{
        H5Z_CLASS_T_VERS,
        static_cast<H5Z_filter_t>(codec::bslz4_filter_id),
        1,  // encoder present
        1,  // decoder present
        "bitshuffle; see https://github.com/kiyo-masui/bitshuffle (daqd's own codec)",
        nullptr,  // can_apply
        nullptr,  // set_local: daqd declares the cd_values itself
        &bslz4_filter_detail::filter,
    };
    return H5Zregister(&cls) >= 0;
}

}  // namespace daqd::storage::h5
