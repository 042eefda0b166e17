#pragma once
// The status page's files (web/page/), embedded into the binary at build
// time by web/cmake/embed.cmake. Immutable data: any thread.
#include <string_view>

namespace daqd::web::page {

struct asset {
    std::string_view path;          // "/index.html", "/app.js", …
    std::string_view content_type;
    std::string_view body;
};

// The asset served at `path`, or nullptr.
const asset* find(std::string_view path) noexcept;

}  // namespace daqd::web::page
