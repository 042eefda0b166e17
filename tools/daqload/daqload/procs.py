"""Start and stop daqd, daq-sim and the bench programs; read daqd's Prometheus text.

The one place the Python tools launch the C++ binaries: ``daqload.capture``
(test and example runs), ``tools/soak/daq-soak.py`` and
``tools/bench/receive_bench.py`` (those two put ``tools/daqload`` on
``sys.path``). Standard library only; Linux (``/proc``).

A typical start, as the soak does it::

    bins = find_binaries(build_dir, ("daqd", "daq-sim"))
    children = Children(own_session=True, die_with_parent=True)
    with open(log_path, "wb") as lg:
        d = children.spawn(daqd_argv(bins["daqd"], config=cfg, run="r1"), stdout=lg, stderr=lg)
    wait_ready(d, udp_bound(ports), 30, what="daqd", goal=f"bind UDP {ports}", log_path=log_path)
    ...
    rc, cpu_seconds, timed_out = stop(d, 60)

Rationale: the CPU seconds of a child come from ``wait4``'s rusage, which
only the call that reaps the child sees. ``reap``, ``poll_child`` and
``stop`` therefore reap with ``os.wait4`` themselves; ``Popen.poll()`` or
``Popen.wait()`` on a child that may have ended would lose them.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

BINARIES = {
    "daqd": "daqd/daqd",
    "daq-sim": "tools/sim/daq-sim",
    "daq-inspect": "tools/inspect/daq-inspect",
    "daq-drain": "tools/bench/daq-drain",
    "daq-disk-ceiling": "tools/bench/daq-disk-ceiling",
}
CLK_TCK = os.sysconf("SC_CLK_TCK")


class StartError(RuntimeError):
    """A child exited at start, or did not become ready in time; the message ends with its log's tail."""


class StartTimeout(StartError, TimeoutError):
    """The StartError of a child still running at the deadline (also a TimeoutError)."""


# ------------------------------------------------------------------ binaries and ports


def find_binaries(build_dir, names=("daqd", "daq-sim", "daq-inspect"),
                  hint="build with scripts/build.sh release, or point at another build directory") -> dict:
    """{name: path} of the named programs under a CMake build directory; FileNotFoundError naming what is missing."""
    out, missing = {}, []
    for name in names:
        p = os.path.join(os.fspath(build_dir), BINARIES[name])
        if os.access(p, os.X_OK):
            out[name] = p
        else:
            missing.append(p)
    if missing:
        raise FileNotFoundError(f"daqd binaries not built: missing {', '.join(missing)} ({hint})")
    return out


def free_ports(kind: int, n: int) -> list[int]:
    """n distinct free loopback ports (socket.SOCK_DGRAM or SOCK_STREAM), held open together so they differ."""
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, kind)
            socks.append(s)
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def free_udp_port() -> int:
    return free_ports(socket.SOCK_DGRAM, 1)[0]


def free_stream_ports() -> tuple[int, int]:
    """(p, h): loopback TCP ports with p and p + 1 free (daqd's stream and its default publish port, docs/STREAM.md)
    and h a third one (HTTP)."""
    for _ in range(100):
        with socket.socket() as a, socket.socket() as b, socket.socket() as c:
            a.bind(("127.0.0.1", 0))
            p = a.getsockname()[1]
            try:
                b.bind(("127.0.0.1", p + 1))
            except OSError:
                continue
            c.bind(("127.0.0.1", 0))
            return p, c.getsockname()[1]
    raise RuntimeError("no two consecutive free loopback TCP ports")


def bound_udp_ports() -> set[int]:
    """Local UDP ports bound by any process (/proc/net/udp, udp6)."""
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


def udp_bound(ports):
    """A wait_ready condition: every port in `ports` is bound."""
    want = set(ports)
    return lambda: want <= bound_udp_ports()


# ------------------------------------------------------------------ command lines


def daqd_argv(exe, *, config=None, listen=(), output=None, run=None, summary_json=None, duration=None,
              backend=None, log_level=None, http=None, gro=False, extra=()) -> list[str]:
    """daqd's command line (daqd/main.cpp); options given here override the --config file. http: HOST:PORT
    or "off" (daqd's default is 127.0.0.1:8080)."""
    argv = [exe]
    if config is not None:
        argv += ["--config", config]
    for ep in listen:
        argv += ["--listen", ep]
    for flag, v in (("--output", output), ("--summary-json", summary_json),
                    ("--duration", None if duration is None else f"{duration:g}"), ("--run", run),
                    ("--backend", backend), ("--log-level", log_level), ("--http", http)):
        if v is not None:
            argv += [flag, v]
    if gro:
        argv.append("--gro")
    return [str(a) for a in [*argv, *extra]]


def sim_argv(exe, ports, *, units, channels, rate, duration=None, frames=None, datagram=None, mode=None,
             first_unit=None, json_path=None, quiet=True, extra=()) -> list[str]:
    """daq-sim's command line: one --target per loopback port (units go round-robin over them); rate in Mbit/s
    (0: as fast as it can); --duration seconds or --frames per unit."""
    argv = [exe]
    for p in ports:
        argv += ["--target", f"127.0.0.1:{p}"]
    argv += ["--units", units, "--channels", channels]
    for flag, v in (("--first-unit", first_unit), ("--datagram", datagram),
                    ("--duration", None if duration is None else f"{duration:g}"), ("--frames", frames),
                    ("--rate", f"{rate:g}"), ("--mode", mode), ("--json", json_path)):
        if v is not None:
            argv += [flag, v]
    if quiet:
        argv.append("--quiet")
    return [str(a) for a in [*argv, *extra]]


# ------------------------------------------------------------------ children


# While subprocess.Popen() runs, this process holds the write ends of the child's pipes: the exec-status pipe
# Popen reads until EOF to learn that exec succeeded, and stdout/stderr when they are PIPE. O_CLOEXEC keeps
# them out of programs that exec, not out of a plain fork(): a fork() made by another thread in that window
# (a torch DataLoader worker with multiprocessing_context="fork", any multiprocessing "fork" Process) copies
# them into a process that never execs and keeps them until it exits. Popen() then blocks on the exec-status
# pipe, and communicate() on stdout, for as long as that process lives. _SPAWN_LOCK is held for each Popen()
# made here and taken by os.fork()'s before-hook, so a fork waits for a Popen() in flight (a few ms) and a
# Popen() waits for a fork in flight. An RLock: a Popen with preexec_fn runs the fork hooks in the thread that
# holds it.
_SPAWN_LOCK = threading.RLock()


def _before_fork() -> None:
    _SPAWN_LOCK.acquire()


def _after_fork_in_parent() -> None:
    _SPAWN_LOCK.release()


def _after_fork_in_child() -> None:
    global _SPAWN_LOCK
    _SPAWN_LOCK = threading.RLock()  # the copy is held by the parent's thread: start afresh


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child)


def popen(argv, **kwargs) -> subprocess.Popen:
    """subprocess.Popen(argv, **kwargs), never interleaved with an os.fork() of another thread (see
    _SPAWN_LOCK): the child's pipes reach no forked Python process, so its EOFs come when it exits."""
    with _SPAWN_LOCK:
        return subprocess.Popen(argv, **kwargs)


def _die_with_parent() -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort; daqd's --duration is the second safety net
        pass


class Children:
    """The child processes one tool started, so that every exit path can stop them all.

    own_session: each child in a session of its own, so a Ctrl-C at the terminal reaches only the tool, which
    stops the children in order. die_with_parent: PR_SET_PDEATHSIG = SIGTERM, so nothing outlives a tool that
    is killed outright. Used from the tool's main thread only.
    """

    def __init__(self, *, own_session: bool = False, die_with_parent: bool = False):
        self.own_session = own_session
        self.die_with_parent = die_with_parent
        self.procs: list[subprocess.Popen] = []

    def spawn(self, argv, *, stdout=None, stderr=None, env=None) -> subprocess.Popen:
        p = popen([str(a) for a in argv], stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, env=env,
                             start_new_session=self.own_session,
                             preexec_fn=_die_with_parent if self.die_with_parent else None)
        self.procs.append(p)
        return p

    def forget(self, p: subprocess.Popen) -> None:
        if p in self.procs:
            self.procs.remove(p)

    def stop_all(self, term_grace: float = 10.0, kill_grace: float = 10.0) -> list[subprocess.Popen]:
        """SIGTERM to every child still running (none with term_grace 0), SIGKILL after term_grace; returns the
        children that did not die within kill_grace after that."""
        undead = []
        for p in self.procs:
            if p.poll() is not None:
                continue
            try:
                if term_grace > 0:
                    p.send_signal(signal.SIGTERM)
                    try:
                        p.wait(term_grace)
                        continue
                    except subprocess.TimeoutExpired:
                        pass
                p.kill()
                try:
                    p.wait(kill_grace)
                except subprocess.TimeoutExpired:
                    undead.append(p)
            except OSError:
                pass
        self.procs = undead
        return undead


def tail(path, n: int = 8) -> str:
    """The last n lines of a log file ('' when there is none or it cannot be read)."""
    if path is None:
        return ""
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def wait_ready(p: subprocess.Popen, ready, timeout: float, *, what: str, goal: str, log_path=None,
               log_lines: int = 10, interval: float = 0.02):
    """Calls ready() until it returns a true value, and returns that value.

    StartError when p exits first, StartTimeout when `timeout` seconds pass (p is left running: the caller
    stops it); both end with the last log_lines of log_path. Exceptions from ready() pass through.
    """
    deadline = time.monotonic() + timeout
    while True:
        if p.poll() is not None:
            raise StartError(f"{what} exited at start (status {p.returncode}):\n{tail(log_path, log_lines)}")
        if time.monotonic() > deadline:
            raise StartTimeout(f"{what} did not {goal} within {timeout:g} s:\n{tail(log_path, log_lines)}")
        got = ready()
        if got:
            return got
        time.sleep(interval)


def reap(p: subprocess.Popen, deadline: float, term_grace: float = 10.0, kill_grace: float = 10.0):
    """Waits for p until the monotonic deadline, then SIGTERM, then SIGKILL after term_grace.

    Returns (exit status, CPU seconds of the child from wait4's rusage: all its threads, timed_out). Status
    None when it did not die within kill_grace of SIGKILL (D state): the caller may try again later. A child
    reaped before gives its status and 0 CPU seconds.
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
                stage, deadline = 2, now + kill_grace
            else:
                return None, 0.0, True
        time.sleep(0.02)


def stop(p: subprocess.Popen, timeout: float, term_grace: float = 10.0, kill_grace: float = 10.0):
    """SIGTERM now (daqd drains its queues, closes the run and exits; daq-sim sends its last round), then
    reap() with `timeout` seconds. Returns reap()'s (status, CPU seconds, timed_out)."""
    if p.returncode is None:
        try:
            os.kill(p.pid, signal.SIGTERM)  # not Popen.send_signal: its poll() would reap and lose the rusage
        except ProcessLookupError:
            pass
    return reap(p, time.monotonic() + timeout, term_grace, kill_grace)


def poll_child(p: subprocess.Popen, cpu: dict) -> bool:
    """True while p runs. Reaps it when it has ended, keeping its CPU seconds in cpu[pid]."""
    if p.returncode is not None:
        return False
    pid, status, ru = os.wait4(p.pid, os.WNOHANG)
    if pid != p.pid:
        return True
    p.returncode = os.waitstatus_to_exitcode(status)
    cpu[p.pid] = ru.ru_utime + ru.ru_stime
    return False


# ------------------------------------------------------------------ /proc


def _stat_fields(path: str) -> list[str]:
    with open(path) as f:
        return f.read().rsplit(")", 1)[1].split()  # after "(comm)", which may hold spaces


def proc_cpu(pid: int, *, missing: float | None = None) -> float:
    """utime + stime of a live process, seconds (all threads). A process that is gone raises OSError, or
    gives `missing` when that is set."""
    try:
        f = _stat_fields(f"/proc/{pid}/stat")
        return (int(f[11]) + int(f[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        if missing is None:
            raise
        return missing


def thread_cpu(pid: int) -> list[tuple[int, float]]:
    """(tid, utime + stime seconds) of every thread of a live process, in the order the threads started."""
    out = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            f = _stat_fields(f"/proc/{pid}/task/{tid}/stat")
            out.append((int(f[19]), int(tid), (int(f[11]) + int(f[12])) / CLK_TCK))
        except (OSError, IndexError, ValueError):
            pass
    return [(tid, cpu) for _, tid, cpu in sorted(out)]


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


def free_bytes(path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


# ------------------------------------------------------------------ HTTP and the Prometheus text format


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


_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?\s*$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"')
_ESCAPE = re.compile(r"\\(.)")


def _unescape(v: str) -> str:
    return _ESCAPE.sub(lambda m: "\n" if m.group(1) == "n" else m.group(1), v)


def parse_metrics(text: str) -> list[tuple[str, dict, float]]:
    """[(name, {label: value}, value)] of every sample line; comments and unparsable lines are skipped.
    Label values are unescaped (\\\\, \\", \\n); NaN and ±Inf are floats; timestamps are dropped."""
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
        labels = {k: _unescape(v) for k, v in _LABEL.findall(m.group(2) or "")}
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
    return sorted((float(k), v - pb.get(k, 0.0)) for k, v in cur["buckets"].items())


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
