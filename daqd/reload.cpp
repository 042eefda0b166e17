#include "reload.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <array>

namespace daqd {

namespace {

constexpr std::array<std::string_view, 7> live_keys{"log.level",          "stream.preview_rate",
                                                    "http.token",         "http.token_file",
                                                    "http.allowed_hosts", "processing.threshold",
                                                    "processing.threshold_mode"};
// Keys whose values a log line never shows.
bool secret(std::string_view key) noexcept { return key == "http.token"; }

}  // namespace

bool reloadable(std::string_view key) noexcept {
    for (auto k : live_keys)
        if (k == key) return true;
    return false;
}

reload_plan plan_reload(const config::config& running, const config::config& fresh) {
    reload_plan p;
    for (const auto& k : config::keys()) {
        const std::string was = config::value_toml(running, k.name);
        const std::string now = config::value_toml(fresh, k.name);
        if (was == now) continue;
        if (reloadable(k.name))
            p.applied.push_back({std::string(k.name), secret(k.name) ? "(hidden)" : was,
                                 secret(k.name) ? "(hidden)" : now});
        else
            p.restart.emplace_back(k.name);
    }
    return p;
}

std::string reload_plan::describe() const {
    if (empty()) return "nothing changed";
    std::string out;
    if (!applied.empty()) {
        out = "applied ";
        for (std::size_t i = 0; i < applied.size(); ++i)
            out += fmt::format("{}{} = {} (was {})", i ? ", " : "", applied[i].key, applied[i].to, applied[i].from);
    } else {
        out = "nothing applied";
    }
    if (!restart.empty()) {
        out += fmt::format("; {} changed but take{} effect only at the next start (restart daqd): ",
                           restart.size() == 1 ? "1 key" : fmt::format("{} keys", restart.size()),
                           restart.size() == 1 ? "s" : "");
        for (std::size_t i = 0; i < restart.size(); ++i) out += (i ? ", " : "") + restart[i];
    }
    return out;
}

std::string apply_reload(const reload_plan& plan, config::config& running, const config::config& fresh,
                         const std::string& file) {
    const std::string line = fmt::format("SIGHUP: reloaded {}: {}", file, plan.describe());
    const auto old_level = spdlog::get_level();
    auto new_level = old_level;
    for (const auto& c : plan.applied) {
        if (c.key == "log.level") {
            // The table's rule keeps it one of spdlog's names.
            std::string level = c.to;
            if (level.size() >= 2 && level.front() == '"') level = level.substr(1, level.size() - 2);
            running.log.level = level;
            new_level = spdlog::level::from_str(level);
        } else if (c.key == "stream.preview_rate") {
            // Read by the stream's preview on the writer thread (an atomic; main applies it).
            running.stream.preview_rate = fresh.stream.preview_rate;
        } else if (c.key == "http.token") {  // the web side takes them (main: web::service::reload_access)
            running.http.token = fresh.http.token;
        } else if (c.key == "http.token_file") {
            running.http.token_file = fresh.http.token_file;
        } else if (c.key == "http.allowed_hosts") {
            running.http.allowed_hosts = fresh.http.allowed_hosts;
        } else if (c.key == "processing.threshold") {  // the pipeline takes it (main: pipeline::set_threshold)
            running.processing.threshold = fresh.processing.threshold;
        } else if (c.key == "processing.threshold_mode") {
            running.processing.threshold_mode = fresh.processing.threshold_mode;
        }
    }
    // Logged while the more verbose of the two levels is in effect.
    if (new_level < old_level) {
        spdlog::set_level(new_level);
        spdlog::info("{}", line);
    } else {
        spdlog::info("{}", line);
        spdlog::set_level(new_level);
    }
    return line;
}

std::string one_line(std::string_view message) {
    std::string out;
    std::size_t start = 0;
    while (start <= message.size()) {
        auto end = message.find('\n', start);
        if (end == std::string_view::npos) end = message.size();
        const auto part = message.substr(start, end - start);
        if (!part.empty()) out += (out.empty() ? "" : "; ") + std::string(part);
        start = end + 1;
    }
    return out;
}

}  // namespace daqd
