// The run-file journal (journal.hpp).
#include "daqd/storage/journal.hpp"

#include "daqd/storage/error.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstring>
#include <algorithm>
#include <sstream>

namespace daqd::storage::journal {

namespace fs = std::filesystem;

namespace {

// An fd that closes itself.
struct fd_guard {
    int fd = -1;
    explicit fd_guard(int f) noexcept : fd(f) {}
    ~fd_guard() {
        if (fd >= 0) ::close(fd);
    }
    fd_guard(const fd_guard&) = delete;
    fd_guard& operator=(const fd_guard&) = delete;
};

[[noreturn]] void fail(const char* call, const fs::path& p, int err) {
    throw storage_error(fmt::format("{} failed on {}: {}", call, p.string(), std::strerror(err)));
}

// Opens the journal directory without following a symlink, creating it
// (0700) when `create`. Returns -1 when it does not exist and !create.
int open_dir(const fs::path& output_dir, bool create) {
    const fs::path d = dir_of(output_dir);
    if (create && ::mkdir(d.c_str(), 0700) != 0 && errno != EEXIST) fail("mkdir", d, errno);
    const int fd = ::open(d.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT && !create) return -1;
        if (errno == ELOOP || errno == ENOTDIR)
            throw storage_error(fmt::format("{} is not a directory (a symlink?): refusing to use it as daqd's journal",
                                            d.string()));
        fail("open", d, errno);
    }
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
        const int err = errno;
        ::close(fd);
        fail("fstat", d, err);
    }
    if (st.st_uid != ::geteuid()) {
        ::close(fd);
        throw storage_error(fmt::format("{} is owned by uid {}, not by daqd's uid {}: refusing to use it as daqd's journal",
                                        d.string(), st.st_uid, ::geteuid()));
    }
    return fd;
}

}  // namespace

fs::path dir_of(const fs::path& output_dir) { return output_dir / ".daqd-journal"; }

void add(const fs::path& output_dir, const fs::path& file) {
    const std::string name = file.filename().string();
    struct stat st {};
    if (::lstat(file.c_str(), &st) != 0) fail("lstat", file, errno);
    fd_guard dir(open_dir(output_dir, true));
    const fs::path p = dir_of(output_dir) / name;
    // A stale entry of the same name (its file is gone) is replaced, never followed.
    if (::unlinkat(dir.fd, name.c_str(), 0) != 0 && errno != ENOENT) fail("unlink", p, errno);
    fd_guard f(::openat(dir.fd, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (f.fd < 0) fail("open", p, errno);
    const std::string text = fmt::format("{} {} {}\n", ::getpid(), static_cast<unsigned long long>(st.st_dev),
                                         static_cast<unsigned long long>(st.st_ino));
    if (::write(f.fd, text.data(), text.size()) != static_cast<ssize_t>(text.size())) fail("write", p, errno);
    if (::fsync(f.fd) != 0) fail("fsync", p, errno);
    if (::fsync(dir.fd) != 0) fail("fsync", dir_of(output_dir), errno);
}

void remove(const fs::path& output_dir, const fs::path& file) noexcept {
    try {
        fd_guard dir(open_dir(output_dir, false));
        if (dir.fd < 0) return;
        const std::string name = file.filename().string();
        if (::unlinkat(dir.fd, name.c_str(), 0) != 0 && errno != ENOENT) fail("unlink", dir_of(output_dir) / name, errno);
        ::fsync(dir.fd);  // best effort: a lost removal only makes recovery look at a closed file
    } catch (const std::exception& e) {
        spdlog::warn("journal: cannot clear the entry of {}: {}", file.string(), e.what());
    }
}

std::vector<entry> list(const fs::path& output_dir) {
    std::vector<entry> out;
    const int fd = open_dir(output_dir, false);
    if (fd < 0) return out;
    DIR* d = ::fdopendir(fd);
    if (d == nullptr) {
        const int err = errno;
        ::close(fd);
        fail("fdopendir", dir_of(output_dir), err);
    }
    while (const dirent* de = ::readdir(d)) {
        const std::string name = de->d_name;
        if (name.empty() || name[0] == '.') continue;
        const fs::path p = dir_of(output_dir) / name;
        fd_guard f(::openat(::dirfd(d), name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK));
        struct stat st {};
        if (f.fd < 0 || ::fstat(f.fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != ::geteuid()) {
            spdlog::warn("journal: ignoring {}: not a regular file of daqd's user", p.string());
            continue;
        }
        char buf[128] = "";
        const ssize_t n = ::read(f.fd, buf, sizeof buf - 1);
        buf[n > 0 ? n : 0] = '\0';
        std::istringstream in(buf);
        long long pid = 0;
        unsigned long long dev = 0, ino = 0;
        if (!(in >> pid >> dev >> ino)) {
            spdlog::warn("journal: ignoring {}: cannot parse '{}'", p.string(), buf);
            continue;
        }
        out.push_back(entry{name, static_cast<pid_t>(pid), static_cast<dev_t>(dev), static_cast<ino_t>(ino)});
    }
    ::closedir(d);
    std::sort(out.begin(), out.end(), [](const entry& a, const entry& b) { return a.file < b.file; });
    return out;
}

}  // namespace daqd::storage::journal
