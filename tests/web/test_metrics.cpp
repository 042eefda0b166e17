// /metrics: every required family, with its labels, built from the counters.
#include "daqd/web/api.hpp"
#include "daqd/web/metrics.hpp"
#include "web_test_util.hpp"

#include <catch2/catch.hpp>

using namespace daqd::web;
using Catch::Matchers::Contains;
using web_test::rig;
using web_test::temp_dir;

TEST_CASE("metrics text has every family with the right labels", "[web]") {
    temp_dir dir("metrics");
    rig r(dir.path);
    // Unit 3 on link 0: 3 frames, packet_seq 2 missing (lost), seq 1 twice (duplicate).
    r.feed(web_test::packet(3, 0, 0));
    r.feed(web_test::packet(3, 1, 1));
    r.feed(web_test::packet(3, 1, 1));
    r.feed(web_test::packet(3, 3, 3), 1);
    r.assembler->flush_all();
    r.drain();
    std::optional<run_info> active = run_info{"beam01", std::chrono::system_clock::now(), 0, 0};
    run_controls controls;
    controls.current = [&] { return active; };
    std::vector<host_check> checks{{"rmem_max", check_status::ok, "", ""}, {"cores", check_status::failing, "", "x"},
                                   {"cpu_governor", check_status::unknown, "", ""}};
    r.controls(controls);
    const daq_view view = r.view();
    metrics m(view, checks);
    m.count_request(200);
    m.count_request(200);
    m.count_request(404);
    const std::string text = m.scrape();
    INFO(text);

    for (const char* family :
         {"daq_packets_received_total counter", "daq_packets_lost_total counter", "daq_packets_duplicate_total counter",
          "daq_packets_invalid_total counter", "daq_bytes_received_total counter", "daq_socket_drops_total counter",
          "daq_ring_dropped_total counter", "daq_ring_fill_ratio gauge", "daq_frames_total counter",
          "daq_frames_written_total counter", "daq_storage_bytes_written_total counter",
          "daq_storage_flush_seconds histogram", "daq_stage_seconds histogram", "daq_run_active gauge",
          "daq_host_check gauge", "daq_build_info gauge", "daq_storage_free_bytes gauge",
          "daq_http_requests_total counter", "daq_link_info gauge", "daq_http_connections_accepted_total counter",
          "daq_http_connections_dropped_total counter", "daq_http_connections_open gauge",
          "daq_http_connections_limit gauge", "daq_http_host_rejected_total counter"}) {
        INFO(family);
        CHECK_THAT(text, Contains(std::string("# TYPE ") + family + "\n"));
    }
    // Every reason of a dropped connection is there from the start (at 0).
    for (const char* reason : {"header_timeout", "body_timeout", "idle_timeout", "write_timeout", "evicted", "refused"})
        CHECK_THAT(text, Contains(std::string("daq_http_connections_dropped_total{reason=\"") + reason + "\"} 0\n"));
    // The labelled series.
    CHECK_THAT(text, Contains("daq_packets_received_total{link=\"0\",unit=\"3\"} 3\n"));
    CHECK_THAT(text, Contains("daq_packets_received_total{link=\"1\",unit=\"3\"} 0\n") ||
                         !Contains("daq_packets_received_total{link=\"1\""));
    CHECK_THAT(text, Contains("daq_packets_lost_total{unit=\"3\"} 1\n"));
    CHECK_THAT(text, Contains("daq_packets_duplicate_total{unit=\"3\"} 1\n"));
    CHECK_THAT(text, Contains("daq_packets_invalid_total{reason=\"bad_magic\"} 0\n"));
    CHECK_THAT(text, Contains("daq_packets_invalid_total{reason=\"unknown_unit\"} 0\n"));
    CHECK_THAT(text, Contains("daq_bytes_received_total{link=\"0\"} 0\n"));
    CHECK_THAT(text, Contains("daq_socket_drops_total{link=\"0\"} 0\n"));
    CHECK_THAT(text, Contains("daq_ring_dropped_total{link=\"0\"} 0\n"));
    CHECK_THAT(text, Contains("daq_ring_fill_ratio{link=\"0\"} 0\n"));
    for (const char* state : {"complete", "incomplete", "lost", "overflow"}) {
        INFO(state);
        CHECK_THAT(text, Contains(std::string("daq_frames_total{unit=\"3\",state=\"") + state + "\"}"));
    }
    CHECK_THAT(text, Contains("daq_frames_total{unit=\"3\",state=\"complete\"} 3\n"));
    CHECK_THAT(text, Contains("daq_frames_total{unit=\"3\",state=\"lost\"} 1\n"));
    CHECK_THAT(text, Contains("daq_frames_written_total{unit=\"3\"} 3\n"));
    CHECK_THAT(text, Contains("daq_storage_bytes_written_total 0\n"));
    CHECK_THAT(text, Contains("daq_storage_flush_seconds_bucket{le=\"0.001\"} 0\n"));
    CHECK_THAT(text, Contains("daq_storage_flush_seconds_bucket{le=\"+Inf\"} 0\n"));
    CHECK_THAT(text, Contains("daq_storage_flush_seconds_count 0\n"));
    CHECK_THAT(text, Contains("daq_stage_seconds_bucket{stage=\"write\",backend=\"hdf5\",le=\"+Inf\"} 0\n"));
    CHECK_THAT(text, Contains("daq_run_active{run=\"beam01\"} 1\n"));
    CHECK_THAT(text, Contains("daq_host_check{check=\"rmem_max\"} 1\n"));
    CHECK_THAT(text, Contains("daq_host_check{check=\"cores\"} 0\n"));
    CHECK_THAT(text, Contains("daq_host_check{check=\"cpu_governor\"} 1\n"));
    CHECK_THAT(text,
               Contains("daq_build_info{processing_backend=\"none\",receiver_backend=\"") && Contains("version=\"test\"} 1"));
    CHECK_THAT(text, Contains("daq_http_requests_total{code=\"200\"} 2\n"));
    CHECK_THAT(text, Contains("daq_http_requests_total{code=\"404\"} 1\n"));
    CHECK_THAT(text, Contains("daq_storage_free_bytes "));

    active.reset();
    CHECK_THAT(m.scrape(), Contains("daq_run_active{run=\"\"} 0\n"));
}

TEST_CASE("links beyond the per-unit link counters fold into the last", "[web]") {
    temp_dir dir("metrics");
    rig r(dir.path);
    r.feed(web_test::packet(5, 0, 0), 15);
    r.feed(web_test::packet(5, 1, 1), 40);
    const auto& u = r.assembler->unit_at(0);
    CHECK(u.packets_by_link[15].get() == 2);
    CHECK(u.packets.get() == 2);
}

TEST_CASE("flush durations land in the histogram buckets", "[web]") {
    temp_dir dir("metrics");
    rig r(dir.path);
    auto& wc = const_cast<daqd::storage::writer_counters&>(r.writer->counters());
    wc.flush.buckets[0].add(2);      // <= 1 ms
    wc.flush.buckets[4].add(1);      // <= 25 ms
    wc.flush.buckets.back().add(1);  // > 5 s
    wc.flush.sum_ns.add(7'000'000'000ull);
    wc.flushes.add(4);
    const daq_view view = r.view();
    metrics m(view, {});
    const std::string text = m.scrape();
    INFO(text);
    CHECK_THAT(text, Contains("daq_storage_flush_seconds_bucket{le=\"0.001\"} 2\n"));
    CHECK_THAT(text, Contains("daq_storage_flush_seconds_bucket{le=\"0.01\"} 2\n"));
    CHECK_THAT(text, Contains("daq_storage_flush_seconds_bucket{le=\"0.025\"} 3\n"));
    CHECK_THAT(text, Contains("daq_storage_flush_seconds_bucket{le=\"5\"} 3\n"));
    CHECK_THAT(text, Contains("daq_storage_flush_seconds_bucket{le=\"+Inf\"} 4\n"));
    CHECK_THAT(text, Contains("daq_storage_flush_seconds_count 4\n"));
    CHECK_THAT(text, Contains("daq_storage_flush_seconds_sum 7\n"));
}
