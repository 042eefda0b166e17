#pragma once
// The one exception type of the storage library (and daq-inspect's HDF5
// helpers): a failed HDF5 call, a refused run name, an unusable directory.
// The message names the operation, the object and the file.
#include <stdexcept>

namespace daqd::storage {

struct storage_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// The file system of the output directory has no more room than the reserve
// kept for closing files (run_options::reserve_bytes). The run file was closed
// cleanly with everything appended before.
struct disk_full_error : storage_error {
    using storage_error::storage_error;
};

}  // namespace daqd::storage
