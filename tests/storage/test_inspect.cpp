// daq-inspect as a subprocess: summary, --json, --verify on good, corrupted
// and unreadable files.
#include "daqd/storage/run_writer.hpp"
#include "storage_test_util.hpp"

#include <nlohmann/json.hpp>

using namespace storage_test;
using daqd::storage::run_file;
using daqd::storage::run_options;

namespace {

const std::string inspect = shell_quote(DAQ_INSPECT);

// unit 2: 100 channels, frames 0..299 with frame 50..52 and 200 missing (4
// lost), every 20th frame incomplete (2 missing packets, some zero samples).
// unit 9: 3 channels, frames 1000..1009.
fs::path make_good_run(const fs::path& dir, const std::string& name) {
    run_options o;
    o.output_dir = dir;
    o.run_name = name;
    o.chunk_bytes = 2000;  // 10 rows per raw chunk of unit 2
    o.config_text = "cfg";
    o.server_version = "9.9.9";
    run_file rf(o);
    for (std::uint64_t i = 0; i < 300; ++i) {
        if ((i >= 50 && i <= 52) || i == 200) continue;
        owned_frame of(2, 100, i, i % 20 == 3 ? 2 : 0);
        rf.append(of.f);
        if (i < 10) {
            owned_frame other(9, 3, 1000 + i);
            rf.append(other.f);
        }
    }
    rf.close();
    return dir / (name + ".h5");
}

// Overwrites raw[row][channel] of a unit in place.
void poke(const fs::path& file, std::uint16_t unit, hsize_t row, hsize_t channel, std::uint16_t value) {
    h5::init_library();
    h5::file f(H5Fopen(file.c_str(), H5F_ACC_RDWR, H5P_DEFAULT));
    REQUIRE(f);
    const std::string p = "/units/u" + std::to_string(unit) + "/raw";
    h5::dataset ds(H5Dopen2(f.get(), p.c_str(), H5P_DEFAULT));
    REQUIRE(ds);
    h5::dataspace fsp(H5Dget_space(ds.get()));
    const hsize_t start[2] = {row, channel};
    const hsize_t count[2] = {1, 1};
    REQUIRE(H5Sselect_hyperslab(fsp.get(), H5S_SELECT_SET, start, nullptr, count, nullptr) >= 0);
    h5::dataspace msp(H5Screate_simple(2, count, nullptr));
    REQUIRE(H5Dwrite(ds.get(), H5T_NATIVE_UINT16, msp.get(), fsp.get(), H5P_DEFAULT, &value) >= 0);
}

// The row of frame_number `frame` of unit 2 in make_good_run's file.
hsize_t row_of(std::uint64_t frame) { return frame - (frame > 52 ? 3 : 0) - (frame > 200 ? 1 : 0); }

}  // namespace

TEST_CASE("daq-inspect summarises a run, as text and as JSON", "[storage]") {
    temp_dir dir;
    const auto file = make_good_run(dir.path(), "summary");

    auto text = run_command(inspect + " " + shell_quote(file.string()));
    INFO(text.output);
    CHECK(text.exit_code == 0);
    CHECK(text.output.find("summary") != std::string::npos);
    CHECK(text.output.find("unit 2") != std::string::npos);
    CHECK(text.output.find("unit 9") != std::string::npos);

    auto r = run_command(inspect + " --json " + shell_quote(file.string()));
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    const auto j = nlohmann::json::parse(r.output);
    CHECK(j["run_name"] == "summary");
    CHECK(j["format_version"] == 1);
    CHECK(j["server_version"] == "9.9.9");
    REQUIRE(j["files"].size() == 1);
    CHECK(j["files"][0]["path"] == file.string());
    REQUIRE(j["units"].size() == 2);
    const auto& u2 = j["units"][0];
    CHECK(u2["unit"] == 2);
    CHECK(u2["channels"] == 100);
    CHECK(u2["frames"] == 296);
    CHECK(u2["first_frame"] == 0);
    CHECK(u2["last_frame"] == 299);
    CHECK(u2["frames_lost_in_gaps"] == 4);
    CHECK(u2["incomplete_frames"] == 15);
    CHECK(u2["missing_packets"] == 30);
    CHECK(u2["first_timestamp_ns"] == 1'000'000'000ull);
    CHECK(u2["last_timestamp_ns"] == 1'000'000'000ull + 299 * 1'000'000ull);
    CHECK(u2["frame_rate_hz"].get<double>() == Approx(295.0 / 0.299));
    CHECK(u2["data_bytes"] == 296 * 200);
    const auto& u9 = j["units"][1];
    CHECK(u9["unit"] == 9);
    CHECK(u9["frames"] == 10);
    CHECK(u9["frames_lost_in_gaps"] == 0);
    CHECK(j["total_frames"] == 306);
}

TEST_CASE("daq-inspect --verify passes a good run and names a corrupted sample", "[storage]") {
    temp_dir dir;
    const auto file = make_good_run(dir.path(), "verify");
    {
        auto r = run_command(inspect + " --verify " + shell_quote(file.string()));
        INFO(r.output);
        CHECK(r.exit_code == 0);
        CHECK(r.output.find("OK") != std::string::npos);
    }

    SECTION("a changed sample of a complete frame") {
        poke(file, 2, row_of(124), 42, static_cast<std::uint16_t>(pattern(124, 2, 42) + 1));
        auto r = run_command(inspect + " --verify " + shell_quote(file.string()));
        INFO(r.output);
        CHECK(r.exit_code == 1);
        CHECK(r.output.find("unit 2 frame_number 124 channel 42: expected " + std::to_string(pattern(124, 2, 42)) +
                            ", got " + std::to_string(pattern(124, 2, 42) + 1)) != std::string::npos);
        CHECK(r.output.find(file.string()) != std::string::npos);
        auto j = run_command(inspect + " --verify --json " + shell_quote(file.string()));
        CHECK(j.exit_code == 1);
        const auto parsed = nlohmann::json::parse(j.output);
        CHECK(parsed["verify"]["ok"] == false);
        CHECK(parsed["verify"]["problems"] == 1);
    }
    SECTION("a zero in a complete frame") {
        poke(file, 9, 4, 1, 0);  // frame 1004 of unit 9, pattern is nonzero there
        auto r = run_command(inspect + " --verify " + shell_quote(file.string()));
        INFO(r.output);
        CHECK(r.exit_code == 1);
        CHECK(r.output.find("unit 9 frame_number 1004 channel 1") != std::string::npos);
    }
    SECTION("zeros are fine in an incomplete frame, other values are not") {
        poke(file, 2, row_of(43), 99, 0);  // frame 43: incomplete
        CHECK(run_command(inspect + " --verify " + shell_quote(file.string())).exit_code == 0);
        poke(file, 2, row_of(43), 98, 7);
        auto r = run_command(inspect + " --verify " + shell_quote(file.string()));
        INFO(r.output);
        CHECK(r.exit_code == 1);
        CHECK(r.output.find("unit 2 frame_number 43 channel 98") != std::string::npos);
    }
    SECTION("many problems: ten lines, then a count") {
        for (hsize_t c = 0; c < 25; ++c) poke(file, 2, 0, c, 0xffff);
        auto r = run_command(inspect + " --verify " + shell_quote(file.string()));
        INFO(r.output);
        CHECK(r.exit_code == 1);
        std::size_t lines = 0;
        for (std::size_t pos = 0; (pos = r.output.find("channel ", pos)) != std::string::npos; ++pos) ++lines;
        CHECK(lines == 10);
        CHECK(r.output.find("25 problems in all") != std::string::npos);
    }
}

TEST_CASE("the run file says what it holds (data_source), and --verify checks the pattern only where one was sent",
          "[storage]") {
    temp_dir dir;
    // Detector-like frames (no TEST_PATTERN flag): samples nothing like the pattern.
    auto detector_frame = [](owned_frame& of) {
        for (std::size_t c = 0; c < of.samples.size(); ++c)
            of.samples[c] = static_cast<std::uint16_t>(1000 + (c * 7919 + of.f.frame_number * 104729) % 97);
        of.f.test_pattern = false;
    };
    run_options o;
    o.output_dir = dir.path();
    o.chunk_bytes = 2000;
    o.config_text = "cfg";
    o.server_version = "9.9.9";
    SECTION("detector data: the layout is checked, the samples are not, and the output says so") {
        o.run_name = "det";
        {
            run_file rf(o);
            for (std::uint64_t i = 0; i < 50; ++i) {
                owned_frame of(4, 100, i);
                detector_frame(of);
                rf.append(of.f);
            }
            rf.close();
        }
        const auto file = dir.path() / "det.h5";
        {
            auto f = open_read(file);
            CHECK(read_string_attr(f.get(), "data_source") == "detector");
            h5::group g(H5Gopen2(f.get(), "/units/u4", H5P_DEFAULT));
            CHECK(read_string_attr(g.get(), "data_source") == "detector");
        }
        auto r = run_command(inspect + " --verify " + shell_quote(file.string()));
        INFO(r.output);
        CHECK(r.exit_code == 0);
        CHECK(r.output.find("data source    detector") != std::string::npos);
        CHECK(r.output.find("verify         OK (50 frames, layout checked, 0 samples checked against the test "
                            "pattern; 5000 samples of u4 not checked: detector data (no TEST_PATTERN flag)") !=
              std::string::npos);
        CHECK(r.output.find("expected") == std::string::npos);
        auto j = nlohmann::json::parse(run_command(inspect + " --verify --json " + shell_quote(file.string())).output);
        CHECK(j["data_source"] == "detector");
        CHECK(j["units"][0]["data_source"] == "detector");
        CHECK(j["verify"]["ok"] == true);
        CHECK(j["verify"]["pattern_checked"] == false);
        CHECK(j["verify"]["samples_not_checked"] == 5000);
        // A broken layout is still found.
        poke(file, 4, 0, 0, 0);  // any value is fine in detector data
        CHECK(run_command(inspect + " --verify " + shell_quote(file.string())).exit_code == 0);
    }
    SECTION("test pattern: every sample checked; mixed units: each as its own data says") {
        o.run_name = "mix";
        {
            run_file rf(o);
            for (std::uint64_t i = 0; i < 20; ++i) {
                owned_frame p(2, 10, i);
                rf.append(p.f);
                owned_frame d(3, 10, i);
                detector_frame(d);
                rf.append(d.f);
            }
            rf.close();
        }
        const auto file = dir.path() / "mix.h5";
        {
            auto f = open_read(file);
            CHECK(read_string_attr(f.get(), "data_source") == "mixed");
            h5::group g2(H5Gopen2(f.get(), "/units/u2", H5P_DEFAULT));
            CHECK(read_string_attr(g2.get(), "data_source") == "test_pattern");
            h5::group g3(H5Gopen2(f.get(), "/units/u3", H5P_DEFAULT));
            CHECK(read_string_attr(g3.get(), "data_source") == "detector");
        }
        auto r = run_command(inspect + " --verify " + shell_quote(file.string()));
        INFO(r.output);
        CHECK(r.exit_code == 0);
        CHECK(r.output.find("200 samples checked against the test pattern; 200 samples of u3 not checked") !=
              std::string::npos);
        poke(file, 2, 5, 1, 0xffff);  // the pattern unit is checked
        auto bad = run_command(inspect + " --verify " + shell_quote(file.string()));
        CHECK(bad.exit_code == 1);
        CHECK(bad.output.find("unit 2 frame_number 5 channel 1") != std::string::npos);
    }
    SECTION("a pattern run says test_pattern") {
        const auto file = make_good_run(dir.path(), "pat");
        auto f = open_read(file);
        CHECK(read_string_attr(f.get(), "data_source") == "test_pattern");
    }
}

TEST_CASE("daq-inspect --verify checks the layout", "[storage]") {
    temp_dir dir;
    const auto file = make_good_run(dir.path(), "layout");
    h5::init_library();
    SECTION("a missing dataset") {
        {
            h5::file f(H5Fopen(file.c_str(), H5F_ACC_RDWR, H5P_DEFAULT));
            REQUIRE(H5Ldelete(f.get(), "/units/u9/timestamp_ns", H5P_DEFAULT) >= 0);
        }
        auto r = run_command(inspect + " --verify " + shell_quote(file.string()));
        INFO(r.output);
        CHECK(r.exit_code == 1);
        CHECK(r.output.find("/units/u9/timestamp_ns: dataset missing") != std::string::npos);
    }
    SECTION("a wrong format attribute") {
        {
            h5::file f(H5Fopen(file.c_str(), H5F_ACC_RDWR, H5P_DEFAULT));
            REQUIRE(H5Adelete(f.get(), "format_version") >= 0);
            h5::dataspace s(H5Screate(H5S_SCALAR));
            h5::attribute a(H5Acreate2(f.get(), "format_version", H5T_STD_I32LE, s.get(), H5P_DEFAULT, H5P_DEFAULT));
            const int two = 2;
            REQUIRE(H5Awrite(a.get(), H5T_NATIVE_INT, &two) >= 0);
        }
        auto r = run_command(inspect + " --verify " + shell_quote(file.string()));
        INFO(r.output);
        CHECK(r.exit_code == 1);
        CHECK(r.output.find("format_version is 2, expected 1") != std::string::npos);
    }
}

TEST_CASE("daq-inspect exits 2 on unreadable input, naming the file", "[storage]") {
    temp_dir dir;
    const auto missing = dir.path() / "nope.h5";
    auto r = run_command(inspect + " --verify " + shell_quote(missing.string()));
    CHECK(r.exit_code == 2);
    CHECK(r.output.find(missing.string()) != std::string::npos);

    const auto junk = write_text(dir.path() / "junk.h5", "this is not HDF5");
    r = run_command(inspect + " " + shell_quote(junk.string()));
    CHECK(r.exit_code == 2);
    CHECK(r.output.find(junk.string()) != std::string::npos);

    r = run_command(inspect);
    CHECK(r.exit_code == 2);
}
