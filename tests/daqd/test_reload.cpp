// Reloading the configuration (SIGHUP): which keys are applied while daqd
// runs, which are named as needing a restart, and the one log line.
#include "reload.hpp"

#include <catch2/catch.hpp>
#include <spdlog/spdlog.h>

namespace cfg = daqd::config;

TEST_CASE("reload: nothing changed, a log level applied, other keys named as needing a restart", "[daqd][reload]") {
    const auto running = cfg::load_default();

    SECTION("the same file") {
        const auto plan = daqd::plan_reload(running, cfg::load_default());
        CHECK(plan.empty());
        CHECK(plan.describe() == "nothing changed");
    }
    SECTION("log.level only: applied") {
        auto fresh = running;
        fresh.log.level = "debug";
        const auto plan = daqd::plan_reload(running, fresh);
        REQUIRE(plan.applied.size() == 1);
        CHECK(plan.applied[0].key == "log.level");
        CHECK(plan.applied[0].from == "\"info\"");
        CHECK(plan.applied[0].to == "\"debug\"");
        CHECK(plan.restart.empty());
        CHECK(plan.describe() == "applied log.level = \"debug\" (was \"info\")");
    }
    SECTION("keys that size or wire the data path: named, in table order, values not shown") {
        auto fresh = running;
        fresh.storage.flush_interval = std::chrono::milliseconds(250);
        fresh.acquisition.batch = 32;
        fresh.http.token = "s3cret-token";
        fresh.log.level = "warn";
        const auto plan = daqd::plan_reload(running, fresh);
        REQUIRE(plan.applied.size() == 2);
        CHECK(plan.restart == std::vector<std::string>{"acquisition.batch", "storage.flush_interval_ms"});
        const auto line = plan.describe();
        CHECK(line ==
              "applied log.level = \"warn\" (was \"info\"), http.token = (hidden) (was (hidden)); 2 keys changed but "
              "take effect only at the next start (restart daqd): acquisition.batch, storage.flush_interval_ms");
        CHECK(line.find("s3cret") == std::string::npos);
    }
    SECTION("one key needing a restart, nothing applied") {
        auto fresh = running;
        fresh.acquisition.listen.push_back({"127.0.0.1", 4661});
        const auto plan = daqd::plan_reload(running, fresh);
        CHECK(plan.describe() ==
              "nothing applied; 1 key changed but takes effect only at the next start (restart daqd): "
              "acquisition.listen");
    }
}

TEST_CASE("reload: applying sets the process's log level and what daqd runs with", "[daqd][reload]") {
    auto running = cfg::load_default();
    const auto before = spdlog::get_level();
    auto fresh = running;
    fresh.log.level = "error";
    const auto line = daqd::apply_reload(daqd::plan_reload(running, fresh), running, fresh, "daqd.toml");
    CHECK(line == "SIGHUP: reloaded daqd.toml: applied log.level = \"error\" (was \"info\")");
    CHECK(spdlog::get_level() == spdlog::level::err);
    CHECK(running.log.level == "error");
    // Reloading the same file again: nothing left to apply.
    CHECK(daqd::plan_reload(running, fresh).empty());
    spdlog::set_level(before);
}

TEST_CASE("reload: the stream's preview rate is applied, its endpoints need a restart", "[daqd][reload]") {
    auto running = cfg::load_string("[stream]\nlisten = \"tcp://127.0.0.1:5555\"\n", "a.toml");
    auto fresh = running;
    fresh.stream.preview_rate = 10.0;
    fresh.stream.listen = {"tcp://127.0.0.1:5600"};
    const auto plan = daqd::plan_reload(running, fresh);
    REQUIRE(plan.applied.size() == 1);
    CHECK(plan.applied[0].key == "stream.preview_rate");
    CHECK(plan.restart == std::vector<std::string>{"stream.listen"});
    (void)daqd::apply_reload(plan, running, fresh, "a.toml");
    CHECK(running.stream.preview_rate == 10.0);
    CHECK(running.stream.listen == std::vector<std::string>{"tcp://127.0.0.1:5555"});
}

TEST_CASE("reload: a configuration error's lines become one log line", "[daqd][reload]") {
    CHECK(daqd::one_line("a.toml:3: x\na.toml:7: y\n") == "a.toml:3: x; a.toml:7: y");
    CHECK(daqd::one_line("one") == "one");
    try {
        (void)cfg::load_string("[log]\nlevel = \"loud\"\n[acquisition]\nbatch = 0\n", "bad.toml");
        FAIL("a broken file loaded");
    } catch (const cfg::config_error& e) {
        const auto line = daqd::one_line(e.what());
        CHECK(line.find('\n') == std::string::npos);
        CHECK(line.find("log.level") != std::string::npos);
        CHECK(line.find("acquisition.batch") != std::string::npos);
    }
}
