// daqd configuration: the key table, and the parsing, checking and rendering
// that walk it (docs/CONFIG.md).
#include "daqd/config/config.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <unistd.h>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <toml++/toml.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <type_traits>
#include <utility>

namespace daqd::config {

namespace {

constexpr std::string_view embedded_source = "<embedded default>";

constexpr std::string_view file_header = R"(# daqd configuration (TOML). Every key is optional; a key left out keeps its
# default. Reference: docs/CONFIG.md.
# Keys ending in _bytes take an integer or a size string: "9000", "512MiB",
# "2GiB", "100MB" (KiB/MiB/GiB/TiB = 1024^n, KB/MB/GB/TB = 1000^n).
)";

constexpr std::array<std::pair<std::string_view, receiver_backend>, 3> receiver_backends{{
    {"auto", receiver_backend::automatic},
    {"io_uring", receiver_backend::io_uring},
    {"recvmmsg", receiver_backend::recvmmsg},
}};
const std::vector<std::string_view> processing_stage_order{"calibrate", "dose", "live"};
const std::vector<std::string_view> processing_backends{"auto", "cpu", "cuda"};
const std::vector<std::string_view> threshold_modes{"absolute", "noise"};
const std::vector<std::string_view> writeback_modes{"paced", "kernel"};
const std::vector<std::string_view> compression_kinds{"none", "bslz4"};
const std::vector<std::string_view> log_levels{"trace", "debug", "info", "warn", "error"};
const std::vector<std::string_view> combine_modes{"auto", "on", "off"};
constexpr unsigned cpu_number_max = 65535;

constexpr std::int64_t int64_max = std::numeric_limits<std::int64_t>::max();
constexpr std::int64_t unit_id_max = 65535;
constexpr std::int64_t channels_max = 8388608;  // frame_bytes = 2 * channels <= 16 MiB

// ---------------------------------------------------------------- diagnostics

// Collects every mistake, each with the line it is on when a document is at
// hand; load_*, validate() and set_key() throw them together.
class diagnostics {
public:
    diagnostics(std::string_view source, const toml::table* doc) : _source(source), _doc(doc) {}

    [[nodiscard]] std::uint32_t line_of(std::string_view path) const {
        if (_doc == nullptr) return 0;
        const toml::node* n = toml::at_path(*_doc, path).node();
        return n == nullptr ? 0 : n->source().begin.line;
    }
    void error(std::uint32_t line, std::string_view message) {
        const std::string where = line > 0 ? fmt::format("{}:{}: ", _source, line) : fmt::format("{}: ", _source);
        _errors.push_back({line, where + std::string(message)});
    }
    // At the line of the first of `paths` present in the document.
    void error(std::initializer_list<std::string_view> paths, std::string_view message) {
        std::uint32_t line = 0;
        for (std::string_view p : paths)
            if ((line = line_of(p)) > 0) break;
        error(line, message);
    }
    [[nodiscard]] std::size_t count() const noexcept { return _errors.size(); }

    // In the order of the file; mistakes without a line last.
    void throw_if_any() {
        if (_errors.empty()) return;
        std::stable_sort(_errors.begin(), _errors.end(), [](const auto& a, const auto& b) {
            return (a.first == 0 ? UINT32_MAX : a.first) < (b.first == 0 ? UINT32_MAX : b.first);
        });
        std::string all;
        for (const auto& [line, message] : _errors) all += (all.empty() ? "" : "\n") + message;
        throw config_error(all);
    }

private:
    std::string_view _source;
    const toml::table* _doc;
    std::vector<std::pair<std::uint32_t, std::string>> _errors;
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

std::string join(std::string_view section, std::string_view key) {
    return section.empty() ? std::string(key) : fmt::format("{}.{}", section, key);
}

std::string quoted_list(const std::vector<std::string_view>& names) {
    std::string s;
    for (std::size_t i = 0; i < names.size(); ++i) {
        if (i > 0) s += i + 1 == names.size() ? " or " : ", ";
        s += fmt::format("'{}'", names[i]);
    }
    return s;
}

// `"a"`, `"b"`, `"c"`: a choice as docs/CONFIG.md writes it.
std::string choice_words(const std::vector<std::string_view>& names) {
    std::string s;
    for (std::string_view n : names) s += fmt::format("{}`\"{}\"`", s.empty() ? "" : ", ", n);
    return s;
}

std::string range_text(std::int64_t min, std::int64_t max) {
    if (max == int64_max) return fmt::format("at least {}", min);
    return fmt::format("between {} and {}", min, max);
}

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

std::string toml_strings(const std::vector<std::string>& values) {
    std::string out = "[";
    for (std::size_t i = 0; i < values.size(); ++i) out += (i > 0 ? ", " : "") + toml_string(values[i]);
    return out + "]";
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

// ---------------------------------------------------------------- reading TOML values

// Each returns nullopt after reporting a value of the wrong type.

// Keys ending in _bytes also take a size string.
std::optional<std::int64_t> read_int(diagnostics& d, const toml::node& n, std::string_view path) {
    if (const auto* v = n.as_integer()) return v->get();
    const bool sizes = path.ends_with("_bytes");
    if (const auto* s = n.as_string(); sizes && s != nullptr) {
        if (auto bytes = parse_size(s->get())) return *bytes;
        d.error(line_of(n), fmt::format("{}: '{}' is not a size (use an integer or e.g. \"512MiB\", \"2GiB\", "
                                        "\"100MB\")",
                                        path, s->get()));
        return std::nullopt;
    }
    d.error(line_of(n), fmt::format("{} must be {}, got {}", path, sizes ? "an integer or a size string" : "an integer",
                                    type_name(n.type())));
    return std::nullopt;
}

std::optional<bool> read_bool(diagnostics& d, const toml::node& n, std::string_view path) {
    if (const auto* v = n.as_boolean()) return v->get();
    d.error(line_of(n), fmt::format("{} must be true or false, got {}", path, type_name(n.type())));
    return std::nullopt;
}

std::optional<std::string> read_string(diagnostics& d, const toml::node& n, std::string_view path) {
    if (const auto* v = n.as_string()) return v->get();
    d.error(line_of(n), fmt::format("{} must be a string, got {}", path, type_name(n.type())));
    return std::nullopt;
}

std::optional<double> read_double(diagnostics& d, const toml::node& n, std::string_view path) {
    if (const auto* v = n.as_floating_point()) return v->get();
    if (const auto* v = n.as_integer()) return static_cast<double>(v->get());
    d.error(line_of(n), fmt::format("{} must be a number, got {}", path, type_name(n.type())));
    return std::nullopt;
}

// An array of strings; `what` says what the strings are ("stage names").
std::optional<std::vector<std::string>> read_strings(diagnostics& d, const toml::node& n, std::string_view path,
                                                     std::string_view what) {
    const auto* array = n.as_array();
    if (array == nullptr) {
        d.error(line_of(n), fmt::format("{} must be an array of {}, got {}", path, what, type_name(n.type())));
        return std::nullopt;
    }
    std::vector<std::string> values;
    bool ok = true;
    for (std::size_t i = 0; i < array->size(); ++i) {
        auto s = read_string(d, *array->get(i), fmt::format("{}[{}]", path, i));
        ok = ok && s.has_value();
        if (s) values.push_back(std::move(*s));
    }
    if (!ok) return std::nullopt;
    return values;
}

// ---------------------------------------------------------------- the key table: kinds of keys

// One key: its name, its comment, its own rule, and how to read, check and
// render it. The factories below make one per kind of value; the table
// (keys_table()) holds one row per key, in file order.
struct key {
    std::string_view name;  // "section.key"
    std::string_view doc;   // comment lines above it, '\n' between them
    std::string rule;       // its own rule in words (docs/CONFIG.md's range column begins with it)
    bool rule_in_comment = true;  // false where the value shows it (true/false)
    bool secret = false;    // rendered as "" when secrets are hidden
    // Stores the key's value from the file, or reports why it cannot; values
    // out of range are reported here (before narrowing to the member's type).
    std::function<void(const toml::node&, config&, diagnostics&)> read;
    // The key's own rule on a value already stored (also for configs built in code).
    std::function<void(const config&, diagnostics&)> check;
    std::function<std::string(const config&)> render;
};

using check_fn = void (*)(const config&, diagnostics&);

#define DAQD_FIELD(member) [](auto& c) -> auto& { return c.member; }

enum class int_rule { range, power_of_two, even, zero_or_range };

struct int_limits {
    std::int64_t min;
    std::int64_t max;
    int_rule rule = int_rule::range;

    [[nodiscard]] bool allows(std::int64_t v) const {
        const bool in_range = v >= min && v <= max;
        switch (rule) {
            case int_rule::range: return in_range;
            case int_rule::power_of_two: return in_range && (v & (v - 1)) == 0;
            case int_rule::even: return in_range && v % 2 == 0;
            case int_rule::zero_or_range: return in_range || v == 0;
        }
        return false;
    }
    // For error messages: "a power of two between 64 and 16777216".
    [[nodiscard]] std::string requirement() const {
        switch (rule) {
            case int_rule::range: return range_text(min, max);
            case int_rule::power_of_two: return "a power of two " + range_text(min, max);
            case int_rule::even: return "an even number " + range_text(min, max);
            case int_rule::zero_or_range: return "0 (off) or " + range_text(min, max);
        }
        return {};
    }
    // For docs/CONFIG.md and comments: "power of two, 64..16777216".
    [[nodiscard]] std::string words() const {
        const std::string span = max == int64_max ? fmt::format("{}..", min) : fmt::format("{}..{}", min, max);
        switch (rule) {
            case int_rule::range: return span;
            case int_rule::power_of_two: return "power of two, " + span;
            case int_rule::even: return "even, " + span;
            case int_rule::zero_or_range:
                return max == int64_max ? fmt::format("0, or at least {}", min) : "0, or " + span;
        }
        return {};
    }
};

void check_int(diagnostics& d, std::uint32_t line, std::string_view path, const int_limits& limits, std::int64_t v) {
    if (!limits.allows(v)) d.error(line, fmt::format("{} must be {}, got {}", path, limits.requirement(), v));
}

template <class T>
std::int64_t to_int(const T& v) {
    if constexpr (std::is_integral_v<T>)
        return static_cast<std::int64_t>(v);
    else
        return static_cast<std::int64_t>(v.count());  // a std::chrono::duration
}

// An integer (or duration, in the unit the key's name ends with).
template <class F>
key integer(std::string_view name, F field, int_limits limits, std::string_view doc) {
    key k{name, doc, limits.words()};
    k.read = [name, field, limits](const toml::node& n, config& c, diagnostics& d) {
        const auto v = read_int(d, n, name);
        if (!v) return;
        const std::size_t before = d.count();
        check_int(d, line_of(n), name, limits, *v);
        if (d.count() == before) field(c) = std::remove_reference_t<decltype(field(c))>(*v);
    };
    k.check = [name, field, limits](const config& c, diagnostics& d) {
        check_int(d, d.line_of(name), name, limits, to_int(field(c)));
    };
    k.render = [field](const config& c) {
        const auto& v = field(c);
        if constexpr (std::is_integral_v<std::remove_cvref_t<decltype(v)>>)
            return fmt::format("{}", v);
        else
            return fmt::format("{}", v.count());
    };
    return k;
}

template <class F>
key boolean(std::string_view name, F field, std::string_view doc) {
    key k{name, doc, "`true`/`false`", false};
    k.read = [name, field](const toml::node& n, config& c, diagnostics& d) {
        if (auto v = read_bool(d, n, name)) field(c) = *v;
    };
    k.check = [](const config&, diagnostics&) {};
    k.render = [field](const config& c) { return std::string(field(c) ? "true" : "false"); };
    return k;
}

inline std::string text_of(const std::string& s) { return s; }
inline std::string text_of(const std::filesystem::path& p) { return p.string(); }

// A string (or path); `check` is its rule, `rule` that rule in words.
template <class F>
key text(std::string_view name, F field, std::string rule, check_fn check, std::string_view doc) {
    key k{name, doc, std::move(rule)};
    k.read = [name, field](const toml::node& n, config& c, diagnostics& d) {
        if (auto v = read_string(d, n, name)) field(c) = *v;
    };
    k.check = [check](const config& c, diagnostics& d) {
        if (check != nullptr) check(c, d);
    };
    k.render = [field](const config& c) { return toml_string(text_of(field(c))); };
    return k;
}

std::string choice_error(std::string_view name, const std::vector<std::string_view>& names, std::string_view got) {
    return fmt::format("{} must be {}, got '{}'", name, quoted_list(names), got);
}

// A string that is one of `names`.
template <class F>
key one_of(std::string_view name, F field, const std::vector<std::string_view>& names, std::string_view doc) {
    key k{name, doc, choice_words(names)};
    k.read = [name, field](const toml::node& n, config& c, diagnostics& d) {
        if (auto v = read_string(d, n, name)) field(c) = *v;
    };
    k.check = [name, field, &names](const config& c, diagnostics& d) {
        if (std::find(names.begin(), names.end(), field(c)) == names.end())
            d.error({name}, choice_error(name, names, field(c)));
    };
    k.render = [field](const config& c) { return toml_string(field(c)); };
    return k;
}

// An enum, written as one of its names.
template <class F, class E, std::size_t N>
key one_of(std::string_view name, F field, const std::array<std::pair<std::string_view, E>, N>& values,
           std::string_view doc) {
    std::vector<std::string_view> names;
    for (const auto& [n, v] : values) names.push_back(n);
    key k{name, doc, choice_words(names)};
    k.read = [name, field, names, &values](const toml::node& n, config& c, diagnostics& d) {
        const auto s = read_string(d, n, name);
        if (!s) return;
        for (const auto& [text, value] : values)
            if (text == *s) {
                field(c) = value;
                return;
            }
        d.error(line_of(n), choice_error(name, names, *s));
    };
    k.check = [](const config&, diagnostics&) {};
    k.render = [field, &values](const config& c) {
        for (const auto& [text, value] : values)
            if (value == field(c)) return toml_string(text);
        return toml_string("");
    };
    return k;
}

template <class F>
key text_list(std::string_view name, F field, std::string_view what, std::string rule, check_fn check,
              std::string_view doc) {
    key k{name, doc, std::move(rule)};
    k.read = [name, field, what](const toml::node& n, config& c, diagnostics& d) {
        if (auto v = read_strings(d, n, name, what)) field(c) = std::move(*v);
    };
    k.check = [check](const config& c, diagnostics& d) { check(c, d); };
    k.render = [field](const config& c) { return toml_strings(field(c)); };
    return k;
}

template <class F>
key number(std::string_view name, F field, std::string rule, check_fn check, std::string_view doc) {
    key k{name, doc, std::move(rule)};
    k.read = [name, field](const toml::node& n, config& c, diagnostics& d) {
        if (auto v = read_double(d, n, name)) field(c) = *v;
    };
    k.check = [check](const config& c, diagnostics& d) { check(c, d); };
    // Shortest text that reads back as the same double, always with a '.' or
    // an exponent so that TOML reads a float.
    k.render = [field](const config& c) {
        std::string s = fmt::format("{}", field(c));
        if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
        return s;
    };
    return k;
}

// ---------------------------------------------------------------- keys with a reader of their own

// acquisition.listen: "HOST:PORT" strings (or one string).
void read_listen(const toml::node& n, config& c, diagnostics& d) {
    std::vector<endpoint> list;
    bool ok = true;
    auto add = [&](const toml::node& element, const std::string& path) {
        const auto* s = element.as_string();
        if (s == nullptr) {
            d.error(line_of(element),
                    fmt::format("{} must be a string \"HOST:PORT\", got {}", path, type_name(element.type())));
            ok = false;
            return;
        }
        try {
            list.push_back(endpoint::parse(s->get(), path));
        } catch (const config_error& e) {
            d.error(line_of(element), e.what());
            ok = false;
        }
    };
    if (n.is_string()) {  // a single endpoint
        add(n, "acquisition.listen");
    } else if (const auto* array = n.as_array()) {
        for (std::size_t i = 0; i < array->size(); ++i) add(*array->get(i), fmt::format("acquisition.listen[{}]", i));
    } else {
        d.error(line_of(n), fmt::format("acquisition.listen must be an array of \"HOST:PORT\" strings, got {}",
                                        type_name(n.type())));
        ok = false;
    }
    if (ok) c.acquisition.listen = std::move(list);
}

void check_listen(const config& c, diagnostics& d) {
    const auto& listen = c.acquisition.listen;
    if (listen.empty())
        d.error({"acquisition.listen"}, "acquisition.listen is empty: list at least one \"HOST:PORT\" to receive on");
    std::map<std::string, std::size_t> seen;
    for (std::size_t i = 0; i < listen.size(); ++i) {
        const std::string path = fmt::format("acquisition.listen[{}]", i);
        try {
            const endpoint e = endpoint::parse(listen[i].to_string(), path);
            const auto [it, fresh] = seen.emplace(e.to_string(), i);
            if (!fresh)
                d.error({path}, fmt::format("{}: '{}' is listed twice (also acquisition.listen[{}])", path,
                                            e.to_string(), it->second));
        } catch (const config_error& e) {
            d.error({path}, e.what());
        }
    }
}

std::string render_listen(const config& c) {
    std::vector<std::string> texts;
    for (const auto& e : c.acquisition.listen) texts.push_back(e.to_string());
    return toml_strings(texts);
}

const std::vector<std::string_view> unit_keys{"id", "channels", "shape"};
void check_unknown_keys(diagnostics& d, const toml::table& table, std::string_view section,
                        const std::vector<std::string_view>& known);

// units.list[i].shape: [extent, ...], 1 to 3 positive integers.
void read_unit_shape(const toml::node& n, const std::string& path, unit_config& unit, diagnostics& d) {
    const auto* array = n.as_array();
    if (array == nullptr || array->empty() || array->size() > 3) {
        d.error(line_of(n), fmt::format("{} must be an array of 1 to 3 extents, e.g. [64, 64]", path));
        return;
    }
    for (std::size_t i = 0; i < array->size(); ++i) {
        const auto v = read_int(d, *array->get(i), fmt::format("{}[{}]", path, i));
        if (!v) return;
        if (*v < 1 || *v > channels_max) {
            d.error(line_of(n), fmt::format("{}[{}] must be 1..{}, got {}", path, i, channels_max, *v));
            return;
        }
        unit.shape.push_back(static_cast<std::uint32_t>(*v));
    }
}

// units.list: { id = N, channels = N } tables (shape = [...] optional).
void read_units(const toml::node& n, config& c, diagnostics& d) {
    const auto* array = n.as_array();
    if (array == nullptr) {
        d.error(line_of(n), fmt::format("units.list must be an array of {{ id = N, channels = N }} tables, got {}",
                                        type_name(n.type())));
        return;
    }
    const std::size_t before = d.count();
    std::vector<unit_config> units;
    for (std::size_t i = 0; i < array->size(); ++i) {
        const toml::node& element = *array->get(i);
        const std::string path = fmt::format("units.list[{}]", i);
        const auto* table = element.as_table();
        if (table == nullptr) {
            d.error(line_of(element), fmt::format("{} must be a table {{ id = N, channels = N }}, got {}", path,
                                                  type_name(element.type())));
            continue;
        }
        check_unknown_keys(d, *table, path, unit_keys);
        unit_config unit;
        for (std::string_view key : unit_keys) {
            const toml::node* v = table->get(key);
            if (key == "shape") {
                if (v != nullptr) read_unit_shape(*v, join(path, key), unit, d);
                continue;
            }
            if (v == nullptr) {
                d.error(line_of(element), fmt::format("{} needs '{}'", path, key));
                continue;
            }
            const std::string key_path = join(path, key);
            const auto value = read_int(d, *v, key_path);
            if (!value) continue;
            const bool is_id = key == "id";
            const int_limits limits{is_id ? 0 : 1, is_id ? unit_id_max : channels_max};
            check_int(d, line_of(*v), key_path, limits, *value);
            if (is_id)
                unit.id = static_cast<std::uint16_t>(*value);
            else
                unit.channels = static_cast<std::uint32_t>(*value);
        }
        units.push_back(unit);
    }
    if (d.count() == before) c.units.units = std::move(units);
}

void check_units(const config& c, diagnostics& d) {
    std::map<std::uint16_t, std::size_t> seen;
    for (std::size_t i = 0; i < c.units.units.size(); ++i) {
        const std::string path = fmt::format("units.list[{}]", i);
        const unit_config& unit = c.units.units[i];
        check_int(d, d.line_of(path + ".channels"), path + ".channels", {1, channels_max}, unit.channels);
        if (!unit.shape.empty()) {
            std::uint64_t product = 1;
            for (auto e : unit.shape) product *= e;
            if (product != unit.channels)
                d.error({path + ".shape", path},
                        fmt::format("{}.shape [{}] holds {} channels, the unit has {}", path,
                                    fmt::join(unit.shape, ", "), product, unit.channels));
        }
        const auto [it, fresh] = seen.emplace(unit.id, i);
        if (!fresh)
            d.error({path + ".id", path},
                    fmt::format("{}.id: unit {} is listed twice (also units.list[{}])", path, unit.id, it->second));
    }
}

std::string render_units(const config& c) {
    if (c.units.units.empty()) return "[]";
    std::string list = "[\n";
    for (const auto& u : c.units.units) {
        if (u.shape.empty())
            list += fmt::format("  {{ id = {}, channels = {} }},\n", u.id, u.channels);
        else
            list += fmt::format("  {{ id = {}, channels = {}, shape = [{}] }},\n", u.id, u.channels,
                                fmt::join(u.shape, ", "));
    }
    return list + "]";
}

// ---------------------------------------------------------------- rules of one key

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

void check_ring_name(const config& c, diagnostics& d) {
    if (!valid_ring_name(c.acquisition.ring_name))
        d.error({"acquisition.ring_name"},
                fmt::format("acquisition.ring_name must be 1..200 characters of A-Z a-z 0-9 . _ - and '{{pid}}', "
                            "not starting with '.', got '{}'",
                            c.acquisition.ring_name));
}

void check_run_name_pattern(const config& c, diagnostics& d) {
    std::string why;
    if (!parse_run_name_pattern(c.storage.run_name_pattern, &why))
        d.error({"storage.run_name_pattern"},
                fmt::format("storage.run_name_pattern = '{}': {}", c.storage.run_name_pattern, why));
}

void check_output_dir(const config& c, diagnostics& d) {
    if (c.storage.output_dir.empty()) d.error({"storage.output_dir"}, "storage.output_dir must not be empty");
}

void check_stages(const config& c, diagnostics& d) {
    if (auto message = stage_order_error(c.processing.stages); !message.empty())
        d.error({"processing.stages"}, message);
}

void check_threshold(const config& c, diagnostics& d) {
    const double t = c.processing.threshold;
    if (!std::isfinite(t) || std::fabs(t) > 1e9)
        d.error({"processing.threshold"},
                fmt::format("processing.threshold must be a finite number (|x| <= 1e9), got {}", t));
}

void check_buffer_seconds(const config& c, diagnostics& d) {
    const double t = c.assembly.buffer_seconds;
    if (!std::isfinite(t) || t < 0.05 || t > 600)
        d.error({"assembly.buffer_seconds"},
                fmt::format("assembly.buffer_seconds must be between 0.05 and 600 seconds, got {}", t));
}

void check_http_listen(const config& c, diagnostics& d) {
    if (c.http.listen.empty()) return;
    try {
        (void)endpoint::parse(c.http.listen, "http.listen");
    } catch (const config_error& e) {
        d.error({"http.listen"}, e.what());
    }
}

// stream.listen: one endpoint as a string, or a list of them.
void read_stream_listen(const toml::node& n, config& c, diagnostics& d) {
    if (n.is_string()) {
        if (auto v = read_string(d, n, "stream.listen")) c.stream.listen = {*v};
        return;
    }
    if (auto v = read_strings(d, n, "stream.listen", "endpoints")) c.stream.listen = std::move(*v);
}

void check_stream_endpoints(diagnostics& d, const std::vector<std::string>& list, const char* key) {
    for (std::size_t i = 0; i < list.size(); ++i) {
        const std::string path = fmt::format("{}[{}]", key, i);
        try {
            (void)check_stream_endpoint(list[i], path);
        } catch (const config_error& e) {
            d.error({path, key}, e.what());
        }
    }
}

void check_stream_listen(const config& c, diagnostics& d) {
    check_stream_endpoints(d, c.stream.listen, "stream.listen");
}

void check_stream_publish(const config& c, diagnostics& d) {
    check_stream_endpoints(d, c.stream.publish, "stream.publish");
}

void check_preview_rate(const config& c, diagnostics& d) {
    const double r = c.stream.preview_rate;
    if (!std::isfinite(r) || r < 0 || r > 1000)
        d.error({"stream.preview_rate"},
                fmt::format("stream.preview_rate must be between 0 and 1000 frames per second, got {}", r));
}

void check_token(const config& c, diagnostics& d) {
    const std::string& t = c.http.token;
    if (t.empty()) return;
    const bool printable = std::all_of(t.begin(), t.end(), [](char ch) { return ch > ' ' && ch < 0x7f; });
    if (t.size() < 16 || t.size() > 256 || !printable)
        d.error({"http.token"}, "http.token must be 16..256 printable characters without spaces (or \"\" to generate "
                                "one at start)");
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

void check_allowed_hosts(const config& c, diagnostics& d) {
    const auto& hosts = c.http.allowed_hosts;
    for (std::size_t i = 0; i < hosts.size(); ++i) {
        const std::string path = fmt::format("http.allowed_hosts[{}]", i);
        if (!valid_allowed_host(hosts[i]))
            d.error({path, "http.allowed_hosts"},
                    fmt::format("{}: '{}' is not a host name: use letters, digits, '.', '-' and '_' (e.g. "
                                "\"daq01.lab.example\"), an IPv4 or IPv6 address (\"[fe80::1]\"), "
                                "or \"*\" for any; no port, no scheme",
                                path, hosts[i]));
    }
}

// "0,2-3": a sorted CPU list as parse_cpu_list reads it.
std::string cpu_list_text(const std::vector<unsigned>& cpus) {
    std::string out;
    for (std::size_t i = 0; i < cpus.size();) {
        std::size_t j = i;
        while (j + 1 < cpus.size() && cpus[j + 1] == cpus[j] + 1) ++j;
        out += fmt::format("{}{}", out.empty() ? "" : ",", cpus[i]);
        if (j > i) out += fmt::format("-{}", cpus[j]);
        i = j + 1;
    }
    return out;
}

// A threads.*_cpus value: a CPU list, every CPU on this machine.
void check_cpu_list(diagnostics& d, std::string_view name, const std::string& text) {
    std::string why;
    const auto cpus = parse_cpu_list(text, &why);
    if (!cpus) {
        d.error({name}, fmt::format("{} = \"{}\" is not a CPU list ({}): write CPU numbers and ranges such as \"2\", "
                                    "\"2-3\" or \"0,4-5\", or \"\" for not pinned",
                                    name, text, why));
        return;
    }
    const std::vector<unsigned> online = online_cpus();
    for (unsigned cpu : *cpus)
        if (!std::binary_search(online.begin(), online.end(), cpu)) {
            d.error({name}, fmt::format("{} = \"{}\": this machine has no CPU {} (its CPUs are {})", name, text, cpu,
                                        cpu_list_text(online)));
            return;
        }
}

// A CPU list key (threads.*_cpus).
template <class F>
key cpu_list(std::string_view name, F field, std::string_view doc) {
    key k{name, doc, "`\"\"` (not pinned) or CPUs of this machine: `\"2\"`, `\"2-3\"`, `\"0,4-5\"`"};
    k.read = [name, field](const toml::node& n, config& c, diagnostics& d) {
        if (auto v = read_string(d, n, name)) field(c) = *v;
    };
    k.check = [name, field](const config& c, diagnostics& d) { check_cpu_list(d, name, field(c)); };
    k.render = [field](const config& c) { return toml_string(field(c)); };
    return k;
}

// ---------------------------------------------------------------- the key table

// Every key once, in file order. Defaults are the struct's member
// initialisers (config.hpp).
const std::vector<key>& keys_table() {
    static const std::vector<key> table{
        key{"acquisition.listen",
            "UDP endpoints to receive on, one per link: \"IPV4:PORT\" or \"[IPV6]:PORT\".\n"
            "Numeric addresses only; \"0.0.0.0:4660\" or \"[::]:4660\" for all interfaces.",
            "at least one, no duplicates", true, false, read_listen, check_listen, render_listen},
        one_of("acquisition.backend", DAQD_FIELD(acquisition.backend), receiver_backends,
               "Receive path; \"auto\" is recvmmsg (see docs/PERFORMANCE.md)."),
        boolean("acquisition.gro", DAQD_FIELD(acquisition.gro),
                "UDP generic receive offload: the kernel coalesces same-size datagrams.\n"
                "Needs max_datagram_bytes = 65535."),
        integer("acquisition.batch", DAQD_FIELD(acquisition.batch), {1, 1024},
                "Datagrams per recvmmsg call / io_uring reap, at most ring_slots."),
        integer("acquisition.max_datagram_bytes", DAQD_FIELD(acquisition.max_datagram_bytes), {42, 65535},
                "Largest datagram accepted (ring slot payload size)."),
        integer("acquisition.socket_buffer_datagrams", DAQD_FIELD(acquisition.socket_buffer_datagrams), {1, 16777216},
                "Socket receive buffer, in datagrams of expected_datagram_bytes (<= 1 GiB)."),
        integer("acquisition.expected_datagram_bytes", DAQD_FIELD(acquisition.expected_datagram_bytes), {42, 65535},
                "Typical datagram size, used to size buffers in bytes; at most\n"
                "max_datagram_bytes."),
        integer("acquisition.shards", DAQD_FIELD(acquisition.shards), {1, 64},
                "Receive shards: the links are split, in listen order, into this many\n"
                "groups, each with its own receiver thread, packet ring, frame buffer\n"
                "and assembler thread (one writer for all). At most one per link; a\n"
                "unit's links must all be in one shard."),
        integer("acquisition.expected_rate_mbps", DAQD_FIELD(acquisition.expected_rate_mbps), {0, 10000000},
                "Payload rate the links are expected to bring, all together, in Mbit/s:\n"
                "what assembly.buffer_seconds is sized at. 0: the links' line rate\n"
                "(each link's interface speed; 2000 for a link whose speed is unknown:\n"
                "loopback, an any-address)."),
        integer("acquisition.ring_slots", DAQD_FIELD(acquisition.ring_slots), {64, 16777216, int_rule::power_of_two},
                "Packet ring slots per link."),
        text("acquisition.ring_name", DAQD_FIELD(acquisition.ring_name),
             "1..200 characters of `A-Z a-z 0-9 . _ -`, not starting with `.`", check_ring_name,
             "Shared-memory ring name; {pid} becomes the server's process id."),

        boolean("units.learn", DAQD_FIELD(units.learn),
                "Accept any unit and learn its frame size from its first packet."),
        key{"units.list",
            "Units that are always accepted, with a fixed frame size (2 bytes per\n"
            "channel). With learn = false only these are accepted. Example:\n"
            "list = [\n"
            "  { id = 3, channels = 4096, shape = [64, 64] },\n"
            "  { id = 4, channels = 1024 },\n"
            "]\n"
            "shape (optional): the frame's geometry, 1 to 3 extents whose product\n"
            "is channels; stored as the unit group's shape attribute.",
            "unit ids unique; shape: 1 to 3 extents whose product is channels", true, false, read_units, check_units, render_units},
        integer("units.max_learned", DAQD_FIELD(units.max_learned), {0, 65536},
                "Learned (unlisted) units held at once; packets of more unit ids are\n"
                "dropped (reason unit_limit). Listed units are always accepted."),
        integer("units.learned_idle_s", DAQD_FIELD(units.learned_idle_s), {1, 604800},
                "A learned unit silent this long gives its slot to a new unit."),
        integer("units.relearn_quiet_ms", DAQD_FIELD(units.relearn_quiet), {10, 3600000},
                "A learned unit whose frames change size is relearned after this long\n"
                "without a frame of the old size."),

        integer("assembly.reorder_frames", DAQD_FIELD(assembly.reorder_frames), {1, 4096},
                "Frames of one unit open at once (waiting for late packets)."),
        integer("assembly.reorder_timeout_ms", DAQD_FIELD(assembly.reorder_timeout), {1, 60000},
                "An open frame older than this is closed (incomplete)."),
        integer("assembly.max_frame_bytes", DAQD_FIELD(assembly.max_frame_bytes), {2, 16777216, int_rule::even},
                "Frame buffer size: the largest frame accepted."),
        number("assembly.buffer_seconds", DAQD_FIELD(assembly.buffer_seconds), "0.05..600", check_buffer_seconds,
               "Frames the writer may fall behind by, in seconds at\n"
               "acquisition.expected_rate_mbps: the frame buffer (blocks shaped like\n"
               "stored chunks) is sized to hold that much, within buffer_max_bytes.\n"
               "daqd logs the size it took at start."),
        integer("assembly.buffer_max_bytes", DAQD_FIELD(assembly.buffer_max_bytes), {16777216, 274877906944},
                "Most memory the frame buffer may take (x 3 with \"calibrate\": the\n"
                "float32 rows), whatever buffer_seconds asks for. Memory is committed\n"
                "only as frames use it."),
        integer("assembly.pool_blocks", DAQD_FIELD(assembly.pool_blocks), {4, 1048576, int_rule::zero_or_range},
                "Blocks in the frame buffer, each one stored chunk (storage.chunk_bytes,\n"
                "or max_frame_bytes if larger); 0: from buffer_seconds."),
        integer("assembly.max_frame_jump", DAQD_FIELD(assembly.max_frame_jump), {1, 1099511627776},
                "A frame number further ahead of its unit's stream than this is implausible:\n"
                "the packet is held aside (reason frame_out_of_window)."),
        integer("assembly.restart_packets", DAQD_FIELD(assembly.restart_packets), {2, 1024},
                "Packets held aside that confirm a new stream (a unit that restarted its\n"
                "frame numbers, or jumped), spanning at least two frames."),

        text("storage.output_dir", DAQD_FIELD(storage.output_dir), "not empty", check_output_dir,
             "Where run files are written."),
        integer("storage.flush_interval_ms", DAQD_FIELD(storage.flush_interval), {10, 600000},
                "How often an active run is flushed to disk."),
        integer("storage.rotate_bytes", DAQD_FIELD(storage.rotate_bytes), {65536, int64_max, int_rule::zero_or_range},
                "Start a new file of the run after this many bytes; 0: never."),
        integer("storage.chunk_bytes", DAQD_FIELD(storage.chunk_bytes), {4096, 1073741824},
                "Target size of one stored chunk."),
        integer("storage.queue_frames", DAQD_FIELD(storage.queue_frames), {0, 16777216},
                "Frames queued between assembly and the writer; 0: every row the frame\n"
                "buffer holds (at most 262144)."),
        integer("storage.reserve_bytes", DAQD_FIELD(storage.reserve_bytes), {0, int64_max},
                "Free space kept on the output file system for closing run files cleanly:\n"
                "a run that would eat into it stops writing, closes its file and is marked\n"
                "failed (docs/RELIABILITY.md). 0: write until the disk refuses."),
        one_of("storage.writeback", DAQD_FIELD(storage.writeback), writeback_modes,
               "Who writes run files back to the disk: \"paced\" (daqd starts writeback\n"
               "behind the write front and drops written data from the page cache, so\n"
               "dirty memory stays bounded) or \"kernel\" (the kernel's dirty limits).\n"
               "See docs/PERFORMANCE.md \"Writeback pacing\"."),
        one_of("storage.compression", DAQD_FIELD(storage.compression), compression_kinds,
               "How chunks are stored: \"none\" (raw), or \"bslz4\" (bitshuffle + LZ4, HDF5\n"
               "filter 32008 as DECTRIS and Jungfraujoch write it; readers need the\n"
               "bitshuffle plugin: hdf5plugin in Python, HDF5_PLUGIN_PATH for h5dump).\n"
               "Also --compression and the run-start request's \"compression\"."),
        integer("storage.compress_threads", DAQD_FIELD(storage.compress_threads), {1, 64, int_rule::zero_or_range},
                "Threads compressing chunks (with compression = \"bslz4\"); 0: half the\n"
                "CPUs daqd may use, at least 1, at most 8."),
        text("storage.run_name_pattern", DAQD_FIELD(storage.run_name_pattern),
             "run-name characters (`A-Z a-z 0-9 . _ -`, not starting with `.`) around one `{}` or `{:0Nd}` "
             "(N = 1..20)",
             check_run_name_pattern,
             "Name of a run started without one (POST /api/v1/runs with no name, the\n"
             "page): the pattern with the next number, one above the highest a run\n"
             "or calibration file in output_dir has (1 in an empty directory).\n"
             "\"{}\" is the number, \"{:05d}\" padded to 5 digits."),

        text_list("processing.stages", DAQD_FIELD(processing.stages), "stage names",
                  "each of `\"calibrate\"`, `\"dose\"`, `\"live\"` at most once, in that order; `\"dose\"` needs "
                  "`\"calibrate\"`",
                  check_stages,
                  "Stages run on batches of frames between assembly and the writer:\n"
                  "\"calibrate\" ((raw - pedestal) x gain, below the threshold -> 0), \"dose\"\n"
                  "(per-channel sum of calibrated values), \"live\" (latest frame and dose for\n"
                  "the web page). [] = none."),
        one_of("processing.backend", DAQD_FIELD(processing.backend), processing_backends,
               "Where calibrate/dose run: \"auto\" is CUDA when built with it and a device\n"
               "is present, else the CPU."),
        text("processing.calibration_file", DAQD_FIELD(processing.calibration_file), "", nullptr,
             "Calibration constants (daq1-calibration HDF5, e.g. from a pedestal run:\n"
             "daqd --pedestal-run NAME). \"\": none (pedestal 0, gain 1)."),
        number("processing.threshold", DAQD_FIELD(processing.threshold), "finite, -1e9..1e9", check_threshold,
               "Values below the threshold become 0: an absolute value, or k in k x noise\n"
               "(then >= 0). Reloaded on SIGHUP, from the next run's start."),
        one_of("processing.threshold_mode", DAQD_FIELD(processing.threshold_mode), threshold_modes,
               "How threshold is meant: the same for every channel, or k x its noise.\n"
               "Reloaded on SIGHUP, from the next run's start."),
        integer("processing.batch_frames", DAQD_FIELD(processing.batch_frames), {1, 4096},
                "Most frames per processing batch."),
        integer("processing.live_interval_ms", DAQD_FIELD(processing.live_interval), {10, 60000},
                "The live view publishes each unit at most this often."),

        one_of("log.level", DAQD_FIELD(log.level), log_levels, "Least severe messages logged."),

        text("http.listen", DAQD_FIELD(http.listen), "`\"HOST:PORT\"` (numeric, as `acquisition.listen`) or `\"\"`",
             check_http_listen,
             "Status page, /metrics and the control API: \"HOST:PORT\", or \"\" for none.\n"
             "A non-loopback address needs token or token_file."),
        [] {
            key k = text("http.token", DAQD_FIELD(http.token), "`\"\"` or 16..256 printable characters, no spaces",
                         check_token,
                         "Bearer token for requests that change something (start/stop runs).\n"
                         "Both empty: a random token is generated at start and written to\n"
                         "<output_dir>/.daqd-token (mode 0600).");
            k.secret = true;
            return k;
        }(),
        text("http.token_file", DAQD_FIELD(http.token_file), "", nullptr,
             "A file whose first line is the token (instead of token)."),
        text_list("http.allowed_hosts", DAQD_FIELD(http.allowed_hosts), "host names",
                  "host names (letters, digits, `.`, `-`, `_`), IPv4 or IPv6 addresses (`\"[fe80::1]\"` or "
                  "`\"fe80::1\"`), or `\"*\"`; no port, no scheme",
                  check_allowed_hosts,
                  "Host names clients may use in the Host header (no port, any port matches)\n"
                  "besides those always accepted: localhost, 127.0.0.1, ::1, the listen\n"
                  "address and, off loopback, this machine's name (or, listening on 0.0.0.0\n"
                  "or ::, its addresses). Others are answered 403 (DNS rebinding)."),

        key{"stream.listen",
            "Where the live stream's PUSH socket listens (docs/STREAM.md): every stored\n"
            "chunk goes to one of the consumers connected. \"tcp://HOST:PORT\" (numeric\n"
            "host) or \"ipc://PATH\", or a list of them; [] = no stream. Off loopback it\n"
            "needs curve_secret_key_file. Also --stream ENDPOINT.",
            "`\"tcp://HOST:PORT\"`, `\"ipc://PATH\"` or a list of them",
            true,
            false,
            read_stream_listen,
            check_stream_listen,
            [](const config& c) { return toml_strings(c.stream.listen); }},
        text_list("stream.publish", DAQD_FIELD(stream.publish), "endpoints", "endpoints as `stream.listen`",
                  check_stream_publish,
                  "Where the PUB socket (run start/end messages, previews) listens; [] =\n"
                  "each listen endpoint with port + 1 (ipc: PATH.pub)."),
        integer("stream.send_hwm", DAQD_FIELD(stream.send_hwm), {1, 100000},
                "Chunk messages ZeroMQ holds for each consumer before it counts as full\n"
                "(memory: about send_hwm x chunk size per consumer)."),
        integer("stream.queue_chunks", DAQD_FIELD(stream.queue_chunks), {1, 65536},
                "Chunk messages waiting for the stream's thread; more are dropped\n"
                "(reason queue), never waited for."),
        number("stream.preview_rate", DAQD_FIELD(stream.preview_rate), "0..1000", check_preview_rate,
               "Preview frames per second per unit on the PUB socket (the latest\n"
               "frame, uncompressed); 0: none. Reloaded on SIGHUP."),
        text("stream.curve_secret_key_file", DAQD_FIELD(stream.curve_secret_key_file), "", nullptr,
             "A file whose first line is this server's CURVE secret key (Z85, 40\n"
             "characters): the stream's sockets are then CURVE servers (encrypted,\n"
             "consumers need the public key daqd logs). \"\": none (loopback only)."),
        text("stream.curve_client_keys_file", DAQD_FIELD(stream.curve_client_keys_file), "", nullptr,
             "A file of consumers' CURVE public keys (Z85), one per line ('#'\n"
             "comments): only those are admitted. \"\": any consumer that knows\n"
             "the server's public key."),
        integer("stream.linger_ms", DAQD_FIELD(stream.linger_ms), {0, 60000},
                "At shutdown, how long messages still queued may go out."),

        cpu_list("threads.receiver_cpus", DAQD_FIELD(threads.receiver_cpus),
                 "CPUs the receiver thread is pinned to (also the thread that receives and\n"
                 "assembles when combined); \"\" = not pinned."),
        cpu_list("threads.assembler_cpus", DAQD_FIELD(threads.assembler_cpus),
                 "CPUs the assembler thread is pinned to (not used when combined)."),
        cpu_list("threads.processor_cpus", DAQD_FIELD(threads.processor_cpus),
                 "CPUs the processing thread is pinned to (with processing.stages)."),
        cpu_list("threads.writer_cpus", DAQD_FIELD(threads.writer_cpus), "CPUs the writer thread is pinned to."),
        cpu_list("threads.http_cpus", DAQD_FIELD(threads.http_cpus), "CPUs the HTTP server's threads are pinned to."),
        one_of("threads.combine_receive_assembly", DAQD_FIELD(threads.combine_receive_assembly), combine_modes,
               "One thread receives and assembles (fewer wake-ups on a machine with few\n"
               "cores): \"auto\" is \"on\" where daqd may run on at most 2 CPUs."),
    };
    return table;
}

#undef DAQD_FIELD

const key* find_key(std::string_view name) {
    for (const key& k : keys_table())
        if (k.name == name) return &k;
    return nullptr;
}

std::string_view section_of(std::string_view name) { return name.substr(0, name.find('.')); }
std::string_view short_name(std::string_view name) { return name.substr(name.find('.') + 1); }

struct section_schema {
    std::string_view name;
    std::vector<std::string_view> keys;
};

// The sections and their keys, in file order, from the table.
const std::vector<section_schema>& schema() {
    static const std::vector<section_schema> s = [] {
        std::vector<section_schema> sections;
        for (const key& k : keys_table()) {
            if (sections.empty() || sections.back().name != section_of(k.name))
                sections.push_back({section_of(k.name), {}});
            sections.back().keys.push_back(short_name(k.name));
        }
        return sections;
    }();
    return s;
}

// ---------------------------------------------------------------- rules across keys

// A rule over several keys; skipped when one of `keys` has a mistake of its
// own (its value is then the default, or one already reported).
struct rule {
    std::vector<std::string_view> keys;
    check_fn check;
};

const std::vector<rule>& rules() {
    static const std::vector<rule> list{
        {{"acquisition.expected_datagram_bytes", "acquisition.max_datagram_bytes"},
         [](const config& c, diagnostics& d) {
             const auto& a = c.acquisition;
             if (a.expected_datagram_bytes > a.max_datagram_bytes)
                 d.error({"acquisition.expected_datagram_bytes", "acquisition.max_datagram_bytes"},
                         fmt::format("acquisition.expected_datagram_bytes ({}) must not exceed "
                                     "acquisition.max_datagram_bytes ({})",
                                     a.expected_datagram_bytes, a.max_datagram_bytes));
         }},
        {{"acquisition.gro", "acquisition.max_datagram_bytes"},
         [](const config& c, diagnostics& d) {
             if (c.acquisition.gro && c.acquisition.max_datagram_bytes != 65535)
                 d.error({"acquisition.gro", "acquisition.max_datagram_bytes"},
                         fmt::format("acquisition.gro = true needs acquisition.max_datagram_bytes = 65535 (coalesced "
                                     "datagrams are up to 64 KiB), got {}",
                                     c.acquisition.max_datagram_bytes));
         }},
        {{"acquisition.batch", "acquisition.ring_slots"},
         [](const config& c, diagnostics& d) {
             if (c.acquisition.batch > c.acquisition.ring_slots)
                 d.error({"acquisition.batch", "acquisition.ring_slots"},
                         fmt::format("acquisition.batch ({}) must not exceed acquisition.ring_slots ({})",
                                     c.acquisition.batch, c.acquisition.ring_slots));
         }},
        {{"acquisition.socket_buffer_datagrams", "acquisition.expected_datagram_bytes"},
         [](const config& c, diagnostics& d) {
             constexpr std::uint64_t max_socket_buffer = 1ull << 30;
             const auto& a = c.acquisition;
             const std::uint64_t bytes = std::uint64_t{a.socket_buffer_datagrams} * a.expected_datagram_bytes;
             if (bytes > max_socket_buffer)
                 d.error({"acquisition.socket_buffer_datagrams", "acquisition.expected_datagram_bytes"},
                         fmt::format("acquisition.socket_buffer_datagrams ({}) x acquisition.expected_datagram_bytes "
                                     "({}) = {} bytes exceeds the 1 GiB socket buffer limit",
                                     a.socket_buffer_datagrams, a.expected_datagram_bytes, bytes));
         }},
        {{"units.list", "assembly.max_frame_bytes"},
         [](const config& c, diagnostics& d) {
             for (std::size_t i = 0; i < c.units.units.size(); ++i) {
                 const std::string path = fmt::format("units.list[{}]", i);
                 const unit_config& unit = c.units.units[i];
                 if (unit.frame_bytes() > c.assembly.max_frame_bytes)
                     d.error({path + ".channels", path, "assembly.max_frame_bytes"},
                             fmt::format("{}.channels = {} makes frames of {} bytes, more than "
                                         "assembly.max_frame_bytes ({}); raise assembly.max_frame_bytes to at least {}",
                                         path, unit.channels, unit.frame_bytes(), c.assembly.max_frame_bytes,
                                         unit.frame_bytes()));
             }
         }},
        {{"acquisition.shards", "acquisition.listen"},
         [](const config& c, diagnostics& d) {
             if (c.acquisition.shards > c.acquisition.listen.size())
                 d.error({"acquisition.shards", "acquisition.listen"},
                         fmt::format("acquisition.shards ({}) must be at most the number of links in "
                                     "acquisition.listen ({}): a shard receives on at least one link",
                                     c.acquisition.shards, c.acquisition.listen.size()));
         }},
        {{"units.learn", "units.list"},
         [](const config& c, diagnostics& d) {
             if (!c.units.learn && c.units.units.empty())
                 d.error({"units.learn", "units.list", "units"},
                         "units.learn = false and units.list is empty: no units would be accepted");
         }},
        // Each listed unit fills a block of its own while others wait for the writer.
        {{"assembly.pool_blocks", "units.list"},
         [](const config& c, diagnostics& d) {
             const std::uint64_t need = 2 * c.units.units.size() + 2;
             if (c.assembly.pool_blocks != 0 && c.assembly.pool_blocks < need)
                 d.error({"assembly.pool_blocks", "units.list"},
                         fmt::format("assembly.pool_blocks ({}) must be at least 2 x listed units + 2 ({}): each unit "
                                     "fills a block of its own",
                                     c.assembly.pool_blocks, need));
         }},
        // The buffer reserves its address space at start (three times that
        // with "calibrate": the float32 rows); more than this fails there.
        {{"assembly.pool_blocks", "assembly.max_frame_bytes", "storage.chunk_bytes", "processing.stages"},
         [](const config& c, diagnostics& d) {
             constexpr std::uint64_t max_address_space = 256ull << 30;
             const bool calibrate = c.processing.has("calibrate");
             const std::uint64_t block = std::max<std::uint64_t>(c.storage.chunk_bytes, c.assembly.max_frame_bytes);
             const std::uint64_t bytes = std::uint64_t{c.assembly.pool_blocks} * block * (calibrate ? 3u : 1u);
             if (bytes > max_address_space)
                 d.error({"assembly.pool_blocks", "storage.chunk_bytes", "assembly.max_frame_bytes"},
                         fmt::format("assembly.pool_blocks ({}) x {} bytes a block{} = {} bytes of frame buffer exceeds "
                                     "the 256 GiB limit; lower one of them",
                                     c.assembly.pool_blocks, block, calibrate ? " x 3 (calibrated rows)" : "", bytes));
         }},
        {{"processing.threshold", "processing.threshold_mode"},
         [](const config& c, diagnostics& d) {
             if (c.processing.threshold_mode == "noise" && c.processing.threshold < 0)
                 d.error({"processing.threshold", "processing.threshold_mode"},
                         fmt::format("processing.threshold must be >= 0 with threshold_mode = \"noise\" (k in k x "
                                     "noise), got {}",
                                     c.processing.threshold));
         }},
        {{"stream.listen", "stream.curve_secret_key_file"},
         [](const config& c, diagnostics& d) {
             if (!c.stream.curve_secret_key_file.empty()) return;
             auto off_host = [](const std::vector<std::string>& list) -> std::string {
                 for (const auto& e : list) {
                     try {
                         if (check_stream_endpoint(e, "stream")) return e;
                     } catch (const config_error&) {
                     }
                 }
                 return {};
             };
             std::string e = off_host(c.stream.listen);
             if (e.empty()) e = off_host(c.stream.publish);
             if (!e.empty())
                 d.error({"stream.listen", "stream.curve_secret_key_file"},
                         fmt::format("stream endpoint '{}' is not on loopback: set stream.curve_secret_key_file "
                                     "(ZeroMQ CURVE: anyone who can reach the port would take the detector's data)",
                                     e));
         }},
        {{"stream.curve_client_keys_file", "stream.curve_secret_key_file"},
         [](const config& c, diagnostics& d) {
             if (!c.stream.curve_client_keys_file.empty() && c.stream.curve_secret_key_file.empty())
                 d.error({"stream.curve_client_keys_file", "stream.curve_secret_key_file"},
                         "stream.curve_client_keys_file needs stream.curve_secret_key_file (keys are checked only "
                         "with CURVE)");
         }},
        {{"stream.listen", "stream.publish"},
         [](const config& c, diagnostics& d) {
             if (c.stream.listen.empty() && !c.stream.publish.empty())
                 d.error({"stream.publish", "stream.listen"}, "stream.publish needs stream.listen (no stream without it)");
             for (const auto& p : c.stream.publish)
                 for (const auto& l : c.stream.listen)
                     if (p == l)
                         d.error({"stream.publish", "stream.listen"},
                                 fmt::format("'{}' is in both stream.listen and stream.publish", p));
         }},
        {{"http.token", "http.token_file"},
         [](const config& c, diagnostics& d) {
             if (!c.http.token.empty() && !c.http.token_file.empty())
                 d.error({"http.token_file", "http.token"}, "set http.token or http.token_file, not both");
         }},
        {{"http.listen", "http.token", "http.token_file"},
         [](const config& c, diagnostics& d) {
             const auto& h = c.http;
             if (h.listen.empty() || !h.token.empty() || !h.token_file.empty()) return;
             if (!is_loopback(endpoint::parse(h.listen, "http.listen").host))
                 d.error({"http.listen"},
                         fmt::format("http.listen = \"{}\" is not a loopback address: set http.token or "
                                     "http.token_file (anyone who can reach the port could start and stop runs), or "
                                     "listen on 127.0.0.1",
                                     h.listen));
         }},
    };
    return list;
}

// Each key's own rule, then the rules across keys whose keys are all good.
// `failed` holds the keys already found wrong while reading.
void check(const config& c, diagnostics& d, std::set<std::string_view> failed = {}) {
    for (const key& k : keys_table()) {
        if (failed.contains(k.name)) continue;
        const std::size_t before = d.count();
        k.check(c, d);
        if (d.count() != before) failed.insert(k.name);
    }
    for (const rule& r : rules())
        if (std::none_of(r.keys.begin(), r.keys.end(), [&](std::string_view k) { return failed.contains(k); }))
            r.check(c, d);
}

// ---------------------------------------------------------------- loading

// The hint for an unknown key or section: the nearest of `known` (written by
// `spell`), or the section a misplaced key belongs to.
template <class Spell>
std::string hint_for(std::string_view k, const std::vector<std::string_view>& known, Spell spell) {
    std::string hint;
    std::size_t best = std::max<std::size_t>(1, k.size() / 3) + 1;
    for (std::string_view candidate : known) {
        const std::size_t d = edit_distance(k, candidate);
        if (d < best) {
            best = d;
            hint = spell(candidate);
        }
    }
    if (hint.empty())
        for (const auto& s : schema())
            if (std::find(s.keys.begin(), s.keys.end(), k) != s.keys.end())
                return fmt::format(" (did you mean '{}'? it belongs in [{}])", join(s.name, k), s.name);
    return hint;
}

std::uint32_t line_of_key(const toml::key& key, const toml::node& value) {
    const std::uint32_t line = key.source().begin.line;
    return line > 0 ? line : line_of(value);
}

void check_unknown_keys(diagnostics& d, const toml::table& table, std::string_view section,
                        const std::vector<std::string_view>& known) {
    for (auto&& [key, value] : table) {
        const std::string_view k = key.str();
        if (std::find(known.begin(), known.end(), k) != known.end()) continue;
        if (section == "assembly" && k == "pool_frames") {
            d.error(line_of_key(key, value),
                    "assembly.pool_frames is gone: the frame buffer is sized in time now (assembly.buffer_seconds at "
                    "acquisition.expected_rate_mbps, within assembly.buffer_max_bytes; assembly.pool_blocks to set "
                    "its blocks by hand)");
            continue;
        }
        const std::string hint = hint_for(
            k, known, [&](std::string_view c) { return fmt::format(" (did you mean '{}'?)", join(section, c)); });
        d.error(line_of_key(key, value), fmt::format("unknown key '{}'{}", join(section, k), hint));
    }
}

config from_table(const toml::table& doc, std::string_view source) {
    diagnostics d(source, &doc);
    config c;

    std::vector<std::string_view> sections;
    for (const auto& s : schema()) sections.push_back(s.name);
    for (auto&& [key, value] : doc) {
        const std::string_view k = key.str();
        if (std::find(sections.begin(), sections.end(), k) != sections.end()) continue;
        const std::string hint =
            hint_for(k, sections, [](std::string_view c) { return fmt::format(" (did you mean [{}]?)", c); });
        d.error(line_of_key(key, value),
                fmt::format("unknown {} '{}'{}", value.is_table() ? "section" : "key", k, hint));
    }

    std::set<std::string_view> failed;
    for (const auto& s : schema()) {
        const toml::node* n = doc.get(s.name);
        if (n == nullptr) continue;
        const auto* table = n->as_table();
        if (table == nullptr) {
            d.error(line_of(*n),
                    fmt::format("{} must be a table ([{}]), got {}", s.name, s.name, type_name(n->type())));
            continue;
        }
        check_unknown_keys(d, *table, s.name, s.keys);
    }
    for (const key& k : keys_table()) {
        const toml::node* n = toml::at_path(doc, k.name).node();
        if (n == nullptr) continue;
        const std::size_t before = d.count();
        k.read(*n, c, d);
        if (d.count() != before) failed.insert(k.name);
    }
    check(c, d, std::move(failed));
    d.throw_if_any();
    c.source = std::string(source);
    c.text = to_toml(c, true);
    return c;
}

// ---------------------------------------------------------------- rendering

// `text` as comment lines, wrapped before `width` columns.
void comment(std::string& out, std::string_view text, std::size_t width = 79) {
    for (std::size_t start = 0; start <= text.size();) {
        std::size_t end = text.find('\n', start);
        if (end == std::string_view::npos) end = text.size();
        std::string_view line = text.substr(start, end - start);
        while (line.size() + 2 > width) {
            const std::size_t cut = line.rfind(' ', width - 2);
            if (cut == std::string_view::npos || cut == 0) break;
            out += fmt::format("# {}\n", line.substr(0, cut));
            line.remove_prefix(cut + 1);
        }
        out += fmt::format("# {}\n", line);
        start = end + 1;
    }
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

bool check_stream_endpoint(const std::string& text, const std::string& what) {
    if (text.rfind("ipc://", 0) == 0) {
        if (text.size() <= 6 || text.size() > 100)
            throw config_error(fmt::format("{}: '{}' needs a path of 1..94 characters after ipc://", what, text));
        return false;
    }
    if (text.rfind("tcp://", 0) != 0)
        throw config_error(fmt::format("{}: '{}' must be \"tcp://HOST:PORT\" or \"ipc://PATH\"", what, text));
    const endpoint e = endpoint::parse(text.substr(6), what);
    return !is_loopback(e.host);
}

bool is_loopback(const std::string& host) {
    if (host == "::1") return true;
    in_addr a{};
    if (inet_pton(AF_INET, host.c_str(), &a) != 1) return false;
    return (ntohl(a.s_addr) >> 24) == 127;
}

std::string_view name(receiver_backend b) {
    for (const auto& [text, value] : receiver_backends)
        if (value == b) return text;
    return "unknown";
}

std::optional<run_name_pattern> parse_run_name_pattern(std::string_view text, std::string* error) {
    auto fail = [&](std::string why) -> std::optional<run_name_pattern> {
        if (error != nullptr) *error = std::move(why);
        return std::nullopt;
    };
    const auto open = text.find('{');
    if (open == std::string_view::npos) return fail("no number placeholder: put {} or {:05d} where the number goes");
    const auto close = text.find('}', open);
    if (close == std::string_view::npos) return fail("'{' without '}'");
    if (text.find('{', open + 1) != std::string_view::npos || text.find('}', close + 1) != std::string_view::npos)
        return fail("more than one placeholder: one {} or {:0Nd} only");
    run_name_pattern p;
    const std::string_view spec = text.substr(open + 1, close - open - 1);
    if (!spec.empty()) {
        // ":0Nd" or ":d"
        if (spec.size() < 2 || spec.front() != ':' || spec.back() != 'd')
            return fail(fmt::format("placeholder '{{{}}}' is not {{}} or {{:0Nd}}", spec));
        const std::string_view digits = spec.substr(1, spec.size() - 2);
        if (!digits.empty()) {
            if (digits.size() < 2 || digits.front() != '0' ||
                !std::all_of(digits.begin() + 1, digits.end(), [](char ch) { return ch >= '0' && ch <= '9'; }))
                return fail(fmt::format("placeholder '{{{}}}' is not {{}} or {{:0Nd}}", spec));
            p.width = static_cast<unsigned>(std::stoul(std::string(digits.substr(1))));
            if (p.width < 1 || p.width > 20) return fail("the number's width must be 1..20 digits");
        }
    }
    p.prefix = std::string(text.substr(0, open));
    p.suffix = std::string(text.substr(close + 1));
    for (const std::string& part : {p.prefix, p.suffix})
        for (char ch : part)
            if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' ||
                  ch == '_' || ch == '-'))
                return fail(fmt::format("'{}' is not a run-name character (A-Z a-z 0-9 . _ -)", ch));
    if (!p.prefix.empty() && p.prefix.front() == '.') return fail("a run name must not start with '.'");
    if (p.prefix.size() + p.suffix.size() + std::max(20u, p.width) > 100)
        return fail("names would be longer than 100 characters");
    return p;
}

std::string run_name_pattern::name(std::uint64_t number) const {
    if (width == 0) return fmt::format("{}{}{}", prefix, number, suffix);
    return fmt::format("{}{:0{}}{}", prefix, number, width, suffix);
}

std::optional<std::uint64_t> run_name_pattern::number_of(std::string_view name) const {
    if (name.size() <= prefix.size() + suffix.size() || !name.starts_with(prefix) || !name.ends_with(suffix))
        return std::nullopt;
    const std::string_view digits = name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
    if (digits.size() > 19 || !std::all_of(digits.begin(), digits.end(), [](char ch) { return ch >= '0' && ch <= '9'; }))
        return std::nullopt;
    if (width > 0 ? digits.size() < width : (digits.size() > 1 && digits.front() == '0')) return std::nullopt;
    return std::stoull(std::string(digits));
}

std::string stage_order_error(const std::vector<std::string>& stages) {
    std::size_t next = 0;  // stages must follow processing_stage_order
    for (std::size_t i = 0; i < stages.size(); ++i) {
        const std::string& s = stages[i];
        const auto it = std::find(processing_stage_order.begin(), processing_stage_order.end(), s);
        if (it == processing_stage_order.end())
            return fmt::format("processing.stages[{}]: unknown stage '{}' (known: {})", i, s,
                               quoted_list(processing_stage_order));
        const auto at = static_cast<std::size_t>(it - processing_stage_order.begin());
        if (at < next)
            return fmt::format("processing.stages[{}]: '{}' is repeated or out of order (each stage at most once, in "
                               "the order 'calibrate', 'dose', 'live')",
                               i, s);
        next = at + 1;
    }
    const auto has = [&](std::string_view s) { return std::find(stages.begin(), stages.end(), s) != stages.end(); };
    if (has("dose") && !has("calibrate")) return "processing.stages: 'dose' needs 'calibrate' before it";
    return {};
}

// ---------------------------------------------------------------- threads

std::optional<std::vector<unsigned>> parse_cpu_list(std::string_view text, std::string* error) {
    auto fail = [&](std::string why) -> std::optional<std::vector<unsigned>> {
        if (error != nullptr) *error = std::move(why);
        return std::nullopt;
    };
    std::vector<unsigned> cpus;
    if (text.empty()) return cpus;
    auto number = [](std::string_view s, unsigned& out) {
        if (s.empty() || s.size() > 5 || !std::all_of(s.begin(), s.end(), [](char ch) { return ch >= '0' && ch <= '9'; }))
            return false;
        unsigned v = 0;
        for (char ch : s) v = v * 10 + static_cast<unsigned>(ch - '0');
        out = v;
        return v <= cpu_number_max;
    };
    for (std::size_t at = 0; at <= text.size();) {
        std::size_t comma = text.find(',', at);
        if (comma == std::string_view::npos) comma = text.size();
        const std::string_view item = text.substr(at, comma - at);
        if (item.empty()) return fail("an empty entry between commas");
        const std::size_t dash = item.find('-');
        unsigned first = 0, last = 0;
        const std::string_view a = item.substr(0, dash);
        const std::string_view b = dash == std::string_view::npos ? a : item.substr(dash + 1);
        if (!number(a, first) || !number(b, last))
            return fail(fmt::format("'{}' is not a CPU number or a range FIRST-LAST of them (0..{})", item,
                                    cpu_number_max));
        if (first > last) return fail(fmt::format("the range '{}' goes down", item));
        for (unsigned c = first; c <= last; ++c) cpus.push_back(c);
        at = comma + 1;
    }
    std::sort(cpus.begin(), cpus.end());
    cpus.erase(std::unique(cpus.begin(), cpus.end()), cpus.end());
    return cpus;
}

std::vector<unsigned> online_cpus() {
    std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen("/sys/devices/system/cpu/online", "rb"),
                                                         &std::fclose);
    if (file) {
        char buffer[4096] = {};
        const std::size_t n = std::fread(buffer, 1, sizeof buffer - 1, file.get());
        std::string_view text(buffer, n);
        while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.remove_suffix(1);
        if (auto cpus = parse_cpu_list(text); cpus && !cpus->empty()) return *cpus;
    }
    const long n = ::sysconf(_SC_NPROCESSORS_CONF);
    std::vector<unsigned> cpus;
    for (long c = 0; c < std::max(1L, n); ++c) cpus.push_back(static_cast<unsigned>(c));
    return cpus;
}

combine_choice choose_combine(const threads_config& t, unsigned cpus) {
    const std::string key = fmt::format("threads.combine_receive_assembly = \"{}\"", t.combine_receive_assembly);
    if (t.combine_receive_assembly == "on") return {true, key};
    if (t.combine_receive_assembly == "off") return {false, key};
    if (cpus <= 2) return {true, fmt::format("{} and daqd may run on {} CPU(s), at most 2", key, cpus)};
    return {false, fmt::format("{} and daqd may run on {} CPUs, more than 2", key, cpus)};
}

// ---------------------------------------------------------------- config

void config::validate() const {
    diagnostics d(source, nullptr);
    daqd::config::check(*this, d);
    d.throw_if_any();
}

std::string_view default_toml() {
    static const std::string text = to_toml(config{});
    return text;
}

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

config load_default() { return load_string(default_toml(), std::string(embedded_source)); }

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
    std::string out(file_header);
    std::string_view section;
    for (const key& k : keys_table()) {
        if (section_of(k.name) != section) {
            section = section_of(k.name);
            out += fmt::format("\n[{}]\n", section);
        }
        comment(out, k.doc);
        if (k.rule_in_comment && !k.rule.empty()) {
            std::string allowed = k.rule;
            std::erase(allowed, '`');
            comment(out, "Allowed: " + allowed);
        }
        std::string value = k.render(c);
        if (k.secret && hide_secrets) value = value == "\"\"" ? value : "\"\"  # set, not shown";
        out += fmt::format("{} = {}\n", short_name(k.name), value);
    }
    return out;
}

std::vector<key_info> keys() {
    std::vector<key_info> list;
    for (const key& k : keys_table()) list.push_back({k.name, k.doc, k.rule});
    return list;
}

std::string value_toml(const config& c, std::string_view key_name) {
    const key* k = find_key(key_name);
    if (k == nullptr) throw config_error(fmt::format("unknown key '{}'", key_name));
    return k->render(c);
}

void set_key(config& c, std::string_view key_name, std::string_view text, std::string_view option) {
    const key* k = find_key(key_name);
    if (k == nullptr) throw config_error(fmt::format("{}: unknown key '{}'", option, key_name));
    diagnostics d(option, nullptr);
    config changed = c;
    k->read(toml::value<std::string>(std::string(text)), changed, d);
    if (d.count() == 0) k->check(changed, d);
    d.throw_if_any();
    c = std::move(changed);
}

}  // namespace daqd::config
