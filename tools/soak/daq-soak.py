#!/usr/bin/python3
"""daq-soak.py: a bounded soak test of daqd — steady traffic for a while, watching memory, losses and latency.

Starts daqd (a configuration written for the soak: loopback links and HTTP
port chosen free, output in the work directory, files rotated), starts a run,
drives daq-sim at a fixed rate for --duration seconds, and every
--sample-interval seconds records daqd's memory (/proc/PID/status), CPU time
(/proc/PID/stat) and a scrape of /metrics. At the end it stops everything,
reads daqd's summary and prints a table and a verdict (PASS/FAIL) on zero
loss, RSS growth after warm-up, and steadiness of the frame latency p99.
See tools/soak/README.md.

Standard library only. Every wait has a deadline; every child process is
stopped on every exit path (also Ctrl-C), and the tool stops by itself.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
try:
    import tomllib  # Python >= 3.11
except ImportError:  # older Pythons: the built-in defaults are assumed for the warm-up
    tomllib = None
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CLK_TCK = os.sysconf("SC_CLK_TCK")
MIB = 2**20
GIB = 2**30
LATENCY_FAMILY = "daq_frame_latency_seconds"
FLUSH_FAMILY = "daq_storage_flush_seconds"
RUN_NAME = "soak"
EXIT_PASS, EXIT_FAIL, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] daq-soak: {msg}", file=sys.stderr, flush=True)


class SetupError(Exception):
    """The soak could not be set up or run (not a verdict on daqd)."""


# ------------------------------------------------------------------ small helpers


def size_arg(v: str) -> int:
    """Bytes: an integer with an optional K/M/G/T suffix (powers of 1024; 'KiB', 'MB' and 'GiB' spellings too)."""
    m = re.fullmatch(r"\s*(\d+)\s*([kmgt]?)(i?b)?\s*", v, re.I)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {v!r} (e.g. 4G, 512MiB, 1073741824)")
    return int(m.group(1)) * 1024 ** " kmgt".index((m.group(2) or " ").lower())


def fmt_bytes(n: float) -> str:
    for unit, div in (("GiB", GIB), ("MiB", MIB), ("KiB", 1024)):
        if abs(n) >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n:.0f} B"


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def tail(path: Path, n: int = 8) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def free_ports(kind: int, n: int) -> list[int]:
    """n distinct free loopback ports (UDP or TCP), held open together while choosing so they differ."""
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, kind)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def bound_udp_ports() -> set[int]:
    ports = set()
    for name in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(name) as f:
                next(f)
                for line in f:
                    ports.add(int(line.split()[1].rsplit(":", 1)[1], 16))
        except (OSError, StopIteration, ValueError, IndexError):
            pass
    return ports


def proc_status(pid: int) -> dict:
    """The memory and thread lines of /proc/PID/status, in KiB (Threads: a count)."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem", "VmSize", "Threads"):
                out[k] = int(v.split()[0])
    return out


def proc_cpu(pid: int) -> float:
    """utime + stime of a live process, seconds (all threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def count_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def host_cpu() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return sum(v) - idle, sum(v)


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def read_text(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return "?"


def set_pdeathsig() -> None:
    """In the child before exec: SIGTERM when the soak tool dies, so nothing outlives it (a last resort)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort; --duration on daqd is the second safety net
        pass


# ------------------------------------------------------------------ Prometheus text format

_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?\s*$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> list[tuple[str, dict, float]]:
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if not m:
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        labels = dict(_LABEL.findall(m.group(2) or ""))
        out.append((m.group(1), labels, value))
    return out


def msum(series, name: str, **match) -> float | None:
    """Sum of every series of `name` whose labels include `match`; None when the family is absent."""
    vals = [v for n, lab, v in series if n == name and all(lab.get(k) == x for k, x in match.items())]
    return sum(vals) if vals else None


def mmax(series, name: str) -> float | None:
    vals = [v for n, _, v in series if n == name]
    return max(vals) if vals else None


def histogram(series, family: str) -> dict | None:
    """Cumulative buckets of a histogram summed over all its other labels: {le: count}, plus count and sum."""
    buckets: dict[float, float] = {}
    for n, lab, v in series:
        if n == family + "_bucket" and "le" in lab:
            le = math.inf if lab["le"] in ("+Inf", "Inf", "inf") else float(lab["le"])
            buckets[le] = buckets.get(le, 0.0) + v
    if not buckets:
        return None
    return dict(buckets={str(k): v for k, v in sorted(buckets.items())},
                count=msum(series, family + "_count") or 0.0, sum=msum(series, family + "_sum") or 0.0)


def hist_delta(cur: dict | None, prev: dict | None) -> list[tuple[float, float]] | None:
    """Per-interval cumulative buckets [(le, count)], sorted, from two scrapes of one histogram."""
    if cur is None:
        return None
    pb = (prev or {}).get("buckets", {})
    out = [(float(k), v - pb.get(k, 0.0)) for k, v in cur["buckets"].items()]
    return sorted(out)


def quantile(q: float, buckets: list[tuple[float, float]] | None) -> tuple[float | None, bool]:
    """histogram_quantile() as Prometheus computes it: linear inside the bucket holding rank q.

    Returns (value in the histogram's unit, above_last_bucket). Observations in the +Inf bucket
    give the highest finite bound and True ("at least this").
    """
    if not buckets:
        return None, False
    total = buckets[-1][1]
    if total <= 0:
        return None, False
    rank = q * total
    prev_le, prev_c = 0.0, 0.0
    for le, c in buckets:
        if c >= rank:
            if math.isinf(le):
                return prev_le, True
            if c == prev_c:
                return le, False
            lo = prev_le if prev_le < le else 0.0
            return lo + (le - lo) * (rank - prev_c) / (c - prev_c), False
        prev_le, prev_c = le, c
    return prev_le, True


# ------------------------------------------------------------------ child processes


def reap(p: subprocess.Popen, deadline: float, term_grace: float = 10.0) -> tuple[int | None, float, bool]:
    """Waits for p until the monotonic deadline, then SIGTERM, then SIGKILL.

    Returns (exit status, CPU seconds of the child from wait4's rusage, timed_out).
    """
    if p.returncode is not None:
        return p.returncode, 0.0, False
    timed_out, stage = False, 0
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid == p.pid:
            p.returncode = os.waitstatus_to_exitcode(status)
            return p.returncode, ru.ru_utime + ru.ru_stime, timed_out
        now = time.monotonic()
        if now >= deadline:
            timed_out = True
            if stage == 0:
                p.send_signal(signal.SIGTERM)
                stage, deadline = 1, now + term_grace
            elif stage == 1:
                p.kill()
                stage, deadline = 2, now + 10
            else:
                return None, 0.0, True  # unkillable (D state): give up waiting, cleanup() tries again
        time.sleep(0.05)


def poll_child(p: subprocess.Popen, cpu: dict) -> bool:
    """True while p runs. Reaps it with wait4 when it has ended, keeping its CPU seconds in cpu[pid]
    (Popen.poll() would reap it and lose the rusage)."""
    if p.returncode is not None:
        return False
    pid, status, ru = os.wait4(p.pid, os.WNOHANG)
    if pid != p.pid:
        return True
    p.returncode = os.waitstatus_to_exitcode(status)
    cpu[p.pid] = ru.ru_utime + ru.ru_stime
    return False


def http(method: str, url: str, timeout: float, token: str | None = None, body: dict | None = None):
    """(status, parsed JSON or text, seconds). Status 0 and the error text when there was no answer."""
    data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
    req = urllib.request.Request(url, data=data, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    t0 = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw, code = r.read(), r.status
    except urllib.error.HTTPError as e:
        raw, code = e.read(), e.code
    except (OSError, ValueError) as e:  # URLError, timeouts, resets
        return 0, str(getattr(e, "reason", e)), time.monotonic() - t0
    dt = time.monotonic() - t0
    text = raw.decode(errors="replace")
    try:
        return code, json.loads(text), dt
    except ValueError:
        return code, text, dt


# ------------------------------------------------------------------ the soak


class Soak:
    def __init__(self, a: argparse.Namespace):
        self.a = a
        b = Path(a.build_dir)
        if not b.is_absolute():
            b = (Path.cwd() / b) if (Path.cwd() / b).exists() else (REPO / b)
        self.daqd_exe = b / "daqd" / "daqd"
        self.sim_exe = b / "tools" / "sim" / "daq-sim"
        self.children: list[subprocess.Popen] = []
        self.daqd: subprocess.Popen | None = None
        self.sim: subprocess.Popen | None = None
        self.made_workdir = False
        self.work: Path | None = None
        self.out: Path | None = None
        self.interrupted = False
        self.aborted = ""  # why the traffic phase ended early (disk, daqd gone, ...)
        self.errors: list[str] = []
        self.samples: list[dict] = []
        self.deleted_files = 0
        self.deleted_bytes = 0
        self.peak_run_bytes = 0
        self.scrape_failures = 0
        self.token: str | None = None
        self.sim_summary: dict = {}
        self.sim_rc = None
        self.sim_cpu = 0.0
        self.child_cpu: dict[int, float] = {}
        self.daqd_rc = None
        self.daqd_cpu = 0.0
        self.daqd_summary: dict = {}
        self.start_answer = None
        self.stop_answer = None
        self.effective_config: dict = {}
        self.t0 = None  # monotonic time daq-sim started
        self.warmup = 0.0
        self.checks: list[dict] = []
        self.verdict = "ERROR"
        self.result: dict = {}
        self.meta = dict(host=platform.node(), kernel=platform.release(), cpus=os.cpu_count(),
                         load_before=loadavg(), thp=read_text("/sys/kernel/mm/transparent_hugepage/enabled"),
                         started_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    # -- set-up

    def prepare(self) -> None:
        a = self.a
        for exe in (self.daqd_exe, self.sim_exe):
            if not os.access(exe, os.X_OK):
                raise SetupError(f"{exe} is missing or not executable; build the release preset first "
                                 f"(scripts/build.sh release) or pass --build-dir")
        if a.units < a.links:
            raise SetupError(f"--units {a.units} < --links {a.links}: every link needs at least one unit")
        if a.workdir:
            self.work = Path(a.workdir).resolve()
            if self.work.exists() and any(self.work.iterdir()):
                raise SetupError(f"--workdir {self.work} exists and is not empty (give a new or empty directory)")
            self.work.mkdir(parents=True, exist_ok=True)
        else:
            self.work = Path(tempfile.mkdtemp(prefix="daq-soak-"))
        self.made_workdir = not a.workdir
        self.out = self.work / "out"
        self.out.mkdir()
        self.check_space()

        self.udp_ports = free_ports(socket.SOCK_DGRAM, a.links)
        self.http_port = free_ports(socket.SOCK_STREAM, 1)[0]
        self.base = f"http://127.0.0.1:{self.http_port}"
        self.config_path = self.work / "daqd.toml"
        self.config_path.write_text(self.config_text())
        r = subprocess.run([str(self.daqd_exe), "--check-config", str(self.config_path)], capture_output=True,
                           text=True, timeout=30, stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            raise SetupError(f"daqd refuses the soak configuration {self.config_path}:\n{r.stderr.strip()}")
        r = subprocess.run([str(self.daqd_exe), "--config", str(self.config_path), "--print-config"],
                           capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        try:
            self.effective_config = tomllib.loads(r.stdout) if tomllib else {}
        except ValueError:  # tomllib.TOMLDecodeError
            self.effective_config = {}
        self.warmup = self.choose_warmup()

    def expected_bytes(self) -> float:
        return self.a.rate_mbit * 1e6 / 8 * self.a.duration

    def check_space(self) -> None:
        a = self.a
        free = free_bytes(self.work)
        expected = self.expected_bytes()
        rotating = a.rotate_bytes > 0 and not a.keep
        # Rotating and deleting closed files: at most the open file, the last closed one, and one being deleted.
        need = min(expected, 3 * a.rotate_bytes) if rotating else expected * 1.02
        self.space = dict(workdir=str(self.work), free_bytes=free, expected_run_bytes=int(expected),
                          needed_bytes=int(need), reserve_bytes=a.min_free, rotating_and_deleting=rotating)
        if need + a.min_free > free:
            how = ("closed rotated files are deleted as the run goes, so it needs about 3 x --rotate-bytes"
                   if rotating else "every run file is kept until the end" + (" (--keep)" if a.keep else
                                                                               " (--rotate-bytes 0)"))
            raise SetupError(
                f"not enough disk: a {a.duration:g} s run at {a.rate_mbit:g} Mbit/s writes about "
                f"{expected / 1e9:.1f} GB; {how}: {need / 1e9:.1f} GB + {a.min_free / 1e9:.1f} GB spare, but "
                f"{self.work} has {free / 1e9:.1f} GB free. Use a lower --rate-mbit or --duration, a --workdir on a "
                f"larger disk" + (", or drop --keep (files are then rotated and deleted while running)" if a.keep
                                  else ", or a smaller --rotate-bytes"))

    def config_text(self) -> str:
        a = self.a
        tables: dict[str, dict[str, str]] = {
            "acquisition": {"listen": "[" + ", ".join(f'"127.0.0.1:{p}"' for p in self.udp_ports) + "]",
                            "ring_name": f'"daqd-soak-{os.getpid()}-{{pid}}"'},
            "storage": {"output_dir": json.dumps(str(self.out)), "rotate_bytes": str(a.rotate_bytes)},
            "http": {"listen": f'"127.0.0.1:{self.http_port}"'},
            "log": {"level": '"info"'},
        }
        if a.backend:
            tables["acquisition"]["backend"] = json.dumps(a.backend)
        owned = {"acquisition.listen", "storage.output_dir", "http.listen", "acquisition.ring_name"}
        for kv in a.set or []:
            key, sep, value = kv.partition("=")
            key, value = key.strip(), value.strip()
            if not sep or "." not in key:
                raise SetupError(f"--set {kv!r}: expected TABLE.KEY=VALUE, e.g. assembly.pool_frames=32768")
            if key in owned:
                raise SetupError(f"--set {key}: the soak tool sets this key itself")
            table, _, k = key.partition(".")
            if not re.fullmatch(r"-?\d+(\.\d+)?|true|false|\[.*\]|\{.*\}|\".*\"|'.*'", value):
                value = json.dumps(value)  # a bare word: a string
            tables.setdefault(table, {})[k] = value
        lines = [f"# written by tools/soak/daq-soak.py for one soak run"]
        for t, kv in tables.items():
            lines.append(f"\n[{t}]")
            lines += [f"{k} = {v}" for k, v in kv.items()]
        return "\n".join(lines) + "\n"

    def frames_per_second(self) -> float:
        a = self.a
        frame_bytes = 2 * a.channels
        per_packet = (a.datagram - 40) // 2 * 2
        packets = max(1, -(-frame_bytes // per_packet))
        wire = frame_bytes + 40 * packets
        return a.rate_mbit * 1e6 / 8 / wire

    def choose_warmup(self) -> float:
        """Seconds after daq-sim starts before the RSS baseline and the latency steadiness window.

        daqd commits memory lazily: its frame pool hands out buffers FIFO, so every buffer is touched once
        only after pool_frames frames; the packet ring likewise after ring_slots datagrams per link. Until
        then RSS rises without any leak. The warm-up covers twice that (and at least min(30 s, duration/4)).
        """
        a = self.a
        cfg = self.effective_config
        pool = int(cfg.get("assembly", {}).get("pool_frames", 16384))
        slots = int(cfg.get("acquisition", {}).get("ring_slots", 16384))
        fps = max(1e-9, self.frames_per_second())
        packets_per_s = fps * max(1, -(-2 * a.channels // ((a.datagram - 40) // 2 * 2)))
        self.touch_seconds = max(pool / fps, slots / (packets_per_s / a.links))
        if a.warmup is not None:
            return a.warmup
        return max(min(30.0, a.duration / 4), 2 * self.touch_seconds)

    # -- daqd

    def spawn(self, cmd: list, logfile: Path, stdout=None) -> subprocess.Popen:
        with open(logfile, "wb") as lg:
            p = subprocess.Popen([str(c) for c in cmd], stdin=subprocess.DEVNULL, stdout=stdout or lg, stderr=lg,
                                 start_new_session=True, preexec_fn=set_pdeathsig)
        self.children.append(p)
        return p

    def start_daqd(self) -> None:
        a = self.a
        self.summary_path = self.work / "daqd-summary.json"
        self.daqd_log = self.work / "daqd.log"
        # --duration: a backstop in case this tool is killed outright (PDEATHSIG is the first one).
        backstop = a.duration + a.sim_slack + a.stop_timeout + 300
        cmd = [self.daqd_exe, "--config", self.config_path, "--summary-json", self.summary_path,
               "--duration", f"{backstop:g}"]
        if a.control == "cli":
            cmd += ["--run", RUN_NAME]
        cmd += a.daqd_arg or []
        self.daqd_cmd = [str(c) for c in cmd]
        log(f"starting daqd: {' '.join(self.daqd_cmd)}")
        self.daqd = self.spawn(cmd, self.daqd_log)
        deadline = time.monotonic() + a.start_timeout
        while True:
            if self.daqd.poll() is not None:
                raise SetupError(f"daqd exited at start (status {self.daqd.returncode}):\n{tail(self.daqd_log, 10)}")
            if time.monotonic() > deadline:
                raise SetupError(f"daqd did not bind UDP {self.udp_ports} and answer {self.base}/metrics within "
                                 f"{a.start_timeout:g} s:\n{tail(self.daqd_log, 10)}")
            if set(self.udp_ports) <= bound_udp_ports():
                code, body, _ = http("GET", self.base + "/metrics", 5)
                if code == 200 and isinstance(body, str):
                    mine = {f'endpoint="127.0.0.1:{p}"' for p in self.udp_ports}
                    if all(m in body for m in mine):
                        break
                    raise SetupError(f"{self.base}/metrics is served by another process (not this daqd): the "
                                     f"port was taken between choosing and binding; run again")
            time.sleep(0.1)
        self.meta["daqd_build_info"] = {k: v for n, lab, _ in parse_metrics(body) if n == "daq_build_info"
                                        for k, v in lab.items()}
        token_file = self.out / ".daqd-token"
        deadline = time.monotonic() + 10
        while a.control == "http":
            try:
                self.token = token_file.read_text().splitlines()[0].strip()
                break
            except (OSError, IndexError):
                if time.monotonic() > deadline:
                    raise SetupError(f"no token in {token_file} (daqd writes it at start; web/README.md)")
                time.sleep(0.1)

    def start_run(self) -> None:
        if self.a.control == "cli":
            return  # daqd --run started it with the process
        code, body, _ = http("POST", self.base + "/api/v1/runs", 60, self.token, {"name": RUN_NAME})
        self.start_answer = dict(status=code, body=body)
        if code != 201:
            raise SetupError(f"POST /api/v1/runs answered {code}: {body}")
        log(f"run '{RUN_NAME}' started over HTTP: {body}")

    # -- samples

    def sample(self, label: str = "") -> dict:
        pid = self.daqd.pid
        now = time.monotonic()
        s: dict = dict(t=round(now - self.t0, 3) if self.t0 else 0.0, label=label)
        try:
            st = proc_status(pid)
            s.update(rss_kib=st.get("VmRSS"), hwm_kib=st.get("VmHWM"), anon_kib=st.get("RssAnon"),
                     file_kib=st.get("RssFile"), shmem_kib=st.get("RssShmem"), vsz_kib=st.get("VmSize"),
                     threads=st.get("Threads"), cpu_s=proc_cpu(pid), fds=count_fds(pid))
        except (OSError, IndexError, ValueError) as e:
            s["proc_error"] = str(e)
        s["host_busy"], s["host_total"] = host_cpu()
        code, body, dt = http("GET", self.base + "/metrics", self.a.scrape_timeout)
        s["scrape_seconds"] = round(dt, 4)
        if code != 200 or not isinstance(body, str):
            self.scrape_failures += 1
            s["scrape_error"] = f"{code}: {str(body)[:200]}"
        else:
            m = parse_metrics(body)
            c = dict(
                datagrams_received=msum(m, "daq_datagrams_received_total"),
                packets_received=msum(m, "daq_packets_received_total"),
                packets_lost=msum(m, "daq_packets_lost_total"),
                duplicates=msum(m, "daq_packets_duplicate_total"),
                late=msum(m, "daq_packets_late_total"),
                invalid=msum(m, "daq_packets_invalid_total"),
                socket_drops=msum(m, "daq_socket_drops_total"),
                ring_dropped=msum(m, "daq_ring_dropped_total"),
                frames_complete=msum(m, "daq_frames_total", state="complete"),
                frames_incomplete=msum(m, "daq_frames_total", state="incomplete"),
                frames_lost=msum(m, "daq_frames_total", state="lost"),
                frames_overflow=msum(m, "daq_frames_total", state="overflow"),
                frames_written=msum(m, "daq_frames_written_total"),
                frames_unrecorded=msum(m, "daq_frames_unrecorded_total"),
                bytes_written=msum(m, "daq_storage_bytes_written_total"),
                ring_fill_max=mmax(m, "daq_ring_fill_ratio"),
                storage_free_bytes=msum(m, "daq_storage_free_bytes"),
            )
            # Per-unit and per-link families have no series before the first packet: count those as 0.
            s["counters"] = {k: (v if k == "ring_fill_max" else int(v or 0)) for k, v in c.items()}
            s["latency_hist"] = histogram(m, LATENCY_FAMILY)
            s["flush_hist"] = histogram(m, FLUSH_FAMILY)
        if self.a.poll_status:
            code, _, dt = http("GET", self.base + "/api/v1/status", self.a.scrape_timeout)
            s["status_seconds"] = round(dt, 4)
            if code != 200:
                self.scrape_failures += 1
                s["status_error"] = str(code)
        s["run_dir_bytes"] = self.run_dir_bytes()
        self.derive(s, self.samples[-1] if self.samples else None)
        self.samples.append(s)
        return s

    @staticmethod
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

    def run_dir_bytes(self) -> int:
        total = 0
        try:
            for e in os.scandir(self.out):
                if e.is_file(follow_symlinks=False):
                    total += e.stat().st_size
        except OSError:
            pass
        self.peak_run_bytes = max(self.peak_run_bytes, total)
        return total

    # -- disk housekeeping while running

    def housekeeping(self) -> None:
        a = self.a
        if a.rotate_bytes > 0 and not a.keep:
            series = []
            pat = re.compile(re.escape(RUN_NAME) + r"_(\d{5,})\.h5$")
            try:
                for e in os.scandir(self.out):
                    m = pat.match(e.name)
                    if m:
                        series.append((int(m.group(1)), Path(e.path)))
            except OSError:
                pass
            series.sort()
            # daqd closes a file completely before it creates the next one (storage/README.md, Rotation):
            # every file but the newest is closed. Keep the newest two anyway.
            for _, path in series[:-2]:
                try:
                    size = path.stat().st_size
                    path.unlink()
                    self.deleted_files += 1
                    self.deleted_bytes += size
                except OSError:
                    pass
        free = free_bytes(self.out)
        if free < a.min_free / 2:
            self.aborted = (f"free space in {self.out} fell to {free / 1e9:.2f} GB (below half of --min-free "
                            f"{a.min_free / 1e9:.1f} GB): traffic stopped early")
            raise _Abort()

    # -- traffic

    def sim_cmd(self) -> list:
        a = self.a
        cmd = [self.sim_exe]
        for p in self.udp_ports:
            cmd += ["--target", f"127.0.0.1:{p}"]
        cmd += ["--units", a.units, "--channels", a.channels, "--datagram", a.datagram, "--duration",
                f"{a.duration:g}", "--rate", f"{a.rate_mbit:g}", "--mode", a.sim_mode,
                "--json", self.work / "sim.json", "--quiet"]
        return cmd

    def traffic(self) -> None:
        a = self.a
        self.sample("before")  # t = 0: daqd idle, run active, before the first packet
        self.samples[-1]["t"] = 0.0
        cmd = self.sim_cmd()
        self.sim_cmd_str = " ".join(str(c) for c in cmd)
        log(f"starting daq-sim for {a.duration:g} s: {self.sim_cmd_str}")
        self.t0 = time.monotonic()
        self.sim = self.spawn(cmd, self.work / "sim.log", stdout=subprocess.DEVNULL)
        self.print_header()
        next_sample = self.t0 + a.sample_interval
        next_house = self.t0 + 1.0
        sim_deadline = self.t0 + a.duration + a.sim_slack
        try:
            while True:
                if not poll_child(self.sim, self.child_cpu):
                    break
                if self.daqd.poll() is not None:
                    self.aborted = f"daqd exited during the soak (status {self.daqd.returncode})"
                    raise _Abort()
                now = time.monotonic()
                if now > sim_deadline:
                    self.aborted = f"daq-sim still running {a.sim_slack:g} s after --duration: stopped"
                    raise _Abort()
                if now >= next_house:
                    self.housekeeping()
                    next_house = now + 1.0
                if now >= next_sample:
                    self.print_row(self.sample())
                    while next_sample <= time.monotonic():
                        next_sample += a.sample_interval
                time.sleep(min(0.1, max(0.0, min(next_sample, next_house) - time.monotonic())))
        except _Abort:
            log(self.aborted)
            self.errors.append(self.aborted)

    def stop_sim(self) -> None:
        if self.sim is None:
            return
        # daq-sim on SIGTERM sends one more round (with END_OF_STREAM) and prints its summary.
        running = poll_child(self.sim, self.child_cpu)
        rc, cpu, timed_out = reap(self.sim, time.monotonic() + (0 if running else 5), 10)
        self.sim_rc, self.sim_cpu = rc, cpu or self.child_cpu.get(self.sim.pid, 0.0)
        if rc is not None and rc != 0:
            self.errors.append(f"daq-sim exit status {rc}: {tail(self.work / 'sim.log', 3)}")
        try:
            self.sim_summary = json.loads((self.work / "sim.json").read_text())
        except (OSError, ValueError) as e:
            self.errors.append(f"daq-sim summary unreadable: {e}")

    def wait_drained(self) -> None:
        """After the sender stops: until daqd has received what was sent and its writes have settled."""
        sent = int(self.sim_summary.get("packets_sent", -1))
        deadline = time.monotonic() + self.a.drain_timeout
        last = None
        while time.monotonic() < deadline and self.daqd.poll() is None:
            code, body, _ = http("GET", self.base + "/metrics", self.a.scrape_timeout)
            if code == 200 and isinstance(body, str):
                m = parse_metrics(body)
                got = msum(m, "daq_datagrams_received_total") or 0
                written = msum(m, "daq_frames_written_total") or 0
                settled = (written, msum(m, "daq_frames_unrecorded_total") or 0)
                if got >= sent and settled == last:
                    return
                last = settled
            time.sleep(0.5)

    def finish(self) -> None:
        """Stops the sender, takes the last sample, stops the run and daqd, reads daqd's summary."""
        a = self.a
        self.stop_sim()
        if self.daqd and self.daqd.poll() is None:
            self.wait_drained()
            if self.daqd.poll() is None:
                self.print_row(self.sample("end"))
        if a.control == "http" and self.daqd and self.daqd.poll() is None:
            code, body, dt = http("POST", self.base + "/api/v1/runs/stop", a.stop_timeout, self.token)
            self.stop_answer = dict(status=code, body=body, seconds=round(dt, 3))
            if code != 200:
                self.errors.append(f"POST /api/v1/runs/stop answered {code}: {body}")
        if self.daqd:
            if self.daqd.poll() is None:
                self.daqd.send_signal(signal.SIGTERM)
            rc, cpu, timed_out = reap(self.daqd, time.monotonic() + a.stop_timeout, 10)
            self.daqd_rc, self.daqd_cpu = rc, cpu
            if timed_out:
                self.errors.append(f"daqd did not exit within {a.stop_timeout:g} s of SIGTERM (killed)")
            elif rc != 0:
                self.errors.append(f"daqd exit status {rc}: {tail(self.daqd_log, 4)}")
            try:
                self.daqd_summary = json.loads(self.summary_path.read_text())
            except (OSError, ValueError) as e:
                self.errors.append(f"daqd summary {self.summary_path} unreadable: {e}")

    # -- clean-up

    def cleanup(self) -> None:
        for p in self.children:
            if p.poll() is None:
                try:
                    p.send_signal(signal.SIGTERM)
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    try:
                        p.wait(10)
                    except subprocess.TimeoutExpired:
                        log(f"pid {p.pid} ({p.args[0]}) does not die")
                except OSError:
                    pass
        # Packet rings of a daqd that was killed (it removes them itself on a normal exit).
        for ring in Path("/dev/shm").glob(f"daqd-soak-{os.getpid()}-*"):
            try:
                ring.unlink()
            except OSError:
                pass
        if self.work is None:
            return
        if self.a.keep and self.daqd is not None:
            log(f"kept the run files and logs in {self.work}")
        elif self.a.keep and self.made_workdir:
            shutil.rmtree(self.work, ignore_errors=True)  # nothing ran: nothing to keep
        elif self.made_workdir:
            shutil.rmtree(self.work, ignore_errors=True)
        else:
            shutil.rmtree(self.out, ignore_errors=True)  # the run files; logs, config, summaries stay

    # -- evaluation

    def evaluate(self) -> None:
        a = self.a
        sim, rx = self.sim_summary, self.daqd_summary
        checks = []

        def check(name, ok, detail):
            checks.append(dict(name=name, result="SKIP" if ok is None else ("PASS" if ok else "FAIL"),
                               detail=detail))

        # Clean shutdown and complete data.
        ok_proc = not self.errors and self.daqd_rc == 0 and bool(rx) and bool(sim)
        check("clean run", ok_proc, "daq-sim and daqd ran to the end and exited 0; summaries read" if ok_proc
              else "; ".join(self.errors) or f"daqd exit {self.daqd_rc}")

        # Loss.
        sent = int(sim.get("packets_sent", 0)) if sim else None
        loss_keys = ("packets_lost", "kernel_drops", "ring_dropped", "frames_overflow", "frames_incomplete",
                     "frames_lost", "late", "duplicates", "invalid_total")
        losses = {k: rx.get(k, 0) for k in loss_keys if rx.get(k, 0)}
        received = rx.get("packets_received")
        missing = (sent - received) if (sent is not None and received is not None) else None
        if missing:
            losses["missing (sent - received)"] = missing
        frames_sent = int(sim.get("frames_sent", 0)) if sim else None
        if rx and frames_sent is not None and rx.get("frames_written") != frames_sent:
            losses["frames not written (sent - written)"] = frames_sent - rx.get("frames_written", 0)
        if rx.get("frames_unrecorded"):
            losses["frames_unrecorded"] = rx["frames_unrecorded"]
        if rx.get("run_failed"):
            losses["run_failed"] = rx.get("run_error") or True
        self.losses = losses
        if not rx or not sim:
            check("zero loss", None, "no daqd or daq-sim summary")
        else:
            check("zero loss", not losses,
                  f"sent {sent} packets / {frames_sent} frames, received {received}, written "
                  f"{rx.get('frames_written')} frames" + (": " + ", ".join(f"{k}={v}" for k, v in losses.items())
                                                          if losses else ", no drop of any kind"))

        # Offered rate.
        if sim:
            got = float(sim.get("rate_mbps", 0))
            check("offered rate", got >= a.min_rate_fraction * a.rate_mbit,
                  f"daq-sim sent {got:.1f} Mbit/s of {a.rate_mbit:g} asked (needs >= "
                  f"{100 * a.min_rate_fraction:.0f} %; below that the sender, not daqd, set the pace)"
                  + (f"; send_retries={sim.get('send_retries')}" if sim.get("send_retries") else ""))

        # Scrapes.
        check("metrics answered", self.scrape_failures == 0,
              f"{self.scrape_failures} failed scrapes of {len(self.samples)} samples" if self.scrape_failures
              else f"all {len(self.samples)} scrapes answered (slowest "
                   f"{max((s.get('scrape_seconds', 0) for s in self.samples), default=0) * 1e3:.0f} ms)")

        # Memory.
        mem = self.memory_figures()
        self.result["memory"] = mem
        if mem.get("baseline_mib") is None:
            check("RSS growth", None, f"no sample after the warm-up of {self.warmup:g} s and before the last one "
                  f"(run longer, or set --warmup)")
        else:
            check("RSS growth", mem["growth_mib"] <= mem["limit_mib"],
                  f"{mem['baseline_mib']:.1f} MiB at t={mem['baseline_t']:g} s -> {mem['last_mib']:.1f} MiB at "
                  f"t={mem['last_t']:g} s: {mem['growth_mib']:+.1f} MiB ({mem['growth_pct']:+.2f} %), limit "
                  f"{mem['limit_mib']:.1f} MiB (max of {a.rss_growth_pct:g} % and {a.rss_growth_mib:g} MiB)")

        # Latency.
        lat = self.latency_figures()
        self.result["latency"] = lat
        if not lat.get("present"):
            check("latency p99 steady", None, f"{LATENCY_FAMILY} is not exported by this daqd")
        elif len(lat["p99_ms"]) < 2:
            check("latency p99 steady", None, f"fewer than 2 intervals after the warm-up with >= "
                  f"{a.latency_min_count} frames")
        else:
            ok = lat["p99_max_ms"] <= a.latency_p99_factor * lat["p99_median_ms"]
            check("latency p99 steady", ok,
                  f"interval p99 median {lat['p99_median_ms']:.3f} ms, max {lat['p99_max_ms']:.3f} ms "
                  f"(at t={lat['p99_max_t']:g} s) = {lat['p99_max_ms'] / max(lat['p99_median_ms'], 1e-12):.2f} x "
                  f"median, limit {a.latency_p99_factor:g} x"
                  + ("; some p99 beyond the last finite bucket (a lower bound)" if lat["above_last_bucket"] else ""))
        self.checks = checks
        if self.interrupted:
            self.verdict = "INTERRUPTED"
        elif any(c["result"] == "FAIL" for c in checks):
            self.verdict = "FAIL"
        else:
            self.verdict = "PASS"

    def traffic_samples(self) -> list[dict]:
        return [s for s in self.samples if s["label"] == "" and s.get("rss_kib") is not None]

    def memory_figures(self) -> dict:
        a = self.a
        all_s = [s for s in self.samples if s.get("rss_kib") is not None]
        out: dict = dict(warmup_s=round(self.warmup, 1), lazy_commit_s=round(getattr(self, "touch_seconds", 0), 1),
                         max_rss_mib=round(max((s["rss_kib"] for s in all_s), default=0) / 1024, 1),
                         max_hwm_mib=round(max((s.get("hwm_kib") or 0 for s in all_s), default=0) / 1024, 1))
        traffic = self.traffic_samples()
        after = [s for s in traffic if s["t"] >= self.warmup]
        end = [s for s in all_s if s["label"] == "end"]
        last = end[-1] if end else (after[-1] if after else None)
        if len(after) < 1 or last is None or last is after[0]:
            # Judging RSS before daqd has touched its pool and ring would report lazy commit as a leak.
            out["baseline_mib"] = None
            return out
        base = after[0]
        growth = (last["rss_kib"] - base["rss_kib"]) / 1024
        out.update(baseline_t=base["t"], baseline_mib=round(base["rss_kib"] / 1024, 1), last_t=last["t"],
                   last_mib=round(last["rss_kib"] / 1024, 1), growth_mib=round(growth, 2),
                   growth_pct=round(100 * growth / (base["rss_kib"] / 1024), 3),
                   limit_mib=round(max(a.rss_growth_mib, a.rss_growth_pct / 100 * base["rss_kib"] / 1024), 1))
        for k in ("anon_kib", "shmem_kib", "file_kib"):
            if base.get(k) is not None and last.get(k) is not None:
                out[k.replace("_kib", "_growth_mib")] = round((last[k] - base[k]) / 1024, 2)
        pts = [(s["t"], s["rss_kib"] / 1024) for s in after]
        if len(pts) >= 3:
            mt = statistics.fmean(t for t, _ in pts)
            mr = statistics.fmean(r for _, r in pts)
            den = sum((t - mt) ** 2 for t, _ in pts)
            if den > 0:
                out["slope_mib_per_min"] = round(60 * sum((t - mt) * (r - mr) for t, r in pts) / den, 3)
        fds = [s.get("fds") for s in (base, last)]
        thr = [s.get("threads") for s in (base, last)]
        out.update(fds=fds, threads=thr)
        return out

    def latency_figures(self) -> dict:
        a = self.a
        present = any(s.get("latency_hist") is not None for s in self.samples)
        out: dict = dict(present=present, p50_ms=[], p99_ms=[], above_last_bucket=False)
        if not present:
            return out
        rows = []
        for s in self.traffic_samples():
            lat = (s.get("interval") or {}).get("latency")
            if s["t"] >= self.warmup and lat and lat["count"] >= a.latency_min_count and lat["p99_ms"] is not None:
                rows.append((s["t"], lat))
        if not rows:
            return out
        p50 = [r["p50_ms"] for _, r in rows]
        p99 = [r["p99_ms"] for _, r in rows]
        t_max, r_max = max(rows, key=lambda x: x[1]["p99_ms"])
        out.update(p50_ms=p50, p99_ms=p99, intervals=len(rows),
                   p50_min_ms=min(p50), p50_median_ms=statistics.median(p50), p50_max_ms=max(p50),
                   p99_min_ms=min(p99), p99_median_ms=statistics.median(p99), p99_max_ms=max(p99), p99_max_t=t_max,
                   above_last_bucket=any(r["p99_above_last_bucket"] for _, r in rows))
        return out

    # -- output

    COLS = [("t s", 7), ("RSS MiB", 8), ("HWM MiB", 8), ("anon", 7), ("shmem", 7), ("fds", 4), ("CPU %", 6),
            ("host %", 6), ("rx kpkt/s", 9), ("wr fr/s", 8), ("lost", 6), ("sockdrp", 7), ("ringdrp", 7),
            ("ovfl", 5), ("lat p50 ms", 10), ("lat p99 ms", 10)]

    def print_header(self) -> None:
        print(" ".join(f"{n:>{w}}" for n, w in self.COLS), flush=True)

    def print_row(self, s: dict) -> None:
        def mib(k):
            return f"{s[k] / 1024:.1f}" if s.get(k) is not None else "-"
        iv = s.get("interval") or {}
        d = iv.get("delta") or {}
        lat = iv.get("latency")

        def q(k):
            if not lat or lat.get(k) is None:
                return "-" if lat is None else "n/a"
            return (">" if lat.get(k.replace("_ms", "_above_last_bucket")) else "") + f"{lat[k]:.3f}"
        t = f"{s['t']:.1f}" + ("e" if s["label"] == "end" else "")
        vals = [t, mib("rss_kib"), mib("hwm_kib"), mib("anon_kib"), mib("shmem_kib"), str(s.get("fds", "-")),
                f"{iv['cpu_pct']:.0f}" if "cpu_pct" in iv else "-",
                f"{iv['host_busy_pct']:.0f}" if "host_busy_pct" in iv else "-",
                f"{iv['datagrams_per_s'] / 1e3:.1f}" if "datagrams_per_s" in iv else "-",
                f"{iv['frames_written_per_s']:.0f}" if "frames_written_per_s" in iv else "-",
                str(d.get("packets_lost", "-")), str(d.get("socket_drops", "-")), str(d.get("ring_dropped", "-")),
                str(d.get("frames_overflow", "-")), q("p50_ms"), q("p99_ms")]
        if s.get("scrape_error"):
            vals[-1] += f"  (scrape failed: {s['scrape_error'][:60]})"
        print(" ".join(f"{v:>{w}}" for v, (_, w) in zip(vals, self.COLS)), flush=True)

    def report(self) -> None:
        a = self.a
        sim, rx = self.sim_summary, self.daqd_summary
        mem = self.result.get("memory", {})
        lat = self.result.get("latency", {})
        p = print
        p("")
        p(f"daq-soak: {a.duration:g} s asked at {a.rate_mbit:g} Mbit/s, {a.links} link(s), {a.units} units x "
          f"{a.channels} channels, {a.datagram}-byte datagrams, control {a.control}; daqd "
          f"{self.meta.get('daqd_build_info', {}).get('version', '?')} "
          f"({rx.get('receiver_backend') or self.meta.get('daqd_build_info', {}).get('receiver_backend', '?')}); "
          f"host {self.meta['host']} {self.meta['cpus']} CPUs, load {self.meta['load_before']} -> "
          f"{self.meta.get('load_after', '?')}")
        if sim:
            p(f"sent:      {sim.get('packets_sent')} packets, {sim.get('frames_sent')} frames, "
              f"{sim.get('bytes_sent', 0) / 1e9:.2f} GB in {sim.get('seconds', 0):.1f} s = "
              f"{sim.get('rate_mbps', 0):.1f} Mbit/s ({sim.get('mode')}; send_retries={sim.get('send_retries')}, "
              f"send_errors={sim.get('send_errors')}; daq-sim CPU {self.sim_cpu:.1f} s)")
        if rx:
            inv = ", ".join(f"{k}={v}" for k, v in (rx.get("invalid") or {}).items())
            p(f"received:  {rx.get('packets_received')} packets; lost={rx.get('packets_lost')} "
              f"kernel_drops={rx.get('kernel_drops')} ring_dropped={rx.get('ring_dropped')} "
              f"late={rx.get('late')} duplicates={rx.get('duplicates')} invalid={rx.get('invalid_total')}"
              + (f" ({inv})" if inv else ""))
            p(f"frames:    complete={rx.get('frames_complete')} incomplete={rx.get('frames_incomplete')} "
              f"lost={rx.get('frames_lost')} overflow={rx.get('frames_overflow')} written={rx.get('frames_written')} "
              f"unrecorded={rx.get('frames_unrecorded')} rejected={rx.get('frames_rejected')}; "
              f"{rx.get('bytes_written', 0) / 1e9:.2f} GB written, {len(rx.get('files') or [])} file(s)"
              + (f", run FAILED: {rx.get('run_error')}" if rx.get("run_failed") else ""))
            p(f"daqd CPU:  {self.daqd_cpu:.1f} s over its life"
              + (f" ({self.daqd_cpu / (rx['packets_received'] / 1e6):.2f} s per Mpacket)"
                 if rx.get("packets_received") else ""))
        p(f"disk:      {'rotated every ' + fmt_bytes(a.rotate_bytes) if a.rotate_bytes else 'one file'}; "
          f"{self.deleted_files} closed file(s) deleted while running ({self.deleted_bytes / 1e9:.2f} GB); "
          f"peak in the run directory {self.peak_run_bytes / 1e9:.2f} GB")
        if mem:
            line = (f"memory:    warm-up {mem['warmup_s']:g} s (pool and ring fully touched after ~"
                    f"{mem['lazy_commit_s']:g} s); max RSS {mem['max_rss_mib']:.1f} MiB, VmHWM "
                    f"{mem['max_hwm_mib']:.1f} MiB")
            if mem.get("baseline_mib") is not None:
                line += (f"; RSS {mem['baseline_mib']:.1f} MiB (t={mem['baseline_t']:g} s) -> {mem['last_mib']:.1f} "
                         f"MiB (t={mem['last_t']:g} s): {mem['growth_mib']:+.2f} MiB, {mem['growth_pct']:+.2f} % "
                         f"(anon {mem.get('anon_growth_mib', 0):+.2f}, shmem {mem.get('shmem_growth_mib', 0):+.2f}, "
                         f"file {mem.get('file_growth_mib', 0):+.2f})")
                if "slope_mib_per_min" in mem:
                    line += f"; slope {mem['slope_mib_per_min']:+.3f} MiB/min"
                line += f"; fds {mem['fds'][0]} -> {mem['fds'][1]}, threads {mem['threads'][0]} -> {mem['threads'][1]}"
            p(line)
        if lat.get("present") and lat.get("p99_ms"):
            p(f"latency:   {LATENCY_FAMILY}, {lat['intervals']} intervals after the warm-up: p50 "
              f"{lat['p50_min_ms']:.3f} / {lat['p50_median_ms']:.3f} / {lat['p50_max_ms']:.3f} ms, p99 "
              f"{lat['p99_min_ms']:.3f} / {lat['p99_median_ms']:.3f} / {lat['p99_max_ms']:.3f} ms (min / median / max)")
        elif not lat.get("present"):
            p(f"latency:   {LATENCY_FAMILY} absent from /metrics: not measured")
        p("")
        for c in self.checks:
            p(f"  {c['result']:4}  {c['name']}: {c['detail']}")
        p(f"\nverdict: {self.verdict}")

    def as_json(self) -> dict:
        a = self.a
        return dict(tool="daq-soak", verdict=self.verdict, checks=self.checks, settings=vars(a), meta=self.meta,
                    workdir=str(self.work) if self.work else None, kept=a.keep,
                    daqd_command=getattr(self, "daqd_cmd", None), sim_command=getattr(self, "sim_cmd_str", None),
                    config=self.config_path.read_text() if getattr(self, "config_path", None) and
                    self.config_path.exists() else None,
                    effective_config=self.effective_config, space=getattr(self, "space", None),
                    warmup_s=self.warmup, samples=self.samples, memory=self.result.get("memory"),
                    latency=self.result.get("latency"), losses=getattr(self, "losses", None),
                    sim=self.sim_summary, daqd=self.daqd_summary, daqd_exit=self.daqd_rc,
                    daqd_cpu_seconds=self.daqd_cpu, sim_exit=self.sim_rc, sim_cpu_seconds=self.sim_cpu,
                    run_start=self.start_answer, run_stop=self.stop_answer, errors=self.errors,
                    interrupted=self.interrupted, aborted=self.aborted or None,
                    disk=dict(deleted_files=self.deleted_files, deleted_bytes=self.deleted_bytes,
                              peak_run_dir_bytes=self.peak_run_bytes),
                    daqd_log_warnings=self.log_warnings())

    def log_warnings(self) -> list[str]:
        """daqd's warning and error lines (the first 50), from its log."""
        if not getattr(self, "daqd_log", None):
            return []
        try:
            lines = self.daqd_log.read_text(errors="replace").splitlines()
        except OSError:
            return []
        return [ln for ln in lines if " warning " in ln or " error " in ln or " critical " in ln][:50]


class _Abort(Exception):
    pass


# ------------------------------------------------------------------ main


def main() -> int:
    ap = argparse.ArgumentParser(
        description="Soak daqd: steady daq-sim traffic for a bounded time; memory, losses and latency sampled; "
                    "PASS/FAIL verdict. See tools/soak/README.md.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = ap.add_argument_group("traffic")
    g.add_argument("--duration", type=float, default=600, help="seconds of traffic")
    g.add_argument("--rate-mbit", type=float, default=1000,
                   help="total offered rate, Mbit/s of UDP payload (1000: at least half the sustained lossless "
                        "recording rate of the 2-core VM, docs/RELIABILITY.md; 3 s trials reach 4 Gbit/s only "
                        "into the page cache)")
    g.add_argument("--links", type=int, default=2, help="UDP links (loopback ports)")
    g.add_argument("--units", type=int, default=4, help="simulated units, spread round-robin over the links")
    g.add_argument("--channels", type=int, default=4096, help="channels per frame")
    g.add_argument("--datagram", type=int, default=1472, help="datagram size (UDP payload bytes)")
    g.add_argument("--sim-mode", default="gso", choices=["gso", "sendmmsg"], help="daq-sim --mode")
    g = ap.add_argument_group("daqd")
    g.add_argument("--build-dir", default="build/release", help="where daqd/daqd and tools/sim/daq-sim are")
    g.add_argument("--control", default="http", choices=["http", "cli"],
                   help="start/stop the run over the HTTP API (POST /api/v1/runs with the token), or with "
                        "daqd --run and SIGTERM")
    g.add_argument("--backend", choices=["auto", "recvmmsg", "io_uring"], help="acquisition.backend")
    g.add_argument("--rotate-bytes", type=size_arg, default=4 * GIB,
                   help="storage.rotate_bytes; without --keep, closed files are deleted while running (0: one file, "
                        "which must fit on the disk)")
    g.add_argument("--set", action="append", metavar="TABLE.KEY=VALUE",
                   help="any other daqd configuration key (docs/CONFIG.md), repeatable, e.g. "
                        "--set assembly.pool_frames=32768 --set storage.flush_interval_ms=500")
    g.add_argument("--daqd-arg", action="append", metavar="ARG", help="extra daqd command-line argument, repeatable "
                   "(e.g. --daqd-arg=--gro)")
    g = ap.add_argument_group("sampling and verdict")
    g.add_argument("--sample-interval", type=float, default=5.0, help="seconds between samples")
    g.add_argument("--warmup", type=float, help="seconds before the RSS baseline and the latency window (default: "
                   "max(min(30, duration/4), 2 x the time for daqd to touch its whole frame pool and ring))")
    g.add_argument("--rss-growth-pct", type=float, default=5.0, help="RSS growth limit, %% of the baseline")
    g.add_argument("--rss-growth-mib", type=float, default=16.0, help="RSS growth limit, MiB (the larger limit "
                   "applies)")
    g.add_argument("--latency-p99-factor", type=float, default=4.0,
                   help="max interval p99 must be within this factor of the median interval p99")
    g.add_argument("--latency-min-count", type=int, default=100,
                   help="intervals with fewer latency observations are not judged")
    g.add_argument("--min-rate-fraction", type=float, default=0.9,
                   help="daq-sim must reach this fraction of --rate-mbit")
    g.add_argument("--no-status-poll", dest="poll_status", action="store_false",
                   help="do not also GET /api/v1/status at each sample (as the status page would)")
    g = ap.add_argument_group("files and deadlines")
    g.add_argument("--workdir", help="a new or empty directory for config, logs and run files (default: a fresh "
                   "temporary directory, deleted at the end unless --keep)")
    g.add_argument("--keep", action="store_true", help="keep every run file and the work directory (no deletion "
                   "while running: the whole run must fit on the disk)")
    g.add_argument("--min-free", type=size_arg, default=GIB, help="disk space to leave free; the soak stops early "
                   "if free space falls below half of it")
    g.add_argument("--json", help="write everything (settings, samples, summaries, verdict) to this file")
    g.add_argument("--start-timeout", type=float, default=30, help="seconds for daqd to bind and answer")
    g.add_argument("--stop-timeout", type=float, default=120, help="seconds for the run stop and for daqd to exit")
    g.add_argument("--drain-timeout", type=float, default=15, help="seconds to wait after daq-sim for daqd to "
                   "receive and write what was sent")
    g.add_argument("--sim-slack", type=float, default=60, help="daq-sim is stopped this long after --duration")
    g.add_argument("--scrape-timeout", type=float, default=10, help="seconds per HTTP request")
    a = ap.parse_args()
    if a.duration <= 0 or a.rate_mbit <= 0 or a.sample_interval <= 0 or a.links < 1 or a.units < 1:
        ap.error("--duration, --rate-mbit, --sample-interval, --links and --units must be positive")
    if a.rotate_bytes and a.rotate_bytes < 65536:
        ap.error("--rotate-bytes: 0 or at least 65536 (storage.rotate_bytes)")

    soak = Soak(a)
    state = dict(signals=0)

    def on_signal(sig, frame):
        state["signals"] += 1
        raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    rc = EXIT_ERROR
    try:
        soak.prepare()
        soak.start_daqd()
        soak.start_run()
        try:
            soak.traffic()
        except KeyboardInterrupt:
            soak.interrupted = True
            log("interrupted: stopping daq-sim and daqd (interrupt again to kill them)")
            if soak.sim and soak.sim.poll() is None:
                soak.sim.send_signal(signal.SIGTERM)
        soak.finish()
        soak.meta["load_after"] = loadavg()
        soak.evaluate()
        soak.report()
        rc = {"PASS": EXIT_PASS, "FAIL": EXIT_FAIL}.get(soak.verdict, EXIT_INTERRUPTED)
    except SetupError as e:
        print(f"daq-soak: {e}", file=sys.stderr)
        soak.errors.append(str(e))
        rc = EXIT_ERROR
    except KeyboardInterrupt:
        log("interrupted again: killing the child processes")
        soak.interrupted = True
        soak.verdict = "INTERRUPTED"
        rc = EXIT_INTERRUPTED
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # clean-up is not interrupted half-way
        try:
            if a.json:
                try:
                    Path(a.json).write_text(json.dumps(soak.as_json(), indent=1, default=str) + "\n")
                    log(f"wrote {a.json}")
                except OSError as e:
                    log(f"cannot write {a.json}: {e}")
        finally:
            soak.cleanup()
    return rc


if __name__ == "__main__":
    sys.exit(main())
