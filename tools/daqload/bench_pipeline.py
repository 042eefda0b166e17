#!/usr/bin/env python3
"""daqload.Loader (issue 15) against DataLoader + RunDataset and `cat`, and
the noisy-neighbour experiment.

    /usr/bin/python3 tools/daqload/bench_pipeline.py --capture-dir /tmp/daqload-bench
    /usr/bin/python3 tools/daqload/bench_pipeline.py --file runs/big.h5 --seconds 5 --rounds 2

1. Throughput: frames/s of shuffled batches (--batch, 256) of `raw` as int32
   (ChunkShuffleSampler, a new epoch whenever one ends; each epoch's first
   batch, with the start-up, not counted) from
   - daqload.Loader, threads in the training process (--threads, "1,2"),
   - daqload.Loader in a subprocess (--sub-threads, "1,2"),
   - torch DataLoader + RunDataset + daqload.collate, 0/1/2 worker processes,
   - `cat file > /dev/null` from the page cache (frames in the file / time).
   Each for --seconds, --rounds interleaved rounds, best kept; CPU µs per
   frame is user + system of this process and its children (the loader
   subprocess, DataLoader workers, cat), start-up included.
2. Noisy neighbour (--train-steps > 0): a CPU-bound training step (an MLP on
   the 4096 samples, torch.set_num_threads(--torch-threads)) timed per step
   (only the step: int32 -> float, forward, backward, optimizer; not the wait
   for the batch) with the model alone on one prepared batch, then fed by
   each loader. Reported: median step time and its inflation over the model
   alone in the same round, frames/s through the training loop, and the
   loader's CPU seconds per 1000 frames = (CPU of this process and its live
   children over the measured steps, from /proc, − CPU of the steps
   themselves) / frames.

--capture-dir records `bench1g.h5` first with daqd + daq-sim (4 units x 4096
channels x --frames frames at 700 Mbit/s, over 1 GB with the default).
"""

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

import daqload  # noqa: E402
from bench_loader import ceiling, cpu_seconds  # noqa: E402
from daqload.capture import capture_run  # noqa: E402


_TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu():
    """CPU seconds (user + system) so far of this process and its live children
    (the loader subprocess, DataLoader workers), from /proc: a child's start-up
    before a measurement began is not counted, as it would be from wait4."""
    t = os.times()
    total = t.user + t.system
    me = str(os.getpid())
    for d in os.listdir("/proc"):
        if not d.isdigit() or d == me:
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if st[1] == me:  # ppid
            total += (int(st[11]) + int(st[12])) / _TICK
    return total


def loadavg():
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


class Config:
    """One loader configuration: make(epoch) -> (iterable, closer)."""

    def __init__(self, name, path, batch, kind, n, window_chunks):
        self.name, self.path, self.batch, self.kind, self.n = name, path, batch, kind, n
        self.window_chunks = window_chunks

    def open(self):
        ds = daqload.RunDataset(self.path, fields=("raw",))
        self.sampler = daqload.ChunkShuffleSampler(ds, seed=0, window_chunks=self.window_chunks)
        if self.kind == "dataloader":
            self.loader = DataLoader(ds, batch_size=self.batch, sampler=self.sampler, collate_fn=daqload.collate,
                                     num_workers=self.n, persistent_workers=self.n > 0)
        else:
            self.loader = daqload.Loader(ds, batch_size=self.batch, sampler=self.sampler, threads=self.n,
                                         in_subprocess=self.kind == "subprocess")
        return self

    def epochs(self):
        """Batches forever, epoch after epoch: (batch, first of its epoch)."""
        epoch = 0
        while True:
            self.sampler.set_epoch(epoch)
            first = True
            for b in self.loader:
                yield b, first
                first = False
            epoch += 1

    def close(self):
        if isinstance(self.loader, daqload.Loader):
            self.loader.close()
        self.loader = None
        gc.collect()  # DataLoader workers end (and are reaped: their CPU time counts)


def throughput(cfg, seconds):
    """(frames/s, CPU µs per frame): the clock runs from each epoch's first batch on (start-up not counted)."""
    c0 = cpu_seconds()
    cfg.open()
    n = total = 0
    dt, last = 0.0, None
    for b, first in cfg.epochs():
        now = time.perf_counter()
        total += len(b["raw"])
        if not first:
            dt += now - last
            n += len(b["raw"])
            if dt >= seconds:
                break
        last = now
    del b
    cfg.close()
    return n / dt, (cpu_seconds() - c0) / total * 1e6


class Model(torch.nn.Module):
    def __init__(self, channels, hidden):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(channels, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 2))

    def forward(self, x):
        return self.net(x)


def train(make_batches, steps, warmup, channels, hidden):
    """Per-step times (s) of the training step alone, frames, wall seconds, CPU seconds of the
    steps, and CPU seconds of this process and its children over the measured steps."""
    torch.manual_seed(0)
    model = Model(channels, hidden)
    opt = torch.optim.SGD(model.parameters(), lr=1e-6)
    times, step_cpu = [], 0.0
    frames = 0
    c0, w0 = None, None
    for i, b in enumerate(make_batches()):
        if i == warmup:
            c0, w0 = tree_cpu(), time.perf_counter()
            step_cpu = 0.0
        t0, tc0 = time.perf_counter(), time.thread_time()
        x = b["raw"].float().mul_(1.0 / 65536)
        loss = model(x).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        dt, dc = time.perf_counter() - t0, time.thread_time() - tc0
        if i >= warmup:
            times.append(dt)
            step_cpu += dc
            frames += len(x)
        if i + 1 >= warmup + steps:
            break
    return times, frames, time.perf_counter() - w0, step_cpu, tree_cpu() - c0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--file")
    ap.add_argument("--capture-dir")
    ap.add_argument("--build-dir", default=os.environ.get("DAQD_BUILD_DIR", os.path.join(REPO, "build", "release")))
    ap.add_argument("--frames", type=int, default=36000, help="frames per unit when capturing (4 units)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", default="1,2", help="Loader threads, in the training process")
    ap.add_argument("--sub-threads", default="1,2", help="Loader threads, in a subprocess")
    ap.add_argument("--workers", default="0,1,2", help="DataLoader worker processes")
    ap.add_argument("--window-chunks", type=int, default=4)
    ap.add_argument("--train-steps", type=int, default=100, help="noisy-neighbour steps per loader (0: skip)")
    ap.add_argument("--torch-threads", type=int, default=1)
    ap.add_argument("--hidden", type=int, default=32, help="hidden units of the MLP (Debian's torch has a generic "
                    "BLAS: 32 is about 45 ms per step of 256 frames on one core of the development VM, 4 about 8 ms)")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--json")
    a = ap.parse_args()

    path = a.file
    if path is None:
        if not a.capture_dir:
            ap.error("give --file or --capture-dir")
        path = os.path.join(a.capture_dir, "bench1g.h5")
        if not os.path.exists(path):
            print(f"capturing {path}: 4 units x 4096 channels x {a.frames} frames …", flush=True)
            capture_run(a.build_dir, a.capture_dir, "bench1g", units=4, channels=4096, frames=a.frames, rate=700)
    run = daqload.open_run(path)
    frames, size = len(run), os.path.getsize(path)
    channels = run.channels[run.units[0]]
    run.close()
    print(f"{path}: {size / 1e9:.2f} GB, {frames} frames of {channels} channels, read path {run.read_path()}")
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}, "
          f"batch {a.batch}, raw int32, load average {loadavg()}", flush=True)
    subprocess.run(f"cat '{path}' > /dev/null", shell=True, check=True)

    configs = ([Config(f"Loader, {t} thread(s), in-process", path, a.batch, "threads", int(t), a.window_chunks)
                for t in a.threads.split(",") if t]
               + [Config(f"Loader, {t} thread(s), subprocess", path, a.batch, "subprocess", int(t), a.window_chunks)
                  for t in a.sub_threads.split(",") if t]
               + [Config(f"DataLoader+RunDataset, {w} workers", path, a.batch, "dataloader", int(w), a.window_chunks)
                  for w in a.workers.split(",") if w])
    out = {"file": path, "bytes": size, "frames": frames, "batch": a.batch, "cpus": os.cpu_count(),
           "load_before": os.getloadavg(), "torch_threads": a.torch_threads}
    torch.set_num_threads(a.torch_threads)

    if not a.skip_throughput:
        res, cpu = {}, {}
        for r in range(a.rounds):
            print(f"round {r + 1} (load {loadavg()})", flush=True)
            fps, bps, us = ceiling(path, frames)
            res["cat"] = max(res.get("cat", 0), fps)
            cpu["cat"] = min(cpu.get("cat", 1e9), us)
            print(f"  {'cat (page cache)':<40} {fps:>10,.0f} frames/s {us:6.2f} CPU µs/frame ({bps / 1e9:.1f} GB/s)",
                  flush=True)
            for c in configs:
                fps, us = throughput(c, a.seconds)
                res[c.name] = max(res.get(c.name, 0), fps)
                cpu[c.name] = min(cpu.get(c.name, 1e9), us)
                print(f"  {c.name:<40} {fps:>10,.0f} frames/s {us:6.2f} CPU µs/frame", flush=True)
        best_dl = max(v for k, v in res.items() if k.startswith("DataLoader"))
        print(f"\nload average after: {loadavg()}\n")
        print("| frames/s, batch 256 shuffled, raw int32 | best of rounds | × cat | × best DataLoader | CPU µs/frame |")
        print("|---|---:|---:|---:|---:|")
        for k in ["cat"] + [c.name for c in configs]:
            print(f"| {k} | {res[k]:,.0f} | {res[k] / res['cat']:.2f} | {res[k] / best_dl:.2f} | {cpu[k]:.2f} |")
        out["throughput"] = {"frames_per_s": res, "cpu_us_per_frame": cpu, "load_after": os.getloadavg()}

    if a.train_steps > 0:
        warm = 10
        # The model alone cycles through 16 batches made beforehand (64 MiB of int32: out of the CPU caches,
        # as batches from a loader are), so that it pays the same memory traffic for its input.
        prepared = [torch.randint(0, 65536, (a.batch, channels), dtype=torch.int32) for _ in range(16)]

        def alone():
            while True:
                for one in prepared:
                    yield {"raw": one}
        rows = []
        print(f"\nnoisy neighbour: MLP {channels}-{a.hidden}-2, torch threads {a.torch_threads}, {a.train_steps} steps "
              f"per measurement, each loader right after the model alone, {a.rounds} rounds (load {loadavg()})",
              flush=True)

        def measure_steps(c):
            if c is None:
                make = alone
            else:
                c.open()

                def make():
                    for b, _ in c.epochs():
                        yield b
            times, n, wall, step_cpu, cpu = train(make, a.train_steps, warm, channels, a.hidden)
            if c is not None:
                c.close()
            return statistics.median(times), n / wall, max(0.0, cpu - step_cpu) / n * 1000

        for r in range(a.rounds):
            for c in configs:
                base = measure_steps(None)
                med, fps, lcpu = measure_steps(c)
                rows.append((c.name, med / base[0], fps / base[1], med, base[0], fps, lcpu))
                print(f"  {c.name:<40} step {med * 1e3:6.2f} ms (alone {base[0] * 1e3:6.2f} ms: x{med / base[0]:.3f}), "
                      f"{fps:>8,.0f} frames/s through training (alone {base[1]:,.0f}: x{fps / base[1]:.2f}), loader "
                      f"{lcpu:.4f} CPU s/1000 frames", flush=True)
        print(f"\nload average after: {loadavg()}\n")
        print("| fed by | step time / model alone: median of rounds (min–max) | frames/s through training / model "
              "alone: median | loader CPU s per 1000 frames: median |")
        print("|---|---:|---:|---:|")
        out["noisy_neighbour"] = {"rows": rows, "hidden": a.hidden, "steps": a.train_steps}
        for c in configs:
            mine = [x for x in rows if x[0] == c.name]
            infl = [x[1] for x in mine]
            print(f"| {c.name} | {statistics.median(infl):.3f} ({min(infl):.3f}–{max(infl):.3f}) | "
                  f"{statistics.median(x[2] for x in mine):.2f} | {statistics.median(x[6] for x in mine):.4f} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
