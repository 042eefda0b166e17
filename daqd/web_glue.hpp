#pragma once
// Glue between the pipeline and daqd::web: host checks at start and for
// `daqd --check-host`, and the web service bound to the pipeline's counters
// and run controls. Main thread only.
#include "pipeline.hpp"

#include "daqd/config/config.hpp"
#include "daqd/web/host_check.hpp"
#include "daqd/web/server.hpp"

#include <memory>
#include <vector>

namespace daqd {

// Runs the host checks for cfg and logs each one that is not ok (with its fix).
std::vector<web::host_check> check_host_at_start(const config::config& cfg);
// `daqd --check-host`: prints every result; 0 when none fails, 1 otherwise.
int check_host_command(const config::config& cfg);
// Starts the HTTP server when cfg.http is enabled. On failure (port in use,
// token file unwritable) logs an error and returns nullptr: daqd keeps acquiring.
std::unique_ptr<web::service> start_web(const config::config& cfg, pipeline& p, std::vector<web::host_check> checks);

}  // namespace daqd
