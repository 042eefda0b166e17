"""The live stream (docs/STREAM.md): daq-sim → daqd (recording and streaming
over ZeroMQ) → Python consumers on real sockets. What a consumer receives is
checked against the run file daqd wrote from the same traffic."""

import os
import subprocess
import sys
import time

import h5py
import hdf5plugin  # noqa: F401 - registers filter 32008 with h5py's HDF5
import numpy as np
import pytest
import zmq

import daqload
from daqload.capture import Daqd, simulate
from daqload.live import StreamClient
from daqload.procs import free_stream_ports, http, msum, parse_metrics
from conftest import build_dir

FAULTS = ["--loss", "0.01", "--duplicate", "0.01", "--reorder", "0.01", "--malformed", "0.005", "--seed", "3"]
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Server:
    """daqd recording run `run` and streaming at tcp://127.0.0.1:<port>, HTTP on another port."""

    def __init__(self, out, run, *, config=""):
        self.stream_port, self.http_port = free_stream_ports()
        self.endpoint = f"tcp://127.0.0.1:{self.stream_port}"
        self.d = Daqd(build_dir(), out, run, config=config or None,
                      extra_args=["--http", f"127.0.0.1:{self.http_port}", "--stream", self.endpoint])

    def metrics(self, deadline=None):
        """/metrics, retried until `deadline` while the server is not answering yet (it serves
        HTTP a moment after the run started)."""
        while True:
            code, text, _ = http("GET", f"http://127.0.0.1:{self.http_port}/metrics", 5)
            if code == 200:
                return parse_metrics(text)
            assert code == 0 and deadline is not None and time.monotonic() < deadline, text
            time.sleep(0.05)

    def wait_metric(self, name, want, timeout=20.0, **labels):
        deadline = time.monotonic() + timeout
        while True:
            v = msum(self.metrics(deadline), name, **labels)
            if v is not None and v >= want:
                return v
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name}{labels} = {v}, waited for {want}:\n{self.d.log()[-3000:]}")
            time.sleep(0.05)

    def __enter__(self):
        self.d.start()
        return self

    def __exit__(self, *exc):
        self.d.__exit__(*exc)


def receive_run(clients, run, timeout=60.0, drain=1.0):
    """Every message for `run` the clients get until its end message came and
    the clients had nothing more for `drain` seconds: (chunks per client, end)."""
    got = [[] for _ in clients]
    end = None
    deadline = time.monotonic() + timeout
    quiet_since = None
    while time.monotonic() < deadline:
        any_msg = False
        for i, c in enumerate(clients):
            m = c.recv(0.02)
            if m is None:
                continue
            any_msg = True
            if m[0] == "chunk" and m[1]["run"] == run:
                got[i].append(m[1])
            elif m[0] == "run_end" and m[1]["run"] == run:
                end = m[1]
        if any_msg:
            quiet_since = None
        elif end is not None:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since > drain:
                return got, end
    raise TimeoutError(f"run {run}: no end of run within {timeout} s (end={end})")


def file_frames(path):
    """{(unit, frame_number): {field: row}} of a run file."""
    out = {}
    with h5py.File(path, "r") as f:
        for u, g in f["units"].items():
            cols = {k: g[k][()] for k in ("raw", "calibrated", "missing_packets", "frame_number") if k in g}
            for i, fn in enumerate(cols["frame_number"]):
                out[(int(u[1:]), int(fn))] = {k: v[i] for k, v in cols.items() if k != "frame_number"}
    return out


def stream_frames(chunks):
    """{(unit, frame_number): {field: row}} of decoded chunks; duplicates counted."""
    out, dups = {}, 0
    for c in chunks:
        for i, fn in enumerate(c["frame_number"]):
            key = (c["unit"], int(fn))
            dups += key in out
            row = {k: a[i] for k, a in c["arrays"].items()}
            row["missing_packets"] = c["missing_packets"][i]
            out[key] = row
    return out, dups


CAL = '[processing]\nstages = ["calibrate"]\nthreshold = 1500.0\nthreshold_mode = "absolute"\n'


@pytest.mark.parametrize("compression", ["none", "bslz4"])
def test_every_frame_arrives_once_equal_to_the_file(tmp_path, compression):
    """Raw and calibrated rows, with loss, duplicates and reordering upstream."""
    cfg = CAL + f'[storage]\nflush_interval_ms = 200\ncompression = "{compression}"\n'
    with Server(tmp_path, "live", config=cfg) as s:
        with StreamClient(s.endpoint) as c:
            s.wait_metric("daq_stream_peers", 1, socket="push")
            s.wait_metric("daq_stream_peers", 1, socket="pub")
            simulate(build_dir(), s.d.port, units=2, channels=4096, frames=1500, rate=300,
                     extra_args=["--detector", "--beam"] + FAULTS)
            s.d.stop()
            (chunks,), end = receive_run([c], "live")
    files = s.d.summary["files"]
    assert len(files) == 1
    want = file_frames(files[0])
    got, dups = stream_frames(chunks)
    assert dups == 0
    assert set(got) == set(want), (len(got), len(want))
    assert len(want) > 2800  # 2 x 1500 frames, a few lost to the faults
    for key, row in want.items():
        g = got[key]
        assert np.array_equal(g["raw"], row["raw"]), key
        assert np.array_equal(g["calibrated"], row["calibrated"]), key
        assert g["missing_packets"] == row["missing_packets"], key
    assert sum(int(r["missing_packets"] > 0) for r in want.values()) > 0  # the faults show in both
    assert {c["compression"] for c in chunks} == {compression}
    # The end of run accounts for every chunk: sequence numbers 0..last, none dropped.
    assert sorted(c["seq"] for c in chunks) == list(range(end["chunks"]))
    assert end["last_seq"] == end["chunks"] - 1
    assert end["frames_sent"] == end["frames_written"] == len(want)
    assert end["frames_dropped"] == 0 and end["chunks_dropped"] == 0


def test_two_consumers_share_the_chunks(tmp_path):
    with Server(tmp_path, "two", config="[storage]\nflush_interval_ms = 200\n") as s:
        with StreamClient(s.endpoint) as a, StreamClient(s.endpoint) as b:
            s.wait_metric("daq_stream_peers", 2, socket="push")
            code, status, _ = http("GET", f"http://127.0.0.1:{s.http_port}/api/v1/status", 5)
            assert code == 200
            st = status["stream"]  # what the page shows
            assert st["push"] == [s.endpoint] and st["publish"] == [daqload.live.publish_endpoint(s.endpoint)]
            assert st["peers"] == 2 and st["curve"] is False
            simulate(build_dir(), s.d.port, units=2, channels=1024, frames=4000, rate=200)
            s.d.stop()
            (ca, cb), end = receive_run([a, b], "two")
    want = file_frames(s.d.summary["files"][0])
    fa, da = stream_frames(ca)
    fb, db = stream_frames(cb)
    assert da == db == 0
    assert not set(fa) & set(fb)  # no frame went to both
    assert set(fa) | set(fb) == set(want)
    assert len(ca) > 0 and len(cb) > 0  # ZeroMQ spread them
    seqs = sorted(c["seq"] for c in ca + cb)
    assert seqs == list(range(end["chunks"]))
    assert end["frames_dropped"] == 0


def rss_kib(pid, field="VmHWM"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def test_a_consumer_that_stops_reading(tmp_path):
    """The file stays complete; what the consumer never sees is what daqd
    counted dropped; daqd's memory stays bounded."""
    cfg = "[storage]\nflush_interval_ms = 200\n[stream]\nsend_hwm = 4\nqueue_chunks = 8\n"
    with Server(tmp_path, "stall", config=cfg) as s:
        ctx = zmq.Context()
        pull = ctx.socket(zmq.PULL)
        pull.setsockopt(zmq.RCVHWM, 4)
        pull.setsockopt(zmq.RCVBUF, 1 << 16)
        pull.connect(s.endpoint)
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"run ")
        sub.connect(daqload.live.publish_endpoint(s.endpoint))
        try:
            s.wait_metric("daq_stream_peers", 1, socket="push")
            rss_before = rss_kib(s.d.proc.pid, "VmRSS")
            sim = simulate(build_dir(), s.d.port, units=2, channels=4096, frames=40000, rate=800)
            s.wait_metric("daq_stream_frames_dropped_total", 1, reason="hwm")
            peak = rss_kib(s.d.proc.pid)
            series = s.metrics()
            # The consumer reads again: first what its buffers and daqd's
            # hold, then (daqd stopping meanwhile) the last chunks and the
            # end of the run.
            import json
            import threading
            seqs, end = set(), None

            def read(until):
                nonlocal end
                quiet = time.monotonic()
                while time.monotonic() - quiet < 1.0 or not until():
                    if time.monotonic() > deadline:
                        return
                    if pull.poll(20):
                        seqs.add(daqload.live.decode_chunk(pull.recv_multipart())["seq"])
                        quiet = time.monotonic()
                    if sub.poll(0):
                        m = sub.recv()
                        if b'"run_end"' in m:
                            end = json.loads(m[4:])
            deadline = time.monotonic() + 60
            read(lambda: True)
            stopping = threading.Thread(target=s.d.stop)
            stopping.start()
            read(lambda: end is not None)
            stopping.join(60)
            assert end is not None, "no end-of-run message"
        finally:
            pull.close(0)
            sub.close(0)
            ctx.term()
    frames = 2 * 40000
    assert sim["frames_sent"] == frames
    with h5py.File(s.d.summary["files"][0], "r") as f:
        written = sum(len(g["frame_number"]) for g in f["units"].values())
        fn = np.sort(f["units/u0/frame_number"][()])
    assert written == frames and np.array_equal(fn, np.arange(40000))  # the file is complete
    assert end["frames_written"] == frames
    never_seen = set(range(end["chunks"])) - seqs
    assert len(never_seen) == end["chunks_dropped"] > 0
    assert end["frames_sent"] + end["frames_dropped"] == frames
    assert msum(series, "daq_stream_frames_dropped_total", reason="hwm") > 0
    # 80000 frames of 8 KiB (640 MiB) went by a consumer that took a few
    # chunks: daqd held no more than its bounded buffers.
    assert peak - rss_before < 256 * 1024, (rss_before, peak)


def test_no_consumer_records_the_whole_run(tmp_path):
    with Server(tmp_path, "alone", config="[storage]\nflush_interval_ms = 200\n") as s:
        simulate(build_dir(), s.d.port, units=2, channels=1024, frames=3000, rate=200)
        s.wait_metric("daq_frames_written_total", 6000)
        s.wait_metric("daq_stream_frames_dropped_total", 1, reason="no_peer")
        s.d.stop()
    with h5py.File(s.d.summary["files"][0], "r") as f:
        assert sum(len(g["frame_number"]) for g in f["units"].values()) == 6000
    assert s.d.summary["frames_written"] == 6000
    assert "stream: dropping chunks (no_peer)" in s.d.log()
    assert "stream: run 'alone' ended: 0 frames in 0 chunks sent, 6000 frames dropped" in s.d.log()


def test_preview_latest_frames_on_a_conflated_subscriber(tmp_path):
    cfg = "[storage]\nflush_interval_ms = 200\n[stream]\npreview_rate = 20.0\n"
    with Server(tmp_path, "prev", config=cfg) as s:
        ctx = zmq.Context()
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.CONFLATE, 1)  # single-part messages: only the latest is kept
        sub.setsockopt(zmq.SUBSCRIBE, b"preview u1 ")
        sub.connect(daqload.live.publish_endpoint(s.endpoint))
        try:
            s.wait_metric("daq_stream_peers", 1, socket="pub")
            simulate(build_dir(), s.d.port, units=2, channels=1024, frames=3000, rate=50)
            assert sub.poll(5000)
            kind, head, samples = StreamClient._pub_message(sub.recv())
            n_preview = s.wait_metric("daq_stream_preview_frames_total", 1)
            s.d.stop()
        finally:
            sub.close(0)
            ctx.term()
    assert kind == "preview" and head["unit"] == 1 and head["name"] == "raw"
    want = file_frames(s.d.summary["files"][0])[(1, head["frame_number"])]
    assert np.array_equal(samples, want["raw"])
    # at most 20 per second per unit over a run of ~1 s of traffic (2 units)
    assert 1 <= n_preview <= 2 * 20 * 8


def test_curve_off_loopback_needs_keys_and_admits_only_listed_clients(tmp_path):
    daqd = daqload.procs.find_binaries(build_dir())["daqd"]
    cfg = tmp_path / "open.toml"
    cfg.write_text('[stream]\nlisten = "tcp://0.0.0.0:5555"\n')
    r = subprocess.run([daqd, "--check-config", str(cfg)], capture_output=True, text=True)
    assert r.returncode != 0
    assert "stream.curve_secret_key_file" in r.stdout + r.stderr
    server_pub, server_sec = zmq.curve_keypair()
    ok_pub, ok_sec = zmq.curve_keypair()
    bad_pub, bad_sec = zmq.curve_keypair()
    (tmp_path / "server.key").write_bytes(server_sec + b"\n")
    (tmp_path / "clients").write_bytes(b"# allowed\n" + ok_pub + b"\n")
    conf = (f'[storage]\nflush_interval_ms = 200\n[stream]\ncurve_secret_key_file = "{tmp_path}/server.key"\n'
            f'curve_client_keys_file = "{tmp_path}/clients"\n')
    with Server(tmp_path / "runs", "sec", config=conf) as s:
        assert server_pub.decode() in s.d.log()  # daqd logs its public key for consumers
        with StreamClient(s.endpoint, server_key=server_pub, keypair=(ok_pub, ok_sec)) as good, \
                StreamClient(s.endpoint, server_key=server_pub, keypair=(bad_pub, bad_sec)) as bad:
            s.wait_metric("daq_stream_peers", 1, socket="push")
            s.wait_metric("daq_stream_auth_refused_total", 1)
            simulate(build_dir(), s.d.port, units=1, channels=1024, frames=2000, rate=100)
            s.d.stop()
            (cg, cb), end = receive_run([good, bad], "sec")
    assert len(cb) == 0
    got, _ = stream_frames(cg)
    assert len(got) == end["frames_written"] == 2000


def test_stream_dataset_is_a_drop_in_for_run_dataset(tmp_path):
    with Server(tmp_path, "ds", config="[storage]\nflush_interval_ms = 100\n") as s:
        ds = daqload.StreamDataset(s.endpoint, fields=("raw", "frame_number", "missing_packets", "unit"),
                                   start_timeout=30)
        import threading
        items = []
        t = threading.Thread(target=lambda: items.extend(ds))
        t.start()
        s.wait_metric("daq_stream_peers", 1, socket="push")
        simulate(build_dir(), s.d.port, units=2, channels=1024, frames=500, rate=50)
        s.d.stop()
        t.join(60)
        assert not t.is_alive()
    files = s.d.summary["files"]
    ref = daqload.RunDataset(files, fields=("raw", "frame_number", "missing_packets", "unit"))
    assert len(items) == len(ref) == 1000
    by_key = {(int(i["unit"]), int(i["frame_number"])): i for i in items}
    for k in range(len(ref)):
        r = ref[k]
        i = by_key[(int(r["unit"]), int(r["frame_number"]))]
        for f in ("raw", "missing_packets"):
            assert i[f].dtype == r[f].dtype and i[f].shape == r[f].shape
            assert bool((i[f] == r[f]).all())
    assert ds.stats["end"]["frames_written"] == 1000


def test_two_rank_training_example_on_live_data(tmp_path):
    """docs/STREAM.md's example: two gloo ranks PULL from one daqd and train
    the beam-spot model of docs/TRAINING.md; both end on the end-of-run message."""
    example = os.path.join(REPO, "tools", "daqload", "examples", "train_live.py")
    frames = 12000
    with Server(tmp_path, "train", config="[storage]\nflush_interval_ms = 100\n") as s:
        env = dict(os.environ, PYTHONPATH=os.path.join(REPO, "tools", "daqload"))
        t0 = time.monotonic()
        log = open(tmp_path / "example.log", "w+")
        # Its own process group: the ranks go with it if the test fails.
        p = subprocess.Popen([sys.executable, example, "--endpoint", s.endpoint, "--ranks", "2",
                              "--out", str(tmp_path / "result.json")], env=env,
                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            s.wait_metric("daq_stream_peers", 2, socket="push", timeout=60)
            simulate(build_dir(), s.d.port, units=1, channels=4096, frames=frames, rate=200,
                     extra_args=["--detector", "--beam"])
            s.d.stop()
            p.wait(timeout=120)
        finally:
            if p.poll() is None:
                os.killpg(p.pid, 9)
                p.wait()
            log.seek(0)
            out = log.read()
        assert p.returncode == 0, out
        seconds = time.monotonic() - t0
    import json
    r = json.load(open(tmp_path / "result.json"))
    assert r["world_size"] == 2
    assert all(n > 0 for n in r["frames_per_rank"]), r  # ZeroMQ spread the frames over both ranks
    assert sum(r["frames_per_rank"]) == r["frames_written"] == frames, r
    assert r["frames_dropped"] == 0
    assert r["error_last_px"] < 0.75 * r["error_first_px"], r  # it learned on live data
    assert seconds < 60, out
