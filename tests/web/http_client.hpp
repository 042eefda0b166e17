#pragma once
// A minimal HTTP/1.1 client over a plain socket, for the [web] tests (no
// curl, no Beast on the client side: what goes over the wire is exactly
// what the test wrote).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cctype>
#include <chrono>
#include <cstring>
#include <algorithm>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>

namespace web_test {

struct http_reply {
    int status = 0;
    std::map<std::string, std::string> headers;  // names lower-case
    std::string body;
};

inline int connect_to(std::uint16_t port) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw std::runtime_error("socket");
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
        ::close(fd);
        throw std::runtime_error("connect to 127.0.0.1:" + std::to_string(port) + ": " + std::strerror(errno));
    }
    return fd;
}

// How many complete responses (head + Content-Length body) `raw` holds.
inline std::size_t complete_responses(const std::string& raw) {
    std::size_t n = 0, pos = 0;
    for (;;) {
        const auto head_end = raw.find("\r\n\r\n", pos);
        if (head_end == std::string::npos) return n;
        std::size_t length = 0;
        std::string head = raw.substr(pos, head_end - pos);
        for (auto& c : head) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        const auto cl = head.find("\r\ncontent-length:");
        if (cl != std::string::npos) length = std::stoul(head.substr(cl + 17));
        if (raw.size() < head_end + 4 + length) return n;
        ++n;
        pos = head_end + 4 + length;
    }
}

// Sends raw bytes, reads until `responses` complete responses came, the
// peer closes, or the deadline passes.
inline std::string exchange_raw(std::uint16_t port, const std::string& raw, std::size_t responses = 1,
                                std::chrono::milliseconds deadline = std::chrono::seconds(20)) {
    const int fd = connect_to(port);
    std::size_t sent = 0;
    while (sent < raw.size()) {
        const ssize_t n = ::send(fd, raw.data() + sent, raw.size() - sent, MSG_NOSIGNAL);
        if (n <= 0) break;  // the server may answer and close before reading everything
        sent += static_cast<std::size_t>(n);
    }
    // No half-close: Go servers (Prometheus) take it for a client gone and
    // cancel the request. Every request here ends the connection itself
    // (Connection: close, or an error the server answers and closes on).
    std::string out;
    const auto end = std::chrono::steady_clock::now() + deadline;
    char buf[65536];
    for (;;) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now());
        if (left.count() <= 0) break;
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) break;
        const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n <= 0) break;
        out.append(buf, static_cast<std::size_t>(n));
        if (complete_responses(out) >= responses) break;
    }
    ::close(fd);
    return out;
}

// Parses the first response in `raw`.
inline http_reply parse_reply(const std::string& raw) {
    http_reply r;
    const auto head_end = raw.find("\r\n\r\n");
    if (raw.compare(0, 9, "HTTP/1.1 ") != 0 || head_end == std::string::npos) return r;
    r.status = std::stoi(raw.substr(9, 3));
    std::size_t pos = raw.find("\r\n") + 2;
    while (pos < head_end) {
        const auto eol = raw.find("\r\n", pos);
        const std::string line = raw.substr(pos, eol - pos);
        const auto colon = line.find(':');
        if (colon != std::string::npos) {
            std::string name = line.substr(0, colon);
            for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
            std::string value = line.substr(colon + 1);
            while (!value.empty() && value.front() == ' ') value.erase(0, 1);
            r.headers[name] = value;
        }
        pos = eol + 2;
    }
    std::size_t length = raw.size() - head_end - 4;
    if (auto it = r.headers.find("content-length"); it != r.headers.end()) length = std::stoul(it->second);
    r.body = raw.substr(head_end + 4, length);
    return r;
}

// The value of one series in Prometheus text (`name` or `name{labels}`,
// exactly as exposed), or -1 when it is absent.
inline double metric(const std::string& text, const std::string& series) {
    const std::string key = series + " ";
    for (std::size_t pos = 0; pos < text.size();) {
        const auto eol = text.find('\n', pos);
        const std::string line = text.substr(pos, eol == std::string::npos ? std::string::npos : eol - pos);
        if (line.compare(0, key.size(), key) == 0) return std::stod(line.substr(key.size()));
        if (eol == std::string::npos) break;
        pos = eol + 1;
    }
    return -1;
}

// Sends all of `data` on a connected socket; false if the peer is gone.
inline bool send_all(int fd, const std::string& data) {
    std::size_t sent = 0;
    while (sent < data.size()) {
        const ssize_t n = ::send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
        if (n <= 0) return false;
        sent += static_cast<std::size_t>(n);
    }
    return true;
}

// True when the peer closes `fd` (end of stream or reset) within `deadline`;
// whatever it sends meanwhile is read and dropped.
inline bool closed_within(int fd, std::chrono::milliseconds deadline) {
    const auto end = std::chrono::steady_clock::now() + deadline;
    char buf[4096];
    for (;;) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now());
        pollfd p{fd, POLLIN, 0};
        const int r = ::poll(&p, 1, static_cast<int>(std::max<std::int64_t>(0, left.count())));
        if (r < 0) return false;
        if (r == 0) return false;  // nothing before the deadline
        const ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) return true;
    }
}

inline http_reply http(std::uint16_t port, const std::string& method, const std::string& target,
                       const std::string& body = "", const std::string& token = "") {
    std::string req = method + " " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n";
    if (!token.empty()) req += "Authorization: Bearer " + token + "\r\n";
    if (!body.empty() || method == "POST")
        req += "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
    req += "\r\n" + body;
    return parse_reply(exchange_raw(port, req));
}

}  // namespace web_test
