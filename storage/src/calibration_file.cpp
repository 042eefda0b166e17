// Calibration files: reading and writing (include/daqd/storage/calibration_file.hpp).
#include "daqd/storage/calibration_file.hpp"

#include "daqd/storage/h5.hpp"

#include <fmt/format.h>

#include <chrono>
#include <ctime>
#include <optional>
#include <vector>

namespace daqd::storage {

namespace {

namespace fs = std::filesystem;

void string_attr(hid_t loc, const char* name, const std::string& value, const std::string& where) {
    h5::write_string_attr(loc, name, value, fmt::format("attribute {} in {}", name, where));
}
void int_attr(hid_t loc, const char* name, std::int64_t value, hid_t file_type, const std::string& where) {
    const std::string w = fmt::format("attribute {} in {}", name, where);
    h5::dataspace s(h5::check_id(H5Screate(H5S_SCALAR), "H5Screate", w));
    h5::attribute a(h5::check_id(H5Acreate2(loc, name, file_type, s.get(), H5P_DEFAULT, H5P_DEFAULT), "H5Acreate2", w));
    h5::check(H5Awrite(a.get(), H5T_NATIVE_INT64, &value), "H5Awrite", w);
    a.close("H5Aclose", w);
}

void float_dataset(hid_t loc, const char* name, const std::vector<float>& v, const std::string& where) {
    const std::string w = fmt::format("{} in {}", name, where);
    const hsize_t dims[1] = {v.size()};
    h5::dataspace s(h5::check_id(H5Screate_simple(1, dims, nullptr), "H5Screate_simple", w));
    h5::dataset d(h5::check_id(H5Dcreate2(loc, name, H5T_IEEE_F32LE, s.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                               "H5Dcreate2", w));
    h5::check(H5Dwrite(d.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()), "H5Dwrite", w);
    d.close("H5Dclose", w);
}

std::optional<std::string> read_string_attr(hid_t obj, const char* name) {
    if (H5Aexists(obj, name) <= 0) return std::nullopt;
    h5::attribute a(H5Aopen(obj, name, H5P_DEFAULT));
    if (!a) return std::nullopt;
    h5::datatype t(H5Aget_type(a.get()));
    if (H5Tget_class(t.get()) != H5T_STRING) return std::nullopt;
    if (H5Tis_variable_str(t.get()) > 0) {
        h5::datatype mt(H5Tcopy(H5T_C_S1));
        H5Tset_size(mt.get(), H5T_VARIABLE);
        H5Tset_cset(mt.get(), H5Tget_cset(t.get()));
        char* p = nullptr;
        if (H5Aread(a.get(), mt.get(), &p) < 0 || p == nullptr) return std::nullopt;
        std::string out(p);
        h5::dataspace s(H5Aget_space(a.get()));
        H5Dvlen_reclaim(mt.get(), s.get(), H5P_DEFAULT, &p);
        return out;
    }
    const std::size_t n = H5Tget_size(t.get());
    std::string out(n, '\0');
    h5::datatype mt(H5Tcopy(H5T_C_S1));
    H5Tset_size(mt.get(), n);
    if (H5Aread(a.get(), mt.get(), out.data()) < 0) return std::nullopt;
    out.resize(out.find('\0') == std::string::npos ? n : out.find('\0'));
    return out;
}

std::optional<std::int64_t> read_int_attr(hid_t obj, const char* name) {
    if (H5Aexists(obj, name) <= 0) return std::nullopt;
    h5::attribute a(H5Aopen(obj, name, H5P_DEFAULT));
    if (!a) return std::nullopt;
    h5::datatype t(H5Aget_type(a.get()));
    if (H5Tget_class(t.get()) != H5T_INTEGER) return std::nullopt;
    std::int64_t v = 0;
    if (H5Aread(a.get(), H5T_NATIVE_INT64, &v) < 0) return std::nullopt;
    return v;
}

std::vector<float> read_floats(hid_t group, const char* name, const std::string& where) {
    if (H5Lexists(group, name, H5P_DEFAULT) <= 0)
        throw storage_error(fmt::format("{}: missing dataset '{}'", where, name));
    h5::dataset d(h5::check_id(H5Dopen2(group, name, H5P_DEFAULT), "H5Dopen2", where + "/" + name));
    h5::datatype t(h5::check_id(H5Dget_type(d.get()), "H5Dget_type", where + "/" + name));
    if (H5Tget_class(t.get()) != H5T_FLOAT && H5Tget_class(t.get()) != H5T_INTEGER)
        throw storage_error(fmt::format("{}/{}: not a numeric dataset", where, name));
    h5::dataspace s(h5::check_id(H5Dget_space(d.get()), "H5Dget_space", where + "/" + name));
    if (H5Sget_simple_extent_ndims(s.get()) != 1)
        throw storage_error(fmt::format("{}/{}: expected a one-dimensional dataset [channels]", where, name));
    hsize_t n = 0;
    H5Sget_simple_extent_dims(s.get(), &n, nullptr);
    std::vector<float> v(n);
    h5::check(H5Dread(d.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()), "H5Dread",
              where + "/" + name);
    return v;
}

}  // namespace

processing::calibration_set read_calibration_file(const fs::path& path) {
    h5::init_library();
    const std::string where = path.string();
    std::error_code ec;
    if (!fs::is_regular_file(path, ec))
        throw storage_error(fmt::format("calibration file {}: no such file", where));
    h5::file f(h5::check_id(H5Fopen(where.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), "H5Fopen", where));
    const auto format = read_string_attr(f.get(), "format");
    if (!format || *format != calibration_format)
        throw storage_error(fmt::format("calibration file {}: root attribute format is {}, expected '{}'", where,
                                        format ? "'" + *format + "'" : std::string("missing"), calibration_format));
    const auto version = read_int_attr(f.get(), "format_version");
    if (!version || *version != calibration_format_version)
        throw storage_error(fmt::format("calibration file {}: format_version is {}, expected {}", where,
                                        version ? std::to_string(*version) : std::string("missing"),
                                        calibration_format_version));
    processing::calibration_set set;
    set.file = where;
    if (H5Lexists(f.get(), "units", H5P_DEFAULT) <= 0) return set;
    h5::group units(h5::check_id(H5Gopen2(f.get(), "units", H5P_DEFAULT), "H5Gopen2", "/units in " + where));
    H5G_info_t info{};
    h5::check(H5Gget_info(units.get(), &info), "H5Gget_info", "/units in " + where);
    for (hsize_t i = 0; i < info.nlinks; ++i) {
        char name[256] = "";
        h5::check(static_cast<int>(H5Lget_name_by_idx(units.get(), ".", H5_INDEX_NAME, H5_ITER_INC, i, name, sizeof name,
                                                      H5P_DEFAULT)),
                  "H5Lget_name_by_idx", "/units in " + where);
        const std::string gname = name;
        const std::string gw = fmt::format("/units/{} in {}", gname, where);
        unsigned long id = 0;
        try {
            std::size_t used = 0;
            if (gname.size() < 2 || gname[0] != 'u') throw std::invalid_argument(gname);
            id = std::stoul(gname.substr(1), &used);
            if (used != gname.size() - 1 || id > 65535) throw std::invalid_argument(gname);
        } catch (const std::exception&) {
            throw storage_error(fmt::format("calibration file {}: unexpected object /units/{} (expected u<unit_id>)",
                                            where, gname));
        }
        h5::group g(h5::check_id(H5Gopen2(units.get(), name, H5P_DEFAULT), "H5Gopen2", gw));
        processing::unit_constants u;
        u.unit_id = static_cast<std::uint16_t>(id);
        u.pedestal = read_floats(g.get(), "pedestal", gw);
        u.noise = read_floats(g.get(), "noise", gw);
        u.gain = read_floats(g.get(), "gain", gw);
        u.channels = static_cast<std::uint32_t>(u.pedestal.size());
        if (u.channels == 0 || u.noise.size() != u.channels || u.gain.size() != u.channels)
            throw storage_error(fmt::format("calibration file {}: {}: pedestal, noise and gain must have the same "
                                            "non-zero length (got {}, {}, {})",
                                            where, gname, u.pedestal.size(), u.noise.size(), u.gain.size()));
        if (const auto ch = read_int_attr(g.get(), "channels"); ch && *ch != u.channels)
            throw storage_error(fmt::format("calibration file {}: {}: attribute channels = {} but the datasets have {}",
                                            where, gname, *ch, u.channels));
        if (const auto fr = read_int_attr(g.get(), "frames"); fr && *fr > 0) u.frames = static_cast<std::uint64_t>(*fr);
        u.source = where;
        set.units.emplace(u.unit_id, std::move(u));
    }
    return set;
}

void write_calibration_file(const fs::path& path, const processing::calibration_set& set,
                            const std::string& description) {
    h5::init_library();
    const std::string where = path.string();
    for (const auto& [id, u] : set.units)
        if (u.channels == 0 || u.pedestal.size() != u.channels || u.noise.size() != u.channels ||
            u.gain.size() != u.channels)
            throw storage_error(fmt::format("calibration file {}: unit {}: arrays do not have {} values", where, id,
                                            u.channels));
    bool created = false;
    try {
        h5::file f(h5::check_id(H5Fcreate(where.c_str(), H5F_ACC_EXCL, H5P_DEFAULT, H5P_DEFAULT), "H5Fcreate", where));
        created = true;
        string_attr(f.get(), "format", calibration_format, "/ in " + where);
        int_attr(f.get(), "format_version", calibration_format_version, H5T_STD_I32LE, "/ in " + where);
        string_attr(f.get(), "created_at", h5::iso8601_utc_now(), "/ in " + where);
        string_attr(f.get(), "description", description, "/ in " + where);
        h5::group units(h5::check_id(H5Gcreate2(f.get(), "units", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), "H5Gcreate2",
                                     "/units in " + where));
        for (const auto& [id, u] : set.units) {
            const std::string name = fmt::format("u{}", id);
            const std::string gw = fmt::format("/units/{} in {}", name, where);
            h5::group g(h5::check_id(H5Gcreate2(units.get(), name.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                                     "H5Gcreate2", gw));
            int_attr(g.get(), "unit_id", id, H5T_STD_I32LE, gw);
            int_attr(g.get(), "channels", u.channels, H5T_STD_I32LE, gw);
            int_attr(g.get(), "frames", static_cast<std::int64_t>(u.frames), H5T_STD_I64LE, gw);
            float_dataset(g.get(), "pedestal", u.pedestal, gw);
            float_dataset(g.get(), "noise", u.noise, gw);
            float_dataset(g.get(), "gain", u.gain, gw);
            g.close("H5Gclose", gw);
        }
        units.close("H5Gclose", "/units in " + where);
        f.close("H5Fclose", where);
    } catch (...) {
        if (created) {
            std::error_code ec;
            fs::remove(path, ec);
        }
        throw;
    }
}

}  // namespace daqd::storage
