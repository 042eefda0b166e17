"""Capture simulated runs with the real daqd and daq-sim binaries.

Used by the example, the benchmark and the tests::

    from daqload.capture import Daqd, simulate
    with Daqd("build/release", "runs", "beam01") as d:   # starts daqd --run beam01
        simulate("build/release", d.port, units=2, frames=3000, rate=800)
    # leaving the block stops daqd (SIGTERM: it drains and closes the run)
    print(d.summary["files"])

Starting and stopping the processes is daqload.procs, shared with the soak and
the receive bench.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile

from .procs import Children, daqd_argv, find_binaries, free_udp_port, popen, sim_argv, stop, wait_ready

__all__ = ["Daqd", "simulate", "capture_run", "recompress_run", "find_binaries", "free_udp_port"]


class Daqd:
    """daqd recording one run, as a context manager. ``config``: TOML text
    (e.g. "[storage]\\nrotate_bytes = \\"16MiB\\"\\n"); the listen address is
    given on the command line. start() raises procs.StartError (a RuntimeError)
    when daqd exits at start, procs.StartTimeout (also a TimeoutError) when the
    run has not started within start_timeout; both carry daqd's log."""

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
        self._children = Children()
        self._tmp = tempfile.mkdtemp(prefix=f"daqd-{run}-")
        self.log_path = os.path.join(self._tmp, "daqd.log")
        self.summary_path = os.path.join(self._tmp, "summary.json")

    def start(self):
        os.makedirs(self.output_dir, exist_ok=True)
        cfg = None
        if self.config:
            cfg = os.path.join(self._tmp, "daqd.toml")
            with open(cfg, "w") as f:
                f.write(self.config)
        argv = daqd_argv(self.bins["daqd"], config=cfg, listen=[f"127.0.0.1:{self.port}"], output=self.output_dir,
                         run=self.run, summary_json=self.summary_path, extra=self.extra_args)
        with open(self.log_path, "wb") as log:
            self.proc = self._children.spawn(argv, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_ready(self.proc, lambda: f"run {self.run} started" in self.log(), self.start_timeout, what="daqd",
                       goal=f"start run {self.run}", log_path=self.log_path, log_lines=200)
        except BaseException:
            self.kill()
            raise
        return self

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
        rc, _, timed_out = stop(self.proc, timeout, term_grace=0.0)
        if timed_out:
            self.kill()
            raise TimeoutError(f"daqd did not stop within {timeout} s:\n{self.log()}")
        self.returncode = rc
        if rc != 0:
            raise RuntimeError(f"daqd exited with {rc}:\n{self.log()}")
        with open(self.summary_path) as f:
            self.summary = json.load(f)
        return self.summary

    def kill(self):
        self._children.stop_all(term_grace=0)

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
    if duration is None and frames is None:
        frames = 1000
    argv = sim_argv(bins["daq-sim"], [port], units=units, channels=channels, first_unit=first_unit, rate=rate,
                    duration=duration, frames=None if duration is not None else frames, extra=extra_args)
    # procs.popen, not subprocess.Popen: a DataLoader worker forked meanwhile by another thread must not
    # keep the pipes open (Popen would wait for that worker to exit before returning).
    p = popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if background:
        return p
    try:
        out, err = p.communicate(timeout=timeout)
    except BaseException:
        p.kill()
        p.communicate()
        raise
    if p.returncode != 0:
        raise RuntimeError(f"daq-sim failed ({p.returncode}): {err}")
    return json.loads(out)


def capture_run(build_dir, output_dir, run, *, units=2, channels=4096, frames=3000, rate=800, config=None,
                sim_args=(), timeout=300.0) -> list:
    """Records a simulated run; returns the run's files."""
    with Daqd(build_dir, output_dir, run, config=config) as d:
        simulate(build_dir, d.port, units=units, channels=channels, frames=frames, rate=rate,
                 extra_args=sim_args, timeout=timeout)
    return list(d.summary["files"])


def recompress_run(files, output_dir) -> list:
    """Copies a run's files into output_dir (same names) with every dataset
    of the unit groups rewritten as daqd's compressed runs store them:
    bitshuffle + LZ4 (HDF5 filter 32008, cd_values (0, 3, item size, 0, 2)),
    the same chunks, shape, maxshape and attributes, and the root attribute
    ``compression = "bslz4"``. Written with h5py + hdf5plugin, for runs
    recorded without compression (and for the tests and the benchmark).
    Returns the new files."""
    import h5py
    import hdf5plugin

    os.makedirs(output_dir, exist_ok=True)
    out = []

    def copy_attrs(src, dst):
        for k, v in src.attrs.items():
            dst.attrs.create(k, v, dtype=src.attrs.get_id(k).dtype)

    def copy_group(src, dst):
        copy_attrs(src, dst)
        for name, obj in src.items():
            if isinstance(obj, h5py.Group):
                copy_group(obj, dst.create_group(name))
            elif isinstance(obj, h5py.Dataset):
                if obj.chunks is None:
                    d = dst.create_dataset(name, data=obj[()], dtype=obj.dtype)
                else:
                    d = dst.create_dataset(name, shape=obj.shape, dtype=obj.dtype, chunks=obj.chunks,
                                           maxshape=obj.maxshape, **hdf5plugin.Bitshuffle(nelems=0, cname="lz4"))
                    step = obj.chunks[0] * max(1, (64 << 20) // max(1, obj.chunks[0] * obj.dtype.itemsize
                                                                      * int(np.prod(obj.shape[1:], dtype=np.int64))))
                    for a in range(0, obj.shape[0], step):
                        d[a:a + step] = obj[a:a + step]
                copy_attrs(obj, d)

    import numpy as np
    for path in files:
        dst = os.path.join(output_dir, os.path.basename(path))
        with h5py.File(path, "r") as src, h5py.File(dst, "w", libver="latest") as f:
            copy_group(src, f)
            f.attrs["compression"] = "bslz4"
        out.append(dst)
    return out
