#include "daqd/acquisition/receiver.hpp"

#include <linux/sock_diag.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <stdexcept>

namespace daqd::acquisition {

receiver::receiver(const config::acquisition_config& cfg, packet_ring& ring, common::wake_event& consumer_wake) {
    try {
        for (const auto& ep : cfg.listen) {
            _links.push_back(open_link(ep, cfg));
            _counters.push_back(std::make_unique<link_counters>());
        }
    } catch (...) {
        for (auto& l : _links) ::close(l.fd);
        throw;
    }
    backend_context ctx{cfg, ring, consumer_wake, _wake, _links, _counters};
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
    _worker.emplace("daqd-receive", _wake, static_cast<common::worker_body&>(*this));
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

}  // namespace daqd::acquisition
