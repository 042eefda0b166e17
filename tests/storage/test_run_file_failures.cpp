// run_file against a hostile output directory (issue 16 item 7, the
// rotation name collision): the file deleted under it, a stranger's file at
// the next number; and the journal it keeps (journal.hpp).
#include "storage_test_util.hpp"

#include "daqd/storage/journal.hpp"
#include "daqd/storage/run_writer.hpp"

#include <catch2/catch.hpp>

#include <fstream>

using namespace storage_test;
using daqd::storage::run_file;
using daqd::storage::run_options;
using daqd::storage::storage_error;
namespace journal = daqd::storage::journal;

namespace {

run_options options(const fs::path& dir, const std::string& name) {
    run_options o;
    o.output_dir = dir;
    o.run_name = name;
    o.chunk_bytes = 64;  // 4 channels -> 8 rows per chunk
    o.config_text = "[storage]\n";
    o.server_version = "0.1.0-test";
    return o;
}

void append(run_file& rf, std::uint64_t frame) {
    owned_frame f(1, 4, frame);
    rf.append(f.f);
}

std::vector<std::string> journal_files(const fs::path& dir) {
    std::vector<std::string> out;
    for (const auto& e : journal::list(dir)) out.push_back(e.file);
    return out;
}

}  // namespace

TEST_CASE("run_file: the journal names the open file until it is closed cleanly", "[storage][run_file]") {
    temp_dir dir;
    auto opt = options(dir.path(), "j");
    opt.rotate_bytes = 26 * 20;  // 20 rows of 4 channels per file
    run_file rf(opt);
    CHECK(journal_files(dir.path()) == std::vector<std::string>{"j_00000.h5"});
    for (std::uint64_t i = 0; i < 30; ++i) append(rf, i);
    CHECK(journal_files(dir.path()) == std::vector<std::string>{"j_00001.h5"});  // the first one closed
    rf.close();
    CHECK(journal_files(dir.path()).empty());
}

TEST_CASE("run_file: the file deleted under a run fails it at the next flush, nothing counted as written",
          "[storage][run_file]") {
    temp_dir dir;
    run_file rf(options(dir.path(), "gone"));
    for (std::uint64_t i = 0; i < 20; ++i) append(rf, i);
    rf.flush();
    CHECK(rf.stats().frames_written == 20);
    fs::remove(dir.path() / "gone.h5");
    for (std::uint64_t i = 20; i < 25; ++i) append(rf, i);
    REQUIRE_THROWS_AS(rf.flush(), storage_error);
    const auto& s = rf.stats();
    CHECK(s.failed);
    CHECK(s.error.find("gone.h5 is gone") != std::string::npos);
    CHECK(s.error.find("deleted or unmounted") != std::string::npos);
    CHECK(s.frames_written == 0);
    CHECK(s.bytes_written == 0);
    CHECK(s.frames_unwritten == 25);
    CHECK(s.units.at(1).frames_written == 0);
    CHECK(s.units.at(1).frames_unwritten == 25);
    CHECK_THROWS_AS(rf.flush(), storage_error);  // stays failed
    rf.close();
}

TEST_CASE("run_file: a file replaced under a run (another inode) fails it", "[storage][run_file]") {
    temp_dir dir;
    run_file rf(options(dir.path(), "swap"));
    for (std::uint64_t i = 0; i < 5; ++i) append(rf, i);
    fs::rename(dir.path() / "swap.h5", dir.path() / "moved.h5");
    std::ofstream(dir.path() / "swap.h5") << "someone else's";
    REQUIRE_THROWS_AS(rf.flush(), storage_error);
    CHECK(rf.stats().error.find("was replaced by another file") != std::string::npos);
    CHECK(rf.stats().frames_written == 0);  // nothing is at the name any more
}

TEST_CASE("run_file: a rotated run keeps counting the closed files that still exist", "[storage][run_file]") {
    temp_dir dir;
    auto opt = options(dir.path(), "part");
    opt.rotate_bytes = 26 * 10;  // 10 rows per file
    run_file rf(opt);
    for (std::uint64_t i = 0; i < 25; ++i) append(rf, i);  // files 0, 1 full and closed, 2 open with 5
    fs::remove(dir.path() / "part_00002.h5");
    REQUIRE_THROWS_AS(rf.flush(), storage_error);
    CHECK(rf.stats().frames_written == 20);
    CHECK(rf.stats().frames_unwritten == 5);
}

TEST_CASE("run_file: a file at the next rotation number is skipped, the run goes on", "[storage][run_file]") {
    temp_dir dir;
    auto opt = options(dir.path(), "rot");
    opt.rotate_bytes = 26 * 10;
    std::ofstream(dir.path() / "rot_00001.h5") << "not ours";
    // refuse_existing() refuses a name taken before the run: put it there after.
    fs::rename(dir.path() / "rot_00001.h5", dir.path() / "later");
    run_file rf(opt);
    fs::rename(dir.path() / "later", dir.path() / "rot_00001.h5");
    for (std::uint64_t i = 0; i < 25; ++i) append(rf, i);
    rf.close();
    const auto& s = rf.stats();
    CHECK_FALSE(s.failed);
    CHECK(s.frames_written == 25);
    REQUIRE(s.files.size() == 3);
    CHECK(s.files[0] == dir.path() / "rot_00000.h5");
    CHECK(s.files[1] == dir.path() / "rot_00002.h5");
    CHECK(s.files[2] == dir.path() / "rot_00003.h5");
    std::ifstream in(dir.path() / "rot_00001.h5");
    std::string text;
    std::getline(in, text);
    CHECK(text == "not ours");
    std::uint64_t rows = 0;
    for (const auto& p : s.files) {
        auto f = open_read(p);
        h5::dataset d(H5Dopen2(f.get(), "/units/u1/frame_number", H5P_DEFAULT));
        rows += dims_of(d.get())[0];
    }
    CHECK(rows == 25);
}
