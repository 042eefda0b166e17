"""daqctl against real daqd processes (issue 14): three daqd "hosts" on
distinct loopback ports, each with its own output directory, daq-sim units
spread over them.

Needs a daqd with the two-phase start (POST /api/v1/runs/commit); the tests
are skipped, saying so, with an older one. Every wait has a deadline.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import REPO, build_dir, pattern

sys.path.insert(0, str(REPO / "tools" / "daqctl"))

import daqload  # noqa: E402
from daqload.procs import Children, daqd_argv, free_ports, http, sim_argv, stop, wait_ready  # noqa: E402

CH = 256  # 512-byte frames: one datagram each, so a lost packet is a lost frame
FRAMES = 1500
TOKEN = "daqctl-test-token-0123456789"
FIELDS = ("raw", "frame_number", "timestamp_ns", "missing_packets")


def until(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout} s: {what}")
        time.sleep(0.05)


class Site:
    """n daqd hosts h0, h1, … under base/: base/hN/ holds host N's files, base/master the master files."""

    def __init__(self, bins, base, n=3, storage=None):
        self.bins = bins
        self.base = Path(base)
        self.base.mkdir(parents=True, exist_ok=True)
        self.children = Children(die_with_parent=True)
        self.token_file = self.base / "token"
        self.token_file.write_text(TOKEN + "\n")
        self.token_file.chmod(0o600)
        self.udp = free_ports(socket.SOCK_DGRAM, n)
        self.http = free_ports(socket.SOCK_STREAM, n)
        self.procs = [None] * n
        self.storage = storage or {}  # host -> extra [storage] keys (TOML text)
        self.logs = [self.base / f"daqd-h{i}.log" for i in range(n)]
        self.hosts_file = self.base / "hosts.toml"
        self.hosts_file.write_text("".join(
            f'[[hosts]]\nurl = "http://127.0.0.1:{self.http[i]}"\ntoken_file = "token"\ntag = "h{i}"\n'
            f'output_dir = "h{i}"\n' for i in range(n)))
        for i in range(n):
            self.start(i)

    def dir(self, i):
        return self.base / f"h{i}"

    def start(self, i):
        d = self.dir(i)
        d.mkdir(exist_ok=True)
        cfg = self.base / f"h{i}.toml"
        cfg.write_text(f'[http]\ntoken_file = "{self.token_file}"\n[storage]\nflush_interval_ms = 100\n'
                       + self.storage.get(i, ""))
        argv = daqd_argv(self.bins["daqd"], config=cfg, listen=[f"127.0.0.1:{self.udp[i]}"], output=d,
                         http=f"127.0.0.1:{self.http[i]}")
        with open(self.logs[i], "ab") as lg:
            p = self.children.spawn(argv, stdout=lg, stderr=lg)
        self.procs[i] = p
        url = f"http://127.0.0.1:{self.http[i]}/api/v1/status"
        wait_ready(p, lambda: http("GET", url, 2)[0] == 200, 30, what=f"daqd h{i}", goal="answer on HTTP",
                   log_path=self.logs[i])

    def status(self, i):
        code, answer, _ = http("GET", f"http://127.0.0.1:{self.http[i]}/api/v1/status", 5)
        assert code == 200, answer
        return answer

    def sim(self, i, *, units, first_unit, frames=FRAMES, rate=20, extra=()):
        argv = sim_argv(self.bins["daq-sim"], [self.udp[i]], units=units, channels=CH, first_unit=first_unit,
                        frames=frames, rate=rate, extra=extra)
        return self.children.spawn(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def daqctl(self, *args, timeout=60):
        env = dict(os.environ, PYTHONPATH=str(REPO / "tools" / "daqctl"))
        r = subprocess.run([sys.executable, "-m", "daqctl", "--hosts", str(self.hosts_file), "--master-dir",
                            str(self.base / "master"), *args], env=env, capture_output=True, text=True,
                           timeout=timeout, cwd=self.base)
        return r

    def drained(self, i):
        """The run of host i has written every frame it assembled."""
        c = (self.status(i).get("run") or {}).get("counts") or {}
        return c.get("frames_written", 0) and c["frames_written"] == c.get("frames_complete", 0) + \
            c.get("frames_incomplete", 0)

    def close(self):
        for p in self.procs:
            if p is not None and p.returncode is None:
                stop(p, 20)
        self.children.stop_all(term_grace=5)


@pytest.fixture
def site(bins, tmp_path):
    if not os.access(os.path.join(build_dir(), "daqd/daqd"), os.X_OK):
        pytest.skip("no daqd")
    # h2 rotates its files every 256 KiB (64 KiB chunks): its run is a series <run>_h2_00000.h5, …
    s = Site(bins, tmp_path / "site", storage={2: 'rotate_bytes = 262144\nchunk_bytes = 65536\n'})
    code, answer, _ = http("POST", f"http://127.0.0.1:{s.http[0]}/api/v1/runs/commit", 5, token=TOKEN,
                           body={"name": "probe"})
    if code != 409:
        s.close()
        pytest.skip(f"this daqd has no two-phase start (POST /api/v1/runs/commit answered {code}: {answer}); "
                    f"DAQD_BUILD_DIR={build_dir()}")
    yield s
    s.close()


def wait_sims(site, sims, timeout=60):
    for p in sims:
        try:
            _, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            raise
        assert p.returncode == 0, err
    for i in range(len(site.procs)):
        until(lambda: site.drained(i), 20, f"host h{i} wrote every frame")


def host_files(d, run, tag):
    """A host's files of a run in order: <run>_<tag>.h5, or the series <run>_<tag>_NNNNN.h5."""
    one = Path(d) / f"{run}_{tag}.h5"
    return [one] if one.exists() else sorted(Path(d).glob(f"{run}_{tag}_[0-9][0-9][0-9][0-9][0-9].h5"))


def host_rows(d, run, tag, unit):
    """A unit's rows over a host's files (h5py)."""
    parts = {k: [] for k in FIELDS}
    for p in host_files(d, run, tag):
        with h5py.File(p, "r") as f:
            if f"units/u{unit}" in f:
                for k in FIELDS:
                    parts[k].append(f[f"units/u{unit}/{k}"][:])
    return {k: np.concatenate(v) for k, v in parts.items()}


FIRST = 5  # frames 0..4 are sent before the run starts, so that every host knows its units at start


def test_start_stop_three_hosts_master_reads_back_everything(site, tmp_path):
    """Units 0,1 on h0, 2,3 on h1 (unit 3 with 3 % packet loss), 4,5 on h2; the master reads back every row."""
    pre = [site.sim(i, units=2, first_unit=2 * i, frames=FIRST, extra=["--no-eos"]) for i in range(3)]
    for p in pre:
        assert p.wait(30) == 0
    until(lambda: all({u["unit"] for u in site.status(i)["units"]} == {2 * i, 2 * i + 1} for i in range(3)), 20,
          "every host has seen its two units")
    r = site.daqctl("start", "r1", "--meta", "sample=x", "--meta", "energy_keV=12.4", "--meta", "n=3")
    assert r.returncode == 0, r.stderr
    assert "start skew" in r.stdout
    master = site.base / "master" / "r1.h5"
    with h5py.File(master, "r") as f:  # written at start: every unit, unlimited mappings
        assert f.attrs["master_state"] == "live"
        assert sorted(f["units"]) == [f"u{u}" for u in range(6)]
    ff = ["--first-frame", str(FIRST), "--seq-start", str(FIRST)]  # one packet per frame: packet_seq goes on
    sims = [site.sim(0, units=2, first_unit=0, rate=4, extra=ff), site.sim(1, units=1, first_unit=2, rate=2, extra=ff),
            site.sim(1, units=1, first_unit=3, rate=2, extra=ff + ["--loss", "0.03", "--seed", "5"]),
            site.sim(2, units=2, first_unit=4, rate=4, extra=ff)]
    # A live reader of the master sees rows arrive (unlimited mappings, SWMR).
    with h5py.File(master, "r", libver="latest", swmr=True) as f:
        def grown():
            d = f["units/u4/frame_number"]
            d.refresh()
            return d.shape[0] > 0
        until(grown, 30, "the live master shows rows of u4")
    wait_sims(site, sims)

    r = site.daqctl("stop")
    # Unit 3 lost frames: stop fails loudly, naming h1 and the counts, and still writes the master.
    assert r.returncode == 1
    assert "host h1" in r.stderr and "lost data" in r.stderr
    assert "host h0" not in r.stderr and "host h2" not in r.stderr
    assert "master file:" in r.stdout
    with h5py.File(master, "r") as f:
        assert f.attrs["master_state"] == "final"
        assert sorted(f["units"]) == [f"u{u}" for u in range(6)]
        for u in range(6):
            host = u // 2
            src = host_rows(site.dir(host), "r1", f"h{host}", u)
            for k in FIELDS:
                np.testing.assert_array_equal(f[f"units/u{u}/{k}"][:], src[k], err_msg=f"u{u} {k}")
            fn = src["frame_number"]
            if u != 3:
                np.testing.assert_array_equal(fn, np.arange(FIRST, FIRST + FRAMES))
            ok = src["missing_packets"] == 0
            np.testing.assert_array_equal(src["raw"][ok], pattern(fn[ok], np.full(ok.sum(), u), CH))
            assert f[f"units/u{u}"].attrs["host"] == f"h{host}"
        lost3 = np.setdiff1d(np.arange(FIRST, FIRST + FRAMES), f["units/u3/frame_number"][:]) - FIRST
        assert len(lost3) > 0, "the loss injected into unit 3 lost no frame"
        # The detector view: aligned by frame_number, unit 3's lost frames flagged and filled.
        d = f["detector"]
        assert d.attrs["NX_class"] == "NXdata"
        np.testing.assert_array_equal(d["frame_number"][:], np.arange(FIRST, FIRST + FRAMES))
        np.testing.assert_array_equal(d["unit_id"][:], np.arange(6))
        pres = d["present"][:]
        assert pres[:, [0, 1, 2, 4, 5]].all()
        np.testing.assert_array_equal(np.flatnonzero(pres[:, 3] == 0), lost3)
        data = d["data"][:]
        assert data.shape == (FRAMES, 6, CH)
        assert not data[lost3, 3].any()
        for u in range(6):
            fn = f[f"units/u{u}/frame_number"][:]
            np.testing.assert_array_equal(data[fn.astype(np.int64) - FIRST, u], f[f"units/u{u}/raw"][:])
        # Metadata in the master and in every host file (typed), NeXus classes on the groups.
        for p in [master] + [p for i in range(3) for p in host_files(site.dir(i), "r1", f"h{i}")]:
            with h5py.File(p, "r") as hf:
                attrs = hf["metadata"].attrs
                assert attrs["sample"] == "x" and attrs["energy_keV"] == pytest.approx(12.4) and attrs["n"] == 3, p
        assert f.attrs["NX_class"] == "NXroot" and f.attrs["default"] == "entry"
        assert f["entry"].attrs["NX_class"] == "NXentry" and f["entry/data"].attrs["NX_class"] == "NXdata"
        assert f["entry/instrument/u4/raw"].shape == (FRAMES, CH)
        # The hosts' accounting: summed, and per unit from its host.
        acc = f["accounting"]
        assert acc.attrs["frames_complete"] + acc.attrs["frames_incomplete"] == sum(
            f[f"units/u{u}/raw"].shape[0] for u in range(6))
        assert acc["u3"].attrs["frames_lost"] == len(lost3) and acc["u2"].attrs["frames_lost"] == 0
    files = {i: host_files(site.dir(i), "r1", f"h{i}") for i in range(3)}
    assert len(files[0]) == len(files[1]) == 1 and len(files[2]) >= 3, files  # h2's run rotated
    for i in range(3):
        for p in files[i]:
            with h5py.File(p, "r") as hf:
                assert hf.attrs["host"] == f"h{i}" and hf.attrs["run"] == "r1"

    # daq-inspect --verify on every host's files (a series is checked as one run).
    for i in range(3):
        v = subprocess.run([site.bins["daq-inspect"], "--verify", *map(str, files[i])],
                           capture_output=True, text=True, timeout=60)
        assert v.returncode == 0, v.stdout + v.stderr
    # … and on the master: the same frames through its virtual datasets, every sample checked.
    v = subprocess.run([site.bins["daq-inspect"], "--verify", str(master)], capture_output=True, text=True, timeout=120)
    assert v.returncode == 0, v.stdout + v.stderr
    with h5py.File(master, "r") as mf:
        rows = sum(mf["units"][u]["frame_number"].shape[0] for u in mf["units"])
    assert f"verify         OK ({rows} frames" in v.stdout, v.stdout

    # h5dump -A shows the NeXus classes and units of a host file.
    dump = subprocess.run(["h5dump", "-A", str(site.dir(0) / "r1_h0.h5")], capture_output=True, text=True,
                          timeout=60)
    assert dump.returncode == 0
    assert 'ATTRIBUTE "NX_class"' in dump.stdout and 'ATTRIBUTE "units"' in dump.stdout

    dump = subprocess.run(["h5dump", "-A", str(master)], capture_output=True, text=True, timeout=60)
    assert 'ATTRIBUTE "NX_class"' in dump.stdout and 'ATTRIBUTE "units"' in dump.stdout

    # daqload over the master: the hosts' files, every frame; the sampler covers all hosts' frames.
    run = daqload.open_run(master)
    assert run.master_read_path == "sources"
    assert sorted(run.files) == sorted(str(p) for i in range(3) for p in files[i])
    with h5py.File(master, "r") as f:
        for u in range(6):
            got = run.read(u, 0, None)
            for k in FIELDS:
                np.testing.assert_array_equal(got[k], f[f"units/u{u}/{k}"][:])
        dv = run.detector()
        np.testing.assert_array_equal(dv.read(100, 900), f["detector/data"][100:900])
    ds = daqload.RunDataset(master, fields=("raw", "unit"))
    order = list(daqload.ChunkShuffleSampler(ds, seed=3))
    assert sorted(order) == list(range(len(ds)))
    batch = ds.get_batch(order)  # every frame of every host, through the sampler's order
    units = batch["unit"].numpy()
    assert {int(u): int((units == u).sum()) for u in range(6)} == run.frame_counts
    fn = ds.frame_numbers()[order]
    ok = batch["raw"].numpy()[:, 0] == (fn * 7 + units * 13) % 65536
    assert ok.sum() >= len(order) - 100  # incomplete frames (unit 3) may hold zeros

    # Moved with its directory (the hosts' files and the master together), the master still reads.
    moved = tmp_path / "elsewhere" / "site-moved"
    moved.parent.mkdir()
    site.close()
    shutil.move(str(site.base), str(moved))
    with h5py.File(moved / "master" / "r1.h5", "r") as f:
        np.testing.assert_array_equal(f["units/u4/raw"][:], host_rows(moved / "h2", "r1", "h2", 4)["raw"])
        assert f["detector/data"][5, 0].any()
    run = daqload.open_run(moved / "master" / "r1")
    assert run.frame_counts[0] == FRAMES and all(str(moved) in p for p in run.files)


def test_one_host_refuses_nothing_is_left_behind(site):
    (site.dir(1) / "r2_h1.h5").write_bytes(b"")  # the name exists on h1
    r = site.daqctl("start", "r2")
    assert r.returncode == 1
    assert f"host h1 (http://127.0.0.1:{site.http[1]})" in r.stderr and "409" in r.stderr
    for i in range(3):
        assert site.status(i)["run"] is None
        assert sorted(p.name for p in site.dir(i).glob("r2_*")) == (["r2_h1.h5"] if i == 1 else [])
    assert not (site.base / "master" / "r2.h5").exists()


def test_host_killed_mid_run_then_recovered(site):
    r = site.daqctl("start", "r3")
    assert r.returncode == 0, r.stderr
    sims = [site.sim(i, units=1, first_unit=i, frames=4000, rate=5) for i in range(3)]
    until(lambda: all((site.status(i)["run"] or {}).get("frames_written", 0) > 300 for i in range(3)), 30,
          "every host wrote frames")
    time.sleep(0.3)  # at least one flush (100 ms) with rows on disk before the kill
    os.kill(site.procs[2].pid, signal.SIGKILL)
    site.procs[2].wait(10)
    for p in sims:
        p.communicate(timeout=60)
    for i in (0, 1):
        until(lambda: site.drained(i), 20, f"host h{i} wrote every frame")
    r = site.daqctl("stop")
    assert r.returncode == 1
    assert f"host h2 (http://127.0.0.1:{site.http[2]}): unreachable" in r.stderr
    master = site.base / "master" / "r3.h5"
    with h5py.File(master, "r") as f:
        assert sorted(f["units"]) == ["u0", "u1"]
        assert f["hosts/h2"].attrs["state"].startswith("left out")
        assert f["units/u0/raw"].shape == (4000, CH)
    assert daqload.open_run(master).frame_counts == {0: 4000, 1: 4000}
    # daqd mends its file at its next start; the master then includes it.
    site.start(2)
    until(lambda: "recovered" in site.logs[2].read_text(), 30, "h2 recovered its file")
    r = site.daqctl("master", "r3")
    assert r.returncode == 0, r.stderr
    with h5py.File(master, "r") as f:
        assert sorted(f["units"]) == ["u0", "u1", "u2"]
        n2 = f["units/u2/raw"].shape[0]
        assert 300 <= n2 <= 4000
        fn = f["units/u2/frame_number"][:]
        np.testing.assert_array_equal(f["units/u2/raw"][:], pattern(fn, np.full(n2, 2), CH))


def test_one_daqd_without_a_hosts_file(site):
    """--url/--token-file: a plain run (<run>.h5, no host tag, no master), as curl did it."""
    env = dict(os.environ, PYTHONPATH=str(REPO / "tools" / "daqctl"))
    ctl = [sys.executable, "-m", "daqctl", "--url", f"http://127.0.0.1:{site.http[0]}", "--token-file",
           str(site.token_file)]
    r = subprocess.run(ctl + ["start", "solo", "--meta", "sample=y"], env=env, capture_output=True, text=True,
                       timeout=60, cwd=site.base)
    assert r.returncode == 0, r.stderr
    assert site.status(0)["run"]["state"] == "recording"
    sim = site.sim(0, units=1, first_unit=9, frames=200)
    assert sim.wait(30) == 0
    until(lambda: site.drained(0), 20, "h0 wrote every frame")
    r = subprocess.run(ctl + ["stop"], env=env, capture_output=True, text=True, timeout=60, cwd=site.base)
    assert r.returncode == 0, r.stderr
    assert "solo" in r.stdout and "200" in r.stdout
    with h5py.File(site.dir(0) / "solo.h5", "r") as f:
        assert f["units/u9/raw"].shape == (200, CH) and f["metadata"].attrs["sample"] == "y"
    assert not (site.base / "solo.h5").exists() and not (site.base / "master").exists()
