// daqd's Prometheus metrics (metrics.hpp). Every data-path family is built
// from the live counters when scraped.
#include "daqd/web/metrics.hpp"

#include "daqd/acquisition/daq1.hpp"

#include <prometheus/text_serializer.h>

#include <fmt/format.h>

#include <chrono>
#include <limits>
#include <sstream>

namespace daqd::web {

namespace {

namespace prom = prometheus;
namespace daq1 = acquisition::daq1;
using labels = std::vector<prom::ClientMetric::Label>;

prom::MetricFamily family(std::string name, std::string help, prom::MetricType type) {
    prom::MetricFamily f;
    f.name = std::move(name);
    f.help = std::move(help);
    f.type = type;
    return f;
}

void add(prom::MetricFamily& f, labels l, double v) {
    prom::ClientMetric m;
    m.label = std::move(l);
    if (f.type == prom::MetricType::Counter)
        m.counter.value = v;
    else
        m.gauge.value = v;
    f.metric.push_back(std::move(m));
}

// A histogram from non-cumulative bucket counts (the last one above every bound).
template <typename Buckets>
void add_histogram(prom::MetricFamily& f, labels l, const std::array<double, 12>& bounds, const Buckets& buckets,
                   double sum) {
    prom::ClientMetric m;
    m.label = std::move(l);
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i < bounds.size(); ++i) {
        cumulative += buckets[i].load(std::memory_order_relaxed);
        m.histogram.bucket.push_back({cumulative, bounds[i]});
    }
    cumulative += buckets[bounds.size()].load(std::memory_order_relaxed);
    m.histogram.bucket.push_back({cumulative, std::numeric_limits<double>::infinity()});
    m.histogram.sample_count = cumulative;  // consistent with the buckets read
    m.histogram.sample_sum = sum;
    f.metric.push_back(std::move(m));
}

std::string str(std::uint64_t v) { return std::to_string(v); }

}  // namespace

daq_collector::daq_collector(const daq_view& view, run_controls controls)
    : _view(view), _controls(std::move(controls)) {}

std::vector<prom::MetricFamily> daq_collector::Collect() const {
    using prom::MetricType;
    std::vector<prom::MetricFamily> out;
    const auto& rx = *_view.receiver;
    const auto& as = *_view.assembler;
    const auto& wc = _view.writer->counters();
    const std::size_t links = rx.link_count();
    constexpr std::size_t max_links = processing::unit_counters::max_links;
    auto link_label = [&](std::size_t l) {
        return l + 1 == max_links && links > max_links ? fmt::format("{}+", l) : std::to_string(l);
    };

    // ---- links (receiver thread's counters) ----
    auto info = family("daq_link_info", "Listen endpoint of each link (value 1)", MetricType::Gauge);
    auto datagrams = family("daq_datagrams_received_total",
                            "Valid DAQ1 datagrams taken into the packet ring, by link", MetricType::Counter);
    auto bytes = family("daq_bytes_received_total", "UDP payload bytes received (valid or not), by link",
                        MetricType::Counter);
    auto kernel = family("daq_socket_drops_total",
                         "Datagrams the kernel dropped because the socket buffer was full (SO_RXQ_OVFL), by link",
                         MetricType::Counter);
    auto ring_dropped = family("daq_ring_dropped_total", "Datagrams dropped because the packet ring was full, by link",
                               MetricType::Counter);
    auto fill = family("daq_ring_fill_ratio",
                       "Fill of the packet ring the link feeds, 0..1 (links share one ring today)", MetricType::Gauge);
    std::array<std::uint64_t, daq1::drop_reason_count> invalid{};
    for (std::size_t l = 0; l < links; ++l) {
        const auto& c = rx.counters(l);
        const labels ll{{"link", std::to_string(l)}};
        add(info, {{"link", std::to_string(l)}, {"endpoint", rx.links()[l].endpoint.to_string()}}, 1);
        add(datagrams, ll, static_cast<double>(c.datagrams.get()));
        add(bytes, ll, static_cast<double>(c.bytes.get()));
        add(kernel, ll, static_cast<double>(c.kernel_drops.get()));
        add(ring_dropped, ll, static_cast<double>(c.ring_dropped.get()));
        if (const auto* ring = _view.ring_of_link(l)) add(fill, ll, ring->fill_ratio());
        for (std::size_t r = 1; r < daq1::drop_reason_count; ++r) invalid[r] += c.invalid[r].get();
    }
    for (std::size_t r = 1; r < daq1::drop_reason_count; ++r) invalid[r] += as.counters().invalid[r].get();
    auto inv = family("daq_packets_invalid_total", "Datagrams dropped as invalid, by reason (docs/PROTOCOL.md)",
                      MetricType::Counter);
    for (std::size_t r = 1; r < daq1::drop_reason_count; ++r)
        add(inv, {{"reason", std::string(daq1::name(static_cast<daq1::drop_reason>(r)))}},
            static_cast<double>(invalid[r]));

    // ---- units (assembler thread's counters, live tap for frames written) ----
    auto packets = family("daq_packets_received_total",
                          "Valid packets that reached frame assembly, by link and unit (duplicates included)",
                          MetricType::Counter);
    auto lost = family("daq_packets_lost_total", "Packets lost (packet_seq gaps), by unit", MetricType::Counter);
    auto dup = family("daq_packets_duplicate_total", "Duplicate packets, by unit", MetricType::Counter);
    auto late = family("daq_packets_late_total", "Packets of frames already closed, by unit", MetricType::Counter);
    auto frames = family("daq_frames_total",
                         "Frames by unit and state: complete, incomplete (stored with missing packets), lost "
                         "(frame_number gaps), overflow (no frame buffer free)",
                         MetricType::Counter);
    auto written = family("daq_frames_written_total", "Frames appended to a run file, by unit", MetricType::Counter);
    auto restarts = family("daq_unit_stream_restarts_total",
                           "New streams of a unit not announced by END_OF_STREAM: its frame numbers restarted or "
                           "jumped (docs/PROTOCOL.md \"Streams\")",
                           MetricType::Counter);
    const std::uint32_t units = as.unit_count();
    for (std::uint32_t i = 0; i < units; ++i) {
        const auto& u = as.unit_at(i);
        // A learned unit whose slot was given up (silent for units.learned_idle_s)
        // has no series until it comes back: the series stay bounded by
        // units.max_learned + the listed units.
        if (u.retired.get() != 0) continue;
        const std::string id = str(u.unit_id);
        add(restarts, {{"unit", id}}, static_cast<double>(u.stream_restarts.get()));
        for (std::size_t l = 0; l < std::min(links, max_links); ++l)
            add(packets, {{"link", link_label(l)}, {"unit", id}}, static_cast<double>(u.packets_by_link[l].get()));
        add(lost, {{"unit", id}}, static_cast<double>(u.packets_lost.get()));
        add(dup, {{"unit", id}}, static_cast<double>(u.duplicates.get()));
        add(late, {{"unit", id}}, static_cast<double>(u.late.get()));
        add(frames, {{"unit", id}, {"state", "complete"}}, static_cast<double>(u.frames_complete.get()));
        add(frames, {{"unit", id}, {"state", "incomplete"}}, static_cast<double>(u.frames_incomplete.get()));
        add(frames, {{"unit", id}, {"state", "lost"}}, static_cast<double>(u.frames_lost.get()));
        add(frames, {{"unit", id}, {"state", "overflow"}}, static_cast<double>(u.frames_overflow.get()));
        add(written, {{"unit", id}},
            static_cast<double>(_view.tap ? _view.tap->frames_written(u.unit_id) : 0));
    }

    // ---- storage (writer thread's counters) ----
    auto unrecorded = family("daq_frames_unrecorded_total", "Frames that arrived while no run was active",
                             MetricType::Counter);
    add(unrecorded, {}, static_cast<double>(wc.frames_unrecorded.load(std::memory_order_relaxed)));
    auto sbytes = family("daq_storage_bytes_written_total",
                         "Row payload bytes appended to run files (2 x channels + 18 per frame)", MetricType::Counter);
    add(sbytes, {}, static_cast<double>(wc.bytes_written.load(std::memory_order_relaxed)));
    const double flush_sum = static_cast<double>(wc.flush_ns_total.load(std::memory_order_relaxed)) / 1e9;
    auto flush = family("daq_storage_flush_seconds",
                        "Duration of one flush of the active run (partial chunks written, H5Fflush)",
                        MetricType::Histogram);
    add_histogram(flush, {}, storage::writer_counters::flush_bucket_bounds_s, wc.flush_buckets, flush_sum);
    auto stage = family("daq_stage_seconds",
                        "Duration of a processing stage by stage and backend. Measured today: stage=write, "
                        "backend=hdf5 = one flush of the run file (as daq_storage_flush_seconds)",
                        MetricType::Histogram);
    add_histogram(stage, {{"stage", "write"}, {"backend", "hdf5"}}, storage::writer_counters::flush_bucket_bounds_s,
                  wc.flush_buckets, flush_sum);
    auto latency = family("daq_frame_latency_seconds",
                          "Frames written, by the time from their assembly to their append to the run file "
                          "(queues, processing stages, writer backlog; not the flush)",
                          MetricType::Histogram);
    add_histogram(latency, {}, storage::writer_counters::latency_bucket_bounds_s, wc.latency_buckets,
                  static_cast<double>(wc.latency_ns_total.load(std::memory_order_relaxed)) / 1e9);
    auto free_b = family("daq_storage_free_bytes", "Free bytes (for unprivileged users) where runs are written",
                         MetricType::Gauge);
    auto size_b = family("daq_storage_size_bytes", "Size of the file system where runs are written", MetricType::Gauge);
    std::uint64_t free = 0, total = 0;
    if (free_bytes(_view.cfg->storage.output_dir, free, total)) {
        add(free_b, {}, static_cast<double>(free));
        add(size_b, {}, static_cast<double>(total));
    }

    // ---- run and process ----
    auto run = family("daq_run_active", "1 while run `run` is being recorded (run=\"\" 0: none)", MetricType::Gauge);
    std::optional<run_info> current;
    if (_controls.current) current = _controls.current();
    add(run, {{"run", current ? current->name : std::string()}}, current ? 1 : 0);
    auto run_failed = family("daq_run_failed", "1 while run `run` has failed (disk full, write error) and no longer writes",
                             MetricType::Gauge);
    add(run_failed, {{"run", current ? current->name : std::string()}}, current && !current->error.empty() ? 1 : 0);
    auto failures = family("daq_storage_run_failures_total", "Runs that failed while writing (disk full, write error)",
                           MetricType::Counter);
    add(failures, {}, static_cast<double>(wc.run_failures.load(std::memory_order_relaxed)));
    auto frames_failed = family("daq_frames_unwritten_total",
                                "Frames not written because the run had failed (disk full, write error)",
                                MetricType::Counter);
    add(frames_failed, {}, static_cast<double>(wc.frames_failed.load(std::memory_order_relaxed)));
    auto uptime = family("daq_uptime_seconds", "Seconds since daqd started", MetricType::Gauge);
    add(uptime, {},
        std::chrono::duration<double>(std::chrono::steady_clock::now() - _view.started).count());

    for (auto* f : {&info, &datagrams, &bytes, &kernel, &ring_dropped, &fill, &inv, &packets, &lost, &dup, &late,
                    &frames, &written, &restarts, &unrecorded, &sbytes, &flush, &stage, &latency, &free_b, &size_b, &run, &run_failed, &failures, &frames_failed, &uptime})
        out.push_back(std::move(*f));

    // ---- processing thread (only with processing stages) ----
    if (const auto* p = _view.processor) {
        const auto& pc = p->counters();
        auto pf = family("daq_processing_frames_total", "Frames through the processing stages", MetricType::Counter);
        add(pf, {{"backend", std::string(p->backend_name())}}, static_cast<double>(pc.frames.get()));
        auto pb = family("daq_processing_busy_seconds_total", "Time the processing thread spent in its stages",
                         MetricType::Counter);
        add(pb, {{"backend", std::string(p->backend_name())}}, static_cast<double>(pc.busy_ns.get()) / 1e9);
        auto bl = family("daq_processing_backlog_peak", "Most frames found waiting for the processing thread at once",
                         MetricType::Gauge);
        add(bl, {}, static_cast<double>(pc.backlog_peak.get()));
        out.push_back(std::move(pf));
        out.push_back(std::move(pb));
        out.push_back(std::move(bl));
    }
    return out;
}

metrics::metrics(const daq_view& view, run_controls controls, const std::vector<host_check>& host_checks)
    : _registry(std::make_shared<prom::Registry>()),
      _collector(std::make_shared<daq_collector>(view, std::move(controls))) {
    prom::BuildGauge()
        .Name("daq_build_info")
        .Help("daqd version and backends (value 1)")
        .Register(*_registry)
        .Add({{"version", view.version},
              {"receiver_backend", view.receiver ? view.receiver->backend_name() : "none"},
              {"processing_backend", view.processing_backend}})
        .Set(1);
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
