#pragma once
// Prometheus metrics of daqd, served as text at /metrics.
//
// daq_collector is a prometheus::Collectable whose Collect() renders the
// exported families of one telemetry snapshot (common/telemetry.hpp) taken at
// scrape time: the data path keeps its own per-thread counters and is never
// touched by metrics code. metrics owns the collector plus a
// prometheus::Registry for what the web layer itself counts (HTTP requests,
// connections, rejected Host names) and the host checks, and serialises both
// with prometheus::TextSerializer.
//
// Owner: web::api. Threads: the web server's io thread (scrapes, request and
// connection counting); count_host_rejected() also from its worker thread
// (prometheus counters are atomic).
// Every family, its labels and what is measured: web/README.md.
#include "daqd/common/host_check.hpp"
#include "daqd/web/sources.hpp"

#include <prometheus/collectable.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/metric_family.h>
#include <prometheus/registry.h>

#include <array>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace daqd::web {

using common::check_status;
using common::host_check;

class daq_collector : public prometheus::Collectable {
public:
    explicit daq_collector(const daq_view& view);
    std::vector<prometheus::MetricFamily> Collect() const override;

private:
    const daq_view& _view;
};

// Why the server closed a connection it had not finished with
// (daq_http_connections_dropped_total{reason}; web/README.md).
enum class connection_drop {
    header_timeout,  // the request header did not arrive in time (slow or silent client)
    body_timeout,    // the request body did not arrive in time
    idle_timeout,    // a kept-alive connection sent no new request in time
    write_timeout,   // the client did not take the answer in time
    evicted,         // the connection limit was reached: the oldest waiting one made room
    refused,         // the connection limit was reached and every connection was being answered
};
inline constexpr std::size_t connection_drop_count = 6;
std::string_view name(connection_drop d) noexcept;

class metrics {
public:
    metrics(const daq_view& view, const std::vector<host_check>& host_checks);
    // The whole exposition text (text format 0.0.4).
    std::string scrape() const;
    // Counts one HTTP response by status code (daq_http_requests_total{code}).
    void count_request(unsigned status);
    // Connections of the HTTP server (daq_http_connections_*).
    void count_connection_accepted() { _accepted->Increment(); }
    void count_connection_dropped(connection_drop why) { _dropped[static_cast<std::size_t>(why)]->Increment(); }
    void set_connections(std::size_t open, std::size_t limit) {
        _open->Set(static_cast<double>(open));
        _limit->Set(static_cast<double>(limit));
    }
    // A request answered 403 for its Host header (daq_http_host_rejected_total).
    void count_host_rejected() { _host_rejected->Increment(); }

private:
    std::shared_ptr<prometheus::Registry> _registry;
    std::shared_ptr<daq_collector> _collector;
    prometheus::Family<prometheus::Counter>* _requests = nullptr;
    std::map<unsigned, prometheus::Counter*> _by_code;
    prometheus::Counter* _accepted = nullptr;
    std::array<prometheus::Counter*, connection_drop_count> _dropped{};
    prometheus::Gauge* _open = nullptr;
    prometheus::Gauge* _limit = nullptr;
    prometheus::Counter* _host_rejected = nullptr;
};

}  // namespace daqd::web
