// storage.compression = "bslz4": what a compressed run file holds, read back
// through HDF5 (filter 32008 on daqd's codec), by h5py + hdf5plugin (Debian's
// bitshuffle plugin) and by h5dump, against the same frames stored raw.
#include "daqd/storage/run_writer.hpp"
#include "storage_test_util.hpp"

#include <nlohmann/json.hpp>

#include <random>

using namespace storage_test;
using daqd::storage::compression_kind;
using daqd::storage::compressor;
using daqd::storage::compressor_counters;
using daqd::storage::run_file;
using daqd::storage::run_options;

namespace {

run_options options_for(const fs::path& dir, const std::string& name, compression_kind c, std::uint32_t chunk_bytes) {
    run_options o;
    o.output_dir = dir;
    o.run_name = name;
    o.chunk_bytes = chunk_bytes;
    o.config_text = "test";
    o.server_version = "test";
    o.compression = c;
    return o;
}

// A frame with samples and, optionally, a calibrated row (mostly zeros).
struct cal_frame {
    owned_frame of;
    std::vector<float> cal;
    cal_frame(std::uint16_t unit, std::uint32_t channels, std::uint64_t n, std::uint16_t missing, bool calibrated)
        : of(unit, channels, n, missing) {
        if (!calibrated) return;
        cal.assign(channels, 0.0f);
        for (std::uint32_t c = 0; c < channels; c += 37) cal[c] = static_cast<float>((n * 3 + c) % 101) * 0.5f;
        of.f.calibrated = cal.data();
    }
};

// Every frame to both files, flushing now and then (partial chunks written
// and, compressed, rewritten), 2 units, one starting mid-run.
void write_both(run_file& raw, run_file& packed, std::map<std::uint16_t, expected_rows>& want, bool calibrated,
                std::vector<std::vector<float>>* cal_rows = nullptr) {
    std::mt19937 rng(11);
    for (std::uint64_t i = 0; i < 700; ++i) {
        for (std::uint16_t unit : {std::uint16_t{3}, std::uint16_t{9}}) {
            if (unit == 9 && i < 150) continue;
            const std::uint32_t channels = unit == 3 ? 200 : 64;
            const std::uint16_t missing = rng() % 40 == 0 ? 1 : 0;
            cal_frame f(unit, channels, 1000 + i * (unit == 9 ? 2 : 1), missing, calibrated);
            raw.append(f.of.f);
            packed.append(f.of.f);
            want[unit].add(f.of.f);
            if (cal_rows != nullptr && unit == 3) cal_rows->push_back(f.cal);
        }
        if (i % 97 == 13) {
            raw.flush();
            packed.flush();
        }
    }
    raw.close();
    packed.close();
}

std::vector<unsigned> filter_of(hid_t ds, bool* has_filter) {
    h5::plist dcpl(H5Dget_create_plist(ds));
    unsigned flags = 0;
    std::size_t n = 8;
    std::vector<unsigned> cd(8);
    char name[128] = "";
    *has_filter = H5Pget_filter_by_id2(dcpl.get(), 32008, &flags, &n, cd.data(), sizeof name, name, nullptr) >= 0;
    H5Eclear2(H5E_DEFAULT);
    cd.resize(*has_filter ? n : 0);
    return cd;
}

}  // namespace

TEST_CASE("bslz4 run file: every dataset carries filter 32008 as declared and reads back equal to the raw run",
          "[storage][compression]") {
    const bool calibrated = GENERATE(false, true);
    CAPTURE(calibrated);
    temp_dir dir;
    auto ro = options_for(dir.path(), "raw", compression_kind::none, 4096);
    auto po = options_for(dir.path(), "packed", compression_kind::bslz4, 4096);
    ro.processing.calibrated = po.processing.calibrated = calibrated;
    std::map<std::uint16_t, expected_rows> want;
    std::vector<std::vector<float>> cal_rows;
    {
        run_file raw(ro), packed(po);
        write_both(raw, packed, want, calibrated, &cal_rows);
        CHECK(packed.stats().frames_written == raw.stats().frames_written);
        CHECK(packed.stats().chunk_bytes_stored < packed.stats().chunk_bytes_in / 2);
        CHECK(raw.stats().chunk_bytes_stored == 0);  // not counted without compression
    }
    for (const char* name : {"raw.h5", "packed.h5"}) {
        INFO(name);
        h5::file f = open_read(dir.path() / name);
        for (const auto& [unit, rows] : want) check_unit(f.get(), unit, rows);
        const bool packed = std::string(name) == "packed.h5";
        CHECK(has_attr(f.get(), "compression") == packed);  // a raw file is as before
        if (packed) CHECK(read_string_attr(f.get(), "compression") == "bslz4");
        std::vector<std::pair<std::string, unsigned>> datasets{
            {"raw", 2}, {"frame_number", 8}, {"timestamp_ns", 8}, {"missing_packets", 2}};
        if (calibrated) datasets.emplace_back("calibrated", 4);
        for (const auto& [ds_name, elem] : datasets) {
            const std::string p = "/units/u3/" + ds_name;
            h5::dataset ds(H5Dopen2(f.get(), p.c_str(), H5P_DEFAULT));
            REQUIRE(ds);
            bool has = false;
            const auto cd = filter_of(ds.get(), &has);
            INFO(p);
            CHECK(has == packed);
            if (packed) CHECK(cd == std::vector<unsigned>{0, 3, elem, 0, 2});
        }
        if (calibrated) {
            h5::dataset ds(H5Dopen2(f.get(), "/units/u3/calibrated", H5P_DEFAULT));
            const auto got = read_all<float>(ds.get(), H5T_NATIVE_FLOAT);
            std::vector<float> flat;
            for (const auto& r : cal_rows) flat.insert(flat.end(), r.begin(), r.end());
            CHECK(got == flat);
        }
    }
    // Every chunk of the compressed file smaller than the raw one's.
    h5::file raw = open_read(dir.path() / "raw.h5");
    h5::file packed = open_read(dir.path() / "packed.h5");
    h5::dataset rd(H5Dopen2(raw.get(), "/units/u3/raw", H5P_DEFAULT));
    h5::dataset pd(H5Dopen2(packed.get(), "/units/u3/raw", H5P_DEFAULT));
    CHECK(H5Dget_storage_size(pd.get()) * 2 < H5Dget_storage_size(rd.get()));

    // daq-inspect: the run says it is compressed, with the ratio per dataset, and verifies sample for sample.
    {
        const auto r = run_command(std::string(DAQ_INSPECT) + " --json " + shell_quote((dir.path() / "packed.h5").string()));
        INFO(r.output);
        REQUIRE(r.exit_code == 0);
        const auto j = nlohmann::json::parse(r.output);
        CHECK(j["compression"] == "bslz4");
        CHECK(j["datasets"]["raw"]["filter"] == "bslz4");
        CHECK(j["datasets"]["raw"]["ratio"].get<double>() > 2.0);
        CHECK(j["datasets"].contains("calibrated") == calibrated);
        const auto v = run_command(std::string(DAQ_INSPECT) + " --verify " + shell_quote((dir.path() / "packed.h5").string()));
        INFO(v.output);
        CHECK(v.exit_code == 0);
        CHECK(v.output.find("verify         OK") != std::string::npos);
        CHECK(v.output.find("(ratio ") != std::string::npos);
    }
    if (!python_has_h5py()) {
        WARN("no /usr/bin/python3 with h5py: the h5py + hdf5plugin and h5dump checks are skipped");
        return;
    }
    // h5py with hdf5plugin (Debian's bitshuffle plugin decodes), equal to the raw file, every dataset.
    const auto script = write_text(dir.path() / "cmp.py", R"PY(
import sys, h5py, hdf5plugin, numpy as np
a, b = h5py.File(sys.argv[1], 'r'), h5py.File(sys.argv[2], 'r')
n = 0
for u in a['units']:
    for k, x in a['units'][u].items():
        if not isinstance(x, h5py.Dataset):
            continue
        y = b['units'][u][k]
        assert x.shape == y.shape and x.dtype == y.dtype, (u, k)
        assert np.array_equal(x[()], y[()]), (u, k)
        if k in ('raw', 'frame_number', 'timestamp_ns', 'missing_packets', 'calibrated'):
            assert '32008' in y._filters, (u, k, y._filters)
            n += 1
print('EQUAL', n)
)PY");
    const auto r = run_command(std::string(python) + " " + shell_quote(script.string()) + " " +
                               shell_quote((dir.path() / "raw.h5").string()) + " " +
                               shell_quote((dir.path() / "packed.h5").string()) + " 2>&1");
    INFO(r.output);
    CHECK(r.exit_code == 0);
    CHECK(r.output.find(calibrated ? "EQUAL 10" : "EQUAL 8") != std::string::npos);
    // h5dump with the Debian plugin directory prints the same numbers.
    const std::string plugins = "/usr/lib/x86_64-linux-gnu/hdf5/serial/plugins";
    auto dump = [&](const char* file) {
        return run_command("HDF5_PLUGIN_PATH=" + plugins + " h5dump -d /units/u3/raw -s 650,0 -c 4,6 " +
                           shell_quote((dir.path() / file).string()) + " 2>&1");
    };
    const auto dr = dump("raw.h5"), dp = dump("packed.h5");
    INFO(dp.output);
    CHECK(dp.exit_code == 0);
    const auto data = [](const std::string& s) { return s.substr(s.find("DATA {")); };
    REQUIRE(dr.output.find("DATA {") != std::string::npos);
    REQUIRE(dp.output.find("DATA {") != std::string::npos);
    CHECK(data(dp.output) == data(dr.output));
}

TEST_CASE("bslz4 run file on a pool of threads: same contents, counters add up, nothing left in flight",
          "[storage][compression]") {
    temp_dir dir;
    compressor_counters k;
    compressor pool(2, &k);
    auto ro = options_for(dir.path(), "raw", compression_kind::none, 2048);
    auto po = options_for(dir.path(), "pooled", compression_kind::bslz4, 2048);
    po.compress = &pool;
    po.compress_in_flight = 3;  // the writer waits for the oldest often
    std::map<std::uint16_t, expected_rows> want;
    {
        run_file raw(ro), packed(po);
        write_both(raw, packed, want, false);
        CHECK(k.in_flight.get() == 0);
        CHECK(k.capacity.get() == 3);
        CHECK(k.bytes_in.get() == packed.stats().chunk_bytes_in);
        CHECK(k.bytes_out.get() == packed.stats().chunk_bytes_stored);
        CHECK(k.bytes_out.get() < k.bytes_in.get());
        CHECK(k.busy_ns.get() > 0);
        CHECK(k.failures.get() == 0);
    }
    h5::file f = open_read(dir.path() / "pooled.h5");
    for (const auto& [unit, rows] : want) check_unit(f.get(), unit, rows);
}

TEST_CASE("bslz4 rotation by size counts stored (compressed) bytes", "[storage][compression]") {
    temp_dir dir;
    auto ro = options_for(dir.path(), "raw", compression_kind::none, 4096);
    auto po = options_for(dir.path(), "packed", compression_kind::bslz4, 4096);
    ro.rotate_bytes = po.rotate_bytes = 100 * 1024;
    std::map<std::uint16_t, expected_rows> want;
    std::size_t raw_files = 0, packed_files = 0;
    {
        run_file raw(ro), packed(po);
        write_both(raw, packed, want, false);
        raw_files = raw.stats().files.size();
        packed_files = packed.stats().files.size();
    }
    INFO(raw_files << " raw files, " << packed_files << " compressed");
    CHECK(raw_files >= 3);
    CHECK(packed_files < raw_files);
    // Every compressed file within the limit (plus HDF5's own metadata).
    for (const auto& e : fs::directory_iterator(dir.path()))
        if (e.path().filename().string().rfind("packed_", 0) == 0) CHECK(fs::file_size(e.path()) < 100 * 1024 + 64 * 1024);
}
