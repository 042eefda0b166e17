// Fuzz target: the TOML configuration loader (config/, docs/CONFIG.md).
//
// The input is the text of a configuration file. load_string() either throws
// config::config_error (the documented error type: its message names the key
// and line) or returns a configuration; any other exception, a crash or
// undefined behaviour is a bug. A configuration that loads must also
//  - pass config::validate() (what --check-config and daqd rely on),
//  - carry text == to_toml(c, /*hide_secrets=*/true),
//  - round-trip: load_string(to_toml(c)) gives the same configuration, and
//    rendering that again gives the same text (config.hpp promises this).
#include "daqd/config/config.hpp"
#include "fuzz_check.hpp"

#include <cstddef>
#include <cstdint>
#include <exception>
#include <string>
#include <string_view>
#include <typeinfo>

namespace cfg = daqd::config;

namespace {

// toml++ 3.3.0 (Debian 12) reaches __builtin_unreachable() in
// is_non_ascii_horizontal_whitespace() for code points U+00A0..U+FEFF whose
// block of 0x3FA its lookup table does not handle (upstream
// marzer/tomlplusplus#190 and #295, fixed by #305): undefined behaviour in the
// third-party parser that daqd cannot fix, so such inputs are skipped. This
// is that function's own test, on every code point of the text (whether the
// parser would ask or not).
bool hits_toml_unicode_bug(std::string_view s) {
    auto affected = [](char32_t c) {
        if (c < 0xA0 || c > 0xFEFF) return false;
        const auto block = (static_cast<std::uint64_t>(c) - 0xA0u) / 0x3FAu;
        if ((1ull << block) & 0x7FFFFFFFFFFFF75Eull) return false;
        if (c == 0xA0 || c == 0x3000 || c == 0xFEFF) return false;
        return block != 0x05 && block != 0x07;
    };
    for (std::size_t i = 0; i < s.size(); ++i) {
        const auto b = static_cast<unsigned char>(s[i]);
        auto cont = [&](std::size_t k) {
            return i + k < s.size() && (static_cast<unsigned char>(s[i + k]) & 0xC0) == 0x80;
        };
        char32_t c = 0;
        if (b >= 0xC2 && b <= 0xDF && cont(1)) {
            c = static_cast<char32_t>(((b & 0x1Fu) << 6) | (static_cast<unsigned char>(s[i + 1]) & 0x3Fu));
        } else if (b >= 0xE0 && b <= 0xEF && cont(1) && cont(2)) {
            c = static_cast<char32_t>(((b & 0x0Fu) << 12) | ((static_cast<unsigned char>(s[i + 1]) & 0x3Fu) << 6) |
                                      (static_cast<unsigned char>(s[i + 2]) & 0x3Fu));
        } else {
            continue;
        }
        if (affected(c)) return true;
    }
    return false;
}

[[noreturn]] void unexpected(const char* where, const std::exception* e) {
    daqd_fuzz::fail(where, __FILE__, __LINE__,
                    e ? std::string("unexpected exception ") + typeid(*e).name() + ": " + e->what()
                      : std::string("unexpected exception that is not a std::exception"));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    if (hits_toml_unicode_bug(text)) return 0;
    cfg::config c;
    try {
        c = cfg::load_string(text, "fuzz.toml");
    } catch (const cfg::config_error& e) {
        FUZZ_CHECK(e.what() != nullptr && e.what()[0] != '\0', "a config_error without a message");
        return 0;  // the documented way to reject a file
    } catch (const std::exception& e) {
        unexpected("load_string threw something other than config_error", &e);
    } catch (...) {
        unexpected("load_string threw something other than config_error", nullptr);
    }

    FUZZ_CHECK(c.source == "fuzz.toml");
    try {
        c.validate();
    } catch (const std::exception& e) {
        unexpected("a loaded configuration fails config::validate()", &e);
    }
    FUZZ_CHECK(c.text == cfg::to_toml(c, true), "config.text is not the rendered configuration");

    const std::string full = cfg::to_toml(c);
    cfg::config again;
    try {
        again = cfg::load_string(full, c.source);
    } catch (const std::exception& e) {
        daqd_fuzz::fail("to_toml(c) does not load again", __FILE__, __LINE__,
                        std::string(e.what()) + "\n--- rendered:\n" + full);
    }
    FUZZ_CHECK(again == c, "the configuration changed through to_toml and load_string\n--- rendered:\n" + full +
                               "--- rendered again:\n" + cfg::to_toml(again));
    FUZZ_CHECK(cfg::to_toml(again) == full);
    return 0;
}
