"""Compressed runs (storage.compression = "bslz4") written by a real daqd from
real UDP traffic, read back by every reader: h5py + hdf5plugin (Debian's
bitshuffle plugin), h5dump with the plugin directory, daq-inspect --verify,
daqload, and RunStream following the run live. The same traffic recorded
uncompressed is the reference."""

import subprocess
import threading
import time

import h5py
import hdf5plugin  # noqa: F401 - registers filter 32008 with h5py's HDF5
import numpy as np
import pytest

import daqload
from daqload.capture import Daqd, capture_run, simulate
from conftest import build_dir

PLUGINS = "/usr/lib/x86_64-linux-gnu/hdf5/serial/plugins"
FAULTS = ["--loss", "0.002", "--duplicate", "0.002", "--reorder", "0.002", "--malformed", "0.002", "--seed", "5"]
FIELDS = ("raw", "calibrated", "frame_number", "missing_packets")


def _units(path):
    with h5py.File(path, "r") as f:
        out = {}
        for u, g in f["units"].items():
            out[int(u[1:])] = {k: g[k][()] for k in FIELDS if k in g}
        return out, dict(f.attrs)


@pytest.fixture(scope="module")
def detector_pair(bins, tmp_path_factory):
    """The same detector traffic with faults (beam, calibrated rows) recorded raw and compressed."""
    d = tmp_path_factory.mktemp("bslz4")
    cfg = '[processing]\nstages = ["calibrate"]\nthreshold = 1500.0\nthreshold_mode = "absolute"\n[storage]\nflush_interval_ms = 100\n'
    args = dict(units=2, channels=4096, frames=2500, rate=400, sim_args=["--detector", "--beam"] + FAULTS)
    plain = capture_run(build_dir(), d, "plain", config=cfg, **args)
    packed = capture_run(build_dir(), d, "packed", config=cfg + 'compression = "bslz4"\n', **args)
    return plain, packed


def test_detector_run_with_faults_equals_the_raw_recording(detector_pair):
    plain, packed = detector_pair
    assert len(plain) == len(packed) == 1
    a, attrs_a = _units(plain[0])
    b, attrs_b = _units(packed[0])
    assert "compression" not in attrs_a  # an uncompressed file is as before
    assert attrs_b["compression"] == "bslz4"
    assert sorted(a) == sorted(b) == [0, 1]
    for u in a:
        # Frames both recordings hold (timing may close a frame differently
        # at a fault) are equal sample for sample, raw and calibrated.
        fa, fb = a[u]["frame_number"], b[u]["frame_number"]
        common, ia, ib = np.intersect1d(fa, fb, return_indices=True)
        assert len(common) >= 0.99 * max(len(fa), len(fb)), (u, len(common), len(fa), len(fb))
        same = a[u]["missing_packets"][ia] == b[u]["missing_packets"][ib]
        assert same.mean() > 0.99
        for k in ("raw", "calibrated"):
            x, y = a[u][k][ia][same], b[u][k][ib][same]
            assert x.shape == y.shape and x.dtype == y.dtype
            assert np.array_equal(x, y), (u, k)
        assert (b[u]["calibrated"] == 0).mean() > 0.5  # mostly zeros: what compresses
    with h5py.File(packed[0], "r") as f:
        for k in ("raw", "calibrated", "frame_number", "timestamp_ns", "missing_packets"):
            assert f[f"units/u0/{k}"]._filters.get("32008") == (0, 3, f[f"units/u0/{k}"].dtype.itemsize, 0, 2)
    # Detector data: what bitshuffle/LZ4 is for.
    import os
    assert os.path.getsize(packed[0]) < 0.5 * os.path.getsize(plain[0])


def test_h5dump_with_the_debian_plugin_prints_the_same_numbers(detector_pair):
    plain, packed = detector_pair
    b, _ = _units(packed[0])
    row = len(b[0]["frame_number"]) - 3  # in the last (partial) chunk
    out = []
    for f in (plain[0], packed[0]):
        p = subprocess.run(["h5dump", "-d", "/units/u0/frame_number", "-s", str(row), "-c", "2", f],
                           env={"HDF5_PLUGIN_PATH": PLUGINS, "PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        out.append(p.stdout[p.stdout.index("DATA {"):])
        q = subprocess.run(["h5dump", "-d", "/units/u0/raw", "-s", f"{row},0", "-c", "1,16", f],
                           env={"HDF5_PLUGIN_PATH": PLUGINS, "PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
        assert q.returncode == 0, q.stderr
    fn = b[0]["frame_number"][row]
    assert f"{fn}" in out[1]
    # The same frame number in both? Only if both recordings hold that row alike.
    a, _ = _units(plain[0])
    if len(a[0]["frame_number"]) == len(b[0]["frame_number"]) and a[0]["frame_number"][row] == fn:
        assert out[0] == out[1]


def test_daqload_reads_the_compressed_run_like_the_raw_one(detector_pair):
    plain, packed = detector_pair
    ra, rb = daqload.open_run(plain), daqload.open_run(packed)
    for u in ra.units:
        x = ra.read(u, fields=("raw", "calibrated", "frame_number"))
        y = rb.read(u, fields=("raw", "calibrated", "frame_number"))
        common, ia, ib = np.intersect1d(x["frame_number"], y["frame_number"], return_indices=True)
        assert len(common) > 0
        b, _ = _units(packed[0])
        assert np.array_equal(y["raw"], b[u]["raw"])
        assert np.array_equal(y["calibrated"], b[u]["calibrated"])


def test_pattern_run_with_faults_verifies_with_daq_inspect(bins, tmp_path):
    files = capture_run(build_dir(), tmp_path, "pat", units=3, channels=2048, frames=4000, rate=600,
                        config='[storage]\ncompression = "bslz4"\nflush_interval_ms = 100\n', sim_args=FAULTS)
    inspect = str(build_dir() / "tools" / "inspect" / "daq-inspect")
    p = subprocess.run([inspect, "--verify", *files], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "verify         OK" in p.stdout
    assert "compression    bslz4" in p.stdout


def test_runstream_follows_a_compressed_run_live(bins, tmp_path):
    cfg = '[storage]\nflush_interval_ms = 200\ncompression = "bslz4"\n'
    d = Daqd(build_dir(), tmp_path, "live", config=cfg).start()
    events = {}

    def drive():
        try:
            sim = simulate(build_dir(), d.port, units=2, duration=3, rate=60, background=True)
            out, err = sim.communicate(timeout=30)
            if sim.returncode != 0:
                raise RuntimeError(f"daq-sim failed: {err}")
            events["sim_done"] = time.monotonic()
            time.sleep(0.5)
            events["summary"] = d.stop(timeout=30)
        except BaseException as e:  # noqa: BLE001 - reported by the test
            events["error"] = e
            d.kill()

    driver = threading.Thread(target=drive, daemon=True)
    stream = daqload.RunStream(tmp_path / "live", fields=("raw", "frame_number", "unit"), idle_timeout=20,
                               poll_interval=0.05, reopen_interval=0.5)
    got, first_at = [], None
    driver.start()
    try:
        for x in stream:
            if first_at is None:
                first_at = time.monotonic()
            raw = np.asarray(x["raw"])
            got.append((int(x["unit"]), int(x["frame_number"]), int(raw.astype(np.int64).sum())))
    finally:
        driver.join(60)
        d.kill()
    assert "error" not in events, events.get("error")
    assert first_at is not None and first_at < events["sim_done"], "no frame was yielded while the run was growing"
    run = daqload.open_run(events["summary"]["files"])
    want = []
    for u in run.units:
        r = run.read(u, fields=("raw", "frame_number"))
        want += list(zip([u] * len(r["raw"]), r["frame_number"].tolist(), r["raw"].astype(np.int64).sum(axis=1).tolist()))
    assert len(got) == len(set(got)), "a frame was yielded twice"
    assert sorted(got) == sorted(want)
