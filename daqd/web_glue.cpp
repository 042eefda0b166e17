#include "web_glue.hpp"

#include <spdlog/spdlog.h>

#include <filesystem>
#include <iostream>

namespace daqd {

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
    controls.start = [&p](const std::string& name, const std::string& compression) {
        std::optional<storage::compression_kind> c;
        if (compression == "bslz4") c = storage::compression_kind::bslz4;
        if (compression == "none") c = storage::compression_kind::none;
        p.start_run(name, c);
    };
    controls.stop = [&p]() -> std::optional<web::run_result> {
        auto s = p.stop_run();
        if (!s) return std::nullopt;
        return web::run_result{s->run_name,      s->files,  s->frames_written, s->bytes_written,
                               s->frames_rejected, s->failed, s->error};
    };
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
