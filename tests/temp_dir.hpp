#pragma once
// A fresh directory under the system temp dir (mkdtemp), removed at scope exit.
#include <stdlib.h>

#include <filesystem>
#include <stdexcept>
#include <string>

namespace daqd_test {

class temp_dir {
public:
    explicit temp_dir(const std::string& prefix = "daqd_test") {
        std::string name = (std::filesystem::temp_directory_path() / (prefix + "_")).string();
        name.append(6, 'X');  // mkdtemp's unique part
        if (::mkdtemp(name.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
        _path = name;
    }
    ~temp_dir() {
        std::error_code ec;
        std::filesystem::permissions(_path, std::filesystem::perms::owner_all, std::filesystem::perm_options::add, ec);
        std::filesystem::remove_all(_path, ec);
    }
    temp_dir(const temp_dir&) = delete;
    temp_dir& operator=(const temp_dir&) = delete;
    [[nodiscard]] const std::filesystem::path& path() const noexcept { return _path; }

private:
    std::filesystem::path _path;
};

}  // namespace daqd_test
