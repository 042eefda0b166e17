// The processing stages on every backend, against a plain reference
// computation written out here: calibrate (absolute and k x noise
// thresholds), dose, live; odd channel counts (1, 33, 4097), incomplete
// frames (zeroed slices), batches of 1 and of many frames of several units,
// units without constants. The CUDA cases say why they are skipped when
// there is no device (or daqd was built without CUDA).
#include "daqd/common/event.hpp"
#include "daqd/processing/backend.hpp"
#include "daqd/processing/calibration.hpp"
#include "daqd/processing/live_view.hpp"
#include "daqd/processing/stage.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <vector>

using namespace daqd::processing;

namespace {

struct cpu_backend_type {
    static constexpr const char* name = "cpu";
    static std::unique_ptr<backend> make(std::size_t, std::size_t) { return make_cpu_backend(); }
};

struct cuda_backend_type {
    static constexpr const char* name = "cuda";
    static std::unique_ptr<backend> make(std::size_t max_channels, std::size_t batch) {
        return make_cuda_backend(max_channels, batch);
    }
};

// The backend; or, when it is unavailable (no CUDA device, or a build
// without CUDA), the case is skipped: under ctest (DAQD_TEST_SKIP_CODE set,
// one case per process) the process ends with that code, which ctest reports
// as skipped; run by hand, a WARN says why and the case returns (null).
template <typename B>
std::unique_ptr<backend> make_or_skip(std::size_t max_channels = 8192, std::size_t batch = 256) {
    try {
        return B::make(max_channels, batch);
    } catch (const std::exception& e) {
        const std::string why = std::string(B::name) + " backend unavailable (" + e.what() + "): SKIPPED";
        if (const char* code = std::getenv("DAQD_TEST_SKIP_CODE")) {
            std::fprintf(stderr, "%s\n", why.c_str());
            std::fflush(nullptr);
            std::_Exit(std::atoi(code));
        }
        WARN(why);
        return nullptr;
    }
}

// The reference: two float32 roundings, then the threshold.
float reference(std::uint16_t raw, float pedestal, float gain, float threshold) {
    volatile float d = static_cast<float>(raw) - pedestal;
    volatile float v = d * gain;
    return v < threshold ? 0.0f : v;
}

// Constants of one unit as a pedestal run would give them.
unit_constants random_constants(std::uint16_t unit, std::uint32_t channels, std::mt19937_64& rng) {
    std::normal_distribution<float> ped(1000.0f, 50.0f);
    std::uniform_real_distribution<float> noise(3.0f, 8.0f);
    std::uniform_real_distribution<float> gain(0.5f, 2.0f);
    unit_constants u;
    u.unit_id = unit;
    u.channels = channels;
    for (std::uint32_t c = 0; c < channels; ++c) {
        u.pedestal.push_back(ped(rng));
        u.noise.push_back(noise(rng));
        u.gain.push_back(gain(rng));
    }
    return u;
}

// Frames with their own storage (the processor would point them into the pool).
struct test_frames {
    std::vector<std::vector<std::uint16_t>> raw;
    std::vector<std::vector<float>> out;
    std::vector<frame> frames;

    void add(std::uint16_t unit, std::uint32_t channels, std::uint64_t number, const unit_constants& k,
             std::mt19937_64& rng, bool incomplete) {
        std::normal_distribution<double> noise(0.0, 5.0);
        std::uniform_real_distribution<double> u01(0.0, 1.0);
        std::vector<std::uint16_t> r(channels);
        for (std::uint32_t c = 0; c < channels; ++c) {
            double v = (k.pedestal.empty() ? 100.0 : k.pedestal[c]) + noise(rng);
            if (u01(rng) < 0.05) v += 300.0 * u01(rng);
            r[c] = static_cast<std::uint16_t>(std::clamp(std::lround(v), 0l, 65535l));
        }
        std::uint16_t missing = 0;
        if (incomplete) {  // one packet's slice never came: zeros
            const std::uint32_t from = channels / 2, to = std::min<std::uint32_t>(channels, from + 716);
            for (std::uint32_t c = from; c < to; ++c) r[c] = 0;
            missing = 1;
        }
        raw.push_back(std::move(r));
        out.emplace_back(channels, -1.0f);
        frame f;
        f.unit_id = unit;
        f.channels = channels;
        f.frame_number = number;
        f.missing_packets = missing;
        f.timestamp_ns = number * 1000;
        frames.push_back(f);
    }
    // Pointers after all frames were added (vectors no longer move).
    void bind() {
        for (std::size_t i = 0; i < frames.size(); ++i) {
            frames[i].samples = raw[i].data();
            frames[i].calibrated = out[i].data();
        }
    }
};

// The stages of a run, wired the way the processor wires them.
struct stage_chain {
    std::unique_ptr<backend> b;
    std::unique_ptr<live_view> view;
    std::vector<std::unique_ptr<stage>> stages;
    std::vector<std::unique_ptr<unit_context>> units;
    std::vector<unit_context*> by_id = std::vector<unit_context*>(65536, nullptr);

    stage_chain(std::unique_ptr<backend> backend, bool dose, bool live, threshold_policy policy,
                std::shared_ptr<const calibration_set> set, std::chrono::milliseconds interval = std::chrono::milliseconds(100))
        : b(std::move(backend)) {
        stages.push_back(std::make_unique<calibrate_stage>(*b, dose, policy, std::move(set)));
        if (dose) stages.push_back(std::make_unique<dose_stage>());
        if (live) {
            view = std::make_unique<live_view>(interval);
            stages.push_back(std::make_unique<live_stage>(*view, dose ? b.get() : nullptr, true));
        }
    }

    void run(std::span<frame> frames, std::uint64_t now_ns, bool queue_empty = false) {
        for (const frame& f : frames) {
            if (by_id[f.unit_id] != nullptr) continue;
            auto u = std::make_unique<unit_context>();
            u->unit_id = f.unit_id;
            u->channels = f.channels;
            by_id[f.unit_id] = u.get();
            for (auto& s : stages) s->add_unit(*u);
            units.push_back(std::move(u));
        }
        frame_batch batch{frames, now_ns, queue_empty, by_id.data()};
        for (auto& s : stages) s->run(batch);
    }
};

// Runs `frames` through the chain in batches of `batch_size`.
void run_batches(stage_chain& chain, test_frames& t, std::size_t batch_size, std::uint64_t now_ns = 1) {
    for (std::size_t i = 0; i < t.frames.size(); i += batch_size) {
        const std::size_t n = std::min(batch_size, t.frames.size() - i);
        chain.run(std::span<frame>(t.frames.data() + i, n), now_ns);
    }
}

// Every calibrated value bit-identical to the reference.
void check_calibrated(const test_frames& t, const std::map<std::uint16_t, unit_constants>& resolved) {
    std::size_t bad = 0;
    for (std::size_t i = 0; i < t.frames.size(); ++i) {
        const frame& f = t.frames[i];
        const unit_constants& k = resolved.at(f.unit_id);
        for (std::uint32_t c = 0; c < f.channels; ++c) {
            const float want = reference(t.raw[i][c], k.pedestal[c], k.gain[c], k.threshold[c]);
            if (std::memcmp(&want, &t.out[i][c], sizeof(float)) != 0 && ++bad <= 5) {
                INFO("frame " << i << " unit " << f.unit_id << " channel " << c << " raw " << t.raw[i][c]);
                CHECK(t.out[i][c] == want);
            }
        }
    }
    CHECK(bad == 0);
}

// The reference dose: float64 sum of the reference values per unit.
std::map<std::uint16_t, std::vector<double>> reference_dose(const test_frames& t,
                                                            const std::map<std::uint16_t, unit_constants>& resolved) {
    std::map<std::uint16_t, std::vector<double>> dose;
    for (std::size_t i = 0; i < t.frames.size(); ++i) {
        const frame& f = t.frames[i];
        const unit_constants& k = resolved.at(f.unit_id);
        auto& d = dose[f.unit_id];
        d.resize(f.channels, 0.0);
        for (std::uint32_t c = 0; c < f.channels; ++c)
            d[c] += static_cast<double>(reference(t.raw[i][c], k.pedestal[c], k.gain[c], k.threshold[c]));
    }
    return dose;
}

void check_dose(backend& b, const std::map<std::uint16_t, std::vector<double>>& want) {
    for (const auto& [unit, ref] : want) {
        std::vector<double> got(ref.size());
        REQUIRE(b.read_dose(unit, got));
        std::size_t bad = 0;
        for (std::size_t c = 0; c < ref.size(); ++c)
            if (std::fabs(got[c] - ref[c]) > 1e-9 * std::max(1.0, std::fabs(ref[c])) && ++bad <= 5) {
                INFO("unit " << unit << " channel " << c);
                CHECK(got[c] == Approx(ref[c]).epsilon(1e-9));
            }
        CHECK(bad == 0);
    }
}

}  // namespace

TEMPLATE_TEST_CASE("calibrate and dose match the reference", "[processing][stages]", cpu_backend_type,
                   cuda_backend_type) {
    const std::uint32_t channels = GENERATE(1u, 33u, 4096u, 4097u);
    const std::size_t batch = GENERATE(std::size_t{1}, std::size_t{64}, std::size_t{1000});
    const bool noise_mode = GENERATE(false, true);
    auto b = make_or_skip<TestType>();
    if (!b) return;
    INFO(TestType::name << ": channels " << channels << ", batch " << batch << ", threshold "
                        << (noise_mode ? "5 x noise" : "absolute 12.5"));
    std::mt19937_64 rng(channels * 31 + batch);
    // Units 3 and 9 have constants; unit 5 has none (identity).
    auto set = std::make_shared<calibration_set>();
    set->file = "test.calib.h5";
    set->units.emplace(3, random_constants(3, channels, rng));
    set->units.emplace(9, random_constants(9, channels, rng));
    const threshold_policy policy{noise_mode ? threshold_mode::noise : threshold_mode::absolute,
                                  noise_mode ? 5.0f : 12.5f};
    std::map<std::uint16_t, unit_constants> resolved;
    for (std::uint16_t u : {3, 5, 9}) resolved[u] = set->resolve(u, channels, policy);
    CHECK_FALSE(resolved[3].identity);
    CHECK(resolved[5].identity);

    test_frames t;
    const std::size_t n = batch == 1 ? 9 : (batch == 64 ? 150 : 1000);
    const std::uint16_t order[] = {3, 9, 5, 3, 3, 9};
    for (std::size_t i = 0; i < n; ++i) {
        const std::uint16_t unit = order[i % 6];
        t.add(unit, channels, i, resolved[unit], rng, i % 7 == 4);
    }
    t.bind();
    stage_chain chain(std::move(b), true, false, policy, set);
    run_batches(chain, t, batch);
    check_calibrated(t, resolved);
    check_dose(*chain.b, reference_dose(t, resolved));

    // A new run: the running dose starts again from 0.
    chain.b->reset_dose();
    std::vector<double> zero(channels);
    REQUIRE(chain.b->read_dose(3, zero));
    CHECK(std::all_of(zero.begin(), zero.end(), [](double d) { return d == 0.0; }));
}

TEMPLATE_TEST_CASE("calibrate without dose leaves the dose alone", "[processing][stages]", cpu_backend_type,
                   cuda_backend_type) {
    auto b = make_or_skip<TestType>();
    if (!b) return;
    std::mt19937_64 rng(7);
    auto set = std::make_shared<calibration_set>();
    set->units.emplace(1, random_constants(1, 100, rng));
    const threshold_policy policy{threshold_mode::absolute, 0.0f};
    std::map<std::uint16_t, unit_constants> resolved{{1, set->resolve(1, 100, policy)}};
    test_frames t;
    for (int i = 0; i < 10; ++i) t.add(1, 100, i, resolved[1], rng, false);
    t.bind();
    stage_chain chain(std::move(b), false, false, policy, set);
    run_batches(chain, t, 4);
    check_calibrated(t, resolved);
    std::vector<double> dose(100);
    REQUIRE(chain.b->read_dose(1, dose));
    CHECK(std::all_of(dose.begin(), dose.end(), [](double d) { return d == 0.0; }));
}

TEMPLATE_TEST_CASE("thresholds: absolute and k x noise, values below become 0", "[processing][stages]",
                   cpu_backend_type, cuda_backend_type) {
    auto b = make_or_skip<TestType>();
    if (!b) return;
    // One unit, 4 channels: pedestal 100, gain 2, noise 1, 2, 3, 4.
    auto set = std::make_shared<calibration_set>();
    unit_constants k;
    k.unit_id = 0;
    k.channels = 4;
    k.pedestal = {100, 100, 100, 100};
    k.gain = {2, 2, 2, 2};
    k.noise = {1, 2, 3, 4};
    set->units.emplace(0, k);
    test_frames t;
    std::mt19937_64 rng(1);
    t.add(0, 4, 0, k, rng, false);
    t.raw[0] = {110, 110, 110, 110};  // calibrated 20 everywhere
    t.add(0, 4, 1, k, rng, false);
    t.raw[0 + 1] = {90, 100, 104, 111};  // -20, 0, 8, 22
    t.bind();
    SECTION("noise: threshold 5 x noise = 5, 10, 15, 20") {
        stage_chain chain(std::move(b), false, false, {threshold_mode::noise, 5.0f}, set);
        run_batches(chain, t, 2);
        CHECK(t.out[0] == std::vector<float>{20, 20, 20, 20});
        CHECK(t.out[1] == std::vector<float>{0, 0, 0, 22});
    }
    SECTION("absolute: threshold 8 everywhere (8 itself is kept)") {
        stage_chain chain(std::move(b), false, false, {threshold_mode::absolute, 8.0f}, set);
        run_batches(chain, t, 1);
        CHECK(t.out[0] == std::vector<float>{20, 20, 20, 20});
        CHECK(t.out[1] == std::vector<float>{0, 0, 8, 22});
    }
}

TEMPLATE_TEST_CASE("units without constants: pedestal 0, gain 1, noise 0", "[processing][stages]", cpu_backend_type,
                   cuda_backend_type) {
    auto b = make_or_skip<TestType>();
    if (!b) return;
    // A file with unit 2 at 8 channels; unit 2 sends 6 (mismatch), unit 4 is absent.
    auto set = std::make_shared<calibration_set>();
    std::mt19937_64 rng(3);
    set->file = "x.calib.h5";
    set->units.emplace(2, random_constants(2, 8, rng));
    std::string why;
    const auto id2 = set->resolve(2, 6, {threshold_mode::noise, 5.0f}, &why);
    CHECK(id2.identity);
    CHECK_THAT(why, Catch::Contains("8 channels"));
    const auto id4 = set->resolve(4, 6, {threshold_mode::noise, 5.0f}, &why);
    CHECK(id4.identity);
    CHECK_THAT(why, Catch::Contains("not in x.calib.h5"));
    CHECK(id4.threshold == std::vector<float>(6, 0.0f));  // 5 x noise 0
    test_frames t;
    t.add(4, 6, 0, id4, rng, false);
    t.raw[0] = {0, 1, 2, 65535, 7, 1000};
    t.bind();
    stage_chain chain(std::move(b), true, false, {threshold_mode::noise, 5.0f}, set);
    run_batches(chain, t, 1);
    CHECK(t.out[0] == std::vector<float>{0, 1, 2, 65535, 7, 1000});
}

TEMPLATE_TEST_CASE("live: the newest frame and the running dose, at most once per interval", "[processing][stages]",
                   cpu_backend_type, cuda_backend_type) {
    auto b = make_or_skip<TestType>();
    if (!b) return;
    std::mt19937_64 rng(11);
    auto set = std::make_shared<calibration_set>();
    set->units.emplace(1, random_constants(1, 257, rng));
    const threshold_policy policy{threshold_mode::noise, 3.0f};
    std::map<std::uint16_t, unit_constants> resolved{{1, set->resolve(1, 257, policy)}, {2, set->resolve(2, 31, policy)}};
    test_frames t;
    for (int i = 0; i < 30; ++i) {
        const std::uint16_t unit = i % 3 == 2 ? 2 : 1;
        t.add(unit, unit == 1 ? 257 : 31, i, resolved[unit], rng, false);
    }
    t.bind();
    stage_chain chain(std::move(b), true, true, policy, set, std::chrono::milliseconds(100));
    const std::uint64_t ms = 1'000'000;
    // Batch 1 (frames 0..9) at t = 1 s: both units published, their newest frames.
    chain.run(std::span<frame>(t.frames.data(), 10), 1000 * ms);
    live_frame s;
    REQUIRE(chain.view->read(1, s));
    CHECK(s.frame_number == 9);
    CHECK(s.publications == 1);
    CHECK(s.samples == t.raw[9]);
    CHECK(s.calibrated == t.out[9]);
    CHECK(s.dose_frames == 7);  // unit 1's frames 0,1,3,4,6,7,9
    {
        std::vector<double> d(257);
        REQUIRE(chain.b->read_dose(1, d));
        CHECK(s.dose == d);
    }
    REQUIRE(chain.view->read(2, s));
    CHECK(s.frame_number == 8);
    CHECK(s.calibrated == t.out[8]);
    // Batch 2 at t = 1.05 s: within the interval, nothing new is published.
    chain.run(std::span<frame>(t.frames.data() + 10, 10), 1050 * ms);
    REQUIRE(chain.view->read(1, s));
    CHECK(s.frame_number == 9);
    CHECK(s.publications == 1);
    // Batch 3 at t = 1.2 s: published again, the newest frame of the batch.
    chain.run(std::span<frame>(t.frames.data() + 20, 10), 1200 * ms);
    REQUIRE(chain.view->read(1, s));
    CHECK(s.frame_number == 28);
    CHECK(s.publications == 2);
    CHECK(s.dose_frames == 20);
    const auto want = reference_dose(t, resolved);
    for (std::size_t c = 0; c < 257; ++c) CHECK(s.dose[c] == Approx(want.at(1)[c]).epsilon(1e-9));
    CHECK(chain.view->units() == std::vector<std::uint16_t>{1, 2});
    live_frame none;
    CHECK_FALSE(chain.view->read(7, none));
}

TEMPLATE_TEST_CASE("live: when a unit pauses, the view ends on its last frame", "[processing][stages]",
                   cpu_backend_type, cuda_backend_type) {
    auto b = make_or_skip<TestType>();
    if (!b) return;
    std::mt19937_64 rng(12);
    auto set = std::make_shared<calibration_set>();
    const threshold_policy policy{threshold_mode::absolute, 0.0f};
    std::map<std::uint16_t, unit_constants> resolved{{4, set->resolve(4, 64, policy)}};
    test_frames t;
    for (int i = 0; i < 6; ++i) t.add(4, 64, i, resolved[4], rng, false);
    t.bind();
    stage_chain chain(std::move(b), true, true, policy, set, std::chrono::milliseconds(100));
    const std::uint64_t ms = 1'000'000;
    chain.run(std::span<frame>(t.frames.data(), 2), 1000 * ms);  // frame 1 published (leading)
    live_frame s;
    REQUIRE(chain.view->read(4, s));
    CHECK(s.frame_number == 1);
    // Frames 2..4 arrive within the interval; the queue is empty behind them.
    chain.run(std::span<frame>(t.frames.data() + 2, 3), 1020 * ms, true);
    // The frames' buffers go back to the pool: the view must not need them.
    std::vector<std::uint16_t> want_raw = t.raw[4];
    std::vector<float> want_cal = t.out[4];
    std::fill(t.raw[4].begin(), t.raw[4].end(), 0);
    std::fill(t.out[4].begin(), t.out[4].end(), -1.0f);
    for (auto& st : chain.stages) st->tick(1050 * ms, false);  // not due yet
    REQUIRE(chain.view->read(4, s));
    CHECK(s.frame_number == 1);
    CHECK(s.publications == 1);
    for (auto& st : chain.stages) st->tick(1100 * ms, false);  // due: the held frame
    REQUIRE(chain.view->read(4, s));
    CHECK(s.frame_number == 4);
    CHECK(s.publications == 2);
    CHECK(s.samples == want_raw);
    CHECK(s.calibrated == want_cal);
    CHECK(s.dose_frames == 5);
    // At stop a held frame is published at once.
    chain.run(std::span<frame>(t.frames.data() + 5, 1), 1150 * ms, true);
    for (auto& st : chain.stages) st->tick(1151 * ms, true);
    REQUIRE(chain.view->read(4, s));
    CHECK(s.frame_number == 5);
    CHECK(s.publications == 3);
}
