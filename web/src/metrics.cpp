// daqd's Prometheus metrics (metrics.hpp): the telemetry snapshot rendered
// when scraped, plus the web layer's own counters.
#include "daqd/web/metrics.hpp"

#include <prometheus/text_serializer.h>

#include <fmt/format.h>

#include <chrono>
#include <limits>
#include <sstream>

namespace daqd::web {

namespace {

namespace prom = prometheus;

prom::MetricFamily family(std::string name, std::string help, prom::MetricType type) {
    prom::MetricFamily f;
    f.name = std::move(name);
    f.help = std::move(help);
    f.type = type;
    return f;
}

prom::MetricType type_of(telemetry::kind k) {
    switch (k) {
        case telemetry::kind::counter: return prom::MetricType::Counter;
        case telemetry::kind::gauge: return prom::MetricType::Gauge;
        case telemetry::kind::histogram: return prom::MetricType::Histogram;
    }
    return prom::MetricType::Untyped;
}

}  // namespace

daq_collector::daq_collector(const daq_view& view) : _view(view) {}

std::vector<prom::MetricFamily> daq_collector::Collect() const {
    std::vector<prom::MetricFamily> out;
    if (!_view.telemetry) return out;
    const auto t = _view.telemetry();
    for (const auto& f : t.families()) {
        if (!f.desc->exported) continue;
        auto pf = family(std::string(f.desc->name), std::string(f.desc->help), type_of(f.desc->kind));
        for (const auto& s : f.samples) {
            if (!s.exported) continue;
            prom::ClientMetric m;
            for (const auto& [k, v] : s.labels) m.label.push_back({k, v});
            switch (f.desc->kind) {
                case telemetry::kind::counter: m.counter.value = s.value; break;
                case telemetry::kind::gauge: m.gauge.value = s.value; break;
                case telemetry::kind::histogram:
                    for (std::size_t b = 0; b < s.histogram.bounds.size(); ++b)
                        m.histogram.bucket.push_back({s.histogram.cumulative[b], s.histogram.bounds[b]});
                    m.histogram.bucket.push_back(
                        {s.histogram.cumulative.back(), std::numeric_limits<double>::infinity()});
                    m.histogram.sample_count = s.histogram.cumulative.back();
                    m.histogram.sample_sum = s.histogram.sum;
                    break;
            }
            pf.metric.push_back(std::move(m));
        }
        out.push_back(std::move(pf));
    }
    return out;
}

metrics::metrics(const daq_view& view, const std::vector<host_check>& host_checks)
    : _registry(std::make_shared<prom::Registry>()), _collector(std::make_shared<daq_collector>(view)) {
    auto& hc = prom::BuildGauge()
                   .Name("daq_host_check")
                   .Help("Host checks at start (daqd --check-host): 1 ok or undeterminable, 0 failing")
                   .Register(*_registry);
    for (const auto& c : host_checks) hc.Add({{"check", c.name}}).Set(c.status == check_status::failing ? 0 : 1);
    _requests = &prom::BuildCounter()
                     .Name("daq_http_requests_total")
                     .Help("HTTP requests answered, by status code")
                     .Register(*_registry);
    _accepted = &prom::BuildCounter()
                     .Name("daq_http_connections_accepted_total")
                     .Help("HTTP connections accepted")
                     .Register(*_registry)
                     .Add({});
    auto& dropped = prom::BuildCounter()
                        .Name("daq_http_connections_dropped_total")
                        .Help("HTTP connections the server closed before it was done with them, by reason: "
                              "header_timeout, body_timeout, idle_timeout, write_timeout, evicted (the limit was "
                              "reached: the oldest waiting connection made room), refused")
                        .Register(*_registry);
    for (std::size_t i = 0; i < connection_drop_count; ++i)
        _dropped[i] = &dropped.Add({{"reason", std::string(name(static_cast<connection_drop>(i)))}});
    _open = &prom::BuildGauge()
                 .Name("daq_http_connections_open")
                 .Help("HTTP connections open now")
                 .Register(*_registry)
                 .Add({});
    _limit = &prom::BuildGauge()
                  .Name("daq_http_connections_limit")
                  .Help("Most HTTP connections held open at once (beyond it the oldest waiting one is closed)")
                  .Register(*_registry)
                  .Add({});
    _host_rejected = &prom::BuildCounter()
                          .Name("daq_http_host_rejected_total")
                          .Help("HTTP requests answered 403 because their Host header is not an allowed name "
                                "(http.allowed_hosts)")
                          .Register(*_registry)
                          .Add({});
}

std::string_view name(connection_drop d) noexcept {
    switch (d) {
        case connection_drop::header_timeout: return "header_timeout";
        case connection_drop::body_timeout: return "body_timeout";
        case connection_drop::idle_timeout: return "idle_timeout";
        case connection_drop::write_timeout: return "write_timeout";
        case connection_drop::evicted: return "evicted";
        case connection_drop::refused: return "refused";
    }
    return "unknown";
}

std::string metrics::scrape() const {
    auto families = _collector->Collect();
    auto own = _registry->Collect();
    families.insert(families.end(), std::make_move_iterator(own.begin()), std::make_move_iterator(own.end()));
    std::ostringstream os;
    prom::TextSerializer().Serialize(os, families);
    return os.str();
}

void metrics::count_request(unsigned status) {
    auto it = _by_code.find(status);
    if (it == _by_code.end()) it = _by_code.emplace(status, &_requests->Add({{"code", std::to_string(status)}})).first;
    it->second->Increment();
}

}  // namespace daqd::web
