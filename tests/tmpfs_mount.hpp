#pragma once
// A tmpfs mounted for a test's life (root only): a small file system to fill.
#include <sys/mount.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <system_error>

namespace daqd_test {

struct tmpfs_mount {
    std::string where;
    bool mounted = false;
    // `size`: as mount(8) takes it ("24m", or bytes).
    tmpfs_mount(const std::string& w, const std::string& size) : where(w) {
        std::filesystem::create_directories(where);
        mounted = ::mount("tmpfs", where.c_str(), "tmpfs", 0, ("size=" + size).c_str()) == 0;
    }
    bool resize(const std::string& size) const {
        return ::mount("tmpfs", where.c_str(), "tmpfs", MS_REMOUNT, ("size=" + size).c_str()) == 0;
    }
    ~tmpfs_mount() {
        if (!mounted) return;
        // DAQD_KEEP_TEST_FILES keeps what was on the small file system too
        // (copied beside it as <dir>.kept), for a failure to be examined.
        if (std::getenv("DAQD_KEEP_TEST_FILES") != nullptr) {
            std::error_code ec;
            std::filesystem::copy(where, where + ".kept",
                                  std::filesystem::copy_options::recursive |
                                      std::filesystem::copy_options::overwrite_existing,
                                  ec);
        }
        ::umount2(where.c_str(), MNT_DETACH);
    }
    tmpfs_mount(const tmpfs_mount&) = delete;
    tmpfs_mount& operator=(const tmpfs_mount&) = delete;
};

}  // namespace daqd_test
