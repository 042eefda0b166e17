#pragma once
// A pedestal run started over the control API (POST /api/v1/runs with
// "kind": "pedestal") while daqd serves, with no restart and whatever
// processing.stages says: the writer thread hands it every frame it takes
// while no run file is open (storage::frame_sink), and it accumulates the
// per-channel mean and standard deviation of the first `frames` complete
// frames of each unit (processing::pedestal_stage, as `daqd --pedestal-run`).
// It ends by itself once every unit seen (at least one, and every listed
// unit) has its frames and no new unit came for 300 ms, or when stopped
// (POST /api/v1/runs/stop): it then writes <output_dir>/NAME.calib.h5 on the
// writer thread (the one thread that may use HDF5) and keeps the outcome.
//
// Owned by the pipeline (shared with the writer while attached). take() and
// finish() run on the writer thread; finished() and outcome() on any thread.
#include "daqd/common/runs.hpp"
#include "daqd/processing/stage.hpp"
#include "daqd/storage/run_writer.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace daqd {

class pedestal_run final : public storage::frame_sink {
public:
    pedestal_run(std::string name, std::filesystem::path file, std::uint64_t frames, std::size_t listed_units);
    ~pedestal_run() override;

    // ---- writer thread ----
    bool take(const processing::frame& f) noexcept override;
    // Frames stopped coming: done once every unit has had its frames for 300 ms.
    bool idle() noexcept override;
    // Writes the calibration file from what was taken (if not written yet)
    // and records the outcome. Idempotent.
    void finish() noexcept;

    // ---- any thread ----
    [[nodiscard]] bool finished() const noexcept { return _finished.load(std::memory_order_acquire); }
    struct outcome {
        bool failed = false;
        std::string error;                    // why no file was written
        std::string units;                    // "u0: 1000 frames, u1: 1000 frames"
        std::uint64_t frames = 0;             // complete frames taken, all units
        std::chrono::system_clock::time_point stopped{};
    };
    [[nodiscard]] outcome result() const;
    [[nodiscard]] const std::string& name() const noexcept { return _name; }
    [[nodiscard]] const std::filesystem::path& file() const noexcept { return _file; }
    [[nodiscard]] std::uint64_t frames_wanted() const noexcept { return _wanted; }
    // Units seen and units with all their frames (the status page's progress).
    [[nodiscard]] std::uint32_t units_seen() const noexcept { return _stage.units_seen(); }
    [[nodiscard]] std::uint32_t units_complete() const noexcept { return _stage.units_complete(); }

private:
    bool done_now(std::uint64_t now_ns) noexcept;

    std::string _name;
    std::filesystem::path _file;
    std::uint64_t _wanted;
    std::size_t _listed;
    processing::pedestal_stage _stage;
    std::vector<std::unique_ptr<processing::unit_context>> _units;  // by arrival
    std::vector<processing::unit_context*> _by_id;                  // 65536
    bool _all_in = false;
    std::uint64_t _all_in_since_ns = 0;
    std::atomic<bool> _finished{false};
    mutable std::mutex _mutex;  // _outcome
    outcome _outcome;
};

}  // namespace daqd
