#pragma once
// Small helpers over the HDF5 C API, shared by the storage library and
// daq-inspect: RAII handles for hid_t, and checked calls that turn a failure
// into storage_error carrying the HDF5 error stack.
//
// Include only from code that links hdf5::hdf5. The HDF5 library of Debian is
// the serial, non-thread-safe build: every object of this header must be used
// by one thread at a time (in daqd: the writer thread).
#include "daqd/storage/error.hpp"
#include "daqd/storage/h5_bslz4.hpp"

#include <fmt/format.h>
#include <hdf5.h>

#include <chrono>
#include <ctime>

#include <string>
#include <string_view>
#include <utility>

namespace daqd::storage::h5 {

// Prepares the HDF5 library for daqd; call before any other HDF5 call of the
// process (repeating it is harmless):
// - H5dont_atexit(): HDF5 1.10 leaves a dangling file identifier behind when
//   H5Fclose fails (its flush failed, e.g. disk full): the H5F_t is freed but
//   the identifier stays registered, and the library's atexit clean-up then
//   closes it again and crashes. daqd closes its files itself, so the atexit
//   clean-up is not needed. Only effective before the library initialises.
// - Turns off HDF5's automatic printing of error stacks to stderr; errors are
//   collected by error_stack() instead. Process-wide in the serial build.
inline void init_library() noexcept {
    static const bool once = [] {
        H5dont_atexit();  // fails harmlessly when the library is already initialised
        // Filter 32008 (bitshuffle/LZ4) on daqd's own codec: compressed runs
        // read and write without the plugin (h5_bslz4.hpp).
        register_bslz4_filter();
        return true;
    }();
    (void)once;
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
}

// The current HDF5 error stack as one line ("func(): message [major / minor]; ..."),
// the API call first, the innermost cause last. Clears the stack.
inline std::string error_stack() {
    std::string out;
    auto walk = [](unsigned n, const H5E_error2_t* e, void* data) -> herr_t {
        auto& s = *static_cast<std::string*>(data);
        if (n > 0) s += "; ";
        s += e->func_name != nullptr ? e->func_name : "?";
        s += "(): ";
        s += e->desc != nullptr ? e->desc : "";
        char maj[128] = "";
        char min[128] = "";
        H5Eget_msg(e->maj_num, nullptr, maj, sizeof maj);
        H5Eget_msg(e->min_num, nullptr, min, sizeof min);
        s += " [";
        s += maj;
        s += " / ";
        s += min;
        s += "]";
        return 0;
    };
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, walk, &out);
    H5Eclear2(H5E_DEFAULT);
    // Some descriptions (the sec2 driver's) contain line breaks: keep one line.
    for (char& c : out)
        if (c == '\n' || c == '\r') c = ' ';
    if (out.empty()) out = "no HDF5 error stack";
    return out;
}

// Throws storage_error("<call> failed on <where>: <stack>").
[[noreturn]] inline void fail(std::string_view call, std::string_view where) {
    std::string msg;
    msg.reserve(call.size() + where.size() + 64);
    msg.append(call).append(" failed on ").append(where).append(": ").append(error_stack());
    throw storage_error(msg);
}

// Checked calls: hid_t (identifiers) and herr_t/htri_t (status) results.
inline hid_t check_id(hid_t id, std::string_view call, std::string_view where) {
    if (id < 0) fail(call, where);
    return id;
}
inline int check(int status, std::string_view call, std::string_view where) {
    if (status < 0) fail(call, where);
    return status;
}

// Owns one identifier; closes it with Close on destruction (errors of a
// close in a destructor are cleared, never thrown). Movable, not copyable.
template <herr_t (*Close)(hid_t)>
class handle {
public:
    handle() noexcept = default;
    explicit handle(hid_t id) noexcept : _id(id) {}
    ~handle() { reset(); }
    handle(handle&& other) noexcept : _id(std::exchange(other._id, H5I_INVALID_HID)) {}
    handle& operator=(handle&& other) noexcept {
        if (this != &other) {
            reset();
            _id = std::exchange(other._id, H5I_INVALID_HID);
        }
        return *this;
    }
    handle(const handle&) = delete;
    handle& operator=(const handle&) = delete;

    [[nodiscard]] hid_t get() const noexcept { return _id; }
    [[nodiscard]] explicit operator bool() const noexcept { return _id >= 0; }
    // Closes quietly: a failure is cleared from the stack and reported only
    // by the result (false). The handle is empty afterwards either way.
    bool reset() noexcept {
        bool ok = true;
        if (_id >= 0) {
            if (Close(_id) < 0) {
                H5Eclear2(H5E_DEFAULT);
                ok = false;
            }
            _id = H5I_INVALID_HID;
        }
        return ok;
    }
    // Closes and throws storage_error on failure (for the normal path,
    // where a failed close means lost data).
    void close(std::string_view call, std::string_view where) {
        if (_id < 0) return;
        const hid_t id = std::exchange(_id, H5I_INVALID_HID);
        check(Close(id), call, where);
    }

private:
    hid_t _id = H5I_INVALID_HID;
};

using file = handle<H5Fclose>;
using group = handle<H5Gclose>;
using dataset = handle<H5Dclose>;
using dataspace = handle<H5Sclose>;
using datatype = handle<H5Tclose>;
using plist = handle<H5Pclose>;
using attribute = handle<H5Aclose>;

// File access for reading a file that may be open for SWMR writing. A SWMR
// reader retries a metadata block whose checksum fails (it may be half
// written); HDF5's default is 100 tries with the wait doubling from 1 ns,
// which on a damaged file (a disk-full close) sleeps for years. 28 tries
// wait about 0.27 s in all: ample for a write in progress, then an error.
inline constexpr unsigned swmr_read_attempts = 28;
inline plist swmr_read_access(std::string_view where) {
    plist fapl(check_id(H5Pcreate(H5P_FILE_ACCESS), "H5Pcreate", where));
    check(H5Pset_metadata_read_attempts(fapl.get(), swmr_read_attempts), "H5Pset_metadata_read_attempts", where);
    return fapl;
}

// A scalar variable-length UTF-8 string attribute (h5py reads it as str).
// `where` names the object and file for error messages.
inline void write_string_attr(hid_t loc, const char* name, const std::string& value, const std::string& where) {
    h5::datatype t(check_id(H5Tcopy(H5T_C_S1), "H5Tcopy", where));
    check(H5Tset_size(t.get(), H5T_VARIABLE), "H5Tset_size", where);
    check(H5Tset_cset(t.get(), H5T_CSET_UTF8), "H5Tset_cset", where);
    h5::dataspace s(check_id(H5Screate(H5S_SCALAR), "H5Screate", where));
    h5::attribute a(check_id(H5Acreate2(loc, name, t.get(), s.get(), H5P_DEFAULT, H5P_DEFAULT), "H5Acreate2", where));
    const char* p = value.c_str();
    check(H5Awrite(a.get(), t.get(), &p), "H5Awrite", where);
    a.close("H5Aclose", where);
}

// Sets a string attribute that may exist already (it is replaced).
inline void replace_string_attr(hid_t loc, const char* name, const std::string& value, const std::string& where) {
    const htri_t exists = H5Aexists(loc, name);
    check(exists, "H5Aexists", where);
    if (exists > 0) check(H5Adelete(loc, name), "H5Adelete", where);
    write_string_attr(loc, name, value, where);
}

// Now, as the ISO 8601 UTC text stored in run and calibration files.
inline std::string iso8601_utc_now() {
    const auto now = std::chrono::system_clock::now();
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
    const std::time_t secs = static_cast<std::time_t>(ms / 1000);
    std::tm tm{};
    ::gmtime_r(&secs, &tm);
    return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                       tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms % 1000));
}

}  // namespace daqd::storage::h5
