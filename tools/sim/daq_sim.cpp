// daq-sim: simulates DAQ1 hardware units sending frames over UDP.
//
// One thread. Each frame of each unit is built (headers + payload) into a
// per-target arena; the arena's datagrams are queued and sent with sendmmsg,
// either as UDP GSO super-datagrams (one message = up to 64 equal segments,
// cmsg UDP_SEGMENT) or as one message per datagram. Faults (loss, reorder,
// duplicate, malformed extras) are drawn per packet from a seeded
// std::mt19937_64 and the expected effect on the receiver is tallied and
// printed as JSON. With --detector the payload is detector-like data instead
// of the test pattern: per-channel pedestals and Gaussian noise, and with
// --beam a Gaussian beam spot on the channels' 2-D grid. See README.md.
#include <daqd/acquisition/daq1.hpp>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include <arpa/inet.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef SOL_UDP
#define SOL_UDP 17
#endif

namespace {

namespace daq1 = daqd::acquisition::daq1;
using json = nlohmann::ordered_json;

// Kernel limits for one UDP GSO send.
constexpr std::size_t gso_max_segments = 64;
constexpr std::size_t gso_max_bytes = 65507;
// Messages per sendmmsg call.
constexpr std::size_t batch_messages = 64;
// Bytes of payload copied into a malformed datagram (at most).
constexpr std::size_t malformed_payload_max = 64;
constexpr std::size_t malformed_max_bytes = daq1::header_bytes + malformed_payload_max;

[[noreturn]] void die_usage(const std::string& msg) {
    fmt::print(stderr, "daq-sim: {}\nTry 'daq-sim --help'.\n", msg);
    std::exit(1);
}

[[noreturn]] void die(int code, const std::string& msg) {
    fmt::print(stderr, "daq-sim: {}\n", msg);
    std::exit(code);
}

constexpr const char* usage_text = R"(Usage: daq-sim [OPTIONS]
Simulates DAQ1 hardware units: sends frames as UDP datagrams and prints a JSON
summary (with the faults it injected) on stdout.

Destination and units:
  --target HOST:PORT     destination, repeatable (default 127.0.0.1:4660);
                         IPv6 as [ADDR]:PORT. Unit i goes to target i % ntargets
  --units N              number of units (default 1)
  --first-unit N         unit_id of the first unit (default 0)
  --channels N           channels (u16 samples) per frame (default 4096)
Amount and rate:
  --frames N             frames per unit (default 1000)
  --duration SEC         send for SEC seconds instead of a fixed frame count
  --rate MBITS           total rate, Mbit/s of UDP payload (0 = unlimited, default)
  --rate-per-unit MBITS  rate per unit instead (total = MBITS * units)
Packets:
  --datagram BYTES       max datagram (UDP payload) size, 42..9000 (default 1472)
  --first-frame N        first frame_number (default 0)
  --seq-start N          first packet_seq of each unit, 0..4294967295 (default 0)
  --no-pattern           zero payload instead of the test pattern (flag cleared)
  --no-eos               do not set END_OF_STREAM on the last frame
Faults (probability per packet, 0..1; never on a unit's first and last frame):
  --loss P               packet not sent (its packet_seq is still used)
  --reorder P            packet sent after the next sent packet of its frame
  --duplicate P          packet sent twice
  --malformed P          an extra invalid datagram is sent after the packet
  --seed N               fault RNG seed (default 1)
Other:
  --mode gso|sendmmsg    send method (default gso; falls back to sendmmsg when
                         the kernel refuses UDP_SEGMENT)
  --json FILE            also write the summary JSON to FILE
  --quiet                no progress or notices on stderr
Detector mode (payload is detector data, TEST_PATTERN cleared):
  --detector             per-channel pedestal (Gaussian around --pedestal-mean,
                         spread --pedestal-spread) and Gaussian noise (sigma
                         uniform in --noise-min..--noise-max), fixed per unit by
                         --detector-seed; the noise of each frame from --seed
  --detector-seed N      seed of the pedestals and noise levels (default 7)
  --pedestal-mean ADC    (default 1000)   --pedestal-spread ADC (default 50)
  --noise-min ADC        (default 3)      --noise-max ADC      (default 8)
  --beam                 add a beam: hits in a Gaussian spot on the grid of
                         channels (width ceil(sqrt(channels)), channel c at
                         x = c % width, y = c / width)
  --beam-x X --beam-y Y  spot centre in grid units (default: the grid centre)
  --beam-sigma S         spot width in grid units (default 3)
  --beam-intensity L     mean hits per frame on the centre channel (default 0.5;
                         Poisson, L x exp(-r^2 / 2 S^2) elsewhere)
  --beam-amplitude ADC   mean signal of one hit (exponential, default 100)
  --truth FILE           write the true pedestal and noise of every channel
                         (and the beam) as JSON
  -h, --help             this text
)";

// ---------------------------------------------------------------- options --

enum class send_mode { gso, sendmmsg };

struct options {
    std::vector<std::string> targets;
    std::uint64_t units = 1;
    std::uint64_t first_unit = 0;
    std::uint64_t channels = 4096;
    std::uint64_t frames = 1000;
    bool frames_given = false;
    double duration = 0;
    bool duration_given = false;
    double rate = 0;
    bool rate_given = false;
    double rate_per_unit = 0;
    bool rate_per_unit_given = false;
    std::uint64_t datagram = daq1::standard_datagram_bytes;
    std::uint64_t first_frame = 0;
    std::uint64_t seq_start = 0;
    bool pattern = true;
    bool eos = true;
    double loss = 0, reorder = 0, duplicate = 0, malformed = 0;
    std::uint64_t seed = 1;
    send_mode mode = send_mode::gso;
    std::string json_path;
    bool quiet = false;
    // detector mode
    bool detector = false;
    std::uint64_t detector_seed = 7;
    double pedestal_mean = 1000, pedestal_spread = 50, noise_min = 3, noise_max = 8;
    bool beam = false;
    double beam_x = -1, beam_y = -1;  // -1: the grid centre
    double beam_sigma = 3, beam_intensity = 0.5, beam_amplitude = 100;
    std::string truth_path;
};

std::uint64_t parse_uint(std::string_view opt, std::string_view s, std::uint64_t lo, std::uint64_t hi) {
    std::uint64_t v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (s.empty() || ec != std::errc{} || p != s.data() + s.size())
        die_usage(fmt::format("--{}: expected an integer, got '{}'", opt, s));
    if (v < lo || v > hi) die_usage(fmt::format("--{}: {} is out of range {}..{}", opt, v, lo, hi));
    return v;
}

double parse_double(std::string_view opt, const char* s, double lo, double hi) {
    char* end = nullptr;
    errno = 0;
    const double v = std::strtod(s, &end);
    if (*s == '\0' || end == nullptr || *end != '\0' || errno != 0 || !std::isfinite(v))
        die_usage(fmt::format("--{}: expected a number, got '{}'", opt, s));
    if (v < lo || v > hi) die_usage(fmt::format("--{}: {} is out of range {}..{}", opt, v, lo, hi));
    return v;
}

options parse_options(int argc, char** argv) {
    enum : int {
        o_target = 256, o_units, o_first_unit, o_channels, o_frames, o_duration, o_rate, o_rate_per_unit,
        o_datagram, o_first_frame, o_seq_start, o_no_pattern, o_no_eos, o_loss, o_reorder, o_duplicate,
        o_malformed, o_seed, o_mode, o_json, o_quiet, o_detector, o_detector_seed, o_pedestal_mean,
        o_pedestal_spread, o_noise_min, o_noise_max, o_beam, o_beam_x, o_beam_y, o_beam_sigma, o_beam_intensity,
        o_beam_amplitude, o_truth,
    };
    static const option longopts[] = {
        {"target", required_argument, nullptr, o_target},
        {"units", required_argument, nullptr, o_units},
        {"first-unit", required_argument, nullptr, o_first_unit},
        {"channels", required_argument, nullptr, o_channels},
        {"frames", required_argument, nullptr, o_frames},
        {"duration", required_argument, nullptr, o_duration},
        {"rate", required_argument, nullptr, o_rate},
        {"rate-per-unit", required_argument, nullptr, o_rate_per_unit},
        {"datagram", required_argument, nullptr, o_datagram},
        {"first-frame", required_argument, nullptr, o_first_frame},
        {"seq-start", required_argument, nullptr, o_seq_start},
        {"no-pattern", no_argument, nullptr, o_no_pattern},
        {"no-eos", no_argument, nullptr, o_no_eos},
        {"loss", required_argument, nullptr, o_loss},
        {"reorder", required_argument, nullptr, o_reorder},
        {"duplicate", required_argument, nullptr, o_duplicate},
        {"malformed", required_argument, nullptr, o_malformed},
        {"seed", required_argument, nullptr, o_seed},
        {"mode", required_argument, nullptr, o_mode},
        {"json", required_argument, nullptr, o_json},
        {"quiet", no_argument, nullptr, o_quiet},
        {"detector", no_argument, nullptr, o_detector},
        {"detector-seed", required_argument, nullptr, o_detector_seed},
        {"pedestal-mean", required_argument, nullptr, o_pedestal_mean},
        {"pedestal-spread", required_argument, nullptr, o_pedestal_spread},
        {"noise-min", required_argument, nullptr, o_noise_min},
        {"noise-max", required_argument, nullptr, o_noise_max},
        {"beam", no_argument, nullptr, o_beam},
        {"beam-x", required_argument, nullptr, o_beam_x},
        {"beam-y", required_argument, nullptr, o_beam_y},
        {"beam-sigma", required_argument, nullptr, o_beam_sigma},
        {"beam-intensity", required_argument, nullptr, o_beam_intensity},
        {"beam-amplitude", required_argument, nullptr, o_beam_amplitude},
        {"truth", required_argument, nullptr, o_truth},
        {"help", no_argument, nullptr, 'h'},
        {nullptr, 0, nullptr, 0},
    };
    constexpr auto u64max = std::numeric_limits<std::uint64_t>::max();
    options o;
    opterr = 0;
    for (;;) {
        const int c = getopt_long(argc, argv, ":h", longopts, nullptr);
        if (c == -1) break;
        const char* a = optarg;
        switch (c) {
            case o_target: o.targets.emplace_back(a); break;
            case o_units: o.units = parse_uint("units", a, 1, 65536); break;
            case o_first_unit: o.first_unit = parse_uint("first-unit", a, 0, 65535); break;
            case o_channels: o.channels = parse_uint("channels", a, 1, daq1::max_frame_bytes / 2); break;
            case o_frames:
                o.frames = parse_uint("frames", a, 1, u64max);
                o.frames_given = true;
                break;
            case o_duration:
                o.duration = parse_double("duration", a, 0, 1e9);
                if (o.duration <= 0) die_usage("--duration: must be > 0");
                o.duration_given = true;
                break;
            case o_rate:
                o.rate = parse_double("rate", a, 0, 1e9);
                o.rate_given = true;
                break;
            case o_rate_per_unit:
                o.rate_per_unit = parse_double("rate-per-unit", a, 0, 1e9);
                o.rate_per_unit_given = true;
                break;
            case o_datagram:
                o.datagram = parse_uint("datagram", a, daq1::min_datagram_bytes, daq1::max_datagram_bytes);
                break;
            case o_first_frame: o.first_frame = parse_uint("first-frame", a, 0, u64max); break;
            case o_seq_start: o.seq_start = parse_uint("seq-start", a, 0, 0xffffffffu); break;
            case o_no_pattern: o.pattern = false; break;
            case o_no_eos: o.eos = false; break;
            case o_loss: o.loss = parse_double("loss", a, 0, 1); break;
            case o_reorder: o.reorder = parse_double("reorder", a, 0, 1); break;
            case o_duplicate: o.duplicate = parse_double("duplicate", a, 0, 1); break;
            case o_malformed: o.malformed = parse_double("malformed", a, 0, 1); break;
            case o_seed: o.seed = parse_uint("seed", a, 0, u64max); break;
            case o_mode:
                if (std::string_view(a) == "gso") o.mode = send_mode::gso;
                else if (std::string_view(a) == "sendmmsg") o.mode = send_mode::sendmmsg;
                else die_usage(fmt::format("--mode: expected 'gso' or 'sendmmsg', got '{}'", a));
                break;
            case o_json: o.json_path = a; break;
            case o_quiet: o.quiet = true; break;
            case o_detector: o.detector = true; break;
            case o_detector_seed: o.detector_seed = parse_uint("detector-seed", a, 0, u64max); break;
            case o_pedestal_mean: o.pedestal_mean = parse_double("pedestal-mean", a, 0, 65535); break;
            case o_pedestal_spread: o.pedestal_spread = parse_double("pedestal-spread", a, 0, 10000); break;
            case o_noise_min: o.noise_min = parse_double("noise-min", a, 0, 10000); break;
            case o_noise_max: o.noise_max = parse_double("noise-max", a, 0, 10000); break;
            case o_beam: o.beam = true; break;
            case o_beam_x: o.beam_x = parse_double("beam-x", a, -1e6, 1e6); break;
            case o_beam_y: o.beam_y = parse_double("beam-y", a, -1e6, 1e6); break;
            case o_beam_sigma: o.beam_sigma = parse_double("beam-sigma", a, 0.01, 1e6); break;
            case o_beam_intensity: o.beam_intensity = parse_double("beam-intensity", a, 0, 1000); break;
            case o_beam_amplitude: o.beam_amplitude = parse_double("beam-amplitude", a, 0, 65535); break;
            case o_truth: o.truth_path = a; break;
            case 'h': std::fputs(usage_text, stdout); std::exit(0);
            case ':': die_usage(fmt::format("option '{}' needs a value", argv[optind - 1]));
            default: die_usage(fmt::format("unknown option '{}'", argv[optind - 1]));
        }
    }
    if (optind < argc) die_usage(fmt::format("unexpected argument '{}'", argv[optind]));
    if (o.frames_given && o.duration_given) die_usage("--frames and --duration exclude each other");
    if (o.rate_given && o.rate_per_unit_given) die_usage("--rate and --rate-per-unit exclude each other");
    if (o.first_unit + o.units - 1 > 65535)
        die_usage(fmt::format("--first-unit {} with --units {} exceeds unit_id 65535", o.first_unit, o.units));
    if (o.frames_given && o.frames - 1 > u64max - o.first_frame)
        die_usage("--first-frame + --frames overflows the 64-bit frame_number");
    if (o.targets.empty()) o.targets.emplace_back("127.0.0.1:4660");
    if (!o.detector && (o.beam || !o.truth_path.empty())) die_usage("--beam and --truth need --detector");
    if (o.noise_min > o.noise_max) die_usage("--noise-min must not exceed --noise-max");
    if (o.detector) o.pattern = false;  // the payload is detector data: TEST_PATTERN cleared
    return o;
}

// ---------------------------------------------------------------- time --

std::int64_t clock_ns(clockid_t id) {
    timespec ts;
    clock_gettime(id, &ts);
    return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}
std::int64_t mono_ns() { return clock_ns(CLOCK_MONOTONIC); }

void sleep_until_mono(std::int64_t t) {
    timespec ts{static_cast<time_t>(t / 1'000'000'000), static_cast<long>(t % 1'000'000'000)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
    }
}

void sleep_ns(long ns) {
    timespec ts{0, ns};
    nanosleep(&ts, nullptr);
}

volatile sig_atomic_t g_stop = 0;
extern "C" void on_signal(int) { g_stop = 1; }

// ---------------------------------------------------------------- targets --

// A queued datagram (gso == 0) or GSO super-datagram of equal `gso`-byte
// segments, the last one possibly shorter.
struct entry {
    const std::byte* ptr;
    std::uint32_t len;
    std::uint16_t gso;
};

struct target {
    std::string spec;
    int fd = -1;
    std::unique_ptr<std::byte[]> arena;
    std::size_t arena_cap = 0;
    std::size_t arena_used = 0;
    std::vector<entry> queue;
};

void open_target(target& t) {
    const std::string& s = t.spec;
    std::string host, port;
    int family = AF_UNSPEC;
    if (!s.empty() && s[0] == '[') {
        const auto close = s.find(']');
        if (close == std::string::npos || close + 1 >= s.size() || s[close + 1] != ':')
            die_usage(fmt::format("--target '{}': expected [IPV6]:PORT", s));
        host = s.substr(1, close - 1);
        port = s.substr(close + 2);
        family = AF_INET6;
    } else {
        const auto colon = s.rfind(':');
        if (colon == std::string::npos) die_usage(fmt::format("--target '{}': expected HOST:PORT", s));
        host = s.substr(0, colon);
        port = s.substr(colon + 1);
        if (host.find(':') != std::string::npos)
            die_usage(fmt::format("--target '{}': write IPv6 addresses as [ADDR]:PORT", s));
    }
    if (host.empty()) die_usage(fmt::format("--target '{}': empty host", s));
    parse_uint("target port", port, 1, 65535);
    addrinfo hints{};
    hints.ai_family = family;
    hints.ai_socktype = SOCK_DGRAM;
    hints.ai_protocol = IPPROTO_UDP;
    hints.ai_flags = AI_NUMERICSERV;
    addrinfo* res = nullptr;
    if (const int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &res); rc != 0)
        die_usage(fmt::format("--target '{}': {}", s, gai_strerror(rc)));
    int fd = -1;
    int last_errno = 0;
    for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            last_errno = errno;
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) break;
        last_errno = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) die(2, fmt::format("socket/connect to {}: {}", s, std::strerror(last_errno)));
    // A larger send buffer absorbs bursts on real NICs; best effort (capped by wmem_max).
    int sndbuf = 8 << 20;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    t.fd = fd;
}

bool is_gso_refusal(int err) { return err == EINVAL || err == EIO || err == ENOPROTOOPT; }

// ---------------------------------------------------------------- sender --

struct send_stats {
    std::uint64_t datagrams = 0;
    std::uint64_t bytes = 0;
    std::uint64_t retries = 0;
    std::uint64_t errors = 0;
};

class sender {
public:
    send_mode mode;
    bool quiet;
    send_stats stats;

    sender(send_mode m, bool q) : mode(m), quiet(q) {}

    void fall_back(const char* what, int err) {
        if (mode != send_mode::gso) return;
        mode = send_mode::sendmmsg;
        if (!quiet)
            fmt::print(stderr, "daq-sim: UDP GSO unavailable ({} failed: {}); falling back to --mode sendmmsg\n",
                       what, std::strerror(err));
    }

    // Probes UDP_SEGMENT on the socket (then resets it: sizes go per message).
    void probe_gso(const target& t, std::uint16_t gso_size) {
        if (mode != send_mode::gso) return;
        int v = gso_size;
        if (setsockopt(t.fd, SOL_UDP, UDP_SEGMENT, &v, sizeof v) != 0) {
            const int err = errno;
            if (is_gso_refusal(err)) return fall_back("setsockopt(UDP_SEGMENT)", err);
            die(2, fmt::format("setsockopt(UDP_SEGMENT) for {}: {}", t.spec, std::strerror(err)));
        }
        v = 0;
        setsockopt(t.fd, SOL_UDP, UDP_SEGMENT, &v, sizeof v);
    }

    void flush(target& t) {
        auto& q = t.queue;
        std::size_t i = 0;
        while (i < q.size()) {
            const std::size_t k = std::min(batch_messages, q.size() - i);
            for (std::size_t j = 0; j < k; ++j) {
                const entry& e = q[i + j];
                iov_[j] = {const_cast<std::byte*>(e.ptr), e.len};
                msghdr& h = msgs_[j].msg_hdr;
                h = {};
                h.msg_iov = &iov_[j];
                h.msg_iovlen = 1;
                if (e.gso != 0 && e.len > e.gso) {
                    h.msg_control = ctrl_[j].buf;
                    h.msg_controllen = CMSG_SPACE(sizeof(std::uint16_t));
                    cmsghdr* cm = CMSG_FIRSTHDR(&h);
                    cm->cmsg_level = SOL_UDP;
                    cm->cmsg_type = UDP_SEGMENT;
                    cm->cmsg_len = CMSG_LEN(sizeof(std::uint16_t));
                    const std::uint16_t g = e.gso;
                    std::memcpy(CMSG_DATA(cm), &g, sizeof g);
                }
            }
            const int r = sendmmsg(t.fd, msgs_.data(), static_cast<unsigned>(k), 0);
            if (r > 0) {
                for (int j = 0; j < r; ++j) {
                    const entry& e = q[i + static_cast<std::size_t>(j)];
                    stats.datagrams += (e.gso != 0 && e.len > e.gso) ? (e.len + e.gso - 1) / e.gso : 1;
                    stats.bytes += e.len;
                }
                i += static_cast<std::size_t>(r);
                continue;
            }
            const int err = errno;
            if (err == EINTR) continue;
            if (err == ENOBUFS || err == EAGAIN || err == EWOULDBLOCK) {
                ++stats.retries;
                sleep_ns(20'000);
                continue;
            }
            if (err == ECONNREFUSED) {
                // An ICMP port-unreachable for an earlier datagram; this one was
                // not sent (the error is consumed), so just send it again.
                ++stats.errors;
                continue;
            }
            // EMSGSIZE here: the segment size exceeds the path MTU (the kernel
            // refuses GSO then; single datagrams may still be fragmented).
            if (mode == send_mode::gso && q[i].gso != 0 && q[i].len > q[i].gso &&
                (is_gso_refusal(err) || err == EMSGSIZE)) {
                fall_back("sendmmsg with UDP_SEGMENT", err);
                split_from(q, i);
                continue;
            }
            die(2, fmt::format("sendmmsg to {}: {}", t.spec, std::strerror(err)));
        }
        q.clear();
        t.arena_used = 0;
    }

private:
    // Replaces the GSO entries from index i on by one entry per datagram.
    static void split_from(std::vector<entry>& q, std::size_t i) {
        std::vector<entry> rest;
        for (std::size_t j = i; j < q.size(); ++j) {
            const entry e = q[j];
            if (e.gso == 0 || e.len <= e.gso) {
                rest.push_back({e.ptr, e.len, 0});
                continue;
            }
            for (std::uint32_t off = 0; off < e.len; off += e.gso)
                rest.push_back({e.ptr + off, std::min<std::uint32_t>(e.gso, e.len - off), 0});
        }
        q.resize(i);
        q.insert(q.end(), rest.begin(), rest.end());
    }

    struct alignas(cmsghdr) ctrl_buf {
        std::byte buf[CMSG_SPACE(sizeof(std::uint16_t))];
    };
    std::array<mmsghdr, batch_messages> msgs_{};
    std::array<iovec, batch_messages> iov_{};
    std::array<ctrl_buf, batch_messages> ctrl_{};
};

// ---------------------------------------------------------------- faults --

// Malformed extras, cycled in this order; names are the server's drop reasons.
constexpr std::array malformed_kinds{
    daq1::drop_reason::too_short,        daq1::drop_reason::bad_magic,
    daq1::drop_reason::bad_version,      daq1::drop_reason::unknown_flags,
    daq1::drop_reason::zero_packet_count, daq1::drop_reason::packet_index_out_of_range,
    daq1::drop_reason::frame_bytes_odd,  daq1::drop_reason::payload_beyond_frame,
};
constexpr std::size_t n_malformed_kinds = malformed_kinds.size();

// Writes a datagram derived from the valid packet `pkt` that the server drops
// for exactly `kind`; returns its length.
std::size_t make_malformed(daq1::drop_reason kind, const std::byte* pkt, std::size_t pkt_len, std::byte* out) {
    if (kind == daq1::drop_reason::too_short) {
        std::memcpy(out, pkt, 20);
        return 20;
    }
    daq1::header h = daq1::decode_header(pkt);
    const std::size_t payload = std::min(pkt_len - daq1::header_bytes, malformed_payload_max);
    switch (kind) {
        case daq1::drop_reason::bad_magic: h.magic = 0x12345678; break;
        case daq1::drop_reason::bad_version: h.version = 2; break;
        case daq1::drop_reason::unknown_flags: h.flags |= 0x80; break;
        case daq1::drop_reason::zero_packet_count: h.packet_count = 0; break;
        case daq1::drop_reason::packet_index_out_of_range: h.packet_index = h.packet_count; break;
        case daq1::drop_reason::frame_bytes_odd: h.frame_bytes += 1; break;
        case daq1::drop_reason::payload_beyond_frame: h.payload_offset = h.frame_bytes; break;
        default: break;
    }
    daq1::encode_header(h, out);
    std::memcpy(out + daq1::header_bytes, pkt + daq1::header_bytes, payload);
    const std::size_t len = daq1::header_bytes + payload;
    daq1::header check;
    const auto got = daq1::validate({out, len}, check);
    if (got != kind)
        die(3, fmt::format("internal error: malformed '{}' validates as '{}'", daq1::name(kind), daq1::name(got)));
    return len;
}

struct packet_fault {
    bool lost, reorder, duplicate, malformed;
};

// ---------------------------------------------------------------- units --

struct unit_state {
    std::uint16_t id;
    std::size_t target;
    std::uint32_t seq;
    std::uint32_t first_seq;
    std::uint64_t first_frame = 0, last_frame = 0, frames = 0;
    std::uint64_t packets = 0;  // packets of its frames (sent or lost)
    std::uint64_t frames_complete = 0, frames_incomplete = 0, frames_lost = 0;
    std::uint64_t packets_lost = 0, duplicates = 0, reordered = 0, malformed = 0;
};

// The test pattern is a ramp mod 65536 along the channels, so every packet's
// payload is a slice of one table: ramp[k] = k mod 65536 (stored little-endian,
// the host order), long enough for any start plus one packet's samples.
std::vector<std::uint16_t> make_ramp(std::uint32_t slice_samples) {
    std::vector<std::uint16_t> r(65536u + slice_samples);
    for (std::size_t k = 0; k < r.size(); ++k) r[k] = static_cast<std::uint16_t>(k);
    return r;
}

// ---------------------------------------------------------------- detector --

// Detector-like frames (--detector). Per unit and channel a pedestal
// (Gaussian around --pedestal-mean, spread --pedestal-spread) and a noise
// sigma (uniform in --noise-min..--noise-max), drawn once from
// --detector-seed and the unit id, so two runs with the same seed see the
// same detector. Per frame: pedestal + sigma x N(0,1) (normals from a table
// of 65536 standard normal values, indexed by a 64-bit generator seeded from
// --seed), plus with --beam Poisson hits with exponential amplitudes whose
// mean count falls off as a Gaussian around the beam spot on the channel
// grid; rounded and clamped to 0..65535.
class detector_model {
public:
    detector_model(const options& o, std::uint32_t channels, const std::vector<std::uint16_t>& unit_ids)
        : o_(o), channels_(channels), rng_(o.seed * 0x9E3779B97F4A7C15ull + 0xD1E7EC7ull), values_(channels) {
        grid_w_ = static_cast<std::uint32_t>(std::ceil(std::sqrt(static_cast<double>(channels))));
        grid_h_ = (channels + grid_w_ - 1) / grid_w_;
        beam_x_ = o.beam_x >= 0 ? o.beam_x : (grid_w_ - 1) / 2.0;
        beam_y_ = o.beam_y >= 0 ? o.beam_y : (grid_h_ - 1) / 2.0;
        for (std::uint16_t id : unit_ids) {
            std::mt19937_64 r(o.detector_seed * 0x2545F4914F6CDD1Dull + id + 1);
            std::normal_distribution<double> ped(o.pedestal_mean, o.pedestal_spread);
            std::uniform_real_distribution<double> sig(o.noise_min, o.noise_max);
            unit_truth t;
            t.id = id;
            t.pedestal.resize(channels);
            t.noise.resize(channels);
            for (std::uint32_t c = 0; c < channels; ++c) {
                t.pedestal[c] = std::clamp(ped(r), 0.0, 65535.0);
                t.noise[c] = sig(r);
            }
            units_.push_back(std::move(t));
        }
        // A table of standard normal values, normalised to mean 0 and sd 1.
        std::mt19937_64 tr(0x5eed5eedull);
        std::normal_distribution<double> z(0.0, 1.0);
        std::vector<double> table(65536);
        double sum = 0, sum2 = 0;
        for (auto& v : table) {
            v = z(tr);
            sum += v;
        }
        const double mean = sum / table.size();
        for (auto& v : table) sum2 += (v - mean) * (v - mean);
        const double sd = std::sqrt(sum2 / table.size());
        normals_.resize(table.size());
        for (std::size_t i = 0; i < table.size(); ++i) normals_[i] = (table[i] - mean) / sd;
        if (o.beam) {
            for (std::uint32_t c = 0; c < channels; ++c) {
                const double dx = static_cast<double>(c % grid_w_) - beam_x_, dy = static_cast<double>(c / grid_w_) - beam_y_;
                const double lambda = o.beam_intensity * std::exp(-(dx * dx + dy * dy) / (2 * o.beam_sigma * o.beam_sigma));
                if (lambda < 1e-7) continue;
                beam_channels_.push_back(c);
                beam_exp_neg_lambda_.push_back(std::exp(-lambda));
            }
        }
    }

    // Fills one frame of unit number k (position in --units order).
    void frame(std::size_t k, std::uint16_t* out) {
        const unit_truth& t = units_[k];
        std::uint32_t c = 0;
        while (c < channels_) {
            const std::uint64_t r = rng_();
            for (int j = 0; j < 4 && c < channels_; ++j, ++c)
                values_[c] = t.pedestal[c] + t.noise[c] * normals_[(r >> (16 * j)) & 0xffffu];
        }
        for (std::size_t i = 0; i < beam_channels_.size(); ++i) {
            // Poisson count (Knuth), exponential amplitude per hit.
            const double limit = beam_exp_neg_lambda_[i];
            double p = u01();
            while (p > limit) {
                values_[beam_channels_[i]] += -o_.beam_amplitude * std::log(1.0 - u01());
                ++hits_;
                p *= u01();
            }
        }
        for (std::uint32_t i = 0; i < channels_; ++i)
            out[i] = static_cast<std::uint16_t>(std::clamp(std::lround(values_[i]), 0l, 65535l));
    }

    json summary() const {
        json d;
        d["detector_seed"] = o_.detector_seed;
        d["noise_seed"] = o_.seed;
        d["grid"] = {grid_w_, grid_h_};
        d["pedestal_mean"] = o_.pedestal_mean;
        d["pedestal_spread"] = o_.pedestal_spread;
        d["noise_min"] = o_.noise_min;
        d["noise_max"] = o_.noise_max;
        d["beam"] = o_.beam ? json{{"x", beam_x_},
                                   {"y", beam_y_},
                                   {"sigma", o_.beam_sigma},
                                   {"intensity", o_.beam_intensity},
                                   {"amplitude", o_.beam_amplitude},
                                   {"hits", hits_}}
                            : json(nullptr);
        d["truth_file"] = o_.truth_path.empty() ? json(nullptr) : json(o_.truth_path);
        return d;
    }

    // The true pedestal and noise of every channel of every unit, as JSON.
    void write_truth(const std::string& path) const {
        json t;
        t["channels"] = channels_;
        t["grid"] = {grid_w_, grid_h_};
        t["detector"] = summary();
        json us = json::array();
        for (const auto& u : units_) us.push_back({{"unit", u.id}, {"pedestal", u.pedestal}, {"noise", u.noise}});
        t["units"] = us;
        std::ofstream f(path);
        f << t.dump() << '\n';
        if (!f) die(2, fmt::format("cannot write {}", path));
    }

private:
    struct unit_truth {
        std::uint16_t id = 0;
        std::vector<double> pedestal, noise;
    };
    double u01() { return static_cast<double>(rng_() >> 11) * 0x1.0p-53; }

    const options& o_;
    std::uint32_t channels_;
    std::uint32_t grid_w_ = 1, grid_h_ = 1;
    double beam_x_ = 0, beam_y_ = 0;
    std::mt19937_64 rng_;
    std::vector<unit_truth> units_;
    std::vector<double> normals_;
    std::vector<double> values_;
    std::vector<std::uint32_t> beam_channels_;
    std::vector<double> beam_exp_neg_lambda_;
    std::uint64_t hits_ = 0;
};

class simulator {
public:
    simulator(const options& o, std::vector<target>& targets, sender& snd)
        : o_(o),
          targets_(targets),
          snd_(snd),
          layout_(daq1::frame_layout::for_datagram(static_cast<std::uint32_t>(o.channels * 2), o.datagram)),
          stride_(daq1::header_bytes + layout_.slice),
          wire_bytes_(layout_.frame_bytes + daq1::header_bytes * layout_.packet_count),
          segs_per_call_(std::min(gso_max_segments, gso_max_bytes / stride_)),
          faults_on_(o.loss > 0 || o.reorder > 0 || o.duplicate > 0 || o.malformed > 0),
          rng_(o.seed),
          ramp_(make_ramp(layout_.slice / 2)) {
        faults_.resize(layout_.packet_count);
        order_.resize(layout_.packet_count);
        sent_pos_.reserve(layout_.packet_count);
        const std::size_t need = frame_arena_need();
        for (auto& t : targets_) {
            t.arena_cap = std::max<std::size_t>(need, 1u << 20);
            t.arena = std::make_unique<std::byte[]>(t.arena_cap);  // zeroed
            t.queue.reserve(batch_messages + 3u * layout_.packet_count);
        }
        for (std::uint64_t i = 0; i < o.units; ++i) {
            unit_state u{};
            u.id = static_cast<std::uint16_t>(o.first_unit + i);
            u.target = i % targets_.size();
            u.seq = static_cast<std::uint32_t>(o.seq_start);
            u.first_seq = u.seq;
            units_.push_back(u);
        }
        if (o.detector) {
            std::vector<std::uint16_t> ids;
            for (const auto& u : units_) ids.push_back(u.id);
            det_ = std::make_unique<detector_model>(o, static_cast<std::uint32_t>(o.channels), ids);
            det_samples_.resize(o.channels);
        }
        const double total_mbps = o.rate_per_unit_given ? o.rate_per_unit * static_cast<double>(o.units) : o.rate;
        rate_bytes_per_ns_ = total_mbps * 1e6 / 8.0 / 1e9;
    }

    const daq1::frame_layout& layout() const { return layout_; }
    std::uint16_t gso_size() const { return static_cast<std::uint16_t>(stride_); }
    const std::vector<unit_state>& units() const { return units_; }
    std::uint64_t malformed_count(std::size_t k) const { return malformed_by_kind_[k]; }
    const detector_model* detector() const { return det_.get(); }

    // Runs the whole stream; returns elapsed seconds.
    double run() {
        const std::int64_t start = mono_ns();
        const std::int64_t deadline =
            o_.duration_given ? start + static_cast<std::int64_t>(o_.duration * 1e9) : 0;
        next_ns_ = start;
        bool final_round = false;
        for (std::uint64_t round = 0;; ++round) {
            if (o_.duration_given) {
                if (mono_ns() >= deadline) final_round = true;
            } else if (round + 1 == o_.frames) {
                final_round = true;
            }
            if (g_stop) final_round = true;
            const std::uint64_t f = o_.first_frame + round;
            for (auto& u : units_) {
                pace();
                send_frame(u, f, round == 0, final_round);
            }
            if (final_round) break;
        }
        for (auto& t : targets_) snd_.flush(t);
        return static_cast<double>(mono_ns() - start) / 1e9;
    }

private:
    std::size_t frame_arena_need() const {
        return wire_bytes_ + (faults_on_ ? malformed_max_bytes * layout_.packet_count : 0);
    }

    double u01() { return static_cast<double>(rng_() >> 11) * 0x1.0p-53; }

    void pace() {
        if (rate_bytes_per_ns_ <= 0) return;
        // Bucket depth: 10 ms of traffic. Catches up after a late wake-up
        // (a loaded machine) instead of losing rate; bounds the burst.
        constexpr std::int64_t burst_ns = 10'000'000;
        constexpr std::int64_t min_sleep_ns = 20'000;
        const std::int64_t now = mono_ns();
        if (next_ns_ < now - burst_ns) next_ns_ = now - burst_ns;
        if (next_ns_ > now + min_sleep_ns) {
            for (auto& t : targets_) snd_.flush(t);
            sleep_until_mono(next_ns_);
        }
    }

    void account(std::uint64_t bytes) {
        if (rate_bytes_per_ns_ > 0) next_ns_ += static_cast<std::int64_t>(static_cast<double>(bytes) / rate_bytes_per_ns_);
    }

    // Writes all packets of a frame, stride_ bytes apart, at dst.
    void build_frame(std::byte* dst, const unit_state& u, std::uint64_t f, std::uint8_t flags) {
        daq1::header h;
        h.flags = flags;
        h.unit_id = u.id;
        h.packet_count = layout_.packet_count;
        h.frame_number = f;
        h.timestamp_ns = static_cast<std::uint64_t>(clock_ns(CLOCK_REALTIME));
        h.frame_bytes = layout_.frame_bytes;
        const auto base = static_cast<std::uint16_t>(daq1::test_pattern(f, u.id, 0));
        if (det_) det_->frame(static_cast<std::size_t>(&u - units_.data()), det_samples_.data());
        for (std::uint16_t i = 0; i < layout_.packet_count; ++i) {
            std::byte* p = dst + static_cast<std::size_t>(i) * stride_;
            h.packet_seq = u.seq + i;  // wraps at 2^32
            h.packet_index = i;
            h.payload_offset = layout_.offset(i);
            daq1::encode_header(h, p);
            const std::uint32_t n = layout_.bytes(i);
            if (det_)
                std::memcpy(p + daq1::header_bytes,
                            reinterpret_cast<const std::byte*>(det_samples_.data()) + h.payload_offset, n);
            else if (o_.pattern)
                std::memcpy(p + daq1::header_bytes, &ramp_[static_cast<std::uint16_t>(base + h.payload_offset / 2)], n);
            else
                std::memset(p + daq1::header_bytes, 0, n);
        }
    }

    std::uint32_t packet_len(std::uint16_t i) const { return daq1::header_bytes + layout_.bytes(i); }

    void make_room(target& t, std::size_t bytes, std::size_t msgs) {
        if (t.queue.empty()) return;
        if (t.arena_used + bytes > t.arena_cap || t.queue.size() + msgs > batch_messages) snd_.flush(t);
    }

    void send_frame(unit_state& u, std::uint64_t f, bool first, bool last) {
        const std::uint16_t n = layout_.packet_count;
        const std::uint8_t flags = static_cast<std::uint8_t>((o_.pattern ? daq1::flag_test_pattern : 0) |
                                                             (last && o_.eos ? daq1::flag_end_of_stream : 0));
        bool any_fault = false;
        if (faults_on_ && !first && !last) {
            for (std::uint16_t i = 0; i < n; ++i) {
                // Always four draws per packet, so a seed gives the same faults
                // whatever the probabilities.
                const double a = u01(), b = u01(), c = u01(), d = u01();
                packet_fault& pf = faults_[i];
                pf.lost = a < o_.loss;
                pf.reorder = b < o_.reorder;
                pf.duplicate = c < o_.duplicate;
                pf.malformed = d < o_.malformed;
                any_fault |= pf.lost || pf.reorder || pf.duplicate || pf.malformed;
            }
        }
        target& t = targets_[u.target];
        if (u.frames == 0) u.first_frame = f;
        u.last_frame = f;
        ++u.frames;
        u.packets += n;
        std::uint64_t bytes = 0;

        if (!any_fault) {
            const bool gso = snd_.mode == send_mode::gso;
            const std::size_t msgs = gso ? (n + segs_per_call_ - 1) / segs_per_call_ : n;
            make_room(t, wire_bytes_, msgs);
            std::byte* dst = t.arena.get() + t.arena_used;
            build_frame(dst, u, f, flags);
            t.arena_used += wire_bytes_;
            if (gso) {
                for (std::size_t i = 0; i < n; i += segs_per_call_) {
                    const std::size_t segs = std::min<std::size_t>(segs_per_call_, n - i);
                    const std::size_t len = (segs - 1) * stride_ + packet_len(static_cast<std::uint16_t>(i + segs - 1));
                    t.queue.push_back({dst + i * stride_, static_cast<std::uint32_t>(len), gso_size()});
                }
            } else {
                for (std::uint16_t i = 0; i < n; ++i)
                    t.queue.push_back({dst + static_cast<std::size_t>(i) * stride_, packet_len(i), 0});
            }
            bytes = wire_bytes_;
            ++u.frames_complete;
        } else {
            // Send order: the frame's packets, reordered pairwise among sent ones.
            for (std::uint16_t i = 0; i < n; ++i) order_[i] = i;
            sent_pos_.clear();
            for (std::uint16_t i = 0; i < n; ++i)
                if (!faults_[i].lost) sent_pos_.push_back(i);
            std::uint64_t reordered = 0;
            for (std::size_t j = 0; j + 1 < sent_pos_.size();) {
                if (faults_[order_[sent_pos_[j]]].reorder) {
                    std::swap(order_[sent_pos_[j]], order_[sent_pos_[j + 1]]);
                    ++reordered;
                    j += 2;
                } else {
                    ++j;
                }
            }
            std::size_t msgs = 0, mal = 0, lost = 0, dups = 0;
            for (std::uint16_t i = 0; i < n; ++i) {
                const packet_fault& pf = faults_[i];
                if (pf.lost) ++lost;
                else msgs += pf.duplicate ? 2 : 1;
                if (pf.duplicate && !pf.lost) ++dups;
                if (pf.malformed) ++mal;
            }
            msgs += mal;
            make_room(t, wire_bytes_ + mal * malformed_max_bytes, msgs);
            std::byte* dst = t.arena.get() + t.arena_used;
            build_frame(dst, u, f, flags);
            t.arena_used += wire_bytes_;
            for (std::uint16_t j = 0; j < n; ++j) {
                const std::uint16_t i = order_[j];
                const packet_fault& pf = faults_[i];
                const std::byte* p = dst + static_cast<std::size_t>(i) * stride_;
                const std::uint32_t len = packet_len(i);
                if (!pf.lost) {
                    t.queue.push_back({p, len, 0});
                    bytes += len;
                    if (pf.duplicate) {
                        t.queue.push_back({p, len, 0});
                        bytes += len;
                    }
                }
                if (pf.malformed) {
                    const std::size_t k = malformed_next_++ % n_malformed_kinds;
                    std::byte* m = t.arena.get() + t.arena_used;
                    const std::size_t mlen = make_malformed(malformed_kinds[k], p, len, m);
                    t.arena_used += mlen;
                    t.queue.push_back({m, static_cast<std::uint32_t>(mlen), 0});
                    bytes += mlen;
                    ++malformed_by_kind_[k];
                }
            }
            u.packets_lost += lost;
            u.duplicates += dups;
            u.reordered += reordered;
            u.malformed += mal;
            if (lost == 0) ++u.frames_complete;
            else if (lost == n) ++u.frames_lost;
            else ++u.frames_incomplete;
        }
        u.seq += n;
        account(bytes);
    }

    const options& o_;
    std::vector<target>& targets_;
    sender& snd_;
    daq1::frame_layout layout_;
    std::size_t stride_;
    std::size_t wire_bytes_;
    std::size_t segs_per_call_;
    bool faults_on_;
    std::mt19937_64 rng_;
    std::vector<std::uint16_t> ramp_;
    std::unique_ptr<detector_model> det_;
    std::vector<std::uint16_t> det_samples_;
    std::vector<packet_fault> faults_;
    std::vector<std::uint16_t> order_;
    std::vector<std::uint16_t> sent_pos_;
    std::vector<unit_state> units_;
    std::array<std::uint64_t, n_malformed_kinds> malformed_by_kind_{};
    std::size_t malformed_next_ = 0;
    double rate_bytes_per_ns_ = 0;
    std::int64_t next_ns_ = 0;
};

double round3(double v) { return std::round(v * 1000.0) / 1000.0; }

}  // namespace

int main(int argc, char** argv) {
    const options o = parse_options(argc, argv);

    {
        const std::uint64_t frame_bytes = o.channels * 2;
        const std::uint64_t slice = std::min<std::uint64_t>((o.datagram - daq1::header_bytes) & ~1ull, frame_bytes);
        const std::uint64_t count = (frame_bytes + slice - 1) / slice;
        if (count > 65535)
            die_usage(fmt::format("{} channels in {}-byte datagrams need {} packets per frame (max 65535)",
                                  o.channels, o.datagram, count));
    }

    std::vector<target> targets(o.targets.size());
    for (std::size_t i = 0; i < targets.size(); ++i) {
        targets[i].spec = o.targets[i];
        open_target(targets[i]);
    }

    sender snd(o.mode, o.quiet);
    simulator sim(o, targets, snd);
    for (const auto& t : targets) snd.probe_gso(t, sim.gso_size());

    prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);  // finer sleeps for pacing
    struct sigaction sa{};
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESETHAND;  // a second signal kills
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);

    if (sim.detector() != nullptr && !o.truth_path.empty()) sim.detector()->write_truth(o.truth_path);
    const auto& lay = sim.layout();
    if (!o.quiet) {
        std::string tl;
        for (const auto& t : targets) tl += (tl.empty() ? "" : ", ") + t.spec;
        fmt::print(stderr, "daq-sim: {} unit(s) x {} channels, {} packets/frame of <= {} bytes, {} -> {} ({})\n",
                   o.units, o.channels, lay.packet_count, daq1::header_bytes + lay.slice,
                   o.duration_given ? fmt::format("{} s", o.duration) : fmt::format("{} frames/unit", o.frames), tl,
                   snd.mode == send_mode::gso ? "gso" : "sendmmsg");
    }

    const double seconds = sim.run();

    std::uint64_t frames = 0, packets = 0, lost = 0, dups = 0, reord = 0, complete = 0, incomplete = 0,
                  frames_lost = 0, malformed_total = 0;
    json per_unit = json::array();
    for (const auto& u : sim.units()) {
        frames += u.frames;
        packets += u.packets;
        lost += u.packets_lost;
        dups += u.duplicates;
        reord += u.reordered;
        complete += u.frames_complete;
        incomplete += u.frames_incomplete;
        frames_lost += u.frames_lost;
        per_unit.push_back({
            {"unit", u.id},
            {"target", targets[u.target].spec},
            {"first_frame", u.first_frame},
            {"last_frame", u.last_frame},
            {"frames", u.frames},
            {"first_seq", u.first_seq},
            {"next_seq", u.seq},
            {"packets_sent", u.packets - u.packets_lost},
            {"frames_complete", u.frames_complete},
            {"frames_incomplete", u.frames_incomplete},
            {"frames_lost", u.frames_lost},
            {"packets_lost", u.packets_lost},
            {"duplicates", u.duplicates},
            {"reordered", u.reordered},
            {"malformed", u.malformed},
        });
    }
    json malformed = json::object();
    for (std::size_t k = 0; k < n_malformed_kinds; ++k) {
        malformed[std::string(daq1::name(malformed_kinds[k]))] = sim.malformed_count(k);
        malformed_total += sim.malformed_count(k);
    }
    const double secs = seconds > 0 ? seconds : 1e-9;
    json targets_json = json::array();
    for (const auto& t : targets) targets_json.push_back(t.spec);

    json j;
    j["units"] = o.units;
    j["first_unit"] = o.first_unit;
    j["channels"] = o.channels;
    j["frame_bytes"] = lay.frame_bytes;
    j["datagram_bytes"] = o.datagram;
    j["packets_per_frame"] = lay.packet_count;
    j["targets"] = targets_json;
    j["frames_sent"] = frames;
    j["packets_sent"] = packets - lost;
    j["datagrams_sent"] = snd.stats.datagrams;
    j["bytes_sent"] = snd.stats.bytes;
    j["seconds"] = std::round(seconds * 1e6) / 1e6;
    j["rate_mbps"] = round3(static_cast<double>(snd.stats.bytes) * 8.0 / secs / 1e6);
    j["packets_per_second"] = std::round(static_cast<double>(packets - lost) / secs);
    j["datagrams_per_second"] = std::round(static_cast<double>(snd.stats.datagrams) / secs);
    j["mode"] = snd.mode == send_mode::gso ? "gso" : "sendmmsg";
    j["send_retries"] = snd.stats.retries;
    j["send_errors"] = snd.stats.errors;
    j["seed"] = o.seed;
    j["injected"] = {
        {"packets_lost", lost},
        {"duplicates", dups},
        {"reordered", reord},
        {"malformed", malformed},
        {"malformed_total", malformed_total},
        {"frames_complete", complete},
        {"frames_incomplete", incomplete},
        {"frames_lost", frames_lost},
    };
    j["per_unit"] = per_unit;
    if (sim.detector() != nullptr) j["detector"] = sim.detector()->summary();

    const std::string text = j.dump(2);
    std::fputs(text.c_str(), stdout);
    std::fputc('\n', stdout);
    std::fflush(stdout);
    if (!o.json_path.empty()) {
        std::ofstream f(o.json_path);
        f << text << '\n';
        if (!f) die(2, fmt::format("cannot write {}", o.json_path));
    }
    if (!o.quiet)
        fmt::print(stderr, "daq-sim: {} frames, {} datagrams, {:.1f} MB in {:.3f} s: {:.0f} Mbit/s, {:.0f} packets/s{}\n",
                   frames, snd.stats.datagrams, static_cast<double>(snd.stats.bytes) / 1e6, seconds,
                   static_cast<double>(snd.stats.bytes) * 8.0 / secs / 1e6,
                   static_cast<double>(packets - lost) / secs,
                   snd.stats.errors ? fmt::format(" ({} ECONNREFUSED)", snd.stats.errors) : "");
    return 0;
}
