#pragma once
// Reloading the configuration on SIGHUP (docs/OPERATIONS.md "Reloading
// (SIGHUP)"): which keys of a freshly read configuration daqd applies while
// it runs, and which differ from the running one but only take effect at the
// next start.
//
// Only what can change without losing a packet is applied: today that is
// log.level (spdlog's level is one atomic), stream.preview_rate (one
// atomic the stream's preview reads; main hands it to the sender) and the
// web side's access: http.token, http.token_file (read again),
// http.allowed_hosts (main hands them to web::service::reload_access, which
// swaps them under a lock between requests). Everything else sizes or wires
// the data path (sockets, rings, buffers, threads), is held by a thread that
// reads it without a lock (the web side's http.*, the writer's storage.*),
// or names what daqd locked at start (storage.output_dir).
//
// Pure functions of two configurations, plus apply() which sets the log
// level; main thread only.
#include "daqd/config/config.hpp"

#include <string>
#include <string_view>
#include <vector>

namespace daqd {

// The keys a reload applies while daqd runs.
[[nodiscard]] bool reloadable(std::string_view key) noexcept;

struct reload_plan {
    struct change {
        std::string key;
        std::string from;  // TOML value text
        std::string to;
    };
    std::vector<change> applied;       // reloadable keys whose value changed
    std::vector<std::string> restart;  // other keys whose value changed, in key-table order
    [[nodiscard]] bool empty() const noexcept { return applied.empty() && restart.empty(); }
    // The reload's one log line, after "SIGHUP: reloaded FILE: ". Values of
    // keys that need a restart are not shown (http.token is one of them).
    [[nodiscard]] std::string describe() const;
};

// What changes from `running` to `fresh`, key by key through the key table.
[[nodiscard]] reload_plan plan_reload(const config::config& running, const config::config& fresh);

// Applies the plan's reloadable keys to the process (the log level) and to
// `running`, which stays what daqd runs with. Returns the log line (as
// describe()); logged at info while the more verbose of the old and the new
// level is in effect, so that it shows whenever either level shows info.
std::string apply_reload(const reload_plan& plan, config::config& running, const config::config& fresh,
                         const std::string& file);

// A configuration error's message (one mistake per line) on one line.
[[nodiscard]] std::string one_line(std::string_view message);

}  // namespace daqd
