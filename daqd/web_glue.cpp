#include "web_glue.hpp"

#include "daqd/storage/calibration_file.hpp"
#include "daqd/web/token.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <filesystem>
#include <fstream>
#include <iostream>

namespace daqd {

namespace {

// "FILE:LINE: " of `section.key` in a TOML file, or "" when the key is not
// written there (it came from the command line, or the file is gone).
std::string where_is(const std::string& config_file, std::string_view dotted) {
    if (config_file.empty()) return {};
    const auto dot = dotted.find('.');
    const std::string section(dotted.substr(0, dot)), key(dotted.substr(dot + 1));
    std::ifstream in(config_file);
    std::string line, current;
    for (int n = 1; std::getline(in, line); ++n) {
        const auto first = line.find_first_not_of(" \t");
        if (first == std::string::npos) continue;
        if (line[first] == '[') {
            const auto end = line.find(']', first);
            current = line.substr(first + 1, end == std::string::npos ? std::string::npos : end - first - 1);
            continue;
        }
        if (current != section || line.compare(first, key.size(), key) != 0) continue;
        const auto eq = line.find_first_not_of(" \t", first + key.size());
        if (eq != std::string::npos && line[eq] == '=') return fmt::format("{}:{}: ", config_file, n);
    }
    return {};
}

}  // namespace

std::vector<std::string> check_config_files(const config::config& cfg, const std::string& config_file) {
    std::vector<std::string> errors;
    if (cfg.http.enabled() && cfg.http.token.empty() && !cfg.http.token_file.empty()) {
        try {
            (void)web::read_token_file(cfg.http.token_file);
        } catch (const std::exception& e) {
            errors.push_back(fmt::format("{}{} (daqd reads the token there at start for its status page, /metrics "
                                         "and control API: fix the file, or set http.listen = \"\" for no HTTP "
                                         "server)",
                                         where_is(config_file, "http.token_file"), e.what()));
        }
    }
    if (cfg.processing.has("calibrate") && !cfg.processing.calibration_file.empty()) {
        std::error_code ec;
        if (!std::filesystem::is_regular_file(cfg.processing.calibration_file, ec))
            errors.push_back(fmt::format("{}processing.calibration_file = \"{}\": {}",
                                         where_is(config_file, "processing.calibration_file"),
                                         cfg.processing.calibration_file.string(),
                                         std::filesystem::exists(cfg.processing.calibration_file, ec)
                                             ? "not a regular file"
                                             : "no such file (a pedestal run makes one: daqd --pedestal-run NAME)"));
    }
    return errors;
}

std::vector<common::host_check> check_host_at_start(const config::config& cfg) {
    // daqd writes there (runs, the token file): make it now, so that the
    // check says whether daqd can, not that nobody has yet.
    std::error_code ec;
    std::filesystem::create_directories(cfg.storage.output_dir, ec);
    auto checks = acquisition::run_host_checks(acquisition::host_inputs_for(cfg));
    for (const auto& c : checks) {
        if (c.status == common::check_status::failing)
            spdlog::warn("host check {}: {}; fix: {}", c.name, c.detail, c.fix);
        else
            spdlog::debug("host check {}: {}: {}", c.name, common::name(c.status), c.detail);
    }
    return checks;
}

int check_host_command(const config::config& cfg) {
    const auto checks = acquisition::run_host_checks(acquisition::host_inputs_for(cfg));
    std::cout << "daqd host check for " << cfg.source << "\n" << acquisition::format_report(checks);
    const bool failing = acquisition::any_failing(checks);
    std::cout << (failing ? "some checks fail: run the fix commands above (as root), then check again\n"
                          : "all checks pass\n");
    return failing ? 1 : 0;
}

web::daq_view web_view(const config::config& cfg, const pipeline& p) {
    web::daq_view view;
    view.cfg = &cfg;
    view.telemetry = [&p] { return p.telemetry(); };
    view.live = [&p](std::uint16_t unit, common::live_frame& out) { return p.live_tap().read(unit, out); };
    return view;
}

web::run_controls web_controls(pipeline& p, storage::run_catalog& catalog) {
    web::run_controls controls;
    controls.check_name = [](const std::string& name) { return check_run_name(name); };
    controls.start = [&p](const web::run_start& s) {
        run_request r;
        r.name = s.name;
        if (s.compression == "bslz4") r.compression = storage::compression_kind::bslz4;
        if (s.compression == "none") r.compression = storage::compression_kind::none;
        r.started_by = "api";
        r.name_generated = p.name_was_generated(s.name);
        r.host = s.host;
        for (const auto& [k, v] : s.meta) r.metadata.push_back({k, v});
        r.metadata_json = s.meta_json;
        r.prepare = s.prepare;
        r.prepare_timeout = std::chrono::seconds(s.prepare_timeout_s);
        p.start_run(std::move(r));
    };
    controls.commit = [&p](const std::string& name) { p.commit_run(name); };
    controls.abort = [&p](const std::string& name) { return p.abort_run(name); };
    controls.start_pedestal = [&p](const std::string& name, std::uint64_t frames) {
        p.start_pedestal(name, frames, "api", p.name_was_generated(name));
    };
    controls.next_name = [&p] { return p.next_run_name(); };
    controls.stop = [&p]() -> std::optional<web::run_result> { return p.stop_run(); };
    controls.current = [&p] { return p.current_run(); };
    // Never on the writer thread, never in this process: a damaged file can
    // hang HDF5 (one global lock in the thread-safe build), so each file is
    // read by a child process that is killed at the deadline.
    controls.list = [&catalog, reader = storage::run_catalog::helper_reader("/proc/self/exe",
                                                                            storage::run_catalog::read_deadline)](
                        const std::optional<std::string>& active) { return catalog.list(active, reader); };
    controls.exists = [&catalog](const std::string& name) { return catalog.exists(name); };
    controls.files_of = [&catalog](const std::string& name) { return catalog.files_of(name); };
    return controls;
}

std::unique_ptr<web::service> start_web(const config::config& cfg, pipeline& p, storage::run_catalog& catalog,
                                        std::vector<common::host_check> checks) {
    if (!cfg.http.enabled()) return nullptr;
    try {
        return std::make_unique<web::service>(cfg, web_view(cfg, p), web_controls(p, catalog), std::move(checks));
    } catch (const std::exception& e) {
        spdlog::error("{}; daqd runs without its status page, /metrics and control API", e.what());
        return nullptr;
    }
}

}  // namespace daqd
