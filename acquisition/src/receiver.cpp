#include "daqd/acquisition/receiver.hpp"

#include <linux/sock_diag.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <stdexcept>

namespace daqd::acquisition {

receiver::receiver(const config::acquisition_config& cfg, packet_ring& ring, common::wake_event& consumer_wake,
                   std::uint16_t first_link, std::uint16_t shard)
    : _first_link(first_link) {
    try {
        for (const auto& ep : cfg.listen) {
            _links.push_back(open_link(ep, cfg));
            _counters.push_back(std::make_unique<link_counters>());
        }
    } catch (...) {
        for (auto& l : _links) ::close(l.fd);
        throw;
    }
    backend_context ctx{cfg, ring, consumer_wake, _wake, _links, _counters, first_link};
    // `auto` is recvmmsg: the two backends measured equal per packet within
    // noise here (docs/PERFORMANCE.md), and recvmmsg is the simpler path.
    if (cfg.backend == config::receiver_backend::io_uring) {
        std::string why;
        _backend = make_io_uring_backend(ctx, why);
        if (!_backend) {
            for (auto& l : _links) ::close(l.fd);
            throw std::runtime_error("receiver backend io_uring is not available here: " + why);
        }
    } else {
        _backend = make_recvmmsg_backend(ctx);
    }
    std::string where;
    for (const auto& l : _links) where += (where.empty() ? "" : ", ") + l.endpoint.to_string();
    spdlog::info("receiver: backend {}{}, {} link(s): {}; packet ring /dev/shm/{} ({} slots of {} bytes)",
                 _backend->name(), cfg.backend == config::receiver_backend::automatic ? " (auto)" : "", _links.size(),
                 where, ring.name(), ring.slot_count(), ring.data_bytes());
    _worker.emplace(shard == 0 ? std::string("daqd-receive") : "daqd-receive-" + std::to_string(shard), _wake,
                    static_cast<common::worker_body&>(*this));
}

receiver::~receiver() {
    _worker->stop();
    _backend.reset();
    for (auto& l : _links) ::close(l.fd);
}

void receiver::drain() {
    _backend->drain();
    // SO_RXQ_OVFL reports drops only with the next datagram received; drops
    // at the very end of a stream are only visible in the socket's meminfo.
    for (std::size_t l = 0; l < _links.size(); ++l) {
        std::uint32_t mem[SK_MEMINFO_VARS] = {};
        socklen_t len = sizeof mem;
        if (::getsockopt(_links[l].fd, SOL_SOCKET, SO_MEMINFO, mem, &len) == 0 && len > SK_MEMINFO_DROPS * 4) {
            auto& drops = _counters[l]->kernel_drops;
            if (mem[SK_MEMINFO_DROPS] > drops.get()) drops.set(mem[SK_MEMINFO_DROPS]);
        }
    }
}

const char* receiver::backend_name() const noexcept { return _backend->name(); }

// ---- telemetry ----

const telemetry::descriptor packets_invalid{"daq_packets_invalid_total",
                                            "Datagrams dropped as invalid, by reason (docs/PROTOCOL.md)",
                                            telemetry::kind::counter, "reason"};

void report_invalid(telemetry::snapshot& out, const std::array<counter, daq1::drop_reason_count>& invalid) {
    for (std::size_t r = 1; r < daq1::drop_reason_count; ++r)
        out.add_to(packets_invalid, {{"reason", std::string(daq1::name(static_cast<daq1::drop_reason>(r)))}},
                   static_cast<double>(invalid[r].get()));
}

namespace {

using telemetry::kind;

// One row per link counter: its series (label "link").
struct link_series {
    telemetry::descriptor d;
    counter link_counters::*member;
};
const link_series link_table[] = {
    {{"daq_datagrams_received_total", "Valid DAQ1 datagrams taken into the packet ring, by link", kind::counter,
      "link"},
     &link_counters::datagrams},
    {{"daq_bytes_received_total", "UDP payload bytes received (valid or not), by link", kind::counter, "link"},
     &link_counters::bytes},
    {{"daq_socket_drops_total",
      "Datagrams the kernel dropped because the socket buffer was full (SO_RXQ_OVFL), by link", kind::counter,
      "link"},
     &link_counters::kernel_drops},
    {{"daq_ring_dropped_total", "Datagrams dropped because the packet ring was full, by link", kind::counter, "link"},
     &link_counters::ring_dropped},
};
const telemetry::descriptor link_info{"daq_link_info", "Listen endpoint of each link (value 1)", kind::gauge,
                                      "link,endpoint"};
const telemetry::descriptor socket_buffer{"daq_socket_buffer_bytes",
                                          "Receive buffer the kernel granted the link's socket, by link", kind::gauge,
                                          "link"};

const telemetry::descriptor link_invalid{"daq_link_packets_invalid", "Datagrams dropped as invalid, by link",
                                         kind::counter, "link", false};

}  // namespace

void receiver::report(telemetry::snapshot& out) const {
    out.of(link_info);  // listed before the first link's series
    for (std::size_t l = 0; l < _links.size(); ++l) {
        const std::string link = std::to_string(_first_link + l);
        out.add(link_info, {{"link", link}, {"endpoint", _links[l].endpoint.to_string()}}, 1);
        for (const auto& row : link_table)
            out.add(row.d, {{"link", link}}, static_cast<double>(((*_counters[l]).*row.member).get()));
        out.add(socket_buffer, {{"link", link}}, static_cast<double>(_links[l].rcvbuf_bytes));
        out.add(link_invalid, {{"link", link}}, static_cast<double>(_counters[l]->invalid_total()));
    }
    for (std::size_t l = 0; l < _links.size(); ++l) report_invalid(out, _counters[l]->invalid);
}

}  // namespace daqd::acquisition
