#pragma once
// Child processes for end-to-end tests: spawn with output to files, wait
// with a deadline, signal. Test-only; not thread-safe.
#include <arpa/inet.h>
#include <catch2/catch.hpp>
#include <netinet/in.h>
#include <nlohmann/json.hpp>
#include <signal.h>
#include <sys/socket.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace daqd::test {

// A port on 127.0.0.1 that was free a moment ago (SOCK_DGRAM or SOCK_STREAM).
inline std::uint16_t free_port(int type = SOCK_DGRAM) {
    const int fd = ::socket(AF_INET, type, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    socklen_t len = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    ::close(fd);
    return ntohs(a.sin_port);
}

// A fresh directory (with a runs/ inside) under the temp dir, removed at the
// end unless DAQD_KEEP_TEST_FILES is set.
struct scratch_dir {
    std::filesystem::path path;
    explicit scratch_dir(const std::string& name, const std::string& prefix = "daqd-e2e") {
        path = std::filesystem::temp_directory_path() / (prefix + "-" + std::to_string(::getpid()) + "-" + name);
        std::filesystem::remove_all(path);
        std::filesystem::create_directories(path / "runs");
    }
    ~scratch_dir() {
        std::error_code ec;
        if (std::getenv("DAQD_KEEP_TEST_FILES") == nullptr) std::filesystem::remove_all(path, ec);
    }
    scratch_dir(const scratch_dir&) = delete;
    scratch_dir& operator=(const scratch_dir&) = delete;
    std::string operator/(const std::string& f) const { return (path / f).string(); }
};

inline std::string slurp(const std::string& path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

class child {
public:
    child(const std::vector<std::string>& argv, const std::string& out_path, const std::string& err_path)
        : _out(out_path), _err(err_path) {
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_addopen(&fa, 1, out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        posix_spawn_file_actions_addopen(&fa, 2, err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        std::vector<char*> args;
        for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
        args.push_back(nullptr);
        const int rc = posix_spawn(&_pid, args[0], &fa, nullptr, args.data(), environ);
        posix_spawn_file_actions_destroy(&fa);
        if (rc != 0) throw std::runtime_error("posix_spawn " + argv[0] + ": " + std::strerror(rc));
    }
    ~child() {
        if (_pid > 0 && !_status) {
            ::kill(_pid, SIGKILL);
            int st;
            ::waitpid(_pid, &st, 0);
        }
    }
    child(const child&) = delete;
    child& operator=(const child&) = delete;

    // The exit code, or nullopt if it did not exit before the deadline.
    std::optional<int> wait(std::chrono::milliseconds deadline) {
        const auto end = std::chrono::steady_clock::now() + deadline;
        while (!_status) {
            int st = 0;
            const pid_t r = ::waitpid(_pid, &st, WNOHANG);
            if (r == _pid) {
                _status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
                break;
            }
            if (std::chrono::steady_clock::now() > end) return std::nullopt;
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        return _status;
    }
    void signal(int sig) { ::kill(_pid, sig); }
    [[nodiscard]] pid_t pid() const { return _pid; }
    [[nodiscard]] std::string out() const { return slurp(_out); }
    [[nodiscard]] std::string err() const { return slurp(_err); }

    // Waits until the child's stderr contains `text` (or it exits, or the deadline passes).
    bool wait_for_log(const std::string& text, std::chrono::milliseconds deadline) {
        const auto end = std::chrono::steady_clock::now() + deadline;
        while (std::chrono::steady_clock::now() < end) {
            if (err().find(text) != std::string::npos) return true;
            int st = 0;
            if (::waitpid(_pid, &st, WNOHANG) == _pid) {
                _status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
                return err().find(text) != std::string::npos;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        return false;
    }

private:
    pid_t _pid = -1;
    std::optional<int> _status;
    std::string _out, _err;
};

// A JSON file a process wrote (a --summary-json, a daq-sim --json).
inline nlohmann::json read_json(const std::string& path) {
    std::ifstream in(path);
    REQUIRE(in.good());
    return nlohmann::json::parse(in);
}

// Polls pred every 50 ms until it holds or the deadline passes; its last answer.
template <typename Pred>
bool eventually(Pred&& pred, std::chrono::milliseconds deadline) {
    const auto end = std::chrono::steady_clock::now() + deadline;
    while (std::chrono::steady_clock::now() < end) {
        if (pred()) return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return pred();
}

// Runs a command to completion (deadline), returning {exit code, stdout}.
inline std::pair<int, std::string> run(const std::vector<std::string>& argv, const std::string& scratch,
                                       std::chrono::milliseconds deadline = std::chrono::seconds(120)) {
    child c(argv, scratch + ".out", scratch + ".err");
    auto rc = c.wait(deadline);
    if (!rc) throw std::runtime_error(argv[0] + " did not finish in time");
    return {*rc, c.out() + c.err()};
}

}  // namespace daqd::test
