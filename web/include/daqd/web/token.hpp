#pragma once
// The bearer token of the control API: generated, written to a file only the
// owner can read, read from a file, compared in constant time.
//
// Free functions without state: any thread. setup_token() runs once at start
// (daqd's main thread).
#include "daqd/config/config.hpp"

#include <filesystem>
#include <string>
#include <string_view>

namespace daqd::web {

// 32 lowercase hex digits from /dev/urandom (throws std::runtime_error).
std::string generate_token();
// Writes `token` + newline to `path` with mode 0600, replacing the file
// atomically (temporary file + rename; symbolic links are not followed).
void write_token_file(const std::filesystem::path& path, const std::string& token);
// The first line of `path`, surrounding white space removed (throws when
// unreadable or empty).
std::string read_token_file(const std::filesystem::path& path);
// Compares without an early exit on the first differing byte.
bool token_equals(std::string_view given, std::string_view expected) noexcept;
// "Bearer <token>" -> token; anything else -> "".
std::string_view bearer_token(std::string_view authorization) noexcept;

struct token_setup {
    std::string token;
    std::filesystem::path file;  // where it was written or read; empty for http.token
    bool generated = false;      // written by us (and removed at exit)
};
// http.token, else http.token_file, else a generated token written to
// <output_dir>/.daqd-token (the directory is created). Throws std::runtime_error.
token_setup setup_token(const config::config& cfg);

}  // namespace daqd::web
