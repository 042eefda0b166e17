// daq-codec-bench: the bitshuffle + LZ4 codec (daqd/codec/bslz4.hpp, HDF5
// filter 32008) on the data daqd stores, one thread, against memcpy of the
// same bytes in the same run. docs/PERFORMANCE.md "Compressed runs: codec
// (issue 12)"; tools/bench/README.md.
//
// Each kind is a working set of --chunks chunks laid out as the writer
// stores them (storage/src/run_file.cpp): a raw chunk is chunk_rows(chunk
// bytes, channels) rows of uint16 samples, the calibrated chunk the same rows
// as float32 (twice the bytes), a metadata chunk the same rows of one column.
// The data comes from the code that makes it in daqd and daq-sim:
//   pattern          daq-sim's default payload, daq1::test_pattern (unit 0)
//   detector, beam   daq-sim --detector [--beam]: its detector_model
//                    (tools/sim/detector.hpp) with daq-sim's defaults
//   calibrated,      those frames through daqd's calibrate stage on the CPU
//   calibrated-beam  backend, with constants from daqd's pedestal stage over
//                    1000 frames of another no-beam run (--seed 2) and the
//                    config's default threshold (5 x noise)
//   frame_number     consecutive
//   timestamp_ns     10 kHz with Gaussian jitter (sigma 1 us)
//   missing_packets  per packet of the frame a loss with probability 1e-4
//
// The codec is called as a function (not inlined into the loop), with the
// element size as an argument: what a caller in another file typically
// gets from the header. --specialised inlines it whole into a caller with
// the element size a compile-time constant ([[gnu::flatten]]), so that the
// compiler specialises the transpose for that size: what a codec
// specialised per element size would give.
//
// Per kind, rounds of: memcpy of every chunk to a copy area, compression of
// every chunk, memcpy again, decompression of every chunk (into an area
// poisoned beforehand, outside the timing), then a byte-for-byte check of
// every decompressed chunk against its input (outside the timing; a mismatch
// aborts the program with exit code 3). Rounds go on until compression and
// decompression have each taken --seconds. Then the partial last chunk: the
// first --partial of the rows of a chunk, the rest zero as the writer pads
// it, compressed whole as the writer would at each flush.
#include "bench_cli.hpp"
#include "daqd/codec/bslz4.hpp"
#include "daqd/config/config.hpp"
#include "daqd/processing/backend.hpp"
#include "daqd/processing/calibration.hpp"
#include "daqd/processing/frame.hpp"
#include "daqd/processing/stage.hpp"
#include "detector.hpp"  // tools/sim: daq-sim's detector model

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace codec = daqd::codec;
namespace proc = daqd::processing;
namespace daq1 = daqd::acquisition::daq1;

namespace {

constexpr const char* usage_text = R"(usage: daq-codec-bench [--seconds S] [--channels N] [--chunk-bytes SIZE]
                        [--kinds LIST] [--chunks N] [--partial F] [--specialised] [--json]
bitshuffle + LZ4 (HDF5 filter 32008) compression of the data daqd stores, one
thread, against memcpy of the same bytes in the same run.

  --seconds S        time of compression and of decompression per kind (default 1)
  --channels N       channels per frame (default 4096, daq-sim's default)
  --chunk-bytes SIZE raw chunk size, K/M/G suffixes (default storage.chunk_bytes, 1M);
                     rows per chunk as daqd's writer: SIZE / (2 x channels), 1..1024
  --kinds LIST       comma-separated, default all: pattern, detector, beam, calibrated,
                     calibrated-beam, frame_number, timestamp_ns, missing_packets
  --chunks N         distinct chunks per kind, the working set (default 32)
  --partial F        fill of the partial last chunk, 0 < F < 1 (default 0.5)
  --specialised      the codec inlined whole with the element size a compile-time
                     constant (default: called as a function, the size an argument)
  --json             one JSON object on stdout instead of the table
  -h, --help         this text
)";

struct kind_info {
    const char* name;
    const char* dtype;
    std::size_t elem;  // bytes per sample
    const char* what;
};

const kind_info all_kinds[] = {
    {"pattern", "u16", 2, "daq-sim's default test pattern, raw rows"},
    {"detector", "u16", 2, "daq-sim --detector: pedestal + noise, no beam, raw rows"},
    {"beam", "u16", 2, "daq-sim --detector --beam, raw rows"},
    {"calibrated", "f32", 4, "detector frames through daqd's CPU calibrate stage"},
    {"calibrated-beam", "f32", 4, "beam frames through daqd's CPU calibrate stage"},
    {"frame_number", "u64", 8, "consecutive frame numbers"},
    {"timestamp_ns", "u64", 8, "10 kHz, Gaussian jitter sigma 1 us"},
    {"missing_packets", "u16", 2, "per packet a loss with probability 1e-4"},
};

// daqd's --pedestal-frames default (daqd/main.cpp).
constexpr std::uint64_t pedestal_frames = 1000;
// The metadata generators' parameters (see the header comment).
constexpr std::uint64_t timestamp_start_ns = 1'700'000'000'000'000'000ull;
constexpr double timestamp_period_ns = 100'000.0;
constexpr double timestamp_jitter_ns = 1'000.0;
constexpr double packet_loss = 1e-4;

struct options {
    double seconds = 1.0;
    std::uint32_t channels = 4096;
    std::uint64_t chunk_bytes = daqd::config::storage_config{}.chunk_bytes;
    std::vector<const kind_info*> kinds;
    std::size_t chunks = 32;
    double partial = 0.5;
    bool specialised = false;
    bool json = false;
};

const kind_info* find_kind(const std::string& name) {
    for (const auto& k : all_kinds)
        if (name == k.name) return &k;
    return nullptr;
}

options parse(int argc, char** argv) {
    options o;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto next = [&]() -> const char* {
            if (i + 1 >= argc) bench_cli::die_usage(a + " needs a value");
            return argv[++i];
        };
        if (a == "--seconds") {
            o.seconds = bench_cli::number_arg(a, next(), 0.001, 3600);
        } else if (a == "--channels") {
            o.channels = static_cast<std::uint32_t>(bench_cli::number_arg(a, next(), 1, 1 << 24));
        } else if (a == "--chunk-bytes") {
            o.chunk_bytes = bench_cli::size_arg(a, next());
        } else if (a == "--chunks") {
            o.chunks = static_cast<std::size_t>(bench_cli::number_arg(a, next(), 1, 1 << 20));
        } else if (a == "--partial") {
            o.partial = bench_cli::number_arg(a, next(), 0, 1);
            if (o.partial <= 0 || o.partial >= 1) bench_cli::die_usage("--partial: expected a fraction 0 < F < 1");
        } else if (a == "--kinds") {
            o.kinds.clear();
            const std::string list = next();
            for (std::size_t p = 0; p <= list.size();) {
                std::size_t q = list.find(',', p);
                if (q == std::string::npos) q = list.size();
                const std::string name = list.substr(p, q - p);
                const kind_info* k = find_kind(name);
                if (k == nullptr) bench_cli::die_usage("--kinds: unknown kind '" + name + "'");
                if (std::find(o.kinds.begin(), o.kinds.end(), k) == o.kinds.end()) o.kinds.push_back(k);
                p = q + 1;
            }
        } else if (a == "--specialised") {
            o.specialised = true;
        } else if (a == "--json") {
            o.json = true;
        } else if (a == "-h" || a == "--help") {
            std::fputs(usage_text, stdout);
            std::exit(0);
        } else {
            bench_cli::die_usage("unknown option " + a);
        }
    }
    if (o.kinds.empty())
        for (const auto& k : all_kinds) o.kinds.push_back(&k);
    return o;
}

double now_s() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

[[noreturn]] void fail(const std::string& msg) {
    std::fprintf(stderr, "daq-codec-bench: %s\n", msg.c_str());
    std::exit(3);
}

// Anonymous memory like the frame pool's, touched once.
class area {
public:
    explicit area(std::size_t bytes) : _n(std::max<std::size_t>(bytes, 1)) {
        void* p = ::mmap(nullptr, _n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) fail("mmap of " + std::to_string(_n) + " bytes failed");
        _p = static_cast<unsigned char*>(p);
        std::memset(_p, 0, _n);
    }
    ~area() { ::munmap(_p, _n); }
    area(const area&) = delete;
    area& operator=(const area&) = delete;
    unsigned char* data() const { return _p; }
    template <typename T>
    T* as() const {
        return reinterpret_cast<T*>(_p);
    }

private:
    std::size_t _n;
    unsigned char* _p = nullptr;
};

// ---------------------------------------------------------------- data

struct layout {
    std::uint32_t channels;
    std::uint32_t rows;    // per chunk (the writer's chunk_rows)
    std::size_t chunks;
    std::size_t frames() const { return std::size_t{rows} * chunks; }
};

// daq-sim's options for --detector [--beam], its defaults otherwise.
daqd::sim::options sim_options(const layout& l, bool beam, std::uint64_t seed) {
    daqd::sim::options o;
    o.channels = l.channels;
    o.detector = true;
    o.pattern = false;
    o.beam = beam;
    o.seed = seed;
    return o;
}

// Frames 0.. of unit 0 as daq-sim --detector [--beam] makes them.
void detector_frames(const layout& l, bool beam, std::uint16_t* out) {
    const daqd::sim::options o = sim_options(l, beam, 1);
    daqd::sim::detector_model m(o, l.channels, {0});
    for (std::size_t f = 0; f < l.frames(); ++f) m.frame(0, out + f * l.channels);
}

// daqd's pedestal run (the pedestal stage) over another no-beam run of the
// same detector (the noise from --seed 2).
std::shared_ptr<proc::calibration_set> pedestal_run(const layout& l) {
    const daqd::sim::options o = sim_options(l, false, 2);
    daqd::sim::detector_model m(o, l.channels, {0});
    proc::pedestal_stage st(pedestal_frames);
    proc::unit_context u;
    u.unit_id = 0;
    u.channels = l.channels;
    std::vector<proc::unit_context*> by_id(proc::max_units, nullptr);
    by_id[0] = &u;
    st.add_unit(u);
    std::vector<std::uint16_t> row(l.channels);
    for (std::uint64_t n = 0; n < pedestal_frames; ++n) {
        m.frame(0, row.data());
        proc::frame f;
        f.channels = l.channels;
        f.frame_number = n;
        f.samples = row.data();
        proc::frame_batch b{std::span<proc::frame>(&f, 1), 0, false, by_id.data()};
        st.run(b);
    }
    return std::make_shared<proc::calibration_set>(st.result());
}

// The frames through daqd's calibrate stage (CPU backend, the config's
// default threshold), in batches of the config's batch_frames.
void calibrate_frames(const layout& l, const std::uint16_t* raw, float* out) {
    const daqd::config::processing_config pc;
    const proc::threshold_policy policy{
        pc.threshold_mode == "absolute" ? proc::threshold_mode::absolute : proc::threshold_mode::noise,
        static_cast<float>(pc.threshold)};
    auto backend = proc::make_cpu_backend();
    proc::calibrate_stage st(*backend, false, policy, pedestal_run(l));
    proc::unit_context u;
    u.unit_id = 0;
    u.channels = l.channels;
    std::vector<proc::unit_context*> by_id(proc::max_units, nullptr);
    by_id[0] = &u;
    st.add_unit(u);
    if (u.constants.identity) fail("the pedestal run gave no constants");
    std::vector<proc::frame> frames(pc.batch_frames);
    for (std::size_t at = 0; at < l.frames(); at += pc.batch_frames) {
        const std::size_t n = std::min<std::size_t>(pc.batch_frames, l.frames() - at);
        for (std::size_t i = 0; i < n; ++i) {
            proc::frame& f = frames[i];
            f = proc::frame{};
            f.channels = l.channels;
            f.frame_number = at + i;
            f.samples = const_cast<std::uint16_t*>(raw + (at + i) * l.channels);
            f.calibrated = out + (at + i) * l.channels;
        }
        proc::frame_batch b{std::span<proc::frame>(frames.data(), n), 0, false, by_id.data()};
        st.run(b);
    }
}

// Fills `src` with the kind's chunks (consecutive frames of unit 0).
void generate(const kind_info& k, const layout& l, const area& src) {
    const std::string name = k.name;
    const std::size_t frames = l.frames();
    if (name == "pattern") {
        auto* p = src.as<std::uint16_t>();
        for (std::size_t f = 0; f < frames; ++f)
            for (std::uint32_t c = 0; c < l.channels; ++c) p[f * l.channels + c] = daq1::test_pattern(f, 0, c);
    } else if (name == "detector" || name == "beam") {
        detector_frames(l, name == "beam", src.as<std::uint16_t>());
    } else if (name == "calibrated" || name == "calibrated-beam") {
        area raw(frames * l.channels * 2);
        detector_frames(l, name == "calibrated-beam", raw.as<std::uint16_t>());
        calibrate_frames(l, raw.as<std::uint16_t>(), src.as<float>());
    } else if (name == "frame_number") {
        auto* p = src.as<std::uint64_t>();
        for (std::size_t f = 0; f < frames; ++f) p[f] = f;
    } else if (name == "timestamp_ns") {
        auto* p = src.as<std::uint64_t>();
        std::mt19937_64 rng(1);
        std::normal_distribution<double> jitter(0.0, timestamp_jitter_ns);
        for (std::size_t f = 0; f < frames; ++f)
            p[f] = timestamp_start_ns +
                   static_cast<std::uint64_t>(std::llround(static_cast<double>(f) * timestamp_period_ns + jitter(rng)));
    } else if (name == "missing_packets") {
        auto* p = src.as<std::uint16_t>();
        const auto packets =
            daq1::frame_layout::for_datagram(l.channels * 2u, daq1::standard_datagram_bytes).packet_count;
        std::mt19937_64 rng(1);
        std::binomial_distribution<int> lost(packets, packet_loss);
        for (std::size_t f = 0; f < frames; ++f) p[f] = static_cast<std::uint16_t>(lost(rng));
    } else {
        fail(std::string("no generator for kind ") + k.name);
    }
}

// Bytes of one chunk of the kind: rows x channels samples (raw, calibrated)
// or rows samples (a metadata column).
std::size_t chunk_bytes_of(const kind_info& k, const layout& l) {
    const std::string name = k.name;
    const bool rows_of_frames = name == "pattern" || name == "detector" || name == "beam" || name == "calibrated" ||
                                name == "calibrated-beam";
    return std::size_t{l.rows} * (rows_of_frames ? l.channels : 1u) * k.elem;
}

// ---------------------------------------------------------------- measure

// The codec's two calls: as functions, the element size an argument (not
// inlined here, so it stays a run-time value), or inlined whole with the
// element size a constant (--specialised).
struct codec_calls {
    std::size_t (*compress)(const void* in, std::size_t bytes, std::size_t es, void* out, codec::bslz4_scratch& s);
    codec::bslz4_result (*decompress)(const void* in, std::size_t size, std::size_t es, void* out, std::size_t cap,
                                      codec::bslz4_scratch& s);
};

template <std::size_t ES>
[[gnu::flatten]] std::size_t compress_fixed(const void* in, std::size_t bytes, std::size_t, void* out,
                                            codec::bslz4_scratch& s) {
    return codec::bslz4_compress(in, bytes, ES, out, s);
}
template <std::size_t ES>
[[gnu::flatten]] codec::bslz4_result decompress_fixed(const void* in, std::size_t size, std::size_t, void* out,
                                                      std::size_t cap, codec::bslz4_scratch& s) {
    return codec::bslz4_decompress(in, size, ES, out, cap, s);
}
[[gnu::noinline]] std::size_t compress_runtime(const void* in, std::size_t bytes, std::size_t es, void* out,
                                               codec::bslz4_scratch& s) {
    return codec::bslz4_compress(in, bytes, es, out, s);
}
[[gnu::noinline]] codec::bslz4_result decompress_runtime(const void* in, std::size_t size, std::size_t es, void* out,
                                                         std::size_t cap, codec::bslz4_scratch& s) {
    return codec::bslz4_decompress(in, size, es, out, cap, s);
}

codec_calls calls_for(std::size_t es, bool specialised) {
    if (specialised) switch (es) {
            case 2: return {compress_fixed<2>, decompress_fixed<2>};
            case 4: return {compress_fixed<4>, decompress_fixed<4>};
            case 8: return {compress_fixed<8>, decompress_fixed<8>};
            default: break;
        }
    return {compress_runtime, decompress_runtime};
}

struct result {
    const kind_info* kind = nullptr;
    std::size_t chunk_bytes = 0;
    std::uint64_t raw_bytes = 0, stored_bytes = 0;  // one pass over the working set
    double compress_s = 0, decompress_s = 0, memcpy_s = 0;
    std::uint64_t compress_bytes = 0, decompress_bytes = 0, memcpy_bytes = 0;
    std::uint64_t rounds = 0;
    // The partial last chunk.
    std::uint32_t partial_rows = 0;
    double partial_ms = 0;          // per chunk
    double partial_ratio = 0;       // stored / raw of the padded chunk
    double partial_max_ms = 0;      // the slowest single compression seen

    double ratio() const { return static_cast<double>(stored_bytes) / static_cast<double>(raw_bytes); }
    double bits_per_sample() const { return 8.0 * kind->elem * ratio(); }
    double compress_gbps() const { return static_cast<double>(compress_bytes) / compress_s / 1e9; }
    double decompress_gbps() const { return static_cast<double>(decompress_bytes) / decompress_s / 1e9; }
    double memcpy_gbps() const { return static_cast<double>(memcpy_bytes) / memcpy_s / 1e9; }
    double full_ms() const { return static_cast<double>(chunk_bytes) / (compress_gbps() * 1e9) * 1e3; }
};

void check_same(const kind_info& k, std::size_t chunk, const unsigned char* want, const unsigned char* got,
                std::size_t n, const char* what) {
    if (std::memcmp(want, got, n) == 0) return;
    std::size_t at = 0;
    while (at < n && want[at] == got[at]) ++at;
    fail(std::string(k.name) + ": " + what + " of chunk " + std::to_string(chunk) +
         " does not round-trip: first difference at byte " + std::to_string(at) + " of " + std::to_string(n));
}

result measure(const kind_info& k, const layout& l, const options& o) {
    result r;
    r.kind = &k;
    const std::size_t cb = chunk_bytes_of(k, l);
    const std::size_t es = k.elem;
    const std::size_t n = l.chunks;
    r.chunk_bytes = cb;
    const std::size_t bound = codec::bslz4_bound(cb, es);
    area src(n * cb), copy(n * cb), dst(n * cb), comp(n * bound);
    generate(k, l, src);
    codec::bslz4_scratch scratch;
    const codec_calls call = calls_for(es, o.specialised);
    std::vector<std::size_t> csize(n);
    auto in = [&](std::size_t i) { return src.data() + i * cb; };
    auto out = [&](std::size_t i) { return dst.data() + i * cb; };
    auto packed = [&](std::size_t i) { return comp.data() + i * bound; };

    // Every chunk once: the sizes, and the round trip (also the warm-up).
    for (std::size_t i = 0; i < n; ++i) {
        csize[i] = call.compress(in(i), cb, es, packed(i), scratch);
        const auto d = call.decompress(packed(i), csize[i], es, out(i), cb, scratch);
        if (d.error != nullptr) fail(std::string(k.name) + ": chunk " + std::to_string(i) + ": " + d.error);
        if (d.bytes != cb) fail(std::string(k.name) + ": chunk " + std::to_string(i) + ": wrong decompressed size");
        check_same(k, i, in(i), out(i), cb, "the first decompression");
        r.stored_bytes += csize[i];
        r.raw_bytes += cb;
        std::memcpy(copy.data() + i * cb, in(i), cb);
    }

    auto timed = [](auto&& fn) {
        const double t0 = now_s();
        fn();
        return now_s() - t0;
    };
    auto memcpy_pass = [&] {
        for (std::size_t i = 0; i < n; ++i) std::memcpy(copy.data() + i * cb, in(i), cb);
    };
    bool size_changed = false;
    auto compress_pass = [&] {
        for (std::size_t i = 0; i < n; ++i)
            size_changed |= call.compress(in(i), cb, es, packed(i), scratch) != csize[i];
    };
    const char* error = nullptr;
    auto decompress_pass = [&] {
        for (std::size_t i = 0; i < n; ++i) {
            const auto d = call.decompress(packed(i), csize[i], es, out(i), cb, scratch);
            if (d.error != nullptr || d.bytes != cb) error = d.error != nullptr ? d.error : "wrong decompressed size";
        }
    };
    while (r.compress_s < o.seconds || r.decompress_s < o.seconds) {
        // Poisoned first, so that a chunk left unwritten cannot pass the check;
        // the passes between evict it from the caches again.
        std::memset(dst.data(), (r.rounds & 1) != 0 ? 0x5A : 0xA5, n * cb);
        r.memcpy_s += timed(memcpy_pass);
        r.compress_s += timed(compress_pass);
        r.memcpy_s += timed(memcpy_pass);
        r.decompress_s += timed(decompress_pass);
        if (size_changed) fail(std::string(k.name) + ": a chunk compressed to another size the second time");
        if (error != nullptr) fail(std::string(k.name) + ": decompression failed: " + error);
        for (std::size_t i = 0; i < n; ++i) check_same(k, i, in(i), out(i), cb, "a timed decompression");
        ++r.rounds;
    }
    r.compress_bytes = r.decompress_bytes = r.rounds * n * cb;
    r.memcpy_bytes = 2 * r.rounds * n * cb;

    // The partial last chunk: its first rows, the rest zero (run_file's
    // write_chunk pads it so), compressed whole.
    // (A chunk of one row has no partial state: then the whole row.)
    r.partial_rows = std::clamp<std::uint32_t>(static_cast<std::uint32_t>(std::lround(o.partial * l.rows)), 1,
                                               std::max<std::uint32_t>(l.rows, 2) - 1);
    const std::size_t filled = cb / l.rows * r.partial_rows;
    const std::size_t pn = std::min<std::size_t>(n, 8);
    area part(pn * cb), pcomp(pn * bound);
    std::uint64_t pstored = 0;
    for (std::size_t i = 0; i < pn; ++i) {
        std::memcpy(part.data() + i * cb, in(i), filled);
        const std::size_t c = call.compress(part.data() + i * cb, cb, es, pcomp.data() + i * bound, scratch);
        const auto d = call.decompress(pcomp.data() + i * bound, c, es, out(i), cb, scratch);
        if (d.error != nullptr || d.bytes != cb) fail(std::string(k.name) + ": partial chunk does not decompress");
        check_same(k, i, part.data() + i * cb, out(i), cb, "the partial chunk");
        pstored += c;
    }
    r.partial_ratio = static_cast<double>(pstored) / static_cast<double>(pn * cb);
    double pt = 0;
    std::uint64_t pcount = 0;
    while (pt < o.seconds / 2) {
        for (std::size_t i = 0; i < pn; ++i) {
            const double t = timed([&] {
                call.compress(part.data() + i * cb, cb, es, pcomp.data() + i * bound, scratch);
            });
            pt += t;
            r.partial_max_ms = std::max(r.partial_max_ms, t * 1e3);
        }
        pcount += pn;
    }
    r.partial_ms = pt / static_cast<double>(pcount) * 1e3;
    return r;
}

std::string cpu_model() {
    std::ifstream f("/proc/cpuinfo");
    std::string line;
    while (std::getline(f, line))
        if (line.rfind("model name", 0) == 0) {
            const auto p = line.find(':');
            return p == std::string::npos ? line : line.substr(p + 2);
        }
    return "unknown";
}

std::vector<double> load_average() {
    double l[3] = {-1, -1, -1};  // -1: not known
    if (::getloadavg(l, 3) != 3) return {-1, -1, -1};
    return {l[0], l[1], l[2]};
}

}  // namespace

int main(int argc, char** argv) {
    bench_cli::program = "daq-codec-bench";
    const options o = parse(argc, argv);
    spdlog::set_level(spdlog::level::warn);
    const layout l{o.channels, proc::chunk_rows(o.chunk_bytes, o.channels), o.chunks};
    const auto load_before = load_average();
    const std::string cpu = cpu_model();
    if (!o.json) {
        std::printf("daq-codec-bench: bitshuffle + LZ4 (HDF5 filter 32008), one thread; %u channels, raw chunk %u rows "
                    "= %zu bytes (--chunk-bytes %llu); %zu chunks per kind; %.2f s per figure; codec %s\n",
                    l.channels, l.rows, std::size_t{l.rows} * l.channels * 2,
                    static_cast<unsigned long long>(o.chunk_bytes), l.chunks, o.seconds,
                    o.specialised ? "inlined with the element size a constant (--specialised)"
                                  : "called as a function, the element size an argument");
        std::printf("cpu: %s; load average before: %.2f %.2f %.2f\n\n", cpu.c_str(), load_before.at(0),
                    load_before.at(1), load_before.at(2));
        std::printf("%-16s %-5s %11s %7s %11s %13s %15s %11s %15s %17s\n", "kind", "dtype", "chunk bytes", "ratio",
                    "bits/sample", "compress GB/s", "decompress GB/s", "memcpy GB/s", "compress/memcpy",
                    "decompress/memcpy");
        std::fflush(stdout);
    }
    std::vector<result> results;
    for (const kind_info* k : o.kinds) {
        results.push_back(measure(*k, l, o));
        const result& r = results.back();
        if (!o.json) {
            std::printf("%-16s %-5s %11zu %7.4f %11.2f %13.2f %15.2f %11.2f %15.3f %17.3f\n", k->name, k->dtype,
                        r.chunk_bytes, r.ratio(), r.bits_per_sample(), r.compress_gbps(), r.decompress_gbps(),
                        r.memcpy_gbps(), r.compress_gbps() / r.memcpy_gbps(), r.decompress_gbps() / r.memcpy_gbps());
            std::fflush(stdout);
        }
    }
    const auto load_after = load_average();
    if (o.json) {
        nlohmann::ordered_json j;
        j["program"] = "daq-codec-bench";
        j["codec"] = "bslz4 (HDF5 filter 32008)";
        j["cpu"] = cpu;
        j["channels"] = l.channels;
        j["chunk_rows"] = l.rows;
        j["chunk_bytes"] = o.chunk_bytes;
        j["chunks"] = l.chunks;
        j["seconds"] = o.seconds;
        j["partial"] = o.partial;
        j["codec_call"] = o.specialised ? "specialised" : "function";
        j["load_before"] = load_before;
        j["load_after"] = load_after;
        auto& ks = j["kinds"] = nlohmann::ordered_json::array();
        for (const result& r : results) {
            ks.push_back({{"kind", r.kind->name},
                          {"dtype", r.kind->dtype},
                          {"what", r.kind->what},
                          {"chunk_bytes", r.chunk_bytes},
                          {"raw_bytes", r.raw_bytes},
                          {"stored_bytes", r.stored_bytes},
                          {"ratio", r.ratio()},
                          {"bits_per_sample", r.bits_per_sample()},
                          {"compress_gbps", r.compress_gbps()},
                          {"decompress_gbps", r.decompress_gbps()},
                          {"memcpy_gbps", r.memcpy_gbps()},
                          {"compress_vs_memcpy", r.compress_gbps() / r.memcpy_gbps()},
                          {"decompress_vs_memcpy", r.decompress_gbps() / r.memcpy_gbps()},
                          {"compress_s", r.compress_s},
                          {"decompress_s", r.decompress_s},
                          {"memcpy_s", r.memcpy_s},
                          {"rounds", r.rounds},
                          {"full_chunk_ms", r.full_ms()},
                          {"partial",
                           {{"rows", r.partial_rows},
                            {"of_rows", l.rows},
                            {"ms_per_chunk", r.partial_ms},
                            {"max_ms", r.partial_max_ms},
                            {"ratio", r.partial_ratio}}}});
        }
        std::printf("%s\n", j.dump().c_str());
        return 0;
    }
    std::printf("\npartial last chunk (the writer recompresses it at each flush): %u of %u rows filled, the rest "
                "zero as the writer pads it, the whole chunk compressed\n",
                results.empty() ? 0 : results.front().partial_rows, l.rows);
    std::printf("%-16s %11s %15s %15s %13s %13s\n", "kind", "chunk bytes", "partial ms", "(slowest ms)",
                "full chunk ms", "partial ratio");
    for (const result& r : results)
        std::printf("%-16s %11zu %15.4f %15.4f %13.4f %13.4f\n", r.kind->name, r.chunk_bytes, r.partial_ms,
                    r.partial_max_ms, r.full_ms(), r.partial_ratio);
    std::printf("\nratio = stored / raw bytes; GB = 1e9 bytes; compress GB/s of input, decompress GB/s of output, "
                "memcpy of the same chunks interleaved; every decompression checked byte for byte\n");
    std::printf("load average after: %.2f %.2f %.2f\n", load_after.at(0), load_after.at(1), load_after.at(2));
    return 0;
}
