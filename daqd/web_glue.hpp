#pragma once
// Glue between the pipeline and daqd::web: host checks at start and for
// `daqd --check-host`, and the web service bound to the pipeline's counters
// and run controls. Main thread only.
#include "pipeline.hpp"

#include "daqd/config/config.hpp"
#include "daqd/acquisition/host_check.hpp"
#include "daqd/storage/run_catalog.hpp"
#include "daqd/web/server.hpp"

#include <memory>
#include <vector>

namespace daqd {

// The files the configuration names and daqd reads at start: http.token_file
// (with the HTTP server on) and processing.calibration_file (with the
// calibrate stage). One message per file daqd could not use, naming the key
// (and its line in `config_file`, when it is there); empty when all are good.
// `daqd --check-config` fails on them, and daqd refuses to start.
std::vector<std::string> check_config_files(const config::config& cfg, const std::string& config_file = {});

// Runs the host checks for cfg and logs each one that is not ok (with its fix).
std::vector<common::host_check> check_host_at_start(const config::config& cfg);
// `daqd --check-host`: prints every result; 0 when none fails, 1 otherwise.
int check_host_command(const config::config& cfg);
// Starts the HTTP server when cfg.http is enabled. On failure (port in use,
// token file unwritable) logs an error and returns nullptr: daqd keeps acquiring.
// The web layer's view of the pipeline (telemetry, live view) and its run
// controls (the pipeline's, the catalogue's); both must outlive the service.
web::daq_view web_view(const config::config& cfg, const pipeline& p);
web::run_controls web_controls(pipeline& p, storage::run_catalog& catalog);
std::unique_ptr<web::service> start_web(const config::config& cfg, pipeline& p, storage::run_catalog& catalog,
                                        std::vector<common::host_check> checks);

}  // namespace daqd
