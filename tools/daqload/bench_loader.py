#!/usr/bin/env python3
"""Frames/s delivered as torch batches: daqload vs a plain h5py Dataset vs
reading the file with `cat` (the page-cache ceiling).

    /usr/bin/python3 tools/daqload/bench_loader.py --capture-dir /tmp/daqload-bench
    /usr/bin/python3 tools/daqload/bench_loader.py --file runs/big.h5 --seconds 8

--capture-dir records a run first with daqd + daq-sim (4 units x 4096 channels
x 30000 frames, about 1 GB; --frames to change) unless it is there already.
Every loader yields shuffled batches of --batch frames of `raw` as int32
(daqload also as int16) and is measured with 0, 1 and 2 DataLoader workers for
--seconds each after its first batch; the rounds are interleaved (--rounds)
and the best of each configuration is kept, so that load from other processes
hits all of them alike. Results: a table on stdout, --json FILE for the numbers.

Compressed runs (issue 12):

    /usr/bin/python3 tools/daqload/bench_loader.py --capture-dir /tmp/daqload-bench --compressed [--detector]

records the run twice from the same simulated traffic, uncompressed and with
daqd's `[storage] compression = "bslz4"` (with --detector: daq-sim's detector
data, pedestal + noise, instead of the test pattern, which compresses about
28:1; --recompress: rewrite the uncompressed run with h5py + hdf5plugin
instead, daqload.capture.recompress_run; --compressed-file: a compressed run
of the same frames) and measures, in the same rounds: daqload on the
compressed run (read path pread+bslz4), daqload on the uncompressed run
(pread), and the plain h5py Dataset on the compressed run (h5py +
hdf5plugin), each for --seconds over as many epochs as that takes (the
first batch of each epoch not counted), then prints the ratios (goals:
compressed ≥ 0.7 × uncompressed, ≥ 20 × h5py) and a micro-check of the native
decompression with 1 and 2 I/O threads.
"""

import argparse
import gc
import json
import os
import platform
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

import daqload  # noqa: E402
from daqload.capture import capture_run  # noqa: E402


class H5Frames(Dataset):
    """The plain way: one h5py row read per item, opened lazily per process."""

    def __init__(self, path):
        self.path = path
        with h5py.File(path, "r") as f:
            self.units = sorted(f["units"])
            counts = [f["units"][u]["raw"].shape[0] for u in self.units]
        self.index = [(u, r) for u, n in zip(self.units, counts) for r in range(n)]
        self._f, self._pid = None, None

    def __len__(self):
        return len(self.index)

    def __getitem__(self, i):
        if self._pid != os.getpid():
            self._f, self._pid = h5py.File(self.path, "r"), os.getpid()
        u, r = self.index[i]
        return {"raw": torch.from_numpy(self._f["units"][u]["raw"][r].astype(np.int32))}

    def __getstate__(self):
        return {"path": self.path, "units": self.units, "index": self.index, "_f": None, "_pid": None}


def cpu_seconds():
    """CPU time (user + system) of this process and its reaped children (workers, cat)."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def measure(make_loader, seconds):
    """(frames/s after the first batch, CPU µs per delivered frame incl. workers)."""
    c0 = cpu_seconds()
    it = iter(make_loader())
    b = next(it)  # start-up (workers, first reads) is not counted in frames/s
    total = len(b["raw"])
    n, t0 = 0, time.perf_counter()
    for b in it:
        n += len(b["raw"])
        if time.perf_counter() - t0 >= seconds:
            break
    dt = time.perf_counter() - t0
    del it, b
    gc.collect()  # shuts the workers down, so that their CPU time is counted
    cpu = cpu_seconds() - c0
    return (n / dt if dt > 0 and n else 0.0), cpu / max(1, n + total) * 1e6


def measure_epochs(make_loader, seconds):
    """As measure, but over as many epochs as it takes to measure `seconds`
    (make_loader(epoch); each epoch's first batch, with the start-up, not
    counted): a fast loader goes through a run in well under a second."""
    c0 = cpu_seconds()
    n = total = epoch = 0
    dt = 0.0
    while dt < seconds:
        it = iter(make_loader(epoch))
        b = next(it)
        total += len(b["raw"])
        t0 = time.perf_counter()
        for b in it:
            n += len(b["raw"])
            if dt + time.perf_counter() - t0 >= seconds:
                break
        dt += time.perf_counter() - t0
        del it, b
        gc.collect()
        epoch += 1
    cpu = cpu_seconds() - c0
    return (n / dt if dt > 0 and n else 0.0), cpu / max(1, n + total) * 1e6


def ceiling(path, frames):
    best, cpu = float("inf"), float("inf")
    for _ in range(3):
        c0, t0 = cpu_seconds(), time.perf_counter()
        subprocess.run(["cat", path], stdout=subprocess.DEVNULL, check=True)
        best = min(best, time.perf_counter() - t0)
        cpu = min(cpu, cpu_seconds() - c0)
    return frames / best, os.path.getsize(path) / best, cpu / frames * 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--file", help="run file to read (one file)")
    ap.add_argument("--capture-dir", help="record the run here first (if not there yet)")
    ap.add_argument("--build-dir", default=os.path.join(REPO, "build", "release"))
    ap.add_argument("--frames", type=int, default=30000, help="frames per unit when capturing (4 units)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--seconds", type=float, default=6.0, help="measured time per configuration and round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workers", default="0,1,2")
    ap.add_argument("--window-chunks", type=int, default=4)
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--compressed", action="store_true",
                    help="compressed run vs the same run uncompressed vs h5py + hdf5plugin (see above)")
    ap.add_argument("--compressed-file", help="with --compressed: the compressed run to read (default: recorded "
                    "by daqd with compression next to the uncompressed one)")
    ap.add_argument("--recompress", action="store_true", help="with --compressed: write the compressed run from "
                    "the uncompressed one with h5py + hdf5plugin instead of recording it")
    ap.add_argument("--detector", action="store_true", help="capture daq-sim --detector data (noise, pedestals)")
    a = ap.parse_args()

    path = a.file
    if path is None:
        if not a.capture_dir:
            ap.error("give --file or --capture-dir")
        name = "bench-detector" if a.detector else "bench"
        path = os.path.join(a.capture_dir, name + ".h5")
        if not os.path.exists(path):
            print(f"capturing {path}: 4 units x 4096 channels x {a.frames} frames{' (detector data)' * a.detector} …",
                  flush=True)
            capture_run(a.build_dir, a.capture_dir, name, units=4, channels=4096, frames=a.frames, rate=700,
                        sim_args=["--detector"] if a.detector else ())
    if a.compressed:
        cpath = a.compressed_file
        if cpath is None and not a.recompress:
            if not a.capture_dir:
                ap.error("--compressed records the compressed run: give --capture-dir (or --compressed-file, "
                         "--recompress)")
            cname = ("bench-detector" if a.detector else "bench") + "-bslz4"
            cpath = os.path.join(a.capture_dir, cname + ".h5")
            if not os.path.exists(cpath):
                print(f"capturing {cpath}: the same traffic, compression = \"bslz4\" …", flush=True)
                capture_run(a.build_dir, a.capture_dir, cname, units=4, channels=4096, frames=a.frames, rate=700,
                            config='[storage]\ncompression = "bslz4"\n',
                            sim_args=["--detector"] if a.detector else ())
        return compressed_main(a, path, cpath)
    run = daqload.open_run(path)
    frames = len(run)
    size = os.path.getsize(path)
    workers = [int(w) for w in a.workers.split(",")]
    print(f"{path}: {size / 1e9:.2f} GB, {frames} frames, units {list(run.units)}, raw read path {run.read_path()}")
    print(f"cpus {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}, torch {torch.__version__}, "
          f"h5py {h5py.__version__}, batch {a.batch}, {a.seconds:g} s x {a.rounds} rounds", flush=True)
    subprocess.run(f"cat '{path}' > /dev/null", shell=True, check=True)  # into the page cache

    def daq_loader(w, dtype, seed):
        ds = daqload.RunDataset(path, fields=("raw",), raw_dtype=dtype)
        s = daqload.ChunkShuffleSampler(ds, seed=seed, window_chunks=a.window_chunks)
        return DataLoader(ds, batch_size=a.batch, sampler=s, collate_fn=daqload.collate, num_workers=w)

    def h5_loader(w, seed):
        torch.manual_seed(seed)
        return DataLoader(H5Frames(path), batch_size=a.batch, shuffle=True, num_workers=w)

    res, cpu = {}, {}

    def keep(key, v):
        fps, us = v
        res[key] = max(res.get(key, 0.0), fps)
        cpu[key] = min(cpu.get(key, float("inf")), us)
        print(f"  {key:<24} {fps:>10.0f} frames/s  {us:6.2f} CPU µs/frame", flush=True)

    for r in range(a.rounds):
        print(f"round {r + 1}", flush=True)
        fps, bps, us = ceiling(path, frames)
        keep("cat (ceiling)", (fps, us))
        res["ceiling_GBps"] = max(res.get("ceiling_GBps", 0.0), bps / 1e9)
        for w in workers:
            keep(f"daqload int32 w={w}", measure(lambda: daq_loader(w, "int32", r), a.seconds))
            keep(f"daqload int16 w={w}", measure(lambda: daq_loader(w, "int16", r), a.seconds))
            keep(f"h5py w={w}", measure(lambda: h5_loader(w, r), a.seconds))

    ceil = res["cat (ceiling)"]
    best_h5 = max(res[f"h5py w={w}"] for w in workers)
    best32 = max(res[f"daqload int32 w={w}"] for w in workers)
    best16 = max(res[f"daqload int16 w={w}"] for w in workers)
    print()
    print(f"| frames/s (batch {a.batch}, shuffled) | " + " | ".join(f"{w} workers" for w in workers)
          + " | best | × h5py | × ceiling | CPU µs/frame (best) |")
    print("|---|" + "---:|" * (len(workers) + 4))
    for name, best in (("daqload int32", best32), ("daqload int16", best16), ("plain h5py Dataset", best_h5)):
        key = "h5py" if name.startswith("plain") else name
        cells = " | ".join(f"{res[f'{key} w={w}']:,.0f}" for w in workers)
        us = min(cpu[f"{key} w={w}"] for w in workers)
        print(f"| {name} | {cells} | {best:,.0f} | {best / best_h5:.1f} | {best / ceil:.2f} | {us:.2f} |")
    print("| `cat file > /dev/null` (ceiling) |" + " |" * len(workers)
          + f" {ceil:,.0f} | | 1.00 | {cpu['cat (ceiling)']:.2f} |")
    print(f"\nceiling {res['ceiling_GBps']:.2f} GB/s; goal: ≥ 3 × h5py ({3 * best_h5:,.0f}) and ≥ 0.5 × ceiling "
          f"({0.5 * ceil:,.0f}); daqload int32: {best32 / best_h5:.1f} × h5py, {best32 / ceil:.2f} × ceiling")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"file": path, "bytes": size, "frames": frames, "batch": a.batch, "seconds": a.seconds,
                       "rounds": a.rounds, "cpus": os.cpu_count(), "machine": platform.processor() or platform.machine(),
                       "load_average": os.getloadavg(), "torch": torch.__version__, "h5py": h5py.__version__,
                       "window_chunks": a.window_chunks, "frames_per_s": res, "cpu_us_per_frame": cpu}, f, indent=1)


def native_threads_check(path, rows=4096, reps=9):
    """The native decompression with 1 and 2 I/O threads: rows 0..rows-1 of the
    first unit widened to int32 into a reused buffer (the chunks split over the
    threads, GIL released), best of reps alternating rounds. Returns
    {threads: (frames/s, GB/s of samples, CPU s / wall s of the best round)};
    CPU/wall near 1 with 2 threads means only one core was free."""
    runs = {t: daqload.open_run(path, io_threads=t) for t in (1, 2)}
    u = runs[1].units[0]
    n = min(rows, runs[1].frame_count(u))
    ch = runs[1].channels[u]
    g = runs[1]._unit_base[runs[1].units.index(u)] + np.arange(n, dtype=np.int64)
    staging, out = np.empty((n, ch), dtype=np.uint16), np.empty((n, ch), dtype=np.int32)
    best = {}
    for _ in range(reps):
        for t, run in runs.items():
            c0, t0 = time.process_time(), time.perf_counter()
            run._gather_rows("raw", g, staging, convert_out=out)
            dt, cpu = time.perf_counter() - t0, time.process_time() - c0
            if t not in best or dt < best[t][0]:
                best[t] = (dt, cpu / dt)
    for run in runs.values():
        run.close()
    return {t: (n / dt, n * ch * 2 / dt, ratio) for t, (dt, ratio) in best.items()}


def compressed_main(a, path, cpath):
    import hdf5plugin  # noqa: F401  (h5py decodes filter 32008 in the plain h5py loader, workers included)

    from daqload.capture import recompress_run

    if cpath is None:
        cdir = os.path.join(os.path.dirname(os.path.abspath(path)), "bslz4")
        cpath = os.path.join(cdir, os.path.basename(path))
        if not os.path.exists(cpath) or os.path.getmtime(cpath) < os.path.getmtime(path):
            print(f"writing {cpath}: {path} with bitshuffle/LZ4 chunks …", flush=True)
            recompress_run([path], cdir)
    crun, prun = daqload.open_run(cpath), daqload.open_run(path)
    frames = len(crun)
    if crun.frame_counts != prun.frame_counts:
        sys.exit(f"{cpath} has {crun.frame_counts} frames, {path} {prun.frame_counts}: not the same run")
    csize, psize = os.path.getsize(cpath), os.path.getsize(path)
    workers = [int(w) for w in a.workers.split(",")]
    print(f"{path}: {psize / 1e9:.2f} GB, raw read path {prun.read_path()}")
    print(f"{cpath}: {csize / 1e9:.3f} GB ({psize / csize:.1f}:1), raw read path {crun.read_path()}, "
          f"{frames} frames, units {list(crun.units)}")
    if crun.read_path() != "pread+bslz4":
        print(f"  (not the compressed fast path: {crun.read_path_reasons()})")
    load = os.getloadavg()
    print(f"cpus {os.cpu_count()}, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, torch {torch.__version__}, "
          f"h5py {h5py.__version__}, batch {a.batch}, {a.seconds:g} s x {a.rounds} rounds", flush=True)
    for p in (path, cpath):
        subprocess.run(["cat", p], stdout=subprocess.DEVNULL, check=True)  # into the page cache

    def daq_loader(p, w, dtype, seed, epoch):
        ds = daqload.RunDataset(p, fields=("raw",), raw_dtype=dtype)
        s = daqload.ChunkShuffleSampler(ds, seed=seed, window_chunks=a.window_chunks)
        s.set_epoch(epoch)
        return DataLoader(ds, batch_size=a.batch, sampler=s, collate_fn=daqload.collate, num_workers=w)

    def h5_loader(w, seed, epoch):
        torch.manual_seed(seed * 1000 + epoch)
        return DataLoader(H5Frames(cpath), batch_size=a.batch, shuffle=True, num_workers=w)

    res, cpu = {}, {}

    def keep(key, v):
        fps, us = v
        res[key] = max(res.get(key, 0.0), fps)
        cpu[key] = min(cpu.get(key, float("inf")), us)
        print(f"  {key:<30} {fps:>10.0f} frames/s  {us:6.2f} CPU µs/frame", flush=True)

    names = [("compressed int32", cpath, "int32"), ("uncompressed int32", path, "int32"),
             ("compressed int16", cpath, "int16"), ("uncompressed int16", path, "int16")]
    for r in range(a.rounds):
        print(f"round {r + 1}", flush=True)
        for w in workers:
            for name, p, dtype in names:
                keep(f"{name} w={w}", measure_epochs(lambda e: daq_loader(p, w, dtype, r, e), a.seconds))
            keep(f"h5py+hdf5plugin w={w}", measure_epochs(lambda e: h5_loader(w, r, e), a.seconds))
    threads = native_threads_check(cpath)

    best = {name: max(res[f"{name} w={w}"] for w in workers) for name, _, _ in names}
    best["h5py+hdf5plugin"] = max(res[f"h5py+hdf5plugin w={w}"] for w in workers)
    print()
    print(f"| frames/s (batch {a.batch}, shuffled) | " + " | ".join(f"{w} workers" for w in workers)
          + " | best | × uncompressed (same dtype) | × h5py+hdf5plugin | CPU µs/frame (best) |")
    print("|---|" + "---:|" * (len(workers) + 4))
    for name in [n for n, _, _ in names] + ["h5py+hdf5plugin"]:
        cells = " | ".join(f"{res[f'{name} w={w}']:,.0f}" for w in workers)
        us = min(cpu[f"{name} w={w}"] for w in workers)
        same = best.get("uncompressed " + name.split()[-1]) if name.startswith("compressed") else None
        vs_plain = f"{best[name] / same:.2f}" if same else ""
        print(f"| {name} | {cells} | {best[name]:,.0f} | {vs_plain} | {best[name] / best['h5py+hdf5plugin']:.1f} "
              f"| {us:.2f} |")
    r32 = best["compressed int32"] / best["uncompressed int32"]
    h32 = best["compressed int32"] / best["h5py+hdf5plugin"]
    print(f"\ngoals: compressed ≥ 0.7 × uncompressed: int32 {r32:.2f} "
          f"({'met' if r32 >= 0.7 else 'NOT met'}), int16 {best['compressed int16'] / best['uncompressed int16']:.2f}; "
          f"≥ 20 × h5py+hdf5plugin: {h32:.0f} ({'met' if h32 >= 20 else 'NOT met'})")
    speed = threads[2][0] / threads[1][0]
    print(f"native decompression of {min(crun.frame_count(crun.units[0]), 4096)} rows into int32: "
          f"1 thread {threads[1][0]:,.0f} frames/s ({threads[1][1] / 1e9:.2f} GB/s of samples), "
          f"2 threads {threads[2][0]:,.0f} frames/s ({threads[2][1] / 1e9:.2f} GB/s, CPU/wall {threads[2][2]:.2f}): "
          f"{speed:.2f} × ({'2 threads beat 1' if speed > 1.05 else '2 threads do NOT beat 1'})")
    load = os.getloadavg()
    print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"file": path, "compressed_file": cpath, "bytes": psize, "compressed_bytes": csize,
                       "frames": frames, "batch": a.batch, "seconds": a.seconds, "rounds": a.rounds,
                       "cpus": os.cpu_count(), "load_average_end": load, "torch": torch.__version__,
                       "h5py": h5py.__version__, "window_chunks": a.window_chunks, "frames_per_s": res,
                       "cpu_us_per_frame": cpu, "best": best, "native_threads":
                       {str(k): {"frames_per_s": v[0], "cpu_per_wall": v[2]} for k, v in threads.items()}}, f,
                      indent=1)


if __name__ == "__main__":
    main()
