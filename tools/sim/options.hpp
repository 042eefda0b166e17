#pragma once
// daq-sim: the command line: options, their parsing and the usage text.
#include "sim.hpp"

namespace daqd::sim {

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
  --detector-cycle N     make N frames per unit up front and send them in turn
                         (benchmarks: detector data at the rate of the test
                         pattern; every frame still has its own frame_number)
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
    std::uint32_t detector_cycle = 0;  // >0: that many frames per unit made up front, sent in turn
};

inline std::uint64_t parse_uint(std::string_view opt, std::string_view s, std::uint64_t lo, std::uint64_t hi) {
    std::uint64_t v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (s.empty() || ec != std::errc{} || p != s.data() + s.size())
        die_usage(fmt::format("--{}: expected an integer, got '{}'", opt, s));
    if (v < lo || v > hi) die_usage(fmt::format("--{}: {} is out of range {}..{}", opt, v, lo, hi));
    return v;
}

inline double parse_double(std::string_view opt, const char* s, double lo, double hi) {
    char* end = nullptr;
    errno = 0;
    const double v = std::strtod(s, &end);
    if (*s == '\0' || end == nullptr || *end != '\0' || errno != 0 || !std::isfinite(v))
        die_usage(fmt::format("--{}: expected a number, got '{}'", opt, s));
    if (v < lo || v > hi) die_usage(fmt::format("--{}: {} is out of range {}..{}", opt, v, lo, hi));
    return v;
}

inline options parse_options(int argc, char** argv) {
    enum : int {
        o_target = 256, o_units, o_first_unit, o_channels, o_frames, o_duration, o_rate, o_rate_per_unit,
        o_datagram, o_first_frame, o_seq_start, o_no_pattern, o_no_eos, o_loss, o_reorder, o_duplicate,
        o_malformed, o_seed, o_mode, o_json, o_quiet, o_detector, o_detector_seed, o_pedestal_mean,
        o_pedestal_spread, o_noise_min, o_noise_max, o_beam, o_beam_x, o_beam_y, o_beam_sigma, o_beam_intensity,
        o_beam_amplitude, o_truth, o_detector_cycle,
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
        {"detector-cycle", required_argument, nullptr, o_detector_cycle},
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
            case o_detector_cycle:
                o.detector_cycle = static_cast<std::uint32_t>(parse_uint("detector-cycle", a, 1, 4096));
                break;
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

}  // namespace daqd::sim
