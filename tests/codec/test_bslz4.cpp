// bitshuffle + LZ4 (codec/bslz4.hpp): the vectorised transpose against the
// portable one, round trips, damaged chunks, and byte-for-byte agreement with
// the bitshuffle HDF5 plugin that Debian ships (package bitshuffle), called
// through its own filter function.
#include "daqd/codec/bslz4.hpp"

#include <catch2/catch.hpp>

#include <dlfcn.h>

#include <cstdlib>
#include <random>
#include <string>
#include <vector>

using namespace daqd::codec;

namespace {

// Detector-like samples: a pedestal per channel, noise, a few hits.
std::vector<unsigned char> detector_like(std::size_t bytes, std::size_t elem_size, unsigned seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<double> noise(0.0, 3.0);
    std::vector<unsigned char> out(bytes);
    const std::size_t n = bytes / elem_size;
    for (std::size_t i = 0; i < n; ++i) {
        std::uint64_t v = 1000 + (i % 97) * 3 + static_cast<std::int64_t>(noise(rng));
        if (rng() % 500 == 0) v += 20000;
        std::memcpy(out.data() + i * elem_size, &v, elem_size);  // little-endian low bytes
    }
    for (std::size_t i = n * elem_size; i < bytes; ++i) out[i] = static_cast<unsigned char>(rng());
    return out;
}

std::vector<unsigned char> random_bytes(std::size_t bytes, unsigned seed) {
    std::mt19937 rng(seed);
    std::vector<unsigned char> out(bytes);
    for (auto& b : out) b = static_cast<unsigned char>(rng());
    return out;
}

// The plugin's filter function: size_t (unsigned flags, size_t cd_nelmts,
// const unsigned cd_values[], size_t nbytes, size_t* buf_size, void** buf).
using filter_fn = std::size_t (*)(unsigned, std::size_t, const unsigned[], std::size_t, std::size_t*, void**);

filter_fn plugin_filter() {
    static filter_fn fn = [] {
        const char* env = std::getenv("DAQD_BSHUF_PLUGIN");
        const std::string path = env != nullptr ? env : "/usr/lib/x86_64-linux-gnu/hdf5/serial/plugins/libh5bshuf.so";
        void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
        if (h == nullptr) FAIL("cannot load the bitshuffle HDF5 plugin (Debian package bitshuffle): " << dlerror());
        auto* f = reinterpret_cast<filter_fn>(dlsym(h, "bshuf_h5_filter"));
        if (f == nullptr) FAIL("the bitshuffle plugin has no bshuf_h5_filter");
        return f;
    }();
    return fn;
}

std::vector<unsigned char> plugin_run(unsigned flags, const std::vector<unsigned char>& in, std::size_t elem_size) {
    const auto cd = bslz4_cd_values(elem_size);
    std::size_t buf_size = in.size();
    void* buf = std::malloc(in.size() == 0 ? 1 : in.size());
    std::memcpy(buf, in.data(), in.size());
    const std::size_t n = plugin_filter()(flags, cd.size(), cd.data(), in.size(), &buf_size, &buf);
    std::vector<unsigned char> out;
    if (n > 0) out.assign(static_cast<unsigned char*>(buf), static_cast<unsigned char*>(buf) + n);
    std::free(buf);
    REQUIRE(n > 0);
    return out;
}

}  // namespace

TEST_CASE("bitshuffle: the vectorised transpose equals the portable one, both directions", "[codec]") {
    for (std::size_t es : {1u, 2u, 3u, 4u, 8u}) {
        for (std::size_t n : {8u, 16u, 24u, 128u, 136u, 256u, 1000u, 1152u, 4096u, 4104u}) {
            if (n % 8 != 0) continue;
            const auto in = random_bytes(n * es, static_cast<unsigned>(es * 7919 + n));
            std::vector<unsigned char> fast(n * es), portable(n * es), back(n * es);
            bitshuffle_block(in.data(), fast.data(), n, es);
            daqd::codec::detail::shuffle_scalar(in.data(), portable.data(), n, es, 0, n / 8);
            INFO("elem_size " << es << ", " << n << " elements");
            REQUIRE(fast == portable);
            bitunshuffle_block(fast.data(), back.data(), n, es);
            REQUIRE(back == in);
            std::vector<unsigned char> back2(n * es);
            daqd::codec::detail::unshuffle_scalar(fast.data(), back2.data(), n, es, 0, n / 8);
            REQUIRE(back2 == in);
        }
    }
}

TEST_CASE("bitshuffle: bit k of byte j of element i lands in bit i%8 of byte (8j+k)*n/8 + i/8", "[codec]") {
    const std::size_t n = 32, es = 2;
    std::vector<std::uint16_t> in(n, 0);
    in[5] = 1u << 9;  // byte 1, bit 1 of element 5
    std::vector<unsigned char> out(n * es, 0);
    bitshuffle_block(in.data(), out.data(), n, es);
    for (std::size_t i = 0; i < out.size(); ++i) {
        INFO("byte " << i);
        REQUIRE(out[i] == (i == (8 * 1 + 1) * n / 8 + 0 ? (1u << 5) : 0u));
    }
}

TEST_CASE("bslz4: round trip of whole and ragged sizes, every element size", "[codec]") {
    bslz4_scratch s;
    for (std::size_t es : {1u, 2u, 4u, 8u}) {
        for (std::size_t n : {0u, 1u, 7u, 8u, 9u, 4095u, 4096u, 4100u, 70001u, 262144u}) {
            const auto in = detector_like(n * es, es, static_cast<unsigned>(n + es));
            const auto packed = bslz4_compress(in.data(), in.size(), es);
            REQUIRE(packed.size() <= bslz4_bound(in.size(), es));
            REQUIRE(bslz4_uncompressed_bytes(packed.data(), packed.size()) == in.size());
            std::vector<unsigned char> out(in.size() + 1, 0xEE);
            const auto r = bslz4_decompress(packed.data(), packed.size(), es, out.data(), out.size(), s);
            INFO("elem_size " << es << ", " << n << " elements: " << (r.error ? r.error : "ok"));
            REQUIRE(r.error == nullptr);
            REQUIRE(r.bytes == in.size());
            REQUIRE(std::equal(in.begin(), in.end(), out.begin()));
            REQUIRE(out.back() == 0xEE);  // nothing written past the chunk
        }
    }
}

TEST_CASE("bslz4: detector-like 16-bit samples shrink, zeros shrink to almost nothing", "[codec]") {
    const auto det = detector_like(1 << 20, 2, 1);
    REQUIRE(bslz4_compress(det.data(), det.size(), 2).size() < det.size() * 7 / 10);
    const std::vector<unsigned char> zeros(4 << 20, 0);
    REQUIRE(bslz4_compress(zeros.data(), zeros.size(), 4).size() < zeros.size() / 100);
}

TEST_CASE("bslz4: a damaged or hostile chunk is an error, never a read or write out of bounds", "[codec]") {
    bslz4_scratch s;
    const auto in = detector_like(3000 * 2, 2, 5);
    const auto good = bslz4_compress(in.data(), in.size(), 2);
    std::vector<unsigned char> out(in.size());
    // Every truncation.
    for (std::size_t cut = 0; cut < good.size(); cut += 1 + cut / 16) {
        const auto r = bslz4_decompress(good.data(), cut, 2, out.data(), out.size(), s);
        INFO("cut at " << cut);
        REQUIRE(r.error != nullptr);
    }
    // A declared size larger than the buffer.
    REQUIRE(bslz4_decompress(good.data(), good.size(), 2, out.data(), out.size() - 2, s).error != nullptr);
    // Random corruption of every byte position: error or (LZ4 literals) different data, never a crash.
    std::mt19937 rng(3);
    for (int t = 0; t < 2000; ++t) {
        auto bad = good;
        bad[rng() % bad.size()] ^= static_cast<unsigned char>(1 + rng() % 255);
        (void)bslz4_decompress(bad.data(), bad.size(), 2, out.data(), out.size(), s);
    }
    // Block size not a multiple of 8 elements, or zero.
    auto bad = good;
    bad[11] = 6;
    bad[10] = bad[9] = bad[8] = 0;
    REQUIRE(bslz4_decompress(bad.data(), bad.size(), 2, out.data(), out.size(), s).error != nullptr);
    bad[11] = 0;
    REQUIRE(bslz4_decompress(bad.data(), bad.size(), 2, out.data(), out.size(), s).error != nullptr);
}

TEST_CASE("bslz4: byte for byte what Debian's bitshuffle HDF5 plugin writes, and it decodes ours", "[codec]") {
    for (std::size_t es : {1u, 2u, 4u, 8u}) {
        for (std::size_t n : {8u, 100u, 4096u, 5000u, 131072u}) {
            const auto in = detector_like(n * es, es, static_cast<unsigned>(n * es));
            const auto ours = bslz4_compress(in.data(), in.size(), es);
            INFO("elem_size " << es << ", " << n << " elements");
            REQUIRE(plugin_run(0, in, es) == ours);
            REQUIRE(plugin_run(1u /* H5Z_FLAG_REVERSE */ << 8, ours, es) == in);
        }
    }
}

TEST_CASE("bslz4_block_reader: ranges of elements equal the whole chunk, other bytes untouched", "[codec]") {
    bslz4_scratch s;
    for (std::size_t es : {1u, 2u, 4u, 8u}) {
        // Several blocks, a short last block and a ragged tail (n % 8 elements).
        for (std::size_t n : {5u, 8u, 4096u, 3 * 4096u + 1000u + 5u, 70001u}) {
            const auto in = detector_like(n * es, es, static_cast<unsigned>(n + 3 * es));
            const auto packed = bslz4_compress(in.data(), in.size(), es);
            std::mt19937 rng(static_cast<unsigned>(n * es));
            for (int t = 0; t < 20; ++t) {
                std::vector<std::size_t> cuts;
                for (int k = 0; k < 6; ++k) cuts.push_back(rng() % (n + 1));
                std::sort(cuts.begin(), cuts.end());
                bslz4_block_reader r(packed.data(), packed.size(), es);
                REQUIRE(r.error() == nullptr);
                REQUIRE(r.bytes() == in.size());
                std::vector<unsigned char> out(in.size(), 0xEE);
                std::vector<bool> asked(n, false);
                for (std::size_t k = 0; k + 1 < cuts.size(); k += 2) {  // [c0, c1), [c2, c3), [c4, c5)
                    INFO("elem_size " << es << ", " << n << " elements, [" << cuts[k] << ", " << cuts[k + 1] << ")");
                    REQUIRE(r.read(cuts[k], cuts[k + 1], out.data(), out.size(), s) == nullptr);
                    for (std::size_t e = cuts[k]; e < cuts[k + 1]; ++e) asked[e] = true;
                }
                REQUIRE(r.finish() == nullptr);
                for (std::size_t e = 0; e < n; ++e)
                    if (asked[e]) REQUIRE(std::equal(in.begin() + e * es, in.begin() + (e + 1) * es, out.begin() + e * es));
            }
        }
    }
    // Blocks of 8192 bytes (4096 2-byte elements): one element of block 2 decodes block 2 only.
    const auto in = detector_like(4 * 4096 * 2, 2, 11);
    const auto packed = bslz4_compress(in.data(), in.size(), 2);
    bslz4_block_reader r(packed.data(), packed.size(), 2);
    std::vector<unsigned char> out(in.size(), 0xEE);
    REQUIRE(r.read(2 * 4096 + 7, 2 * 4096 + 8, out.data(), out.size(), s) == nullptr);
    REQUIRE(r.finish() == nullptr);
    for (std::size_t b = 0; b < 4; ++b) {
        const auto first = out.begin() + static_cast<std::ptrdiff_t>(b * 8192);
        INFO("block " << b);
        if (b == 2)
            REQUIRE(std::equal(first, first + 8192, in.begin() + static_cast<std::ptrdiff_t>(b * 8192)));
        else
            REQUIRE(std::all_of(first, first + 8192, [](unsigned char x) { return x == 0xEE; }));
    }
}

TEST_CASE("bslz4_block_reader: a damaged or hostile chunk is an error, never a read or write out of bounds", "[codec]") {
    bslz4_scratch s;
    const std::size_t n = 3 * 4096 + 13;
    const auto in = detector_like(n * 2, 2, 9);
    const auto good = bslz4_compress(in.data(), in.size(), 2);
    std::vector<unsigned char> out(in.size());
    for (std::size_t cut = 0; cut < good.size(); cut += 1 + cut / 16) {
        bslz4_block_reader r(good.data(), cut, 2);
        const char* e = r.error();
        if (e == nullptr) e = r.read(0, n, out.data(), out.size(), s);
        INFO("cut at " << cut);
        REQUIRE(e != nullptr);
    }
    {  // A truncated chunk read only at its start still fails at finish().
        bslz4_block_reader r(good.data(), good.size() - 1, 2);
        REQUIRE(r.read(0, 10, out.data(), out.size(), s) == nullptr);
        REQUIRE(r.finish() != nullptr);
    }
    {
        bslz4_block_reader r(good.data(), good.size(), 2);
        REQUIRE(r.read(0, 10, out.data(), out.size() - 2, s) != nullptr);  // buffer too small
    }
    {
        bslz4_block_reader r(good.data(), good.size(), 2);
        REQUIRE(r.read(100, 200, out.data(), out.size(), s) == nullptr);
        REQUIRE(r.read(50, 60, out.data(), out.size(), s) != nullptr);  // out of order
        REQUIRE(r.read(300, 400, out.data(), out.size(), s) != nullptr);  // errors stick
    }
    {
        bslz4_block_reader r(good.data(), good.size(), 2);
        REQUIRE(r.read(0, n + 1, out.data(), out.size(), s) != nullptr);  // past the end
    }
    std::mt19937 rng(4);
    for (int t = 0; t < 2000; ++t) {
        auto bad = good;
        bad[rng() % bad.size()] ^= static_cast<unsigned char>(1 + rng() % 255);
        bslz4_block_reader r(bad.data(), bad.size(), 2);
        const std::size_t a = rng() % n;
        (void)r.read(a, a + rng() % (n - a + 1), out.data(), out.size(), s);
        (void)r.finish();
    }
}
