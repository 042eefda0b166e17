#pragma once
// The result of one host check (acquisition/host_check.hpp runs them; the
// status page and daq_host_check{check} show them).
#include <string>

namespace daqd::common {

enum class check_status {
    ok,       // fine for this configuration
    failing,  // not what the configuration needs: see `fix`
    unknown,  // could not be determined (not a failure)
};

struct host_check {
    std::string name;    // "rmem_max", "netdev_max_backlog", "cores", "output_dir", "free_space", "ring_memory",
                         // "cpu_governor"
    check_status status = check_status::unknown;
    std::string detail;  // what was found and what is needed
    std::string fix;     // the exact command that fixes it (empty when ok)
};

[[nodiscard]] constexpr const char* name(check_status s) noexcept {
    switch (s) {
        case check_status::ok: return "ok";
        case check_status::failing: return "failing";
        case check_status::unknown: return "unknown";
    }
    return "unknown";
}

}  // namespace daqd::common
