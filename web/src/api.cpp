// The HTTP API (api.hpp): routing, authorisation, JSON.
#include "daqd/web/api.hpp"

#include "daqd/web/token.hpp"
#include "page_assets.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <cmath>
#include <ctime>

namespace daqd::web {

namespace {

using nlohmann::json;
namespace fs = std::filesystem;

std::string iso8601(std::chrono::system_clock::time_point t) {
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
    const std::time_t secs = static_cast<std::time_t>(ms / 1000);
    std::tm tm{};
    ::gmtime_r(&secs, &tm);
    return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                       tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms % 1000));
}

response json_response(unsigned status, const json& j) {
    response r;
    r.status = status;
    r.body = j.dump(-1, ' ', false, json::error_handler_t::replace);
    return r;
}

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }
bool ends_with(std::string_view s, std::string_view p) {
    return s.size() >= p.size() && s.substr(s.size() - p.size()) == p;
}

response method_not_allowed(const std::string& allow) {
    auto r = api::error(405, "method not allowed; use " + allow);
    r.headers.emplace_back("Allow", allow);
    return r;
}

}  // namespace

api::api(daq_view view, run_controls controls, std::string token, std::vector<host_check> host_checks)
    : _view(std::move(view)),
      _controls(std::move(controls)),
      _token(std::move(token)),
      _host_checks(std::move(host_checks)),
      _hosts(_view.cfg->http),
      _metrics(_view, _host_checks) {}

response api::error(unsigned status, const std::string& message) { return json_response(status, json{{"error", message}}); }

bool api::authorized(const request& r) const noexcept {
    return !_token.empty() && token_equals(bearer_token(r.authorization), _token);
}

bool api::is_blocking(const request& r) const {
    const std::string_view path = std::string_view(r.target).substr(0, r.target.find_first_of("?#"));
    return path == "/api/v1/runs" || path == "/api/v1/runs/stop";
}

response api::host_rejected(const std::string& host) {
    _metrics.count_host_rejected();
    std::string shown = host.substr(0, 128);
    for (auto& ch : shown)
        if (static_cast<unsigned char>(ch) < 0x20 || static_cast<unsigned char>(ch) >= 0x7f) ch = '?';
    if (!_host_rejection_logged.exchange(true))
        spdlog::warn("http: answered 403 to a request for Host '{}', not an allowed name (a DNS-rebinding page, or "
                     "a client using a name daqd does not know: add it to http.allowed_hosts); further ones are "
                     "counted in daq_http_host_rejected_total and logged at debug level",
                     shown);
    else
        spdlog::debug("http: 403 for Host '{}'", shown);
    return error(403, fmt::format("Host '{}' is not served here: daqd answers only requests for its own names "
                                  "(localhost, its listen address, the names in http.allowed_hosts); an operator "
                                  "can add this name to http.allowed_hosts",
                                  shown));
}

response api::handle(const request& r) {
    if (r.host && !_hosts.allows(*r.host)) return host_rejected(*r.host);
    if (r.method == "HEAD") {
        // GET semantics; the server sends the head only (with the Content-Length of this body).
        request get = r;
        get.method = "GET";
        return route(get);
    }
    return route(r);
}

response api::route(const request& r) {
    const std::string_view path = std::string_view(r.target).substr(0, r.target.find_first_of("?#"));
    if (r.body.size() > max_body_bytes)
        return error(413, fmt::format("request body larger than {} bytes", max_body_bytes));
    const bool get = r.method == "GET";
    const bool post = r.method == "POST";

    if (const auto* asset = page::find(path == "/" ? std::string_view("/index.html") : path)) {
        if (!get) return method_not_allowed("GET, HEAD");
        response res;
        res.content_type = std::string(asset->content_type);
        res.body = std::string(asset->body);
        res.headers.emplace_back("Content-Security-Policy",
                                 "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                                 "connect-src 'self'; frame-ancestors 'none'");
        return res;
    }
    if (path == "/favicon.ico") {
        if (!get) return method_not_allowed("GET, HEAD");
        response res;
        res.status = 204;
        res.content_type.clear();
        return res;
    }
    if (path == "/metrics") {
        if (!get) return method_not_allowed("GET, HEAD");
        response res;
        res.content_type = "text/plain; version=0.0.4; charset=utf-8";
        res.body = _metrics.scrape();
        return res;
    }
    if (path == "/api/v1/status") {
        if (!get) return method_not_allowed("GET, HEAD");
        return status_json();
    }
    if (path == "/api/v1/runs") {
        if (get) return list_runs();
        if (post) return start_run(r);
        return method_not_allowed("GET, HEAD, POST");
    }
    if (path == "/api/v1/runs/stop") {
        if (!post) return method_not_allowed("POST");
        return stop_run(r);
    }
    constexpr std::string_view units_prefix = "/api/v1/units/";
    if (starts_with(path, units_prefix) && ends_with(path, "/live")) {
        const std::string_view id = path.substr(units_prefix.size(), path.size() - units_prefix.size() - 5);
        unsigned long v = 0;
        const bool digits = !id.empty() && id.size() <= 5 &&
                            std::all_of(id.begin(), id.end(), [](char c) { return c >= '0' && c <= '9'; });
        if (digits) v = std::stoul(std::string(id));
        if (!digits || v > 65535) return error(404, fmt::format("no such unit '{}' (unit ids are 0..65535)", id));
        if (!get) return method_not_allowed("GET, HEAD");
        return live_json(static_cast<std::uint16_t>(v));
    }
    return error(404, fmt::format("no such resource: {}", path));
}

void api::sample(std::chrono::steady_clock::time_point now) {
    counts c;
    c.at = now;
    c.valid = true;
    const auto t = _view.telemetry();
    for (const auto& link : t.label_values("daq_link_info", "link")) {
        c.link_packets.push_back(t.count("daq_datagrams_received_total", {{"link", link}}));
        c.link_bytes.push_back(t.count("daq_bytes_received_total", {{"link", link}}));
    }
    const auto packets = t.by("daq_packets_received_total", "unit");
    const auto complete = t.by("daq_frames_total", "unit", {{"state", "complete"}});
    const auto incomplete = t.by("daq_frames_total", "unit", {{"state", "incomplete"}});
    const auto bytes = t.by("daq_unit_bytes_received_total", "unit");
    auto of = [](const auto& m, const std::string& k) {
        const auto it = m.find(k);
        return it == m.end() ? std::uint64_t{0} : static_cast<std::uint64_t>(it->second);
    };
    for (const auto& unit : t.label_values("daq_unit_channels", "unit"))
        c.unit[static_cast<std::uint16_t>(std::stoul(unit))] = {
            of(packets, unit), of(complete, unit) + of(incomplete, unit), of(bytes, unit)};
    if (_prev.valid) {
        const double dt = std::chrono::duration<double>(now - _prev.at).count();
        if (dt > 0) {
            _link_pps.assign(c.link_packets.size(), 0);
            _link_bps.assign(c.link_packets.size(), 0);
            for (std::size_t l = 0; l < c.link_packets.size() && l < _prev.link_packets.size(); ++l) {
                _link_pps[l] = static_cast<double>(c.link_packets[l] - _prev.link_packets[l]) / dt;
                _link_bps[l] = static_cast<double>(c.link_bytes[l] - _prev.link_bytes[l]) / dt;
            }
            _unit_rates.clear();
            for (const auto& [id, v] : c.unit) {
                // A unit new since the last sample counted from 0.
                const auto it = _prev.unit.find(id);
                const std::array<std::uint64_t, 3> before = it != _prev.unit.end() ? it->second : std::array<std::uint64_t, 3>{};
                std::array<double, 3> rate{};
                for (std::size_t k = 0; k < 3; ++k) rate[k] = static_cast<double>(v[k] - before[k]) / dt;
                _unit_rates[id] = rate;
            }
        }
    }
    _prev = std::move(c);
}

response api::status_json() const {
    const auto t = _view.telemetry();
    json j;
    j["version"] = t.label("daq_build_info", "version");
    j["now"] = iso8601(std::chrono::system_clock::now());
    j["uptime_s"] = t.sum("daq_uptime_seconds");
    j["backends"] = {{"receiver", t.label("daq_build_info", "receiver_backend")},
                     {"processing", t.label("daq_build_info", "processing_backend")},
                     {"storage", "hdf5"}};

    json links = json::array();
    double total_pps = 0, total_bps = 0;
    std::uint64_t total_packets = 0, total_bytes = 0, kernel_drops = 0, ring_dropped = 0;
    const auto link_names = t.label_values("daq_link_info", "link");
    for (std::size_t l = 0; l < link_names.size(); ++l) {
        const telemetry::label_set ll{{"link", link_names[l]}};
        const double pps = l < _link_pps.size() ? _link_pps[l] : 0.0;
        const double bps = l < _link_bps.size() ? _link_bps[l] : 0.0;
        const std::uint64_t packets = t.count("daq_datagrams_received_total", ll);
        const std::uint64_t bytes = t.count("daq_bytes_received_total", ll);
        const std::uint64_t kernel = t.count("daq_socket_drops_total", ll);
        const std::uint64_t dropped = t.count("daq_ring_dropped_total", ll);
        links.push_back({{"link", l},
                         {"endpoint", t.label("daq_link_info", "endpoint", ll)},
                         {"packets", packets},
                         {"bytes", bytes},
                         {"packets_per_s", pps},
                         {"bytes_per_s", bps},
                         {"ring_fill", t.sum("daq_ring_fill_ratio", ll)},
                         {"kernel_drops", kernel},
                         {"ring_dropped", dropped},
                         {"invalid", t.count("daq_link_packets_invalid", ll)},
                         {"socket_buffer_bytes", t.count("daq_socket_buffer_bytes", ll)}});
        total_pps += pps;
        total_bps += bps;
        total_packets += packets;
        total_bytes += bytes;
        kernel_drops += kernel;
        ring_dropped += dropped;
    }
    j["links"] = std::move(links);
    json rings = json::array();
    double max_fill = 0;
    for (const auto& ring : t.label_values("daq_ring_slots", "ring")) {
        const double fill = t.sum("daq_ring_fill", {{"ring", ring}});
        rings.push_back({{"name", ring}, {"slots", t.count("daq_ring_slots", {{"ring", ring}})}, {"fill", fill}});
        max_fill = std::max(max_fill, fill);
    }
    j["rings"] = std::move(rings);
    j["ring_fill"] = max_fill;

    json units = json::array();
    // One pass per family (a lookup per unit would scan each family once per unit).
    auto per_unit = [&](std::string_view family, const telemetry::label_set& match = {}) {
        return t.by(family, "unit", match);
    };
    const auto channels = per_unit("daq_unit_channels"), packets = per_unit("daq_packets_received_total"),
               lost = per_unit("daq_packets_lost_total"), duplicates = per_unit("daq_packets_duplicate_total"),
               late = per_unit("daq_packets_late_total"), written = per_unit("daq_frames_written_total"),
               last = per_unit("daq_unit_last_frame_number"), live = per_unit("daq_unit_live"),
               complete = per_unit("daq_frames_total", {{"state", "complete"}}),
               incomplete = per_unit("daq_frames_total", {{"state", "incomplete"}}),
               frames_lost = per_unit("daq_frames_total", {{"state", "lost"}}),
               overflow = per_unit("daq_frames_total", {{"state", "overflow"}});
    for (const auto& unit : t.label_values("daq_unit_channels", "unit")) {
        auto of = [&](const std::unordered_map<std::string, double>& m) {
            const auto it = m.find(unit);
            return it == m.end() ? std::uint64_t{0} : static_cast<std::uint64_t>(it->second);
        };
        const auto id = static_cast<std::uint16_t>(std::stoul(unit));
        const auto it = _unit_rates.find(id);
        const std::array<double, 3> rate = it != _unit_rates.end() ? it->second : std::array<double, 3>{0, 0, 0};
        units.push_back({{"unit", id},
                         {"channels", of(channels)},
                         {"packets", of(packets)},
                         {"packets_per_s", rate[0]},
                         {"frames_per_s", rate[1]},
                         {"bytes_per_s", rate[2]},
                         {"packets_lost", of(lost)},
                         {"duplicates", of(duplicates)},
                         {"late", of(late)},
                         {"frames_complete", of(complete)},
                         {"frames_incomplete", of(incomplete)},
                         {"frames_lost", of(frames_lost)},
                         {"frames_overflow", of(overflow)},
                         {"frames_written", of(written)},
                         {"last_frame_number", of(last)},
                         {"live", of(live) != 0}});
    }
    j["units"] = std::move(units);
    j["totals"] = {{"packets", total_packets},
                   {"bytes", total_bytes},
                   {"packets_per_s", total_pps},
                   {"bytes_per_s", total_bps},
                   {"packets_lost", t.count("daq_packets_lost_total")},
                   {"invalid", t.count("daq_packets_invalid_total")},
                   {"kernel_drops", kernel_drops},
                   {"ring_dropped", ring_dropped}};

    const std::uint64_t frames_written = t.count("daq_storage_frames_written");
    const std::uint64_t bytes_written = t.count("daq_storage_bytes_written_total");
    j["writer"] = {{"frames_written", frames_written},
                   {"bytes_written", bytes_written},
                   {"frames_unrecorded", t.count("daq_frames_unrecorded_total")},
                   {"frames_failed", t.count("daq_frames_unwritten_total")},
                   {"run_failures", t.count("daq_storage_run_failures_total")},
                   {"flushes", t.count("daq_storage_flushes")},
                   {"write_seconds", t.sum("daq_storage_write_seconds_total")}};
    const std::uint64_t cin = t.count("daq_compress_bytes_in_total"), cout = t.count("daq_compress_bytes_out_total");
    j["compression"] = {{"default", _view.cfg->storage.compression},
                        {"bytes_in", cin},
                        {"bytes_out", cout},
                        {"ratio", cout == 0 ? 0.0 : static_cast<double>(cin) / static_cast<double>(cout)},
                        {"seconds", t.sum("daq_compress_seconds_total")},
                        {"wait_seconds", t.sum("daq_compress_wait_seconds_total")},
                        {"queue_chunks", t.count("daq_compress_queue_chunks")},
                        {"queue_capacity_chunks", t.count("daq_compress_queue_capacity_chunks")}};
    std::optional<run_info> run;
    if (_controls.current) run = _controls.current();
    if (run) {
        json files = json::array();
        if (_controls.files_of)
            for (const auto& p : _controls.files_of(run->name)) files.push_back(p.filename().string());
        j["run"] = {{"name", run->name},
                    {"started", iso8601(run->started)},
                    {"seconds", std::chrono::duration<double>(std::chrono::system_clock::now() - run->started).count()},
                    {"files", std::move(files)},
                    {"frames_written", frames_written - std::min(frames_written, run->frames_before)},
                    {"bytes_written", bytes_written - std::min(bytes_written, run->bytes_before)},
                    {"state", run->error.empty() ? "recording" : "failed"},
                    {"compression", run->compression},
                    {"compression_ratio", [&] {
                         const std::uint64_t in = cin - std::min(cin, run->compress_in_before);
                         const std::uint64_t out = cout - std::min(cout, run->compress_out_before);
                         return out == 0 ? 0.0 : static_cast<double>(in) / static_cast<double>(out);
                     }()},
                    {"error", run->error}};
    } else {
        j["run"] = nullptr;
    }
    j["output_dir"] = _view.cfg->storage.output_dir.string();
    json checks = json::array();
    for (const auto& c : _host_checks)
        checks.push_back({{"check", c.name}, {"status", name(c.status)}, {"detail", c.detail}, {"fix", c.fix}});
    j["host_checks"] = std::move(checks);
    return json_response(200, j);
}

response api::live_json(std::uint16_t unit) const {
    common::live_frame f;
    if (!_view.live || !_view.live(unit, f)) {
        const auto t = _view.telemetry();
        if (t.find("daq_unit_channels") && !t.label("daq_unit_channels", "unit", {{"unit", std::to_string(unit)}}).empty())
            return error(404, fmt::format("unit {} has no live view (more than {} channels, or no frame yet)", unit,
                                          max_live_channels));
        return error(404, fmt::format("unit {} has sent no frame yet", unit));
    }
    const auto cols = static_cast<std::uint32_t>(std::ceil(std::sqrt(static_cast<double>(f.channels))));
    const std::uint32_t rows = cols ? (f.channels + cols - 1) / cols : 0;
    timespec ts{};  // the tap stamps publications with the coarse monotonic clock
    ::clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    const std::uint64_t coarse = static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<std::uint64_t>(ts.tv_nsec);
    json j{{"unit", f.unit_id},
           {"channels", f.channels},
           {"frame_number", f.frame_number},
           {"timestamp_ns", f.timestamp_ns},
           {"missing_packets", f.missing_packets},
           {"dose_frames", f.dose_frames},
           {"dose_kind", f.dose_kind},
           {"age_ms", coarse > f.published_ns ? static_cast<double>(coarse - f.published_ns) / 1e6 : 0.0},
           {"grid", {{"rows", rows}, {"cols", cols}}},
           {"samples", f.samples},
           {"dose", f.dose}};
    if (!f.calibrated.empty()) j["calibrated"] = f.calibrated;
    return json_response(200, j);
}

response api::list_runs() {
    std::optional<std::string> active;
    if (_controls.current)
        if (auto r = _controls.current()) active = r->name;
    const auto runs = _controls.list ? _controls.list(active) : std::vector<run_entry>{};
    json out = json::array();
    for (const auto& r : runs) {
        json files = json::array();
        for (const auto& f : r.files) {
            json jf{{"file", f.file}, {"size_bytes", f.size_bytes}};
            if (f.read) jf["frames"] = f.frames;
            if (!f.error.empty()) jf["error"] = f.error;
            files.push_back(std::move(jf));
        }
        json jr{{"name", r.name},
                {"files", std::move(files)},
                {"size_bytes", r.size_bytes},
                {"active", r.active},
                {"complete", r.complete}};
        if (r.active) {
            // Live numbers from the writer's counters (the files are not read while written).
            if (auto cur = _controls.current(); cur && cur->name == r.name) {
                const auto fw = _view.telemetry().count("daq_storage_frames_written");
                jr["frames"] = fw - std::min(fw, cur->frames_before);
                jr["started_at"] = iso8601(cur->started);
            }
            jr["stopped_at"] = nullptr;
        } else {
            if (r.complete) jr["frames"] = r.frames;
            else jr["frames"] = nullptr;
            jr["started_at"] = r.started_at.empty() ? json(nullptr) : json(r.started_at);
            jr["stopped_at"] = r.stopped_at.empty() ? json(nullptr) : json(r.stopped_at);
        }
        out.push_back(std::move(jr));
    }
    return json_response(200, json{{"output_dir", _view.cfg->storage.output_dir.string()}, {"runs", std::move(out)}});
}

response api::start_run(const request& r) {
    if (!authorized(r)) {
        auto res = error(401, "this request needs 'Authorization: Bearer <token>' (see the token file named in daqd's log)");
        res.headers.emplace_back("WWW-Authenticate", "Bearer");
        return res;
    }
    const json body = json::parse(r.body, nullptr, false);
    if (body.is_discarded()) return error(400, "malformed JSON; expected {\"name\": \"<run name>\"}");
    if (!body.is_object() || !body.contains("name") || !body["name"].is_string())
        return error(400, "expected a JSON object {\"name\": \"<run name>\"}");
    const std::string name = body["name"].get<std::string>();
    std::string compression;
    if (body.contains("compression")) {
        const auto& c = body["compression"];
        if (!c.is_string() || (c.get<std::string>() != "none" && c.get<std::string>() != "bslz4"))
            return error(400, "\"compression\" must be \"none\" or \"bslz4\" (or left out: storage.compression)");
        compression = c.get<std::string>();
    }
    if (name.find('/') != std::string::npos || name.find('\\') != std::string::npos ||
        name.find("..") != std::string::npos)
        return error(400, fmt::format("run name '{}' must not contain path separators or '..'", name));
    if (_controls.check_name)
        if (auto why = _controls.check_name(name); !why.empty()) return error(400, why);
    if (_controls.current)
        if (auto cur = _controls.current(); cur && cur->error.empty())
            return error(409, fmt::format("run '{}' is active; stop it first (POST /api/v1/runs/stop)", cur->name));
    if (_controls.exists && _controls.exists(name))
        return error(409, fmt::format("run '{}' already exists in {}", name, _view.cfg->storage.output_dir.string()));
    try {
        _controls.start(name, compression);
    } catch (const std::exception& e) {
        spdlog::debug("web: starting run '{}' failed: {}", name, e.what());
        const std::string what = e.what();
        const bool conflict = what.find("already exists") != std::string::npos || what.find("is active") != std::string::npos;
        return error(conflict ? 409 : 500, what);
    }
    spdlog::info("web: run '{}' started by a POST /api/v1/runs", name);
    json files = json::array();
    if (_controls.files_of)
        for (const auto& p : _controls.files_of(name)) files.push_back(p.filename().string());
    std::string started = iso8601(std::chrono::system_clock::now());
    if (_controls.current)
        if (auto cur = _controls.current()) started = iso8601(cur->started);
    return json_response(201, json{{"run", name}, {"started", started}, {"files", std::move(files)}});
}

response api::stop_run(const request& r) {
    if (!authorized(r)) {
        auto res = error(401, "this request needs 'Authorization: Bearer <token>' (see the token file named in daqd's log)");
        res.headers.emplace_back("WWW-Authenticate", "Bearer");
        return res;
    }
    if (_controls.current && !_controls.current()) return error(409, "no run is active");
    std::optional<run_result> s;
    try {
        s = _controls.stop();
    } catch (const std::exception& e) {
        return error(500, e.what());
    }
    if (!s) return error(409, "no run is active");
    spdlog::info("web: run '{}' stopped by a POST /api/v1/runs/stop", s->run_name);
    json files = json::array();
    for (const auto& f : s->files) files.push_back(f.filename().string());
    return json_response(200, json{{"run", s->run_name},
                                   {"files", std::move(files)},
                                   {"frames_written", s->frames_written},
                                   {"bytes_written", s->bytes_written},
                                   {"frames_rejected", s->frames_rejected},
                                   {"failed", s->failed},
                                   {"error", s->error}});
}

}  // namespace daqd::web
