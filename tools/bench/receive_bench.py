#!/usr/bin/env python3
"""receive_bench.py: highest lossless receive rate of daqd, against the machine's ceilings.

For each case (datagram size x links x backend x GRO x writer) it searches the
highest total daq-sim rate that daqd receives with no loss at all, and in the
same run measures the baselines: the bare receive ceiling (daq-drain, same
traffic, same search) and the disk's sequential write ceiling
(daq-disk-ceiling). Prints a Markdown table. See tools/bench/README.md.

Standard library only; starting and stopping the programs is daqload.procs
(tools/daqload), shared with the soak. Every child process runs under a
deadline, and the whole tool stops by itself after --max-wall seconds.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools" / "daqload"))
from daqload.procs import (CLK_TCK, Children, StartError, bound_udp_ports, daqd_argv, find_binaries,  # noqa: E402
                           free_bytes, host_cpu, loadavg, proc_cpu, reap, sim_argv, stop, tail, thread_cpu,
                           udp_bound, wait_ready)

# Channels per frame for each datagram size: a frame is several packets.
#   1472-byte datagrams carry 1432 payload bytes: 4096 ch = 8 KiB = 6 packets.
#   8972-byte datagrams carry 8932 payload bytes: 16384 ch = 32 KiB = 4 packets.
# Both fit assembly.max_frame_bytes (default 65536).
DEFAULT_CHANNELS = {1472: 4096, 8972: 16384}

DEFAULT_CASES = dict(datagram=[1472], links=[1, 2], backend=["recvmmsg", "io_uring"], gro=["off", "on"],
                     writer=["on"])
ALL_CASES = dict(datagram=[1472, 8972], links=[1, 2], backend=["recvmmsg", "io_uring"], gro=["off", "on"],
                 writer=["on", "off"])


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# The names daqd gives its threads (common::worker; the HTTP server's threads). A thread that receives and
# assembles (threads.combine_receive_assembly) is "receiver+assembler": it runs the backend too.
DAQD_THREAD_NAMES = {"daqd-receive": "receiver", "daqd-assemble": "assembler", "daqd-recv+asm": "receiver+assembler",
                     "daqd-process": "processor", "daqd-write": "writer", "daqd-http": "http",
                     "daqd-http-run": "http-run"}


def daqd_thread_names(pid: int, tids: list[int]) -> list[str]:
    """What each of daqd's threads does, by its name (never by how many there are: the HTTP server, processing
    stages and a combined receive thread change the count). An unnamed thread other than main is "tid<N>"."""
    names = []
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                comm = f.read().strip()
        except OSError:
            comm = ""
        names.append("main" if tid == pid else DAQD_THREAD_NAMES.get(comm, f"tid{tid}"))
    return names


def receiver_thread_cpu(threads: dict) -> tuple[float | None, str]:
    """CPU seconds of the thread that runs the receive backend, and a note when it also assembles."""
    if "receiver" in threads:
        return threads["receiver"], ""
    if "receiver+assembler" in threads:
        return threads["receiver+assembler"], " (+assembly)"
    return None, ""


# ------------------------------------------------------------------ cases


@dataclass(frozen=True)
class Case:
    datagram: int
    links: int
    backend: str  # recvmmsg | io_uring | drain
    gro: bool
    writer: str  # on (disk) | off (tmpfs) | - (drain)

    def name(self) -> str:
        link = f"{self.links} link{'s' if self.links > 1 else ''}"
        gro = "GRO on" if self.gro else "GRO off"
        if self.backend == "drain":
            return f"bare drain: {self.datagram} B, {link}, {gro}"
        w = "writer on (disk)" if self.writer == "on" else "writer off (no run recorded)"
        return f"daqd: {self.datagram} B, {link}, {self.backend}, {gro}, {w}"

    def drain_key(self) -> Case:
        return Case(self.datagram, self.links, "drain", self.gro, "-")


@dataclass
class Trial:
    rate: float  # requested total Mbit/s
    ok: bool = False
    error: str = ""
    sender_limited: bool = False
    sim: dict = field(default_factory=dict)
    rx: dict = field(default_factory=dict)  # daqd summary or daq-drain output
    cpu: float = 0.0  # receiver CPU seconds over the trial
    sim_cpu: float = 0.0
    machine_busy: float = 0.0  # fraction of all CPUs busy while daq-sim ran
    others: float = 0.0  # fraction of all CPUs used by other processes (not daq-sim, not the receiver) meanwhile
    threads: dict = field(default_factory=dict)  # daqd: CPU seconds per thread over the trial
    rx_window_cpu: float = 0.0  # receiver process CPU while daq-sim ran
    loss: dict = field(default_factory=dict)  # nonzero loss counters

    def packets(self) -> int:
        return int(self.sim.get("packets_sent", 0))

    def as_json(self) -> dict:
        return dict(rate=self.rate, ok=self.ok, error=self.error, sender_limited=self.sender_limited,
                    cpu_seconds=self.cpu, sim_cpu_seconds=self.sim_cpu, machine_busy=self.machine_busy,
                    other_processes=self.others, thread_cpu_seconds=self.threads,
                    loss=self.loss, sim=self.sim, receiver=self.rx)


@dataclass
class Search:
    case: Case
    trials: list[Trial] = field(default_factory=list)
    best: Trial | None = None
    note: str = ""


# ------------------------------------------------------------------ bench


class Bench:
    def __init__(self, a: argparse.Namespace):
        self.a = a
        try:
            bins = find_binaries(a.build, ("daqd", "daq-sim", "daq-drain", "daq-disk-ceiling"),
                                 hint="build them first, see tools/bench/README.md")
        except FileNotFoundError as e:
            sys.exit(f"receive_bench: {e}")
        self.daqd, self.sim, self.drain, self.disk = (bins[n] for n in ("daqd", "daq-sim", "daq-drain",
                                                                         "daq-disk-ceiling"))
        tag = f"daqd-bench-{os.getpid()}"
        self.work = Path(a.disk_dir) / tag  # logs, summaries; writer-on output below it
        self.out_disk = self.work / "out"
        self.out_tmpfs = Path(a.tmpfs_dir) / tag / "out"
        self.work.mkdir(parents=True)
        self.started = time.monotonic()
        self.trial_no = 0
        self.ports = self.pick_ports(a.port_base, 2)
        self.children = Children()

    # -- housekeeping

    def pick_ports(self, base: int, n: int) -> list[int]:
        used = bound_udp_ports()
        for b in range(base, base + 400, 10):
            ports = list(range(b, b + n))
            if not set(ports) & used:
                return ports
        sys.exit("receive_bench: no free UDP port block found; use --port-base")

    def out_of_time(self) -> bool:
        return time.monotonic() - self.started > self.a.max_wall

    def cleanup(self) -> None:
        self.children.stop_all(term_grace=0, kill_grace=5)
        if not self.a.keep_work:
            shutil.rmtree(self.work, ignore_errors=True)
        shutil.rmtree(self.out_tmpfs.parent, ignore_errors=True)

    # -- one trial

    def sim_cmd(self, case: Case, rate: float, ports: list[int], json_path: Path) -> list[str]:
        channels = self.a.channels or DEFAULT_CHANNELS.get(case.datagram, 4096)
        return sim_argv(self.sim, ports, units=max(self.a.units, case.links), channels=channels, rate=rate,
                        duration=self.a.seconds, datagram=case.datagram, mode=self.a.sim_mode, json_path=json_path)

    def run_sim(self, case: Case, rate: float, ports: list[int], t: Trial, tdir: Path, rx_pid: int) -> bool:
        sim_json = tdir / "sim.json"
        with open(tdir / "sim.log", "wb") as err:
            b0, r0 = host_cpu(), proc_cpu(rx_pid, missing=0.0)
            p = self.children.spawn(self.sim_cmd(case, rate, ports, sim_json), stdout=subprocess.DEVNULL,
                                    stderr=err)
            rc, t.sim_cpu, timed_out = reap(p, time.monotonic() + self.a.seconds + 20, 5, 30)
            b1, r1 = host_cpu(), proc_cpu(rx_pid, missing=0.0)
            self.children.forget(p)
        total = max(1, b1[1] - b0[1])
        t.machine_busy = (b1[0] - b0[0]) / total
        # What neither daq-sim nor the receiver used (neighbours, ksoftirqd, this script), as a share of all CPUs.
        t.rx_window_cpu = r1 - r0
        t.others = max(0.0, (b1[0] - b0[0]) / CLK_TCK - t.sim_cpu - (r1 - r0)) / (total / CLK_TCK)
        if rc != 0 or timed_out:
            t.error = f"daq-sim exit {rc}{' (timed out)' if timed_out else ''}: {tail(tdir / 'sim.log', 3)}"
            return False
        try:
            t.sim = json.loads(sim_json.read_text())
        except (OSError, ValueError) as e:
            t.error = f"daq-sim summary unreadable: {e}"
            return False
        achieved = float(t.sim.get("rate_mbps", 0))
        t.sender_limited = achieved < self.a.sender_slack * rate
        if t.sim.get("send_errors", 0):
            t.error = f"daq-sim send_errors={t.sim['send_errors']}"
            return False
        return True

    def trial(self, case: Case, rate: float) -> Trial:
        self.trial_no += 1
        t = Trial(rate)
        tdir = self.work / f"trial{self.trial_no:04d}"
        tdir.mkdir()
        ports = self.ports[:case.links]
        if set(ports) & bound_udp_ports():
            t.error = f"UDP port(s) {ports} already bound by another process"
            return t
        if case.backend == "drain":
            self.trial_drain(case, rate, ports, t, tdir)
        else:
            self.trial_daqd(case, rate, ports, t, tdir)
        if not self.a.keep_work:
            shutil.rmtree(tdir, ignore_errors=True)
        return t

    def trial_daqd(self, case: Case, rate: float, ports: list[int], t: Trial, tdir: Path) -> None:
        out = self.out_disk if case.writer == "on" else self.out_tmpfs
        out.mkdir(parents=True, exist_ok=True)
        # Free space: twice what this trial can write.
        need = 2 * rate * 1e6 / 8 * self.a.seconds
        if free_bytes(out) < need:
            t.error = f"not enough free space in {out} for {need / 1e9:.1f} GB"
            return
        summary = tdir / "summary.json"
        # Writer off: daqd records no run (frames are assembled, then counted as
        # not recorded) — the receive path and assembly alone.
        # --config (e.g. a bigger frame pool): the case's command-line options still override it.
        cmd = daqd_argv(self.daqd, config=self.a.daqd_config, listen=[f"127.0.0.1:{p}" for p in ports], output=out,
                        run=f"bench{self.trial_no:04d}" if case.writer == "on" else None,
                        duration=self.a.seconds + 3, backend=case.backend, summary_json=summary, log_level="warn",
                        gro=case.gro)
        with open(tdir / "daqd.log", "wb") as lg:
            d = self.children.spawn(cmd, stdout=lg, stderr=lg)
        try:
            try:
                wait_ready(d, udp_bound(ports), 15, what="daqd", goal=f"bind {ports}")
            except StartError:
                t.error = f"daqd did not bind {ports}: {tail(tdir / 'daqd.log', 4)}"
                return
            cpu0 = proc_cpu(d.pid, missing=0.0)  # start-up (ring and pool allocation) is not counted
            th0 = dict(thread_cpu(d.pid))
            sim_ok = self.run_sim(case, rate, ports, t, tdir, d.pid)
            time.sleep(self.a.grace)  # let the sockets drain, then stop daqd (it drains rings and queues)
            th1 = thread_cpu(d.pid)  # the threads end during the stop; the drain at stop is not in these
            names = daqd_thread_names(d.pid, [tid for tid, _ in th1])
            t.threads = {n: round(c - th0.get(tid, 0.0), 3) for n, (tid, c) in zip(names, th1)}
            rc, cpu, timed_out = stop(d, 60, 5, 30)
            t.cpu = cpu - cpu0
            if timed_out or rc != 0:
                t.error = t.error or f"daqd exit {rc}{' (timed out)' if timed_out else ''}: {tail(tdir / 'daqd.log', 4)}"
                return
            if not sim_ok:
                return
            try:
                t.rx = json.loads(summary.read_text())
            except (OSError, ValueError) as e:
                t.error = f"daqd summary unreadable: {e}"
                return
        finally:
            if d.returncode is None and d.poll() is None:
                d.kill()
                d.wait()
            self.children.forget(d)
            # Run files: delete so the disk does not fill; a killed daqd may leave its packet ring.
            shutil.rmtree(out, ignore_errors=True)
            for ring in Path("/dev/shm").glob(f"daqd-{d.pid}-*"):
                ring.unlink(missing_ok=True)
        rx = t.rx
        sent = t.packets()
        t.loss = {k: rx.get(k, 0) for k in ("kernel_drops", "ring_dropped", "frames_overflow", "packets_lost",
                                              "frames_incomplete", "frames_lost", "late", "invalid_total")
                  if rx.get(k, 0)}
        missing = sent - rx.get("packets_received", 0)
        if missing:
            t.loss["missing"] = missing
        t.ok = (rx.get("packets_lost", 1) == 0 and rx.get("ring_dropped", 1) == 0 and rx.get("kernel_drops", 1) == 0
                and rx.get("frames_overflow", 1) == 0 and rx.get("packets_received", -1) == sent
                and not rx.get("run_failed", False))
        if rx.get("run_failed"):
            t.error = f"run failed: {rx.get('run_error')}"

    def trial_drain(self, case: Case, rate: float, ports: list[int], t: Trial, tdir: Path) -> None:
        cmd = [self.drain, "--idle", "1", "--duration", f"{self.a.seconds + 15:g}"]
        for port in ports:
            cmd += ["--listen", f"127.0.0.1:{port}"]
        if case.gro:
            cmd.append("--gro")
        with open(tdir / "drain.json", "wb") as o, open(tdir / "drain.log", "wb") as e:
            d = self.children.spawn(cmd, stdout=o, stderr=e)
        try:
            try:
                wait_ready(d, udp_bound(ports), 15, what="daq-drain", goal=f"bind {ports}")
            except StartError:
                t.error = f"daq-drain did not bind {ports}: {tail(tdir / 'drain.log', 4)}"
                return
            sim_ok = self.run_sim(case, rate, ports, t, tdir, d.pid)
            if sim_ok:  # it stops by itself 1 s after the last datagram
                rc, _, timed_out = reap(d, time.monotonic() + 20, 5, 30)
            else:
                rc, _, timed_out = stop(d, 20, 5, 30)
            if rc != 0 or not sim_ok:
                t.error = t.error or f"daq-drain exit {rc}: {tail(tdir / 'drain.log', 4)}"
                return
            t.rx = json.loads((tdir / "drain.json").read_text())
        except (OSError, ValueError) as e:
            t.error = f"daq-drain output unreadable: {e}"
            return
        finally:
            if d.returncode is None and d.poll() is None:
                d.kill()
                d.wait()
            self.children.forget(d)
        # Its CPU over daq-sim's run, as for daqd's threads (its own cpu_seconds also counts start-up and idle tail).
        t.cpu = t.rx_window_cpu
        sent = t.packets()
        if t.rx.get("kernel_drops", 0):
            t.loss["kernel_drops"] = t.rx["kernel_drops"]
        if sent - t.rx.get("datagrams", 0):
            t.loss["missing"] = sent - t.rx.get("datagrams", 0)
        t.ok = t.rx.get("kernel_drops", 1) == 0 and t.rx.get("datagrams", -1) == sent

    # -- the search

    def search(self, case: Case) -> Search:
        s = Search(case)
        a = self.a

        def run(rate: float) -> Trial:
            t = self.trial(case, rate)
            s.trials.append(t)
            state = "ok" if t.ok else ("ERROR " + t.error if t.error else "LOSS " + fmt_loss(t.loss))
            got = t.sim.get("rate_mbps", 0)
            log(f"  {rate:8.1f} Mbit/s (sent {got:8.1f}{', sender-limited' if t.sender_limited else ''}): {state}")
            if t.ok and (s.best is None or t.sim.get("rate_mbps", 0) > s.best.sim.get("rate_mbps", 0)):
                s.best = t
            return t

        log(f"{case.name()}")

        def sent(t: Trial) -> float:
            return float(t.sim.get("rate_mbps", 0)) or t.rate

        # lo / hi are rates daq-sim actually reached (a busy machine can fall short of the request).
        lo = hi = None
        retried = False
        rate = a.start_rate
        # Double until loss (or the sender or --max-rate is the limit).
        while True:
            if self.out_of_time():
                s.note = "stopped: --max-wall reached"
                return s
            t = run(rate)
            if t.error:
                s.note = f"error at {rate:g} Mbit/s: {t.error}"
                return s
            if not t.ok:
                hi = sent(t)
                break
            if t.sender_limited and lo is not None and sent(t) < 1.1 * lo:
                # Asking for more no longer gives more. One slow trial can be a busy moment: try once more.
                if not retried:
                    retried = True
                    continue
                s.note = f"sender-limited: daq-sim reached at most {max(lo, sent(t)):.0f} Mbit/s"
                return s
            retried = False
            lo = max(lo or 0.0, sent(t))
            if rate * 2 > a.max_rate:
                s.note = f"reached --max-rate {a.max_rate:g} without loss"
                return s
            rate *= 2
        # Lost at the start rate: halve until lossless.
        while lo is None:
            rate = min(rate, hi) / 2
            if rate < a.start_rate / 16 or self.out_of_time():
                s.note = f"loss even at {hi:.0f} Mbit/s"
                return s
            t = run(rate)
            if t.error:
                s.note = f"error at {rate:g} Mbit/s: {t.error}"
                return s
            if t.ok:
                lo = sent(t)
            else:
                hi = min(hi, sent(t))
        # Bisect between the highest lossless and the lowest lossy rate reached.
        for _ in range(a.bisect_steps):
            if self.out_of_time():
                s.note = "stopped: --max-wall reached"
                break
            if hi <= lo * 1.02:
                s.note = f"noisy: loss at {hi:.0f} Mbit/s, at or below a lossless {lo:.0f}"
                break
            mid = (lo + hi) / 2
            t = run(mid)
            if t.error:
                s.note = f"error at {mid:g} Mbit/s: {t.error}"
                break
            if t.ok:
                lo = max(lo, sent(t))
            else:
                hi = min(hi, sent(t))
        return s

    def search_with_reference(self, case: Case) -> Search:
        """The search, plus a trial at --cpu-rate when the search did not run one (for the CPU comparison)."""
        s = self.search(case)
        if self.a.cpu_rate > 0 and not any(t.rate == self.a.cpu_rate for t in s.trials) and not self.out_of_time() \
                and not s.note.startswith("error"):
            t = self.trial(case, self.a.cpu_rate)
            log(f"  {self.a.cpu_rate:8.1f} Mbit/s (CPU reference): {'ok' if t.ok else 'LOSS ' + fmt_loss(t.loss)}")
            s.trials.append(t)
        return s


def dirty_note(seconds: float) -> str:
    """How much a run can write before the page cache makes it wait for the disk."""
    try:
        def sysctl(name):
            return int(Path(f"/proc/sys/vm/{name}").read_text())
        avail = 0
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
        limit = sysctl("dirty_bytes") or sysctl("dirty_ratio") * avail // 100
        bg = sysctl("dirty_background_bytes") or sysctl("dirty_background_ratio") * avail // 100
    except (OSError, ValueError):
        return ""
    return (f"Page cache: daqd does not fsync its run files, so writes only wait for the disk once dirty data passes "
            f"about {limit / 1e9:.1f} GB (vm.dirty_*; writeback starts at {bg / 1e9:.1f} GB). A {seconds:g} s trial at "
            f"R Mbit/s writes R × {seconds / 8:g} MB, so 'writer on' trials shorter than that measure the page cache, "
            f"not the disk: a ratio to the disk ceiling above 1 is the cache absorbing the run.")


def fmt_loss(loss: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in loss.items()) or "-"


# ------------------------------------------------------------------ report


def report(bench: Bench, searches: list[Search], disk: dict | None, a: argparse.Namespace, meta: dict) -> str:
    drains = {s.case: s for s in searches if s.case.backend == "drain"}
    lines = []
    if a.daqd_config:
        lines.append(f"daqd --config {a.daqd_config}")
    lines.append(f"receive_bench: {meta['host']}, kernel {meta['kernel']}, {meta['cpus']} CPUs, "
                 f"load average before {meta['load_before']} / after {meta['load_after']}; "
                 f"{a.seconds:g} s trials, start {a.start_rate:g} Mbit/s, {a.bisect_steps} bisect steps, "
                 f"{a.units} units, daq-sim --mode {a.sim_mode}")
    if disk:
        if "error" in disk:
            lines.append(f"disk ceiling ({disk.get('dir')}): ERROR {disk['error']}")
        else:
            lines.append(f"disk ceiling ({disk['dir']}): {disk['mb_per_s']:.0f} MB/s "
                         f"({disk['bytes'] / 2**30:.2f} GiB, 1 MiB writes, fdatasync every 64 MiB)")
    lines.append("")
    ref = a.cpu_rate
    lines.append(f"| case | lossless Mbit/s | kpackets/s | ratio to bare drain | CPU s per Mpacket | CPU s per Mpacket "
                 f"@ {ref:g} Mbit/s | receiver thread CPU s per Mpacket @ {ref:g} Mbit/s | MB/s written "
                 f"| ratio to disk ceiling | CPUs busy (other processes) | losses seen (Mbit/s sent: counters) |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for s in searches:
        c, b = s.case, s.best
        busy = "–"
        if b is None:
            rate = kpps = ratio = cpu = mbw = dr = "–"
        else:
            busy = f"{100 * b.machine_busy:.0f} % ({100 * b.others:.0f} %)"
            secs = float(b.sim.get("seconds", 0)) or a.seconds
            achieved = float(b.sim.get("rate_mbps", 0))
            rate = f"{achieved:.0f}" + ("+" if s.note else "")
            kpps = f"{b.packets() / secs / 1e3:.0f}"
            pkts = b.rx.get("packets_received", b.rx.get("datagrams", 0))
            cpu = f"{b.cpu / (pkts / 1e6):.2f}" if pkts else "–"
            ratio = "–"
            if c.backend != "drain":
                d = drains.get(c.drain_key())
                if d and d.best:
                    dr_rate = float(d.best.sim.get("rate_mbps", 0))
                    ratio = f"{achieved / dr_rate:.2f}" + ("" if not d.note else " (drain ≥)")
            mbw = dr = "–"
            if c.backend != "drain":
                mb = b.rx.get("bytes_written", 0) / secs / 1e6
                mbw = f"{mb:.0f}"
                if c.writer == "on" and disk and "mb_per_s" in disk:
                    dr = f"{mb / disk['mb_per_s']:.2f}"
                elif c.writer == "off":
                    dr = "(no run)"
        lossy = sorted((t for t in s.trials if not t.ok and not t.error),
                       key=lambda t: float(t.sim.get("rate_mbps", 0)) or t.rate)
        keys = ("kernel_drops", "ring_dropped", "frames_overflow", "packets_lost", "missing")
        loss = "; ".join(f"{float(t.sim.get('rate_mbps', t.rate)):.0f}: "
                         + (", ".join(f"{k}={t.loss[k]}" for k in keys if k in t.loss) or fmt_loss(t.loss))
                         for t in lossy) or "none"
        if s.note:
            loss += f" — {s.note}"
        cref = rref = "–"
        rt = next((t for t in s.trials if t.rate == ref and not t.error), None)
        if rt:
            pk = rt.rx.get("packets_received", rt.rx.get("datagrams", 0))
            if pk:
                flag = ("" if rt.ok else " (lossy)") + \
                    (" (sent " + f"{float(rt.sim.get('rate_mbps', 0)):.0f})" if rt.sender_limited else "")
                cref = f"{rt.cpu / (pk / 1e6):.2f}" + flag
                rcv, also = (rt.cpu, "") if c.backend == "drain" else receiver_thread_cpu(rt.threads)
                if rcv is not None:
                    rref = f"{rcv / (pk / 1e6):.2f}" + also + flag
        lines.append(f"| {c.name()} | {rate} | {kpps} | {ratio} | {cpu} | {cref} | {rref} | {mbw} | {dr} | {busy} "
                     f"| {loss} |")
    lines.append("")
    lines.append("Rates are UDP payload Mbit/s as daq-sim measured them (sum over links) at the highest lossless "
                 "trial; '+' means the search stopped without finding loss (see the last column). CPU s per Mpacket: at "
                 "the lossless rate, and at one common rate for every case (per-packet cost falls as the rate rises, "
                 "so compare backends in those columns; the receiver thread is daqd's thread that runs the backend, "
                 "measured from daq-sim's start to just before the SIGTERM). "
                 "daqd = utime+stime of the whole process (all threads) from the moment its ports were bound to its "
                 "exit; bare drain = its CPU while daq-sim ran (/proc/PID/stat). 'writer off' runs daqd with no run active: frames are "
                 "received and assembled, then released unrecorded (the receive path alone). "
                 "CPUs busy: the whole machine (/proc/stat) while daq-sim ran in the lossless trial; in brackets the "
                 "share used by neither daq-sim nor the receiver (other users, ksoftirqd, this script).")
    if meta.get("dirty"):
        lines.append("")
        lines.append(meta["dirty"])
    return "\n".join(lines)


def size_arg(v: str) -> float:
    """Bytes, with an optional K/M/G (powers of 1024) suffix: 2G, 512M."""
    mult = {"K": 2**10, "M": 2**20, "G": 2**30}.get(v[-1:].upper(), 1)
    try:
        return float(v[:-1] if mult > 1 else v) * mult
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {v!r}")


def parse_list(v: str, kind):
    out = []
    for x in v.split(","):
        x = x.strip()
        if x:
            out.append(kind(x))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(
        description="Highest lossless receive rate of daqd per case, with the bare-drain and disk ceilings.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Default cases: --datagram 1472 --links 1,2 --backend recvmmsg,io_uring --gro off,on --writer on.\n"
               "Full matrix (32 daqd searches + 8 drain searches; 1-2 hours at 10 s trials):\n"
               "  python3 tools/bench/receive_bench.py --all --max-wall 21600 --json full.json --markdown full.md")
    ap.add_argument("--build", default=str(REPO / "build-bench"), help="build directory (default: build-bench)")
    ap.add_argument("--datagram", help="datagram sizes, comma-separated (1472, 8972)")
    ap.add_argument("--links", help="link counts: 1, 2")
    ap.add_argument("--backend", help="daqd backends: recvmmsg, io_uring")
    ap.add_argument("--gro", help="off, on")
    ap.add_argument("--writer", help="on (output on disk, --disk-dir), off (no run recorded: the receive path alone)")
    ap.add_argument("--all", action="store_true", help="the full matrix (any filter above narrows it)")
    ap.add_argument("--no-drain", action="store_true", help="skip the bare-drain searches")
    ap.add_argument("--drain-only", action="store_true", help="only the bare-drain searches (and the disk ceiling)")
    ap.add_argument("--no-disk", action="store_true", help="skip the disk ceiling")
    ap.add_argument("--seconds", type=float, default=10.0, help="seconds of traffic per trial (default 10)")
    ap.add_argument("--quick", action="store_true", help="3 s trials (same as --seconds 3)")
    ap.add_argument("--start-rate", type=float, default=200.0, help="first trial, total Mbit/s (default 200)")
    ap.add_argument("--max-rate", type=float, default=40000.0, help="never ask for more (default 40000)")
    ap.add_argument("--bisect-steps", type=int, default=3, help="bisection steps after the first loss (default 3)")
    ap.add_argument("--units", type=int, default=4, help="simulated units, spread round-robin over the links (4)")
    ap.add_argument("--channels", type=int, default=0, help="channels per frame (default 4096 for 1472-byte "
                    "datagrams, 16384 for 8972)")
    ap.add_argument("--cpu-rate", type=float, default=800.0, help="common rate (Mbit/s) at which the CPU cost of "
                    "every case is also reported; a trial is added when the search did not run one (default 800; "
                    "0: none)")
    ap.add_argument("--daqd-config", help="run daqd with --config FILE (e.g. a bigger frame pool); --listen, "
                    "--output, --backend and --gro from the case still override it")
    ap.add_argument("--sim-mode", default="gso", choices=["gso", "sendmmsg"], help="daq-sim --mode (gso)")
    ap.add_argument("--sender-slack", type=float, default=0.9,
                    help="a trial is sender-limited when daq-sim reaches less than this fraction of the rate (0.9)")
    ap.add_argument("--grace", type=float, default=0.5, help="seconds between daq-sim's end and SIGTERM to daqd")
    ap.add_argument("--disk-dir", default="/tmp", help="directory on the disk under test (default /tmp); work "
                    "files and writer-on output go to DIR/daqd-bench-PID")
    ap.add_argument("--tmpfs-dir", default="/dev/shm", help="tmpfs for writer-off output (default /dev/shm)")
    ap.add_argument("--disk-bytes", type=size_arg, default=2 * 2**30, help="daq-disk-ceiling size, e.g. 512M (default 2G; "
                    "capped at a quarter of the free space)")
    ap.add_argument("--port-base", type=int, default=47660, help="first UDP port (default 47660)")
    ap.add_argument("--max-wall", type=float, default=2700, help="stop starting trials after this many seconds "
                    "(default 2700)")
    ap.add_argument("--list", action="store_true", help="print the searches that would run, and exit")
    ap.add_argument("--json", help="also write every trial as JSON to this file")
    ap.add_argument("--markdown", help="also write the table to this file")
    ap.add_argument("--keep-work", action="store_true", help="keep logs and summaries of every trial")
    a = ap.parse_args()
    if a.quick:
        a.seconds = 3.0

    # A filter replaces one dimension; the others keep the default subset (or the full matrix with --all).
    dims = dict(ALL_CASES if a.all else DEFAULT_CASES)
    if a.datagram:
        dims["datagram"] = parse_list(a.datagram, int)
    if a.links:
        dims["links"] = parse_list(a.links, int)
    if a.backend:
        dims["backend"] = parse_list(a.backend, str)
    if a.gro:
        dims["gro"] = parse_list(a.gro, str)
    if a.writer:
        dims["writer"] = parse_list(a.writer, str)
    for k, allowed in ALL_CASES.items():
        bad = [v for v in dims[k] if v not in allowed]
        if bad:
            ap.error(f"--{k}: {bad} not among {allowed}")
    cases = [Case(d, l, b, g == "on", w)
             for d, l, b, g, w in itertools.product(dims["datagram"], dims["links"], dims["backend"], dims["gro"],
                                                    dims["writer"])]
    drain_cases = list(dict.fromkeys(c.drain_key() for c in cases))
    if a.drain_only:
        cases = []
    if a.no_drain:
        drain_cases = []

    if a.list:
        for c in drain_cases + cases:
            print(c.name())
        return 0
    bench = Bench(a)
    meta = dict(host=platform.node(), kernel=platform.release(), cpus=os.cpu_count(),
                load_before=loadavg(), dirty=dirty_note(a.seconds))
    searches: list[Search] = []
    disk = None
    interrupted = False

    def on_term(sig, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        if not a.no_disk and any(c.writer == "on" for c in cases) or (a.drain_only and not a.no_disk):
            size = int(min(a.disk_bytes, free_bytes(bench.work) / 4)) // 2**20 * 2**20
            log(f"disk ceiling: {size / 2**30:.2f} GiB in {bench.work}")
            with open(bench.work / "disk.log", "wb") as e:
                p = bench.children.spawn([bench.disk, "--dir", bench.work, "--bytes", str(size)],
                                         stdout=subprocess.PIPE, stderr=e)
                rc, _, to = reap(p, time.monotonic() + 600, 5, 30)
                bench.children.forget(p)
            try:
                disk = json.loads(p.stdout.read()) if rc == 0 else dict(error=f"exit {rc}: {tail(bench.work / 'disk.log', 3)}")
            except ValueError as ex:
                disk = dict(error=str(ex))
            disk.setdefault("dir", str(bench.work))
            log(f"disk ceiling: {disk.get('mb_per_s', disk.get('error'))} MB/s")
        for c in drain_cases + cases:
            if bench.out_of_time():
                s = Search(c, note="skipped: --max-wall reached")
            else:
                s = bench.search_with_reference(c)
            searches.append(s)
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: reporting what was measured")
    finally:
        bench.cleanup()
    meta["load_after"] = loadavg()
    meta["wall_seconds"] = round(time.monotonic() - bench.started, 1)
    table = report(bench, searches, disk, a, meta)
    print(table)
    print(f"\n(wall time {meta['wall_seconds']:.0f} s{', interrupted' if interrupted else ''})")
    if a.markdown:
        Path(a.markdown).write_text(table + "\n")
    if a.json:
        doc = dict(meta=meta, settings=vars(a), disk=disk,
                   searches=[dict(case=s.case.name(), datagram=s.case.datagram, links=s.case.links,
                                  backend=s.case.backend, gro=s.case.gro, writer=s.case.writer, note=s.note,
                                  best_rate=s.best.rate if s.best else None,
                                  trials=[t.as_json() for t in s.trials]) for s in searches])
        Path(a.json).write_text(json.dumps(doc, indent=1) + "\n")
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
