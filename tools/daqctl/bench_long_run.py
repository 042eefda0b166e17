#!/usr/bin/env python3
"""A real run across several daqd, then the master file's creation time.

Starts N daqd processes on loopback (one output directory each), daq-sim
sending UNITS units to each host at RATE Mbit/s per unit for SECONDS, a
run started with ``Cluster.start`` and stopped with ``Cluster.stop``
(master not written there), then times ``Cluster.write_master`` on the
closed files (the final master with its detector view) and prints the
frames, files and sizes.

    /usr/bin/python3 tools/daqctl/bench_long_run.py --build build/release --hosts 3 --units 2 --seconds 600
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "daqload"))

from bench_hosts import start_hosts  # noqa: E402
from daqctl import Cluster  # noqa: E402
from daqload.procs import find_binaries, sim_argv, stop  # noqa: E402

TOKEN = "bench-long-run-token-0123456789"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(HERE, "..", "..", "build", "release"))
    ap.add_argument("--hosts", type=int, default=3)
    ap.add_argument("--units", type=int, default=2, help="units per host")
    ap.add_argument("--channels", type=int, default=1024)
    ap.add_argument("--rate", type=float, default=16.0, help="Mbit/s per unit (16: ~1 kHz of 1024 channels)")
    ap.add_argument("--seconds", type=float, default=600.0)
    ap.add_argument("--dir", default=None, help="work directory (default: a temporary one, removed)")
    a = ap.parse_args()
    bins = find_binaries(a.build, ("daqd", "daq-sim"))
    base = a.dir or tempfile.mkdtemp(prefix="daqctl-long-")
    os.makedirs(base, exist_ok=True)
    kids, procs, sims = None, [], []
    try:
        kids, procs, hosts, udp = start_hosts(bins, a.hosts, base, TOKEN, config_extra="[storage]\nflush_interval_ms = 1000\n")
        c = Cluster(hosts, master_dir=os.path.join(base, "master"))
        r = c.start("long01", write_master=False)
        print(f"started: commit answers within {r.skew_s * 1e3:.3f} ms", flush=True)
        sims = [kids.spawn(sim_argv(bins["daq-sim"], [udp[i]], units=a.units, channels=a.channels,
                                    first_unit=10 * i, duration=a.seconds, rate=a.rate * a.units),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i in range(a.hosts)]
        for p in sims:
            p.wait(a.seconds + 120)
        s = c.stop(allow_loss=True, write_master=False)
        print("stop:", "ok" if s.ok else "; ".join(s.problems), flush=True)
        frames = sum(h.answer["frames_written"] for h in s.hosts.values() if h.answer)
        sizes = sum(os.path.getsize(os.path.join(h.output_dir, f)) for h in hosts
                    for f in os.listdir(h.output_dir) if f.endswith(".h5"))
        t0 = time.monotonic()
        c.write_master("long01")
        dt = time.monotonic() - t0
        master = os.path.join(base, "master", "long01.h5")
        print(f"{a.hosts} hosts x {a.units} units x {a.channels} channels, {a.seconds:.0f} s at {a.rate:g} Mbit/s "
              f"per unit: {frames} frames, {sizes / 1e9:.2f} GB in the hosts' files; final master (with detector "
              f"view) written in {dt:.2f} s, {os.path.getsize(master) / 1e6:.2f} MB; load {os.getloadavg()[0]:.2f}")
    finally:
        for p in sims:
            if p.poll() is None:
                p.kill()
        for p in procs:
            stop(p, 60)
        if kids is not None:
            kids.stop_all(term_grace=5)
        if a.dir is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
