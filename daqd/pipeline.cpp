#include "pipeline.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "daqd/acquisition/host_check.hpp"
#include "daqd/acquisition/line_rate.hpp"
#include "daqd/storage/calibration_file.hpp"
#include "pedestal_run.hpp"

#include <algorithm>
#include <utility>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <unistd.h>
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

// The first line of a key file, without surrounding blanks; throws naming the file.
std::vector<std::string> key_lines(const std::string& path, const char* key) {
    std::ifstream in(path);
    if (!in) throw std::runtime_error(fmt::format("{}: cannot read {}: {}", key, path, std::strerror(errno)));
    std::vector<std::string> lines;
    for (std::string line; std::getline(in, line);) {
        const auto b = line.find_first_not_of(" \t\r");
        if (b == std::string::npos || line[b] == '#') continue;
        const auto e = line.find_last_not_of(" \t\r");
        lines.push_back(line.substr(b, e - b + 1));
    }
    return lines;
}

stream::stream_options stream_options_of(const config::config& cfg) {
    stream::stream_options o;
    o.push_endpoints = cfg.stream.listen;
    o.pub_endpoints = cfg.stream.publish;
    o.send_hwm = static_cast<int>(cfg.stream.send_hwm);
    o.queue_messages = cfg.stream.queue_chunks;
    o.preview_rate = cfg.stream.preview_rate;
    o.linger_ms = static_cast<int>(cfg.stream.linger_ms);
    o.server_version = DAQD_VERSION;
    if (!cfg.stream.curve_secret_key_file.empty()) {
        auto lines = key_lines(cfg.stream.curve_secret_key_file, "stream.curve_secret_key_file");
        if (lines.empty() || lines.front().size() != 40)
            throw std::runtime_error(fmt::format("stream.curve_secret_key_file: {} must hold a CURVE secret key, 40 "
                                                 "characters of Z85, on its first line",
                                                 cfg.stream.curve_secret_key_file));
        o.curve_secret_key = lines.front();
    }
    if (!cfg.stream.curve_client_keys_file.empty()) {
        o.curve_client_keys = key_lines(cfg.stream.curve_client_keys_file, "stream.curve_client_keys_file");
        if (o.curve_client_keys.empty())
            throw std::runtime_error(fmt::format("stream.curve_client_keys_file: {} holds no key (every consumer would "
                                                 "be refused)",
                                                 cfg.stream.curve_client_keys_file));
    }
    return o;
}

// What the stream's start-of-run message adds: the units configured, the
// calibration in use, this host.
std::string stream_info_of(const config::config& cfg, const processing::calibration_set* calibration) {
    nlohmann::json units = nlohmann::json::array();
    for (const auto& u : cfg.units.units) units.push_back(nlohmann::json{{"id", u.id}, {"channels", u.channels}});
    nlohmann::json cal = nullptr;
    if (calibration != nullptr) {
        nlohmann::json ids = nlohmann::json::array();
        for (const auto& [id, c] : calibration->units) ids.push_back(id);
        cal = {{"file", calibration->file}, {"units", ids}};
    }
    char host[256] = {};
    (void)::gethostname(host, sizeof host - 1);
    nlohmann::json j{{"units", units},
                     {"units_learned", cfg.units.learn},
                     {"stages", cfg.processing.stages},
                     {"calibration", cal},
                     {"host", host}};
    return j.dump();
}

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
        _threshold = po.threshold;
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
    _writer->set_accounting_source([this] { return accounting(); });
    _writer->worker().pin(cpus_of("threads.writer_cpus", cfg.threads.writer_cpus));
    _stages.push_back(&_writer->worker());
    if (cfg.stream.enabled()) {
        _stream = std::make_unique<stream::sender>(stream_options_of(cfg));
        _writer->set_chunk_sink(_stream.get());
        _stages.push_back(&_stream->worker());  // after the writer: it sends what the writer handed on
    }
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
    if (auto closed = _writer->run_closed_by_stop()) run_ended(*closed);
    std::shared_ptr<pedestal_run> ped;
    std::optional<active_run> a;
    {
        std::lock_guard lock(_active_mutex);
        ped = _pedestal;
        a = _active;
    }
    if (ped && a) {
        // The writer thread has ended: this thread may use HDF5.
        ped->finish();
        {
            std::lock_guard lock(_active_mutex);
            _pedestal_last = std::move(_pedestal);
            _active.reset();
        }
        pedestal_ended(*a, *ped);
    }
    {
        std::lock_guard lock(_active_mutex);
        _active.reset();
    }
}

common::run_result pipeline::run_ended(const storage::run_stats& stats) {
    _last_run = stats;
    common::run_result r{stats.run_name,      stats.files,  stats.frames_written, stats.bytes_written,
                         stats.frames_rejected, stats.failed, stats.error};
    r.stopped = std::chrono::system_clock::now();
    std::optional<active_run> a;
    {
        std::lock_guard lock(_active_mutex);
        a = _active;
    }
    // The run's counts: every counter when the writer closed it (what its
    // file's accounting says) less what it was at the run's start.
    std::optional<common::run_counts> at_close;
    {
        std::lock_guard lock(_active_mutex);
        at_close = std::exchange(_counts_at_close, std::nullopt);
    }
    const auto now = at_close ? *at_close : common::run_counts::of(telemetry());
    if (a && a->name == stats.run_name) {
        r.started = a->started;
        r.kind = a->kind;
        r.run = a->run;
        r.host = a->host;
        r.counts = now.since(a->counts_before);
    } else {
        r.started = r.stopped;
        r.counts = now;
    }
    // What the writer knows exactly about its own run.
    r.counts.frames_written = stats.frames_written;
    r.counts.bytes_written = stats.bytes_written;
    _last_result = r;
    return r;
}

void pipeline::start_run(const std::string& name, std::optional<storage::compression_kind> compression,
                         std::string started_by, bool name_generated) {
    run_request r;
    r.name = name;
    r.compression = compression;
    r.started_by = std::move(started_by);
    r.name_generated = name_generated;
    start_run(std::move(r));
}

void pipeline::start_run(run_request req) {
    std::lock_guard control(_control_mutex);
    const std::string& name = req.name;
    if (auto err = check_run_name(name); !err.empty()) throw std::runtime_error(err);
    if (!req.host.empty()) {
        if (auto err = check_run_name(req.host); !err.empty())
            throw std::runtime_error(fmt::format("host tag: {}", err));
        if (std::all_of(req.host.begin(), req.host.end(), [](char c) { return c >= '0' && c <= '9'; }))
            throw std::runtime_error(fmt::format("host tag '{}' is all digits: its files would read as a rotated "
                                                 "run's (<run>_<digits>.h5); give a name with a letter",
                                                 req.host));
    }
    const std::string stem = file_stem(name, req.host);
    if (auto err = check_run_name(stem); !err.empty()) throw std::runtime_error(err);
    {
        std::lock_guard lock(_active_mutex);
        if (_pedestal)
            throw std::runtime_error(fmt::format("pedestal run '{}' is active; stop it first", _pedestal->name()));
    }
    std::error_code ec;
    std::filesystem::create_directories(_cfg.storage.output_dir, ec);
    if (ec)
        throw std::runtime_error(fmt::format("cannot create output directory {}: {}",
                                             _cfg.storage.output_dir.string(), ec.message()));
    if (req.prepare) {
        // What would stop the run in its first seconds, checked before any
        // host of a several-host run records.
        const auto space = std::filesystem::space(_cfg.storage.output_dir, ec);
        if (!ec && space.available <= _cfg.storage.reserve_bytes + 2ull * _cfg.storage.chunk_bytes)
            // The API answers 507 to a message naming storage.reserve_bytes.
            throw std::runtime_error(fmt::format(
                "{} has {} bytes free, not more than storage.reserve_bytes ({}) and two chunks: not preparing run '{}'",
                _cfg.storage.output_dir.string(), space.available, _cfg.storage.reserve_bytes, name));
    }
    storage::run_options o;
    o.output_dir = _cfg.storage.output_dir;
    o.run_name = stem;
    o.run = name;
    o.host = req.host;
    o.metadata = req.metadata;
    o.metadata_json = req.metadata_json;
    for (const auto& u : _cfg.units.units)
        if (!u.shape.empty()) o.unit_shapes[u.id] = u.shape;
    o.rotate_bytes = _cfg.storage.rotate_bytes;
    o.chunk_bytes = _cfg.storage.chunk_bytes;
    o.flush_interval = _cfg.storage.flush_interval;
    o.reserve_bytes = _cfg.storage.reserve_bytes;
    o.writeback.mode =
        _cfg.storage.writeback == "kernel" ? storage::writeback_mode::kernel : storage::writeback_mode::paced;
    o.compression = _cfg.storage.compression == "bslz4" ? storage::compression_kind::bslz4 : storage::compression_kind::none;
    if (req.compression) o.compression = *req.compression;
    o.compress_threads = _cfg.storage.compress_threads;
    o.config_text = _cfg.text;
    o.server_version = DAQD_VERSION;
    if (_stream) o.stream_info = stream_info_of(_cfg, _calibration.get());
    if (_processor != nullptr && _processor->calibrates()) {
        o.processing.calibrated = true;
        o.processing.dose = _cfg.processing.has("dose");
        o.processing.calibration = _calibration;
        o.processing.threshold = _threshold;
        o.processing.threshold_epoch = _threshold_epoch;
        // The processor takes it before its next batch (already its own
        // unless a reload changed it); frames calibrated before are
        // calibrated again by the writer (run_processing::threshold_epoch).
        if (_processor->threshold_epoch() != _threshold_epoch) _processor->request_threshold(_threshold, _threshold_epoch);
    }
    // A run that failed (disk full, …) no longer writes: a new run replaces it.
    if (_writer->run_active() && !_writer->run_error().empty()) {
        if (auto failed = _writer->stop_run()) run_ended(*failed);
        std::lock_guard lock(_active_mutex);
        _active.reset();
    }
    if (_processor != nullptr) _processor->request_dose_reset();  // the live view's running dose: of this run
    const auto& wc = _writer->counters();
    active_run a{stem, std::chrono::system_clock::now(), wc.frames_written.get(), wc.bytes_written.get()};
    a.compression = o.compression == storage::compression_kind::bslz4 ? "bslz4" : "none";
    a.compress_in_before = wc.compress.bytes_in.get();
    a.compress_out_before = wc.compress.bytes_out.get();
    a.counts_before = common::run_counts::of(telemetry());
    a.started_by = std::move(req.started_by);
    a.name_generated = req.name_generated;
    a.run = name;
    a.host = req.host;
    a.metadata_json = req.metadata_json;
    if (req.prepare) {
        a.state = "prepared";
        a.prepare_deadline = std::chrono::steady_clock::now() + req.prepare_timeout;
    }
    _writer->start_run(o, req.prepare);
    if (!req.prepare) ++_runs_started;
    auto at_start = summarize(telemetry());  // telemetry() reads current_run(): not under _active_mutex
    {
        std::lock_guard lock(_active_mutex);
        _active = std::move(a);
        _counts_at_start = std::move(at_start);
    }
    _run_started_ns = common::monotonic_ns();
    if (req.prepare)
        spdlog::info("run {} prepared in {} (recording starts at its commit, within {} s)", stem,
                     _cfg.storage.output_dir.string(), req.prepare_timeout.count());
    else
        spdlog::info("run {} started in {}", stem, _cfg.storage.output_dir.string());
}

namespace {
bool names_run(const common::run_info& a, const std::string& name) { return a.name == name || a.run == name; }
}  // namespace

void pipeline::commit_run(const std::string& name) {
    std::lock_guard control(_control_mutex);  // nothing else changes the run meanwhile
    {
        std::lock_guard lock(_active_mutex);
        if (!_active || !names_run(*_active, name) || _active->state != "prepared")
            throw std::runtime_error(
                _active && names_run(*_active, name)
                    ? fmt::format("run '{}' is not prepared (it is {})", name, _active->state)
                    : fmt::format("no run '{}' is prepared{}", name,
                                  _active ? fmt::format(" (run '{}' is {})", _active->name, _active->state) : ""));
    }
    // Counts from here: the run is what is taken from now on (read outside
    // _active_mutex: telemetry() takes it).
    const auto t = telemetry();
    const auto counts = common::run_counts::of(t);
    auto at_start = summarize(t);
    const auto& wc = _writer->counters();
    std::string stem;
    {
        std::lock_guard lock(_active_mutex);
        _active->counts_before = counts;
        _counts_at_start = std::move(at_start);
        _active->frames_before = wc.frames_written.get();
        _active->bytes_before = wc.bytes_written.get();
        _active->compress_in_before = wc.compress.bytes_in.get();
        _active->compress_out_before = wc.compress.bytes_out.get();
        _writer->commit_run();
        _active->started = std::chrono::system_clock::now();
        _active->state = "recording";
        stem = _active->name;
    }
    _run_started_ns = common::monotonic_ns();
    ++_runs_started;
    spdlog::info("run {} committed: recording", stem);
}

std::vector<std::string> pipeline::abort_run(const std::string& name) {
    std::lock_guard control(_control_mutex);
    std::string stem;
    {
        std::lock_guard lock(_active_mutex);
        if (!_active || _active->kind != "data" || !names_run(*_active, name))
            throw std::runtime_error(fmt::format("no run '{}' is prepared or recording", name));
        stem = _active->name;
    }
    auto stats = _writer->stop_run();
    {
        std::lock_guard lock(_active_mutex);
        _active.reset();
        _counts_at_start.reset();
    }
    std::vector<std::string> removed;
    if (stats)
        for (const auto& f : stats->files) {
            std::error_code ec;
            if (std::filesystem::remove(f, ec)) removed.push_back(f.filename().string());
            else if (ec) spdlog::error("run {} aborted: cannot remove {}: {}", stem, f.string(), ec.message());
        }
    spdlog::info("run {} aborted: {} file(s) removed", stem, removed.size());
    return removed;
}

std::string pipeline::set_threshold(const processing::threshold_policy& policy) {
    std::lock_guard control(_control_mutex);
    if (policy.mode == _threshold.mode && policy.value == _threshold.value) return "unchanged";
    _threshold = policy;
    ++_threshold_epoch;
    if (_processor == nullptr || !_processor->calibrates())
        return "no calibrate stage runs: it applies when daqd restarts with one";
    if (auto cur = current_run(); cur && cur->kind == "data") {
        return fmt::format("applies from the next run's start (run {} keeps the threshold its file records)", cur->name);
    }
    _processor->request_threshold(_threshold, _threshold_epoch);
    return "applied from the next frame (no run is recording)";
}

bool pipeline::expire_prepared() {
    // A commit comes before or after, not between; a control call in
    // progress (a stop draining the queues) is not waited for: next time.
    std::unique_lock control(_control_mutex, std::try_to_lock);
    if (!control.owns_lock()) return false;
    std::string stem;
    {
        std::lock_guard lock(_active_mutex);
        if (!_active || _active->state != "prepared" || std::chrono::steady_clock::now() < _active->prepare_deadline)
            return false;
        stem = _active->name;
    }
    spdlog::warn("run {} was prepared but not committed in time: aborting it", stem);
    try {
        abort_run(stem);
    } catch (const std::exception& e) {
        spdlog::debug("run {}: {}", stem, e.what());
        return false;
    }
    return true;
}

storage::run_accounting pipeline::accounting() const {
    std::optional<summary> before;
    {
        std::lock_guard lock(_active_mutex);
        before = _counts_at_start;
    }
    const auto t = telemetry();
    const summary now = summarize(t);
    {
        // The stop's answer counts up to here too, not up to a moment later.
        std::lock_guard lock(_active_mutex);
        _counts_at_close = common::run_counts::of(t);
    }
    const summary zero{};
    const summary& b = before ? *before : zero;
    auto d = [](std::uint64_t n, std::uint64_t o) { return n > o ? n - o : 0; };
    storage::run_accounting acc;
    acc.totals = {{"packets_received", d(now.packets_received, b.packets_received)},
                  {"bytes_received", d(now.bytes_received, b.bytes_received)},
                  {"packets_lost", d(now.packets_lost, b.packets_lost)},
                  {"packets_duplicate", d(now.duplicates, b.duplicates)},
                  {"packets_late", d(now.late, b.late)},
                  {"packets_invalid", d(now.invalid_total, b.invalid_total)},
                  {"socket_drops", d(now.kernel_drops, b.kernel_drops)},
                  {"ring_dropped", d(now.ring_dropped, b.ring_dropped)},
                  {"frames_complete", d(now.frames_complete, b.frames_complete)},
                  {"frames_incomplete", d(now.frames_incomplete, b.frames_incomplete)},
                  {"frames_lost", d(now.frames_lost, b.frames_lost)},
                  {"frames_overflow", d(now.frames_overflow, b.frames_overflow)},
                  {"frames_failed", d(now.frames_failed, b.frames_failed)}};
    for (const auto& [reason, n] : now.invalid) {
        const auto it = b.invalid.find(reason);
        const std::uint64_t delta = d(n, it == b.invalid.end() ? 0 : it->second);
        if (delta > 0) acc.totals.emplace_back("packets_invalid_" + reason, delta);
    }
    for (const auto& u : now.units) {
        summary::unit o{u.id, u.channels, 0, 0, 0, 0, 0, 0, 0, 0};
        for (const auto& x : b.units)
            if (x.id == u.id) o = x;
        acc.units[u.id] = {{"packets_received", d(u.packets, o.packets)},
                           {"packets_lost", d(u.lost, o.lost)},
                           {"packets_duplicate", d(u.duplicates, o.duplicates)},
                           {"packets_late", d(u.late, o.late)},
                           {"frames_complete", d(u.complete, o.complete)},
                           {"frames_incomplete", d(u.incomplete, o.incomplete)},
                           {"frames_lost", d(u.frames_lost, o.frames_lost)},
                           {"frames_overflow", d(u.overflow, o.overflow)}};
    }
    return acc;
}

std::optional<common::run_result> pipeline::stop_run() {
    std::lock_guard control(_control_mutex);
    std::shared_ptr<pedestal_run> ped;
    std::optional<active_run> a;
    {
        std::lock_guard lock(_active_mutex);
        if (_pedestal) {
            ped = _pedestal;
            a = _active;
        }
    }
    if (ped) {
        // Let go of it between two frames, then write what it has (HDF5: the writer thread).
        _writer->run_on_writer_thread([this, ped] {
            _writer->set_sink(nullptr);
            ped->finish();
        });
        {
            std::lock_guard lock(_active_mutex);
            _pedestal_last = std::move(_pedestal);
            _active.reset();
        }
        return pedestal_ended(*a, *ped);
    }
    auto stats = _writer->stop_run();
    std::optional<common::run_result> result;
    if (stats) result = run_ended(*stats);
    {
        std::lock_guard lock(_active_mutex);
        _active.reset();
    }
    return result;
}

std::optional<pipeline::active_run> pipeline::current_run() const {
    std::optional<active_run> a;
    std::shared_ptr<pedestal_run> ended;
    {
        std::lock_guard lock(_active_mutex);
        if (_active && _pedestal && _pedestal->finished()) {
            // A pedestal run that ended by itself (every unit has its
            // frames): whoever looks first records it.
            ended = _pedestal;
            a = _active;
            _pedestal_last = std::move(_pedestal);
            _active.reset();
        } else {
            a = _active;
        }
    }
    if (ended) {
        pedestal_ended(*a, *ended);
        return std::nullopt;
    }
    if (a && a->kind == "pedestal") {
        std::lock_guard lock(_active_mutex);
        if (_pedestal) {
            a->pedestal_frames = _pedestal->frames_wanted();
            a->pedestal_units_seen = _pedestal->units_seen();
            a->pedestal_units_complete = _pedestal->units_complete();
            a->files = {_pedestal->file().filename().string()};
        }
    }
    if (a && a->kind != "pedestal") a->error = _writer->run_error();
    return a;
}

std::string pipeline::next_run_name() {
    const auto pattern = config::parse_run_name_pattern(_cfg.storage.run_name_pattern);
    if (!pattern) throw std::runtime_error("storage.run_name_pattern is not a pattern");  // validated at load
    std::uint64_t highest = _generated_number;
    std::error_code ec;
    for (auto it = std::filesystem::directory_iterator(_cfg.storage.output_dir, ec);
         !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
        std::string n = it->path().filename().string();
        // <run>.h5, <run>_00001.h5 (a series), <run>.calib.h5 (a pedestal run)
        for (std::string_view tail : {".calib.h5", ".h5"})
            if (n.size() > tail.size() && n.ends_with(tail)) {
                n.resize(n.size() - tail.size());
                break;
            }
        if (auto k = pattern->number_of(n)) highest = std::max(highest, *k);
        if (n.size() > 6 && n[n.size() - 6] == '_' &&
            std::all_of(n.end() - 5, n.end(), [](char c) { return c >= '0' && c <= '9'; }))
            if (auto k = pattern->number_of(n.substr(0, n.size() - 6))) highest = std::max(highest, *k);
    }
    _generated_number = highest + 1;
    _generated_name = pattern->name(_generated_number);
    return _generated_name;
}

common::run_result pipeline::pedestal_ended(const active_run& a, const pedestal_run& p) const {
    const auto o = p.result();
    common::run_result r;
    r.run_name = a.name;
    r.kind = "pedestal";
    if (!o.failed) r.files = {p.file()};
    r.failed = o.failed;
    r.error = o.error;
    r.started = a.started;
    r.stopped = o.stopped;
    // Counted as the lifetime counts are, less the run's start (this run is
    // no longer current: telemetry() does not come back here).
    r.counts = common::run_counts::of(telemetry()).since(a.counts_before);
    r.counts.frames_written = 0;  // no run file: the frames went into the constants
    r.counts.bytes_written = 0;
    std::lock_guard lock(_active_mutex);
    _last_result = r;
    return r;
}

void pipeline::start_pedestal(const std::string& name, std::uint64_t frames, std::string started_by,
                              bool name_generated) {
    if (auto err = check_run_name(name); !err.empty()) throw std::runtime_error(err);
    if (frames < 2 || frames > 100'000'000)
        throw std::runtime_error(fmt::format("a pedestal run needs 2 to 100000000 frames per unit, got {}", frames));
    if (auto cur = current_run()) {
        if (cur->kind == "pedestal")
            throw std::runtime_error(fmt::format("pedestal run '{}' is active; stop it first", cur->name));
        if (cur->error.empty())
            throw std::runtime_error(fmt::format("run '{}' is active; stop it first", cur->name));
        stop_run();  // a failed run no longer writes: it is closed and replaced
    }
    std::error_code ec;
    std::filesystem::create_directories(_cfg.storage.output_dir, ec);
    const auto file = _cfg.storage.output_dir / (name + ".calib.h5");
    if (std::filesystem::exists(file, ec))
        throw std::runtime_error(fmt::format("pedestal run '{}' already exists: {} (refusing to overwrite)", name,
                                             file.string()));
    auto p = std::make_shared<pedestal_run>(name, file, frames, _cfg.units.units.size());
    active_run a{name, std::chrono::system_clock::now(), _writer->counters().frames_written.get(),
                 _writer->counters().bytes_written.get()};
    a.kind = "pedestal";
    a.counts_before = common::run_counts::of(telemetry());
    a.started_by = std::move(started_by);
    a.name_generated = name_generated;
    // Between two frames of the writer thread, which then hands it every
    // frame it takes while no run file is open.
    _writer->run_on_writer_thread([this, p] { _writer->set_sink(p.get()); });
    {
        std::lock_guard lock(_active_mutex);
        _pedestal = p;
        _active = std::move(a);
    }
    ++_runs_started;
    spdlog::info("pedestal run {} started: {} complete frames per unit (no beam, please) -> {}", name, frames,
                 file.string());
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
const telemetry::descriptor runs_started{"daq_runs_started_total",
                                         "Runs started since daqd started (command line and API, pedestal runs "
                                         "included)",
                                         kind::counter};
const telemetry::descriptor config_reloads{"daq_config_reloads_total",
                                           "SIGHUP reloads of the configuration file: applied (what could be applied "
                                           "was), or refused (a file with mistakes, or none to read: nothing changed)",
                                           kind::counter, "result"};
const telemetry::descriptor config_reload_time{"daq_config_last_reload_timestamp_seconds",
                                               "Unix time of the last SIGHUP reload, applied or refused (0: none yet)",
                                               kind::gauge};
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
    if (in.stream) in.stream->report(t);
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
    t.add(runs_started, {}, static_cast<double>(in.runs_started));
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
                         current_run(), _started_ns, DAQD_VERSION, _runs_started, _stream.get()};
    for (const auto& sh : _shards) in.shards.push_back({*sh->receiver, *sh->ring, *sh->pool, *sh->assembler});
    auto t = collect_telemetry(in);
    for (const auto* w : _stages) t.add(thread_failed, {{"thread", w->name()}}, w->failure().empty() ? 0 : 1);
    for (const auto* w : _stages) t.add(thread_cpu, {{"thread", w->name()}}, w->cpu_seconds());
    t.add(config_reloads, {{"result", "applied"}}, static_cast<double>(_reloads_applied.load()));
    t.add(config_reloads, {{"result", "refused"}}, static_cast<double>(_reloads_refused.load()));
    t.add(config_reload_time, {}, _last_reload_s.load());
    return t;
}

void pipeline::count_reload(bool applied) noexcept {
    ++(applied ? _reloads_applied : _reloads_refused);
    _last_reload_s.store(std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count());
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
    s.seconds = _started_ns ? static_cast<double>(common::monotonic_ns() - _started_ns) / 1e9 : 0.0;
    s.runs = _runs_started;
    if (_last_run) {
        s.run_name = _last_run->run_name;
        for (const auto& f : _last_run->files) s.files.push_back(f.string());
        s.run_failed = _last_run->failed;
        s.frames_rejected = _last_run->frames_rejected;
        s.run_error = _last_run->error;
    }
    s.last_run = _last_result;
    return s;
}

std::string summary::one_line() const {
    std::string inv;
    for (const auto& [k, v] : invalid) inv += fmt::format("{}{}={}", inv.empty() ? "" : ",", k, v);
    return fmt::format(
        "lifetime ({:.2f} s since daqd started, {} run{}): packets received={} lost={} invalid={}{} duplicates={} "
        "late={} ring_dropped={} kernel_drops={} | frames complete={} incomplete={} lost={} overflow={} written={}{} "
        "unrecorded={} | bytes_written={}",
        seconds, runs, runs == 1 ? "" : "s", packets_received, packets_lost, invalid_total,
        inv.empty() ? "" : " (" + inv + ")", duplicates, late, ring_dropped, kernel_drops, frames_complete,
        frames_incomplete, frames_lost, frames_overflow, frames_written,
        frames_failed ? fmt::format(" failed={}", frames_failed) : std::string(), frames_unrecorded, bytes_written);
}

std::string summary::run_line() const {
    if (!last_run) return {};
    const auto& r = *last_run;
    const auto& c = r.counts;
    const double secs = std::chrono::duration<double>(r.stopped - r.started).count();
    return fmt::format(
        "run {}{} ({:.2f} s, this run only): packets received={} lost={} invalid={} duplicates={} late={} "
        "ring_dropped={} kernel_drops={} | frames complete={} incomplete={} lost={} overflow={} written={}{}{} | "
        "bytes_written={}",
        r.run_name, r.kind == "pedestal" ? " (pedestal)" : "", secs, c.packets_received, c.packets_lost, c.invalid,
        c.duplicates, c.late, c.ring_dropped, c.kernel_drops, c.frames_complete, c.frames_incomplete, c.frames_lost,
        c.frames_overflow, c.frames_written,
        r.frames_rejected ? fmt::format(" rejected={}", r.frames_rejected) : std::string(),
        c.frames_failed ? fmt::format(" failed={}", c.frames_failed) : std::string(), c.bytes_written);
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
    // The counts above are lifetime counts (since daqd started, every run
    // and the time between runs); "run" holds the last run's own.
    j["scope"] = "lifetime";
    j["runs"] = runs;
    if (last_run) {
        const auto& r = *last_run;
        nlohmann::json jr{{"name", r.run_name},
                          {"kind", r.kind},
                          {"seconds", std::chrono::duration<double>(r.stopped - r.started).count()},
                          {"failed", r.failed},
                          {"error", r.error},
                          {"frames_rejected", r.frames_rejected},
                          {"scope", "run"}};
        jr["files"] = files;
        for (const auto& [k, v] : r.counts.fields()) jr[k] = v;
        j["run"] = std::move(jr);
    } else {
        j["run"] = nullptr;
    }
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
