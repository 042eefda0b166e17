// End to end with real processes: a pedestal run (daq-sim --detector, no
// beam) writes a calibration file whose pedestals and noise match what the
// simulator used; a beam run calibrated with it stores a dose map whose
// maximum is where the simulated beam spot is.
#include "../e2e/process.hpp"

#include "daqd/storage/calibration_file.hpp"
#include "daqd/storage/h5.hpp"

#include <arpa/inet.h>
#include <catch2/catch.hpp>
#include <netinet/in.h>
#include <nlohmann/json.hpp>
#include <sys/socket.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <thread>

using nlohmann::json;
using daqd::test::read_json;
using daqd::test::child;
using daqd::test::scratch_dir;
namespace fs = std::filesystem;
namespace h5 = daqd::storage::h5;
using namespace std::chrono_literals;

namespace {

template <typename T>
std::vector<T> read_dataset(hid_t file, const std::string& path, hid_t memtype) {
    h5::dataset d(H5Dopen2(file, path.c_str(), H5P_DEFAULT));
    REQUIRE(d);
    h5::dataspace s(H5Dget_space(d.get()));
    const hssize_t n = H5Sget_simple_extent_npoints(s.get());
    std::vector<T> out(static_cast<std::size_t>(n));
    if (n > 0) REQUIRE(H5Dread(d.get(), memtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data()) >= 0);
    return out;
}

constexpr std::uint32_t channels = 4096;  // a 64 x 64 grid
constexpr std::uint64_t pedestal_frames = 1000;

}  // namespace

TEST_CASE("pedestal run -> calibration file -> beam run: pedestals, noise and the beam spot are recovered",
          "[e2e][processing]") {
    scratch_dir dir("proc-pedestal-beam");

    // ---- 1. the pedestal run: no beam, daqd exits by itself
    const auto port = daqd::test::free_port();
    child ped({DAQD_BIN, "--listen", "127.0.0.1:" + std::to_string(port), "--output", dir / "runs", "--pedestal-run",
               "ped", "--pedestal-frames", std::to_string(pedestal_frames)},
              dir / "ped.daqd.out", dir / "ped.daqd.err");
    REQUIRE(ped.wait_for_log("pedestal run ped: waiting", 20s));
    auto [sim_rc, sim_out] = daqd::test::run(
        {DAQ_SIM_BIN, "--target", "127.0.0.1:" + std::to_string(port), "--units", "2", "--channels",
         std::to_string(channels), "--frames", "1300", "--rate", "100", "--detector", "--detector-seed", "7", "--seed",
         "3", "--truth", dir / "truth.json", "--json", dir / "ped.sim.json", "--quiet"},
        dir / "ped.sim");
    INFO(sim_out);
    REQUIRE(sim_rc == 0);
    auto ped_rc = ped.wait(60s);
    INFO(ped.err());
    INFO(ped.out());
    REQUIRE(ped_rc.has_value());
    CHECK(*ped_rc == 0);
    const std::string calib = dir / "runs/ped.calib.h5";
    CHECK_THAT(ped.out(), Catch::Contains("daqd: pedestal run ped -> " + calib));
    CHECK_FALSE(fs::exists(dir / "runs/ped.h5"));  // a pedestal run records no run file

    const auto sim = read_json(dir / "ped.sim.json");
    CHECK(sim["detector"]["beam"].is_null());
    const auto truth = read_json(dir / "truth.json");
    REQUIRE(truth["channels"] == channels);
    const auto set = daqd::storage::read_calibration_file(calib);
    REQUIRE(set.units.size() == 2);
    for (const auto& tu : truth["units"]) {
        const auto id = tu["unit"].get<std::uint16_t>();
        INFO("unit " << id);
        REQUIRE(set.units.count(id) == 1);
        const auto& u = set.units.at(id);
        CHECK(u.frames == pedestal_frames);
        REQUIRE(u.channels == channels);
        const auto true_ped = tu["pedestal"].get<std::vector<double>>();
        const auto true_noise = tu["noise"].get<std::vector<double>>();
        std::size_t bad_ped = 0, bad_noise = 0;
        for (std::uint32_t c = 0; c < channels; ++c) {
            // The samples are rounded to integers: their spread is sqrt(sigma^2 + 1/12).
            const double sigma = std::sqrt(true_noise[c] * true_noise[c] + 1.0 / 12.0);
            if (std::fabs(u.pedestal[c] - true_ped[c]) >= 5.0 * sigma / std::sqrt(double(pedestal_frames)) &&
                ++bad_ped <= 5)
                FAIL_CHECK("channel " << c << ": pedestal " << u.pedestal[c] << ", true " << true_ped[c]);
            if (std::fabs(u.noise[c] / true_noise[c] - 1.0) >= 0.10 && ++bad_noise <= 5)
                FAIL_CHECK("channel " << c << ": noise " << u.noise[c] << ", true " << true_noise[c]);
            CHECK(u.gain[c] == 1.0f);
        }
        CHECK(bad_ped == 0);
        CHECK(bad_noise == 0);
    }

    // ---- 2. the beam run, calibrated with that file
    const auto port2 = daqd::test::free_port();
    {
        std::ofstream cfg(dir / "beam.toml");
        cfg << "[acquisition]\nlisten = [\"127.0.0.1:" << port2 << "\"]\n"
            << "[processing]\nstages = [\"calibrate\", \"dose\", \"live\"]\ncalibration_file = \"" << calib << "\"\n"
            << "threshold = 5.0\nthreshold_mode = \"noise\"\n";
    }
    child d({DAQD_BIN, "--config", dir / "beam.toml", "--output", dir / "runs", "--run", "beam", "--summary-json",
             dir / "beam.json"},
            dir / "beam.daqd.out", dir / "beam.daqd.err");
    REQUIRE(d.wait_for_log("run beam started", 20s));
    const double beam_x = 20, beam_y = 41;
    auto [rc2, out2] = daqd::test::run(
        {DAQ_SIM_BIN, "--target", "127.0.0.1:" + std::to_string(port2), "--units", "2", "--channels",
         std::to_string(channels), "--frames", "600", "--rate", "100", "--detector", "--detector-seed", "7", "--seed",
         "4", "--beam", "--beam-x", "20", "--beam-y", "41", "--beam-sigma", "2.5", "--json", dir / "beam.sim.json",
         "--quiet"},
        dir / "beam.sim");
    INFO(out2);
    REQUIRE(rc2 == 0);
    d.signal(SIGTERM);
    auto rc = d.wait(60s);
    INFO(d.err());
    REQUIRE(rc == 0);
    const auto s = read_json(dir / "beam.json");
    const std::string backend = s["processing_backend"];
    CHECK((backend == "cpu" || backend == "cuda"));
    CHECK_THAT(d.err(), Catch::Contains("processing: backend " + backend));
    CHECK(s["frames_processed"] == s["frames_written"]);
    REQUIRE(s["files"].size() == 1);
    const std::string file = s["files"][0];

    h5::init_library();
    h5::file f(H5Fopen(file.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
    REQUIRE(f);
    for (std::uint16_t unit : {0, 1}) {
        INFO("unit " << unit);
        const std::string g = "/units/u" + std::to_string(unit);
        const auto dose = read_dataset<double>(f.get(), g + "/dose", H5T_NATIVE_DOUBLE);
        const auto cal = read_dataset<float>(f.get(), g + "/calibrated", H5T_NATIVE_FLOAT);
        const auto fn = read_dataset<std::uint64_t>(f.get(), g + "/frame_number", H5T_NATIVE_UINT64);
        REQUIRE(dose.size() == channels);
        REQUIRE(cal.size() == fn.size() * channels);
        CHECK(fn.size() == 600);
        // The dose is the sum of the stored calibrated rows.
        for (std::uint32_t c = 0; c < channels; c += 97) {
            double sum = 0;
            for (std::size_t r = 0; r < fn.size(); ++r) sum += cal[r * channels + c];
            CHECK(dose[c] == Approx(sum).epsilon(1e-9));
        }
        // The constants used are the pedestal run's.
        CHECK(read_dataset<float>(f.get(), g + "/calibration/pedestal", H5T_NATIVE_FLOAT) == set.units.at(unit).pedestal);
        // The maximum of the dose map is at the beam spot.
        const auto max_at = static_cast<std::uint32_t>(std::max_element(dose.begin(), dose.end()) - dose.begin());
        const double x = max_at % 64, y = max_at / 64;
        INFO("dose maximum " << dose[max_at] << " at channel " << max_at << " = (" << x << ", " << y << ")");
        CHECK(std::fabs(x - beam_x) <= 2.0);
        CHECK(std::fabs(y - beam_y) <= 2.0);
        // Far from the spot the pedestal is subtracted and the noise cut away.
        double far = 0;
        std::size_t far_n = 0;
        for (std::uint32_t c = 0; c < channels; ++c) {
            const double dx = double(c % 64) - beam_x, dy = double(c / 64) - beam_y;
            if (dx * dx + dy * dy > 20.0 * 20.0) far += dose[c], ++far_n;
        }
        CHECK(far / double(far_n) < 0.01 * dose[max_at]);
    }
}

TEST_CASE("daqd --calibration FILE alone calibrates: the option turns the calibrate stage on", "[e2e][processing]") {
    scratch_dir dir("proc-calibration-option");
    constexpr std::uint32_t ch = 64;
    daqd::processing::calibration_set set;
    daqd::processing::unit_constants u;
    u.unit_id = 0;
    u.channels = ch;
    u.pedestal.assign(ch, 100.0f);
    u.noise.assign(ch, 1.0f);
    u.gain.assign(ch, 2.0f);
    u.frames = 10;
    set.units.emplace(0, u);
    const std::string calib = dir / "c.calib.h5";
    daqd::storage::write_calibration_file(calib, set, "test constants");

    // --print-config shows what the option means.
    auto [prc, pout] = daqd::test::run({DAQD_BIN, "--calibration", calib, "--print-config"}, dir / "print");
    REQUIRE(prc == 0);
    CHECK_THAT(pout, Catch::Contains("stages = [\"calibrate\"]"));
    CHECK_THAT(pout, Catch::Contains("calibration_file = \"" + calib + "\""));

    const auto port = daqd::test::free_port();
    child d({DAQD_BIN, "--listen", "127.0.0.1:" + std::to_string(port), "--output", dir / "runs", "--calibration",
             calib, "--run", "cal", "--summary-json", dir / "cal.json", "--http", "off"},
            dir / "cal.daqd.out", dir / "cal.daqd.err");
    REQUIRE(d.wait_for_log("run cal started", 20s));
    auto [sim_rc, sim_out] = daqd::test::run({DAQ_SIM_BIN, "--target", "127.0.0.1:" + std::to_string(port), "--units",
                                              "1", "--channels", std::to_string(ch), "--frames", "40", "--rate",
                                              "200", "--quiet"},
                                             dir / "cal.sim");
    REQUIRE(sim_rc == 0);
    std::this_thread::sleep_for(300ms);
    d.signal(SIGTERM);
    auto rc = d.wait(60s);
    INFO(d.err());
    REQUIRE(rc == 0);
    CHECK_THAT(d.err(), Catch::Contains("calibration constants of 1 unit(s) from " + calib));
    CHECK_THAT(d.err(), !Catch::Contains("is not used"));
    const auto s = read_json(dir / "cal.json");
    CHECK(s["frames_written"] == 40);
    CHECK(s["frames_processed"] == 40);
    h5::init_library();
    const std::string file = s["files"][0];
    h5::file f(H5Fopen(file.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
    REQUIRE(f);
    const auto raw = read_dataset<std::uint16_t>(f.get(), "/units/u0/raw", H5T_NATIVE_UINT16);
    const auto cal = read_dataset<float>(f.get(), "/units/u0/calibrated", H5T_NATIVE_FLOAT);
    REQUIRE(cal.size() == raw.size());
    REQUIRE(raw.size() == 40u * ch);
    CHECK(read_dataset<float>(f.get(), "/units/u0/calibration/pedestal", H5T_NATIVE_FLOAT) == u.pedestal);
    // (raw - 100) x 2, values below 5 x noise (5) cut to 0.
    std::size_t bad = 0;
    for (std::size_t i = 0; i < raw.size(); ++i) {
        const float want = (float(raw[i]) - 100.0f) * 2.0f;
        const float expect = want < 5.0f ? 0.0f : want;
        if (cal[i] != expect && ++bad <= 5) FAIL_CHECK("sample " << i << ": raw " << raw[i] << ", calibrated " << cal[i]);
    }
    CHECK(bad == 0);

    // A calibration file that is not there: refused at start, naming the key.
    auto [mrc, mout] = daqd::test::run({DAQD_BIN, "--calibration", dir / "none.calib.h5", "--output", dir / "runs",
                                        "--http", "off", "--duration", "1"},
                                       dir / "missing");
    CHECK(mrc == 2);
    CHECK_THAT(mout, Catch::Contains("processing.calibration_file = \"" + dir / "none.calib.h5" + "\": no such file"));
}

TEST_CASE("pedestal run: command line refusals", "[e2e][processing]") {
    scratch_dir dir("proc-pedestal-cli");
    {
        auto [rc, out] = daqd::test::run({DAQD_BIN, "--pedestal-run", "p", "--run", "r", "--output", dir / "runs"},
                                         dir / "cli1");
        CHECK(rc == 2);
        CHECK_THAT(out, Catch::Contains("exclude each other"));
    }
    {
        std::ofstream(dir / "runs/p.calib.h5") << "x";
        auto [rc, out] = daqd::test::run({DAQD_BIN, "--pedestal-run", "p", "--output", dir / "runs"}, dir / "cli2");
        CHECK(rc == 2);
        CHECK_THAT(out, Catch::Contains("refusing to overwrite"));
    }
    {
        auto [rc, out] = daqd::test::run({DAQD_BIN, "--pedestal-frames", "1", "--output", dir / "runs"}, dir / "cli3");
        CHECK(rc == 2);
        CHECK_THAT(out, Catch::Contains("--pedestal-frames"));
    }
}

TEST_CASE("processing.backend = \"cuda\" without a device: daqd refuses to start and says why", "[e2e][processing]") {
    scratch_dir dir("proc-cuda-refused");
    std::ofstream(dir / "cuda.toml") << "[processing]\nstages = [\"calibrate\"]\nbackend = \"cuda\"\n";
    auto [rc, out] = daqd::test::run({DAQD_BIN, "--config", dir / "cuda.toml", "--output", dir / "runs", "--listen",
                                      "127.0.0.1:" + std::to_string(daqd::test::free_port()), "--duration", "0.5"},
                                     dir / "cuda");
    if (rc == 0) {
        WARN("a CUDA device is present: daqd ran on it; nothing to refuse");
        return;
    }
    CHECK(rc == 1);
    CHECK_THAT(out, Catch::Contains("processing.backend = \"cuda\""));
}
