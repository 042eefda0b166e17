"""daqctl's control logic against small stand-in daqd servers (threads in this
process speaking the run API of docs/OPERATIONS.md, issue 14's two-phase
start included) that write small run files with h5py. No binaries needed: the
same scenarios against real daqd processes are in test_daqctl.py."""

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import REPO, write_run_file

sys.path.insert(0, str(REPO / "tools" / "daqctl"))

import daqctl  # noqa: E402
import daqload  # noqa: E402
from daqctl.cli import main as daqctl_main, parse_meta  # noqa: E402

TOKEN = "a-token-of-at-least-16-chars"


class FakeDaqd:
    """One stand-in daqd: units {id: frames}, its files in output_dir."""

    def __init__(self, output_dir, units, *, refuse=None, counts=None, lose=None, refuse_commit=None,
                 calibrated=False):
        self.dir = Path(output_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.units = units
        self.refuse = refuse  # (status, message) for the prepare
        self.refuse_commit = refuse_commit  # (status, message) for the commit
        self.calibrated = calibrated  # files with the calibrate stage's dataset
        self.counts = counts or {}
        self.lose = lose or {}  # unit -> frame numbers it never recorded
        self.run = None  # {"name", "tag", "state", "meta", "file"}
        self.calls = []
        fake = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, status, obj):
                body = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                fake.calls.append(("GET", self.path))
                if self.path == "/api/v1/status":
                    r = fake.run
                    self._send(200, {"output_dir": str(fake.dir),
                                     "units": [{"unit": u, "channels": 64} for u in fake.units],
                                     "run": None if r is None else {"name": r["name"], "state": r["state"],
                                                                    "frames_written": 0}})
                elif self.path == "/api/v1/runs":
                    self._send(200, {"output_dir": str(fake.dir), "runs": [{"name": p.stem} for p in fake.dir.glob("*.h5")]})
                else:
                    self._send(404, {"error": "no such resource"})

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n) or b"{}")
                fake.calls.append(("POST", self.path, body))
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    return self._send(401, {"error": "this request needs 'Authorization: Bearer <token>'"})
                self._send(*fake.post(self.path, body))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def post(self, path, body):
        r = self.run
        if path == "/api/v1/runs":
            if r is not None:
                return 409, {"error": f"run '{r['name']}' is active"}
            if self.refuse:
                return self.refuse[0], {"error": self.refuse[1]}
            name, tag = body["name"], body.get("host")
            fname = f"{name}_{tag}.h5" if tag else f"{name}.h5"
            if (self.dir / fname).exists():
                return 409, {"error": f"run '{name}' already exists in {self.dir}"}
            write_run_file(self.dir / fname, units={}, run_name=name, stopped=False)
            self.run = {"name": name, "tag": tag, "meta": body.get("meta") or {}, "file": self.dir / fname,
                        "state": "prepared" if body.get("prepare") else "recording"}
            return 201, {"run": name, "state": self.run["state"], "files": [fname], "host": tag}
        if path == "/api/v1/runs/commit":
            if r is None or r["state"] != "prepared" or r["name"] != body.get("name"):
                return 409, {"error": "not prepared"}
            if self.refuse_commit:
                return self.refuse_commit[0], {"error": self.refuse_commit[1]}
            r["state"] = "recording"
            return 200, {"run": r["name"], "state": "recording", "started": "2026-01-01T00:00:00.000Z",
                         "started_unix_ns": 1_700_000_000_000_000_000 + len(self.calls)}
        if path == "/api/v1/runs/abort":
            if r is None or r["name"] != body.get("name"):
                return 409, {"error": "no such run"}
            r["file"].unlink()
            self.run = None
            return 200, {"run": r["name"], "state": "aborted", "removed": [r["file"].name]}
        if path == "/api/v1/runs/stop":
            if r is None:
                return 409, {"error": "no run is active"}
            write_run_file(r["file"], units=self.units, run_name=r["name"], channels=64, calibrated=self.calibrated)
            with h5py.File(r["file"], "a") as f:
                f.attrs["host"] = r["tag"] or ""
                g = f.create_group("metadata")
                for k, v in r["meta"].items():
                    g.attrs[k] = v
                for u, lost in self.lose.items():
                    g = f[f"units/u{u}"]
                    keep = ~np.isin(g["frame_number"][:], lost)
                    for fld in ("raw", "frame_number", "timestamp_ns", "missing_packets", "calibrated"):
                        if fld not in g:
                            continue
                        a = g[fld][:][keep]
                        g[fld].resize((len(a),) + a.shape[1:])
                        g[fld][...] = a
            self.run = None
            counts = {"packets_lost": 0, "frames_lost": 0, "frames_written": sum(self.units.values())}
            counts.update(self.counts)
            return 200, {"run": r["name"], "files": [r["file"].name], "frames_written": sum(self.units.values()),
                         "failed": False, "error": "", "counts": counts}
        return 404, {"error": "no such resource"}

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fakes(tmp_path):
    made = []

    def make(*specs):
        (tmp_path / "token").write_text(TOKEN)
        out = []
        for i, (units, kw) in enumerate(specs):
            d = FakeDaqd(tmp_path / "runs", units, **kw)
            made.append(d)
            out.append(d)
        hosts = tmp_path / "hosts.toml"
        hosts.write_text("".join(f'[[hosts]]\nurl = "{d.url}"\ntoken_file = "token"\ntag = "h{i}"\noutput_dir = "runs"\n'
                                 for i, d in enumerate(out)))
        return out, hosts

    yield make
    for d in made:
        d.close()


def test_meta_values_are_typed():
    assert parse_meta(["sample=x", "energy_keV=12.4", "n=3", "on=true", "off=False", "s=1e3x", "e="]) == \
        {"sample": "x", "energy_keV": 12.4, "n": 3, "on": True, "off": False, "s": "1e3x", "e": ""}
    with pytest.raises(daqctl.DaqctlError, match="KEY=VALUE"):
        parse_meta(["novalue"])


def test_hosts_file_default_tags(tmp_path):
    p = tmp_path / "h.toml"
    p.write_text('[[hosts]]\nurl = "http://10.0.0.1:8080"\n[[hosts]]\nurl = "http://rx-2.lab:8080"\n')
    assert [h.tag for h in daqctl.Cluster.from_file(p).hosts] == ["10.0.0.1", "rx-2.lab"]
    p.write_text('[[hosts]]\nurl = "http://127.0.0.1:8081"\n[[hosts]]\nurl = "http://127.0.0.1:8082"\n')
    assert [h.tag for h in daqctl.Cluster.from_file(p).hosts] == ["127.0.0.1-8081", "127.0.0.1-8082"]
    p.write_text('[[hosts]]\nurl = "http://a:1"\ntag = "x"\n[[hosts]]\nurl = "http://b:1"\ntag = "x"\n')
    with pytest.raises(daqctl.DaqctlError, match="tag 'x' is used by more than one host"):
        daqctl.Cluster.from_file(p)
    p.write_text('[[hosts]]\nurl = "http://a:1"\ntag = "a b"\n')
    with pytest.raises(daqctl.DaqctlError, match=r"hosts\[0\]: tag 'a b'"):
        daqctl.Cluster.from_file(p)
    p.write_text('[[hosts]]\nurll = "http://a:1"\n')
    assert daqctl_main(["--hosts", str(p), "status"]) == 2


def test_start_stop_three_hosts_and_master(fakes, tmp_path, capsys):
    (a, b, c), hosts = fakes(({0: 40, 1: 40}, {}), ({2: 40}, dict(lose={2: [15, 16, 30]})), ({3: 40}, {}))
    md = tmp_path / "master"
    rc = daqctl_main(["--hosts", str(hosts), "--master-dir", str(md), "start", "r1", "--meta", "sample=x",
                      "--meta", "energy_keV=12.4"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "start skew" in out.out and "h0" in out.out
    for d, i in ((a, 0), (b, 1), (c, 2)):
        posts = [x for x in d.calls if x[0] == "POST"]
        assert posts[0][2] == {"name": "r1", "host": f"h{i}", "meta": {"sample": "x", "energy_keV": 12.4},
                               "prepare": True}
        assert posts[1] == ("POST", "/api/v1/runs/commit", {"name": "r1"})
    assert (md / "r1.h5").exists()
    with h5py.File(md / "r1.h5", "r") as f:
        assert f.attrs["master_state"] == "live"
        assert sorted(f["units"]) == ["u0", "u1", "u2", "u3"]
    rc = daqctl_main(["--hosts", str(hosts), "--master-dir", str(md), "stop"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    with h5py.File(md / "r1.h5", "r") as f:
        assert f.attrs["master_state"] == "final"
        assert f["metadata"].attrs["sample"] == "x" and f["metadata"].attrs["energy_keV"] == 12.4
        for u, host in ((0, "h0"), (1, "h0"), (2, "h1"), (3, "h2")):
            with h5py.File(tmp_path / "runs" / f"r1_{host}.h5", "r") as src:
                for fld in ("raw", "frame_number", "timestamp_ns", "missing_packets"):
                    np.testing.assert_array_equal(f[f"units/u{u}/{fld}"][:], src[f"units/u{u}/{fld}"][:])
        d = f["detector"]
        assert d["data"].shape == (40, 4, 64)
        np.testing.assert_array_equal(d["frame_number"][:], np.arange(10, 50))
        pres = d["present"][:]
        assert pres[:, [0, 1, 3]].all()
        assert list(np.flatnonzero(pres[:, 2] == 0)) == [5, 6, 20]
        assert not d["data"][5, 2].any()
        np.testing.assert_array_equal(d["data"][7, 2], f["units/u2/raw"][5])
        whole = d["data"][:]
    # daqload: the hosts' files directly, or the master's VDS through h5py; the same rows and view either way.
    direct, vds = daqload.open_run(md / "r1.h5"), daqload.open_run(md / "r1", resolve_master=False)
    assert direct.master_read_path == "sources" and len(direct.files) == 3
    assert vds.master_read_path == "h5py" and vds.files == [str(md / "r1.h5")] and vds.read_path() == "h5py"
    assert direct.frame_counts == vds.frame_counts == {0: 40, 1: 40, 2: 37, 3: 40}
    for u in direct.units:
        a, b = direct.read(u), vds.read(u)
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    for run in (direct, vds):
        view = run.detector()
        assert view.direct == (run is direct) and view.unit_ids == (0, 1, 2, 3)
        np.testing.assert_array_equal(view.read(), whole)
        np.testing.assert_array_equal(view.read(3, 9), whole[3:9])
    with pytest.raises(daqload.MissingFieldError, match="not a master file"):
        daqload.open_run(tmp_path / "runs" / "r1_h0.h5").detector()
    # A master whose host file went missing is an error naming it, not fill values.
    (tmp_path / "runs" / "r1_h2.h5").rename(tmp_path / "r1_h2.h5")
    with pytest.raises(daqload.RunNotFoundError, match=r"maps '../runs/r1_h2.h5', which is missing"):
        daqload.open_run(md / "r1.h5")


def test_one_host_refuses_nothing_is_left(fakes, tmp_path, capsys):
    (a, b, c), hosts = fakes(({0: 10}, {}), ({1: 10}, dict(refuse=(507, "free space 10 MiB below the reserve"))),
                             ({2: 10}, {}))
    rc = daqctl_main(["--hosts", str(hosts), "--master-dir", str(tmp_path / "m"), "start", "r2"])
    err = capsys.readouterr().err
    assert rc == 1
    assert f"host h1 ({b.url}): POST /api/v1/runs: HTTP 507: free space 10 MiB below the reserve" in err
    assert "aborted on h0, h2" in err
    assert list((tmp_path / "runs").glob("*.h5")) == []
    assert not (tmp_path / "m" / "r2.h5").exists()
    for d in (a, c):
        assert ("POST", "/api/v1/runs/abort", {"name": "r2"}) in d.calls
        assert not any(x[1] == "/api/v1/runs/commit" for x in d.calls if x[0] == "POST")


def test_stop_names_the_host_that_lost_data_or_is_gone(fakes, tmp_path, capsys):
    (a, b), hosts = fakes(({0: 10}, {}), ({1: 10}, dict(counts={"frames_lost": 3, "packets_lost": 7})))
    c = daqctl.Cluster.from_file(hosts, master_dir=tmp_path / "m")
    c.start("r3")
    r = c.stop()
    assert not r.ok
    assert r.problems == [f"host h1 ({b.url}): run 'r3' lost data: packets_lost=7, frames_lost=3"]
    assert r.master and os.path.exists(r.master)
    c.start("r4")
    b.close()
    r = c.stop()
    assert len(r.problems) == 1 and r.problems[0].startswith(f"host h1 ({b.url}): unreachable") or \
        "no answer" in r.problems[0]
    assert daqctl_main(["--hosts", str(hosts), "status"]) == 1
    assert "host h1" in capsys.readouterr().err


def test_two_hosts_recording_one_unit_is_an_error(fakes, tmp_path):
    (a, b), hosts = fakes(({0: 10, 1: 10}, {}), ({1: 10}, {}))
    c = daqctl.Cluster.from_file(hosts, master_dir=tmp_path / "m")
    c.start("r5")
    r = c.stop()
    assert r.master is None
    assert any("unit 1 is recorded by two hosts: h0 (r5_h0.h5) and h1 (r5_h1.h5)" in p for p in r.problems)


def test_console_script_entry_point(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO / "tools" / "daqctl"))
    r = subprocess.run([sys.executable, "-m", "daqctl", "--url", "http://127.0.0.1:9", "status"], env=env,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert "host 127.0.0.1 (http://127.0.0.1:9): unreachable" in r.stderr


WRITER = r'''
import sys, time, os, h5py, numpy as np
path, ctl = sys.argv[1], sys.argv[2]
f = h5py.File(path, "w", libver="latest")
f.attrs["format"] = "daq1-run"; f.attrs["format_version"] = np.int32(1); f.attrs["run_name"] = "live"
f.attrs["started_at"] = "2026-01-01T00:00:00.000Z"
g = f.create_group("units/u7"); g.attrs["unit_id"] = np.int32(7); g.attrs["channels"] = np.int32(16)
ds = {k: g.create_dataset(k, shape=(0,) + s, maxshape=(None,) + s, chunks=(8,) + s, dtype=t)
      for k, s, t in (("raw", (16,), "<u2"), ("frame_number", (), "<u8"), ("timestamp_ns", (), "<u8"),
                      ("missing_packets", (), "<u2"))}
f.swmr_mode = True
for step in (1, 2):
    n = 20 * step
    for k, d in ds.items():
        d.resize((n,) + d.shape[1:])
        d[n - 20:n] = (np.arange(n - 20, n)[:, None] if k == "raw" else np.arange(n - 20, n))
        d.flush()
    open(os.path.join(ctl, f"wrote{step}"), "w").close()
    deadline = time.monotonic() + 30
    while not os.path.exists(os.path.join(ctl, f"go{step}")):
        assert time.monotonic() < deadline
        time.sleep(0.01)
f.attrs["stopped_at"] = "2026-01-01T00:01:00.000Z"
f.close()
'''


def test_live_master_follows_a_file_being_written(tmp_path):
    """Unlimited mappings: a SWMR reader of the master sees the rows a writer adds (h5py stands in for daqd)."""
    from daqctl import master as m

    runs, ctl = tmp_path / "runs", tmp_path / "ctl"
    runs.mkdir()
    ctl.mkdir()
    w = subprocess.Popen([sys.executable, "-c", WRITER, str(runs / "live_h0.h5"), str(ctl)])
    try:
        def wait(name):
            deadline = time.monotonic() + 30
            while not (ctl / name).exists():
                assert w.poll() is None and time.monotonic() < deadline
                time.sleep(0.01)
        wait("wrote1")
        c = daqctl.Cluster([daqctl.Host("http://127.0.0.1:9", tag="h0", output_dir=str(runs))], master_dir=tmp_path / "m")
        path, _ = m.write_master(c, "live", live=True)
        with h5py.File(path, "r", libver="latest", swmr=True) as f:
            assert f.attrs["master_state"] == "live" and "detector" not in f
            raw = f["units/u7/raw"]
            assert raw.shape == (20, 16) and raw.maxshape == (None, 16)
            np.testing.assert_array_equal(raw[19], np.full(16, 19))
            (ctl / "go1").touch()
            wait("wrote2")
            raw.refresh()
            assert raw.shape == (40, 16)
            np.testing.assert_array_equal(f["units/u7/frame_number"][:], np.arange(40))
        live = daqload.open_run(path)  # a live master: its VDS through h5py, as a SWMR reader
        assert live.master_read_path == "h5py" and live.live and live.frame_counts == {7: 40}
        np.testing.assert_array_equal(live.read(7, 30, 40)["raw"][:, 0], np.arange(30, 40))
        live.close()
        (ctl / "go2").touch()
        assert w.wait(30) == 0
        # Closed now: a plain rebuild maps it with fixed mappings, and daqload reads it from the file itself.
        path, notes = c.write_master("live")
        with h5py.File(path, "r") as f:
            assert f.attrs["master_state"] == "final" and f["units/u7/raw"].maxshape == (40, 16)
        run = daqload.open_run(path)
        assert run.master_read_path == "sources" and run.frame_counts == {7: 40}
    finally:
        if w.poll() is None:
            w.kill()
            w.wait()


def test_pip_installs_daqctl_with_its_console_script(tmp_path):
    pytest.importorskip("pip")
    src = tmp_path / "daqctl"
    shutil.copytree(REPO / "tools" / "daqctl", src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "--no-index",
                        "--disable-pip-version-check", "--target", str(target), str(src)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    env = dict(os.environ, PYTHONPATH=str(target))
    r = subprocess.run([str(target / "bin" / "daqctl"), "--version"], capture_output=True, text=True, env=env,
                       timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "daqctl 0.1.0", r.stderr
    # The control part is the standard library only: importing daqctl loads no h5py (nor numpy).
    r = subprocess.run([sys.executable, "-c", "import sys, daqctl, daqctl.cli; print(daqctl.__file__, "
                        "'h5py' in sys.modules, 'numpy' in sys.modules)"], capture_output=True, text=True, env=env,
                       cwd=str(tmp_path), timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(target / "daqctl" / "__init__.py"), "False", "False"]


def test_a_failed_commit_aborts_every_host(fakes, tmp_path):
    (a, b, c), hosts = fakes(({0: 10}, {}), ({1: 10}, {}), ({2: 10}, dict(refuse_commit=(500, "writer gone"))))
    cl = daqctl.Cluster.from_file(hosts, master_dir=tmp_path / "m")
    with pytest.raises(daqctl.StartError) as ei:
        cl.start("r6")
    e = ei.value
    assert e.failures == {"h2": f"host h2 ({c.url}): POST /api/v1/runs/commit: HTTP 500: writer gone"}
    assert sorted(e.aborted) == ["h0", "h1", "h2"] and not e.abort_failures
    assert "commit failed on 1 of 3 host(s)" in str(e)
    assert list((tmp_path / "runs").glob("*.h5")) == [] and not (tmp_path / "m" / "r6.h5").exists()
    assert all(d.run is None for d in (a, b, c))


def test_calibrated_units_give_a_calibrated_detector_view(fakes, tmp_path):
    (a, b), hosts = fakes(({0: 30}, dict(calibrated=True)), ({1: 30}, dict(calibrated=True, lose={1: [12, 13]})))
    cl = daqctl.Cluster.from_file(hosts, master_dir=tmp_path / "m")
    cl.start("r7")
    r = cl.stop()
    assert r.ok, r.problems
    with h5py.File(r.master, "r") as f:
        cal = f["detector/calibrated"]
        assert cal.shape == (30, 2, 64) and cal.dtype == np.float32
        assert np.isnan(cal[2, 1]).all() and np.isnan(cal[3, 1]).all()  # frames 12, 13 of unit 1: fill NaN
        np.testing.assert_array_equal(cal[:, 0], f["units/u0/calibrated"][:])
        whole = cal[:]
    for run in (daqload.open_run(r.master), daqload.open_run(r.master, resolve_master=False)):
        view = run.detector()
        assert view.fields == ("raw", "calibrated")
        np.testing.assert_array_equal(view.read(field="calibrated"), whole)  # NaN matches NaN here
