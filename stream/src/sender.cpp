// The live stream's sender: docs/STREAM.md (the messages), stream/README.md.
#include "daqd/stream/sender.hpp"

#include "daqd/common/event.hpp"
#include "daqd/storage/run_writer.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>
#include <iterator>
#include <stdexcept>

namespace daqd::stream {

namespace {

constexpr int format_version = 1;
constexpr const char* format_name = "daqd-stream";
constexpr auto repeat_interval = std::chrono::seconds(1);

const char* compression_name(storage::compression_kind k) {
    return k == storage::compression_kind::bslz4 ? "bslz4" : "none";
}

template <class T>
void append_list(std::string& out, const char* key, const T* values, std::uint32_t n) {
    fmt::format_to(std::back_inserter(out), ",\"{}\":[", key);
    for (std::uint32_t i = 0; i < n; ++i) {
        if (i > 0) out += ',';
        fmt::format_to(std::back_inserter(out), "{}", values[i]);
    }
    out += ']';
}

// Z85 public key of a Z85 secret key.
std::string public_of(const std::string& secret) {
    char pub[41] = {};
    if (secret.size() != 40 || zmq_curve_public(pub, secret.c_str()) != 0)
        throw std::runtime_error("stream: the CURVE secret key is not 40 characters of Z85 (zmq_curve_public failed)");
    return pub;
}

// Consumers connected: the monitor's ACCEPTED and DISCONNECTED events, both
// carrying the connection's file descriptor. (HANDSHAKE_SUCCEEDED carries
// neither a descriptor nor the remote address in libzmq 4.3: it cannot be
// matched to its connection. A consumer refused by CURVE counts until its
// connection is dropped.)
void read_monitor(zmq::socket_t& monitor, std::set<int>& fds, telemetry::counter& peers) {
    if (!monitor) return;
    for (;;) {
        zmq::message_t event, address;
        if (!monitor.recv(event, zmq::recv_flags::dontwait)) break;
        if (event.more()) (void)monitor.recv(address, zmq::recv_flags::none);
        if (event.size() < 6) continue;
        std::uint16_t id = 0;
        std::int32_t fd = 0;
        std::memcpy(&id, event.data(), 2);
        std::memcpy(&fd, static_cast<const char*>(event.data()) + 2, 4);
        if (id == ZMQ_EVENT_ACCEPTED)
            fds.insert(fd);
        else if (id == ZMQ_EVENT_DISCONNECTED)
            fds.erase(fd);
    }
    peers.set(fds.size());
}

}  // namespace

std::string default_publish_endpoint(const std::string& listen) {
    if (listen.rfind("ipc://", 0) == 0) return listen + ".pub";
    const auto colon = listen.rfind(':');
    if (listen.rfind("tcp://", 0) != 0 || colon == std::string::npos || colon < 6)
        throw std::runtime_error(fmt::format("stream: cannot derive a publish endpoint from '{}'", listen));
    unsigned long port = 0;
    try {
        port = std::stoul(listen.substr(colon + 1));
    } catch (const std::exception&) {
        throw std::runtime_error(fmt::format("stream: '{}' has no numeric port", listen));
    }
    if (port == 0 || port >= 65535)
        throw std::runtime_error(fmt::format("stream: '{}': the publish port would be {}", listen, port + 1));
    return fmt::format("{}:{}", listen.substr(0, colon), port + 1);
}

sender::sender(stream_options options) : _options(std::move(options)), _ctx(1) {
    if (_options.pub_endpoints.empty())
        for (const auto& e : _options.push_endpoints) _options.pub_endpoints.push_back(default_publish_endpoint(e));
    set_preview_rate(_options.preview_rate);
    const bool curve = !_options.curve_secret_key.empty();
    if (curve) _public_key = public_of(_options.curve_secret_key);
    if (curve && !_options.curve_client_keys.empty()) {
        // ZAP (RFC 27): libzmq asks this socket about every CURVE handshake.
        for (const auto& k : _options.curve_client_keys) {
            std::uint8_t bin[32];
            if (k.size() != 40 || zmq_z85_decode(bin, k.c_str()) == nullptr)
                throw std::runtime_error(fmt::format("stream: client key '{}' is not 40 characters of Z85", k));
            _client_keys.insert(k);
        }
        _zap = zmq::socket_t(_ctx, zmq::socket_type::rep);
        _zap.set(zmq::sockopt::linger, 0);
        _zap.bind("inproc://zeromq.zap.01");
    }
    auto prepare = [&](zmq::socket_t& s, const std::vector<std::string>& endpoints, const char* what,
                       zmq::socket_t& monitor) {
        s.set(zmq::sockopt::linger, _options.linger_ms);
        if (curve) {
            s.set(zmq::sockopt::curve_server, 1);
            s.set(zmq::sockopt::curve_secretkey, _options.curve_secret_key);
            s.set(zmq::sockopt::zap_domain, "daqd-stream");
        }
        const std::string inproc = fmt::format("inproc://daqd-stream-monitor-{}-{}", what, static_cast<void*>(this));
        if (zmq_socket_monitor(s.handle(), inproc.c_str(), ZMQ_EVENT_ACCEPTED | ZMQ_EVENT_DISCONNECTED) != 0)
            throw std::runtime_error(fmt::format("stream: zmq_socket_monitor: {}", zmq_strerror(zmq_errno())));
        monitor = zmq::socket_t(_ctx, zmq::socket_type::pair);
        monitor.set(zmq::sockopt::linger, 0);
        monitor.connect(inproc);
        for (const auto& e : endpoints) {
            try {
                s.bind(e);
            } catch (const zmq::error_t& err) {
                throw std::runtime_error(fmt::format("stream: cannot bind the {} socket to {}: {}", what, e, err.what()));
            }
        }
    };
    _push = zmq::socket_t(_ctx, zmq::socket_type::push);
    _push.set(zmq::sockopt::sndhwm, _options.send_hwm);
    prepare(_push, _options.push_endpoints, "push", _push_monitor);
    _pub = zmq::socket_t(_ctx, zmq::socket_type::pub);
    _pub.set(zmq::sockopt::sndhwm, 1000);
    prepare(_pub, _options.pub_endpoints, "pub", _pub_monitor);
    spdlog::info("stream: chunks on PUSH {}, run messages and previews on PUB {}{}",
                 fmt::join(_options.push_endpoints, ", "), fmt::join(_options.pub_endpoints, ", "),
                 curve ? fmt::format(" (CURVE, server public key {}{})", _public_key,
                                     _client_keys.empty() ? "" : fmt::format(", {} client key(s)", _client_keys.size()))
                       : std::string());
}

sender::~sender() {
    _worker.stop();
    // Monitors first (their inproc peers go with the sockets), then the sockets
    // with their linger, then the context.
    if (_push) zmq_socket_monitor(_push.handle(), nullptr, 0);
    if (_pub) zmq_socket_monitor(_pub.handle(), nullptr, 0);
    _push_monitor.close();
    _pub_monitor.close();
    _push.close();
    _pub.close();
    _zap.close();
    _ctx.close();
}

void sender::set_preview_rate(double per_second) noexcept {
    _preview_period_ns.store(per_second > 0 ? static_cast<std::uint64_t>(1e9 / per_second) : 0,
                             std::memory_order_relaxed);
}

// ---- the writer thread ------------------------------------------------------

// The writer thread: true (and the chunk counted dropped, reason queue) when
// the queue to the sender's thread is full. Only this thread adds chunks, so
// the answer holds until it enqueues.
bool sender::queue_full(std::uint64_t frames) {
    std::lock_guard lock(_mutex);
    if (_queued_data < _options.queue_messages) return false;
    _counters.dropped_queue.add_shared(frames);
    _counters.chunks_dropped.add_shared(1);
    _run_dropped_queue += frames;
    ++_run_chunks_dropped_queue;
    return true;
}

// Chunks (`bounded`) after queue_full() said there is room; run messages always.
void sender::enqueue(item&& it, bool bounded) {
    {
        std::lock_guard lock(_mutex);
        if (bounded) _counters.queue_chunks.set(++_queued_data);
        _queue.push_back(std::move(it));
    }
    _ready.notify();
}

void sender::run_started(const storage::run_options& o) noexcept {
    try {
        _run = o.run_name;
        _seq = 0;
        _run_dropped_queue = 0;
        _run_chunks_dropped_queue = 0;
        nlohmann::json j{{"format", format_name},
                         {"version", format_version},
                         {"type", "run_start"},
                         {"run", o.run_name},
                         {"server_version", _options.server_version},
                         {"compression", compression_name(o.compression)},
                         {"chunk_bytes", o.chunk_bytes},
                         {"flush_interval_ms", o.flush_interval.count()},
                         {"calibrated", o.processing.calibrated},
                         {"config", o.config_text}};
        if (!o.stream_info.empty()) {
            auto extra = nlohmann::json::parse(o.stream_info, nullptr, false);
            if (extra.is_object())
                for (auto& [k, v] : extra.items()) j[k] = v;
        }
        item it;
        it.what = item::kind::run_start;
        it.run = o.run_name;
        it.json = j.dump();
        enqueue(std::move(it), false);
    } catch (const std::exception& e) {
        spdlog::error("stream: run '{}': cannot announce the run: {}", o.run_name, e.what());
    }
}

void sender::chunk_written(const storage::sunk_chunk& c) noexcept {
    try {
        const std::uint64_t seq = _seq++;  // a dropped chunk's number is never seen: consumers can tell
        if (queue_full(c.frames)) return;
        std::string h;
        h.reserve(512 + std::size_t{c.frames} * 40);
        fmt::format_to(std::back_inserter(h),
                       "{{\"format\":\"{}\",\"version\":{},\"type\":\"chunk\",\"run\":\"{}\",\"seq\":{},\"unit\":{},"
                       "\"channels\":{},\"file_index\":{},\"file_row\":{},\"frames\":{},\"compression\":\"{}\"",
                       format_name, format_version, _run, seq, c.unit_id, c.channels, c.file_index, c.file_row,
                       c.frames, compression_name(c.compression));
        append_list(h, "frame_number", c.frame_number, c.frames);
        append_list(h, "timestamp_ns", c.timestamp_ns, c.frames);
        append_list(h, "missing_packets", c.missing_packets, c.frames);
        h += ",\"arrays\":[";
        for (std::size_t i = 0; i < c.array_count; ++i) {
            const auto& a = c.arrays[i];
            fmt::format_to(std::back_inserter(h),
                           "{}{{\"name\":\"{}\",\"dtype\":\"{}\",\"shape\":[{},{}],\"first_row\":{},\"bytes\":{}}}",
                           i == 0 ? "" : ",", a.name, a.dtype, a.rows, c.channels, a.first_row, a.bytes);
        }
        h += "]}";
        std::uint64_t bytes = h.size();
        item it;
        it.run = _run;
        it.frames = c.frames;
        it.parts.reserve(1 + c.array_count);
        it.parts.emplace_back(h.data(), h.size());
        for (std::size_t i = 0; i < c.array_count; ++i) {
            it.parts.emplace_back(c.arrays[i].data, c.arrays[i].bytes);
            bytes += c.arrays[i].bytes;
        }
        it.bytes = bytes;
        enqueue(std::move(it), true);
    } catch (const std::exception& e) {
        spdlog::error("stream: run '{}': chunk not streamed: {}", _run, e.what());
    }
}

void sender::run_ended(const storage::run_stats& s) noexcept {
    try {
        nlohmann::json j{{"format", format_name},
                         {"version", format_version},
                         {"type", "run_end"},
                         {"run", s.run_name},
                         {"chunks", _seq},
                         {"last_seq", _seq == 0 ? nlohmann::json(nullptr) : nlohmann::json(_seq - 1)},
                         {"frames_written", s.frames_written},
                         {"failed", s.failed},
                         {"error", s.error},
                         {"frames_dropped_queue", _run_dropped_queue},
                         {"chunks_dropped_queue", _run_chunks_dropped_queue}};
        item it;
        it.what = item::kind::run_end;
        it.run = s.run_name;
        it.json = j.dump();
        enqueue(std::move(it), false);
        _run.clear();
    } catch (const std::exception& e) {
        spdlog::error("stream: run '{}': cannot announce the end of the run: {}", s.run_name, e.what());
    }
}

void sender::frame_seen(const processing::frame& f) noexcept {
    const std::uint64_t period = _preview_period_ns.load(std::memory_order_relaxed);
    if (period == 0 || f.samples == nullptr || f.channels == 0) return;
    const std::uint64_t now = f.assembled_ns != 0 ? f.assembled_ns : common::monotonic_ns();
    // Per frame: one look at a flat array (0: this unit never had a preview).
    if (f.unit_id >= _preview_due.size()) _preview_due.resize(std::size_t{f.unit_id} + 1, 0);
    std::uint64_t& due = _preview_due[f.unit_id];
    if (due != 0 && now < due) return;
    due = now + period;
    try {
        const bool cal = f.calibrated != nullptr;
        const std::string head = fmt::format(
            "preview u{} {{\"format\":\"{}\",\"version\":{},\"type\":\"preview\",\"run\":\"{}\",\"unit\":{},"
            "\"frame_number\":{},\"timestamp_ns\":{},\"missing_packets\":{},\"name\":\"{}\",\"dtype\":\"{}\","
            "\"shape\":[{}]}}\n",
            f.unit_id, format_name, format_version, _run, f.unit_id, f.frame_number, f.timestamp_ns, f.missing_packets,
            cal ? "calibrated" : "raw", cal ? "<f4" : "<u2", f.channels);
        const std::size_t payload = std::size_t{f.channels} * (cal ? sizeof(float) : sizeof(std::uint16_t));
        zmq::message_t msg(head.size() + payload);
        auto* p = static_cast<char*>(msg.data());
        std::memcpy(p, head.data(), head.size());
        std::memcpy(p + head.size(), cal ? static_cast<const void*>(f.calibrated) : f.samples, payload);
        {
            std::lock_guard lock(_mutex);
            _previews[f.unit_id] = std::move(msg);  // the latest only
        }
        _ready.notify();
    } catch (const std::exception& e) {
        spdlog::debug("stream: preview of unit {} not made: {}", f.unit_id, e.what());
    }
}

// ---- the sender thread ------------------------------------------------------

void sender::publish(const std::string& text, bool count) {
    // "run {json}": subscribers filter on the "run " prefix.
    zmq::message_t msg(4 + text.size());
    std::memcpy(msg.data(), "run ", 4);
    std::memcpy(static_cast<char*>(msg.data()) + 4, text.data(), text.size());
    if (_pub.send(msg, zmq::send_flags::dontwait) && count) _counters.run_messages.add();
}

void sender::send_data(item& it) {
    const char* reason = nullptr;
    try {
        auto sent = _push.send(it.parts[0], it.parts.size() > 1 ? zmq::send_flags::sndmore | zmq::send_flags::dontwait
                                                                 : zmq::send_flags::dontwait);
        if (!sent) {
            reason = _push_peers.empty() ? "no_peer" : "hwm";
        } else {
            // Once the first part is taken, ZeroMQ takes the rest of the message.
            for (std::size_t i = 1; i < it.parts.size(); ++i)
                (void)_push.send(it.parts[i], i + 1 < it.parts.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
        }
    } catch (const zmq::error_t& e) {
        reason = "error";
        spdlog::error("stream: sending a chunk of run '{}': {}", it.run, e.what());
    }
    if (reason == nullptr) {
        _counters.frames_sent.add(it.frames);
        _counters.bytes_sent.add(it.bytes);
        _counters.chunks_sent.add();
        _tally.frames_sent += it.frames;
        ++_tally.chunks_sent;
        if (_warned_dropping) {
            _warned_dropping = false;
            spdlog::info("stream: chunks go out again ({} frames dropped meanwhile)", _dropped_since_warning);
        }
        return;
    }
    (std::strcmp(reason, "hwm") == 0 ? _counters.dropped_hwm : _counters.dropped_no_peer).add(it.frames);
    _counters.chunks_dropped.add_shared(1);
    _tally.frames_dropped += it.frames;
    ++_tally.chunks_dropped;
    _tally.dropped_by_reason[reason] += it.frames;
    if (!_warned_dropping) {
        _warned_dropping = true;
        _dropped_since_warning = 0;
        spdlog::warn("stream: dropping chunks ({}): {}", reason,
                     std::strcmp(reason, "no_peer") == 0 ? "no consumer is connected"
                                                         : "every consumer's buffer is full (consumers too slow)");
    }
    _dropped_since_warning += it.frames;
}

bool sender::send_pending() {
    std::deque<item> batch;
    std::map<std::uint16_t, zmq::message_t> previews;
    {
        std::lock_guard lock(_mutex);
        batch.swap(_queue);
        previews.swap(_previews);
        _queued_data = 0;
        _counters.queue_chunks.set(0);
    }
    for (auto& it : batch) {
        switch (it.what) {
        case item::kind::data:
            send_data(it);
            break;
        case item::kind::run_start:
            _tally = {};
            _start_json = it.json;
            _next_repeat = std::chrono::steady_clock::now() + repeat_interval;
            publish(it.json, true);
            break;
        case item::kind::run_end: {
            auto j = nlohmann::json::parse(it.json);
            const auto dq = j.value("frames_dropped_queue", std::uint64_t{0});
            const auto cq = j.value("chunks_dropped_queue", std::uint64_t{0});
            auto by_reason = _tally.dropped_by_reason;
            if (dq > 0) by_reason["queue"] += dq;
            j["frames_sent"] = _tally.frames_sent;
            j["chunks_sent"] = _tally.chunks_sent;
            j["frames_dropped"] = _tally.frames_dropped + dq;
            j["chunks_dropped"] = _tally.chunks_dropped + cq;
            j["frames_dropped_by_reason"] = by_reason;
            j.erase("frames_dropped_queue");
            j.erase("chunks_dropped_queue");
            publish(j.dump(), true);
            spdlog::info("stream: run '{}' ended: {} frames in {} chunks sent, {} frames dropped", it.run,
                         _tally.frames_sent, _tally.chunks_sent, _tally.frames_dropped + dq);
            _start_json.clear();
            break;
        }
        }
    }
    for (auto& [unit, msg] : previews)
        if (_pub.send(msg, zmq::send_flags::dontwait)) _counters.preview_frames.add();
    return !batch.empty() || !previews.empty();
}

void sender::poll_monitors() {
    read_monitor(_push_monitor, _push_peers, _counters.peers_push);
    read_monitor(_pub_monitor, _pub_peers, _counters.peers_pub);
}

// ZAP (RFC 27): admits CURVE clients whose public key is listed.
void sender::serve_zap() {
    if (!_zap) return;
    for (;;) {
        std::vector<zmq::message_t> req;
        zmq::message_t part;
        if (!_zap.recv(part, zmq::recv_flags::dontwait)) return;
        req.push_back(std::move(part));
        while (req.back().more()) {
            zmq::message_t next;
            (void)_zap.recv(next, zmq::recv_flags::none);
            req.push_back(std::move(next));
        }
        // version, request id, domain, address, identity, mechanism, credentials...
        std::string status = "400", text = "refused";
        std::string key;
        if (req.size() >= 7 && req[5].to_string() == "CURVE" && req[6].size() == 32) {
            char z85[41] = {};
            if (zmq_z85_encode(z85, static_cast<const std::uint8_t*>(req[6].data()), 32) != nullptr) key = z85;
            if (_client_keys.count(key) != 0) status = "200", text = "OK";
        }
        if (status != "200") {
            _counters.auth_refused.add();
            spdlog::warn("stream: refused a consumer from {} (CURVE key {} is not in stream.curve_client_keys_file)",
                         req.size() > 3 ? req[3].to_string() : "?", key.empty() ? "?" : key);
        }
        const std::string version = req.empty() ? "1.0" : req[0].to_string();
        const std::string id = req.size() > 1 ? req[1].to_string() : "";
        _zap.send(zmq::buffer(version), zmq::send_flags::sndmore);
        _zap.send(zmq::buffer(id), zmq::send_flags::sndmore);
        _zap.send(zmq::buffer(status), zmq::send_flags::sndmore);
        _zap.send(zmq::buffer(text), zmq::send_flags::sndmore);
        _zap.send(zmq::buffer(key), zmq::send_flags::sndmore);
        _zap.send(zmq::str_buffer(""), zmq::send_flags::none);
    }
}

bool sender::pass() {
    serve_zap();
    poll_monitors();
    const bool worked = send_pending();
    if (!_start_json.empty() && std::chrono::steady_clock::now() >= _next_repeat) {
        // For consumers that subscribed after the start.
        auto j = nlohmann::json::parse(_start_json);
        j["repeat"] = true;
        publish(j.dump(), true);
        _next_repeat = std::chrono::steady_clock::now() + repeat_interval;
    }
    return worked;
}

bool sender::input_waiting() {
    std::lock_guard lock(_mutex);
    return !_queue.empty() || !_previews.empty();
}

std::chrono::microseconds sender::sleep_limit() const {
    // Monitor events, ZAP requests and the start message's repeat need a look now and then.
    return std::chrono::microseconds(_zap ? 20'000 : 100'000);
}

void sender::drain() {
    poll_monitors();
    send_pending();
}

// ---- telemetry ----------------------------------------------------------------

namespace {

using telemetry::kind;

const telemetry::descriptor endpoint_info{"daq_stream_endpoint_info",
                                          "The stream's endpoints (value 1): socket=push carries every chunk, "
                                          "socket=pub run messages and previews",
                                          kind::gauge, "socket,endpoint"};
const telemetry::descriptor peers{"daq_stream_peers", "Consumers connected to the stream's socket (TCP/IPC connections accepted and not closed)",
                                  kind::gauge, "socket"};
const telemetry::descriptor frames_sent{"daq_stream_frames_sent_total",
                                        "Frames handed to ZeroMQ on the stream's PUSH socket", kind::counter};
const telemetry::descriptor bytes_sent{"daq_stream_bytes_sent_total",
                                       "Bytes of the chunk messages handed to ZeroMQ (headers and arrays)",
                                       kind::counter};
const telemetry::descriptor chunks_sent{"daq_stream_chunks_sent_total", "Chunk messages handed to ZeroMQ",
                                        kind::counter};
const telemetry::descriptor frames_dropped{
    "daq_stream_frames_dropped_total",
    "Frames not streamed (the file has them): reason=queue (the sender thread behind), no_peer (no consumer), hwm "
    "(every consumer's buffer full)",
    kind::counter, "reason"};
const telemetry::descriptor chunks_dropped{"daq_stream_chunks_dropped_total",
                                           "Chunk messages not streamed (their sequence numbers never arrive)",
                                           kind::counter};
const telemetry::descriptor run_messages{"daq_stream_run_messages_total",
                                         "Run start/end messages published (repeats of the start included)",
                                         kind::counter};
const telemetry::descriptor preview_frames{"daq_stream_preview_frames_total", "Preview frames published",
                                           kind::counter};
const telemetry::descriptor auth_refused{"daq_stream_auth_refused_total",
                                         "Consumers refused: their CURVE key is not in stream.curve_client_keys_file",
                                         kind::counter};
const telemetry::descriptor queue_chunks{"daq_stream_queue_chunks", "Chunk messages waiting for the sender thread",
                                         kind::gauge};

}  // namespace

void sender::report(telemetry::snapshot& out) const {
    for (const auto& e : _options.push_endpoints) out.add(endpoint_info, {{"socket", "push"}, {"endpoint", e}}, 1);
    for (const auto& e : _options.pub_endpoints) out.add(endpoint_info, {{"socket", "pub"}, {"endpoint", e}}, 1);
    out.add(peers, {{"socket", "push"}}, static_cast<double>(_counters.peers_push.get()));
    out.add(peers, {{"socket", "pub"}}, static_cast<double>(_counters.peers_pub.get()));
    out.add(frames_sent, {}, static_cast<double>(_counters.frames_sent.get()));
    out.add(bytes_sent, {}, static_cast<double>(_counters.bytes_sent.get()));
    out.add(chunks_sent, {}, static_cast<double>(_counters.chunks_sent.get()));
    out.add(frames_dropped, {{"reason", "queue"}}, static_cast<double>(_counters.dropped_queue.get()));
    out.add(frames_dropped, {{"reason", "no_peer"}}, static_cast<double>(_counters.dropped_no_peer.get()));
    out.add(frames_dropped, {{"reason", "hwm"}}, static_cast<double>(_counters.dropped_hwm.get()));
    out.add(chunks_dropped, {}, static_cast<double>(_counters.chunks_dropped.get()));
    out.add(run_messages, {}, static_cast<double>(_counters.run_messages.get()));
    out.add(preview_frames, {}, static_cast<double>(_counters.preview_frames.get()));
    out.add(auth_refused, {}, static_cast<double>(_counters.auth_refused.get()));
    out.add(queue_chunks, {}, static_cast<double>(_counters.queue_chunks.get()));
}

}  // namespace daqd::stream
