#include "pipeline.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "daqd/acquisition/host_check.hpp"
#include "daqd/storage/calibration_file.hpp"

#include <filesystem>
#include <stdexcept>

#ifndef DAQD_VERSION
#define DAQD_VERSION "0.0.0"
#endif

namespace daqd {

std::string check_run_name(const std::string& name) {
    if (name.empty()) return "run name is empty";
    if (name.size() > 100) return "run name is longer than 100 characters";
    if (name.front() == '.') return "run name must not start with '.'";
    for (char c : name) {
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                        c == '_' || c == '-';
        if (!ok) return fmt::format("run name '{}' may only hold letters, digits, '.', '_' and '-'", name);
    }
    return {};
}

pipeline::pipeline(const config::config& cfg, std::uint64_t pedestal_frames) : _cfg(cfg) {
    // Ring slots hold a datagram plus room for io_uring's recvmsg header and control data.
    const std::uint64_t slot_data = cfg.acquisition.max_datagram_bytes + 128;
    acquisition::remove_stale_rings(cfg.acquisition.ring_name);  // left by a daqd killed with -9
    _ring = std::make_unique<acquisition::packet_ring>(acquisition::ring_shm_name(cfg.acquisition.ring_name, 0),
                                                       cfg.acquisition.ring_slots, slot_data);
    // Processing: a pedestal run replaces the configured stages.
    const bool processing = pedestal_frames > 0 || !cfg.processing.stages.empty();
    const bool calibrating = pedestal_frames == 0 && cfg.processing.has("calibrate");
    if (calibrating && !cfg.processing.calibration_file.empty()) {
        // Before the writer exists: HDF5 is used by this thread only here.
        _calibration = std::make_shared<const processing::calibration_set>(
            storage::read_calibration_file(cfg.processing.calibration_file));
        spdlog::info("calibration constants of {} unit(s) from {}", _calibration->units.size(), _calibration->file);
    }
    if (!calibrating && pedestal_frames == 0 && !cfg.processing.calibration_file.empty())
        spdlog::warn("processing.calibration_file = {} is not used: processing.stages has no \"calibrate\"",
                     cfg.processing.calibration_file.string());
    try {
        _pool = std::make_unique<processing::frame_pool>(cfg.assembly.pool_frames, cfg.assembly.max_frame_bytes,
                                                         calibrating);
    } catch (const std::exception& e) {
        throw std::runtime_error(fmt::format("cannot reserve the frame pool of assembly.pool_frames ({}) x "
                                             "assembly.max_frame_bytes ({}) bytes: {}; lower one of them",
                                             cfg.assembly.pool_frames, cfg.assembly.max_frame_bytes, e.what()));
    }
    const std::size_t queue = cfg.storage.queue_frames ? std::max<std::size_t>(cfg.storage.queue_frames, cfg.assembly.pool_frames)
                                                       : cfg.assembly.pool_frames;
    // The stages, upstream first. Each frame stage reads the hop its upstream
    // writes; the processor, when there is one, adds a hop of its own.
    auto next_hop = [&]() -> frame_hop& { return *_hops.emplace_back(std::make_unique<frame_hop>(queue)); };
    _receiver = std::make_unique<acquisition::receiver>(cfg.acquisition, *_ring, _ring_ready);
    _stages.push_back(&_receiver->worker());
    frame_hop* hop = &next_hop();
    _assembler = std::make_unique<processing::assembler>(cfg, std::vector<acquisition::packet_ring*>{_ring.get()},
                                                         _ring_ready, *_pool, hop->queue, hop->ready);
    _stages.push_back(&_assembler->worker());
    if (processing) {
        processing::processor_options po;
        po.stages = cfg.processing.stages;
        po.backend = cfg.processing.backend;
        po.calibration = _calibration;
        po.threshold = {cfg.processing.threshold_mode == "absolute" ? processing::threshold_mode::absolute
                                                                    : processing::threshold_mode::noise,
                        static_cast<float>(cfg.processing.threshold)};
        po.batch_frames = cfg.processing.batch_frames;
        po.pedestal_frames = pedestal_frames;
        if (pedestal_frames == 0 && cfg.processing.has("live"))
            _live = std::make_unique<processing::live_view>(cfg.processing.live_interval);
        frame_hop& in = *hop;
        hop = &next_hop();
        _processor = std::make_unique<processing::processor>(po, *_pool, in.queue, in.ready, hop->queue, hop->ready,
                                                             _live.get());
        _stages.push_back(&_processor->worker());
    }
    _tap = std::make_unique<processing::live_tap>();
    if (_live) _tap->attach(_live.get());  // the live endpoint reads the processing thread's live view
    _writer = std::make_unique<storage::writer>(hop->queue, *_pool, hop->ready);
    _writer->set_observer(_tap.get());
    _stages.push_back(&_writer->worker());
}

pipeline::~pipeline() {
    try {
        stop();
    } catch (const std::exception& e) {
        spdlog::error("stopping the pipeline: {}", e.what());
    }
}

// Downstream first: every stage is ready before anything reaches it.
void pipeline::start(drive how) {
    _started_ns = common::monotonic_ns();
    for (auto it = _stages.rbegin(); it != _stages.rend(); ++it) {
        if (how == drive::threads)
            (*it)->start();
        else
            (*it)->start_pumped();
    }
    _running = true;
}

bool pipeline::pump() {
    bool worked = false;
    for (auto* s : _stages) worked |= s->pump();
    return worked;
}

void pipeline::stop() {
    if (!_running) return;
    _running = false;
    // Upstream first: a stage stops once everything upstream of it has
    // stopped, drains its input, and (the writer) closes the active run with
    // every frame in it.
    for (auto* s : _stages) s->stop();
    if (auto closed = _writer->run_closed_by_stop()) _last_run = std::move(closed);
    {
        std::lock_guard lock(_active_mutex);
        _active.reset();
    }
}

void pipeline::start_run(const std::string& name) {
    if (auto err = check_run_name(name); !err.empty()) throw std::runtime_error(err);
    std::error_code ec;
    std::filesystem::create_directories(_cfg.storage.output_dir, ec);
    if (ec)
        throw std::runtime_error(fmt::format("cannot create output directory {}: {}",
                                             _cfg.storage.output_dir.string(), ec.message()));
    storage::run_options o;
    o.output_dir = _cfg.storage.output_dir;
    o.run_name = name;
    o.rotate_bytes = _cfg.storage.rotate_bytes;
    o.chunk_bytes = _cfg.storage.chunk_bytes;
    o.flush_interval = _cfg.storage.flush_interval;
    o.reserve_bytes = _cfg.storage.reserve_bytes;
    o.writeback.mode =
        _cfg.storage.writeback == "kernel" ? storage::writeback_mode::kernel : storage::writeback_mode::paced;
    o.config_text = _cfg.text;
    o.server_version = DAQD_VERSION;
    if (_processor != nullptr && _processor->calibrates()) {
        o.processing.calibrated = true;
        o.processing.dose = _cfg.processing.has("dose");
        o.processing.calibration = _calibration;
        o.processing.threshold = {_cfg.processing.threshold_mode == "absolute" ? processing::threshold_mode::absolute
                                                                               : processing::threshold_mode::noise,
                                  static_cast<float>(_cfg.processing.threshold)};
    }
    // A run that failed (disk full, …) no longer writes: a new run replaces it.
    if (_writer->run_active() && !_writer->run_error().empty()) {
        if (auto failed = _writer->stop_run()) _last_run = std::move(failed);
        std::lock_guard lock(_active_mutex);
        _active.reset();
    }
    if (_processor != nullptr) _processor->request_dose_reset();  // the live view's running dose: of this run
    const auto& wc = _writer->counters();
    active_run a{name, std::chrono::system_clock::now(), wc.frames_written.get(), wc.bytes_written.get()};
    _writer->start_run(o);
    {
        std::lock_guard lock(_active_mutex);
        _active = std::move(a);
    }
    _run_started_ns = common::monotonic_ns();
    spdlog::info("run {} started in {}", name, _cfg.storage.output_dir.string());
}

std::optional<storage::run_stats> pipeline::stop_run() {
    auto stats = _writer->stop_run();
    if (stats) _last_run = stats;
    {
        std::lock_guard lock(_active_mutex);
        _active.reset();
    }
    return stats;
}

std::optional<pipeline::active_run> pipeline::current_run() const {
    std::optional<active_run> a;
    {
        std::lock_guard lock(_active_mutex);
        a = _active;
    }
    if (a) a->error = _writer->run_error();
    return a;
}

std::string pipeline::processing_backend() const {
    if (_processor == nullptr || !_processor->calibrates()) return "none";
    return std::string(_processor->backend_name());
}

processing::calibration_set pipeline::pedestal_result() const {
    if (_processor == nullptr || _processor->pedestal() == nullptr) return {};
    return _processor->pedestal()->result();
}

// ---- telemetry ----

namespace {

using telemetry::kind;

const telemetry::descriptor build_info{"daq_build_info", "daqd version and backends (value 1)", kind::gauge,
                                       "processing_backend,receiver_backend,version"};
const telemetry::descriptor ring_fill_by_link{
    "daq_ring_fill_ratio", "Fill of the packet ring the link feeds, 0..1 (links share one ring today)", kind::gauge,
    "link"};
const telemetry::descriptor ring_slots{"daq_ring_slots", "Slots of each packet ring", kind::gauge, "ring"};
const telemetry::descriptor ring_fill{"daq_ring_fill", "Fill of each packet ring, 0..1", kind::gauge, "ring", false};
const telemetry::descriptor storage_free{"daq_storage_free_bytes",
                                         "Free bytes (for unprivileged users) where runs are written", kind::gauge};
const telemetry::descriptor storage_size{"daq_storage_size_bytes", "Size of the file system where runs are written",
                                         kind::gauge};
const telemetry::descriptor run_active{"daq_run_active", "1 while run `run` is being recorded (run=\"\" 0: none)",
                                       kind::gauge, "run"};
const telemetry::descriptor run_failed{"daq_run_failed",
                                       "1 while run `run` has failed (disk full, write error) and no longer writes",
                                       kind::gauge, "run"};
const telemetry::descriptor uptime{"daq_uptime_seconds", "Seconds since daqd started", kind::gauge};
const telemetry::descriptor thread_failed{
    "daq_thread_failed", "1 when a data-path thread ended on an error (logged with its name); its stage no longer runs",
    kind::gauge, "thread"};

}  // namespace

telemetry::snapshot collect_telemetry(const telemetry_sources& in) {
    telemetry::snapshot t;
    t.add(build_info, {{"processing_backend", in.processing_backend}, {"receiver_backend", in.receiver.backend_name()},
                       {"version", in.version}},
          1);
    in.receiver.report(t);
    for (std::size_t l = 0; l < in.receiver.link_count(); ++l)
        t.add(ring_fill_by_link, {{"link", std::to_string(l)}}, in.ring.fill_ratio());
    t.add(ring_slots, {{"ring", in.ring.name()}}, static_cast<double>(in.ring.slot_count()));
    t.add(ring_fill, {{"ring", in.ring.name()}}, in.ring.fill_ratio());
    in.assembler.report(t);
    if (in.processor) in.processor->report(t);
    in.tap.report(t);
    in.writer.report(t);
    std::uint64_t free = 0, total = 0;
    t.of(storage_free);
    t.of(storage_size);
    if (acquisition::free_bytes(in.output_dir, free, total)) {
        t.add(storage_free, {}, static_cast<double>(free));
        t.add(storage_size, {}, static_cast<double>(total));
    }
    const auto& current = in.current_run;
    t.add(run_active, {{"run", current ? current->name : std::string()}}, current ? 1 : 0);
    t.add(run_failed, {{"run", current ? current->name : std::string()}}, current && !current->error.empty() ? 1 : 0);
    t.add(uptime, {}, in.started_ns ? static_cast<double>(common::monotonic_ns() - in.started_ns) / 1e9 : 0.0);
    // A learned unit whose slot was given up keeps its counters but has no
    // series in /metrics until it comes back (units.max_learned bounds them).
    std::vector<std::string> retired;
    if (const auto* f = t.find("daq_unit_channels"))
        for (const auto& s : f->samples)
            if (!s.exported) retired.push_back(s.labels.front().second);
    t.hide("unit", retired);
    return t;
}

telemetry::snapshot pipeline::telemetry() const {
    auto t = collect_telemetry({*_receiver, *_ring, *_assembler, _processor.get(), *_tap, *_writer,
                              _cfg.storage.output_dir, processing_backend(), current_run(), _started_ns,
                              DAQD_VERSION});
    for (const auto* w : _stages) t.add(thread_failed, {{"thread", w->name()}}, w->failure().empty() ? 0 : 1);
    return t;
}

summary summarize(const telemetry::snapshot& t) {
    summary s;
    s.receiver_backend = t.label("daq_build_info", "receiver_backend");
    s.processing_backend = t.label("daq_build_info", "processing_backend");
    s.packets_received = t.count("daq_datagrams_received_total");
    s.bytes_received = t.count("daq_bytes_received_total");
    s.ring_dropped = t.count("daq_ring_dropped_total");
    s.kernel_drops = t.count("daq_socket_drops_total");
    if (const auto* f = t.find("daq_packets_invalid_total"))
        for (const auto& x : f->samples)
            if (x.value > 0) s.invalid[x.labels.front().second] = static_cast<std::uint64_t>(x.value);
    for (const auto& [k, v] : s.invalid) s.invalid_total += v;
    // One pass per family, not one per unit.
    auto per_unit = [&](std::string_view family, const telemetry::label_set& match = {}) {
        return t.by(family, "unit", match);
    };
    const auto channels = per_unit("daq_unit_channels"), packets = per_unit("daq_packets_received_total"),
               lost = per_unit("daq_packets_lost_total"), duplicates = per_unit("daq_packets_duplicate_total"),
               late = per_unit("daq_packets_late_total"), complete = per_unit("daq_frames_total", {{"state", "complete"}}),
               incomplete = per_unit("daq_frames_total", {{"state", "incomplete"}}),
               frames_lost = per_unit("daq_frames_total", {{"state", "lost"}}),
               overflow = per_unit("daq_frames_total", {{"state", "overflow"}});
    for (const auto& id : t.label_values("daq_unit_channels", "unit")) {
        auto of = [&](const std::unordered_map<std::string, double>& m) {
            const auto it = m.find(id);
            return it == m.end() ? std::uint64_t{0} : static_cast<std::uint64_t>(it->second);
        };
        summary::unit x{static_cast<std::uint16_t>(std::stoul(id)),
                        static_cast<std::uint32_t>(of(channels)),
                        of(packets),
                        of(lost),
                        of(duplicates),
                        of(late),
                        of(complete),
                        of(incomplete),
                        of(frames_lost),
                        of(overflow)};
        s.packets_lost += x.lost;
        s.duplicates += x.duplicates;
        s.late += x.late;
        s.frames_complete += x.complete;
        s.frames_incomplete += x.incomplete;
        s.frames_lost += x.frames_lost;
        s.frames_overflow += x.overflow;
        s.units.push_back(x);
    }
    s.frames_written = t.count("daq_storage_frames_written");
    s.frames_unrecorded = t.count("daq_frames_unrecorded_total");
    s.frames_failed = t.count("daq_frames_unwritten_total");
    s.bytes_written = t.count("daq_storage_bytes_written_total");
    s.frames_processed = t.count("daq_processing_frames_total");
    s.processing_backlog_peak = t.count("daq_processing_backlog_peak");
    return s;
}

summary pipeline::snapshot() const {
    summary s = summarize(telemetry());
    const std::uint64_t since = _run_started_ns ? _run_started_ns : _started_ns;
    s.seconds = since ? static_cast<double>(common::monotonic_ns() - since) / 1e9 : 0.0;
    if (_last_run) {
        s.run_name = _last_run->run_name;
        for (const auto& f : _last_run->files) s.files.push_back(f.string());
        s.run_failed = _last_run->failed;
        s.frames_rejected = _last_run->frames_rejected;
        s.run_error = _last_run->error;
    }
    return s;
}

std::string summary::one_line() const {
    std::string inv;
    for (const auto& [k, v] : invalid) inv += fmt::format("{}{}={}", inv.empty() ? "" : ",", k, v);
    return fmt::format(
        "packets received={} lost={} invalid={}{} duplicates={} late={} ring_dropped={} kernel_drops={} | frames "
        "complete={} incomplete={} lost={} overflow={} written={}{}{} | bytes_written={} seconds={:.2f}",
        packets_received, packets_lost, invalid_total, inv.empty() ? "" : " (" + inv + ")", duplicates, late,
        ring_dropped, kernel_drops, frames_complete, frames_incomplete, frames_lost, frames_overflow, frames_written,
        frames_rejected ? fmt::format(" rejected={}", frames_rejected) : std::string() ,
        frames_failed ? fmt::format(" failed={}", frames_failed) : std::string(), bytes_written, seconds);
}

std::string summary::to_json() const {
    nlohmann::json j;
    j["run_name"] = run_name;
    j["files"] = files;
    j["receiver_backend"] = receiver_backend;
    j["seconds"] = seconds;
    j["packets_received"] = packets_received;
    j["bytes_received"] = bytes_received;
    j["packets_lost"] = packets_lost;
    j["duplicates"] = duplicates;
    j["late"] = late;
    j["ring_dropped"] = ring_dropped;
    j["kernel_drops"] = kernel_drops;
    j["invalid_total"] = invalid_total;
    j["invalid"] = invalid;
    j["frames_complete"] = frames_complete;
    j["frames_incomplete"] = frames_incomplete;
    j["frames_lost"] = frames_lost;
    j["frames_overflow"] = frames_overflow;
    j["frames_written"] = frames_written;
    j["frames_unrecorded"] = frames_unrecorded;
    j["frames_failed"] = frames_failed;
    j["frames_rejected"] = frames_rejected;
    j["bytes_written"] = bytes_written;
    j["processing_backend"] = processing_backend;
    j["frames_processed"] = frames_processed;
    j["processing_backlog_peak"] = processing_backlog_peak;
    j["run_failed"] = run_failed;
    j["run_error"] = run_error;
    auto& us = j["units"] = nlohmann::json::array();
    for (const auto& u : units)
        us.push_back({{"unit", u.id},
                      {"channels", u.channels},
                      {"packets", u.packets},
                      {"packets_lost", u.lost},
                      {"duplicates", u.duplicates},
                      {"late", u.late},
                      {"frames_complete", u.complete},
                      {"frames_incomplete", u.incomplete},
                      {"frames_lost", u.frames_lost},
                      {"frames_overflow", u.overflow}});
    return j.dump();
}

}  // namespace daqd
