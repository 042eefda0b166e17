// Which Host header values daqd answers (host_filter.hpp).
#include "daqd/web/host_filter.hpp"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>

namespace daqd::web {

namespace {

// The canonical text of an IPv4 or IPv6 address, or nullopt.
std::optional<std::string> canonical_address(const std::string& text) {
    std::array<char, INET6_ADDRSTRLEN> out{};
    in_addr v4{};
    if (inet_pton(AF_INET, text.c_str(), &v4) == 1 && inet_ntop(AF_INET, &v4, out.data(), out.size()))
        return std::string(out.data());
    in6_addr v6{};
    if (inet_pton(AF_INET6, text.c_str(), &v6) == 1 && inet_ntop(AF_INET6, &v6, out.data(), out.size()))
        return std::string(out.data());
    return std::nullopt;
}

bool name_char(char ch) {
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' ||
           ch == '-' || ch == '_';
}

// The addresses of this machine's interfaces (for a wildcard listen address).
std::vector<std::string> interface_addresses() {
    std::vector<std::string> out;
    ifaddrs* list = nullptr;
    if (::getifaddrs(&list) != 0) return out;
    for (const ifaddrs* i = list; i != nullptr; i = i->ifa_next) {
        if (i->ifa_addr == nullptr) continue;
        std::array<char, INET6_ADDRSTRLEN> text{};
        if (i->ifa_addr->sa_family == AF_INET) {
            const auto* a = reinterpret_cast<const sockaddr_in*>(i->ifa_addr);
            if (inet_ntop(AF_INET, &a->sin_addr, text.data(), text.size())) out.emplace_back(text.data());
        } else if (i->ifa_addr->sa_family == AF_INET6) {
            const auto* a = reinterpret_cast<const sockaddr_in6*>(i->ifa_addr);
            if (inet_ntop(AF_INET6, &a->sin6_addr, text.data(), text.size())) out.emplace_back(text.data());
        }
    }
    ::freeifaddrs(list);
    return out;
}

}  // namespace

std::string host_filter::normalise(std::string_view name) {
    std::string s(name);
    if (s.size() >= 2 && s.front() == '[' && s.back() == ']') s = s.substr(1, s.size() - 2);
    if (auto a = canonical_address(s)) return *a;
    for (auto& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    while (!s.empty() && s.back() == '.') s.pop_back();  // "localhost." is "localhost"
    return s;
}

std::optional<std::string> host_filter::name_of(std::string_view h) {
    std::string_view name = h;
    std::string_view port;
    if (!h.empty() && h.front() == '[') {
        const auto close = h.find(']');
        if (close == std::string_view::npos) return std::nullopt;
        const std::string inner(h.substr(1, close - 1));
        in6_addr v6{};
        if (inet_pton(AF_INET6, inner.c_str(), &v6) != 1) return std::nullopt;
        const std::string_view rest = h.substr(close + 1);
        if (!rest.empty()) {
            if (rest.front() != ':') return std::nullopt;
            port = rest.substr(1);
        }
        name = h.substr(0, close + 1);
    } else {
        const auto colon = h.find(':');
        if (colon != std::string_view::npos) {
            if (h.find(':', colon + 1) != std::string_view::npos) return std::nullopt;  // IPv6 needs brackets
            name = h.substr(0, colon);
            port = h.substr(colon + 1);
            if (port.empty()) return std::nullopt;
        }
        if (name.empty() || !std::all_of(name.begin(), name.end(), name_char)) return std::nullopt;
    }
    if (port.size() > 5 || !std::all_of(port.begin(), port.end(), [](char ch) { return ch >= '0' && ch <= '9'; }))
        return std::nullopt;
    return normalise(name);
}

host_filter::host_filter(const config::http_config& http) {
    for (const char* n : {"localhost", "127.0.0.1", "::1"}) _names.insert(normalise(n));
    if (!http.listen.empty()) {
        try {
            const auto ep = config::endpoint::parse(http.listen, "http.listen");
            const std::string host = normalise(ep.host);
            if (host == "0.0.0.0" || host == "::") {
                for (const auto& a : interface_addresses()) _names.insert(normalise(a));
            } else {
                _names.insert(host);
            }
            if (!config::is_loopback(ep.host)) {
                std::array<char, 256> name{};
                if (::gethostname(name.data(), name.size() - 1) == 0 && name[0] != '\0')
                    _names.insert(normalise(name.data()));
            }
        } catch (const config::config_error&) {
            // Validated at load; an unparsable address adds nothing.
        }
    }
    for (const auto& h : http.allowed_hosts) {
        if (h == "*")
            _any = true;
        else
            _names.insert(normalise(h));
    }
}

bool host_filter::allows(std::string_view host_header) const {
    if (_any) return true;
    const auto name = name_of(host_header);
    return name && _names.count(*name) > 0;
}

std::vector<std::string> host_filter::names() const {
    if (_any) return {"*"};
    return {_names.begin(), _names.end()};
}

}  // namespace daqd::web
