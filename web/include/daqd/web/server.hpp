#pragma once
// The HTTP/1.1 server (Boost.Beast on Asio) in front of web::api, and
// web::service, which sets the whole web side of daqd up.
//
// server: one io_context on its own thread (accepting, parsing, answering,
// the once-a-second rate sampling) plus one worker thread for the requests
// that wait for the writer thread (run start/stop/list), so a slow writer
// never stalls /metrics. Never on the data path. Parser errors answer 400
// (413 for bodies over 64 KiB) and close the connection; every answer is
// counted in daq_http_requests_total{code}; request errors are logged at
// debug level only.
//
// Slow and many clients (server_limits): a request header must arrive within
// header_timeout of the connection (or of the first byte of a kept-alive
// connection's next request), its body within body_timeout; at most
// max_connections are held, and when a new one comes beyond that the one
// that has waited longest for (the rest of) its request is closed to make
// room — so /metrics and run control are served while slow or idle clients
// hold every slot. Counted in daq_http_connections_dropped_total{reason}.
//
// Owner: the daqd executable (through service). start()/stop() from one
// control thread; stop() joins both threads and is idempotent. The threads
// are named daqd-http (io) and daqd-http-run (worker) and pinned to `cpus`
// when given (threads.http_cpus).
#include "daqd/config/config.hpp"
#include "daqd/web/api.hpp"
#include "daqd/common/host_check.hpp"
#include "daqd/web/sources.hpp"
#include "daqd/web/token.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace daqd::web {

// Deadlines and the connection cap (web/README.md, "Slow and many clients").
struct server_limits {
    // Clamped at start to half the process's descriptor limit (RLIMIT_NOFILE),
    // so the web side never takes the descriptors run files and sockets need.
    std::size_t max_connections = 512;
    std::chrono::milliseconds header_timeout{5000};  // connection (or first byte) -> whole header
    std::chrono::milliseconds body_timeout{10000};   // header -> whole body (at most 64 KiB)
    std::chrono::milliseconds idle_timeout{30000};   // kept alive: answer -> first byte of the next request
    std::chrono::milliseconds write_timeout{10000};  // an answer taken by the client
};

class server {
public:
    // Binds and listens (throws std::runtime_error naming the address).
    server(const config::endpoint& ep, api& handler, server_limits limits = {}, std::vector<unsigned> cpus = {});
    ~server();
    server(const server&) = delete;
    server& operator=(const server&) = delete;

    void start();
    void stop();
    [[nodiscard]] std::uint16_t port() const noexcept;
    // max_connections after clamping to the descriptor limit.
    [[nodiscard]] std::size_t max_connections() const noexcept;
    [[nodiscard]] const server_limits& limits() const noexcept;

    struct impl;  // server.cpp (public only for its connection type)

private:
    std::unique_ptr<impl> _impl;
};

// The web side of one daqd: token, api, server. Construct after the pipeline
// started; destroy (or stop()) before the pipeline stops.
class service {
public:
    // Throws std::runtime_error when the server cannot be set up (address in
    // use, token file unwritable); daqd then runs without it.
    service(const config::config& cfg, daq_view view, run_controls controls, std::vector<host_check> host_checks);
    ~service();
    service(const service&) = delete;
    service& operator=(const service&) = delete;

    void stop();
    // Main thread, on SIGHUP: the token (http.token, or http.token_file read
    // again; with neither, the one generated at start stays) and
    // http.allowed_hosts of `fresh`, from the next request on. Throws
    // std::runtime_error (the token file unreadable): nothing changes then.
    void reload_access(const config::config& fresh);
    [[nodiscard]] std::uint16_t port() const noexcept { return _server->port(); }
    [[nodiscard]] const token_setup& token() const noexcept { return _token; }

private:
    token_setup _token;
    std::unique_ptr<api> _api;
    std::unique_ptr<server> _server;
    bool _stopped = false;
};

}  // namespace daqd::web
