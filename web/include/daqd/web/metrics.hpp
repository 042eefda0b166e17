#pragma once
// Prometheus metrics of daqd, served as text at /metrics.
//
// daq_collector is a prometheus::Collectable whose Collect() builds every
// data-path metric family from the live counters at scrape time: the data
// path keeps its own per-thread counters (relaxed atomics) and is never
// touched by metrics code, no lock, no copy. metrics owns the collector plus
// a prometheus::Registry for what the web layer itself counts (HTTP requests)
// and static facts (build info, host checks), and serialises both with
// prometheus::TextSerializer.
//
// Owner: web::api. Threads: the web server's thread (scrapes and request
// counting); Collect() itself only reads atomics and may run on any thread.
// Every family, its labels and what is measured: web/README.md.
#include "daqd/web/host_check.hpp"
#include "daqd/web/sources.hpp"

#include <prometheus/collectable.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/metric_family.h>
#include <prometheus/registry.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace daqd::web {

class daq_collector : public prometheus::Collectable {
public:
    daq_collector(const daq_view& view, run_controls controls);
    std::vector<prometheus::MetricFamily> Collect() const override;

private:
    const daq_view& _view;
    run_controls _controls;
};

class metrics {
public:
    metrics(const daq_view& view, run_controls controls, const std::vector<host_check>& host_checks);
    // The whole exposition text (text format 0.0.4).
    std::string scrape() const;
    // Counts one HTTP response by status code (daq_http_requests_total{code}).
    void count_request(unsigned status);

private:
    std::shared_ptr<prometheus::Registry> _registry;
    std::shared_ptr<daq_collector> _collector;
    prometheus::Family<prometheus::Counter>* _requests = nullptr;
    std::map<unsigned, prometheus::Counter*> _by_code;
};

}  // namespace daqd::web
