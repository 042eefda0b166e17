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
// Owner: the daqd executable (through service). start()/stop() from one
// control thread; stop() joins both threads and is idempotent.
#include "daqd/config/config.hpp"
#include "daqd/web/api.hpp"
#include "daqd/web/host_check.hpp"
#include "daqd/web/sources.hpp"
#include "daqd/web/token.hpp"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace daqd::web {

class server {
public:
    // Binds and listens (throws std::runtime_error naming the address).
    server(const config::endpoint& ep, api& handler);
    ~server();
    server(const server&) = delete;
    server& operator=(const server&) = delete;

    void start();
    void stop();
    [[nodiscard]] std::uint16_t port() const noexcept;

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
    [[nodiscard]] std::uint16_t port() const noexcept { return _server->port(); }
    [[nodiscard]] const token_setup& token() const noexcept { return _token; }

private:
    token_setup _token;
    std::unique_ptr<api> _api;
    std::unique_ptr<server> _server;
    bool _stopped = false;
};

}  // namespace daqd::web
