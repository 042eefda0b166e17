#pragma once
// The live stream (docs/STREAM.md is the contract; stream/README.md the
// design): every chunk the writer stores goes out on a ZeroMQ PUSH socket,
// the very bytes stored (compressed when the run is), with a JSON header;
// run start and end, and a rate-limited preview of the latest frames, go out
// on a PUB socket every consumer subscribes to.
//
// Threads: the writer thread hands chunks over (chunk_sink: a copy into
// ZeroMQ messages, queued under a mutex, at most queue_messages chunks); the
// sender's own thread (a common::worker, "daqd-stream") owns the sockets and
// sends with ZMQ_DONTWAIT. Nothing here ever waits for a consumer: a chunk
// that finds the queue full, no peer, or every peer's high-water mark
// reached is dropped and counted by reason, and its sequence number is never
// seen by any consumer. Run messages are never dropped by daqd (they bypass
// the queue's bound); a PUB subscriber too slow for them loses them in
// ZeroMQ, which is why the start message is repeated every second.
//
// Security: a tcp:// endpoint off loopback needs CURVE (config rule); with a
// secret key every socket is a CURVE server, and with a list of client
// public keys a ZAP handler on the sender's thread admits only those.
#include "daqd/common/event.hpp"
#include "daqd/common/telemetry.hpp"
#include "daqd/common/worker.hpp"
#include "daqd/storage/chunk_sink.hpp"

#include <zmq.hpp>

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

namespace daqd::stream {

struct stream_options {
    std::vector<std::string> push_endpoints;  // "tcp://127.0.0.1:5555", "ipc:///run/daqd/stream"
    std::vector<std::string> pub_endpoints;   // run messages and previews
    int send_hwm = 32;                        // ZeroMQ messages buffered per peer (ZMQ_SNDHWM of PUSH)
    std::size_t queue_messages = 64;          // chunks waiting for the sender thread
    double preview_rate = 2.0;                // preview frames per second per unit; 0: none
    std::string curve_secret_key;             // Z85, 40 characters; "": no CURVE
    std::vector<std::string> curve_client_keys;  // Z85 public keys admitted; empty: any client knowing ours
    int linger_ms = 1000;                     // at shutdown, how long queued messages may still go out
    std::string server_version;
};

// "tcp://HOST:PORT" with PORT + 1, "ipc://PATH" with PATH + ".pub": the
// publish endpoint of a listen endpoint when none is configured.
std::string default_publish_endpoint(const std::string& listen);

// Counters: the writer thread writes the queue ones, the sender thread the rest.
struct stream_counters {
    telemetry::counter frames_sent;
    telemetry::counter bytes_sent;     // every part of the data messages
    telemetry::counter chunks_sent;
    telemetry::counter dropped_queue;  // frames: the queue to the sender was full
    telemetry::counter dropped_no_peer;  // frames: no consumer connected
    telemetry::counter dropped_hwm;    // frames: every consumer's buffer full
    telemetry::counter chunks_dropped;
    telemetry::counter run_messages;   // start/end (repeats included) published
    telemetry::counter preview_frames;
    telemetry::counter auth_refused;   // ZAP: client keys not in the list
    telemetry::counter peers_push;     // gauge
    telemetry::counter peers_pub;      // gauge
    telemetry::counter queue_chunks;   // gauge
};

class sender final : public storage::chunk_sink, private common::worker_body {
public:
    // Binds every endpoint; throws std::runtime_error naming the endpoint
    // (address in use, bad endpoint, bad key).
    explicit sender(stream_options options);
    ~sender() override;
    sender(const sender&) = delete;
    sender& operator=(const sender&) = delete;

    [[nodiscard]] common::worker& worker() noexcept { return _worker; }
    [[nodiscard]] const stream_counters& counters() const noexcept { return _counters; }
    [[nodiscard]] const stream_options& options() const noexcept { return _options; }
    [[nodiscard]] const std::string& curve_public_key() const noexcept { return _public_key; }
    // Any thread.
    void report(telemetry::snapshot& out) const;
    // Any thread: frames per second a unit's preview is sent at (0: none).
    void set_preview_rate(double per_second) noexcept;

    // chunk_sink (the writer thread).
    void run_started(const storage::run_options& options) noexcept override;
    void chunk_written(const storage::sunk_chunk& chunk) noexcept override;
    void run_ended(const storage::run_stats& stats) noexcept override;
    void frame_seen(const processing::frame& f) noexcept override;

private:
    struct item {
        enum class kind { data, run_start, run_end } what = kind::data;
        std::vector<zmq::message_t> parts;  // data: header, arrays
        std::string run;
        std::uint64_t frames = 0;
        std::uint64_t bytes = 0;
        std::string json;  // run messages (the end one is completed by the sender thread)
    };
    struct run_tally {  // one run's stream, as the sender thread saw it
        std::uint64_t frames_sent = 0, chunks_sent = 0, frames_dropped = 0, chunks_dropped = 0;
        std::map<std::string, std::uint64_t> dropped_by_reason;
    };

    bool pass() override;
    bool input_waiting() override;
    [[nodiscard]] std::chrono::microseconds sleep_limit() const override;
    void drain() override;
    bool send_pending();
    void send_data(item& it);
    void publish(const std::string& text, bool count);
    void poll_monitors();
    void serve_zap();
    bool queue_full(std::uint64_t frames);
    void enqueue(item&& it, bool bounded);

    stream_options _options;
    stream_counters _counters;
    std::string _public_key;
    zmq::context_t _ctx;
    zmq::socket_t _push;
    zmq::socket_t _pub;
    zmq::socket_t _push_monitor;
    zmq::socket_t _pub_monitor;
    zmq::socket_t _zap;  // bound only with curve_client_keys
    std::set<std::string> _client_keys;  // Z85
    std::set<int> _push_peers, _pub_peers;  // connections accepted and not closed (descriptors)

    // Writer thread → sender thread.
    mutable std::mutex _mutex;
    std::deque<item> _queue;                 // guarded by _mutex
    std::size_t _queued_data = 0;            // guarded by _mutex
    std::map<std::uint16_t, zmq::message_t> _previews;  // latest per unit, guarded by _mutex
    common::wake_event _ready;

    // Writer thread state.
    std::string _run;
    std::uint64_t _seq = 0;              // of the active run: the next chunk's
    std::uint64_t _run_dropped_queue = 0;  // frames of the active run dropped at the queue
    std::uint64_t _run_chunks_dropped_queue = 0;
    std::vector<std::uint64_t> _preview_due;  // by unit id: the next preview's time (monotonic ns), 0 = now
    std::atomic<std::uint64_t> _preview_period_ns{0};

    // Sender thread state.
    std::string _start_json;  // of the active run ("": none), repeated every second
    std::chrono::steady_clock::time_point _next_repeat{};
    run_tally _tally;
    bool _warned_dropping = false;
    std::uint64_t _dropped_since_warning = 0;

    common::worker _worker{"daqd-stream", _ready, *this};  // last: its thread ends before the rest goes
};

}  // namespace daqd::stream
