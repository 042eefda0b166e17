"""Capture simulated runs with the real daqd and daq-sim binaries.

Used by the example, the benchmark and the tests::

    from daqload.capture import Daqd, simulate
    with Daqd("build/release", "runs", "beam01") as d:   # starts daqd --run beam01
        simulate("build/release", d.port, units=2, frames=3000, rate=800)
    # leaving the block stops daqd (SIGTERM: it drains and closes the run)
    print(d.summary["files"])
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import tempfile
import time

BINARIES = {"daqd": "daqd/daqd", "daq-sim": "tools/sim/daq-sim", "daq-inspect": "tools/inspect/daq-inspect"}


def find_binaries(build_dir) -> dict:
    """{name: path} of daqd, daq-sim and daq-inspect under a CMake build
    directory; FileNotFoundError naming what is missing."""
    out, missing = {}, []
    for name, rel in BINARIES.items():
        p = os.path.join(os.fspath(build_dir), rel)
        if os.access(p, os.X_OK):
            out[name] = p
        else:
            missing.append(p)
    if missing:
        raise FileNotFoundError(f"daqd binaries not built: missing {', '.join(missing)} "
                                "(build with scripts/build.sh release, or point at another build directory)")
    return out


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daqd:
    """daqd recording one run, as a context manager. ``config``: TOML text
    (e.g. "[storage]\\nrotate_bytes = \\"16MiB\\"\\n"); the listen address is
    given on the command line."""

    def __init__(self, build_dir, output_dir, run, *, config=None, port=None, extra_args=(), start_timeout=20.0):
        self.bins = find_binaries(build_dir)
        self.output_dir = os.fspath(output_dir)
        self.run = run
        self.port = port or free_udp_port()
        self.config = config
        self.extra_args = list(extra_args)
        self.start_timeout = start_timeout
        self.proc = None
        self.summary = None
        self.returncode = None
        self._tmp = tempfile.mkdtemp(prefix=f"daqd-{run}-")
        self.log_path = os.path.join(self._tmp, "daqd.log")
        self.summary_path = os.path.join(self._tmp, "summary.json")

    def start(self):
        os.makedirs(self.output_dir, exist_ok=True)
        argv = [self.bins["daqd"], "--listen", f"127.0.0.1:{self.port}", "--output", self.output_dir,
                "--run", self.run, "--summary-json", self.summary_path]
        if self.config:
            cfg = os.path.join(self._tmp, "daqd.toml")
            with open(cfg, "w") as f:
                f.write(self.config)
            argv[1:1] = ["--config", cfg]
        argv += self.extra_args
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daqd exited with {self.proc.returncode} at start:\n{self.log()}")
            if f"run {self.run} started" in self.log():
                return self
            time.sleep(0.02)
        self.kill()
        raise TimeoutError(f"daqd did not start run {self.run} within {self.start_timeout} s:\n{self.log()}")

    def log(self) -> str:
        try:
            with open(self.log_path) as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def stop(self, timeout=60.0):
        """SIGTERM: daqd drains its queues, closes the run (stopped_at) and exits."""
        if self.proc is None or self.returncode is not None:
            return self.summary
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise TimeoutError(f"daqd did not stop within {timeout} s:\n{self.log()}") from None
        self._log.close()
        if self.returncode != 0:
            raise RuntimeError(f"daqd exited with {self.returncode}:\n{self.log()}")
        with open(self.summary_path) as f:
            self.summary = json.load(f)
        return self.summary

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self):
        return self.start()

    def __exit__(self, et, ev, tb):
        if et is None:
            self.stop()
        else:
            self.kill()


def simulate(build_dir, port, *, units=1, channels=4096, frames=None, duration=None, rate=0, first_unit=0,
             extra_args=(), timeout=120.0, background=False):
    """Runs daq-sim against 127.0.0.1:port; returns its JSON summary (or,
    with background=True, the Popen whose stdout is the summary)."""
    bins = find_binaries(build_dir)
    argv = [bins["daq-sim"], "--target", f"127.0.0.1:{port}", "--units", str(units), "--channels", str(channels),
            "--first-unit", str(first_unit), "--rate", str(rate), "--quiet"]
    if duration is not None:
        argv += ["--duration", str(duration)]
    else:
        argv += ["--frames", str(frames if frames is not None else 1000)]
    argv += list(extra_args)
    if background:
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"daq-sim failed ({r.returncode}): {r.stderr}")
    return json.loads(r.stdout)


def capture_run(build_dir, output_dir, run, *, units=2, channels=4096, frames=3000, rate=800, config=None,
                sim_args=(), timeout=300.0) -> list:
    """Records a simulated run; returns the run's files."""
    with Daqd(build_dir, output_dir, run, config=config) as d:
        simulate(build_dir, d.port, units=units, channels=channels, frames=frames, rate=rate,
                 extra_args=sim_args, timeout=timeout)
    return list(d.summary["files"])
