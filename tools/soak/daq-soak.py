#!/usr/bin/python3
"""daq-soak.py: a bounded soak test of daqd — steady traffic for a while, watching memory, losses and latency.

Starts daqd (a configuration written for the soak: loopback links and HTTP
port chosen free, output in the work directory, files rotated), starts a run,
drives daq-sim at a fixed rate for --duration seconds, and every
--sample-interval seconds records daqd's memory (/proc/PID/status), CPU time
(/proc/PID/stat) and a scrape of /metrics. At the end it stops everything,
reads daqd's summary and prints a table and a verdict (PASS/FAIL) on zero
loss, RSS growth after warm-up, and steadiness of the frame latency p99.
See tools/soak/README.md.

Standard library only. Every wait has a deadline; every child process is
stopped on every exit path (also Ctrl-C), and the tool stops by itself.

The code by role is in daqsoak/ (scenario, soak, samples, checks, report);
launching the binaries and reading Prometheus text is daqload.procs.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from daqsoak import EXIT_ERROR, EXIT_FAIL, EXIT_INTERRUPTED, EXIT_PASS, SetupError, log
from daqsoak import checks, report
from daqsoak.scenario import GIB, size_arg
from daqsoak.soak import Soak
from daqload.procs import loadavg


def main() -> int:
    ap = argparse.ArgumentParser(
        description="Soak daqd: steady daq-sim traffic for a bounded time; memory, losses and latency sampled; "
                    "PASS/FAIL verdict. See tools/soak/README.md.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = ap.add_argument_group("traffic")
    g.add_argument("--duration", type=float, default=600, help="seconds of traffic")
    g.add_argument("--rate-mbit", type=float, default=1000,
                   help="total offered rate, Mbit/s of UDP payload (1000: at least half the sustained lossless "
                        "recording rate of the 2-core VM, docs/RELIABILITY.md; 3 s trials reach 4 Gbit/s only "
                        "into the page cache)")
    g.add_argument("--links", type=int, default=2, help="UDP links (loopback ports)")
    g.add_argument("--units", type=int, default=4, help="simulated units, spread round-robin over the links")
    g.add_argument("--channels", type=int, default=4096, help="channels per frame")
    g.add_argument("--datagram", type=int, default=1472, help="datagram size (UDP payload bytes)")
    g.add_argument("--sim-mode", default="gso", choices=["gso", "sendmmsg"], help="daq-sim --mode")
    g = ap.add_argument_group("daqd")
    g.add_argument("--build-dir", default="build/release", help="where daqd/daqd and tools/sim/daq-sim are")
    g.add_argument("--control", default="http", choices=["http", "cli"],
                   help="start/stop the run over the HTTP API (POST /api/v1/runs with the token), or with "
                        "daqd --run and SIGTERM")
    g.add_argument("--backend", choices=["auto", "recvmmsg", "io_uring"], help="acquisition.backend")
    g.add_argument("--rotate-bytes", type=size_arg, default=4 * GIB,
                   help="storage.rotate_bytes; without --keep, closed files are deleted while running (0: one file, "
                        "which must fit on the disk)")
    g.add_argument("--set", action="append", metavar="TABLE.KEY=VALUE",
                   help="any other daqd configuration key (docs/CONFIG.md), repeatable, e.g. "
                        "--set assembly.buffer_seconds=4 --set storage.flush_interval_ms=500")
    g.add_argument("--daqd-arg", action="append", metavar="ARG", help="extra daqd command-line argument, repeatable "
                   "(e.g. --daqd-arg=--gro)")
    g = ap.add_argument_group("sampling and verdict")
    g.add_argument("--sample-interval", type=float, default=5.0, help="seconds between samples")
    g.add_argument("--warmup", type=float, help="seconds before the RSS baseline and the latency window (default: "
                   "max(min(30, duration/4), 2 x (the time for daqd to touch its packet ring + 2 s for the frame "
                   "buffer's working set)))")
    g.add_argument("--rss-growth-pct", type=float, default=5.0, help="RSS growth limit, %% of the baseline")
    g.add_argument("--rss-growth-mib", type=float, default=16.0, help="RSS growth limit, MiB (the larger limit "
                   "applies)")
    g.add_argument("--latency-p99-factor", type=float, default=4.0,
                   help="max interval p99 must be within this factor of the median interval p99")
    g.add_argument("--latency-min-count", type=int, default=100,
                   help="intervals with fewer latency observations are not judged")
    g.add_argument("--min-rate-fraction", type=float, default=0.9,
                   help="daq-sim must reach this fraction of --rate-mbit")
    g.add_argument("--no-status-poll", dest="poll_status", action="store_false",
                   help="do not also GET /api/v1/status at each sample (as the status page would)")
    g = ap.add_argument_group("files and deadlines")
    g.add_argument("--workdir", help="a new or empty directory for config, logs and run files (default: a fresh "
                   "temporary directory, deleted at the end unless --keep)")
    g.add_argument("--keep", action="store_true", help="keep every run file and the work directory (no deletion "
                   "while running: the whole run must fit on the disk)")
    g.add_argument("--min-free", type=size_arg, default=GIB, help="disk space to leave free; the soak stops early "
                   "if free space falls below half of it")
    g.add_argument("--json", help="write everything (settings, samples, summaries, verdict) to this file")
    g.add_argument("--start-timeout", type=float, default=30, help="seconds for daqd to bind and answer")
    g.add_argument("--stop-timeout", type=float, default=120, help="seconds for the run stop and for daqd to exit")
    g.add_argument("--drain-timeout", type=float, default=15, help="seconds to wait after daq-sim for daqd to "
                   "receive and write what was sent")
    g.add_argument("--sim-slack", type=float, default=60, help="daq-sim is stopped this long after --duration")
    g.add_argument("--scrape-timeout", type=float, default=10, help="seconds per HTTP request")
    a = ap.parse_args()
    if a.duration <= 0 or a.rate_mbit <= 0 or a.sample_interval <= 0 or a.links < 1 or a.units < 1:
        ap.error("--duration, --rate-mbit, --sample-interval, --links and --units must be positive")
    if a.rotate_bytes and a.rotate_bytes < 65536:
        ap.error("--rotate-bytes: 0 or at least 65536 (storage.rotate_bytes)")

    soak = Soak(a)
    state = dict(signals=0)

    def on_signal(sig, frame):
        state["signals"] += 1
        raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    rc = EXIT_ERROR
    try:
        soak.prepare()
        soak.start_daqd()
        soak.start_run()
        try:
            soak.traffic()
        except KeyboardInterrupt:
            soak.interrupted = True
            log("interrupted: stopping daq-sim and daqd (interrupt again to kill them)")
            soak.interrupt_sim()
        soak.finish()
        soak.meta["load_after"] = loadavg()
        checks.evaluate(soak)
        report.print_report(soak)
        rc = {"PASS": EXIT_PASS, "FAIL": EXIT_FAIL}.get(soak.verdict, EXIT_INTERRUPTED)
    except SetupError as e:
        print(f"daq-soak: {e}", file=sys.stderr)
        soak.errors.append(str(e))
        rc = EXIT_ERROR
    except KeyboardInterrupt:
        log("interrupted again: killing the child processes")
        soak.interrupted = True
        soak.verdict = "INTERRUPTED"
        rc = EXIT_INTERRUPTED
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # clean-up is not interrupted half-way
        try:
            if a.json:
                try:
                    Path(a.json).write_text(json.dumps(report.as_json(soak), indent=1, default=str) + "\n")
                    log(f"wrote {a.json}")
                except OSError as e:
                    log(f"cannot write {a.json}: {e}")
        finally:
            soak.cleanup()
    return rc


if __name__ == "__main__":
    sys.exit(main())
