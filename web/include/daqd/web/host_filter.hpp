#pragma once
// Which Host header values daqd answers: the defence against DNS rebinding.
// A web page on some other site can make a browser send requests to daqd
// (its name rebound to 127.0.0.1 or to daqd's address) and read the answers
// as if they were its own; such requests always carry the attacker's name in
// Host. daqd answers only names it knows (web/README.md, "Security"):
//   - localhost, 127.0.0.1, ::1 (always);
//   - the http.listen address; listening on 0.0.0.0 or ::, the addresses of
//     this machine's interfaces (taken at start);
//   - off loopback, this machine's name (gethostname);
//   - every entry of http.allowed_hosts ("*": any name).
// Any port matches (the name is what rebinding forges). Names compare
// case-insensitively, a trailing '.' ignored; addresses compare as addresses.
//
// Owner: web::api. Immutable after construction: allows() may run on any
// thread concurrently.
#include "daqd/config/config.hpp"

#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace daqd::web {

class host_filter {
public:
    // Everything [http] allows (see above).
    explicit host_filter(const config::http_config& http);

    // True when a request with this Host header value is answered.
    [[nodiscard]] bool allows(std::string_view host_header) const;
    // The names accepted, sorted (for the log and the 403 answer); "*" if any.
    [[nodiscard]] std::vector<std::string> names() const;

    // The name in a Host header value ("Example.org:8080" -> "example.org",
    // "[::1]:80" -> "::1"), normalised as compared; nullopt when it is not
    // host[:port] (a bare IPv6 address, characters a host name cannot hold).
    static std::optional<std::string> name_of(std::string_view host_header);
    // An allowed_hosts entry or an address, normalised the same way.
    static std::string normalise(std::string_view name);

private:
    std::set<std::string> _names;
    bool _any = false;
};

}  // namespace daqd::web
