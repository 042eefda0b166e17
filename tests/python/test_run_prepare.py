"""One daqd's side of a several-host run (docs/OPERATIONS.md "Several hosts"):
the two-phase start over the API (prepare, commit, abort, expiry), the host
tag in the file name, the metadata given at start, the NeXus classes, units
and geometry, and the run's own accounting in its file. Real daqd, real
daq-sim traffic, real files read with h5py and h5dump."""

import os
import socket
import subprocess
import time

import h5py
import numpy as np
import pytest

from daqload.procs import Children, daqd_argv, free_ports, free_udp_port, http, sim_argv, wait_ready, stop
from conftest import build_dir

TOKEN = "0123456789abcdef0123456789abcdef"
CHANNELS = 4096


class Host:
    """daqd serving the API without a run, fed by daq-sim (2 units, shape 64 x 64) for `sim_seconds`."""

    def __init__(self, tmp, bins, *, reserve="64MiB", sim_seconds=40):
        self.out = tmp / "runs"
        self.port = free_udp_port()
        self.http_port = free_ports(socket.SOCK_STREAM, 1)[0]
        self.url = f"http://127.0.0.1:{self.http_port}"
        cfg = tmp / "daqd.toml"
        cfg.write_text(f"""
[units]
learn = false
list = [
  {{ id = 1, channels = {CHANNELS}, shape = [64, 64] }},
  {{ id = 2, channels = {CHANNELS} }},
]
[storage]
reserve_bytes = "{reserve}"
flush_interval_ms = 200
[http]
token = "{TOKEN}"
""")
        self.children = Children()
        self.log_path = tmp / "daqd.log"
        with open(self.log_path, "wb") as log:
            self.daqd = self.children.spawn(
                daqd_argv(bins["daqd"], config=cfg, listen=[f"127.0.0.1:{self.port}"], output=self.out,
                          http=f"127.0.0.1:{self.http_port}"), stdout=log, stderr=subprocess.STDOUT)
        wait_ready(self.daqd, lambda: "http: status page" in self.log(), 20, what="daqd", goal="serve HTTP",
                   log_path=self.log_path)
        self.sim = self.children.spawn(sim_argv(bins["daq-sim"], [self.port], units=2, channels=CHANNELS, rate=100,
                                                first_unit=1, duration=sim_seconds),
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def log(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def call(self, method, path, body=None, token=TOKEN):
        code, j, _ = http(method, self.url + path, 10, token=token, body=body)
        return code, j

    def status(self):
        code, j = self.call("GET", "/api/v1/status")
        assert code == 200, j
        return j

    def wait(self, what, pred, timeout=20):
        deadline = time.monotonic() + timeout
        while True:
            s = self.status()
            if pred(s):
                return s
            assert time.monotonic() < deadline, f"waited {timeout} s for {what}; status: {s.get('run')}\n{self.log()[-2000:]}"
            time.sleep(0.05)

    def close(self):
        for p in (self.sim, self.daqd):
            if p.poll() is None:
                rc, _, timed_out = stop(p, 30, term_grace=0.0)
                assert not timed_out
        assert self.daqd.returncode == 0, self.log()[-3000:]


@pytest.fixture
def host(tmp_path, bins):
    h = Host(tmp_path, bins)
    yield h
    h.close()


def test_prepared_run_records_from_its_commit_into_a_self_describing_file(host):
    code, j = host.call("POST", "/api/v1/runs", {"name": "r1", "host": "hA", "prepare": True,
                                                  "meta": {"sample": "Si 111", "energy_keV": 12.4, "shots": 3,
                                                           "beam": True}})
    assert code == 201, j
    assert j["state"] == "prepared" and j["files"] == ["r1_hA.h5"] and j["file_stem"] == "r1_hA"
    path = host.out / "r1_hA.h5"
    assert path.exists()
    # Prepared: frames keep coming (unrecorded), none goes into the file.
    before = host.status()["writer"]["frames_unrecorded"]
    s = host.wait("frames taken while prepared", lambda s: s["writer"]["frames_unrecorded"] > before + 20)
    assert s["run"]["state"] == "prepared" and s["run"]["frames_written"] == 0
    assert s["run"]["run"] == "r1" and s["run"]["host"] == "hA" and s["run"]["meta"]["sample"] == "Si 111"

    code, c = host.call("POST", "/api/v1/runs/commit", {"name": "r1"})
    assert code == 200, c
    assert c["state"] == "recording" and abs(c["started_unix_ns"] / 1e9 - time.time()) < 30
    host.wait("frames recorded", lambda s: s["run"]["frames_written"] > 100)
    code, stopped = host.call("POST", "/api/v1/runs/stop")
    assert code == 200, stopped
    assert stopped["run"] == "r1" and stopped["host"] == "hA" and stopped["file_stem"] == "r1_hA"
    counts = stopped["counts"]

    with h5py.File(path, "r") as f:
        assert f.attrs["run"] == "r1" and f.attrs["host"] == "hA" and f.attrs["run_name"] == "r1_hA"
        assert f.attrs["NX_class"] == "NXroot" and f["entry"].attrs["NX_class"] == "NXentry"
        assert f["entry/instrument"].attrs["NX_class"] == "NXinstrument"
        m = f["metadata"].attrs
        assert m["sample"] == "Si 111" and m["energy_keV"] == 12.4 and m["shots"] == 3 and m["beam"] is np.True_
        u1, u2 = f["units/u1"], f["units/u2"]
        assert u1.attrs["NX_class"] == "NXdetector"
        assert list(u1.attrs["shape"]) == [64, 64] and "shape" not in u2.attrs
        # The NeXus view is the same group, not a copy.
        assert f["entry/instrument/u1"] == u1
        for ds, unit in (("raw", "counts"), ("frame_number", "1"), ("timestamp_ns", "ns"), ("missing_packets", "1")):
            assert u1[ds].attrs["units"] == unit and u1[ds].attrs["description"]
        # Frames before the commit are not in the file; the file holds what the stop said.
        rows = u1["frame_number"].shape[0] + u2["frame_number"].shape[0]
        assert rows == stopped["frames_written"]
        # The run's own accounting: the numbers the stop answered with.
        a = f["accounting"].attrs
        for k in ("packets_received", "packets_lost", "frames_complete", "frames_incomplete", "frames_lost"):
            assert a[k] == counts[k], k
        per_unit = f["accounting/u1"].attrs["frames_complete"] + f["accounting/u2"].attrs["frames_complete"]
        assert per_unit == a["frames_complete"] > 0
        assert a["frames_complete"] + a["frames_incomplete"] >= rows
    dump = subprocess.run(["h5dump", "-A", str(path)], capture_output=True, text=True, timeout=60)
    assert dump.returncode == 0, dump.stderr
    assert '"NXdetector"' in dump.stdout and '"counts"' in dump.stdout and '"NXentry"' in dump.stdout

    # The same run name on this host again: refused, naming the file; the old file untouched.
    size = path.stat().st_size
    code, j = host.call("POST", "/api/v1/runs", {"name": "r1", "host": "hA", "prepare": True})
    assert code == 409 and "r1_hA" in j["error"]
    assert path.stat().st_size == size


def test_abort_and_expiry_leave_nothing_behind(host):
    code, j = host.call("POST", "/api/v1/runs", {"name": "r2", "host": "hB", "prepare": True})
    assert code == 201, j
    assert (host.out / "r2_hB.h5").exists()
    code, a = host.call("POST", "/api/v1/runs/abort", {"name": "r2"})
    assert code == 200 and a["removed"] == ["r2_hB.h5"], a
    assert not (host.out / "r2_hB.h5").exists()
    assert host.status()["run"] is None
    # Abort of nothing, commit of nothing: 409.
    assert host.call("POST", "/api/v1/runs/abort", {"name": "r2"})[0] == 409
    assert host.call("POST", "/api/v1/runs/commit", {"name": "r2"})[0] == 409

    # Never committed: aborted by daqd at the timeout, its file gone, the next run starts.
    code, j = host.call("POST", "/api/v1/runs", {"name": "r3", "host": "hB", "prepare": True, "prepare_timeout_s": 1})
    assert code == 201, j
    host.wait("the prepared run to expire", lambda s: s["run"] is None, timeout=15)
    assert not (host.out / "r3_hB.h5").exists()
    assert "was prepared but not committed in time" in host.log()
    assert host.call("POST", "/api/v1/runs/commit", {"name": "r3"})[0] == 409
    code, j = host.call("POST", "/api/v1/runs", {"name": "r4", "host": "hB"})
    assert code == 201 and j["state"] == "recording" and j["files"] == ["r4_hB.h5"], j
    host.wait("frames recorded", lambda s: s["run"]["frames_written"] > 10)
    assert host.call("POST", "/api/v1/runs/stop")[0] == 200
    assert sorted(p.name for p in host.out.iterdir() if p.suffix == ".h5") == ["r4_hB.h5"]


def test_too_little_disk_refuses_the_prepare(tmp_path, bins):
    h = Host(tmp_path, bins, reserve="1000000TiB", sim_seconds=2)
    try:
        code, j = h.call("POST", "/api/v1/runs", {"name": "r5", "host": "hC", "prepare": True})
        assert code == 507 and "storage.reserve_bytes" in j["error"], j
        assert h.status()["run"] is None
        assert not any(p.suffix == ".h5" for p in h.out.iterdir()) if h.out.exists() else True
    finally:
        h.close()
