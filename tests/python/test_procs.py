"""daqload.procs: the Prometheus text reader, and launching a real daqd (the soak, the bench and capture use it)."""

import math
import socket
import subprocess
import sys
import time

import pytest

from conftest import build_dir
from daqload import capture, procs

EXPOSITION = r'''# HELP daq_build_info Build of this daqd.
# TYPE daq_build_info gauge
daq_build_info{version="0.1.0",receiver_backend="recvmmsg"} 1
# TYPE daq_frames_total counter
daq_frames_total{unit="0",state="complete"} 10
daq_frames_total{unit="1",state="complete"} 5
daq_frames_total{unit="1",state="lost"} 2
odd{path="C:\\dir\\\"x\"",msg="a\nb",brace="}{"} 3 1712345678000
no_labels 4.5e3
spaced { a = "1" , } 7
bad_value{a="1"} notanumber
nan_value NaN
inf_value -Inf
# TYPE lat_seconds histogram
lat_seconds_bucket{link="a",le="0.001"} 2
lat_seconds_bucket{link="a",le="0.01"} 6
lat_seconds_bucket{link="a",le="+Inf"} 8
lat_seconds_bucket{link="b",le="0.001"} 0
lat_seconds_bucket{link="b",le="0.01"} 2
lat_seconds_bucket{link="b",le="+Inf"} 2
lat_seconds_sum{link="a"} 0.5
lat_seconds_sum{link="b"} 0.25
lat_seconds_count{link="a"} 8
lat_seconds_count{link="b"} 2
'''


def test_parse_labels_escapes_and_values():
    m = procs.parse_metrics(EXPOSITION)
    by = {n: (lab, v) for n, lab, v in m}
    assert by["daq_build_info"] == ({"version": "0.1.0", "receiver_backend": "recvmmsg"}, 1.0)
    assert by["odd"] == ({"path": 'C:\\dir\\"x"', "msg": "a\nb", "brace": "}{"}, 3.0)  # timestamp dropped
    assert by["no_labels"] == ({}, 4500.0)
    assert by["spaced"] == ({"a": "1"}, 7.0)
    assert "bad_value" not in by
    assert math.isnan(by["nan_value"][1]) and by["inf_value"][1] == -math.inf
    assert procs.msum(m, "daq_frames_total", state="complete") == 15
    assert procs.msum(m, "daq_frames_total", state="overflow") is None
    assert procs.mmax(m, "daq_frames_total") == 10


def test_histogram_sums_labels_and_quantiles_interpolate():
    m = procs.parse_metrics(EXPOSITION)
    h = procs.histogram(m, "lat_seconds")
    assert h == dict(buckets={"0.001": 2.0, "0.01": 8.0, "inf": 10.0}, count=10.0, sum=0.75)
    b = procs.hist_delta(h, None)
    assert b == [(0.001, 2.0), (0.01, 8.0), (math.inf, 10.0)]
    q50, above = procs.quantile(0.5, b)  # rank 5: 3 of the 6 in (0.001, 0.01]
    assert not above and q50 == pytest.approx(0.001 + 0.009 * 3 / 6)
    assert procs.quantile(0.99, b) == (0.01, True)  # in +Inf: at least the last finite bound
    later = dict(h, buckets={"0.001": 2.0, "0.01": 9.0, "inf": 10.0})
    assert procs.hist_delta(later, h) == [(0.001, 0.0), (0.01, 1.0), (math.inf, 0.0)]
    assert procs.quantile(0.5, [(0.001, 0.0), (math.inf, 0.0)]) == (None, False)
    assert procs.histogram(m, "absent") is None


def test_command_lines():
    assert procs.daqd_argv("daqd", config="c.toml", listen=["127.0.0.1:1", "127.0.0.1:2"], run="r",
                           duration=3.0, gro=True, extra=["--log-level", "warn"]) == [
        "daqd", "--config", "c.toml", "--listen", "127.0.0.1:1", "--listen", "127.0.0.1:2", "--duration", "3",
        "--run", "r", "--gro", "--log-level", "warn"]
    assert procs.sim_argv("sim", [5, 6], units=4, channels=64, rate=200.0, duration=2, mode="gso") == [
        "sim", "--target", "127.0.0.1:5", "--target", "127.0.0.1:6", "--units", "4", "--channels", "64",
        "--duration", "2", "--rate", "200", "--mode", "gso", "--quiet"]


def test_find_binaries_names_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing .*daqd/daqd, .*daq-drain \(build it\)"):
        procs.find_binaries(tmp_path, ("daqd", "daq-drain"), hint="build it")


def test_reap_and_stop_give_status_and_cpu():
    busy = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.2: pass\n"
    p = subprocess.Popen([sys.executable, "-c", busy])
    rc, cpu, timed_out = procs.reap(p, time.monotonic() + 30)
    assert (rc, timed_out) == (0, False) and cpu >= 0.15
    assert procs.reap(p, time.monotonic()) == (0, 0.0, False)  # reaped before
    p = subprocess.Popen(["sleep", "30"])
    rc, _, timed_out = procs.stop(p, 5)
    assert rc == -15 and not timed_out
    p = subprocess.Popen([sys.executable, "-c", "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                          "print(flush=True)\ntime.sleep(30)"], stdout=subprocess.PIPE)
    p.stdout.readline()  # SIGTERM is ignored from here on
    rc, _, timed_out = procs.stop(p, 0.2, term_grace=0.2)
    assert rc == -9 and timed_out


def test_daqd_serves_metrics_and_stops(bins, tmp_path):
    udp = procs.free_udp_port()
    http_port = procs.free_ports(socket.SOCK_STREAM, 1)[0]
    base = f"http://127.0.0.1:{http_port}"
    (tmp_path / "out").mkdir()
    children = procs.Children()
    log = tmp_path / "daqd.log"
    argv = procs.daqd_argv(bins["daqd"], listen=[f"127.0.0.1:{udp}"], output=tmp_path / "out", run="m",
                           http=f"127.0.0.1:{http_port}", summary_json=tmp_path / "s.json", duration=60)
    try:
        with open(log, "wb") as lg:
            d = children.spawn(argv, stdout=lg, stderr=lg)

        def ready():
            code, body, _ = procs.http("GET", base + "/metrics", 5)
            return procs.udp_bound([udp])() and code == 200 and body
        text = procs.wait_ready(d, ready, 20, what="daqd", goal="answer /metrics", log_path=log)
        m = procs.parse_metrics(text)
        assert procs.msum(m, "daq_build_info") == 1
        sent = capture.simulate(build_dir(), udp, units=1, channels=256, frames=50, rate=10)
        deadline = time.monotonic() + 10
        while True:
            code, text, _ = procs.http("GET", base + "/metrics", 5)
            got = procs.msum(procs.parse_metrics(text), "daq_packets_received_total") if code == 200 else None
            if got == sent["packets_sent"] or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert got == sent["packets_sent"]
        rc, cpu, timed_out = procs.stop(d, 30)
        assert (rc, timed_out) == (0, False) and cpu > 0
    finally:
        assert children.stop_all(term_grace=0) == []


def test_a_daqd_that_fails_to_start_reports_its_stderr(bins, tmp_path):
    log = tmp_path / "daqd.log"
    with open(log, "wb") as lg:
        d = procs.Children().spawn(procs.daqd_argv(bins["daqd"], config=tmp_path / "nope.toml"), stdout=lg,
                                   stderr=lg)
    with pytest.raises(procs.StartError, match=r"(?s)daqd exited at start \(status 2\):\n.*cannot open config file "
                                               r".*nope\.toml"):
        procs.wait_ready(d, lambda: False, 20, what="daqd", goal="start", log_path=log)
    # capture.Daqd: the same error, a RuntimeError
    with pytest.raises(RuntimeError, match=r"(?s)exited at start.*unknown option '--no-such-option'"):
        capture.Daqd(build_dir(), tmp_path / "out", "bad", extra_args=["--no-such-option"]).start()


def test_wait_ready_times_out_with_the_log(tmp_path):
    log = tmp_path / "child.log"
    log.write_text("line 1\nstill starting\n")
    p = subprocess.Popen(["sleep", "30"])
    try:
        with pytest.raises(procs.StartTimeout, match=r"child did not bind within 0.2 s:\nline 1\nstill starting"):
            procs.wait_ready(p, lambda: False, 0.2, what="child", goal="bind", log_path=log)
        assert isinstance(procs.StartTimeout("x"), TimeoutError)
    finally:
        procs.stop(p, 5)
    q = subprocess.Popen(["true"])
    with pytest.raises(procs.StartError, match=r"child exited at start \(status 0\):\n$"):  # no log: no tail
        procs.wait_ready(q, lambda: False, 20, what="child", goal="bind")
