#!/usr/bin/env python3
"""The live stream's cost and delivery (docs/PERFORMANCE.md, "Live stream
(issue 13)"): in one run, for each configuration, daqd (build/release)
records `daq-sim` traffic at RATE Mbit/s for SECONDS:

  record        the stream off: recording alone (the baseline)
  stream-0      the stream on, no consumer (every chunk dropped, counted)
  stream-1      one consumer PULLing every chunk
  stream-2      two consumers sharing the chunks

and prints, per trial: packets and frames received and written, frames
delivered to the consumers and dropped by the stream, MB/s delivered, daqd's
CPU seconds (all its threads) per million packets and that over the
baseline's, and the consumers' own CPU. The consumers are separate processes
(pyzmq: receive, parse the JSON header, count), as an analysis node would be.

    /usr/bin/python3 tools/bench/stream_bench.py --rate 1000 --seconds 20 [--rounds 3] [--compression bslz4]

Ports: free loopback ports chosen at start. Output files are deleted after
each trial. Each trial is bounded (daqd --duration backstop).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tools", "daqload"))

from daqload.procs import find_binaries, free_stream_ports, free_udp_port, http, loadavg, msum, parse_metrics, proc_cpu  # noqa: E402

CONSUMER = r"""
import json, sys, time, resource, zmq
push, pub, out = sys.argv[1], sys.argv[2], sys.argv[3]
ctx = zmq.Context()
pull = ctx.socket(zmq.PULL); pull.setsockopt(zmq.RCVHWM, 256); pull.connect(push)
sub = ctx.socket(zmq.SUB); sub.setsockopt(zmq.SUBSCRIBE, b"run "); sub.connect(pub)
poller = zmq.Poller(); poller.register(pull, zmq.POLLIN); poller.register(sub, zmq.POLLIN)
frames = chunks = nbytes = 0; seqs = set(); end = None; quiet = None; t_first = t_last = None
print("ready", flush=True)
while True:
    ev = dict(poller.poll(200))
    if pull in ev:
        parts = pull.recv_multipart(copy=False)
        h = json.loads(bytes(parts[0].buffer))
        frames += h["frames"]; chunks += 1; seqs.add(h["seq"])
        nbytes += sum(len(p.buffer) for p in parts)
        t_last = time.monotonic(); t_first = t_first or t_last
        quiet = None
    if sub in ev:
        m = sub.recv()
        if b'"run_end"' in m:
            end = json.loads(m[4:])
    if not ev and end is not None:
        quiet = quiet or time.monotonic()
        if time.monotonic() - quiet > 1.0:
            break
ru = resource.getrusage(resource.RUSAGE_SELF)
json.dump({"frames": frames, "chunks": chunks, "bytes": nbytes, "end": end,
           "seconds": (t_last - t_first) if t_first else 0, "cpu": ru.ru_utime + ru.ru_stime}, open(out, "w"))
"""


def wait_for(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)


def metrics(port):
    code, text, _ = http("GET", f"http://127.0.0.1:{port}/metrics", 5)
    return parse_metrics(text) if code == 200 else None


def trial(bins, work, mode, consumers, rate, seconds, compression, channels, units):
    stream_port, http_port = free_stream_ports()
    udp = free_udp_port()
    out = os.path.join(work, "out")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    cfg = os.path.join(work, "daqd.toml")
    with open(cfg, "w") as f:
        f.write(f'[acquisition]\nlisten = ["127.0.0.1:{udp}"]\nexpected_rate_mbps = {int(rate)}\n'
                f'[http]\nlisten = "127.0.0.1:{http_port}"\n'
                f'[storage]\noutput_dir = "{out}"\nrotate_bytes = "1GiB"\ncompression = "{compression}"\n')
        if mode != "record":
            f.write(f'[stream]\nlisten = "tcp://127.0.0.1:{stream_port}"\n')
    summary = os.path.join(work, "summary.json")
    log = open(os.path.join(work, f"daqd-{mode}.log"), "w")
    d = subprocess.Popen([bins["daqd"], "--config", cfg, "--run", "bench", "--duration", str(seconds + 60),
                          "--summary-json", summary], stdout=log, stderr=subprocess.STDOUT)
    cons = []
    try:
        wait_for(lambda: metrics(http_port), 30, "daqd did not answer /metrics")
        for k in range(consumers):
            res = os.path.join(work, f"consumer{k}.json")
            p = subprocess.Popen([sys.executable, "-c", CONSUMER, f"tcp://127.0.0.1:{stream_port}",
                                  f"tcp://127.0.0.1:{stream_port + 1}", res], stdout=subprocess.PIPE, text=True)
            assert p.stdout.readline().strip() == "ready"
            cons.append((p, res))
        if consumers:
            wait_for(lambda: (msum(metrics(http_port), "daq_stream_peers", socket="push") or 0) >= consumers, 30,
                     "consumers did not connect")
        cpu0 = proc_cpu(d.pid)
        t0 = time.monotonic()
        sim = subprocess.run([bins["daq-sim"], "--target", f"127.0.0.1:{udp}", "--units", str(units), "--channels",
                              str(channels), "--detector", "--detector-cycle", "64", "--duration", str(seconds),
                              "--rate", str(rate), "--quiet"], capture_output=True, text=True, timeout=seconds + 60)
        sent = json.loads(sim.stdout)
        # Everything sent is taken and written before the CPU is read.
        want = sent["frames_sent"] if "frames_sent" in sent else None
        wait_for(lambda: (msum(metrics(http_port), "daq_frames_written_total") or 0) +
                 (msum(metrics(http_port), "daq_frames_total", state="lost") or 0) >= (want or 0) * 0.999, 60,
                 "daqd did not write what was sent")
        m = metrics(http_port)
        cpu = proc_cpu(d.pid) - cpu0
        wall = time.monotonic() - t0
        d.send_signal(2)
        d.wait(120)
    finally:
        if d.poll() is None:
            d.kill()
            d.wait()
    got = []
    for p, res in cons:
        p.wait(60)
        got.append(json.load(open(res)))
    s = json.load(open(summary))
    shutil.rmtree(out, ignore_errors=True)
    packets = msum(m, "daq_packets_received_total") or 0
    lost = sum(msum(m, n) or 0 for n in ("daq_packets_lost_total", "daq_ring_dropped_total",
                                            "daq_socket_drops_total"))
    return {"mode": mode, "consumers": consumers, "packets": packets, "lost_packets": lost,
            "frames_sent": sent.get("frames_sent"), "frames_written": s.get("frames_written"),
            "delivered": sum(g["frames"] for g in got), "delivered_bytes": sum(g["bytes"] for g in got),
            "stream_dropped": sum(msum(m, "daq_stream_frames_dropped_total", reason=r) or 0
                                  for r in ("queue", "no_peer", "hwm")),
            "cpu": cpu, "wall": wall, "cpu_per_mpacket": cpu / max(1, packets) * 1e6,
            "consumer_cpu": sum(g["cpu"] for g in got),
            "consumer_seconds": max((g["seconds"] for g in got), default=0)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=1000, help="Mbit/s of UDP payload")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--rounds", type=int, default=1, help="each mode this many times, interleaved")
    ap.add_argument("--compression", default="none", choices=("none", "bslz4"))
    ap.add_argument("--channels", type=int, default=4096)
    ap.add_argument("--units", type=int, default=2)
    ap.add_argument("--modes", default="record,stream-0,stream-1,stream-2")
    ap.add_argument("--build-dir", default=os.path.join(REPO, "build", "release"))
    a = ap.parse_args()
    bins = find_binaries(a.build_dir)
    work = tempfile.mkdtemp(prefix="daqd-stream-bench-")
    modes = a.modes.split(",")
    print(f"# stream_bench: {a.units} units x {a.channels} channels, daq-sim --detector at {a.rate:g} Mbit/s for "
          f"{a.seconds:g} s, compression {a.compression}; load before: {loadavg()}")
    print(f"{'mode':9} {'packets':>9} {'lost':>6} {'written':>9} {'delivered':>9} {'dropped':>8} {'MB/s out':>8} "
          f"{'CPU s':>6} {'CPU s/Mpkt':>10} {'x record':>8} {'consumer CPU s':>14}")
    rows = []
    for r in range(a.rounds):
        for mode in modes:
            n = int(mode.split("-")[1]) if mode.startswith("stream-") else 0
            row = trial(bins, work, mode, n, a.rate, a.seconds, a.compression, a.channels, a.units)
            rows.append(row)
            base = [x["cpu_per_mpacket"] for x in rows if x["mode"] == "record"]
            ratio = row["cpu_per_mpacket"] / base[-1] if base else float("nan")
            mbs = row["delivered_bytes"] / 1e6 / max(1e-9, row["consumer_seconds"]) if row["delivered"] else 0
            print(f"{mode:9} {row['packets']:9.0f} {row['lost_packets']:6.0f} {row['frames_written']:9} "
                  f"{row['delivered']:9} {row['stream_dropped']:8.0f} {mbs:8.1f} {row['cpu']:6.1f} "
                  f"{row['cpu_per_mpacket']:10.2f} {ratio:8.2f} {row['consumer_cpu']:14.1f}", flush=True)
    print(f"# load after: {loadavg()}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
