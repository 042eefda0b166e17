// Fuzz target: HTTP request handling as the web server does it
// (web/src/server.cpp), without sockets.
//
// The input is the byte stream a client sends on one connection. It is read
// with Boost.Beast's request_parser<string_body> under the server's limits
// (body 64 KiB = api::max_body_bytes, header 16 KiB) from a Beast test stream
// that ends where the input ends; each request that parses goes through
// web::api::handle() and its response is built and serialized like the
// server's send(); keep-alive requests are followed by the next one on the
// same buffer; a parse error is answered 400/413/431 like on_read() and ends
// the connection.
//
// The daq_view is built from real objects, as tests/web does (rig in
// web_test_util.hpp): a packet ring, a frame pool, the frame queue, a
// receiver (bound to 127.0.0.1:0, never started), an assembler that was fed
// a few packets of units 1 and 2 by hand, a writer (no thread, no run) and a
// live tap that saw their frames, so /api/v1/status, /metrics and
// /api/v1/units/<id>/live answer with real data. The run controls are a fake
// that records what the API asked for (a real start would create HDF5 files
// on every input); its state is reset for each input. The output directory
// is a temporary one holding two files that are not HDF5 (the catalog's
// error path) and a calibration file name (skipped). The token is
// "0123456789abcdef0123456789abcdef" (the seed corpus uses it).
//
// The Host header goes to the API as the server passes it: a name daqd does
// not answer to (http.allowed_hosts) must get 403 and change nothing.
//
// Checks: handle() and is_blocking() never throw (the fake controls never
// do, so an exception there would be the API's own 500), statuses are
// 200..599, JSON answers parse and errors are {"error": "..."}; 405 names
// Allow, 401 asks for Bearer; header values hold no CR/LF; a run is started
// or stopped only with the right bearer token; /live answers hold `channels`
// samples.
#include "daqd/acquisition/daq1.hpp"
#include "daqd/config/config.hpp"
#include "daqd/web/api.hpp"
#include "daqd/web/sources.hpp"
#include "fuzz_check.hpp"
#include "web_test_util.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/beast/_experimental/test/stream.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <typeinfo>
#include <vector>

namespace beast = boost::beast;
namespace http = beast::http;
namespace fs = std::filesystem;
namespace daq1 = daqd::acquisition::daq1;
using nlohmann::json;

namespace {

constexpr std::string_view token = "0123456789abcdef0123456789abcdef";
constexpr std::size_t max_header_bytes = 16 * 1024;  // web/src/server.cpp
constexpr int max_requests = 16;                      // per connection (input)

using web_test::packet;  // a one-packet DAQ1 datagram (tests/web/web_test_util.hpp)

// What the API asked the pipeline to do; daqd's own rules for run names
// (daqd/pipeline.cpp check_run_name).
struct fake_runs {
    std::optional<daqd::web::run_info> active;
    int starts = 0, stops = 0;

    daqd::web::run_controls controls() {
        daqd::web::run_controls c;
        c.check_name = [](const std::string& n) -> std::string {
            if (n.empty()) return "run name is empty";
            if (n.size() > 100) return "run name is longer than 100 characters";
            if (n.front() == '.') return "run name must not start with '.'";
            for (char ch : n)
                if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' ||
                      ch == '_' || ch == '-'))
                    return "run name '" + n + "' may only hold letters, digits, '.', '_' and '-'";
            return {};
        };
        c.start = [this](const daqd::web::run_start& s) {
            const std::string& n = s.name;
            ++starts;
            if (n.find("exists") != std::string::npos) throw std::runtime_error("run '" + n + "' already exists");
            if (n.find("fail") != std::string::npos) throw std::runtime_error("cannot create the run file");
            active = daqd::web::run_info{n, std::chrono::system_clock::now(), 0, 0};
        };
        c.stop = [this]() -> std::optional<daqd::web::run_result> {
            ++stops;
            if (!active) return std::nullopt;
            daqd::web::run_result s;
            s.run_name = active->name;
            s.frames_written = 7;
            s.files = {active->name + ".h5"};
            active.reset();
            return s;
        };
        c.current = [this] { return active; };
        return c;
    }
};

// Real data-path objects, no threads: the rig of tests/web/web_test_util.hpp.
struct world {
    fs::path dir;
    std::unique_ptr<web_test::rig> rig;
    fake_runs runs;
    std::unique_ptr<daqd::web::api> api;

    world() {
        spdlog::set_level(spdlog::level::off);
        // Directories of runs that crashed (no destructor ran) whose process is gone.
        std::error_code ec;
        for (fs::directory_iterator it(fs::temp_directory_path(), ec), end; !ec && it != end; it.increment(ec)) {
            const std::string name = it->path().filename().string();
            constexpr std::string_view prefix = "daqd-fuzz-http-";
            if (name.rfind(prefix, 0) == 0 && !fs::exists("/proc/" + name.substr(prefix.size())))
                fs::remove_all(it->path(), ec);
        }
        dir = fs::temp_directory_path() / ("daqd-fuzz-http-" + std::to_string(::getpid()));
        fs::remove_all(dir);
        fs::create_directories(dir);
        for (const char* name : {"old.h5", "beam_00001.h5", "ped.calib.h5"}) std::ofstream(dir / name) << "not hdf5\n";

        rig = std::make_unique<web_test::rig>(dir);
        std::uint32_t seq = 0;
        for (std::uint64_t f = 10; f < 13; ++f) {
            rig->feed(packet(1, f, seq++, 16));
            rig->feed(packet(2, f, seq++, 1000));
        }
        std::vector<daqd::common::host_check> checks(2);
        checks[0].name = "rmem_max";
        checks[0].status = daqd::common::check_status::ok;
        checks[0].detail = "fine";
        checks[1].name = "cpu_governor";
        checks[1].status = daqd::common::check_status::failing;
        checks[1].detail = "powersave";
        checks[1].fix = "cpupower frequency-set -g performance";
        auto controls = rig->controls(runs.controls());
        api = std::make_unique<daqd::web::api>(rig->view(), std::move(controls), std::string(token), std::move(checks));
    }
    ~world() {
        api.reset();
        rig.reset();
        std::error_code ec;
        fs::remove_all(dir, ec);
    }
};

world& the_world() {
    static world w;
    return w;
}

bool clean_header_text(std::string_view s) { return s.find_first_of("\r\n") == std::string_view::npos; }

// The harness's own reading of "Authorization: Bearer <token>" (web/README.md).
bool has_token(std::string_view auth) {
    constexpr std::string_view scheme = "bearer ";
    if (auth.size() <= scheme.size()) return false;
    for (std::size_t i = 0; i < scheme.size(); ++i)
        if (std::tolower(static_cast<unsigned char>(auth[i])) != scheme[i]) return false;
    auth.remove_prefix(scheme.size());
    while (!auth.empty() && auth.front() == ' ') auth.remove_prefix(1);
    while (!auth.empty() && (auth.back() == ' ' || auth.back() == '\t')) auth.remove_suffix(1);
    return auth == token;
}

void check_response(const daqd::web::response& res, const daqd::web::request* r) {
    const std::string what = r ? r->method + " " + r->target : std::string("a malformed request");
    FUZZ_CHECK(res.status >= 200 && res.status <= 599, what + " -> status " + std::to_string(res.status));
    FUZZ_CHECK(clean_header_text(res.content_type));
    for (const auto& [k, v] : res.headers) {
        FUZZ_CHECK(!k.empty() && clean_header_text(k) && clean_header_text(v), what + ": header '" + k + "'");
    }
    auto has_header = [&](std::string_view name) {
        for (const auto& [k, v] : res.headers)
            if (k == name && !v.empty()) return true;
        return false;
    };
    if (res.status == 405) FUZZ_CHECK(has_header("Allow"), what + ": 405 without Allow");
    if (res.status == 401) FUZZ_CHECK(has_header("WWW-Authenticate"), what + ": 401 without WWW-Authenticate");
    if (res.content_type == "application/json") {
        const json j = json::parse(res.body, nullptr, false);
        FUZZ_CHECK(!j.is_discarded(), what + ": the JSON answer does not parse: " + res.body.substr(0, 200));
        if (res.status >= 400)
            FUZZ_CHECK(j.is_object() && j.contains("error") && j["error"].is_string(),
                       what + ": an error answer without {\"error\": \"...\"}");
        if (res.status == 200 && r && r->target.rfind("/api/v1/units/", 0) == 0) {
            FUZZ_CHECK(j.contains("channels") && j.contains("samples") && j["samples"].is_array() &&
                           j["samples"].size() == j["channels"].get<std::size_t>(),
                       what + ": live answer with the wrong number of samples");
        }
    }
}

// The server's send(): the Beast message it would write.
void serialize(const daqd::web::response& res, unsigned version, bool keep_alive) {
    http::response<http::string_body> msg(static_cast<http::status>(res.status), version);
    msg.set(http::field::server, "daqd");
    if (!res.content_type.empty()) msg.set(http::field::content_type, res.content_type);
    msg.set(http::field::cache_control, "no-store");
    msg.set("X-Content-Type-Options", "nosniff");
    for (const auto& [k, v] : res.headers) msg.set(k, v);
    msg.body() = res.body;
    msg.keep_alive(keep_alive);
    try {
        msg.prepare_payload();
    } catch (const std::exception&) {
        msg.body().clear();
    }
    std::ostringstream out;
    out << msg;
    FUZZ_CHECK(out.str().size() >= res.body.size());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    world& w = the_world();
    w.runs.active.reset();
    w.api->sample(std::chrono::steady_clock::now());

    boost::asio::io_context ioc;
    beast::test::stream stream(ioc);
    stream.append(std::string_view(reinterpret_cast<const char*>(data), size));
    stream.close_remote();  // the client sent this and no more
    beast::flat_buffer buffer;

    for (int n = 0; n < max_requests; ++n) {
        http::request_parser<http::string_body> parser;
        parser.body_limit(daqd::web::api::max_body_bytes);
        parser.header_limit(max_header_bytes);
        beast::error_code ec;
        http::read(stream, buffer, parser, ec);
        if (ec) {
            // session::on_read: parse errors are answered, everything else closes.
            const bool parse_error = ec.category() == http::make_error_code(http::error::bad_method).category() &&
                                     ec != http::error::end_of_stream && ec != http::error::partial_message;
            if (!parse_error) break;
            unsigned status = 400;
            if (ec == http::error::body_limit)
                status = 413;
            else if (ec == http::error::header_limit)
                status = 431;
            const auto res = daqd::web::api::error(status, "malformed HTTP request: " + ec.message());
            check_response(res, nullptr);
            w.api->count(res.status);
            serialize(res, 11, false);
            break;
        }
        auto& req = parser.get();
        daqd::web::request r;
        r.method = std::string(req.method_string());
        r.target = std::string(req.target());
        if (auto it = req.find(http::field::authorization); it != req.end()) r.authorization = std::string(it->value());
        if (auto it = req.find(http::field::host); it != req.end()) r.host = std::string(it->value());
        r.body = std::move(req.body());
        FUZZ_CHECK(r.body.size() <= daqd::web::api::max_body_bytes, "the parser let a body over the limit through");
        const bool keep_alive = req.keep_alive();
        const unsigned version = req.version();

        bool blocking = false;
        daqd::web::response res;
        const int starts = w.runs.starts, stops = w.runs.stops;
        try {
            blocking = w.api->is_blocking(r);
            res = w.api->handle(r);
        } catch (const std::exception& e) {
            daqd_fuzz::fail("api::handle threw", __FILE__, __LINE__,
                            r.method + " " + r.target + ": " + typeid(e).name() + ": " + e.what());
        }
        (void)blocking;
        if (w.runs.starts != starts || w.runs.stops != stops) {
            FUZZ_CHECK(has_token(r.authorization),
                       r.method + " " + r.target + " changed the run without the token (Authorization: '" +
                           r.authorization + "')");
            FUZZ_CHECK(!r.host || w.api->host_allowed(*r.host),
                       r.method + " " + r.target + " changed the run with Host '" + *r.host + "', not allowed");
        }
        // DNS rebinding: a Host daqd does not answer to gets 403, whatever the request.
        if (r.host && !w.api->host_allowed(*r.host))
            FUZZ_CHECK(res.status == 403, "Host '" + *r.host + "' not allowed, answered " + std::to_string(res.status));
        check_response(res, &r);
        w.api->count(res.status);
        serialize(res, version, keep_alive);
        if (!keep_alive) break;
    }
    return 0;
}
