#pragma once
// The HTTP API of daqd, independent of sockets: a request goes in, a response
// comes out. Routes (web/README.md):
//   GET  /                          the status page (and /app.js, /style.css)
//   GET  /metrics                   Prometheus text format
//   GET  /api/v1/status             links, units, ring, run, backends, uptime
//   GET  /api/v1/runs               runs on disk                     (blocking)
//   POST /api/v1/runs {"name": …}   start a run            (token)   (blocking)
//   POST /api/v1/runs/stop          stop the active run    (token)   (blocking)
//   GET  /api/v1/runs/<name>        one run's metadata                (blocking)
//   GET  /api/v1/units/<id>/live    latest frame and dose of a unit
//   GET  /api/v1/history            the last history_seconds of link rates and ring fill
// HEAD is answered as GET (the server leaves the body out). A request whose
// Host header names no allowed host (host_filter.hpp) is answered 403.
// Errors are a 4xx/5xx with {"error": "…"}; nothing a request does can stop
// the acquisition.
//
// Owner: web::service. Threads: requests marked blocking (they wait for the
// writer thread) are handled on the server's worker thread, all others and
// sample() on the server's io thread; the two sets share no state except
// through the run controls (thread-safe) and the status fields noted below.
// Tests call handle() directly.
#include "daqd/common/host_check.hpp"
#include "daqd/web/host_filter.hpp"
#include "daqd/web/metrics.hpp"
#include "daqd/web/sources.hpp"

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <string_view>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace daqd::web {

struct request {
    std::string method;         // "GET", "POST", …
    std::string target;         // "/api/v1/status?x=1"
    std::string authorization;  // the Authorization header, or ""
    std::string body;
    // The Host header; nullopt: none (the server answers 400 to an HTTP/1.1
    // request without one, so only HTTP/1.0 requests get here without it).
    std::optional<std::string> host;
};

struct response {
    unsigned status = 200;
    std::string content_type = "application/json";
    std::string body;
    std::vector<std::pair<std::string, std::string>> headers;  // extra headers
};

using common::check_status;
using common::host_check;

class api {
public:
    static constexpr std::size_t max_body_bytes = 64 * 1024;
    // Units with more channels have no live view (processing/live_view.hpp).
    static constexpr std::uint32_t max_live_channels = 1u << 18;
    // How much of the rate history the page's charts show, kept by daqd (one
    // sample a second): a reload or a second browser sees the same charts.
    static constexpr std::size_t history_seconds = 300;

    api(daq_view view, run_controls controls, std::string token, std::vector<host_check> host_checks);

    response handle(const request& r);
    // True for requests that wait for the writer thread (run start/stop/list).
    [[nodiscard]] bool is_blocking(const request& r) const;
    // io thread, about once a second: takes the counters for the rates.
    void sample(std::chrono::steady_clock::time_point now);
    // io thread: counts one response (daq_http_requests_total{code}).
    void count(unsigned status) { _metrics.count_request(status); }
    // io thread: the server's connection counters (daq_http_connections_*).
    [[nodiscard]] metrics& http_metrics() noexcept { return _metrics; }
    // The host names answered (the start-up log), and whether a Host header's is.
    [[nodiscard]] std::vector<std::string> host_names() const;
    [[nodiscard]] bool host_allowed(std::string_view host_header) const;
    // Any thread (main, on SIGHUP): the bearer token and the Host names
    // answered from the next request on (http.token/token_file,
    // http.allowed_hosts).
    void reload_access(std::string token, const config::http_config& http);

    static response error(unsigned status, const std::string& message);
    static response unauthorized();

private:
    response status_json() const;
    response live_json(std::uint16_t unit) const;
    response list_runs();
    response run_json(const std::string& name);  // GET /api/v1/runs/<name>
    response start_run(const request& r);
    response stop_run(const request& r);
    response commit_run(const request& r);
    response abort_run(const request& r);
    [[nodiscard]] bool authorized(const request& r) const noexcept;
    response route(const request& r);
    response host_rejected(const std::string& host);

    daq_view _view;
    run_controls _controls;
    mutable std::mutex _access_mutex;  // guards _token and _hosts (reloaded on SIGHUP)
    std::string _token;
    std::vector<host_check> _host_checks;
    host_filter _hosts;
    std::atomic<bool> _host_rejection_logged{false};  // the first one is logged at warn level
    metrics _metrics;

    // Rates from the last two samples (io thread).
    struct counts {
        std::vector<std::uint64_t> link_packets, link_bytes;
        std::map<std::uint16_t, std::array<std::uint64_t, 3>> unit;  // packets, frames, bytes
        std::uint64_t bytes_written = 0;
        std::chrono::steady_clock::time_point at{};
        bool valid = false;
    };
    counts _prev;
    std::vector<double> _link_pps, _link_bps;
    std::map<std::uint16_t, std::array<double, 3>> _unit_rates;  // packets/s, frames/s, bytes/s
    // One sample a second of the link rates and ring fill (io thread only:
    // sample() adds, GET /api/v1/history reads), at most history_seconds.
    struct history_sample {
        std::int64_t unix_ms = 0;
        std::vector<double> pps, bps;
        double ring_fill = 0;
        double written_bps = 0;
    };
    std::deque<history_sample> _history;
    response history_json() const;
    double _written_bps = 0;  // bytes written to run files per second
};

}  // namespace daqd::web
