// run_file: layout, attributes, data, SWMR visibility, rotation, refusals.
#include "daqd/storage/run_writer.hpp"
#include "storage_test_util.hpp"

#include <unistd.h>

#include <algorithm>
#include <regex>
#include <set>

using namespace storage_test;
using daqd::storage::run_file;
using daqd::storage::run_options;
using daqd::storage::storage_error;

namespace {

run_options options_for(const fs::path& dir, const std::string& name) {
    run_options o;
    o.output_dir = dir;
    o.run_name = name;
    o.chunk_bytes = 64;  // 4 channels -> 8 rows per chunk: many chunks in small tests
    o.flush_interval = std::chrono::milliseconds(50);
    o.config_text = "[storage]\noutput_dir = \"runs\"\n";
    o.server_version = "0.1.0-test";
    return o;
}

// Appends one pattern frame and records what is expected.
void put(run_file& rf, std::map<std::uint16_t, expected_rows>& want, std::uint16_t unit, std::uint32_t channels,
         std::uint64_t frame, std::uint16_t missing = 0) {
    owned_frame of(unit, channels, frame, missing);
    rf.append(of.f);
    want[unit].add(of.f);
}

const std::regex iso8601_utc(R"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z)");

std::string py_check_script(const temp_dir& dir) {
    // argv: path, then unit:rows pairs. Opens as a SWMR reader, checks the
    // exact row counts and every sample of every frame (all complete here).
    return write_text(dir.path() / "check_live.py", R"PY(
import sys, h5py, numpy as np
path = sys.argv[1]
want = {int(a.split(':')[0]): int(a.split(':')[1]) for a in sys.argv[2:]}
with h5py.File(path, 'r', libver='latest', swmr=True) as f:
    assert f.attrs['format'] == 'daq1-run', f.attrs['format']
    assert isinstance(f.attrs['run_name'], str)
    assert int(f.attrs['format_version']) == 1
    assert sorted(int(k[1:]) for k in f['units']) == sorted(want), list(f['units'])
    for u, n in want.items():
        g = f['units/u%d' % u]
        raw, fn, ts, mp = g['raw'], g['frame_number'], g['timestamp_ns'], g['missing_packets']
        assert raw.shape[0] == n and fn.shape == (n,) and ts.shape == (n,) and mp.shape == (n,), (u, raw.shape, fn.shape, n)
        assert raw.maxshape[0] is None
        fnv = fn[:].astype(np.uint64)
        assert (np.diff(fnv.astype(np.int64)) > 0).all()
        c = np.arange(raw.shape[1], dtype=np.uint64)
        expect = ((fnv[:, None] * 7 + u * 13 + c[None, :]) % 65536).astype(np.uint16)
        assert (raw[:] == expect).all(), 'samples differ'
        assert (mp[:] == 0).all()
print('OK')
)PY")
        .string();
}

}  // namespace

TEST_CASE("run_file writes the documented layout and attributes", "[storage]") {
    temp_dir dir;
    auto opt = options_for(dir.path(), "layout_run");
    opt.unit_shapes[3] = {2, 2};  // a geometry for unit 3 (units.list[].shape)
    opt.unit_shapes[7] = {4, 4};  // not unit 7's 6 channels: no shape attribute
    opt.metadata = {{"sample", std::string("Si")}, {"energy_keV", 12.4}, {"shots", std::int64_t{3}}, {"beam", true}};
    opt.metadata_json = R"({"sample":"Si","energy_keV":12.4,"shots":3,"beam":true})";
    std::map<std::uint16_t, expected_rows> want;
    {
        run_file rf(opt);
        rf.set_accounting({{{"packets_received", 99}, {"frames_lost", 2}}, {{3, {{"frames_complete", 21}}}}});
        // unit 3: 4 channels -> 8-row chunks; unit 7: 6 channels -> 5-row chunks.
        // 21 and 13 rows: partial last chunks in both.
        for (std::uint64_t i = 0; i < 21; ++i) {
            put(rf, want, 3, 4, 100 + i, i == 5 ? 2 : 0);
            if (i % 2 == 0 && i < 26) put(rf, want, 7, 6, 5000 + i * 3, i == 4 ? 1 : 0);
        }
        for (std::uint64_t i = 0; i < 2; ++i) put(rf, want, 7, 6, 6000 + i);
        rf.close();
        rf.close();  // idempotent
        const auto& s = rf.stats();
        CHECK(s.run_name == "layout_run");
        CHECK_FALSE(s.failed);
        CHECK(s.frames_written == 21 + 13);
        CHECK(s.frames_rejected == 0);
        REQUIRE(s.files.size() == 1);
        CHECK(s.files[0] == dir.path() / "layout_run.h5");
        CHECK(s.units.size() == 2);
        CHECK(s.units.at(3).channels == 4);
        CHECK(s.units.at(3).frames_written == 21);
        CHECK(s.units.at(3).first_frame == 100);
        CHECK(s.units.at(3).last_frame == 120);
        CHECK(s.units.at(7).frames_written == 13);
        CHECK(s.bytes_written == 21 * (4 * 2 + 18) + 13 * (6 * 2 + 18));
        CHECK(s.flushes == 0);
    }
    REQUIRE(want[7].frame_number.size() == 13);

    const fs::path path = dir.path() / "layout_run.h5";
    // Closed cleanly: superblock v3 with no status flags set.
    const auto sb = read_superblock(path);
    CHECK(sb.version == 3);
    CHECK(sb.status_flags == 0);

    h5::file f = open_read(path);
    auto root_attrs = attr_names(f.get());
    std::sort(root_attrs.begin(), root_attrs.end());
    CHECK(root_attrs == std::vector<std::string>{"NX_class", "config", "data_source", "default", "format",
                                                 "format_version", "run", "run_name", "server_version", "started_at",
                                                 "stopped_at"});
    CHECK(read_string_attr(f.get(), "run") == "layout_run");  // no host tag: the run_name
    CHECK(read_string_attr(f.get(), "NX_class") == "NXroot");
    CHECK(link_names(f.get()) == std::vector<std::string>{"accounting", "entry", "metadata", "units"});
    {
        h5::group entry(H5Gopen2(f.get(), "/entry", H5P_DEFAULT));
        CHECK(read_string_attr(entry.get(), "NX_class") == "NXentry");
        h5::group inst(H5Gopen2(f.get(), "/entry/instrument", H5P_DEFAULT));
        CHECK(read_string_attr(inst.get(), "NX_class") == "NXinstrument");
        CHECK(link_names(inst.get()) == std::vector<std::string>{"u3", "u7"});
        // The same object as /units/u3, not a copy.
        H5O_info_t a{}, b{};
        REQUIRE(H5Oget_info_by_name(f.get(), "/entry/instrument/u3", &a, H5P_DEFAULT) >= 0);
        REQUIRE(H5Oget_info_by_name(f.get(), "/units/u3", &b, H5P_DEFAULT) >= 0);
        CHECK(a.addr == b.addr);
        h5::group m(H5Gopen2(f.get(), "/metadata", H5P_DEFAULT));
        CHECK(read_string_attr(m.get(), "sample") == "Si");
        CHECK(read_string_attr(m.get(), "json") == opt.metadata_json);
        CHECK(read_int_attr(m.get(), "shots") == 3);
        h5::group acc(H5Gopen2(f.get(), "/accounting", H5P_DEFAULT));
        CHECK(read_int_attr(acc.get(), "packets_received") == 99);
        CHECK(read_int_attr(acc.get(), "frames_lost") == 2);
        h5::group acc3(H5Gopen2(f.get(), "/accounting/u3", H5P_DEFAULT));
        CHECK(read_int_attr(acc3.get(), "frames_complete") == 21);
    }
    CHECK(read_string_attr(f.get(), "data_source") == "test_pattern");  // owned_frame: the pattern, flagged
    bool utf8 = false;
    CHECK(read_string_attr(f.get(), "format", &utf8) == "daq1-run");
    CHECK(utf8);
    CHECK(read_int_attr(f.get(), "format_version") == 1);
    CHECK(read_string_attr(f.get(), "run_name") == "layout_run");
    CHECK(read_string_attr(f.get(), "server_version") == "0.1.0-test");
    CHECK(read_string_attr(f.get(), "config") == opt.config_text);
    const auto started = read_string_attr(f.get(), "started_at");
    const auto stopped = read_string_attr(f.get(), "stopped_at");
    CHECK(std::regex_match(started, iso8601_utc));
    CHECK(std::regex_match(stopped, iso8601_utc));
    CHECK(started <= stopped);

    h5::group units(H5Gopen2(f.get(), "/units", H5P_DEFAULT));
    REQUIRE(units);
    CHECK(link_names(units.get()) == std::vector<std::string>{"u3", "u7"});
    for (const auto& [unit, rows_per_chunk] : std::map<std::uint16_t, hsize_t>{{3, 8}, {7, 5}}) {
        INFO("unit " << unit);
        const std::string g = "/units/u" + std::to_string(unit);
        h5::group grp(H5Gopen2(f.get(), g.c_str(), H5P_DEFAULT));
        auto gattrs = attr_names(grp.get());
        std::sort(gattrs.begin(), gattrs.end());
        if (unit == 3)
            CHECK(gattrs == std::vector<std::string>{"NX_class", "channels", "data_source", "shape", "stream", "unit_id"});
        else
            CHECK(gattrs == std::vector<std::string>{"NX_class", "channels", "data_source", "stream", "unit_id"});
        CHECK(read_string_attr(grp.get(), "NX_class") == "NXdetector");
        CHECK(read_string_attr(grp.get(), "data_source") == "test_pattern");
        CHECK(link_names(grp.get()) == std::vector<std::string>{"frame_number", "missing_packets", "raw", "timestamp_ns"});
        const std::map<std::string, hid_t> types{{"raw", H5T_STD_U16LE},
                                                 {"frame_number", H5T_STD_U64LE},
                                                 {"timestamp_ns", H5T_STD_U64LE},
                                                 {"missing_packets", H5T_STD_U16LE}};
        for (const auto& [name, type] : types) {
            INFO(name);
            h5::dataset ds(H5Dopen2(grp.get(), name.c_str(), H5P_DEFAULT));
            REQUIRE(ds);
            h5::datatype t(H5Dget_type(ds.get()));
            CHECK(H5Tequal(t.get(), type) > 0);
            CHECK(read_string_attr(ds.get(), "units") == (name == "raw" ? "counts" : name == "timestamp_ns" ? "ns" : "1"));
            CHECK_FALSE(read_string_attr(ds.get(), "description").empty());
            std::vector<hsize_t> maxdims;
            const auto d = dims_of(ds.get(), &maxdims);
            REQUIRE(!maxdims.empty());
            CHECK(maxdims[0] == H5S_UNLIMITED);
            h5::plist dcpl(H5Dget_create_plist(ds.get()));
            CHECK(H5Pget_layout(dcpl.get()) == H5D_CHUNKED);
            CHECK(H5Pget_nfilters(dcpl.get()) == 0);
            hsize_t chunk[2] = {0, 0};
            const int rank = H5Pget_chunk(dcpl.get(), 2, chunk);
            CHECK(chunk[0] == rows_per_chunk);
            if (name == "raw") {
                CHECK(rank == 2);
                CHECK(chunk[1] == want[unit].channels);
                CHECK(maxdims[1] == want[unit].channels);
            } else {
                CHECK(rank == 1);
            }
        }
        check_unit(f.get(), unit, want[unit]);
    }
}

TEST_CASE("run_file: a unit appearing mid-run gets its group, earlier data stays intact", "[storage]") {
    temp_dir dir;
    std::map<std::uint16_t, expected_rows> want;
    {
        run_file rf(options_for(dir.path(), "midrun"));
        for (std::uint64_t i = 0; i < 11; ++i) put(rf, want, 1, 4, i);
        rf.flush();  // partial chunk of unit 1 is now in the file
        for (std::uint64_t i = 0; i < 30; ++i) {
            put(rf, want, 1, 4, 11 + i);
            put(rf, want, 2, 16, 1000 + i);  // appears mid-run
        }
        rf.flush();
        put(rf, want, 65535, 1, 7);  // a third, at the largest unit id, one channel
        for (std::uint64_t i = 0; i < 3; ++i) put(rf, want, 1, 4, 41 + i);
        rf.close();
        CHECK(rf.stats().flushes == 2);
        CHECK(rf.stats().frames_written == 11 + 60 + 1 + 3);
    }
    h5::file f = open_read(dir.path() / "midrun.h5");
    h5::group units(H5Gopen2(f.get(), "/units", H5P_DEFAULT));
    CHECK(link_names(units.get()) == std::vector<std::string>{"u1", "u2", "u65535"});
    for (const auto& [unit, rows] : want) check_unit(f.get(), unit, rows);
}

TEST_CASE("run_file rejects frames out of order or with another channel count", "[storage]") {
    temp_dir dir;
    std::map<std::uint16_t, expected_rows> want;
    run_file rf(options_for(dir.path(), "reject"));
    put(rf, want, 1, 4, 10);
    put(rf, want, 1, 4, 11);
    owned_frame again(1, 4, 11);
    rf.append(again.f);  // same frame number
    owned_frame older(1, 4, 3);
    rf.append(older.f);
    owned_frame wider(1, 8, 12);
    rf.append(wider.f);
    put(rf, want, 1, 4, 12);
    rf.close();
    CHECK(rf.stats().frames_rejected == 3);
    CHECK(rf.stats().frames_written == 3);
    h5::file f = open_read(dir.path() / "reject.h5");
    check_unit(f.get(), 1, want[1]);
}

TEST_CASE("run_file: after flush a SWMR reader in another process sees every row and close leaves a plain file",
          "[storage]") {
    temp_dir dir;
    auto opt = options_for(dir.path(), "live");
    opt.chunk_bytes = 1u << 16;  // 8 channels -> 4096-row chunks: everything below is one partial chunk
    const fs::path path = dir.path() / "live.h5";
    const bool py = python_has_h5py();
    if (!py) WARN("/usr/bin/python3 lacks h5py/numpy: skipping the second-process SWMR reader checks");
    const std::string script = py_check_script(dir);
    // A reader that keeps the file open while the writer appends, adds a
    // unit (close + read-write reopen) and finally closes the run.
    const std::string follow = write_text(dir.path() / "follow.py", R"PY(
import sys, os, time, h5py
path, sync = sys.argv[1:3]
def wait_for(name):
    deadline = time.time() + 60
    while not os.path.exists(os.path.join(sync, name)):
        if time.time() > deadline: sys.exit('timed out waiting for ' + name)
        time.sleep(0.01)
with h5py.File(path, 'r', libver='latest', swmr=True) as f:
    ds = f['units/u5/frame_number']
    n1 = ds.shape[0]
    open(os.path.join(sync, 'ready1'), 'w').close()
    wait_for('go1')
    ds.refresh()
    n2 = ds.shape[0]
    last = int(ds[n2 - 1])
    open(os.path.join(sync, 'ready2'), 'w').close()
    wait_for('go2')
    ds.refresh()
    n3 = ds.shape[0]
print(n1, n2, last, n3)
)PY").string();

    std::map<std::uint16_t, expected_rows> want;
    run_file rf(opt);
    for (std::uint64_t i = 0; i < 100; ++i) put(rf, want, 5, 8, 1000 + i);
    rf.flush();

    // The superblock says: open for writing, in SWMR mode.
    const auto sb = read_superblock(path);
    CHECK(sb.version == 3);
    CHECK((sb.status_flags & 0x01) != 0);
    CHECK((sb.status_flags & 0x04) != 0);

    if (py) {
        auto r = run_command(std::string(python) + " " + shell_quote(script) + " " + shell_quote(path.string()) + " 5:100");
        INFO(r.output);
        CHECK(r.exit_code == 0);
        CHECK(r.output.find("OK") != std::string::npos);
    }
    // daq-inspect, another process, reads the live file too.
    {
        auto r = run_command(shell_quote(DAQ_INSPECT) + " --verify " + shell_quote(path.string()));
        INFO(r.output);
        CHECK(r.exit_code == 0);
    }

    // More rows into the same (rewritten) partial chunk, then a new unit,
    // while a reader keeps the file open: after refresh() it sees the rows;
    // the new unit needs a reopen.
    std::FILE* follower = nullptr;
    if (py) {
        const std::string cmd = std::string(python) + " " + shell_quote(follow) + " " + shell_quote(path.string()) + " " +
                                shell_quote(dir.path().string()) + " 2>&1";
        follower = ::popen(cmd.c_str(), "r");
        REQUIRE(follower != nullptr);
        for (int i = 0; i < 6000 && !fs::exists(dir.path() / "ready1"); ++i) ::usleep(10'000);
        REQUIRE(fs::exists(dir.path() / "ready1"));
    }
    for (std::uint64_t i = 0; i < 50; ++i) put(rf, want, 5, 8, 1100 + i);
    rf.flush();
    put(rf, want, 6, 8, 1);  // new unit: the file is closed and reopened under the reader
    rf.flush();
    CHECK((read_superblock(path).status_flags & 0x04) != 0);
    if (py) {
        write_text(dir.path() / "go1", "");
        for (int i = 0; i < 6000 && !fs::exists(dir.path() / "ready2"); ++i) ::usleep(10'000);
        CHECK(fs::exists(dir.path() / "ready2"));
        auto r = run_command(std::string(python) + " " + shell_quote(script) + " " + shell_quote(path.string()) +
                             " 5:150 6:1");
        INFO(r.output);
        CHECK(r.exit_code == 0);
    }

    rf.close();  // reopens read-write for stopped_at while the reader is still open
    CHECK_FALSE(rf.stats().failed);
    if (py) {
        write_text(dir.path() / "go2", "");
        std::string out;
        char buf[512];
        std::size_t n;
        while ((n = std::fread(buf, 1, sizeof buf, follower)) > 0) out.append(buf, n);
        const int status = ::pclose(follower);
        INFO(out);
        CHECK(WIFEXITED(status));
        CHECK(WEXITSTATUS(status) == 0);
        CHECK(out.find("100 150 1149 150") != std::string::npos);
    }
    CHECK(read_superblock(path).status_flags == 0);
    h5::file f = open_read(path);  // plain, non-SWMR open
    CHECK(std::regex_match(read_string_attr(f.get(), "stopped_at"), iso8601_utc));
    check_unit(f.get(), 5, want[5]);
    check_unit(f.get(), 6, want[6]);
    if (py) {
        auto r = run_command(std::string(python) + " -c " +
                             shell_quote("import h5py,sys; f=h5py.File(sys.argv[1],'r'); print(f.attrs['stopped_at'])") +
                             " " + shell_quote(path.string()));
        INFO(r.output);
        CHECK(r.exit_code == 0);
    }
}

TEST_CASE("run_file rotates by size into self-contained numbered files", "[storage]") {
    temp_dir dir;
    auto opt = options_for(dir.path(), "rot");
    // Row payload: unit 1 (4 channels) 26 B, unit 2 (8 channels) 34 B.
    opt.rotate_bytes = 1000;
    std::map<std::uint16_t, expected_rows> want;
    std::vector<fs::path> files;
    {
        run_file rf(opt);
        for (std::uint64_t i = 0; i < 120; ++i) {
            put(rf, want, 1, 4, 10 + 2 * i);  // gaps of one frame
            if (i >= 40) put(rf, want, 2, 8, 7 + i);  // unit 2 starts in a later file
            if (i % 25 == 0) rf.flush();
        }
        rf.close();
        files = rf.stats().files;
        CHECK(rf.stats().frames_written == 120 + 80);
    }
    REQUIRE(files.size() >= 5);
    CHECK_FALSE(fs::exists(dir.path() / "rot.h5"));
    std::map<std::uint16_t, expected_rows> got;
    for (std::size_t i = 0; i < files.size(); ++i) {
        char name[32];
        std::snprintf(name, sizeof name, "rot_%05zu.h5", i);
        CHECK(files[i] == dir.path() / name);
        INFO(files[i]);
        REQUIRE(fs::exists(files[i]));
        CHECK(read_superblock(files[i]).status_flags == 0);
        h5::file f = open_read(files[i]);
        CHECK(read_string_attr(f.get(), "format") == "daq1-run");
        CHECK(read_string_attr(f.get(), "run_name") == "rot");
        CHECK(read_int_attr(f.get(), "format_version") == 1);
        CHECK(has_attr(f.get(), "stopped_at"));
        CHECK(read_string_attr(f.get(), "config") == opt.config_text);
        h5::group units(H5Gopen2(f.get(), "/units", H5P_DEFAULT));
        std::uint64_t payload = 0;
        for (const auto& name_u : link_names(units.get())) {
            const auto unit = static_cast<std::uint16_t>(std::stoul(name_u.substr(1)));
            const std::string g = "/units/" + name_u;
            h5::dataset fn(H5Dopen2(f.get(), (g + "/frame_number").c_str(), H5P_DEFAULT));
            h5::dataset ts(H5Dopen2(f.get(), (g + "/timestamp_ns").c_str(), H5P_DEFAULT));
            h5::dataset mp(H5Dopen2(f.get(), (g + "/missing_packets").c_str(), H5P_DEFAULT));
            h5::dataset raw(H5Dopen2(f.get(), (g + "/raw").c_str(), H5P_DEFAULT));
            auto& e = got[unit];
            e.channels = static_cast<std::uint32_t>(dims_of(raw.get())[1]);
            const auto v = read_all<std::uint64_t>(fn.get(), H5T_NATIVE_UINT64);
            CHECK(dims_of(raw.get())[0] == v.size());
            e.frame_number.insert(e.frame_number.end(), v.begin(), v.end());
            const auto t = read_all<std::uint64_t>(ts.get(), H5T_NATIVE_UINT64);
            e.timestamp_ns.insert(e.timestamp_ns.end(), t.begin(), t.end());
            const auto m = read_all<std::uint16_t>(mp.get(), H5T_NATIVE_UINT16);
            e.missing_packets.insert(e.missing_packets.end(), m.begin(), m.end());
            const auto r = read_all<std::uint16_t>(raw.get(), H5T_NATIVE_UINT16);
            e.raw.insert(e.raw.end(), r.begin(), r.end());
            payload += v.size() * (e.channels * 2 + 18);
        }
        CHECK(payload <= opt.rotate_bytes);
        CHECK(payload > 0);
        if (i == 0) CHECK(link_names(units.get()) == std::vector<std::string>{"u1"});
        if (i + 1 == files.size()) CHECK(link_names(units.get()) == std::vector<std::string>{"u1", "u2"});
    }
    for (auto& [unit, e] : want) {
        INFO("unit " << unit);
        CHECK(got[unit].frame_number == e.frame_number);  // every frame exactly once, in order
        CHECK(got[unit].timestamp_ns == e.timestamp_ns);
        CHECK(got[unit].missing_packets == e.missing_packets);
        CHECK(got[unit].raw == e.raw);
    }

    // daq-inspect reads the series as one run.
    std::string cmd = shell_quote(DAQ_INSPECT) + " --verify --json";
    for (const auto& p : files) cmd += " " + shell_quote(p.string());
    auto r = run_command(cmd);
    INFO(r.output);
    CHECK(r.exit_code == 0);
    CHECK(r.output.find("\"total_frames\": 200") != std::string::npos);
    CHECK(r.output.find("\"frames_lost_in_gaps\": 119") != std::string::npos);

    // Files in the wrong order break "strictly ascending across the run".
    std::string reversed = shell_quote(DAQ_INSPECT) + " --verify";
    for (auto it = files.rbegin(); it != files.rend(); ++it) reversed += " " + shell_quote(it->string());
    auto bad = run_command(reversed);
    INFO(bad.output);
    CHECK(bad.exit_code == 1);
    CHECK(bad.output.find("not strictly ascending") != std::string::npos);
}

TEST_CASE("run_file refuses to overwrite an existing run", "[storage]") {
    temp_dir dir;
    {
        run_file rf(options_for(dir.path(), "dup"));
        owned_frame of(1, 4, 1);
        rf.append(of.f);
        rf.close();
    }
    const auto size_before = fs::file_size(dir.path() / "dup.h5");
    const auto time_before = fs::last_write_time(dir.path() / "dup.h5");
    try {
        run_file again(options_for(dir.path(), "dup"));
        FAIL("second run_file of the same name was created");
    } catch (const storage_error& e) {
        CHECK(std::string(e.what()).find((dir.path() / "dup.h5").string()) != std::string::npos);
    }
    CHECK(fs::file_size(dir.path() / "dup.h5") == size_before);
    CHECK(fs::last_write_time(dir.path() / "dup.h5") == time_before);

    // A rotating run of that name is refused too, and so is a plain run
    // where a numbered file of the name exists.
    auto rot = options_for(dir.path(), "dup");
    rot.rotate_bytes = 1 << 20;
    CHECK_THROWS_AS(run_file(rot), storage_error);
    write_text(dir.path() / "series_00007.h5", "x");
    CHECK_THROWS_AS(run_file(options_for(dir.path(), "series")), storage_error);
    auto series = options_for(dir.path(), "series");
    series.rotate_bytes = 1 << 20;
    CHECK_THROWS_AS(run_file(series), storage_error);
    // Names that merely share a prefix do not count.
    write_text(dir.path() / "other_1.h5", "x");
    write_text(dir.path() / "other_00001.h5.bak", "x");
    CHECK_NOTHROW(run_file(options_for(dir.path(), "other")));
}

TEST_CASE("run_file into a missing or unwritable directory throws storage_error naming the path", "[storage]") {
    temp_dir dir;
    const fs::path missing = dir.path() / "no" / "such" / "dir";
    try {
        run_file rf(options_for(missing, "r1"));
        FAIL("created a run in a missing directory");
    } catch (const storage_error& e) {
        CHECK(std::string(e.what()).find(missing.string()) != std::string::npos);
    }
    const fs::path not_dir = write_text(dir.path() / "plain_file", "x");
    try {
        run_file rf(options_for(not_dir, "r1"));
        FAIL("created a run under a regular file");
    } catch (const storage_error& e) {
        CHECK(std::string(e.what()).find(not_dir.string()) != std::string::npos);
    }
    // Unwritable: a read-only directory (not for root, who may write anyway);
    // as root, /proc/self is a directory nobody can create files in.
    fs::path ro;
    if (::geteuid() != 0) {
        ro = dir.path() / "ro";
        fs::create_directory(ro);
        fs::permissions(ro, fs::perms::owner_read | fs::perms::owner_exec);
    } else {
        ro = "/proc/self";
    }
    try {
        run_file rf(options_for(ro, "r1"));
        FAIL("created a run in an unwritable directory");
    } catch (const storage_error& e) {
        const std::string msg = e.what();
        INFO(msg);
        CHECK(msg.find("H5Fcreate failed on " + (ro / "r1.h5").string()) != std::string::npos);
        CHECK(msg.find("unable to") != std::string::npos);  // carries the HDF5 error stack
    }
    CHECK_FALSE(fs::exists(ro / "r1.h5"));
}
