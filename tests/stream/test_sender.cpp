// The live stream's sender (stream/sender.hpp) with real ZeroMQ sockets over
// ipc:// in a temporary directory: this test thread is the writer thread
// (chunk_sink calls), the sender's own thread sends, and PULL/SUB sockets here
// are the consumers. The end-to-end tests with daqd are in
// tests/python/test_live_stream.py.
#include "daqd/storage/run_writer.hpp"
#include "daqd/stream/sender.hpp"
#include "temp_dir.hpp"
#include "wait_until.hpp"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <zmq.hpp>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using daqd::stream::sender;
using daqd::stream::stream_options;
using daqd_test::wait_until;
using namespace std::chrono_literals;

namespace {

stream_options ipc_options(const daqd_test::temp_dir& d) {
    stream_options o;
    o.push_endpoints = {"ipc://" + (d.path() / "s").string()};  // publish: ipc://…/s.pub
    o.linger_ms = 0;
    return o;
}

// A chunk of `n` frames of `channels` samples from frame `first`, samples frame * 1000 + channel.
struct chunk_data {
    std::vector<std::uint64_t> fn, ts;
    std::vector<std::uint16_t> mp, raw;
    daqd::storage::sunk_chunk c;
    chunk_data(std::uint16_t unit, std::uint64_t first, std::uint32_t n, std::uint32_t channels) {
        for (std::uint32_t i = 0; i < n; ++i) {
            fn.push_back(first + i);
            ts.push_back(1000 * (first + i));
            mp.push_back(static_cast<std::uint16_t>(i % 2));
            for (std::uint32_t ch = 0; ch < channels; ++ch)
                raw.push_back(static_cast<std::uint16_t>((first + i) * 1000 + ch));
        }
        c.unit_id = unit;
        c.channels = channels;
        c.frames = n;
        c.frame_number = fn.data();
        c.timestamp_ns = ts.data();
        c.missing_packets = mp.data();
        c.arrays[0] = {"raw", "<u2", raw.data(), raw.size() * 2, 2, n, 0};
        c.array_count = 1;
    }
};

nlohmann::json run_message(zmq::socket_t& sub, const std::string& type) {
    for (;;) {
        zmq::message_t m;
        REQUIRE(sub.recv(m, zmq::recv_flags::none));
        const std::string text = m.to_string();
        REQUIRE(text.rfind("run ", 0) == 0);
        auto j = nlohmann::json::parse(text.substr(4));
        if (j["type"] == type) return j;
    }
}

}  // namespace

TEST_CASE("stream sender: chunks arrive with their header and bytes, framed by run messages", "[stream]") {
    daqd_test::temp_dir d("daqd-stream");
    sender s(ipc_options(d));
    zmq::context_t ctx;
    zmq::socket_t pull(ctx, zmq::socket_type::pull), sub(ctx, zmq::socket_type::sub);
    pull.set(zmq::sockopt::rcvtimeo, 10000);
    sub.set(zmq::sockopt::rcvtimeo, 10000);
    sub.set(zmq::sockopt::subscribe, "run ");
    pull.connect(s.options().push_endpoints[0]);
    sub.connect(s.options().pub_endpoints[0]);
    CHECK(s.options().pub_endpoints[0] == s.options().push_endpoints[0] + ".pub");
    s.worker().start();
    REQUIRE(wait_until([&] { return s.counters().peers_push.get() == 1 && s.counters().peers_pub.get() == 1; }, 10s,
                       1ms));

    daqd::storage::run_options o;
    o.run_name = "r1";
    o.stream_info = R"({"units": [{"id": 7, "channels": 4}], "host": "h"})";
    s.run_started(o);
    // Published before the subscription may have reached the sender: the
    // start is repeated every second, so it arrives, and from then on the
    // subscriber gets every run message.
    const auto start = run_message(sub, "run_start");
    chunk_data a(7, 100, 3, 4), b(7, 103, 2, 4);
    s.chunk_written(a.c);
    s.chunk_written(b.c);
    daqd::storage::run_stats st;
    st.run_name = "r1";
    st.frames_written = 5;
    s.run_ended(st);

    CHECK(start["run"] == "r1");
    CHECK(start["format"] == "daqd-stream");
    CHECK(start["units"][0]["id"] == 7);  // stream_info merged in
    CHECK(start["compression"] == "none");
    for (const auto* c : {&a, &b}) {
        std::vector<zmq::message_t> parts;
        for (;;) {
            parts.emplace_back();
            REQUIRE(pull.recv(parts.back(), zmq::recv_flags::none));
            if (!parts.back().more()) break;
        }
        REQUIRE(parts.size() == 2);
        const auto h = nlohmann::json::parse(parts[0].to_string());
        CHECK(h["seq"] == (c == &a ? 0 : 1));
        CHECK(h["run"] == "r1");
        CHECK(h["unit"] == 7);
        CHECK(h["frames"] == c->c.frames);
        CHECK(h["frame_number"].get<std::vector<std::uint64_t>>() == c->fn);
        CHECK(h["timestamp_ns"].get<std::vector<std::uint64_t>>() == c->ts);
        CHECK(h["missing_packets"].get<std::vector<std::uint16_t>>() == c->mp);
        CHECK(h["arrays"][0]["shape"] == nlohmann::json::array({c->c.frames, 4}));
        REQUIRE(parts[1].size() == c->raw.size() * 2);
        CHECK(std::memcmp(parts[1].data(), c->raw.data(), parts[1].size()) == 0);
    }
    const auto end = run_message(sub, "run_end");
    CHECK(end["chunks"] == 2);
    CHECK(end["last_seq"] == 1);
    CHECK(end["frames_sent"] == 5);
    CHECK(end["frames_dropped"] == 0);
    CHECK(end["frames_written"] == 5);
    CHECK(s.counters().frames_sent.get() == 5);
    CHECK(s.counters().chunks_sent.get() == 2);
}

TEST_CASE("stream sender: never waits, what it cannot hand on is counted by reason", "[stream]") {
    daqd_test::temp_dir d("daqd-stream");
    auto opt = ipc_options(d);
    opt.queue_messages = 2;
    sender s(opt);
    zmq::context_t ctx;
    zmq::socket_t sub(ctx, zmq::socket_type::sub);
    sub.set(zmq::sockopt::rcvtimeo, 10000);
    sub.set(zmq::sockopt::subscribe, "run ");
    sub.connect(s.options().pub_endpoints[0]);
    s.worker().start();
    daqd::storage::run_options o;
    o.run_name = "r2";
    s.run_started(o);
    (void)run_message(sub, "run_start");  // the subscriber is live
    // The sender's thread stops: the queue holds 2 chunks, the other 3 are
    // dropped at once (reason queue); the caller never waits.
    s.worker().stop();
    std::vector<chunk_data> chunks;
    for (int i = 0; i < 5; ++i) chunks.emplace_back(1, 10 * i, 10, 8);
    for (auto& c : chunks) s.chunk_written(c.c);
    CHECK(s.counters().dropped_queue.get() == 30);
    CHECK(s.counters().queue_chunks.get() == 2);
    daqd::storage::run_stats st;
    st.run_name = "r2";
    st.frames_written = 50;
    s.run_ended(st);
    // Going again, with no consumer on the PUSH socket: the 2 queued chunks
    // go nowhere (no_peer).
    s.worker().start();
    REQUIRE(wait_until([&] { return s.counters().dropped_no_peer.get() == 20; }, 10s, 1ms));
    CHECK(s.counters().frames_sent.get() == 0);
    CHECK(s.counters().chunks_dropped.get() == 5);
    const auto end = run_message(sub, "run_end");
    CHECK(end["chunks"] == 5);
    CHECK(end["chunks_dropped"] == 5);
    CHECK(end["frames_dropped"] == 50);
    CHECK(end["frames_dropped_by_reason"]["queue"] == 30);
    CHECK(end["frames_dropped_by_reason"]["no_peer"] == 20);
    daqd::telemetry::snapshot t;
    s.report(t);
    CHECK(t.count("daq_stream_frames_dropped_total", {{"reason", "queue"}}) == 30);
    CHECK(t.count("daq_stream_frames_dropped_total", {{"reason", "no_peer"}}) == 20);
    CHECK(t.count("daq_stream_frames_dropped_total", {{"reason", "hwm"}}) == 0);
    CHECK(t.label("daq_stream_endpoint_info", "endpoint", {{"socket", "pub"}}) == s.options().pub_endpoints[0]);
}

TEST_CASE("stream sender: previews are rate-limited per unit, latest frame, one part", "[stream]") {
    daqd_test::temp_dir d("daqd-stream");
    auto opt = ipc_options(d);
    opt.preview_rate = 2.0;  // one per 0.5 s per unit
    sender s(opt);
    zmq::context_t ctx;
    zmq::socket_t sub(ctx, zmq::socket_type::sub);
    sub.set(zmq::sockopt::rcvtimeo, 10000);
    sub.set(zmq::sockopt::subscribe, "preview u3 ");
    sub.set(zmq::sockopt::subscribe, "run ");
    sub.connect(s.options().pub_endpoints[0]);
    s.worker().start();
    daqd::storage::run_options o;
    o.run_name = "r3";
    s.run_started(o);
    (void)run_message(sub, "run_start");  // both subscriptions are live (sent in this order)
    sub.set(zmq::sockopt::unsubscribe, "run ");
    std::vector<std::uint16_t> samples(16);
    daqd::processing::frame f;
    f.channels = 16;
    f.samples = samples.data();
    const std::uint64_t t0 = 1'000'000'000;
    // Unit 3: frames at 0, 0.1, 0.2 s: the first only; at 0.6 s: another.
    // Unit 4 has its own budget.
    for (std::uint64_t k : {0, 1, 2, 6}) {
        f.unit_id = 3;
        f.frame_number = k;
        f.assembled_ns = t0 + k * 100'000'000;
        samples.assign(16, static_cast<std::uint16_t>(k));
        s.frame_seen(f);
        f.unit_id = 4;
        s.frame_seen(f);
        REQUIRE(wait_until([&] { return s.counters().preview_frames.get() >= (k < 6 ? 2u : 4u); }, 10s, 1ms));
    }
    CHECK(s.counters().preview_frames.get() == 4);
    for (std::uint64_t want : {0, 6}) {
        zmq::message_t m;
        do {  // a repeated run start sent before the unsubscription took effect
            REQUIRE(sub.recv(m, zmq::recv_flags::none));
        } while (m.to_string().rfind("run ", 0) == 0);
        CHECK_FALSE(m.more());
        const std::string text = m.to_string();
        const auto nl = text.find('\n');
        REQUIRE(nl != std::string::npos);
        const auto h = nlohmann::json::parse(text.substr(11, nl - 11));  // after "preview u3 "
        CHECK(h["unit"] == 3);
        CHECK(h["frame_number"] == want);
        CHECK(h["name"] == "raw");
        REQUIRE(text.size() - nl - 1 == 32);
        std::uint16_t first = 0;
        std::memcpy(&first, text.data() + nl + 1, 2);
        CHECK(first == want);
    }
}

TEST_CASE("stream sender: a publish endpoint is the listen port + 1, a bound port is refused by name", "[stream]") {
    CHECK(daqd::stream::default_publish_endpoint("tcp://127.0.0.1:5555") == "tcp://127.0.0.1:5556");
    CHECK(daqd::stream::default_publish_endpoint("tcp://[::1]:7000") == "tcp://[::1]:7001");
    CHECK(daqd::stream::default_publish_endpoint("ipc:///run/d") == "ipc:///run/d.pub");
    CHECK_THROWS_WITH(daqd::stream::default_publish_endpoint("tcp://127.0.0.1:65535"),
                      Catch::Contains("publish port would be 65536"));
    daqd_test::temp_dir d("daqd-stream");
    sender first(ipc_options(d));
    zmq::context_t ctx;
    zmq::socket_t taken(ctx, zmq::socket_type::pull);
    taken.bind("tcp://127.0.0.1:*");
    const std::string ep = taken.get(zmq::sockopt::last_endpoint);
    stream_options o;
    o.push_endpoints = {ep};
    o.pub_endpoints = {"ipc://" + (d.path() / "p2").string()};
    CHECK_THROWS_WITH(sender(o), Catch::Contains("cannot bind the push socket to " + ep));
}
