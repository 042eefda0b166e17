"""SIGHUP with a new processing.threshold (docs/OPERATIONS.md "Reloading"):
the run recording keeps the threshold its file records; the next run takes
the new one, every row of each file calibrated with its own file's threshold
(rows queued before the new run started are calibrated again by the writer);
no frame lost. Real daqd, daq-sim detector data, h5py."""

import signal
import socket
import subprocess
import time

import h5py
import numpy as np

from daqload.procs import Children, daqd_argv, free_ports, free_udp_port, http, sim_argv, stop, wait_ready

TOKEN = "0123456789abcdef0123456789abcdef"
CONFIG = """
[units]
learn = false
list = [ {{ id = 1, channels = 1024 }}, {{ id = 2, channels = 1024 }} ]
[processing]
stages = ["calibrate", "dose"]
threshold_mode = "absolute"
threshold = {threshold}
[storage]
flush_interval_ms = 200
[http]
token = "{token}"
"""


def check_file(path, threshold):
    """Every calibrated row is raw thresholded at `threshold` (identity constants); returns the rows."""
    rows = 0
    with h5py.File(path, "r") as f:
        for name in ("u1", "u2"):
            g = f["units"][name]
            assert g["calibration"].attrs["threshold_value"] == threshold
            assert g["calibration"].attrs["threshold_mode"] == "absolute"
            raw = g["raw"][()].astype(np.float32)
            cal = g["calibrated"][()]
            want = np.where(raw < threshold, np.float32(0), raw)
            assert np.array_equal(cal, want), f"{path} {name}: {np.count_nonzero(cal != want)} values differ"
            # The threshold matters for this data: some values cut, some kept.
            assert 0 < np.count_nonzero(cal) < cal.size
            rows += raw.shape[0]
    return rows


def test_a_new_threshold_applies_from_the_next_run(tmp_path, bins):
    cfg = tmp_path / "daqd.toml"
    cfg.write_text(CONFIG.format(threshold=995.0, token=TOKEN))
    port, http_port = free_udp_port(), free_ports(socket.SOCK_STREAM, 1)[0]
    url = f"http://127.0.0.1:{http_port}"
    out = tmp_path / "runs"
    children = Children()
    log_path = tmp_path / "daqd.log"
    log = lambda: log_path.read_text(errors="replace")  # noqa: E731
    with open(log_path, "wb") as lg:
        d = children.spawn(daqd_argv(bins["daqd"], config=cfg, listen=[f"127.0.0.1:{port}"], output=out,
                                     http=f"127.0.0.1:{http_port}"), stdout=lg, stderr=subprocess.STDOUT)
    wait_ready(d, lambda: "http: status page" in log(), 20, what="daqd", goal="serve HTTP", log_path=log_path)

    def call(method, path, body=None):
        code, j, _ = http(method, url + path, 10, token=TOKEN, body=body)
        return code, j

    def written_at_least(n, timeout=20):
        deadline = time.monotonic() + timeout
        while call("GET", "/api/v1/status")[1]["run"]["frames_written"] < n:
            assert time.monotonic() < deadline, log()[-2000:]
            time.sleep(0.05)

    sim = children.spawn(sim_argv(bins["daq-sim"], [port], units=2, channels=1024, rate=40, first_unit=1,
                                  duration=30, extra=["--detector"]),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert call("POST", "/api/v1/runs", {"name": "t1"})[0] == 201
        written_at_least(200)
        cfg.write_text(CONFIG.format(threshold=1040.0, token=TOKEN))
        d.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "SIGHUP: processing.threshold" not in log():
            assert time.monotonic() < deadline, log()[-2000:]
            time.sleep(0.05)
        assert "SIGHUP: processing.threshold absolute 1040: applies from the next run's start (run t1 keeps" in log()
        assert "applied processing.threshold = 1040.0 (was 995.0)" in log()
        written_at_least(400)
        code, s1 = call("POST", "/api/v1/runs/stop")
        assert code == 200
        code, _ = call("POST", "/api/v1/runs", {"name": "t2"})
        assert code == 201
        written_at_least(300)
        code, s2 = call("POST", "/api/v1/runs/stop")
        assert code == 200
    finally:
        if sim.poll() is None:
            stop(sim, 10, term_grace=0.0)
        rc, _, timed_out = stop(d, 30, term_grace=0.0)
        assert not timed_out and rc == 0, log()[-3000:]
    assert "processing: threshold now absolute 1040 (was absolute 995)" in log()
    assert check_file(out / "t1.h5", 995.0) == s1["frames_written"]
    assert check_file(out / "t2.h5", 1040.0) == s2["frames_written"]
    for s in (s1, s2):
        c = s["counts"]
        assert c["packets_lost"] == 0 and c["frames_incomplete"] == 0 and c["frames_lost"] == 0, c
