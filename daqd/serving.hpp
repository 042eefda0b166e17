#pragma once
// What a serving daqd is made of, in the order it starts: the pipeline, the
// run catalogue, then the web side bound to both (web_glue.hpp). It stops the other way round: the
// web side first, so that no request reaches the pipeline while it stops,
// then the pipeline, whose stages stop upstream first. The members are
// declared in start order, so destruction keeps that order too.
//
// Owned by main; main thread only.
#include "pipeline.hpp"

#include "daqd/storage/run_catalog.hpp"
#include "daqd/web/server.hpp"

#include <memory>

namespace daqd {

struct serving {
    std::unique_ptr<pipeline> data_path;
    std::unique_ptr<storage::run_catalog> catalog;  // for the web side's run listing
    std::unique_ptr<web::service> web;  // may stay null (no http, a pedestal run)

    // Stops both; the pipeline stays readable (snapshot, pedestal result).
    void stop() {
        web.reset();
        if (data_path) data_path->stop();
    }
};

}  // namespace daqd
