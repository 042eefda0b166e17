#!/usr/bin/env python3
"""Start skew of daqctl's two-phase start over many runs.

Starts N daqd processes on loopback (distinct UDP and HTTP ports, one output
directory each; a build directory with daqd and daq-sim), then runs K cycles
of ``Cluster.start`` (prepare all, commit all at a barrier) and
``Cluster.stop`` while daq-sim sends to every host, and prints the skew of
each start: the time from the first to the last host's commit answer as
daqctl saw it, and the spread of the hosts' own ``started_unix_ns`` (one
clock here: all hosts are on this machine).

    /usr/bin/python3 tools/daqctl/bench_skew.py --build build/release --hosts 3 --runs 20
"""

import argparse
import os
import shutil
import statistics
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

TOKEN = "bench-skew-token-0123456789"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(HERE, "..", "..", "build", "release"))
    ap.add_argument("--hosts", type=int, default=3)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=0.5, help="each run's length (default 0.5)")
    ap.add_argument("--dir", default=None, help="work directory (default: a temporary one, removed)")
    a = ap.parse_args()
    bins = find_binaries(a.build, ("daqd", "daq-sim"))
    base = a.dir or tempfile.mkdtemp(prefix="daqctl-skew-")
    os.makedirs(base, exist_ok=True)
    kids, procs = None, []
    try:
        kids, procs, hosts, udp = start_hosts(bins, a.hosts, base, TOKEN)
        c = Cluster(hosts, master_dir=os.path.join(base, "master"))
        skews, spreads = [], []
        for k in range(a.runs):
            sims = [kids.spawn(sim_argv(bins["daq-sim"], [udp[i]], units=1, channels=256, first_unit=i,
                                        duration=a.seconds + 1.0, rate=2), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL) for i in range(a.hosts)]
            r = c.start(f"skew{k:03d}", write_master=False)
            time.sleep(a.seconds)
            s = c.stop(allow_loss=True, write_master=False)
            for p in sims:
                p.wait(30)
            if not s.ok:
                print("stop:", "; ".join(s.problems), file=sys.stderr)
            skews.append(r.skew_s * 1e3)
            spreads.append(r.started_spread_ns / 1e6 if r.started_spread_ns is not None else float("nan"))
            print(f"run {r.run}: commit answers within {r.skew_s * 1e3:.3f} ms; started_unix_ns spread "
                  f"{spreads[-1]:.3f} ms; per host +ms " + ", ".join(f"{t} {h.commit_answer_s * 1e3:.3f}"
                                                                     for t, h in r.hosts.items()))

        def line(name, xs):
            xs = sorted(xs)
            return (f"{name}: median {statistics.median(xs):.3f} ms, p90 {xs[int(0.9 * (len(xs) - 1))]:.3f} ms, "
                    f"max {xs[-1]:.3f} ms, min {xs[0]:.3f} ms")
        print(f"{a.runs} runs, {a.hosts} hosts on loopback, {os.cpu_count()} CPUs:")
        print("  " + line("first to last commit answer (daqctl)", skews))
        print("  " + line("hosts' started_unix_ns spread", spreads))
    finally:
        for p in procs:
            stop(p, 20)
        if kids is not None:
            kids.stop_all(term_grace=5)
        if a.dir is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
