#include "pipeline.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "daqd/acquisition/host_check.hpp"
#include "daqd/acquisition/line_rate.hpp"
#include "daqd/storage/calibration_file.hpp"

#include <algorithm>
#include <cmath>
#include <sched.h>

#include <filesystem>
#include <stdexcept>
#include <thread>

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

namespace {

// threads.*_cpus as CPU numbers (the key table checked them; a configuration
// built in code may not have been).
std::vector<unsigned> cpus_of(std::string_view key, const std::string& text) {
    std::string why;
    auto cpus = config::parse_cpu_list(text, &why);
    if (!cpus) throw std::runtime_error(fmt::format("{} = \"{}\" is not a CPU list: {}", key, text, why));
    return *cpus;
}

// The CPUs this process may run on (its affinity mask; taskset and cgroups
// narrow it), or the machine's count where that cannot be read.
unsigned usable_cpus() {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (::sched_getaffinity(0, sizeof set, &set) == 0) return static_cast<unsigned>(CPU_COUNT(&set));
    return std::max(1u, std::thread::hardware_concurrency());
}


}  // namespace

buffer_plan plan_buffer(const config::config& cfg, bool calibrating) {
    buffer_plan p;
    p.block_bytes = (std::max<std::size_t>(cfg.storage.chunk_bytes, cfg.assembly.max_frame_bytes) + 63) / 64 * 64;
    const auto rate = acquisition::expected_rate_of(cfg.acquisition);
    p.rate_mbps = rate.mbps;
    p.rate_source = rate.source;
    const double bytes_per_s = static_cast<double>(rate.mbps) * 1e6 / 8;
    const std::size_t per_block = p.block_bytes * (calibrating ? 3u : 1u);
    if (cfg.assembly.pool_blocks != 0) {
        p.blocks = cfg.assembly.pool_blocks;
    } else {
        // Every unit fills a block of its own (listed ones, and a margin for
        // learned ones) beside those waiting for the writer.
        const std::size_t filling = 2 * cfg.units.units.size() + 16;
        const auto waiting =
            static_cast<std::size_t>(std::ceil(bytes_per_s * cfg.assembly.buffer_seconds / static_cast<double>(p.block_bytes)));
        p.blocks = std::max<std::size_t>(waiting + filling, 32);
        const std::size_t most = std::max<std::size_t>(cfg.assembly.buffer_max_bytes / per_block, 4);
        if (p.blocks > most) {
            p.blocks = most;
            p.capped = true;
        }
    }
    p.memory_bytes = std::uint64_t{p.blocks} * per_block;
    p.seconds = bytes_per_s > 0 ? static_cast<double>(p.blocks) * static_cast<double>(p.block_bytes) / bytes_per_s : 0;
    // Every row the buffer holds may wait in a queue; capped (a frame that
    // finds its queue full is counted as overflow).
    p.queue_frames = cfg.storage.queue_frames != 0
                         ? cfg.storage.queue_frames
                         : std::min<std::size_t>(p.blocks * processing::max_chunk_rows, std::size_t{1} << 18);
    return p;
}

std::string buffer_plan::describe() const {
    return fmt::format("frame buffer: {} blocks of {} KiB (one stored chunk each), {:.0f} MiB at most{}: {:.2f} s at "
                       "{} Mbit/s ({}){}; memory is committed as frames use it",
                       blocks, block_bytes / 1024, static_cast<double>(memory_bytes) / (1 << 20),
                       memory_bytes > blocks * block_bytes ? " with the calibrated rows" : "", seconds, rate_mbps,
                       rate_source, capped ? " — less than assembly.buffer_seconds: assembly.buffer_max_bytes caps it" : "");
}

// The links of shard `k` of `shards`: contiguous groups in listen order,
// the first groups one link larger when they do not divide evenly.
namespace {

std::pair<std::size_t, std::size_t> shard_links(std::size_t links, std::size_t shards, std::size_t k) {
    const std::size_t base = links / shards;
    const std::size_t extra = links % shards;
    const std::size_t first = k * base + std::min(k, extra);
    return {first, base + (k < extra ? 1 : 0)};
}

}  // namespace

pipeline::pipeline(const config::config& cfg, std::uint64_t pedestal_frames) : _cfg(cfg) {
    // Ring slots hold a datagram plus room for io_uring's recvmsg header and control data.
    const std::uint64_t slot_data = cfg.acquisition.max_datagram_bytes + 128;
    acquisition::remove_stale_rings(cfg.acquisition.ring_name);  // left by a daqd killed with -9
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

    // The receive shards, each with its links, ring, frame buffer, receiver
    // and assembler. Their stages come first in _stages: every receiver,
    // then every assembler (stop order: upstream first).
    const std::size_t links = cfg.acquisition.listen.size();
    const std::size_t shards = std::clamp<std::size_t>(cfg.acquisition.shards, 1, std::max<std::size_t>(links, 1));
    for (std::size_t k = 0; k < shards; ++k) {
        auto sh = std::make_unique<shard>();
        const auto [first, count] = shard_links(links, shards, k);
        sh->acquisition = cfg.acquisition;
        sh->acquisition.listen.assign(cfg.acquisition.listen.begin() + static_cast<std::ptrdiff_t>(first),
                                      cfg.acquisition.listen.begin() + static_cast<std::ptrdiff_t>(first + count));
        // Its share of the expected rate and of the memory cap.
        config::config part = cfg;
        part.acquisition = sh->acquisition;
        if (cfg.acquisition.expected_rate_mbps != 0)
            part.acquisition.expected_rate_mbps =
                static_cast<std::uint32_t>(std::max<std::uint64_t>(1, std::uint64_t{cfg.acquisition.expected_rate_mbps} * count / links));
        part.assembly.buffer_max_bytes = cfg.assembly.buffer_max_bytes / shards;
        const buffer_plan plan = plan_buffer(part, calibrating);
        const std::string who = shards > 1 ? fmt::format("shard {} (links {}..{}): ", k, first, first + count - 1) : "";
        sh->ring = std::make_unique<acquisition::packet_ring>(acquisition::ring_shm_name(cfg.acquisition.ring_name,
                                                                                         static_cast<unsigned>(k)),
                                                              cfg.acquisition.ring_slots, slot_data);
        try {
            sh->pool = std::make_unique<processing::block_pool>(plan.blocks, plan.block_bytes, calibrating);
        } catch (const std::exception& e) {
            throw std::runtime_error(fmt::format("cannot reserve the {}{}: {}; lower assembly.buffer_seconds or "
                                                 "assembly.buffer_max_bytes",
                                                 who, plan.describe(), e.what()));
        }
        if (plan.capped)
            spdlog::warn("{}{}", who, plan.describe());
        else
            spdlog::info("{}{}", who, plan.describe());
        sh->frames = std::make_unique<common::spsc_queue<processing::frame>>(plan.queue_frames);
        sh->receiver = std::make_unique<acquisition::receiver>(sh->acquisition, *sh->ring, sh->ring_ready,
                                                               static_cast<std::uint16_t>(first),
                                                               static_cast<std::uint16_t>(k));
        sh->assembler = std::make_unique<processing::assembler>(
            cfg, std::vector<acquisition::packet_ring*>{sh->ring.get()}, sh->ring_ready, *sh->pool, *sh->frames,
            _frames_ready, shards > 1 ? &_claims : nullptr, static_cast<std::uint16_t>(k));
        _shards.push_back(std::move(sh));
    }
    if (shards > 1)
        spdlog::info("{} receive shards over {} links: each its own receiver and assembler thread, ring and frame "
                     "buffer; one {} for all",
                     shards, links, processing ? "processing thread" : "writer");
    // Receive and assembly: a thread each, or one thread making the
    // receiver's pass and then the assembler's (common::combined_worker),
    // in every shard.
    const auto combine = config::choose_combine(cfg.threads, usable_cpus());
    for (std::size_t k = 0; k < _shards.size(); ++k) {
        auto& sh = *_shards[k];
        sh.receiver->worker().pin(cpus_of("threads.receiver_cpus", cfg.threads.receiver_cpus));
        sh.assembler->worker().pin(cpus_of("threads.assembler_cpus", cfg.threads.assembler_cpus));
        if (!combine.combined) continue;
        const std::string name =
            k == 0 ? std::string(combined_thread_name) : fmt::format("{}-{}", combined_thread_name, k);
        sh.combined = std::make_unique<common::combined_worker>(name, sh.receiver->worker(), sh.assembler->worker());
        sh.combined->get().pin(sh.receiver->worker().cpus());
    }
    if (combine.combined) {
        for (auto& sh : _shards) _stages.push_back(&sh->combined->get());
        spdlog::info("threads: receive and assembly on one thread{}, {} ({})", shards > 1 ? " per shard" : "",
                     combined_thread_name, combine.why);
        if (!cfg.threads.assembler_cpus.empty())
            spdlog::warn("threads.assembler_cpus = \"{}\" is not used: receive and assembly share the thread {}, "
                         "pinned by threads.receiver_cpus",
                         cfg.threads.assembler_cpus, combined_thread_name);
    } else {
        for (auto& sh : _shards) _stages.push_back(&sh->receiver->worker());
        for (auto& sh : _shards) _stages.push_back(&sh->assembler->worker());
        spdlog::info("threads: receive and assembly on two threads{}, {} and {} ({})", shards > 1 ? " per shard" : "",
                     _shards.front()->receiver->worker().name(), _shards.front()->assembler->worker().name(),
                     combine.why);
    }
    std::vector<common::spsc_queue<processing::frame>*> shard_frames;
    std::size_t queued = 0;
    for (auto& sh : _shards) {
        shard_frames.push_back(sh->frames.get());
        queued += sh->frames->capacity();
    }
    common::queue_set<processing::frame> to_writer(shard_frames);
    common::wake_event* writer_ready = &_frames_ready;
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
        po.max_frame_bytes = cfg.assembly.max_frame_bytes;
        if (pedestal_frames == 0 && cfg.processing.has("live"))
            _live = std::make_unique<processing::live_view>(cfg.processing.live_interval);
        _processed = std::make_unique<frame_hop>(queued);  // holds whatever the shards' queues hold
        _processor = std::make_unique<processing::processor>(po, common::queue_set<processing::frame>(shard_frames),
                                                             _frames_ready, _processed->queue, _processed->ready,
                                                             _live.get());
        _processor->worker().pin(cpus_of("threads.processor_cpus", cfg.threads.processor_cpus));
        _stages.push_back(&_processor->worker());
        to_writer = common::queue_set<processing::frame>(_processed->queue);
        writer_ready = &_processed->ready;
    }
    _tap = std::make_unique<processing::live_tap>();
    if (_live) _tap->attach(_live.get());  // the live endpoint reads the processing thread's live view
    _writer = std::make_unique<storage::writer>(std::move(to_writer), *writer_ready);
    _writer->set_observer(_tap.get());
    _writer->worker().pin(cpus_of("threads.writer_cpus", cfg.threads.writer_cpus));
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

void pipeline::start_run(const std::string& name, std::optional<storage::compression_kind> compression) {
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
    o.compression = _cfg.storage.compression == "bslz4" ? storage::compression_kind::bslz4 : storage::compression_kind::none;
    if (compression) o.compression = *compression;
    o.compress_threads = _cfg.storage.compress_threads;
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
    a.compression = o.compression == storage::compression_kind::bslz4 ? "bslz4" : "none";
    a.compress_in_before = wc.compress.bytes_in.get();
    a.compress_out_before = wc.compress.bytes_out.get();
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

std::vector<common::worker_status> pipeline::thread_status() const {
    std::vector<common::worker_status> out;
    out.reserve(_stages.size());
    for (const auto* w : _stages) out.push_back(w->status());
    return out;
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
    "daq_ring_fill_ratio", "Fill of the packet ring the link feeds (its receive shard's), 0..1", kind::gauge,
    "link"};
const telemetry::descriptor ring_slots{"daq_ring_slots", "Slots of each packet ring", kind::gauge, "ring"};
const telemetry::descriptor ring_fill{"daq_ring_fill", "Fill of each packet ring, 0..1", kind::gauge, "ring", false};
const telemetry::descriptor buffer_blocks{"daq_frame_buffer_blocks",
                                          "Blocks of the frame buffer (each one stored chunk), by shard", kind::gauge,
                                          "shard"};
const telemetry::descriptor buffer_free{"daq_frame_buffer_blocks_free",
                                        "Blocks of the frame buffer free now (not filling, queued or being written), "
                                        "by shard",
                                        kind::gauge, "shard"};
const telemetry::descriptor buffer_block_bytes{"daq_frame_buffer_block_bytes", "Bytes of one frame-buffer block",
                                               kind::gauge};
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
const telemetry::descriptor thread_cpu{
    "daq_thread_cpu_seconds_total",
    "CPU seconds used by each data-path thread: one near 1 s per second is the limit when frames are lost",
    kind::counter, "thread"};
const telemetry::descriptor thread_failed{
    "daq_thread_failed", "1 when a data-path thread ended on an error (logged with its name); its stage no longer runs",
    kind::gauge, "thread"};

}  // namespace

telemetry::snapshot collect_telemetry(const telemetry_sources& in) {
    telemetry::snapshot t;
    t.add(build_info, {{"processing_backend", in.processing_backend},
                       {"receiver_backend", in.shards.empty() ? "" : in.shards.front().receiver.backend_name()},
                       {"version", in.version}},
          1);
    for (const auto& sh : in.shards) sh.receiver.report(t);
    for (std::size_t k = 0; k < in.shards.size(); ++k) {
        const auto& sh = in.shards[k];
        for (std::size_t l = 0; l < sh.receiver.link_count(); ++l)
            t.add(ring_fill_by_link, {{"link", std::to_string(sh.receiver.first_link() + l)}}, sh.ring.fill_ratio());
        t.add(ring_slots, {{"ring", sh.ring.name()}}, static_cast<double>(sh.ring.slot_count()));
        t.add(ring_fill, {{"ring", sh.ring.name()}}, sh.ring.fill_ratio());
        t.add(buffer_blocks, {{"shard", std::to_string(k)}}, static_cast<double>(sh.pool.blocks()));
        t.add(buffer_free, {{"shard", std::to_string(k)}}, static_cast<double>(sh.pool.available()));
    }
    if (!in.shards.empty())
        t.add(buffer_block_bytes, {}, static_cast<double>(in.shards.front().pool.block_bytes()));
    for (const auto& sh : in.shards) sh.assembler.report(t);
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
    telemetry_sources in{{}, _processor.get(), *_tap, *_writer, _cfg.storage.output_dir, processing_backend(),
                         current_run(), _started_ns, DAQD_VERSION};
    for (const auto& sh : _shards) in.shards.push_back({*sh->receiver, *sh->ring, *sh->pool, *sh->assembler});
    auto t = collect_telemetry(in);
    for (const auto* w : _stages) t.add(thread_failed, {{"thread", w->name()}}, w->failure().empty() ? 0 : 1);
    for (const auto* w : _stages) t.add(thread_cpu, {{"thread", w->name()}}, w->cpu_seconds());
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
