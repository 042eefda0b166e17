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

// A run's counts (or daqd's lifetime ones) as an object, with what they cover.
json counts_json(const common::run_counts& c, const char* scope) {
    json j = json::object();
    for (const auto& [k, v] : c.fields()) j[k] = v;
    j["scope"] = scope;
    return j;
}

// One run of the catalogue as the API shows it (the active one with its live counts).
json run_entry_json(const run_entry& r, const std::optional<run_info>& current, const daq_view& view) {
    json files = json::array();
    std::string source, compression, version;
    bool first = true;
    for (const auto& f : r.files) {
        json jf{{"file", f.file}, {"size_bytes", f.size_bytes}};
        if (f.read) {
            jf["frames"] = f.frames;
            jf["started_at"] = f.started_at.empty() ? json(nullptr) : json(f.started_at);
            jf["stopped_at"] = f.stopped_at.empty() ? json(nullptr) : json(f.stopped_at);
            jf["data_source"] = f.data_source.empty() ? json(nullptr) : json(f.data_source);
            // What the run holds over its files: one value, or "mixed".
            if (first) source = f.data_source, compression = f.compression, version = f.server_version;
            else if (f.data_source != source) source = "mixed";
            first = false;
        }
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
        if (current && current->name == r.name) {
            const auto t = view.telemetry();
            const auto fw = t.count("daq_storage_frames_written");
            jr["frames"] = fw - std::min(fw, current->frames_before);
            jr["started_at"] = iso8601(current->started);
            jr["kind"] = current->kind;
            jr["started_by"] = current->started_by;
            jr["name_generated"] = current->name_generated;
            jr["compression"] = current->compression;
            jr["counts"] = counts_json(common::run_counts::of(t).since(current->counts_before), "run");
        }
        jr["stopped_at"] = nullptr;
    } else {
        if (r.complete) jr["frames"] = r.frames;
        else jr["frames"] = nullptr;
        jr["started_at"] = r.started_at.empty() ? json(nullptr) : json(r.started_at);
        jr["stopped_at"] = r.stopped_at.empty() ? json(nullptr) : json(r.stopped_at);
        jr["kind"] = "data";
        jr["data_source"] = source.empty() ? json(nullptr) : json(source);
        jr["compression"] = compression.empty() ? "none" : compression;
        jr["server_version"] = version.empty() ? json(nullptr) : json(version);
    }
    return jr;
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

std::vector<std::string> api::host_names() const {
    std::lock_guard lock(_access_mutex);
    return _hosts.names();
}

bool api::host_allowed(std::string_view host_header) const {
    std::lock_guard lock(_access_mutex);
    return _hosts.allows(host_header);
}

void api::reload_access(std::string token, const config::http_config& http) {
    host_filter hosts(http);
    std::lock_guard lock(_access_mutex);
    _token = std::move(token);
    _hosts = std::move(hosts);
}

bool api::authorized(const request& r) const noexcept {
    std::lock_guard lock(_access_mutex);
    return !_token.empty() && token_equals(bearer_token(r.authorization), _token);
}

bool api::is_blocking(const request& r) const {
    const std::string_view path = std::string_view(r.target).substr(0, r.target.find_first_of("?#"));
    return path == "/api/v1/runs" || starts_with(path, "/api/v1/runs/");
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
    if (r.host && !host_allowed(*r.host)) return host_rejected(*r.host);
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
    if (path == "/api/v1/history") {
        if (!get) return method_not_allowed("GET, HEAD");
        return history_json();
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
    if (path == "/api/v1/runs/commit" || path == "/api/v1/runs/abort") {
        if (!post) return method_not_allowed("POST");
        return path == "/api/v1/runs/commit" ? commit_run(r) : abort_run(r);
    }
    if (constexpr std::string_view runs_prefix = "/api/v1/runs/"; starts_with(path, runs_prefix)) {
        const std::string name(path.substr(runs_prefix.size()));
        if (!get) return method_not_allowed("GET, HEAD");
        return run_json(name);
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
    c.bytes_written = t.count("daq_storage_bytes_written_total");
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
            _written_bps = c.bytes_written >= _prev.bytes_written
                               ? static_cast<double>(c.bytes_written - _prev.bytes_written) / dt
                               : 0.0;
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
    if (_prev.valid) {
        history_sample h;
        h.unix_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::system_clock::now().time_since_epoch())
                        .count();
        h.pps = _link_pps;
        h.bps = _link_bps;
        double fill = 0;
        for (const auto& ring : t.label_values("daq_ring_slots", "ring"))
            fill = std::max(fill, t.sum("daq_ring_fill", {{"ring", ring}}));
        h.ring_fill = fill;
        h.written_bps = _written_bps;
        _history.push_back(std::move(h));
        while (_history.size() > history_seconds) _history.pop_front();
    }
    _prev = std::move(c);
}

response api::history_json() const {
    json samples = json::array();
    for (const auto& h : _history) {
        json links = json::array();
        for (std::size_t l = 0; l < h.pps.size(); ++l)
            links.push_back({{"packets_per_s", h.pps[l]}, {"bytes_per_s", l < h.bps.size() ? h.bps[l] : 0.0}});
        samples.push_back({{"t_ms", h.unix_ms}, {"links", std::move(links)}, {"ring_fill", h.ring_fill},
                           {"written_bytes_per_s", h.written_bps}});
    }
    return json_response(200, json{{"interval_s", 1}, {"seconds", history_seconds}, {"samples", std::move(samples)}});
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
                   {"ring_dropped", ring_dropped},
                   {"scope", "lifetime"}};

    const std::uint64_t frames_written = t.count("daq_storage_frames_written");
    const std::uint64_t bytes_written = t.count("daq_storage_bytes_written_total");
    j["writer"] = {{"frames_written", frames_written},
                   {"bytes_written", bytes_written},
                   {"frames_unrecorded", t.count("daq_frames_unrecorded_total")},
                   {"frames_failed", t.count("daq_frames_unwritten_total")},
                   {"run_failures", t.count("daq_storage_run_failures_total")},
                   {"flushes", t.count("daq_storage_flushes")},
                   {"write_seconds", t.sum("daq_storage_write_seconds_total")},
                   {"scope", "lifetime"}};
    // Every count of daqd's life in one place, labelled so; the run's own are under "run".
    {
        json life = json::object();
        for (const auto& [k, v] : common::run_counts::of(t).fields()) life[k] = v;
        life["frames_unrecorded"] = t.count("daq_frames_unrecorded_total");
        life["runs"] = t.count("daq_runs_started_total");
        life["seconds"] = t.sum("daq_uptime_seconds");
        life["scope"] = "lifetime";
        j["lifetime"] = std::move(life);
    }
    // Where runs go, now: free space (statvfs at this request), what is
    // written per second, and what waits for the writer.
    {
        const std::uint64_t blocks = t.count("daq_frame_buffer_blocks"), free_blocks = t.count("daq_frame_buffer_blocks_free");
        json st{{"free_bytes", t.find("daq_storage_free_bytes") ? json(t.count("daq_storage_free_bytes")) : json(nullptr)},
                {"size_bytes", t.find("daq_storage_size_bytes") ? json(t.count("daq_storage_size_bytes")) : json(nullptr)},
                {"bytes_written_per_s", _written_bps},
                {"frame_buffer_blocks", blocks},
                {"frame_buffer_blocks_free", free_blocks},
                {"writer_backlog_blocks", blocks - std::min(blocks, free_blocks)},
                {"processing_backlog_peak", t.find("daq_processing_backlog_peak")
                                                ? json(t.count("daq_processing_backlog_peak")) : json(nullptr)}};
        j["storage"] = std::move(st);
    }
    const std::uint64_t cin = t.count("daq_compress_bytes_in_total"), cout = t.count("daq_compress_bytes_out_total");
    j["compression"] = {{"default", _view.cfg->storage.compression},
                        {"bytes_in", cin},
                        {"bytes_out", cout},
                        {"ratio", cout == 0 ? 0.0 : static_cast<double>(cin) / static_cast<double>(cout)},
                        {"seconds", t.sum("daq_compress_seconds_total")},
                        {"wait_seconds", t.sum("daq_compress_wait_seconds_total")},
                        {"queue_chunks", t.count("daq_compress_queue_chunks")},
                        {"queue_capacity_chunks", t.count("daq_compress_queue_capacity_chunks")}};
    if (_view.cfg->stream.enabled()) {
        // The live stream (docs/STREAM.md): endpoints as bound, consumers, frames sent and dropped.
        json push = json::array(), publish = json::array();
        if (const auto* f = t.find("daq_stream_endpoint_info"))
            for (const auto& s : f->samples) {
                std::string socket, endpoint;
                for (const auto& [k, v] : s.labels) (k == "socket" ? socket : endpoint) = v;
                (socket == "push" ? push : publish).push_back(endpoint);
            }
        j["stream"] = {{"push", std::move(push)},
                       {"publish", std::move(publish)},
                       {"curve", !_view.cfg->stream.curve_secret_key_file.empty()},
                       {"peers", t.count("daq_stream_peers", {{"socket", "push"}})},
                       {"subscribers", t.count("daq_stream_peers", {{"socket", "pub"}})},
                       {"frames_sent", t.count("daq_stream_frames_sent_total")},
                       {"bytes_sent", t.count("daq_stream_bytes_sent_total")},
                       {"chunks_sent", t.count("daq_stream_chunks_sent_total")},
                       {"chunks_dropped", t.count("daq_stream_chunks_dropped_total")},
                       {"frames_dropped",
                        {{"queue", t.count("daq_stream_frames_dropped_total", {{"reason", "queue"}})},
                         {"no_peer", t.count("daq_stream_frames_dropped_total", {{"reason", "no_peer"}})},
                         {"hwm", t.count("daq_stream_frames_dropped_total", {{"reason", "hwm"}})}}},
                       {"queue_chunks", t.count("daq_stream_queue_chunks")},
                       {"preview_frames", t.count("daq_stream_preview_frames_total")},
                       {"auth_refused", t.count("daq_stream_auth_refused_total")}};
    } else {
        j["stream"] = nullptr;
    }
    std::optional<run_info> run;
    if (_controls.current) run = _controls.current();
    if (run) {
        json files = json::array();
        if (!run->files.empty())
            for (const auto& f : run->files) files.push_back(f);
        else if (_controls.files_of && run->kind != "pedestal")
            for (const auto& p : _controls.files_of(run->name)) files.push_back(p.filename().string());
        j["run"] = {{"name", run->name},
                    {"started", iso8601(run->started)},
                    {"seconds", std::chrono::duration<double>(std::chrono::system_clock::now() - run->started).count()},
                    {"files", std::move(files)},
                    {"frames_written", frames_written - std::min(frames_written, run->frames_before)},
                    {"bytes_written", bytes_written - std::min(bytes_written, run->bytes_before)},
                    {"state", !run->error.empty() ? "failed" : run->state},
                    {"run", run->run.empty() ? run->name : run->run},
                    {"host", run->host.empty() ? json(nullptr) : json(run->host)},
                    {"meta", json::parse(run->metadata_json, nullptr, false).is_object()
                                 ? json::parse(run->metadata_json, nullptr, false)
                                 : json::object()},
                    {"compression", run->compression},
                    {"compression_ratio", [&] {
                         const std::uint64_t in = cin - std::min(cin, run->compress_in_before);
                         const std::uint64_t out = cout - std::min(cout, run->compress_out_before);
                         return out == 0 ? 0.0 : static_cast<double>(in) / static_cast<double>(out);
                     }()},
                    {"error", run->error},
                    {"kind", run->kind},
                    {"started_by", run->started_by},
                    {"name_generated", run->name_generated},
                    {"counts", counts_json(common::run_counts::of(t).since(run->counts_before), "run")}};
        if (run->kind == "pedestal")
            j["run"]["pedestal"] = {{"frames_per_unit", run->pedestal_frames},
                                    {"units_seen", run->pedestal_units_seen},
                                    {"units_complete", run->pedestal_units_complete}};
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
    std::optional<run_info> current;
    if (_controls.current) current = _controls.current();
    std::optional<std::string> active;
    if (current) active = current->name;
    const auto runs = _controls.list ? _controls.list(active) : std::vector<run_entry>{};
    json out = json::array();
    for (const auto& r : runs) out.push_back(run_entry_json(r, current, _view));
    return json_response(200, json{{"output_dir", _view.cfg->storage.output_dir.string()}, {"runs", std::move(out)}});
}

response api::run_json(const std::string& name) {
    if (_controls.check_name)
        if (auto why = _controls.check_name(name); !why.empty()) return error(404, fmt::format("no run '{}': {}", name, why));
    std::optional<run_info> current;
    if (_controls.current) current = _controls.current();
    std::optional<std::string> active;
    if (current) active = current->name;
    const auto runs = _controls.list ? _controls.list(active) : std::vector<run_entry>{};
    for (const auto& r : runs)
        if (r.name == name) return json_response(200, run_entry_json(r, current, _view));
    return error(404, fmt::format("no run '{}' in {}", name, _view.cfg->storage.output_dir.string()));
}

// 401 for a run-control request without the right token.
response api::unauthorized() {
    auto res = error(401, "this request needs 'Authorization: Bearer <token>' (see the token file named in daqd's log)");
    res.headers.emplace_back("WWW-Authenticate", "Bearer");
    return res;
}

response api::start_run(const request& r) {
    if (!authorized(r)) return unauthorized();
    // An empty body is {}: a run named by storage.run_name_pattern.
    const bool blank = r.body.find_first_not_of(" \t\r\n") == std::string::npos;
    const json body = blank ? json::object() : json::parse(r.body, nullptr, false);
    if (body.is_discarded()) return error(400, "malformed JSON; expected {\"name\": \"<run name>\"}");
    if (!body.is_object() || (body.contains("name") && !body["name"].is_string()))
        return error(400, "expected a JSON object {\"name\": \"<run name>\"} (name optional)");
    std::string kind = "data";
    if (body.contains("kind")) {
        if (!body["kind"].is_string() || (body["kind"] != "data" && body["kind"] != "pedestal"))
            return error(400, "\"kind\" must be \"data\" (a run file) or \"pedestal\" (a calibration file)");
        kind = body["kind"].get<std::string>();
    }
    std::uint64_t frames = 1000;
    if (body.contains("frames")) {
        if (kind != "pedestal") return error(400, "\"frames\" is for a pedestal run (\"kind\": \"pedestal\")");
        const auto& f = body["frames"];
        if (!f.is_number_integer() || f.get<std::int64_t>() < 2 || f.get<std::int64_t>() > 100'000'000)
            return error(400, "\"frames\" must be a whole number from 2 to 100000000 (complete frames per unit)");
        frames = f.get<std::uint64_t>();
    }
    std::string compression;
    if (body.contains("compression")) {
        const auto& c = body["compression"];
        if (kind == "pedestal") return error(400, "a pedestal run writes no run file: \"compression\" does not apply");
        if (!c.is_string() || (c.get<std::string>() != "none" && c.get<std::string>() != "bslz4"))
            return error(400, "\"compression\" must be \"none\" or \"bslz4\" (or left out: storage.compression)");
        compression = c.get<std::string>();
    }
    run_start req;
    if (body.contains("host")) {
        if (kind == "pedestal") return error(400, "a pedestal run writes a calibration file: \"host\" does not apply");
        if (!body["host"].is_string() || body["host"].get<std::string>().empty())
            return error(400, "\"host\" must be a host tag: letters, digits, '.', '_', '-'");
        req.host = body["host"].get<std::string>();
    }
    if (body.contains("meta")) {
        const auto& m = body["meta"];
        if (kind == "pedestal") return error(400, "\"meta\" is for a data run");
        if (!m.is_object()) return error(400, "\"meta\" must be a JSON object of strings, numbers and booleans");
        if (m.size() > 256) return error(400, "\"meta\" holds more than 256 keys");
        for (const auto& [k, v] : m.items()) {
            const bool key_ok = !k.empty() && k.size() <= 64 && k != "json" &&
                                std::all_of(k.begin(), k.end(), [](char c) {
                                    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                                           c == '_' || c == '.' || c == '-';
                                });
            if (!key_ok)
                return error(400, fmt::format("\"meta\" key '{}': 1 to 64 of A-Z a-z 0-9 _ . - (and not \"json\")",
                                              k.substr(0, 64)));
            if (v.is_string()) {
                if (v.get<std::string>().size() > 4096)
                    return error(400, fmt::format("\"meta\".{}: a string of at most 4096 bytes", k));
                req.meta.emplace_back(k, v.get<std::string>());
            } else if (v.is_boolean()) {
                req.meta.emplace_back(k, v.get<bool>());
            } else if (v.is_number_integer()) {
                if (v.is_number_unsigned() && v.get<std::uint64_t>() > static_cast<std::uint64_t>(INT64_MAX))
                    return error(400, fmt::format("\"meta\".{}: an integer beyond int64", k));
                req.meta.emplace_back(k, v.get<std::int64_t>());
            } else if (v.is_number_float()) {
                req.meta.emplace_back(k, v.get<double>());
            } else {
                return error(400, fmt::format("\"meta\".{}: a string, number or boolean (got {})", k, v.type_name()));
            }
        }
        req.meta_json = m.dump();
    }
    if (body.contains("prepare")) {
        if (!body["prepare"].is_boolean()) return error(400, "\"prepare\" must be true or false");
        if (kind == "pedestal" && body["prepare"].get<bool>()) return error(400, "a pedestal run is not prepared");
        req.prepare = body["prepare"].get<bool>();
    }
    if (body.contains("prepare_timeout_s")) {
        const auto& t = body["prepare_timeout_s"];
        if (!req.prepare) return error(400, "\"prepare_timeout_s\" goes with \"prepare\": true");
        if (!t.is_number_integer() || t.get<std::int64_t>() < 1 || t.get<std::int64_t>() > 3600)
            return error(400, "\"prepare_timeout_s\" must be a whole number of seconds from 1 to 3600");
        req.prepare_timeout_s = t.get<unsigned>();
    }
    std::string name = body.contains("name") ? body["name"].get<std::string>() : std::string();
    auto bad_name = [&](const std::string& n) -> std::string {
        if (n.find('/') != std::string::npos || n.find('\\') != std::string::npos || n.find("..") != std::string::npos)
            return fmt::format("run name '{}' must not contain path separators or '..'", n);
        if (_controls.check_name) return _controls.check_name(n);
        return {};
    };
    if (!name.empty())
        if (auto why = bad_name(name); !why.empty()) return error(400, why);
    if (_controls.current)
        if (auto cur = _controls.current(); cur && (cur->error.empty() || cur->kind == "pedestal"))
            return error(409, fmt::format("{}run '{}' is active; stop it first (POST /api/v1/runs/stop)",
                                          cur->kind == "pedestal" ? "pedestal " : "", cur->name));
    bool generated = false;
    if (name.empty()) {
        if (!_controls.next_name) return error(400, "expected a JSON object {\"name\": \"<run name>\"}");
        try {
            name = _controls.next_name();
        } catch (const std::exception& e) {
            return error(500, e.what());
        }
        generated = true;
    }
    if (kind == "pedestal" && !_controls.start_pedestal) return error(400, "pedestal runs are not available here");
    if (auto why = bad_name(name); !why.empty()) return error(400, why);
    const std::string stem = req.host.empty() ? name : name + "_" + req.host;
    if (!req.host.empty())
        if (auto why = bad_name(stem); !why.empty()) return error(400, "host tag: " + why);
    if (kind == "data" && _controls.exists && _controls.exists(stem))
        return error(409, fmt::format("run '{}' already exists in {}", stem, _view.cfg->storage.output_dir.string()));
    req.name = name;
    req.compression = compression;
    req.name_generated = generated;
    try {
        if (kind == "pedestal")
            _controls.start_pedestal(name, frames);
        else
            _controls.start(req);
    } catch (const std::exception& e) {
        spdlog::debug("web: starting run '{}' failed: {}", name, e.what());
        const std::string what = e.what();
        const bool conflict = what.find("already exists") != std::string::npos || what.find("is active") != std::string::npos;
        const bool no_space = what.find("storage.reserve_bytes") != std::string::npos;
        return error(conflict ? 409 : no_space ? 507 : req.prepare || !req.host.empty() ? 400 : 500, what);
    }
    spdlog::info("web: {}run '{}' {} by a POST /api/v1/runs", kind == "pedestal" ? "pedestal " : "", stem,
                 req.prepare ? "prepared" : "started");
    json files = json::array();
    if (kind == "pedestal")
        files.push_back(name + ".calib.h5");
    else if (_controls.files_of)
        for (const auto& p : _controls.files_of(stem)) files.push_back(p.filename().string());
    std::string started = iso8601(std::chrono::system_clock::now());
    if (_controls.current)
        if (auto cur = _controls.current()) started = iso8601(cur->started);
    json answer{{"run", name},       {"kind", kind},          {"started", started},
                {"files", std::move(files)}, {"name_generated", generated}};
    if (kind == "pedestal") answer["frames"] = frames;
    if (kind == "data") {
        answer["state"] = req.prepare ? "prepared" : "recording";
        answer["host"] = req.host.empty() ? json(nullptr) : json(req.host);
        answer["file_stem"] = stem;
        if (req.prepare) {
            answer.erase("started");
            answer["prepare_timeout_s"] = req.prepare_timeout_s;
        }
    }
    return json_response(201, answer);
}

namespace {
// {"name": RUN} of a commit or abort; "" when the body is not that.
std::string name_of(const std::string& body) {
    const json j = json::parse(body, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("name") || !j["name"].is_string()) return {};
    return j["name"].get<std::string>();
}
}  // namespace

response api::commit_run(const request& r) {
    if (!authorized(r)) return unauthorized();
    const std::string name = name_of(r.body);
    if (name.empty()) return error(400, "expected a JSON object {\"name\": \"<run name>\"} (the prepared run)");
    if (!_controls.commit) return error(400, "two-phase starts are not available here");
    try {
        _controls.commit(name);
    } catch (const std::exception& e) {
        return error(409, e.what());
    }
    const auto now = std::chrono::system_clock::now();
    std::optional<run_info> cur;
    if (_controls.current) cur = _controls.current();
    const auto started = cur ? cur->started : now;
    spdlog::info("web: run '{}' committed by a POST /api/v1/runs/commit", cur ? cur->name : name);
    return json_response(
        200, json{{"run", cur && !cur->run.empty() ? cur->run : name},
                  {"file_stem", cur ? cur->name : name},
                  {"state", "recording"},
                  {"started", iso8601(started)},
                  {"started_unix_ns",
                   std::chrono::duration_cast<std::chrono::nanoseconds>(started.time_since_epoch()).count()}});
}

response api::abort_run(const request& r) {
    if (!authorized(r)) return unauthorized();
    const std::string name = name_of(r.body);
    if (name.empty()) return error(400, "expected a JSON object {\"name\": \"<run name>\"} (the run to abort)");
    if (!_controls.abort) return error(400, "aborting runs is not available here");
    std::vector<std::string> removed;
    try {
        removed = _controls.abort(name);
    } catch (const std::exception& e) {
        return error(409, e.what());
    }
    spdlog::info("web: run '{}' aborted by a POST /api/v1/runs/abort ({} file(s) removed)", name, removed.size());
    return json_response(200, json{{"run", name}, {"state", "aborted"}, {"removed", removed}});
}

response api::stop_run(const request& r) {
    if (!authorized(r)) return unauthorized();
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
    return json_response(200, json{{"run", s->run.empty() ? s->run_name : s->run},
                                   {"file_stem", s->run_name},
                                   {"host", s->host.empty() ? json(nullptr) : json(s->host)},
                                   {"kind", s->kind},
                                   {"files", std::move(files)},
                                   {"started", iso8601(s->started)},
                                   {"stopped", iso8601(s->stopped)},
                                   {"seconds", std::chrono::duration<double>(s->stopped - s->started).count()},
                                   {"frames_written", s->frames_written},
                                   {"bytes_written", s->bytes_written},
                                   {"frames_rejected", s->frames_rejected},
                                   {"failed", s->failed},
                                   {"error", s->error},
                                   {"counts", counts_json(s->counts, "run")}});
}

}  // namespace daqd::web
