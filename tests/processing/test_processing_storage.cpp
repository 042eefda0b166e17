// The calibration/dose parts of storage: calibration files (write, read,
// refusals) and what run_file writes with processing on: `calibrated`,
// `dose` (per file under rotation) and the constants in /units/u<id>/calibration.
#include "storage_test_util.hpp"

#include "daqd/kernels/cpu.hpp"
#include "daqd/processing/calibration.hpp"
#include "daqd/storage/calibration_file.hpp"
#include "daqd/storage/run_writer.hpp"

#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <map>
#include <random>

using namespace storage_test;
using daqd::processing::calibration_set;
using daqd::processing::threshold_mode;
using daqd::processing::threshold_policy;
using daqd::processing::unit_constants;
using daqd::storage::read_calibration_file;
using daqd::storage::run_file;
using daqd::storage::run_options;
using daqd::storage::storage_error;
using daqd::storage::write_calibration_file;

namespace {

unit_constants constants(std::uint16_t unit, std::uint32_t channels, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> ped(1000.0f, 50.0f);
    std::uniform_real_distribution<float> noise(3.0f, 8.0f), gain(0.8f, 1.2f);
    unit_constants u;
    u.unit_id = unit;
    u.channels = channels;
    u.frames = 1000;
    for (std::uint32_t c = 0; c < channels; ++c) {
        u.pedestal.push_back(ped(rng));
        u.noise.push_back(noise(rng));
        u.gain.push_back(gain(rng));
    }
    return u;
}

std::vector<float> read_floats(hid_t file, const std::string& path) {
    h5::dataset d(H5Dopen2(file, path.c_str(), H5P_DEFAULT));
    REQUIRE(d);
    return read_all<float>(d.get(), H5T_NATIVE_FLOAT);
}

std::vector<double> read_doubles(hid_t file, const std::string& path) {
    h5::dataset d(H5Dopen2(file, path.c_str(), H5P_DEFAULT));
    REQUIRE(d);
    return read_all<double>(d.get(), H5T_NATIVE_DOUBLE);
}

// A frame with samples and a calibrated row of its own.
struct cal_frame {
    std::vector<std::uint16_t> raw;
    std::vector<float> cal;
    daqd::processing::frame f;
};

cal_frame make_frame(std::uint16_t unit, std::uint64_t number, const unit_constants& k, std::mt19937_64& rng,
                     bool with_calibrated = true) {
    cal_frame x;
    std::normal_distribution<double> noise(0.0, 6.0);
    x.raw.resize(k.channels);
    x.cal.resize(k.channels);
    for (std::uint32_t c = 0; c < k.channels; ++c)
        x.raw[c] = static_cast<std::uint16_t>(std::lround(k.pedestal[c] + noise(rng) + (c % 5 == 0 ? 80 : 0)));
    daqd::kernels::calibrate_row(x.raw.data(), k.pedestal.data(), k.gain.data(), k.threshold.data(), x.cal.data(),
                                 k.channels);
    x.f.unit_id = unit;
    x.f.channels = k.channels;
    x.f.frame_number = number;
    x.f.timestamp_ns = number;
    x.f.packet_count = 1;
    x.f.samples = x.raw.data();
    x.f.calibrated = with_calibrated ? x.cal.data() : nullptr;
    if (!with_calibrated) std::fill(x.cal.begin(), x.cal.end(), 0.0f);
    return x;
}

run_options processing_options(const fs::path& dir, const std::string& name, std::shared_ptr<const calibration_set> set,
                               threshold_policy policy) {
    run_options o;
    o.output_dir = dir;
    o.run_name = name;
    o.chunk_bytes = 4096;
    o.config_text = "[processing]\n";
    o.server_version = "test";
    o.processing.calibrated = true;
    o.processing.dose = true;
    o.processing.calibration = std::move(set);
    o.processing.threshold = policy;
    return o;
}

}  // namespace

TEST_CASE("calibration files: written, read back equal, never overwritten", "[processing][storage]") {
    temp_dir dir;
    calibration_set set;
    set.units.emplace(3, constants(3, 4097, 1));
    set.units.emplace(65535, constants(65535, 1, 2));
    const auto path = dir.path() / "ped.calib.h5";
    write_calibration_file(path, set, "test pedestals");
    const auto back = read_calibration_file(path);
    CHECK(back.file == path.string());
    REQUIRE(back.units.size() == 2);
    for (const auto& [id, u] : set.units) {
        const auto& b = back.units.at(id);
        CHECK(b.unit_id == id);
        CHECK(b.channels == u.channels);
        CHECK(b.pedestal == u.pedestal);
        CHECK(b.noise == u.noise);
        CHECK(b.gain == u.gain);
        CHECK(b.frames == 1000);
        CHECK(b.source == path.string());
    }
    {
        auto f = open_read(path);
        CHECK(read_string_attr(f.get(), "format") == "daq1-calibration");
        CHECK(read_int_attr(f.get(), "format_version") == 1);
        CHECK(read_string_attr(f.get(), "description") == "test pedestals");
    }
    CHECK_THROWS_AS(write_calibration_file(path, set, "again"), storage_error);
    CHECK(read_calibration_file(path).units.size() == 2);  // untouched

    SECTION("a missing file or another format is refused, naming the file") {
        CHECK_THROWS_WITH(read_calibration_file(dir.path() / "nope.h5"), Catch::Contains("nope.h5"));
        const auto other = dir.path() / "run.h5";
        {
            h5::file f(H5Fcreate(other.c_str(), H5F_ACC_EXCL, H5P_DEFAULT, H5P_DEFAULT));
            REQUIRE(f);
        }
        CHECK_THROWS_WITH(read_calibration_file(other), Catch::Contains("expected 'daq1-calibration'"));
    }
    SECTION("arrays of the wrong length are refused") {
        calibration_set bad;
        auto u = constants(1, 10, 3);
        u.gain.pop_back();
        bad.units.emplace(1, u);
        CHECK_THROWS_AS(write_calibration_file(dir.path() / "bad.calib.h5", bad, ""), storage_error);
        CHECK_FALSE(fs::exists(dir.path() / "bad.calib.h5"));
    }
}

TEST_CASE("run_file with processing: calibrated, dose and the constants read back equal the reference",
          "[processing][storage]") {
    temp_dir dir;
    auto set = std::make_shared<calibration_set>();
    set->file = "/x/ped.calib.h5";
    set->units.emplace(1, constants(1, 300, 11));
    const threshold_policy policy{threshold_mode::noise, 5.0f};
    const auto k1 = set->resolve(1, 300, policy);
    const auto k2 = set->resolve(2, 17, policy);  // not in the file: identity
    REQUIRE(k2.identity);
    std::mt19937_64 rng(4);
    std::vector<float> want_cal1, want_cal2;
    std::vector<double> want_dose1(300, 0.0), want_dose2(17, 0.0);
    std::vector<std::string> files;
    {
        run_file rf(processing_options(dir.path(), "cal", set, policy));
        for (std::uint64_t i = 0; i < 40; ++i) {
            // Frame 13 of unit 1 arrives without a calibrated row: zeros stored.
            auto a = make_frame(1, i, k1, rng, i != 13);
            auto b = make_frame(2, i, k2, rng);
            for (auto* x : {&a, &b}) {
                rf.append(x->f);
                auto& cal = x == &a ? want_cal1 : want_cal2;
                auto& dose = x == &a ? want_dose1 : want_dose2;
                cal.insert(cal.end(), x->cal.begin(), x->cal.end());
                for (std::size_t c = 0; c < x->cal.size(); ++c) dose[c] += x->cal[c];
            }
            if (i == 20) rf.flush();
        }
        rf.close();
        CHECK(rf.stats().bytes_written == 40 * ((2 * 300 + 18 + 4 * 300) + (2 * 17 + 18 + 4 * 17)));
        for (const auto& p : rf.stats().files) files.push_back(p.string());
    }
    REQUIRE(files.size() == 1);
    auto f = open_read(files[0]);
    CHECK(read_floats(f.get(), "/units/u1/calibrated") == want_cal1);
    CHECK(read_floats(f.get(), "/units/u2/calibrated") == want_cal2);
    {
        h5::dataset d(H5Dopen2(f.get(), "/units/u1/calibrated", H5P_DEFAULT));
        CHECK(dims_of(d.get()) == std::vector<hsize_t>{40, 300});
        h5::datatype t(H5Dget_type(d.get()));
        CHECK(H5Tequal(t.get(), H5T_IEEE_F32LE) > 0);
    }
    const auto dose1 = read_doubles(f.get(), "/units/u1/dose");
    REQUIRE(dose1.size() == 300);
    for (std::size_t c = 0; c < 300; ++c) CHECK(dose1[c] == Approx(want_dose1[c]).epsilon(1e-12));
    CHECK(read_doubles(f.get(), "/units/u2/dose") == want_dose2);
    // The constants used.
    CHECK(read_floats(f.get(), "/units/u1/calibration/pedestal") == k1.pedestal);
    CHECK(read_floats(f.get(), "/units/u1/calibration/noise") == k1.noise);
    CHECK(read_floats(f.get(), "/units/u1/calibration/gain") == k1.gain);
    CHECK(read_floats(f.get(), "/units/u1/calibration/threshold") == k1.threshold);
    CHECK(read_floats(f.get(), "/units/u2/calibration/gain") == std::vector<float>(17, 1.0f));
    CHECK(read_floats(f.get(), "/units/u2/calibration/pedestal") == std::vector<float>(17, 0.0f));
    h5::group g1(H5Gopen2(f.get(), "/units/u1/calibration", H5P_DEFAULT));
    h5::group g2(H5Gopen2(f.get(), "/units/u2/calibration", H5P_DEFAULT));
    CHECK(read_string_attr(g1.get(), "source") == "/x/ped.calib.h5");
    CHECK(read_int_attr(g1.get(), "identity") == 0);
    CHECK(read_string_attr(g1.get(), "threshold_mode") == "noise");
    CHECK(read_int_attr(g2.get(), "identity") == 1);
    CHECK_THAT(read_string_attr(g2.get(), "source"), Catch::Contains("identity"));
}

TEST_CASE("run_file with processing: rows calibrated under an earlier threshold are calibrated again with the run's",
          "[processing][storage]") {
    temp_dir dir;
    auto set = std::make_shared<calibration_set>();
    set->units.emplace(1, constants(1, 300, 12));
    const threshold_policy old_policy{threshold_mode::noise, 1.0f}, run_policy{threshold_mode::noise, 8.0f};
    const auto k_old = set->resolve(1, 300, old_policy);
    const auto k_run = set->resolve(1, 300, run_policy);
    REQUIRE(k_old.threshold != k_run.threshold);
    auto o = processing_options(dir.path(), "thr", set, run_policy);
    o.processing.threshold_epoch = 3;
    std::mt19937_64 rng(5);
    std::vector<float> want;
    std::vector<double> want_dose(300, 0.0);
    std::string path;
    std::uint64_t recalibrated = 0;
    {
        run_file rf(o);
        for (std::uint64_t i = 0; i < 12; ++i) {
            // The first 4 were queued before the run's threshold was taken up (epoch 2).
            auto x = make_frame(1, i, i < 4 ? k_old : k_run, rng);
            x.f.threshold_epoch = i < 4 ? 2 : 3;
            std::vector<float> expect(300);
            daqd::kernels::calibrate_row(x.raw.data(), k_run.pedestal.data(), k_run.gain.data(), k_run.threshold.data(),
                                         expect.data(), 300);
            if (i < 4) CHECK(expect != x.cal);  // the old threshold kept some values the run's zeroes
            rf.append(x.f);
            want.insert(want.end(), expect.begin(), expect.end());
            for (std::size_t c = 0; c < 300; ++c) want_dose[c] += expect[c];
        }
        rf.close();
        recalibrated = rf.stats().frames_recalibrated;
        path = rf.stats().files.front().string();
    }
    CHECK(recalibrated == 4);
    auto f = open_read(path);
    CHECK(read_floats(f.get(), "/units/u1/calibrated") == want);
    CHECK(read_floats(f.get(), "/units/u1/calibration/threshold") == k_run.threshold);
    const auto dose = read_doubles(f.get(), "/units/u1/dose");
    for (std::size_t c = 0; c < 300; ++c) CHECK(dose[c] == Approx(want_dose[c]).epsilon(1e-12));
}

TEST_CASE("run_file with processing: under rotation the dose of each file sums that file's rows",
          "[processing][storage]") {
    temp_dir dir;
    auto set = std::make_shared<calibration_set>();
    set->units.emplace(4, constants(4, 1000, 21));
    const threshold_policy policy{threshold_mode::absolute, 3.0f};
    const auto k = set->resolve(4, 1000, policy);
    auto opt = processing_options(dir.path(), "rot", set, policy);
    opt.rotate_bytes = 100'000;  // 6018 bytes per row: 16 rows per file
    std::mt19937_64 rng(9);
    std::vector<cal_frame> frames;
    for (std::uint64_t i = 0; i < 50; ++i) frames.push_back(make_frame(4, i, k, rng));
    std::vector<fs::path> files;
    {
        run_file rf(opt);
        for (auto& x : frames) rf.append(x.f);
        rf.close();
        files = rf.stats().files;
    }
    REQUIRE(files.size() == 4);
    std::size_t row = 0;
    for (const auto& path : files) {
        INFO(path);
        auto f = open_read(path);
        h5::dataset fn(H5Dopen2(f.get(), "/units/u4/frame_number", H5P_DEFAULT));
        const auto numbers = read_all<std::uint64_t>(fn.get(), H5T_NATIVE_UINT64);
        std::vector<double> want(1000, 0.0);
        for (auto n : numbers) {
            CHECK(n == row);
            for (std::size_t c = 0; c < 1000; ++c) want[c] += frames[n].cal[c];
            ++row;
        }
        const auto dose = read_doubles(f.get(), "/units/u4/dose");
        REQUIRE(dose.size() == 1000);
        for (std::size_t c = 0; c < 1000; ++c) CHECK(dose[c] == want[c]);  // same order of summation
        const auto cal = read_floats(f.get(), "/units/u4/calibrated");
        CHECK(cal.size() == numbers.size() * 1000);
        CHECK(read_floats(f.get(), "/units/u4/calibration/threshold") == std::vector<float>(1000, 3.0f));
    }
    CHECK(row == 50);
}

TEST_CASE("run_file without processing writes no processing datasets", "[processing][storage]") {
    temp_dir dir;
    run_options o;
    o.output_dir = dir.path();
    o.run_name = "plain";
    std::mt19937_64 rng(1);
    const auto k = calibration_set{}.resolve(1, 10, {});
    auto x = make_frame(1, 0, k, rng);
    fs::path path;
    {
        run_file rf(o);
        rf.append(x.f);
        rf.close();
        path = rf.stats().files.at(0);
    }
    auto f = open_read(path);
    h5::group g(H5Gopen2(f.get(), "/units/u1", H5P_DEFAULT));
    CHECK(link_names(g.get()) == std::vector<std::string>{"frame_number", "missing_packets", "raw", "timestamp_ns"});
}
