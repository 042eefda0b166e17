// The [processing] section of the configuration: values, order rules,
// errors that name the key and the line, round trip through to_toml.
#include "daqd/config/config.hpp"

#include <catch2/catch.hpp>

using namespace daqd::config;

TEST_CASE("[processing]: defaults, values and round trip", "[processing][config]") {
    const config d = load_default();
    CHECK(d.processing.stages.empty());
    CHECK(d.processing.backend == "auto");
    CHECK(d.processing.calibration_file.empty());
    CHECK(d.processing.threshold == 5.0);
    CHECK(d.processing.threshold_mode == "noise");
    CHECK(d.processing.batch_frames == 64);
    CHECK(d.processing.live_interval == std::chrono::milliseconds(200));

    const config c = load_string(R"([processing]
stages = ["calibrate", "dose", "live"]
backend = "cpu"
calibration_file = "/data/ped 1.calib.h5"
threshold = 12
threshold_mode = "absolute"
batch_frames = 512
live_interval_ms = 50
)",
                                 "p.toml");
    CHECK(c.processing.stages == std::vector<std::string>{"calibrate", "dose", "live"});
    CHECK(c.processing.has("dose"));
    CHECK(c.processing.backend == "cpu");
    CHECK(c.processing.calibration_file == "/data/ped 1.calib.h5");
    CHECK(c.processing.threshold == 12.0);  // an integer is accepted
    CHECK(c.processing.threshold_mode == "absolute");
    CHECK(c.processing.batch_frames == 512);
    CHECK(c.processing.live_interval == std::chrono::milliseconds(50));
    // The rendered text reads back as the same configuration.
    const config again = load_string(c.text, "p.toml");
    CHECK(again.processing == c.processing);
    CHECK(again.text == c.text);

    config odd;
    odd.processing.threshold = 0.1 + 0.2;
    odd.processing.stages = {"calibrate"};
    CHECK(load_string(to_toml(odd), "x").processing.threshold == odd.processing.threshold);
    odd.processing.threshold = -2.5e-7;
    odd.processing.threshold_mode = "absolute";
    CHECK(load_string(to_toml(odd), "x").processing.threshold == odd.processing.threshold);
}

TEST_CASE("[processing]: mistakes are refused with the key and the line", "[processing][config]") {
    auto error_of = [](const std::string& text) {
        try {
            load_string(text, "p.toml");
        } catch (const config_error& e) {
            return std::string(e.what());
        }
        return std::string("no error");
    };
    CHECK_THAT(error_of("[processing]\n\nstages = [\"calibrate\", \"smooth\"]\n"),
               Catch::Contains("p.toml:3: processing.stages[1]: unknown stage 'smooth'"));
    CHECK_THAT(error_of("[processing]\nstages = [\"live\", \"calibrate\"]\n"),
               Catch::Contains("processing.stages[1]: 'calibrate' is repeated or out of order"));
    CHECK_THAT(error_of("[processing]\nstages = [\"calibrate\", \"calibrate\"]\n"),
               Catch::Contains("repeated or out of order"));
    CHECK_THAT(error_of("[processing]\nstages = [\"dose\"]\n"), Catch::Contains("'dose' needs 'calibrate'"));
    CHECK_THAT(error_of("[processing]\nstages = \"calibrate\"\n"),
               Catch::Contains("processing.stages must be an array"));
    CHECK_THAT(error_of("[processing]\nbackend = \"gpu\"\n"),
               Catch::Contains("processing.backend must be 'auto', 'cpu' or 'cuda', got 'gpu'"));
    CHECK_THAT(error_of("[processing]\nthreshold_mode = \"sigma\"\n"),
               Catch::Contains("processing.threshold_mode must be 'absolute' or 'noise'"));
    CHECK_THAT(error_of("[processing]\nthreshold = -1.0\n"), Catch::Contains("must be >= 0 with threshold_mode"));
    CHECK_THAT(error_of("[processing]\nthreshold = \"5\"\n"), Catch::Contains("processing.threshold must be a number"));
    CHECK_THAT(error_of("[processing]\nthreshold = nan\n"), Catch::Contains("must be a finite number"));
    CHECK_THAT(error_of("[processing]\nbatch_frames = 0\n"),
               Catch::Contains("processing.batch_frames must be between 1 and 4096"));
    CHECK_THAT(error_of("[processing]\nlive_interval_ms = 5\n"), Catch::Contains("processing.live_interval_ms"));
    CHECK_THAT(error_of("[processing]\nstage = []\n"), Catch::Contains("did you mean 'processing.stages'"));
    CHECK(error_of("[processing]\nthreshold = -1.0\nthreshold_mode = \"absolute\"\n") == "no error");
}
