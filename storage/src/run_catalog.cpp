// The runs on disk (run_catalog.hpp). HDF5 is only touched in read_file(),
// which daqd runs in a helper process per file (helper_reader).
#include "daqd/storage/run_catalog.hpp"

#include "daqd/storage/h5.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <iostream>

extern char** environ;

namespace daqd::storage {

namespace fs = std::filesystem;

namespace {

std::string read_string_attr(hid_t obj, const char* name) {
    if (H5Aexists(obj, name) <= 0) {
        H5Eclear2(H5E_DEFAULT);
        return {};
    }
    h5::attribute a(H5Aopen(obj, name, H5P_DEFAULT));
    if (!a) return {};
    h5::datatype ft(H5Aget_type(a.get()));
    if (!ft || H5Tget_class(ft.get()) != H5T_STRING) return {};
    h5::datatype mt(H5Tcopy(H5T_C_S1));
    H5Tset_cset(mt.get(), H5Tget_cset(ft.get()));
    if (H5Tis_variable_str(ft.get()) > 0) {
        H5Tset_size(mt.get(), H5T_VARIABLE);
        char* p = nullptr;
        if (H5Aread(a.get(), mt.get(), &p) < 0) return {};
        std::string s = p != nullptr ? p : "";
        H5free_memory(p);
        return s;
    }
    const std::size_t size = H5Tget_size(ft.get());
    if (size == 0) return {};
    H5Tset_size(mt.get(), size);
    std::string s(size, '\0');
    if (H5Aread(a.get(), mt.get(), s.data()) < 0) return {};
    while (!s.empty() && s.back() == '\0') s.pop_back();
    return s;
}

}  // namespace

run_catalog::run_catalog(fs::path output_dir) : _dir(std::move(output_dir)) {}

std::optional<std::string> run_catalog::run_of_file(const std::string& file_name, bool& series) {
    series = false;
    const std::string suffix = ".h5";
    if (file_name.size() <= suffix.size() || file_name.front() == '.' ||
        file_name.compare(file_name.size() - suffix.size(), suffix.size(), suffix) != 0)
        return std::nullopt;
    const std::string calib = ".calib.h5";  // pedestal runs' calibration files (docs/CALIBRATION.md)
    if (file_name.size() > calib.size() && file_name.compare(file_name.size() - calib.size(), calib.size(), calib) == 0)
        return std::nullopt;
    const std::string stem = file_name.substr(0, file_name.size() - suffix.size());
    const auto us = stem.rfind('_');
    if (us != std::string::npos && us > 0 && stem.size() - us - 1 >= 5 &&
        std::all_of(stem.begin() + static_cast<std::ptrdiff_t>(us) + 1, stem.end(),
                    [](char c) { return c >= '0' && c <= '9'; })) {
        series = true;
        return stem.substr(0, us);
    }
    return stem;
}

bool run_catalog::exists(const std::string& name) const { return !files_of(name).empty(); }

std::vector<fs::path> run_catalog::files_of(const std::string& name) const {
    std::vector<fs::path> out;
    std::error_code ec;
    for (fs::directory_iterator it(_dir, ec), end; !ec && it != end; it.increment(ec)) {
        bool series = false;
        const std::string f = it->path().filename().string();
        const auto run = run_of_file(f, series);
        if (run && *run == name) out.push_back(it->path());
        // A single-file run whose name looks like a series ("beam_00001.h5").
        else if (f == name + ".h5") out.push_back(it->path());
    }
    std::sort(out.begin(), out.end());
    return out;
}

run_file_entry run_catalog::read_file(const fs::path& path) {
    run_file_entry e;
    e.file = path.filename().string();
    std::error_code ec;
    e.size_bytes = fs::file_size(path, ec);
    h5::init_library();
    // A file written by another process may be open for SWMR writing.
    const auto fapl = h5::swmr_read_access(path.string());
    hid_t id = H5Fopen(path.c_str(), H5F_ACC_RDONLY | H5F_ACC_SWMR_READ, fapl.get());
    if (id < 0) {
        H5Eclear2(H5E_DEFAULT);
        id = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    }
    if (id < 0) {
        e.error = "cannot open: " + h5::error_stack();
        return e;
    }
    h5::file f(id);
    e.format = read_string_attr(f.get(), "format");
    e.run_name = read_string_attr(f.get(), "run_name");
    e.started_at = read_string_attr(f.get(), "started_at");
    e.stopped_at = read_string_attr(f.get(), "stopped_at");
    e.data_source = read_string_attr(f.get(), "data_source");
    e.compression = read_string_attr(f.get(), "compression");
    e.server_version = read_string_attr(f.get(), "server_version");
    if (H5Lexists(f.get(), "units", H5P_DEFAULT) > 0) {
        h5::group g(H5Gopen2(f.get(), "units", H5P_DEFAULT));
        H5G_info_t gi{};
        if (g && H5Gget_info(g.get(), &gi) >= 0) {
            for (hsize_t i = 0; i < gi.nlinks; ++i) {
                char name[64] = "";
                if (H5Lget_name_by_idx(g.get(), ".", H5_INDEX_NAME, H5_ITER_INC, i, name, sizeof name, H5P_DEFAULT) < 0)
                    continue;
                const std::string raw = std::string(name) + "/raw";
                if (H5Lexists(g.get(), name, H5P_DEFAULT) <= 0 || H5Lexists(g.get(), raw.c_str(), H5P_DEFAULT) <= 0)
                    continue;
                h5::dataset d(H5Dopen2(g.get(), raw.c_str(), H5P_DEFAULT));
                if (!d) continue;
                h5::dataspace s(H5Dget_space(d.get()));
                hsize_t dims[2] = {0, 0};
                if (s && H5Sget_simple_extent_ndims(s.get()) == 2 && H5Sget_simple_extent_dims(s.get(), dims, nullptr) == 2)
                    e.frames += dims[0];
            }
        }
    }
    H5Eclear2(H5E_DEFAULT);
    e.read = true;
    return e;
}

std::vector<run_entry> run_catalog::list(const std::optional<std::string>& active_run, const file_reader& reader) {
    struct found {
        std::string file;
        std::string run;
        std::uint64_t size;
        fs::file_time_type mtime;
    };
    std::vector<found> files;
    std::error_code ec;
    for (fs::directory_iterator it(_dir, ec), end; !ec && it != end; it.increment(ec)) {
        std::error_code e2;
        if (!it->is_regular_file(e2)) continue;
        bool series = false;
        const std::string f = it->path().filename().string();
        auto run = run_of_file(f, series);
        if (!run) continue;
        // The active run's single file may look like a series: trust the name.
        if (active_run && f == *active_run + ".h5") run = *active_run;
        files.push_back({f, *run, it->file_size(e2), it->last_write_time(e2)});
    }
    std::sort(files.begin(), files.end(), [](const found& a, const found& b) { return a.file < b.file; });

    // Read what is not cached (closed files only), on the HDF5 thread.
    std::vector<std::string> to_read;
    for (const auto& f : files) {
        if (active_run && f.run == *active_run) continue;
        const auto it = _cache.find(f.file);
        if (it != _cache.end() && it->second.size == f.size && it->second.mtime == f.mtime) continue;
        if (to_read.size() < max_reads_per_list) to_read.push_back(f.file);
    }
    if (!to_read.empty()) {
        std::vector<fs::path> paths;
        for (const auto& f : to_read) paths.push_back(_dir / f);
        try {
            auto read = reader ? reader(paths) : read_in_process(paths);
            if (read.size() != to_read.size()) throw std::runtime_error("the reader returned a wrong number of entries");
            for (std::size_t i = 0; i < to_read.size(); ++i) {
                const auto f = std::find_if(files.begin(), files.end(), [&](const found& x) { return x.file == to_read[i]; });
                _cache[to_read[i]] = cached{f->size, f->mtime, std::move(read[i])};
            }
        } catch (const std::exception& e) {
            spdlog::debug("run catalogue: reading run files failed: {}", e.what());
        }
    }
    // Forget files that are gone.
    for (auto it = _cache.begin(); it != _cache.end();) {
        const bool present = std::any_of(files.begin(), files.end(), [&](const found& f) { return f.file == it->first; });
        it = present ? std::next(it) : _cache.erase(it);
    }

    std::map<std::string, run_entry> runs;
    for (const auto& f : files) {
        run_file_entry e;
        const bool active = active_run && f.run == *active_run;
        const auto it = _cache.find(f.file);
        if (!active && it != _cache.end() && it->second.size == f.size && it->second.mtime == f.mtime) e = it->second.entry;
        if (e.read && !e.format.empty() && e.format != "daq1-run") continue;  // another kind of HDF5 file
        if (!e.read && !e.error.empty()) spdlog::debug("run catalogue: run file {} unreadable: {}", f.file, e.error);
        e.file = f.file;
        e.size_bytes = f.size;
        const std::string name = !active && e.read && !e.run_name.empty() ? e.run_name : f.run;
        auto& r = runs[name];
        r.name = name;
        r.active = r.active || active;
        r.size_bytes += f.size;
        r.frames += e.frames;
        r.complete = r.complete && e.read;
        r.modified = std::max(r.modified, f.mtime);
        r.files.push_back(std::move(e));
    }
    std::vector<run_entry> out;
    for (auto& [name, r] : runs) {
        if (!r.files.empty()) {
            r.started_at = r.files.front().started_at;
            r.stopped_at = r.files.back().stopped_at;
        }
        out.push_back(std::move(r));
    }
    std::sort(out.begin(), out.end(), [](const run_entry& a, const run_entry& b) {
        return a.modified != b.modified ? a.modified > b.modified : a.name < b.name;
    });
    return out;
}

std::vector<run_file_entry> run_catalog::read_in_process(const std::vector<fs::path>& paths) {
    std::vector<run_file_entry> out;
    out.reserve(paths.size());
    for (const auto& p : paths) out.push_back(read_file(p));
    return out;
}

int run_catalog::helper_main(const char* path) {
    // Whatever happens inside HDF5, this process ends well before the parent
    // gives up on it (which kills it anyway).
    ::alarm(static_cast<unsigned>(read_deadline.count() / 1000 + 2));
    // Fault injection for the tests (docs/RELIABILITY.md): a file of this
    // name hangs its reader, as HDF5 can on a damaged file.
    if (const char* hang = std::getenv("DAQD_FAULT_READ_HANG");
        hang != nullptr && *hang != '\0' && fs::path(path).filename() == hang)
        for (;;) ::pause();
    const auto e = read_file(path);
    nlohmann::json j{{"read", e.read},     {"error", e.error},           {"format", e.format},
                     {"run_name", e.run_name}, {"frames", e.frames},     {"started_at", e.started_at},
                     {"stopped_at", e.stopped_at}, {"data_source", e.data_source}, {"compression", e.compression},
                     {"server_version", e.server_version}};
    std::cout << j.dump() << std::endl;
    return 0;
}

run_catalog::file_reader run_catalog::helper_reader(fs::path exe, std::chrono::milliseconds deadline) {
    return [exe = std::move(exe), deadline](const std::vector<fs::path>& paths) {
        struct job {
            pid_t pid = -1;
            int out = -1;  // read end of the child's stdout
            std::string text;
            bool done = false;  // stdout closed
            int status = -1;
        };
        std::vector<run_file_entry> result(paths.size());
        std::vector<job> jobs(paths.size());
        const auto end = std::chrono::steady_clock::now() + deadline;
        for (std::size_t i = 0; i < paths.size(); ++i) {
            result[i].file = paths[i].filename().string();
            std::error_code ec;
            result[i].size_bytes = fs::file_size(paths[i], ec);
            int fds[2];
            if (::pipe2(fds, O_CLOEXEC) != 0) {
                result[i].error = fmt::format("cannot read: pipe2 failed: {}", std::strerror(errno));
                continue;
            }
            posix_spawn_file_actions_t fa;
            posix_spawn_file_actions_init(&fa);
            posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
            posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
            posix_spawn_file_actions_addclosefrom_np(&fa, 3);  // no socket or ring of daqd's in the helper
            posix_spawnattr_t attr;
            posix_spawnattr_init(&attr);
            sigset_t none;
            sigemptyset(&none);
            posix_spawnattr_setsigmask(&attr, &none);  // daqd blocks SIGTERM in every thread; the helper must not
            posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
            const std::string path = paths[i].string();
            char* argv[] = {const_cast<char*>(exe.c_str()), const_cast<char*>(helper_flag), const_cast<char*>(path.c_str()),
                            nullptr};
            const int rc = ::posix_spawn(&jobs[i].pid, exe.c_str(), &fa, &attr, argv, environ);
            posix_spawn_file_actions_destroy(&fa);
            posix_spawnattr_destroy(&attr);
            ::close(fds[1]);
            if (rc != 0) {
                ::close(fds[0]);
                jobs[i].pid = -1;
                result[i].error = fmt::format("cannot read: posix_spawn {} failed: {}", exe.string(), std::strerror(rc));
                continue;
            }
            jobs[i].out = fds[0];
        }
        // Collect the answers until every helper is done or the deadline passes.
        for (;;) {
            std::vector<pollfd> pfds;
            std::vector<std::size_t> which;
            for (std::size_t i = 0; i < jobs.size(); ++i)
                if (jobs[i].out >= 0 && !jobs[i].done) {
                    pfds.push_back({jobs[i].out, POLLIN, 0});
                    which.push_back(i);
                }
            if (pfds.empty()) break;
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now());
            if (left.count() <= 0) break;
            const int n = ::poll(pfds.data(), pfds.size(), static_cast<int>(left.count()));
            if (n < 0 && errno != EINTR) break;
            for (std::size_t k = 0; k < pfds.size(); ++k) {
                if (pfds[k].revents == 0) continue;
                auto& j = jobs[which[k]];
                char buf[4096];
                const ssize_t got = ::read(j.out, buf, sizeof buf);
                if (got > 0)
                    j.text.append(buf, static_cast<std::size_t>(got));
                else if (got == 0 || (errno != EINTR && errno != EAGAIN))
                    j.done = true;
            }
        }
        for (std::size_t i = 0; i < jobs.size(); ++i) {
            auto& j = jobs[i];
            if (j.pid < 0) continue;
            if (!j.done) ::kill(j.pid, SIGKILL);
            int st = 0;
            while (::waitpid(j.pid, &st, 0) < 0 && errno == EINTR) {
            }
            ::close(j.out);
            auto& e = result[i];
            if (!j.done) {
                e.error = fmt::format("unreadable: no answer within {} ms (a damaged HDF5 file can make the library "
                                      "retry forever)",
                                      deadline.count());
                continue;
            }
            try {
                const auto v = nlohmann::json::parse(j.text);
                e.read = v.at("read").get<bool>();
                e.error = v.at("error").get<std::string>();
                e.format = v.at("format").get<std::string>();
                e.run_name = v.at("run_name").get<std::string>();
                e.frames = v.at("frames").get<std::uint64_t>();
                e.started_at = v.at("started_at").get<std::string>();
                e.stopped_at = v.at("stopped_at").get<std::string>();
                e.data_source = v.value("data_source", "");
                e.compression = v.value("compression", "");
                e.server_version = v.value("server_version", "");
            } catch (const std::exception&) {
                e.read = false;
                e.error = WIFSIGNALED(st) ? fmt::format("unreadable: the reader died of signal {} ({})", WTERMSIG(st),
                                                        strsignal(WTERMSIG(st)))
                                          : fmt::format("unreadable: the reader exited with status {} and no answer",
                                                        WIFEXITED(st) ? WEXITSTATUS(st) : -1);
            }
        }
        return result;
    };
}

}  // namespace daqd::storage
