"""One soak run: daqd and its run started, daq-sim's traffic sampled, everything stopped and cleaned up."""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
try:
    import tomllib  # Python >= 3.11
except ImportError:  # older Pythons: the built-in defaults are assumed for the warm-up
    tomllib = None
from pathlib import Path

from daqload.procs import (Children, StartError, daqd_argv, find_binaries, free_bytes, free_ports, http, loadavg,
                           parse_metrics, poll_child, msum, reap, sim_argv, stop, tail, udp_bound, wait_ready)

from . import REPO, SetupError, log, report, samples, scenario
from .scenario import RUN_NAME


class _Abort(Exception):
    pass


def read_text(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return "?"


class Soak:
    """The state of one soak, from set-up to clean-up; main() drives it from the tool's one thread."""

    def __init__(self, a: argparse.Namespace):
        self.a = a
        b = Path(a.build_dir)
        if not b.is_absolute():
            b = (Path.cwd() / b) if (Path.cwd() / b).exists() else (REPO / b)
        self.build_dir = b
        # Own sessions: a Ctrl-C reaches only this tool, which stops daq-sim, the run and daqd in order.
        self.children = Children(own_session=True, die_with_parent=True)
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
        try:
            bins = find_binaries(self.build_dir, ("daqd", "daq-sim"),
                                 hint="build the release preset first (scripts/build.sh release) or pass --build-dir")
        except FileNotFoundError as e:
            raise SetupError(str(e)) from None
        self.daqd_exe, self.sim_exe = bins["daqd"], bins["daq-sim"]
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
        self.space = scenario.check_space(a, self.work)

        self.udp_ports = free_ports(socket.SOCK_DGRAM, a.links)
        self.http_port = free_ports(socket.SOCK_STREAM, 1)[0]
        self.base = f"http://127.0.0.1:{self.http_port}"
        self.config_path = self.work / "daqd.toml"
        self.config_path.write_text(scenario.config_text(a, self.udp_ports, self.http_port, self.out))
        r = subprocess.run([self.daqd_exe, "--check-config", str(self.config_path)], capture_output=True,
                           text=True, timeout=30, stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            raise SetupError(f"daqd refuses the soak configuration {self.config_path}:\n{r.stderr.strip()}")
        r = subprocess.run([self.daqd_exe, "--config", str(self.config_path), "--print-config"],
                           capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        try:
            self.effective_config = tomllib.loads(r.stdout) if tomllib else {}
        except ValueError:  # tomllib.TOMLDecodeError
            self.effective_config = {}
        self.touch_seconds = scenario.lazy_commit_seconds(a, self.effective_config)
        self.warmup = scenario.choose_warmup(a, self.touch_seconds)

    # -- daqd

    def spawn(self, cmd: list, logfile: Path, stdout=None) -> subprocess.Popen:
        with open(logfile, "wb") as lg:
            return self.children.spawn(cmd, stdout=stdout or lg, stderr=lg)

    def start_daqd(self) -> None:
        a = self.a
        self.summary_path = self.work / "daqd-summary.json"
        self.daqd_log = self.work / "daqd.log"
        # --duration: a backstop in case this tool is killed outright (PDEATHSIG is the first one).
        backstop = a.duration + a.sim_slack + a.stop_timeout + 300
        self.daqd_cmd = daqd_argv(self.daqd_exe, config=self.config_path, summary_json=self.summary_path,
                                  duration=backstop, run=RUN_NAME if a.control == "cli" else None,
                                  extra=a.daqd_arg or [])
        log(f"starting daqd: {' '.join(self.daqd_cmd)}")
        self.daqd = self.spawn(self.daqd_cmd, self.daqd_log)

        def answers():
            if not udp_bound(self.udp_ports)():
                return None
            code, body, _ = http("GET", self.base + "/metrics", 5)
            if code != 200 or not isinstance(body, str):
                return None
            if all(f'endpoint="127.0.0.1:{p}"' in body for p in self.udp_ports):
                return body
            raise SetupError(f"{self.base}/metrics is served by another process (not this daqd): the "
                             f"port was taken between choosing and binding; run again")

        try:
            body = wait_ready(self.daqd, answers, a.start_timeout, what="daqd", log_path=self.daqd_log,
                              goal=f"bind UDP {self.udp_ports} and answer {self.base}/metrics", interval=0.1)
        except StartError as e:
            raise SetupError(str(e)) from None
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
        s: dict = dict(t=round(time.monotonic() - self.t0, 3) if self.t0 else 0.0, label=label)
        self.scrape_failures += samples.measure(s, self.daqd.pid, self.base, self.a.scrape_timeout,
                                                self.a.poll_status)
        s["run_dir_bytes"] = self.run_dir_bytes()
        samples.derive(s, self.samples[-1] if self.samples else None)
        self.samples.append(s)
        return s

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
        return sim_argv(self.sim_exe, self.udp_ports, units=a.units, channels=a.channels, rate=a.rate_mbit,
                        duration=a.duration, datagram=a.datagram, mode=a.sim_mode, json_path=self.work / "sim.json")

    def traffic(self) -> None:
        a = self.a
        self.sample("before")  # t = 0: daqd idle, run active, before the first packet
        self.samples[-1]["t"] = 0.0
        cmd = self.sim_cmd()
        self.sim_cmd_str = " ".join(cmd)
        log(f"starting daq-sim for {a.duration:g} s: {self.sim_cmd_str}")
        self.t0 = time.monotonic()
        self.sim = self.spawn(cmd, self.work / "sim.log", stdout=subprocess.DEVNULL)
        report.print_header()
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
                    report.print_row(self.sample())
                    while next_sample <= time.monotonic():
                        next_sample += a.sample_interval
                time.sleep(min(0.1, max(0.0, min(next_sample, next_house) - time.monotonic())))
        except _Abort:
            log(self.aborted)
            self.errors.append(self.aborted)

    def interrupt_sim(self) -> None:
        """First Ctrl-C: daq-sim sends one more round (with END_OF_STREAM) and prints its summary."""
        if self.sim and self.sim.returncode is None and self.sim.poll() is None:
            self.sim.send_signal(signal.SIGTERM)

    def stop_sim(self) -> None:
        if self.sim is None:
            return
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
                report.print_row(self.sample("end"))
        if a.control == "http" and self.daqd and self.daqd.poll() is None:
            code, body, dt = http("POST", self.base + "/api/v1/runs/stop", a.stop_timeout, self.token)
            self.stop_answer = dict(status=code, body=body, seconds=round(dt, 3))
            if code != 200:
                self.errors.append(f"POST /api/v1/runs/stop answered {code}: {body}")
        if self.daqd:
            rc, cpu, timed_out = stop(self.daqd, a.stop_timeout, 10)
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
        for p in self.children.stop_all(term_grace=10, kill_grace=10):
            log(f"pid {p.pid} ({p.args[0]}) does not die")
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
