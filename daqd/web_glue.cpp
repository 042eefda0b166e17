#include "web_glue.hpp"

#include <spdlog/spdlog.h>

#include <filesystem>
#include <iostream>

#ifndef DAQD_VERSION
#define DAQD_VERSION "0.0.0"
#endif

namespace daqd {

std::vector<web::host_check> check_host_at_start(const config::config& cfg) {
    // daqd writes there (runs, the token file): make it now, so that the
    // check says whether daqd can, not that nobody has yet.
    std::error_code ec;
    std::filesystem::create_directories(cfg.storage.output_dir, ec);
    auto checks = web::run_host_checks(web::host_inputs_for(cfg));
    for (const auto& c : checks) {
        if (c.status == web::check_status::failing)
            spdlog::warn("host check {}: {}; fix: {}", c.name, c.detail, c.fix);
        else
            spdlog::debug("host check {}: {}: {}", c.name, web::name(c.status), c.detail);
    }
    return checks;
}

int check_host_command(const config::config& cfg) {
    const auto checks = web::run_host_checks(web::host_inputs_for(cfg));
    std::cout << "daqd host check for " << cfg.source << "\n" << web::format_report(checks);
    const bool failing = web::any_failing(checks);
    std::cout << (failing ? "some checks fail: run the fix commands above (as root), then check again\n"
                          : "all checks pass\n");
    return failing ? 1 : 0;
}

std::unique_ptr<web::service> start_web(const config::config& cfg, pipeline& p, std::vector<web::host_check> checks) {
    if (!cfg.http.enabled()) return nullptr;
    web::daq_view view;
    view.cfg = &cfg;
    view.receiver = &p.receiver();
    view.rings = {&p.ring()};
    view.assembler = &p.assembler();
    view.writer = &p.writer();
    view.tap = &p.live_tap();
    view.version = DAQD_VERSION;
    view.processing_backend = p.processing_backend();
    view.processor = p.processor();
    web::run_controls controls;
    controls.check_name = [](const std::string& name) { return check_run_name(name); };
    controls.start = [&p](const std::string& name) { p.start_run(name); };
    controls.stop = [&p] { return p.stop_run(); };
    controls.current = [&p]() -> std::optional<web::run_info> {
        auto r = p.current_run();
        if (!r) return std::nullopt;
        return web::run_info{r->name, r->started, r->frames_before, r->bytes_before, r->error};
    };
    // Never on the writer thread, never in this process: a damaged file can
    // hang HDF5 (one global lock in the thread-safe build), so each file is
    // read by a child process that is killed at the deadline.
    controls.read_run_files = web::run_catalog::helper_reader("/proc/self/exe", web::run_catalog::read_deadline);
    try {
        return std::make_unique<web::service>(cfg, std::move(view), std::move(controls), std::move(checks));
    } catch (const std::exception& e) {
        spdlog::error("{}; daqd runs without its status page, /metrics and control API", e.what());
        return nullptr;
    }
}

}  // namespace daqd
