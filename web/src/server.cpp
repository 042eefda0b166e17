// The HTTP/1.1 server (server.hpp): Boost.Beast on one io_context thread,
// plus a worker thread for requests that wait for the writer thread.
#include "daqd/web/server.hpp"

#include "daqd/common/worker.hpp"

#include <boost/asio/dispatch.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <sys/resource.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <fstream>
#include <functional>
#include <list>
#include <mutex>
#include <optional>
#include <thread>

namespace daqd::web {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

namespace {
constexpr std::size_t max_header_bytes = 16 * 1024;
constexpr std::size_t min_connections = 16;
constexpr std::size_t read_chunk = 4096;
constexpr auto linger_time = std::chrono::seconds(2);

// The connection cap: at most half the descriptors this process may open
// (but never below 16 because of that).
std::size_t clamp_to_descriptors(std::size_t wanted) {
    wanted = std::max<std::size_t>(wanted, 1);
    rlimit lim{};
    if (::getrlimit(RLIMIT_NOFILE, &lim) != 0 || lim.rlim_cur == RLIM_INFINITY) return wanted;
    const auto half = static_cast<std::size_t>(lim.rlim_cur / 2);
    return std::min(wanted, std::max(min_connections, half));
}
}  // namespace

struct server::impl {
    // What the accept loop needs of a connection (session, below). io thread only.
    struct connection {
        enum class phase {
            waiting,    // for (the rest of) a request, or writing an answer: may be evicted
            answering,  // its request is being handled (on the worker): kept
            lingering,  // answered, closing: evicted first, not counted
        };
        phase state = phase::waiting;
        std::list<connection*>::iterator where;
        bool linked = false;
        virtual void evict() = 0;

    protected:
        ~connection() = default;
    };

    api& handler;
    server_limits limits;
    std::size_t max_connections;
    // Open connections in eviction order (io thread): lingering ones first,
    // then the others by when they began to wait for their current request,
    // oldest first. Declared before ioc: sessions left in it are destroyed
    // with it and unlink themselves.
    std::list<connection*> connections;
    bool evicting = false;            // the cap was reached; logged once, and once when it eased
    std::uint64_t evicted_since = 0;  // counted while evicting, for that second log line
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
    std::vector<unsigned> cpus;  // both threads' (threads.http_cpus); empty: not pinned

    impl(api& h, server_limits l)
        : handler(h), limits(l), max_connections(clamp_to_descriptors(l.max_connections)) {
        publish();
    }

    void publish() { handler.http_metrics().set_connections(connections.size(), max_connections); }

    void link(connection& c) {
        c.where = connections.insert(connections.end(), &c);
        c.linked = true;
        publish();
    }
    void unlink(connection& c) {
        if (!c.linked) return;
        connections.erase(c.where);
        c.linked = false;
        publish();
        if (evicting && connections.size() <= max_connections / 2) {
            evicting = false;
            spdlog::info("http: {} connections open again; connections closed to make room meanwhile: {}", connections.size(),
                         evicted_since);
        }
    }
    // The connection starts to wait for a request (or writes an answer): last to be evicted.
    void waiting(connection& c) {
        c.state = connection::phase::waiting;
        if (c.linked) connections.splice(connections.end(), connections, c.where);
    }
    void answering(connection& c) { c.state = connection::phase::answering; }
    void lingering(connection& c) {
        c.state = connection::phase::lingering;
        if (c.linked) connections.splice(connections.begin(), connections, c.where);
    }
    void dropped(connection_drop why) { handler.http_metrics().count_connection_dropped(why); }

    // Closes the first connection in eviction order that is not being
    // answered; false when there is none.
    bool evict_one() {
        for (connection* c : connections) {
            if (c->state == connection::phase::answering) continue;
            if (c->state == connection::phase::waiting) {
                dropped(connection_drop::evicted);
                ++evicted_since;
            }
            c->evict();  // unlinks it: the loop ends here
            return true;
        }
        return false;
    }
    void at_capacity() {
        if (evicting) return;
        evicting = true;
        evicted_since = 0;
        spdlog::warn("http: {} connections open, the limit: each new one closes the one that has waited longest for "
                     "its request (daq_http_connections_dropped_total{{reason=\"evicted\"}}); slow or idle clients, "
                     "or a flood",
                     connections.size());
    }

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
    void retry_accept_later();
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

// One client connection, on the io thread. Reads a request in three steps,
// each under its own deadline: the first bytes (header_timeout from the
// connection for its first request, idle_timeout between kept-alive ones),
// the rest of the header (header_timeout from the connection, or from the
// first byte of a later request), the body (body_timeout).
class session : public server::impl::connection, public std::enable_shared_from_this<session> {
public:
    session(tcp::socket&& socket, server::impl& srv) : _stream(std::move(socket)), _srv(srv) { _srv.link(*this); }
    ~session() { _srv.unlink(*this); }

    void run() {
        net::dispatch(_stream.get_executor(), [self = shared_from_this()] { self->next_request(true); });
    }

    // The accept loop needs the room (io thread; its handlers then see the
    // socket closed and end).
    void evict() override {
        _srv.unlink(*this);
        _stream.close();
    }

private:
    const server_limits& limits() const { return _srv.limits; }

    void next_request(bool first) {
        _first = first;
        _parser.emplace();
        _parser->body_limit(api::max_body_bytes);
        _parser->header_limit(max_header_bytes);
        _srv.waiting(*this);
        if (_buffer.size() > 0) {  // pipelined: the next request has begun
            _stream.expires_after(limits().header_timeout);
            return read_header();
        }
        _stream.expires_after(first ? limits().header_timeout : limits().idle_timeout);
        _stream.async_read_some(_buffer.prepare(read_chunk),
                                [self = shared_from_this()](beast::error_code ec, std::size_t n) {
                                    self->on_first_bytes(ec, n);
                                });
    }

    void on_first_bytes(beast::error_code ec, std::size_t n) {
        if (ec) {
            if (ec == beast::error::timeout)
                _srv.dropped(_first ? connection_drop::header_timeout : connection_drop::idle_timeout);
            return close();  // peer gone, evicted, server stopping
        }
        _buffer.commit(n);
        // The first request's header deadline runs from the connection.
        if (!_first) _stream.expires_after(limits().header_timeout);
        read_header();
    }

    void read_header() {
        http::async_read_header(_stream, _buffer, *_parser, [self = shared_from_this()](beast::error_code ec, std::size_t) {
            self->on_header(ec);
        });
    }

    void on_header(beast::error_code ec) {
        if (ec) return on_read_error(ec, connection_drop::header_timeout);
        if (_parser->is_done()) return on_request();
        _stream.expires_after(limits().body_timeout);
        http::async_read(_stream, _buffer, *_parser, [self = shared_from_this()](beast::error_code e, std::size_t) {
            if (e) return self->on_read_error(e, connection_drop::body_timeout);
            self->on_request();
        });
    }

    void on_read_error(beast::error_code ec, connection_drop on_timeout) {
        if (ec == beast::error::timeout) {
            _srv.dropped(on_timeout);
            return close();
        }
        const bool parse_error = ec.category() == http::make_error_code(http::error::bad_method).category() &&
                                 ec != http::error::end_of_stream && ec != http::error::partial_message;
        if (!parse_error) return close();  // peer gone, evicted, server stopping
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
        _head = false;
        send(api::error(status, what));
    }

    void on_request() {
        _srv.answering(*this);
        auto& req = _parser->get();
        _keep_alive = req.keep_alive();
        _version = req.version();
        _head = req.method() == http::verb::head;
        // HTTP/1.1 requires exactly one Host (RFC 9112 3.2); HTTP/1.0 clients may
        // omit it (a DNS-rebinding page never does: browsers always send it).
        const auto hosts = req.count(http::field::host);
        if (hosts > 1 || (hosts == 0 && _version >= 11)) {
            _keep_alive = false;
            return send(api::error(400, hosts > 1 ? "more than one Host header"
                                                  : "an HTTP/1.1 request needs a Host header"));
        }
        request r;
        r.method = std::string(req.method_string());
        r.target = std::string(req.target());
        if (auto it = req.find(http::field::authorization); it != req.end()) r.authorization = std::string(it->value());
        if (auto it = req.find(http::field::host); it != req.end()) r.host = std::string(it->value());
        r.body = std::move(req.body());
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
        if (!_stream.socket().is_open()) return;  // evicted while the worker answered
        _srv.waiting(*this);
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
        if (_head) {
            // GET's head, Content-Length included, without the body.
            const std::size_t length = msg->body().size();
            const bool has_length = msg->find(http::field::content_length) != msg->end();
            msg->body().clear();
            if (has_length) msg->content_length(length);
        }
        _stream.expires_after(limits().write_timeout);
        http::async_write(_stream, *msg, [self = shared_from_this(), msg](beast::error_code ec, std::size_t) {
            if (ec) {
                if (ec == beast::error::timeout) self->_srv.dropped(connection_drop::write_timeout);
                return self->close();
            }
            if (!msg->keep_alive()) return self->linger();
            self->next_request(false);
        });
    }

    void close() {
        beast::error_code ec;
        _stream.socket().shutdown(tcp::socket::shutdown_send, ec);
        _srv.unlink(*this);
    }

    // After the last answer: stop sending, then read and drop what the peer
    // still sends (an unread request body) for a moment before closing, so
    // the kernel does not reset the connection and lose the answer.
    void linger() {
        beast::error_code ec;
        _stream.socket().shutdown(tcp::socket::shutdown_send, ec);
        _srv.lingering(*this);
        _stream.expires_after(linger_time);
        drain();
    }
    void drain() {
        _stream.async_read_some(net::buffer(_scratch), [self = shared_from_this()](beast::error_code ec, std::size_t n) {
            self->_drained += n;
            if (ec || self->_drained > (1u << 20)) return self->_srv.unlink(*self);  // peer closed, timeout, or enough
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
    bool _first = true;
    bool _keep_alive = false;
    bool _head = false;
    unsigned _version = 11;
    std::array<char, 4096> _scratch{};
    std::size_t _drained = 0;
};

}  // namespace

void server::impl::retry_accept_later() {
    accept_retry.expires_after(std::chrono::milliseconds(100));
    accept_retry.async_wait([this](beast::error_code e) {
        if (!e) accept();
    });
}

void server::impl::accept() {
    acceptor.async_accept([this](beast::error_code ec, tcp::socket socket) {
        if (ec == net::error::operation_aborted) return;
        if (ec) {
            // Out of descriptors: make room by closing the connection that has
            // waited longest, then take the new one; other errors: try again soon.
            const bool no_fds = ec == net::error::no_descriptors || ec.value() == ENFILE;
            spdlog::debug("http: accept failed: {}", ec.message());
            if (no_fds && evict_one()) return accept();
            return retry_accept_later();
        }
        handler.http_metrics().count_connection_accepted();
        if (connections.size() >= max_connections) {
            at_capacity();
            if (!evict_one()) {
                // Every connection is being answered: this one waits for none.
                dropped(connection_drop::refused);
                beast::error_code ignored;
                socket.close(ignored);
                return accept();
            }
        }
        std::make_shared<session>(std::move(socket), *this)->run();
        accept();
    });
}

server::server(const config::endpoint& ep, api& handler, server_limits limits, std::vector<unsigned> cpus)
    : _impl(std::make_unique<impl>(handler, limits)) {
    _impl->cpus = std::move(cpus);
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

std::size_t server::max_connections() const noexcept { return _impl->max_connections; }
const server_limits& server::limits() const noexcept { return _impl->limits; }

void server::start() {
    if (_impl->started) return;
    _impl->started = true;
    _impl->accept();
    _impl->sample();
    _impl->handler.sample(std::chrono::steady_clock::now());
    _impl->worker = std::thread([this] {
        common::name_and_pin_this_thread("daqd-http-run", _impl->cpus);
        _impl->worker_loop();
    });
    _impl->io_thread = std::thread([this] {
        common::name_and_pin_this_thread("daqd-http", _impl->cpus);
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
        std::string why;
        auto cpus = config::parse_cpu_list(cfg.threads.http_cpus, &why);
        if (!cpus) throw std::runtime_error("threads.http_cpus: " + why);
        _server = std::make_unique<server>(ep, *_api, server_limits{}, std::move(*cpus));
    } catch (...) {
        if (_token.generated) std::filesystem::remove(_token.file);
        throw;
    }
    _server->start();
    spdlog::info("http: status page http://{}/ , metrics /metrics, control API /api/v1/ (token {})", ep.to_string(),
                 _token.file.empty() ? std::string("from http.token") : "in " + _token.file.string());
    const auto& lim = _server->limits();
    spdlog::info("http: at most {} connections, request headers within {} ms; Host names answered: {}",
                 _server->max_connections(), lim.header_timeout.count(), fmt::join(_api->host_names(), ", "));
}

service::~service() { stop(); }

void service::reload_access(const config::config& fresh) {
    token_setup t;
    if (fresh.http.token.empty() && fresh.http.token_file.empty() && _token.generated)
        t = _token;  // the token generated at start stays
    else
        t = setup_token(fresh);
    _api->reload_access(t.token, fresh.http);
    if (_token.generated && !t.generated) {
        std::error_code ec;
        std::filesystem::remove(_token.file, ec);
    }
    _token = std::move(t);
    spdlog::info("http: token {}; Host names answered: {}",
                 _token.file.empty() ? std::string("from http.token") : "in " + _token.file.string(),
                 fmt::join(_api->host_names(), ", "));
}

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
