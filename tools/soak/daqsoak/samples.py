"""One sample of daqd while it runs (/proc and a /metrics scrape), and the figures of the interval since the last."""

from __future__ import annotations

import os

from daqload.procs import hist_delta, histogram, host_cpu, http, mmax, msum, parse_metrics, proc_cpu, quantile

from .scenario import FLUSH_FAMILY, LATENCY_FAMILY

# Sample key -> (metric family, labels to match); summed over every other label.
COUNTERS = dict(
    datagrams_received=("daq_datagrams_received_total", {}),
    packets_received=("daq_packets_received_total", {}),
    packets_lost=("daq_packets_lost_total", {}),
    duplicates=("daq_packets_duplicate_total", {}),
    late=("daq_packets_late_total", {}),
    invalid=("daq_packets_invalid_total", {}),
    socket_drops=("daq_socket_drops_total", {}),
    ring_dropped=("daq_ring_dropped_total", {}),
    frames_complete=("daq_frames_total", {"state": "complete"}),
    frames_incomplete=("daq_frames_total", {"state": "incomplete"}),
    frames_lost=("daq_frames_total", {"state": "lost"}),
    frames_overflow=("daq_frames_total", {"state": "overflow"}),
    frames_written=("daq_frames_written_total", {}),
    frames_unrecorded=("daq_frames_unrecorded_total", {}),
    bytes_written=("daq_storage_bytes_written_total", {}),
    ring_fill_max=("daq_ring_fill_ratio", None),  # the largest over the links
    storage_free_bytes=("daq_storage_free_bytes", {}),
)


def proc_status(pid: int) -> dict:
    """The memory and thread lines of /proc/PID/status, in KiB (Threads: a count)."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem", "VmSize", "Threads"):
                out[k] = int(v.split()[0])
    return out


def count_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def measure(s: dict, pid: int, base: str, scrape_timeout: float, poll_status: bool) -> int:
    """Fills sample s with daqd's memory, CPU and descriptors, the machine's CPU, and the counters and
    histograms of one /metrics scrape (and times GET /api/v1/status with poll_status). Returns the number
    of requests that failed."""
    failures = 0
    try:
        st = proc_status(pid)
        s.update(rss_kib=st.get("VmRSS"), hwm_kib=st.get("VmHWM"), anon_kib=st.get("RssAnon"),
                 file_kib=st.get("RssFile"), shmem_kib=st.get("RssShmem"), vsz_kib=st.get("VmSize"),
                 threads=st.get("Threads"), cpu_s=proc_cpu(pid), fds=count_fds(pid))
    except (OSError, IndexError, ValueError) as e:
        s["proc_error"] = str(e)
    s["host_busy"], s["host_total"] = host_cpu()
    code, body, dt = http("GET", base + "/metrics", scrape_timeout)
    s["scrape_seconds"] = round(dt, 4)
    if code != 200 or not isinstance(body, str):
        failures += 1
        s["scrape_error"] = f"{code}: {str(body)[:200]}"
    else:
        m = parse_metrics(body)
        c = {k: (mmax(m, fam) if match is None else msum(m, fam, **match)) for k, (fam, match) in COUNTERS.items()}
        # Per-unit and per-link families have no series before the first packet: count those as 0.
        s["counters"] = {k: (v if k == "ring_fill_max" else int(v or 0)) for k, v in c.items()}
        s["latency_hist"] = histogram(m, LATENCY_FAMILY)
        s["flush_hist"] = histogram(m, FLUSH_FAMILY)
    if poll_status:
        code, _, dt = http("GET", base + "/api/v1/status", scrape_timeout)
        s["status_seconds"] = round(dt, 4)
        if code != 200:
            failures += 1
            s["status_error"] = str(code)
    return failures


def derive(s: dict, p: dict | None) -> None:
    """Per-interval figures from this sample and the previous one."""
    s["interval"] = None
    if p is None:
        return
    dt = s["t"] - p["t"]
    if dt <= 0:
        return
    iv: dict = dict(seconds=round(dt, 3))
    if "cpu_s" in s and "cpu_s" in p:
        iv["cpu_pct"] = round(100 * (s["cpu_s"] - p["cpu_s"]) / dt, 1)
    tot = s["host_total"] - p["host_total"]
    if tot > 0:
        iv["host_busy_pct"] = round(100 * (s["host_busy"] - p["host_busy"]) / tot, 1)
    sc, pc = s.get("counters"), p.get("counters")
    if sc and pc:
        d = {k: (sc[k] - pc[k]) for k in sc if k not in ("ring_fill_max", "storage_free_bytes")
             and sc.get(k) is not None and pc.get(k) is not None}
        iv["delta"] = d
        iv["datagrams_per_s"] = round(d.get("datagrams_received", 0) / dt, 1)
        iv["frames_written_per_s"] = round(d.get("frames_written", 0) / dt, 1)
        iv["mbytes_written_per_s"] = round(d.get("bytes_written", 0) / dt / 1e6, 2)
    for fam, key in (("latency_hist", "latency"), ("flush_hist", "flush")):
        if s.get(fam) is not None:
            b = hist_delta(s[fam], p.get(fam))
            n = b[-1][1] if b else 0
            q50, o50 = quantile(0.5, b)
            q99, o99 = quantile(0.99, b)
            dsum = s[fam]["sum"] - (p.get(fam) or {}).get("sum", 0.0)
            iv[key] = dict(count=int(n), p50_ms=None if q50 is None else round(q50 * 1e3, 4),
                           p99_ms=None if q99 is None else round(q99 * 1e3, 4),
                           mean_ms=round(dsum / n * 1e3, 4) if n else None,
                           p99_above_last_bucket=o99, p50_above_last_bucket=o50)
    s["interval"] = iv
