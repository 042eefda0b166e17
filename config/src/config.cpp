// daqd configuration: TOML parsing, validation and rendering (docs/CONFIG.md).
#include "daqd/config/config.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <fmt/format.h>
#include <toml++/toml.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <utility>

namespace daqd::config {

namespace {

// The embedded default configuration. Every key is present and has the value
// of the struct's default member initialiser (the [config] tests check this).
constexpr std::string_view embedded_default = R"toml(# daqd configuration (TOML). Every key is optional; a missing key keeps the
# default shown here. Reference: docs/CONFIG.md.
# Keys ending in _bytes take an integer or a size string: "9000", "512MiB",
# "2GiB", "100MB" (KiB/MiB/GiB/TiB = 1024^n, KB/MB/GB/TB = 1000^n).

[acquisition]
# UDP endpoints to receive on, one per link: "IPV4:PORT" or "[IPV6]:PORT".
# Numeric addresses only; "0.0.0.0:4660" or "[::]:4660" for all interfaces.
listen = ["127.0.0.1:4660"]
# Receive path: "auto" (recvmmsg; see docs/PERFORMANCE.md), "io_uring" or
# "recvmmsg".
backend = "auto"
# UDP generic receive offload: the kernel coalesces same-size datagrams.
# Needs max_datagram_bytes = 65535.
gro = false
# Datagrams per recvmmsg call / io_uring reap, 1..1024.
batch = 64
# Largest datagram accepted (ring slot payload size), 42..65535.
max_datagram_bytes = 9000
# Socket receive buffer, in datagrams of expected_datagram_bytes.
socket_buffer_datagrams = 32768
# Typical datagram size, used to size buffers in bytes, 42..max_datagram_bytes.
expected_datagram_bytes = 1472
# Packet ring slots per link, a power of two, 64..16777216.
ring_slots = 16384
# Shared-memory ring name; {pid} becomes the server's process id.
ring_name = "daqd-{pid}"

[units]
# Accept any unit and learn its frame size from its first packet.
learn = true
# Units that are always accepted, with a fixed frame size (2 bytes per
# channel). With learn = false only these are accepted. Example:
# list = [
#   { id = 3, channels = 4096 },
#   { id = 4, channels = 1024 },
# ]
list = []
# Learned (unlisted) units held at once, 0..65536; packets of more unit ids
# are dropped (reason unit_limit). Listed units are always accepted.
max_learned = 256
# A learned unit silent this long gives its slot to a new unit, 1..604800 s.
learned_idle_s = 600
# A learned unit whose frames change size is relearned after this long
# without a frame of the old size, 10..3600000 ms.
relearn_quiet_ms = 2000

[assembly]
# Frames of one unit open at once (waiting for late packets), 1..4096.
reorder_frames = 8
# An open frame older than this is closed (incomplete), 1..60000 ms.
reorder_timeout_ms = 100
# Frame buffer size: the largest frame accepted, even, 2..16777216.
max_frame_bytes = 65536
# Frame buffers in the pool, 16..1048576. Address space is pool_frames x
# max_frame_bytes, but only the bytes frames really use are ever touched:
# 16384 buffers hold about 0.5 s of 8 KiB frames at 2 Gbit/s.
pool_frames = 16384
# A frame number further ahead of its unit's stream than this is implausible:
# the packet is held aside (reason frame_out_of_window), 1..1099511627776.
max_frame_jump = 1048576
# Packets held aside that confirm a new stream (a unit that restarted its
# frame numbers, or jumped), spanning at least two frames, 2..1024.
restart_packets = 16

[storage]
# Where run files are written.
output_dir = "./runs"
# How often an active run is flushed to disk, 10..600000 ms.
flush_interval_ms = 1000
# Start a new file of the run after this many bytes; 0: never.
rotate_bytes = 0
# Target size of one stored chunk, 4096..1073741824.
chunk_bytes = 1048576
# Frames queued between assembly and the writer; 0: pool_frames.
queue_frames = 0
# Free space kept on the output file system for closing run files cleanly:
# a run that would eat into it stops writing, closes its file and is marked
# failed (docs/RELIABILITY.md). 0: write until the disk refuses.
reserve_bytes = 67108864

[processing]
# Stages run on batches of frames between assembly and the writer, in this
# order, each at most once: "calibrate" ((raw - pedestal) x gain, below the
# threshold -> 0), "dose" (per-channel sum of calibrated values; needs
# calibrate), "live" (latest frame and dose for the web page). [] = none.
stages = []
# Where calibrate/dose run: "auto" (CUDA when built with it and a device is
# present, else the CPU), "cpu" or "cuda".
backend = "auto"
# Calibration constants (daq1-calibration HDF5, e.g. from a pedestal run:
# daqd --pedestal-run NAME). "": none (pedestal 0, gain 1).
calibration_file = ""
# Values below the threshold become 0: an absolute value, or k in k x noise.
threshold = 5.0
# "absolute" or "noise".
threshold_mode = "noise"
# Most frames per processing batch, 1..4096.
batch_frames = 64
# The live view publishes each unit at most this often, 10..60000 ms.
live_interval_ms = 200

[log]
# trace, debug, info, warn or error.
level = "info"

[http]
# Status page, /metrics and the control API: "HOST:PORT", or "" for none.
# A non-loopback address needs token or token_file.
listen = "127.0.0.1:8080"
# Bearer token for requests that change something (start/stop runs),
# 16..256 printable characters. Both empty: a random token is generated at
# start and written to <output_dir>/.daqd-token (mode 0600).
token = ""
# A file whose first line is the token (instead of token).
token_file = ""
# Host names clients may use in the Host header (no port, any port matches)
# besides those always accepted: localhost, 127.0.0.1, ::1, the listen
# address and, off loopback, this machine's name (or, listening on 0.0.0.0
# or ::, its addresses). Others are answered 403 (DNS rebinding). "*": any.
allowed_hosts = []
)toml";

constexpr std::string_view embedded_source = "<embedded default>";

// ---------------------------------------------------------------- errors

// Where errors go: the source name and, when loading, the parsed document
// (for line numbers of keys).
struct context {
    std::string_view source;
    const toml::table* doc = nullptr;

    [[nodiscard]] std::uint32_t line_of(std::string_view path) const {
        if (doc == nullptr) return 0;
        const toml::node* n = toml::at_path(*doc, path).node();
        return n == nullptr ? 0 : n->source().begin.line;
    }
    [[nodiscard]] std::string prefix(std::uint32_t line) const {
        return line > 0 ? fmt::format("{}:{}: ", source, line) : fmt::format("{}: ", source);
    }
    [[noreturn]] void fail_line(std::uint32_t line, const std::string& message) const {
        throw config_error(prefix(line) + message);
    }
    // Names the line of the first of `paths` present in the document.
    [[noreturn]] void fail(std::initializer_list<std::string_view> paths, const std::string& message) const {
        std::uint32_t line = 0;
        for (std::string_view p : paths) {
            line = line_of(p);
            if (line > 0) break;
        }
        fail_line(line, message);
    }
    [[noreturn]] void fail(std::string_view path, const std::string& message) const { fail({path}, message); }
};

std::uint32_t line_of(const toml::node& n) { return n.source().begin.line; }

std::string_view type_name(toml::node_type t) {
    switch (t) {
        case toml::node_type::none: return "nothing";
        case toml::node_type::table: return "table";
        case toml::node_type::array: return "array";
        case toml::node_type::string: return "string";
        case toml::node_type::integer: return "integer";
        case toml::node_type::floating_point: return "float";
        case toml::node_type::boolean: return "boolean";
        case toml::node_type::date: return "date";
        case toml::node_type::time: return "time";
        case toml::node_type::date_time: return "date-time";
    }
    return "unknown";
}

std::size_t edit_distance(std::string_view a, std::string_view b) {
    std::vector<std::size_t> row(b.size() + 1);
    for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
    for (std::size_t i = 1; i <= a.size(); ++i) {
        std::size_t diagonal = row[0];
        row[0] = i;
        for (std::size_t j = 1; j <= b.size(); ++j) {
            const std::size_t up = row[j];
            row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0u : 1u)});
            diagonal = up;
        }
    }
    return row[b.size()];
}

// ---------------------------------------------------------------- schema

std::string join(std::string_view section, std::string_view key) {
    return section.empty() ? std::string(key) : fmt::format("{}.{}", section, key);
}

struct section_schema {
    std::string_view name;
    std::vector<std::string_view> keys;
};

const std::vector<section_schema>& schema() {
    static const std::vector<section_schema> s{
        {"acquisition",
         {"listen", "backend", "gro", "batch", "max_datagram_bytes", "socket_buffer_datagrams",
          "expected_datagram_bytes", "ring_slots", "ring_name"}},
        {"units", {"learn", "list", "max_learned", "learned_idle_s", "relearn_quiet_ms"}},
        {"assembly",
         {"reorder_frames", "reorder_timeout_ms", "max_frame_bytes", "pool_frames", "max_frame_jump", "restart_packets"}},
        {"storage", {"output_dir", "flush_interval_ms", "rotate_bytes", "chunk_bytes", "queue_frames", "reserve_bytes"}},
        {"processing",
         {"stages", "backend", "calibration_file", "threshold", "threshold_mode", "batch_frames", "live_interval_ms"}},
        {"log", {"level"}},
        {"http", {"listen", "token", "token_file", "allowed_hosts"}},
    };
    return s;
}

const std::vector<std::string_view> unit_keys{"id", "channels"};

// Rejects keys of `table` not in `known`, suggesting the nearest known key
// (or the section a misplaced key belongs to).
void check_unknown_keys(const context& ctx, const toml::table& table, std::string_view section,
                        const std::vector<std::string_view>& known) {
    for (auto&& [key, value] : table) {
        const std::string_view k = key.str();
        if (std::find(known.begin(), known.end(), k) != known.end()) continue;
        std::string hint;
        std::size_t best = std::max<std::size_t>(1, k.size() / 3) + 1;
        for (std::string_view candidate : known) {
            const std::size_t d = edit_distance(k, candidate);
            if (d < best) {
                best = d;
                hint = fmt::format(" (did you mean '{}'?)", join(section, candidate));
            }
        }
        if (hint.empty()) {
            for (const auto& s : schema()) {
                if (std::find(s.keys.begin(), s.keys.end(), k) != s.keys.end()) {
                    hint = fmt::format(" (did you mean '{}'? it belongs in [{}])", join(s.name, k), s.name);
                    break;
                }
            }
        }
        std::uint32_t line = key.source().begin.line;
        if (line == 0) line = line_of(value);
        ctx.fail_line(line, fmt::format("unknown key '{}'{}", join(section, k), hint));
    }
}

// Integer keys: range rules shared by the parser and config::validate().
enum class int_rule { range, power_of_two, even, zero_or_range };

struct int_key {
    std::string_view path;  // "section.key"
    std::int64_t min;
    std::int64_t max;
    int_rule rule;
    std::int64_t (*get)(const config&);
    void (*set)(config&, std::int64_t);
};

#define DAQD_INT_FIELD(member)                                                                      \
    [](const config& c) -> std::int64_t { return static_cast<std::int64_t>(c.member); },          \
        [](config& c, std::int64_t v) { c.member = static_cast<decltype(c.member)>(v); }
#define DAQD_MS_FIELD(member)                                                                       \
    [](const config& c) -> std::int64_t { return static_cast<std::int64_t>(c.member.count()); },  \
        [](config& c, std::int64_t v) { c.member = std::chrono::milliseconds(v); }

constexpr std::int64_t int64_max = std::numeric_limits<std::int64_t>::max();

const int_key int_keys[] = {
    {"acquisition.batch", 1, 1024, int_rule::range, DAQD_INT_FIELD(acquisition.batch)},
    {"acquisition.max_datagram_bytes", 42, 65535, int_rule::range, DAQD_INT_FIELD(acquisition.max_datagram_bytes)},
    {"acquisition.socket_buffer_datagrams", 1, 16777216, int_rule::range,
     DAQD_INT_FIELD(acquisition.socket_buffer_datagrams)},
    {"acquisition.expected_datagram_bytes", 42, 65535, int_rule::range,
     DAQD_INT_FIELD(acquisition.expected_datagram_bytes)},
    {"acquisition.ring_slots", 64, 16777216, int_rule::power_of_two, DAQD_INT_FIELD(acquisition.ring_slots)},
    {"assembly.reorder_frames", 1, 4096, int_rule::range, DAQD_INT_FIELD(assembly.reorder_frames)},
    {"assembly.reorder_timeout_ms", 1, 60000, int_rule::range, DAQD_MS_FIELD(assembly.reorder_timeout)},
    {"assembly.max_frame_bytes", 2, 16777216, int_rule::even, DAQD_INT_FIELD(assembly.max_frame_bytes)},
    {"assembly.pool_frames", 16, 1048576, int_rule::range, DAQD_INT_FIELD(assembly.pool_frames)},
    {"assembly.max_frame_jump", 1, 1099511627776, int_rule::range, DAQD_INT_FIELD(assembly.max_frame_jump)},
    {"assembly.restart_packets", 2, 1024, int_rule::range, DAQD_INT_FIELD(assembly.restart_packets)},
    {"units.max_learned", 0, 65536, int_rule::range, DAQD_INT_FIELD(units.max_learned)},
    {"units.learned_idle_s", 1, 604800, int_rule::range, DAQD_INT_FIELD(units.learned_idle_s)},
    {"units.relearn_quiet_ms", 10, 3600000, int_rule::range, DAQD_MS_FIELD(units.relearn_quiet)},
    {"storage.flush_interval_ms", 10, 600000, int_rule::range, DAQD_MS_FIELD(storage.flush_interval)},
    {"storage.rotate_bytes", 65536, int64_max, int_rule::zero_or_range, DAQD_INT_FIELD(storage.rotate_bytes)},
    {"storage.chunk_bytes", 4096, 1073741824, int_rule::range, DAQD_INT_FIELD(storage.chunk_bytes)},
    {"storage.queue_frames", 0, 16777216, int_rule::range, DAQD_INT_FIELD(storage.queue_frames)},
    {"storage.reserve_bytes", 0, int64_max, int_rule::range, DAQD_INT_FIELD(storage.reserve_bytes)},
    {"processing.batch_frames", 1, 4096, int_rule::range, DAQD_INT_FIELD(processing.batch_frames)},
    {"processing.live_interval_ms", 10, 60000, int_rule::range, DAQD_MS_FIELD(processing.live_interval)},
};

#undef DAQD_INT_FIELD
#undef DAQD_MS_FIELD

constexpr std::int64_t unit_id_max = 65535;
constexpr std::int64_t channels_max = 8388608;  // frame_bytes = 2 * channels <= 16 MiB

bool ends_with(std::string_view s, std::string_view suffix) {
    return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

bool accepts_size_string(std::string_view path) { return ends_with(path, "_bytes"); }

std::string range_text(std::int64_t min, std::int64_t max) {
    if (max == int64_max) return fmt::format("at least {}", min);
    return fmt::format("between {} and {}", min, max);
}

// Throws when v breaks the key's rule; `path` is the key's full name.
void check_int(const context& ctx, const int_key& k, std::string_view path, std::int64_t v, std::uint32_t line) {
    const bool in_range = v >= k.min && v <= k.max;
    std::string requirement;
    bool ok = in_range;
    switch (k.rule) {
        case int_rule::range:
            requirement = range_text(k.min, k.max);
            break;
        case int_rule::power_of_two:
            ok = in_range && (v & (v - 1)) == 0;
            requirement = "a power of two " + range_text(k.min, k.max);
            break;
        case int_rule::even:
            ok = in_range && v % 2 == 0;
            requirement = "an even number " + range_text(k.min, k.max);
            break;
        case int_rule::zero_or_range:
            ok = in_range || v == 0;
            requirement = "0 (off) or " + range_text(k.min, k.max);
            break;
    }
    if (!ok) ctx.fail_line(line, fmt::format("{} must be {}, got {}", path, requirement, v));
}

void check_int_range(const context& ctx, std::string_view path, std::int64_t v, std::int64_t min, std::int64_t max,
                     std::uint32_t line) {
    if (v < min || v > max) ctx.fail_line(line, fmt::format("{} must be {}, got {}", path, range_text(min, max), v));
}

// "512MiB", "2 GiB", "100MB", "9000" -> bytes; nullopt when not a size.
std::optional<std::int64_t> parse_size(std::string_view text) {
    auto trim = [](std::string_view s) {
        while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
        while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
        return s;
    };
    text = trim(text);
    std::size_t digits = 0;
    while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
    if (digits == 0) return std::nullopt;
    std::uint64_t number = 0;
    for (std::size_t i = 0; i < digits; ++i) {
        if (number > (std::numeric_limits<std::uint64_t>::max() - 9) / 10) return std::nullopt;
        number = number * 10 + static_cast<std::uint64_t>(text[i] - '0');
    }
    std::string unit;
    for (char ch : trim(text.substr(digits))) unit += static_cast<char>(ch >= 'A' && ch <= 'Z' ? ch - 'A' + 'a' : ch);
    static const std::map<std::string, std::uint64_t> units{
        {"", 1},
        {"b", 1},
        {"kb", 1000ull},
        {"mb", 1000ull * 1000},
        {"gb", 1000ull * 1000 * 1000},
        {"tb", 1000ull * 1000 * 1000 * 1000},
        {"kib", 1ull << 10},
        {"mib", 1ull << 20},
        {"gib", 1ull << 30},
        {"tib", 1ull << 40},
    };
    const auto it = units.find(unit);
    if (it == units.end()) return std::nullopt;
    if (number > static_cast<std::uint64_t>(int64_max) / it->second) return std::nullopt;
    return static_cast<std::int64_t>(number * it->second);
}

// ---------------------------------------------------------------- reading values

// Returns the integer at `n` (`path` names it), or a size string's value
// when the key accepts sizes.
std::int64_t read_int(const context& ctx, const toml::node& n, std::string_view path) {
    if (const auto* v = n.as_integer()) return v->get();
    const bool sizes = accepts_size_string(path);
    if (sizes) {
        if (const auto* s = n.as_string()) {
            if (auto bytes = parse_size(s->get())) return *bytes;
            ctx.fail_line(line_of(n), fmt::format("{}: '{}' is not a size (use an integer or e.g. \"512MiB\", "
                                                  "\"2GiB\", \"100MB\")",
                                                  path, s->get()));
        }
    }
    ctx.fail_line(line_of(n), fmt::format("{} must be {}, got {}", path,
                                          sizes ? "an integer or a size string" : "an integer", type_name(n.type())));
}

bool read_bool(const context& ctx, const toml::node& n, std::string_view path) {
    if (const auto* v = n.as_boolean()) return v->get();
    ctx.fail_line(line_of(n), fmt::format("{} must be true or false, got {}", path, type_name(n.type())));
}

const std::string& read_string(const context& ctx, const toml::node& n, std::string_view path) {
    if (const auto* v = n.as_string()) return v->get();
    ctx.fail_line(line_of(n), fmt::format("{} must be a string, got {}", path, type_name(n.type())));
}

double read_double(const context& ctx, const toml::node& n, std::string_view path) {
    if (const auto* v = n.as_floating_point()) return v->get();
    if (const auto* v = n.as_integer()) return static_cast<double>(v->get());
    ctx.fail_line(line_of(n), fmt::format("{} must be a number, got {}", path, type_name(n.type())));
}

const toml::table* section_table(const context& ctx, const toml::table& doc, std::string_view name) {
    const toml::node* n = doc.get(name);
    if (n == nullptr) return nullptr;
    if (const auto* t = n->as_table()) return t;
    ctx.fail_line(line_of(*n), fmt::format("{} must be a table ([{}]), got {}", name, name, type_name(n->type())));
}

const std::vector<std::string_view> log_levels{"trace", "debug", "info", "warn", "error"};

std::string quoted_list(const std::vector<std::string_view>& names) {
    std::string s;
    for (std::size_t i = 0; i < names.size(); ++i) {
        if (i > 0) s += i + 1 == names.size() ? " or " : ", ";
        s += fmt::format("'{}'", names[i]);
    }
    return s;
}

std::optional<receiver_backend> backend_from_name(std::string_view s) {
    for (auto b : {receiver_backend::automatic, receiver_backend::io_uring, receiver_backend::recvmmsg})
        if (name(b) == s) return b;
    return std::nullopt;
}

void read_listen(const context& ctx, const toml::node& n, config& c) {
    c.acquisition.listen.clear();
    auto add = [&](const toml::node& element, const std::string& path) {
        const auto* s = element.as_string();
        if (s == nullptr)
            ctx.fail_line(line_of(element),
                          fmt::format("{} must be a string \"HOST:PORT\", got {}", path, type_name(element.type())));
        c.acquisition.listen.push_back(endpoint::parse(s->get(), ctx.prefix(line_of(element)) + path));
    };
    if (n.is_string()) {  // a single endpoint
        add(n, "acquisition.listen");
        return;
    }
    const auto* array = n.as_array();
    if (array == nullptr)
        ctx.fail_line(line_of(n), fmt::format("acquisition.listen must be an array of \"HOST:PORT\" strings, got {}",
                                              type_name(n.type())));
    for (std::size_t i = 0; i < array->size(); ++i) add(*array->get(i), fmt::format("acquisition.listen[{}]", i));
}

void read_units_list(const context& ctx, const toml::node& n, config& c) {
    const auto* array = n.as_array();
    if (array == nullptr)
        ctx.fail_line(line_of(n), fmt::format("units.list must be an array of {{ id = N, channels = N }} tables, got {}",
                                              type_name(n.type())));
    c.units.units.clear();
    for (std::size_t i = 0; i < array->size(); ++i) {
        const toml::node& element = *array->get(i);
        const std::string path = fmt::format("units.list[{}]", i);
        const auto* table = element.as_table();
        if (table == nullptr)
            ctx.fail_line(line_of(element), fmt::format("{} must be a table {{ id = N, channels = N }}, got {}", path,
                                                        type_name(element.type())));
        check_unknown_keys(ctx, *table, path, unit_keys);
        unit_config unit;
        for (std::string_view key : unit_keys) {
            const toml::node* v = table->get(key);
            if (v == nullptr) ctx.fail_line(line_of(element), fmt::format("{} needs '{}'", path, key));
            const std::string key_path = join(path, key);
            const std::int64_t value = read_int(ctx, *v, key_path);
            if (key == "id") {
                check_int_range(ctx, key_path, value, 0, unit_id_max, line_of(*v));
                unit.id = static_cast<std::uint16_t>(value);
            } else {
                check_int_range(ctx, key_path, value, 1, channels_max, line_of(*v));
                unit.channels = static_cast<std::uint32_t>(value);
            }
        }
        c.units.units.push_back(unit);
    }
}

// ---------------------------------------------------------------- checks

bool valid_ring_name(std::string_view name) {
    if (name.empty() || name.size() > 200 || name.front() == '.') return false;
    for (std::size_t i = 0; i < name.size(); ++i) {
        if (name.substr(i, 5) == "{pid}") {
            i += 4;
            continue;
        }
        const char ch = name[i];
        const bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                        ch == '.' || ch == '_' || ch == '-';
        if (!ok) return false;
    }
    return true;
}

// An http.allowed_hosts entry: a DNS name, an IPv4 address, an IPv6 address
// (bracketed or not), or "*". Ports are not part of it (any port matches).
bool valid_allowed_host(std::string_view h) {
    if (h == "*") return true;
    if (h.empty() || h.size() > 255) return false;
    if (h.front() == '[') {
        if (h.back() != ']' || h.size() < 4) return false;
        const std::string inner(h.substr(1, h.size() - 2));
        in6_addr a{};
        return inet_pton(AF_INET6, inner.c_str(), &a) == 1;
    }
    if (h.find(':') != std::string_view::npos) {  // a bare IPv6 address
        const std::string text(h);
        in6_addr a{};
        return inet_pton(AF_INET6, text.c_str(), &a) == 1;
    }
    return std::all_of(h.begin(), h.end(), [](char ch) {
        return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' ||
               ch == '-' || ch == '_';
    });
}

// [http]: the endpoint, the token, and no open control API off the host.
void check_http(const config& c, const context& ctx) {
    const auto& h = c.http;
    std::optional<endpoint> ep;
    if (!h.listen.empty())
        ep = endpoint::parse(h.listen, ctx.prefix(ctx.line_of("http.listen")) + "http.listen");
    if (!h.token.empty()) {
        const bool printable = std::all_of(h.token.begin(), h.token.end(), [](char ch) { return ch > ' ' && ch < 0x7f; });
        if (h.token.size() < 16 || h.token.size() > 256 || !printable)
            ctx.fail("http.token", "http.token must be 16..256 printable characters without spaces (or \"\" to "
                                   "generate one at start)");
    }
    if (!h.token.empty() && !h.token_file.empty())
        ctx.fail({"http.token_file", "http.token"}, "set http.token or http.token_file, not both");
    if (ep && !is_loopback(ep->host) && h.token.empty() && h.token_file.empty())
        ctx.fail({"http.listen"},
                 fmt::format("http.listen = \"{}\" is not a loopback address: set http.token or http.token_file "
                             "(anyone who can reach the port could start and stop runs), or listen on 127.0.0.1",
                             h.listen));
    for (std::size_t i = 0; i < h.allowed_hosts.size(); ++i) {
        const std::string path = fmt::format("http.allowed_hosts[{}]", i);
        if (!valid_allowed_host(h.allowed_hosts[i]))
            ctx.fail({path, "http.allowed_hosts"},
                     fmt::format("{}: '{}' is not a host name: use letters, digits, '.', '-' and '_' (e.g. "
                                 "\"daq01.lab.example\"), an IPv4 or IPv6 address (\"[fe80::1]\"), "
                                 "or \"*\" for any; no port, no scheme",
                                 path, h.allowed_hosts[i]));
    }
}

// [processing]: known stages in the allowed order, backend, threshold.
const std::vector<std::string_view> processing_stage_order{"calibrate", "dose", "live"};
const std::vector<std::string_view> processing_backends{"auto", "cpu", "cuda"};
const std::vector<std::string_view> threshold_modes{"absolute", "noise"};

void check_processing(const config& c, const context& ctx) {
    const auto& p = c.processing;
    std::size_t next = 0;  // stages must follow processing_stage_order
    for (std::size_t i = 0; i < p.stages.size(); ++i) {
        const std::string& s = p.stages[i];
        const auto it = std::find(processing_stage_order.begin(), processing_stage_order.end(), s);
        if (it == processing_stage_order.end())
            ctx.fail("processing.stages", fmt::format("processing.stages[{}]: unknown stage '{}' (known: {})", i, s,
                                                      quoted_list(processing_stage_order)));
        const auto at = static_cast<std::size_t>(it - processing_stage_order.begin());
        if (at < next)
            ctx.fail("processing.stages",
                     fmt::format("processing.stages[{}]: '{}' is repeated or out of order (each stage at most once, "
                                 "in the order 'calibrate', 'dose', 'live')",
                                 i, s));
        next = at + 1;
    }
    if (p.has("dose") && !p.has("calibrate"))
        ctx.fail("processing.stages", "processing.stages: 'dose' needs 'calibrate' before it");
    if (std::find(processing_backends.begin(), processing_backends.end(), p.backend) == processing_backends.end())
        ctx.fail("processing.backend",
                 fmt::format("processing.backend must be {}, got '{}'", quoted_list(processing_backends), p.backend));
    if (std::find(threshold_modes.begin(), threshold_modes.end(), p.threshold_mode) == threshold_modes.end())
        ctx.fail("processing.threshold_mode", fmt::format("processing.threshold_mode must be {}, got '{}'",
                                                          quoted_list(threshold_modes), p.threshold_mode));
    if (!std::isfinite(p.threshold) || std::fabs(p.threshold) > 1e9)
        ctx.fail("processing.threshold", fmt::format("processing.threshold must be a finite number (|x| <= 1e9), "
                                                     "got {}",
                                                     p.threshold));
    if (p.threshold_mode == "noise" && p.threshold < 0)
        ctx.fail({"processing.threshold", "processing.threshold_mode"},
                 fmt::format("processing.threshold must be >= 0 with threshold_mode = \"noise\" (k in k x noise), "
                             "got {}",
                             p.threshold));
}

// Every range and every rule across keys. With a document, errors name lines.
void check(const config& c, const context& ctx) {
    for (const int_key& k : int_keys) check_int(ctx, k, k.path, k.get(c), ctx.line_of(k.path));

    const auto& a = c.acquisition;
    if (a.listen.empty())
        ctx.fail("acquisition.listen", "acquisition.listen is empty: list at least one \"HOST:PORT\" to receive on");
    std::map<std::string, std::size_t> seen_endpoints;
    for (std::size_t i = 0; i < a.listen.size(); ++i) {
        const std::string path = fmt::format("acquisition.listen[{}]", i);
        const endpoint e = endpoint::parse(a.listen[i].to_string(), ctx.prefix(ctx.line_of(path)) + path);
        const auto [it, fresh] = seen_endpoints.emplace(e.to_string(), i);
        if (!fresh)
            ctx.fail(path, fmt::format("{}: '{}' is listed twice (also acquisition.listen[{}])", path, e.to_string(),
                                       it->second));
    }
    if (!valid_ring_name(a.ring_name))
        ctx.fail("acquisition.ring_name",
                 fmt::format("acquisition.ring_name must be 1..200 characters of A-Z a-z 0-9 . _ - and '{{pid}}', "
                             "not starting with '.', got '{}'",
                             a.ring_name));
    if (a.expected_datagram_bytes > a.max_datagram_bytes)
        ctx.fail({"acquisition.expected_datagram_bytes", "acquisition.max_datagram_bytes"},
                 fmt::format("acquisition.expected_datagram_bytes ({}) must not exceed acquisition.max_datagram_bytes "
                             "({})",
                             a.expected_datagram_bytes, a.max_datagram_bytes));
    if (a.gro && a.max_datagram_bytes != 65535)
        ctx.fail({"acquisition.gro", "acquisition.max_datagram_bytes"},
                 fmt::format("acquisition.gro = true needs acquisition.max_datagram_bytes = 65535 (coalesced "
                             "datagrams are up to 64 KiB), got {}",
                             a.max_datagram_bytes));
    if (a.batch > a.ring_slots)
        ctx.fail({"acquisition.batch", "acquisition.ring_slots"},
                 fmt::format("acquisition.batch ({}) must not exceed acquisition.ring_slots ({})", a.batch,
                             a.ring_slots));
    constexpr std::uint64_t max_socket_buffer = 1ull << 30;
    const std::uint64_t socket_bytes =
        static_cast<std::uint64_t>(a.socket_buffer_datagrams) * a.expected_datagram_bytes;
    if (socket_bytes > max_socket_buffer)
        ctx.fail({"acquisition.socket_buffer_datagrams", "acquisition.expected_datagram_bytes"},
                 fmt::format("acquisition.socket_buffer_datagrams ({}) x acquisition.expected_datagram_bytes ({}) = {} "
                             "bytes exceeds the 1 GiB socket buffer limit",
                             a.socket_buffer_datagrams, a.expected_datagram_bytes, socket_bytes));

    const auto& u = c.units;
    std::map<std::uint16_t, std::size_t> seen_units;
    for (std::size_t i = 0; i < u.units.size(); ++i) {
        const std::string path = fmt::format("units.list[{}]", i);
        const unit_config& unit = u.units[i];
        check_int_range(ctx, path + ".channels", unit.channels, 1, channels_max, ctx.line_of(path + ".channels"));
        const auto [it, fresh] = seen_units.emplace(unit.id, i);
        if (!fresh)
            ctx.fail({path + ".id", path},
                     fmt::format("{}.id: unit {} is listed twice (also units.list[{}])", path, unit.id, it->second));
        if (unit.frame_bytes() > c.assembly.max_frame_bytes)
            ctx.fail({path + ".channels", path, "assembly.max_frame_bytes"},
                     fmt::format("{}.channels = {} makes frames of {} bytes, more than assembly.max_frame_bytes ({}); "
                                 "raise assembly.max_frame_bytes to at least {}",
                                 path, unit.channels, unit.frame_bytes(), c.assembly.max_frame_bytes,
                                 unit.frame_bytes()));
    }
    if (!u.learn && u.units.empty())
        ctx.fail({"units.learn", "units.list", "units"},
                 "units.learn = false and units.list is empty: no units would be accepted");

    const std::uint64_t units_open = std::max<std::size_t>(1, u.units.size());
    if (c.assembly.pool_frames < c.assembly.reorder_frames * units_open)
        ctx.fail({"assembly.pool_frames", "assembly.reorder_frames"},
                 fmt::format("assembly.pool_frames ({}) must be at least assembly.reorder_frames ({}) x listed units "
                             "({})",
                             c.assembly.pool_frames, c.assembly.reorder_frames, units_open));

    // The pool reserves its address space at start (three times that with
    // "calibrate": the float32 rows); more than this fails there, so say it here.
    constexpr std::uint64_t max_pool_address_space = 256ull << 30;
    const std::uint64_t pool_bytes = std::uint64_t{c.assembly.pool_frames} * c.assembly.max_frame_bytes *
                                     (c.processing.has("calibrate") ? 3u : 1u);
    if (pool_bytes > max_pool_address_space)
        ctx.fail({"assembly.pool_frames", "assembly.max_frame_bytes"},
                 fmt::format("assembly.pool_frames ({}) x assembly.max_frame_bytes ({}){} = {} bytes of frame pool "
                             "exceeds the 256 GiB limit; lower one of them",
                             c.assembly.pool_frames, c.assembly.max_frame_bytes,
                             c.processing.has("calibrate") ? " x 3 (calibrated rows)" : "", pool_bytes));

    if (c.storage.output_dir.empty()) ctx.fail("storage.output_dir", "storage.output_dir must not be empty");

    check_processing(c, ctx);

    if (std::find(log_levels.begin(), log_levels.end(), c.log.level) == log_levels.end())
        ctx.fail("log.level", fmt::format("log.level must be {}, got '{}'", quoted_list(log_levels), c.log.level));

    check_http(c, ctx);
}

// ---------------------------------------------------------------- loading

config from_table(const toml::table& doc, std::string_view source) {
    const context ctx{source, &doc};
    config c;

    std::vector<std::string_view> sections;
    for (const auto& s : schema()) sections.push_back(s.name);
    for (auto&& [key, value] : doc) {
        if (std::find(sections.begin(), sections.end(), key.str()) != sections.end()) continue;
        std::string hint;
        std::size_t best = std::max<std::size_t>(1, key.str().size() / 3) + 1;
        for (std::string_view candidate : sections) {
            const std::size_t d = edit_distance(key.str(), candidate);
            if (d < best) {
                best = d;
                hint = fmt::format(" (did you mean [{}]?)", candidate);
            }
        }
        if (hint.empty()) {
            for (const auto& s : schema())
                if (std::find(s.keys.begin(), s.keys.end(), key.str()) != s.keys.end()) {
                    hint = fmt::format(" (did you mean '{}.{}'? it belongs in [{}])", s.name, key.str(), s.name);
                    break;
                }
        }
        std::uint32_t line = key.source().begin.line;
        if (line == 0) line = line_of(value);
        ctx.fail_line(line, fmt::format("unknown {} '{}'{}", value.is_table() ? "section" : "key", key.str(), hint));
    }

    std::map<std::string_view, const toml::table*> tables;
    for (const auto& s : schema()) {
        const toml::table* t = section_table(ctx, doc, s.name);
        if (t != nullptr) check_unknown_keys(ctx, *t, s.name, s.keys);
        tables[s.name] = t;
    }
    auto value_of = [&](std::string_view section, std::string_view key) -> const toml::node* {
        const toml::table* t = tables[section];
        return t == nullptr ? nullptr : t->get(key);
    };

    for (const int_key& k : int_keys) {
        const std::size_t dot = k.path.find('.');
        const toml::node* n = value_of(k.path.substr(0, dot), k.path.substr(dot + 1));
        if (n == nullptr) continue;
        const std::int64_t v = read_int(ctx, *n, k.path);
        check_int(ctx, k, k.path, v, line_of(*n));
        k.set(c, v);
    }

    if (const auto* n = value_of("acquisition", "listen")) read_listen(ctx, *n, c);
    if (const auto* n = value_of("acquisition", "backend")) {
        const std::string& s = read_string(ctx, *n, "acquisition.backend");
        const auto b = backend_from_name(s);
        if (!b)
            ctx.fail_line(line_of(*n),
                          fmt::format("acquisition.backend must be 'auto', 'io_uring' or 'recvmmsg', got '{}'", s));
        c.acquisition.backend = *b;
    }
    if (const auto* n = value_of("acquisition", "gro")) c.acquisition.gro = read_bool(ctx, *n, "acquisition.gro");
    if (const auto* n = value_of("acquisition", "ring_name"))
        c.acquisition.ring_name = read_string(ctx, *n, "acquisition.ring_name");
    if (const auto* n = value_of("units", "learn")) c.units.learn = read_bool(ctx, *n, "units.learn");
    if (const auto* n = value_of("units", "list")) read_units_list(ctx, *n, c);
    if (const auto* n = value_of("storage", "output_dir"))
        c.storage.output_dir = read_string(ctx, *n, "storage.output_dir");
    if (const auto* n = value_of("processing", "stages")) {
        const auto* array = n->as_array();
        if (array == nullptr)
            ctx.fail_line(line_of(*n), fmt::format("processing.stages must be an array of stage names, got {}",
                                                   type_name(n->type())));
        c.processing.stages.clear();
        for (std::size_t i = 0; i < array->size(); ++i)
            c.processing.stages.push_back(
                read_string(ctx, *array->get(i), fmt::format("processing.stages[{}]", i)));
    }
    if (const auto* n = value_of("processing", "backend"))
        c.processing.backend = read_string(ctx, *n, "processing.backend");
    if (const auto* n = value_of("processing", "calibration_file"))
        c.processing.calibration_file = read_string(ctx, *n, "processing.calibration_file");
    if (const auto* n = value_of("processing", "threshold"))
        c.processing.threshold = read_double(ctx, *n, "processing.threshold");
    if (const auto* n = value_of("processing", "threshold_mode"))
        c.processing.threshold_mode = read_string(ctx, *n, "processing.threshold_mode");
    if (const auto* n = value_of("log", "level")) c.log.level = read_string(ctx, *n, "log.level");
    if (const auto* n = value_of("http", "listen")) c.http.listen = read_string(ctx, *n, "http.listen");
    if (const auto* n = value_of("http", "token")) c.http.token = read_string(ctx, *n, "http.token");
    if (const auto* n = value_of("http", "token_file")) c.http.token_file = read_string(ctx, *n, "http.token_file");
    if (const auto* n = value_of("http", "allowed_hosts")) {
        const auto* array = n->as_array();
        if (array == nullptr)
            ctx.fail_line(line_of(*n), fmt::format("http.allowed_hosts must be an array of host names, got {}",
                                                   type_name(n->type())));
        c.http.allowed_hosts.clear();
        for (std::size_t i = 0; i < array->size(); ++i)
            c.http.allowed_hosts.push_back(
                read_string(ctx, *array->get(i), fmt::format("http.allowed_hosts[{}]", i)));
    }

    check(c, ctx);
    c.source = std::string(source);
    c.text = to_toml(c, true);
    return c;
}

// ---------------------------------------------------------------- rendering

std::string toml_string(std::string_view s) {
    std::string out = "\"";
    for (const char ch : s) {
        const auto uc = static_cast<unsigned char>(ch);
        switch (ch) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\t': out += "\\t"; break;
            case '\r': out += "\\r"; break;
            default:
                if (uc < 0x20 || uc == 0x7f)
                    out += fmt::format("\\u{:04X}", uc);
                else
                    out += ch;
        }
    }
    out += '"';
    return out;
}

}  // namespace

// ---------------------------------------------------------------- endpoint

std::string endpoint::to_string() const {
    if (host.find(':') != std::string::npos) return fmt::format("[{}]:{}", host, port);
    return fmt::format("{}:{}", host, port);
}

namespace {
[[noreturn]] void endpoint_error(const std::string& what, const std::string& text, std::string_view reason) {
    throw config_error(fmt::format("{}: '{}' is not HOST:PORT ({})", what, text, reason));
}
}  // namespace

endpoint endpoint::parse(const std::string& text, const std::string& what) {
    auto fail = [&](std::string_view reason) { endpoint_error(what, text, reason); };
    std::string host;
    std::string port_text;
    bool v6 = false;
    if (!text.empty() && text.front() == '[') {
        const std::size_t close = text.find(']');
        if (close == std::string::npos) fail("missing ']' after the IPv6 address");
        host = text.substr(1, close - 1);
        if (close + 1 >= text.size() || text[close + 1] != ':') fail("missing ':PORT' after ']'");
        port_text = text.substr(close + 2);
        v6 = true;
    } else {
        const std::size_t colon = text.rfind(':');
        if (colon == std::string::npos) fail("missing ':PORT'");
        host = text.substr(0, colon);
        port_text = text.substr(colon + 1);
        if (host.find(':') != std::string::npos) fail("write IPv6 addresses in brackets, e.g. [::1]:4660");
    }
    if (host.empty()) fail(v6 ? "empty address; use [::] for every IPv6 interface"
                              : "empty host; use 0.0.0.0 for every IPv4 interface");

    unsigned char buffer[sizeof(in6_addr)];
    char canonical[INET6_ADDRSTRLEN];
    const int family = v6 ? AF_INET6 : AF_INET;
    if (inet_pton(family, host.c_str(), buffer) != 1) {
        if (v6)
            fail(fmt::format("'{}' is not a numeric IPv6 address", host));
        else
            fail(fmt::format("'{}' is not a numeric IPv4 address; host names are not resolved, use e.g. 127.0.0.1",
                             host));
    }
    if (inet_ntop(family, buffer, canonical, sizeof canonical) == nullptr) fail("cannot format the address");

    const bool digits_only = !port_text.empty() && port_text.size() <= 5 &&
                             std::all_of(port_text.begin(), port_text.end(), [](char ch) { return ch >= '0' && ch <= '9'; });
    const long port = digits_only ? std::stol(port_text) : 0;
    if (port < 1 || port > 65535) fail(fmt::format("port '{}' is not a number between 1 and 65535", port_text));
    return endpoint{canonical, static_cast<std::uint16_t>(port)};
}

bool is_loopback(const std::string& host) {
    if (host == "::1") return true;
    in_addr a{};
    if (inet_pton(AF_INET, host.c_str(), &a) != 1) return false;
    return (ntohl(a.s_addr) >> 24) == 127;
}

std::string_view name(receiver_backend b) {
    switch (b) {
        case receiver_backend::automatic: return "auto";
        case receiver_backend::io_uring: return "io_uring";
        case receiver_backend::recvmmsg: return "recvmmsg";
    }
    return "unknown";
}

// ---------------------------------------------------------------- config

void config::validate() const { check(*this, context{source, nullptr}); }

std::string_view default_toml() { return embedded_default; }

config load_string(std::string_view toml_text, const std::string& source_name) {
    toml::table doc;
    try {
        doc = toml::parse(toml_text, std::string_view(source_name));
    } catch (const toml::parse_error& e) {
        const auto& begin = e.source().begin;
        throw config_error(
            fmt::format("{}:{}:{}: TOML syntax error: {}", source_name, begin.line, begin.column, e.description()));
    }
    return from_table(doc, source_name);
}

config load_default() { return load_string(embedded_default, std::string(embedded_source)); }

config load_file(const std::filesystem::path& path) {
    const std::string name = path.string();
    std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(name.c_str(), "rb"), &std::fclose);
    if (!file) throw config_error(fmt::format("cannot open config file '{}': {}", name, std::strerror(errno)));
    std::string text;
    char buffer[65536];
    for (;;) {
        const std::size_t n = std::fread(buffer, 1, sizeof buffer, file.get());
        text.append(buffer, n);
        if (n < sizeof buffer) break;
    }
    if (std::ferror(file.get()))
        throw config_error(fmt::format("cannot read config file '{}': {}", name, std::strerror(errno)));
    return load_string(text, name);
}

std::string to_toml(const config& c, bool hide_secrets) {
    std::string out;
    auto line = [&](std::string_view key, const std::string& value) { out += fmt::format("{} = {}\n", key, value); };
    auto boolean = [](bool b) { return std::string(b ? "true" : "false"); };
    auto number = [](auto v) { return fmt::format("{}", v); };

    const auto& a = c.acquisition;
    out += "[acquisition]\n";
    std::string listen = "[";
    for (std::size_t i = 0; i < a.listen.size(); ++i) {
        if (i > 0) listen += ", ";
        listen += toml_string(a.listen[i].to_string());
    }
    listen += "]";
    line("listen", listen);
    line("backend", toml_string(name(a.backend)));
    line("gro", boolean(a.gro));
    line("batch", number(a.batch));
    line("max_datagram_bytes", number(a.max_datagram_bytes));
    line("socket_buffer_datagrams", number(a.socket_buffer_datagrams));
    line("expected_datagram_bytes", number(a.expected_datagram_bytes));
    line("ring_slots", number(a.ring_slots));
    line("ring_name", toml_string(a.ring_name));

    out += "\n[units]\n";
    line("learn", boolean(c.units.learn));
    if (c.units.units.empty()) {
        line("list", "[]");
    } else {
        std::string list = "[\n";
        for (const auto& u : c.units.units) list += fmt::format("  {{ id = {}, channels = {} }},\n", u.id, u.channels);
        list += "]";
        line("list", list);
    }
    line("max_learned", number(c.units.max_learned));
    line("learned_idle_s", number(c.units.learned_idle_s));
    line("relearn_quiet_ms", number(c.units.relearn_quiet.count()));

    out += "\n[assembly]\n";
    line("reorder_frames", number(c.assembly.reorder_frames));
    line("reorder_timeout_ms", number(c.assembly.reorder_timeout.count()));
    line("max_frame_bytes", number(c.assembly.max_frame_bytes));
    line("pool_frames", number(c.assembly.pool_frames));
    line("max_frame_jump", number(c.assembly.max_frame_jump));
    line("restart_packets", number(c.assembly.restart_packets));

    out += "\n[storage]\n";
    line("output_dir", toml_string(c.storage.output_dir.string()));
    line("flush_interval_ms", number(c.storage.flush_interval.count()));
    line("rotate_bytes", number(c.storage.rotate_bytes));
    line("chunk_bytes", number(c.storage.chunk_bytes));
    line("queue_frames", number(c.storage.queue_frames));
    line("reserve_bytes", number(c.storage.reserve_bytes));

    out += "\n[processing]\n";
    std::string stages = "[";
    for (std::size_t i = 0; i < c.processing.stages.size(); ++i)
        stages += (i > 0 ? ", " : "") + toml_string(c.processing.stages[i]);
    stages += "]";
    line("stages", stages);
    line("backend", toml_string(c.processing.backend));
    line("calibration_file", toml_string(c.processing.calibration_file.string()));
    // Shortest text that reads back as the same double, always with a '.' or
    // an exponent so that TOML reads a float.
    std::string threshold = fmt::format("{}", c.processing.threshold);
    if (threshold.find_first_of(".eEn") == std::string::npos) threshold += ".0";
    line("threshold", threshold);
    line("threshold_mode", toml_string(c.processing.threshold_mode));
    line("batch_frames", number(c.processing.batch_frames));
    line("live_interval_ms", number(c.processing.live_interval.count()));

    out += "\n[log]\n";
    line("level", toml_string(c.log.level));

    out += "\n[http]\n";
    line("listen", toml_string(c.http.listen));
    line("token", toml_string(hide_secrets ? std::string() : c.http.token) +
                      (hide_secrets && !c.http.token.empty() ? "  # set, not shown" : ""));
    line("token_file", toml_string(c.http.token_file));
    std::string hosts = "[";
    for (std::size_t i = 0; i < c.http.allowed_hosts.size(); ++i)
        hosts += (i > 0 ? ", " : "") + toml_string(c.http.allowed_hosts[i]);
    hosts += "]";
    line("allowed_hosts", hosts);
    return out;
}

}  // namespace daqd::config
