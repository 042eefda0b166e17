// The HTTP/1.1 server (server.hpp): Boost.Beast on one io_context thread,
// plus a worker thread for requests that wait for the writer thread.
#include "daqd/web/server.hpp"

#include <boost/asio/dispatch.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <array>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <fstream>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>

namespace daqd::web {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

namespace {
constexpr std::size_t max_sessions = 64;
constexpr auto io_timeout = std::chrono::seconds(30);
constexpr std::size_t max_header_bytes = 16 * 1024;
}  // namespace

struct server::impl {
    api& handler;
    std::atomic<std::size_t> sessions{0};  // before ioc: sessions left in it are destroyed with it
    net::io_context ioc{1};  // destroyed after everything below that refers to it
    tcp::acceptor acceptor{ioc};
    net::steady_timer sampler{ioc};
    net::steady_timer accept_retry{ioc};
    std::thread io_thread;

    std::mutex jobs_mutex;
    std::condition_variable jobs_cv;
    std::deque<std::function<void()>> jobs;  // guarded by jobs_mutex
    bool jobs_stop = false;                  // guarded by jobs_mutex
    std::thread worker;
    bool started = false;
    bool stopped = false;

    explicit impl(api& h) : handler(h) {}

    void post_job(std::function<void()> job) {
        {
            std::lock_guard lock(jobs_mutex);
            if (jobs_stop) return;
            jobs.push_back(std::move(job));
        }
        jobs_cv.notify_one();
    }

    void worker_loop() {
        for (;;) {
            std::function<void()> job;
            {
                std::unique_lock lock(jobs_mutex);
                jobs_cv.wait(lock, [&] { return jobs_stop || !jobs.empty(); });
                if (jobs_stop) return;
                job = std::move(jobs.front());
                jobs.pop_front();
            }
            job();
        }
    }

    void accept();
    void sample() {
        sampler.expires_after(std::chrono::seconds(1));
        sampler.async_wait([this](beast::error_code ec) {
            if (ec) return;
            handler.sample(std::chrono::steady_clock::now());
            sample();
        });
    }
};

namespace {

class session : public std::enable_shared_from_this<session> {
public:
    session(tcp::socket&& socket, server::impl& srv) : _stream(std::move(socket)), _srv(srv) { ++_srv.sessions; }
    ~session() { --_srv.sessions; }

    void run() { net::dispatch(_stream.get_executor(), beast::bind_front_handler(&session::read, shared_from_this())); }

private:
    void read() {
        _parser.emplace();
        _parser->body_limit(api::max_body_bytes);
        _parser->header_limit(max_header_bytes);
        _stream.expires_after(io_timeout);
        http::async_read(_stream, _buffer, *_parser, beast::bind_front_handler(&session::on_read, shared_from_this()));
    }

    void on_read(beast::error_code ec, std::size_t) {
        if (ec) {
            const bool parse_error = ec.category() == http::make_error_code(http::error::bad_method).category() &&
                                     ec != http::error::end_of_stream && ec != http::error::partial_message;
            if (!parse_error) return close();  // peer gone, timeout, server stopping
            unsigned status = 400;
            std::string what = "malformed HTTP request: " + ec.message();
            if (ec == http::error::body_limit) {
                status = 413;
                what = fmt::format("request body larger than {} bytes", api::max_body_bytes);
            } else if (ec == http::error::header_limit) {
                status = 431;
                what = fmt::format("request header larger than {} bytes", max_header_bytes);
            }
            spdlog::debug("http: {} from {}: {}", status, peer(), ec.message());
            _keep_alive = false;  // the stream cannot be trusted any more
            _version = 11;
            return send(api::error(status, what));
        }
        auto& req = _parser->get();
        request r;
        r.method = std::string(req.method_string());
        r.target = std::string(req.target());
        if (auto it = req.find(http::field::authorization); it != req.end()) r.authorization = std::string(it->value());
        r.body = std::move(req.body());
        _keep_alive = req.keep_alive();
        _version = req.version();
        // For debug logs only; taken here, on the io thread, which owns the socket.
        std::string who = spdlog::should_log(spdlog::level::debug) ? peer() : std::string();
        if (_srv.handler.is_blocking(r)) {
            // Waits for the writer thread: on the worker, the answer comes back here.
            // The worker touches neither the socket nor the session's state.
            auto self = shared_from_this();
            auto io = _stream.get_executor();
            _srv.post_job([self, io, r = std::move(r), who = std::move(who)]() mutable {
                response res = handle(self->_srv.handler, r, who);
                net::post(io, [self, res = std::move(res)]() mutable { self->send(std::move(res)); });
            });
            return;
        }
        send(handle(_srv.handler, r, who));
    }

    static response handle(api& handler, const request& r, const std::string& who) {
        try {
            response res = handler.handle(r);
            if (res.status >= 400) spdlog::debug("http: {} {} -> {} from {}", r.method, r.target, res.status, who);
            return res;
        } catch (const std::exception& e) {
            spdlog::debug("http: {} {} failed: {}", r.method, r.target, e.what());
            return api::error(500, e.what());
        }
    }

    void send(response res) {
        _srv.handler.count(res.status);
        auto msg = std::make_shared<http::response<http::string_body>>(static_cast<http::status>(res.status), _version);
        msg->set(http::field::server, "daqd");
        if (!res.content_type.empty()) msg->set(http::field::content_type, res.content_type);
        msg->set(http::field::cache_control, "no-store");
        msg->set("X-Content-Type-Options", "nosniff");
        for (const auto& [k, v] : res.headers) msg->set(k, v);
        msg->body() = std::move(res.body);
        msg->keep_alive(_keep_alive);
        try {
            msg->prepare_payload();
        } catch (const std::exception&) {
            msg->body().clear();
        }
        _stream.expires_after(io_timeout);
        http::async_write(_stream, *msg, [self = shared_from_this(), msg](beast::error_code ec, std::size_t) {
            if (ec) return self->close();
            if (!msg->keep_alive()) return self->linger();
            self->read();
        });
    }

    void close() {
        beast::error_code ec;
        _stream.socket().shutdown(tcp::socket::shutdown_send, ec);
    }

    // After the last answer: stop sending, then read and drop what the peer
    // still sends (an unread request body) for a moment before closing, so
    // the kernel does not reset the connection and lose the answer.
    void linger() {
        close();
        _stream.expires_after(std::chrono::seconds(2));
        drain();
    }
    void drain() {
        _stream.async_read_some(net::buffer(_scratch), [self = shared_from_this()](beast::error_code ec, std::size_t n) {
            self->_drained += n;
            if (ec || self->_drained > (1u << 20)) return;  // peer closed, timeout, or enough
            self->drain();
        });
    }

    std::string peer() {
        beast::error_code ec;
        const auto ep = _stream.socket().remote_endpoint(ec);
        return ec ? std::string("?") : fmt::format("{}:{}", ep.address().to_string(), ep.port());
    }

    beast::tcp_stream _stream;
    beast::flat_buffer _buffer;
    std::optional<http::request_parser<http::string_body>> _parser;
    server::impl& _srv;
    bool _keep_alive = false;
    unsigned _version = 11;
    std::array<char, 4096> _scratch{};
    std::size_t _drained = 0;
};

}  // namespace

void server::impl::accept() {
    acceptor.async_accept([this](beast::error_code ec, tcp::socket socket) {
        if (ec == net::error::operation_aborted) return;
        if (ec) {
            // Out of descriptors and the like: try again a little later.
            spdlog::debug("http: accept failed: {}", ec.message());
            accept_retry.expires_after(std::chrono::milliseconds(100));
            accept_retry.async_wait([this](beast::error_code e) {
                if (!e) accept();
            });
            return;
        }
        if (sessions.load() >= max_sessions) {
            spdlog::debug("http: {} connections open, refusing another", sessions.load());
            beast::error_code ignored;
            socket.close(ignored);
        } else {
            std::make_shared<session>(std::move(socket), *this)->run();
        }
        accept();
    });
}

server::server(const config::endpoint& ep, api& handler) : _impl(std::make_unique<impl>(handler)) {
    beast::error_code ec;
    const auto address = net::ip::make_address(ep.host, ec);
    if (ec) throw std::runtime_error(fmt::format("http: '{}' is not an IP address", ep.host));
    const tcp::endpoint where(address, ep.port);
    auto& a = _impl->acceptor;
    auto fail = [&](const char* what) {
        throw std::runtime_error(fmt::format("http: cannot {} {}: {}", what, ep.to_string(), ec.message()));
    };
    a.open(where.protocol(), ec);
    if (ec) fail("open a socket for");
    a.set_option(net::socket_base::reuse_address(true), ec);
    if (ec) fail("set SO_REUSEADDR for");
    a.bind(where, ec);
    if (ec) fail("listen on");
    a.listen(net::socket_base::max_listen_connections, ec);
    if (ec) fail("listen on");
}

server::~server() { stop(); }

std::uint16_t server::port() const noexcept {
    beast::error_code ec;
    const auto ep = _impl->acceptor.local_endpoint(ec);
    return ec ? 0 : ep.port();
}

void server::start() {
    if (_impl->started) return;
    _impl->started = true;
    _impl->accept();
    _impl->sample();
    _impl->handler.sample(std::chrono::steady_clock::now());
    _impl->worker = std::thread([this] { _impl->worker_loop(); });
    _impl->io_thread = std::thread([this] {
        for (;;) {
            try {
                _impl->ioc.run();
                return;
            } catch (const std::exception& e) {
                // A handler threw: log it and keep serving.
                spdlog::error("http: unexpected error: {}", e.what());
            }
        }
    });
}

void server::stop() {
    if (!_impl || _impl->stopped) return;
    _impl->stopped = true;
    {
        std::lock_guard lock(_impl->jobs_mutex);
        _impl->jobs_stop = true;
    }
    _impl->jobs_cv.notify_all();
    if (_impl->worker.joinable()) _impl->worker.join();  // a request in progress finishes first
    _impl->ioc.stop();
    if (_impl->io_thread.joinable()) _impl->io_thread.join();
    beast::error_code ec;
    _impl->acceptor.close(ec);
    std::lock_guard lock(_impl->jobs_mutex);
    _impl->jobs.clear();
}

// ---- service ---------------------------------------------------------------

service::service(const config::config& cfg, daq_view view, run_controls controls, std::vector<host_check> host_checks) {
    const auto ep = config::endpoint::parse(cfg.http.listen, "http.listen");
    _token = setup_token(cfg);
    try {
        _api = std::make_unique<api>(std::move(view), std::move(controls), _token.token, std::move(host_checks));
        _server = std::make_unique<server>(ep, *_api);
    } catch (...) {
        if (_token.generated) std::filesystem::remove(_token.file);
        throw;
    }
    _server->start();
    spdlog::info("http: status page http://{}/ , metrics /metrics, control API /api/v1/ (token {})", ep.to_string(),
                 _token.file.empty() ? std::string("from http.token") : "in " + _token.file.string());
}

service::~service() { stop(); }

void service::stop() {
    if (_stopped) return;
    _stopped = true;
    if (_server) _server->stop();
    if (_token.generated) {
        // Remove it unless another daqd wrote its own since.
        std::ifstream in(_token.file);
        std::string line;
        std::getline(in, line);
        in.close();
        std::error_code ec;
        if (line == _token.token) std::filesystem::remove(_token.file, ec);
    }
}

}  // namespace daqd::web
