#!/usr/bin/env python3
"""How long daqctl takes to write a master file, for a run of a given length.

Writes the hosts' files of a synthetic run with h5py (the daq1 layout, rows
chunked as daqd does, a fraction of frames lost at random in every unit),
then times ``daqctl.master.write_master`` over them (the fixed mappings of
every unit plus the detector view), opening it with daqload, and reading
the detector view. What dominates is the number of frames (frame_number is
read to align the units) and of lost frames (one mapping per contiguous
stretch), not the channels, so the files are kept narrow.

    /usr/bin/python3 tools/daqctl/bench_master.py --frames 600000 --loss 0.001 --dir /tmp/bench
    # 600000 frames per unit = 10 minutes at 1 kHz; 3 hosts x 2 units
"""

import argparse
import os
import shutil
import sys
import time

import h5py
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "daqload"))

from daqctl import Cluster, Host  # noqa: E402
from daqctl import master  # noqa: E402


def write_host(path, run, units, frames, channels, loss, rng, chunk_rows=1024):
    with h5py.File(path, "w", libver="latest") as f:
        f.attrs["format"] = "daq1-run"
        f.attrs["format_version"] = np.int32(1)
        f.attrs["run_name"] = run
        f.attrs["started_at"] = "2026-01-01T00:00:00.000Z"
        f.attrs["stopped_at"] = "2026-01-01T00:10:00.000Z"
        for u in units:
            keep = rng.random(frames) >= loss
            keep[0] = keep[-1] = True
            fn = np.flatnonzero(keep).astype(np.uint64)
            n = len(fn)
            g = f.create_group(f"units/u{u}")
            g.attrs["unit_id"] = np.int32(u)
            g.attrs["channels"] = np.int32(channels)
            raw = g.create_dataset("raw", shape=(n, channels), maxshape=(None, channels), dtype="<u2",
                                   chunks=(chunk_rows, channels))
            for a in range(0, n, 65536):
                b = min(n, a + 65536)
                raw[a:b] = ((fn[a:b, None] * 7 + u * 13 + np.arange(channels)) % 65536).astype(np.uint16)
            for name, data in (("frame_number", fn), ("timestamp_ns", fn * 1000), ("missing_packets",
                                                                                      np.zeros(n, np.uint16))):
                g.create_dataset(name, data=data, maxshape=(None,), chunks=(chunk_rows,))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=600_000, help="frames per unit (default 600000: 10 min at 1 kHz)")
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--hosts", type=int, default=3)
    ap.add_argument("--units-per-host", type=int, default=2)
    ap.add_argument("--loss", type=float, default=0.001, help="fraction of frames each unit loses (default 0.001)")
    ap.add_argument("--dir", default="/tmp/daqctl-bench-master")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    shutil.rmtree(a.dir, ignore_errors=True)
    rng = np.random.default_rng(1)
    hosts = []
    t = time.monotonic()
    for i in range(a.hosts):
        d = os.path.join(a.dir, f"h{i}")
        os.makedirs(d)
        units = range(i * a.units_per_host, (i + 1) * a.units_per_host)
        write_host(os.path.join(d, f"bench_h{i}.h5"), "bench", units, a.frames, a.channels, a.loss, rng)
        hosts.append(Host(f"http://127.0.0.1:{9 + i}", tag=f"h{i}", output_dir=d))
    print(f"host files written in {time.monotonic() - t:.1f} s")
    c = Cluster(hosts, master_dir=os.path.join(a.dir, "master"))
    t = time.monotonic()
    path, notes = master.write_master(c, "bench")
    dt = time.monotonic() - t
    with h5py.File(path, "r") as f:
        n_maps = f["detector/data"].id.get_create_plist().get_virtual_count()
        shape = f["detector/data"].shape
    print(f"master {path}: {os.path.getsize(path) / 1e6:.2f} MB written in {dt:.2f} s "
          f"({a.hosts} hosts x {a.units_per_host} units x {a.frames} frames, loss {a.loss}; detector {shape}, "
          f"{n_maps} mappings){'; ' + '; '.join(notes) if notes else ''}")
    import daqload

    t = time.monotonic()
    run = daqload.open_run(path)
    view = run.detector()
    t1 = time.monotonic()
    x = view.read(0, min(len(view), 100_000))
    t2 = time.monotonic()
    with h5py.File(path, "r") as f:
        y = f["detector/data"][0:min(len(view), 100_000)]
    t3 = time.monotonic()
    assert (x == y).all()
    print(f"daqload: open + detector view {t1 - t:.2f} s; 100000 frames of the view: daqload {t2 - t1:.2f} s "
          f"({run.read_path()}), h5py VDS {t3 - t2:.2f} s")
    if not a.keep:
        shutil.rmtree(a.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
