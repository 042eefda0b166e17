#pragma once
// frame_observer: a hook for components that want to see every frame that
// leaves the data path (the live view tap; later calibration / dose).
//
// Owner: whoever implements it (the pipeline owns the live_tap). Threads: the
// writer thread calls on_frame() for every frame it takes from its queue,
// before it gives the frame buffer back to the pool; an observer must be
// quick, must not block and must not throw. It is set on the writer before
// the writer thread starts.
#include "daqd/processing/frame.hpp"

namespace daqd::processing {

class frame_observer {
public:
    virtual ~frame_observer() = default;
    // `written`: the frame was appended to the active run (false: no run, or
    // the run refused or failed it).
    virtual void on_frame(const frame& f, bool written) noexcept = 0;
    // `frames` of unit `unit_id` reported written earlier are in no file
    // after all (the run failed: its file was deleted, or the disk refused
    // data appended since the last flush). Writer thread.
    virtual void on_unwritten(std::uint16_t unit_id, std::uint64_t frames) noexcept {
        (void)unit_id;
        (void)frames;
    }
};

}  // namespace daqd::processing
