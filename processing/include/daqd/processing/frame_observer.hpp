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
};

}  // namespace daqd::processing
