#pragma once
// daqd's one configuration type, loaded from TOML (docs/CONFIG.md).
//
// Built once at start by the main thread, then read-only: every thread may
// read it concurrently. Every key is declared once, in the key table of
// src/config.cpp (name, rule, comment, how it is read, checked and rendered);
// the structs below hold the values and their defaults.
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace daqd::config {

// what(): every mistake found, one per line, in the order of the file, each
// "file:line: message" naming the key.
struct config_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// A UDP endpoint to listen on: "127.0.0.1:4660", "[::1]:4660", "0.0.0.0:4660".
struct endpoint {
    std::string host;
    std::uint16_t port = 0;
    [[nodiscard]] std::string to_string() const;
    // Parses HOST:PORT or [V6]:PORT; throws config_error naming `what`.
    static endpoint parse(const std::string& text, const std::string& what);
    bool operator==(const endpoint&) const = default;
};

enum class receiver_backend { automatic, io_uring, recvmmsg };

struct unit_config {
    std::uint16_t id = 0;
    std::uint32_t channels = 0;
    // Geometry of a frame (units.list[].shape): 1 to 3 extents, slowest
    // first, whose product is `channels`; empty: none given. Stored as the
    // unit group's `shape` attribute (raw stays [frames, channels]).
    std::vector<std::uint32_t> shape;
    // Bytes of one frame of this unit: 16-bit samples, one per channel.
    [[nodiscard]] constexpr std::uint32_t frame_bytes() const noexcept { return 2u * channels; }
    bool operator==(const unit_config&) const = default;
};

struct acquisition_config {
    std::vector<endpoint> listen{{"127.0.0.1", 4660}};
    receiver_backend backend = receiver_backend::automatic;
    bool gro = false;                          // UDP_GRO: kernel coalesces same-size datagrams
    std::uint32_t batch = 64;                  // datagrams per recvmmsg call / io_uring reap
    std::uint32_t max_datagram_bytes = 9000;   // ring slot payload size (65535 with gro)
    std::uint32_t socket_buffer_datagrams = 32768;  // receive buffer, sized in datagrams
    std::uint32_t expected_datagram_bytes = 1472;   // used to turn datagrams into bytes
    std::uint32_t expected_rate_mbps = 0;      // all links together; 0: their line rate
    std::uint32_t shards = 1;                  // receive shards: groups of links, each its own threads and ring
    std::uint32_t ring_slots = 16384;          // packet ring slots
    std::string ring_name = "daqd-{pid}";      // shm name; {pid} replaced; /dev/shm/<name>-<n>
    bool operator==(const acquisition_config&) const = default;
};

struct units_config {
    bool learn = true;                 // accept any unit, learn its frame size from its first packet
    std::vector<unit_config> units;    // listed units (always accepted, sizes fixed)
    std::uint32_t max_learned = 256;   // learned (unlisted) units held at once
    std::uint32_t learned_idle_s = 600;  // a learned unit silent this long gives its slot to a new one
    std::chrono::milliseconds relearn_quiet{2000};  // a learned unit's new frame size is taken after
                                                    // this long without a frame of the old size
    bool operator==(const units_config&) const = default;
};

struct assembly_config {
    std::uint32_t reorder_frames = 8;                       // open frames per unit
    std::chrono::milliseconds reorder_timeout{100};          // an open frame older than this closes
    std::uint32_t max_frame_bytes = 65536;                   // largest frame accepted
    double buffer_seconds = 2.5;                              // frame buffer, in time at the expected rate
    std::uint64_t buffer_max_bytes = 4ull << 30;              // ... within this much memory
    std::uint32_t pool_blocks = 0;                            // blocks by hand; 0: from buffer_seconds
    std::uint64_t max_frame_jump = 1u << 20;                  // frames ahead that are plausible
    std::uint32_t restart_packets = 16;                       // packets that confirm a new stream
    bool operator==(const assembly_config&) const = default;
};

struct storage_config {
    std::filesystem::path output_dir = "./runs";
    std::chrono::milliseconds flush_interval{1000};
    std::uint64_t rotate_bytes = 0;          // 0: no rotation
    std::uint32_t chunk_bytes = 1u << 20;    // target raw chunk size
    std::uint32_t queue_frames = 0;          // 0: every row of the frame buffer (at most 262144)
    std::uint64_t reserve_bytes = 64ull << 20;  // free space kept for closing files; 0: none
    std::string writeback = "paced";         // one of the table's names: "paced", "kernel"
    std::string compression = "none";        // one of the table's names: "none", "bslz4"
    std::uint32_t compress_threads = 0;      // 0: half the CPUs, 1..8
    // Names of runs started without one (API, page): the pattern with the
    // next number (parse_run_name_pattern()).
    std::string run_name_pattern = "run_{:05d}";
    bool operator==(const storage_config&) const = default;
};

// Processing stages between assembly and the writer (docs/CALIBRATION.md).
struct processing_config {
    // Stages in order (stage_order_error() is their rule). Empty: no
    // processing thread.
    std::vector<std::string> stages;
    std::string backend = "auto";               // one of the table's names, as the processor takes it
    std::filesystem::path calibration_file;     // daq1-calibration HDF5 file; empty: none (identity)
    double threshold = 5.0;                     // absolute value, or k in k x noise
    std::string threshold_mode = "noise";       // one of the table's names
    std::uint32_t batch_frames = 64;            // most frames per batch
    std::chrono::milliseconds live_interval{200};  // live view publication interval per unit
    [[nodiscard]] bool has(std::string_view stage) const noexcept {
        for (const auto& s : stages)
            if (s == stage) return true;
        return false;
    }
    bool operator==(const processing_config&) const = default;
};

struct log_config {
    std::string level = "info";
    bool operator==(const log_config&) const = default;
};

// The HTTP server (status page, /metrics, control API; web/README.md).
struct http_config {
    std::string listen = "127.0.0.1:8080";  // an endpoint's text (endpoint::parse); "" = no HTTP server
    std::string token;       // bearer token of mutating requests; "": token_file, or generated at start
    std::string token_file;  // file holding the token (read at start)
    // Host names a request's Host header may carry (besides the loopback
    // names and the listen address, always allowed); "*" = any. Against DNS
    // rebinding: web/README.md.
    std::vector<std::string> allowed_hosts;
    [[nodiscard]] bool enabled() const noexcept { return !listen.empty(); }
    bool operator==(const http_config&) const = default;
};

// The live stream (docs/STREAM.md): ZeroMQ PUSH of every stored chunk, PUB
// of run messages and previews. Off while listen is empty.
struct stream_config {
    std::vector<std::string> listen;   // PUSH endpoints: "tcp://HOST:PORT" (numeric host) or "ipc://PATH"
    std::vector<std::string> publish;  // PUB endpoints; empty: each listen endpoint's port + 1 (ipc: PATH.pub)
    std::uint32_t send_hwm = 32;       // chunk messages ZeroMQ buffers per consumer
    std::uint32_t queue_chunks = 64;   // chunk messages waiting for the sender thread
    double preview_rate = 2.0;         // preview frames per second per unit; 0: none
    std::string curve_secret_key_file;   // Z85 secret key (first line); needed off loopback
    std::string curve_client_keys_file;  // Z85 public keys admitted, one per line; "": any holder of ours
    std::uint32_t linger_ms = 1000;      // at shutdown, how long queued messages may still go out
    [[nodiscard]] bool enabled() const noexcept { return !listen.empty(); }
    bool operator==(const stream_config&) const = default;
};

// Which CPUs the data-path threads run on, and whether receive and assembly
// share one thread (docs/CONFIG.md "[threads]", issue 11). CPU lists are
// kept as written ("2", "2-3", "0,4-5"; "" = not pinned): parse_cpu_list()
// reads them, the key table checks them against this machine's CPUs.
struct threads_config {
    std::string receiver_cpus;
    std::string assembler_cpus;
    std::string processor_cpus;
    std::string writer_cpus;
    std::string http_cpus;
    std::string combine_receive_assembly = "auto";  // "auto", "on", "off"
    bool operator==(const threads_config&) const = default;
};

struct config {
    acquisition_config acquisition;
    units_config units;
    assembly_config assembly;
    storage_config storage;
    processing_config processing;
    log_config log;
    http_config http;
    stream_config stream;
    threads_config threads;
    std::string source = "<embedded default>";  // where it came from
    std::string text;                           // the effective configuration as TOML text

    // Checks every key's rule and the rules across keys; throws config_error
    // naming every key that is wrong. load_* run the same checks (with line
    // numbers).
    void validate() const;
    // Compares everything, source and text included.
    bool operator==(const config&) const = default;
};

// The default configuration as TOML text: to_toml(config{}).
std::string_view default_toml();
config load_default();
config load_file(const std::filesystem::path& path);
config load_string(std::string_view toml, const std::string& source_name);
// Renders the effective configuration as TOML, every key with its comment
// from the key table (round-trips through load_string).
// hide_secrets: http.token is rendered as "" (config.text, which goes into
// run files and --print-config, is rendered that way).
std::string to_toml(const config& c, bool hide_secrets = false);
// True for 127.0.0.0/8 and ::1 (numeric, as endpoint::parse leaves them).
bool is_loopback(const std::string& host);
// A stream endpoint: "tcp://HOST:PORT" (HOST numeric, as endpoint::parse) or
// "ipc://PATH". Throws config_error naming `what`. Returns whether it may be
// reached from off this machine (tcp, host not loopback).
bool check_stream_endpoint(const std::string& text, const std::string& what);

std::string_view name(receiver_backend b);

// The processing.stages rule (each of calibrate, dose, live at most once, in
// that order; dose needs calibrate): "" when `stages` keeps it, else the
// message. The processor relies on it for stages it is given.
std::string stage_order_error(const std::vector<std::string>& stages);

// storage.run_name_pattern: run-name characters around one number
// placeholder, "{}" (no padding) or "{:0Nd}" (N digits, 1..20). nullopt
// with the reason in `error` when `text` is not such a pattern.
struct run_name_pattern {
    std::string prefix, suffix;
    unsigned width = 0;  // digits the number is padded to with zeros; 0: none
    [[nodiscard]] std::string name(std::uint64_t number) const;
    // The number of a name made by this pattern, or nullopt.
    [[nodiscard]] std::optional<std::uint64_t> number_of(std::string_view name) const;
};
std::optional<run_name_pattern> parse_run_name_pattern(std::string_view text, std::string* error = nullptr);

// A CPU list as threads.*_cpus and taskset write it: comma-separated CPU
// numbers and ranges ("2", "2-3", "0,4-5"); "" is the empty list (not
// pinned). Sorted, without repeats. nullopt with the reason in `error` when
// the text is not such a list (numbers above 65535 included).
std::optional<std::vector<unsigned>> parse_cpu_list(std::string_view text, std::string* error = nullptr);
// The CPUs this machine has online (/sys/devices/system/cpu/online; where
// that cannot be read, 0 .. the configured count - 1).
std::vector<unsigned> online_cpus();

// Whether receive and assembly share one thread, and why, in words for the
// log: threads.combine_receive_assembly, and for "auto" the CPUs daqd may
// run on (`cpus`: on where at most 2).
struct combine_choice {
    bool combined = false;
    std::string why;
};
combine_choice choose_combine(const threads_config& t, unsigned cpus);

// One row of the key table, for documentation and tests.
struct key_info {
    std::string_view name;  // "section.key", in file order
    std::string_view doc;   // the comment above the key in to_toml()
    std::string rule;       // its own rule in words; docs/CONFIG.md's range column begins with it
};
std::vector<key_info> keys();
// The value of `key` in `c` as TOML text ("64", "\"auto\"", "[]"), secrets
// included; throws config_error for a key not in the table.
std::string value_toml(const config& c, std::string_view key);
// Sets a key whose TOML value is a string from command-line text, through
// the table's reading and the key's own rule; on a mistake throws
// config_error starting with `option` and leaves `c` as it was. Rules across
// keys are left to validate().
void set_key(config& c, std::string_view key, std::string_view text, std::string_view option);

}  // namespace daqd::config
