// The control API's bearer token (token.hpp).
#include "daqd/web/token.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <stdexcept>

namespace daqd::web {

namespace fs = std::filesystem;

std::string generate_token() {
    unsigned char raw[16];
    const int fd = ::open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw std::runtime_error(fmt::format("cannot open /dev/urandom: {}", std::strerror(errno)));
    std::size_t got = 0;
    while (got < sizeof raw) {
        const ssize_t n = ::read(fd, raw + got, sizeof raw - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            const int err = errno;
            ::close(fd);
            throw std::runtime_error(fmt::format("cannot read /dev/urandom: {}", std::strerror(err)));
        }
        got += static_cast<std::size_t>(n);
    }
    ::close(fd);
    static constexpr char hex[] = "0123456789abcdef";
    std::string t;
    for (unsigned char b : raw) {
        t += hex[b >> 4];
        t += hex[b & 15];
    }
    return t;
}

void write_token_file(const fs::path& path, const std::string& token) {
    const fs::path tmp = path.parent_path() / (path.filename().string() + fmt::format(".tmp-{}", ::getpid()));
    ::unlink(tmp.c_str());
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) throw std::runtime_error(fmt::format("cannot create {}: {}", tmp.string(), std::strerror(errno)));
    const std::string text = token + "\n";
    bool ok = ::fchmod(fd, 0600) == 0;  // whatever the umask
    std::size_t done = 0;
    while (ok && done < text.size()) {
        const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) ok = false;
        else done += static_cast<std::size_t>(n);
    }
    const int err = errno;
    if (::close(fd) != 0) ok = false;
    if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) {
        const int e = ok ? errno : err;
        ::unlink(tmp.c_str());
        throw std::runtime_error(fmt::format("cannot write {}: {}", path.string(), std::strerror(e)));
    }
}

std::string read_token_file(const fs::path& path) {
    std::ifstream in(path);
    if (!in) throw std::runtime_error(fmt::format("cannot read http.token_file {}: {}", path.string(), std::strerror(errno)));
    std::string line;
    std::getline(in, line);
    const auto first = line.find_first_not_of(" \t\r\n");
    const auto last = line.find_last_not_of(" \t\r\n");
    if (first == std::string::npos) throw std::runtime_error(fmt::format("http.token_file {} is empty", path.string()));
    std::string t = line.substr(first, last - first + 1);
    if (t.size() < 16) throw std::runtime_error(fmt::format("the token in http.token_file {} is shorter than 16 characters", path.string()));
    struct stat st{};
    if (::stat(path.c_str(), &st) == 0 && (st.st_mode & 077) != 0)
        spdlog::warn("http.token_file {} can be read by others (mode {:o}): chmod 600 {}", path.string(),
                     st.st_mode & 0777, path.string());
    return t;
}

bool token_equals(std::string_view given, std::string_view expected) noexcept {
    // Every byte of `expected` is looked at whatever `given` holds.
    unsigned char diff = given.size() == expected.size() ? 0 : 1;
    for (std::size_t i = 0; i < expected.size(); ++i) {
        const unsigned char g = i < given.size() ? static_cast<unsigned char>(given[i]) : 0;
        diff |= static_cast<unsigned char>(g ^ static_cast<unsigned char>(expected[i]));
    }
    return diff == 0 && !expected.empty();
}

std::string_view bearer_token(std::string_view authorization) noexcept {
    constexpr std::string_view scheme = "Bearer ";
    if (authorization.size() <= scheme.size()) return {};
    for (std::size_t i = 0; i < scheme.size(); ++i) {
        const char a = authorization[i];
        const char b = scheme[i];
        if ((a | 0x20) != (b | 0x20)) return {};  // the scheme is case-insensitive
    }
    std::string_view t = authorization.substr(scheme.size());
    while (!t.empty() && t.front() == ' ') t.remove_prefix(1);
    while (!t.empty() && (t.back() == ' ' || t.back() == '\t')) t.remove_suffix(1);
    return t;
}

token_setup setup_token(const config::config& cfg) {
    token_setup s;
    if (!cfg.http.token.empty()) {
        s.token = cfg.http.token;
        return s;
    }
    if (!cfg.http.token_file.empty()) {
        s.file = cfg.http.token_file;
        s.token = read_token_file(s.file);
        return s;
    }
    std::error_code ec;
    fs::create_directories(cfg.storage.output_dir, ec);
    if (ec)
        throw std::runtime_error(fmt::format("cannot create output directory {} for the token file: {}",
                                             cfg.storage.output_dir.string(), ec.message()));
    s.file = cfg.storage.output_dir / ".daqd-token";
    s.token = generate_token();
    write_token_file(s.file, s.token);
    s.generated = true;
    return s;
}

}  // namespace daqd::web
