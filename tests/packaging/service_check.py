#!/usr/bin/env python3
"""Issue 17's "done when", one chain with the installed daqd (README: scripts/service-check.sh):

  1. `cmake --install` into a staging prefix; the installed daqd is started as
     systemd would start it (its installed configuration, NOTIFY_SOCKET and
     WATCHDOG_USEC set; the socket is this script's own) and tells its
     supervisor READY=1;
  2. a run is started from its status page in headless Chromium (the token
     typed into the page) while the installed daq-sim sends;
  3. SIGHUP (what `systemctl reload` sends) mid-run with a changed
     configuration file: RELOADING=1 then READY=1, the reload applied;
  4. every frame sent is written, nothing lost (the stop's counts);
  5. a real Prometheus scraping daqd shows it: the board's reload panel query
     answers with the applied reload, and the frames written equal those sent;
  6. SIGTERM: STOPPING=1, exit 0; WATCHDOG=1 pings came meanwhile.

usage: service_check.py BUILD_DIR NODE_MODULES [PROMETHEUS]
exit 0 passed, 1 failed, 77 skipped (no chromium/playwright-core, or no node)
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tools" / "daqload"))
from daqload.procs import Children, free_ports, http, reap, stop  # noqa: E402

build = Path(sys.argv[1]).resolve()
modules = str(Path(sys.argv[2]).resolve())
prometheus = sys.argv[3] if len(sys.argv) > 3 else "/usr/bin/prometheus"
failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if not ok:
        failures.append(what)
    return ok


def wait_for(what, pred, timeout):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout} s for {what}")
        time.sleep(0.05)


if shutil.which("node") is None:
    print("SKIPPED: node not found (Debian package nodejs)")
    sys.exit(77)

scratch = Path(tempfile.mkdtemp(prefix="daqd-service-check-"))
stage = scratch / "stage"
subprocess.run(["cmake", "--install", str(build), "--prefix", str(stage)], check=True, stdout=subprocess.DEVNULL)
daqd, sim_bin = stage / "bin" / "daqd", stage / "bin" / "daq-sim"
check(daqd.exists() and sim_bin.exists(), f"cmake --install put daqd and daq-sim into {stage}/bin")

# The installed configuration, as the service runs it (output and ports on the command line).
cfg = scratch / "daqd.toml"
shutil.copy(stage / "etc" / "daqd" / "daqd.toml", cfg)
original = cfg.read_text()
udp_port = free_ports(socket.SOCK_DGRAM, 1)[0]
http_port, prom_port = free_ports(socket.SOCK_STREAM, 2)
base = f"http://127.0.0.1:{http_port}"
runs = scratch / "runs"

notify_path = str(scratch / "notify.sock")
notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
notify.bind(notify_path)
notify.settimeout(0.1)
messages = []
messages_lock = threading.Lock()
listening = True


def listen():
    """Reads the socket all along, as systemd does: a datagram queue left full would block daqd's sd_notify."""
    while listening:
        try:
            m = notify.recv(4096).decode()
        except (socket.timeout, BlockingIOError):
            continue
        except OSError:
            return
        with messages_lock:
            messages.append(m)


listener = threading.Thread(target=listen, daemon=True)
listener.start()


def notified(text):
    with messages_lock:
        return any(text in m.split("\n") for m in messages)


def query(q):
    url = f"http://127.0.0.1:{prom_port}/api/v1/query?query=" + urllib.parse.quote(q)
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            res = json.loads(resp.read())["data"]["result"]
    except OSError:
        return None
    return float(res[0]["value"][1]) if res else None



children = Children()
log_path = scratch / "daqd.log"
env = dict(os.environ, NOTIFY_SOCKET=notify_path, WATCHDOG_USEC="2000000")
with open(log_path, "wb") as log:
    # The example's links and io_uring backend are the lab's: this machine's
    # loopback and recvmmsg instead (io_uring's buffer ring may be missing here).
    d = children.spawn([str(daqd), "--config", str(cfg), "--output", str(runs), "--listen", f"127.0.0.1:{udp_port}",
                        "--backend", "recvmmsg", "--http", f"127.0.0.1:{http_port}"],
                       stdout=log, stderr=subprocess.STDOUT, env=env)
prom = sim = None
try:
    wait_for("READY=1", lambda: notified("READY=1"), 30)
    check(True, "the installed daqd told its supervisor READY=1")
    token = (runs / ".daqd-token").read_text().strip()

    prom_cfg = scratch / "prometheus.yml"
    prom_cfg.write_text("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: daqd\n    static_configs:\n"
                        f"      - targets: ['127.0.0.1:{http_port}']\n")
    have_prom = Path(prometheus).exists()
    if have_prom:
        prom = children.spawn([prometheus, f"--config.file={prom_cfg}", f"--storage.tsdb.path={scratch / 'tsdb'}",
                               f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    # The run, started from the page.
    r = subprocess.run(["node", str(HERE / "page_start.mjs"), "--url", base, "--token", token, "--run", "svc01",
                        "--modules", modules, "--profile", str(scratch / "chromium")],
                       capture_output=True, text=True, timeout=120)
    print(r.stdout.strip())
    if r.returncode == 77:
        print("SKIPPED: " + r.stdout.strip())
        sys.exit(77)
    check(r.returncode == 0, "a run started from the status page in Chromium")
    status = lambda: http("GET", base + "/api/v1/status", 5)[1]  # noqa: E731
    check(status()["run"]["name"] == "svc01", "daqd records run svc01")
    # Traffic from now on: every frame sent belongs to the run.
    sim_json = scratch / "sim.json"
    # Units 1 and 2 of the installed configuration's list.
    sim = children.spawn([str(sim_bin), "--target", f"127.0.0.1:{udp_port}", "--units", "2", "--first-unit", "1",
                          "--channels", "4096",
                          "--duration", "12", "--rate", "40", "--json", str(sim_json), "--quiet"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for("frames written", lambda: status()["run"]["frames_written"] > 100, 20)

    if have_prom:  # the board sees daqd before the reload, so it sees the reload as an increase
        wait_for("Prometheus scraping daqd", lambda: query("daq_config_reloads_total") is not None, 30)
    # systemctl reload: the file changed, SIGHUP.
    assert 'level = "debug"' in original, "the installed configuration's [log] level changed: adapt this check"
    cfg.write_text(original.replace('level = "debug"', 'level = "info"'))
    d.send_signal(signal.SIGHUP)
    wait_for("RELOADING=1", lambda: notified("RELOADING=1"), 10)
    def ready_after_reload():
        with messages_lock:
            at = max(i for i, m in enumerate(messages) if "RELOADING=1" in m.split("\n"))
            return any("READY=1" in m.split("\n") for m in messages[at:])

    ready_again = wait_for("READY=1 after the reload", ready_after_reload, 10)
    check(bool(ready_again), "SIGHUP mid-run: RELOADING=1, then READY=1")
    check("applied log.level = \"info\"" in log_path.read_text(), "the reload applied log.level")
    check(status()["run"]["state"] == "recording", "the run records on after the reload")

    reap(sim, time.monotonic() + 60)  # daq-sim ends by itself (--duration)
    sent = json.loads(sim_json.read_text())
    wait_for("every frame written", lambda: status()["run"]["frames_written"] >= sent["frames_sent"], 20)
    code, s, _ = http("POST", base + "/api/v1/runs/stop", 10, token=token)
    c = s["counts"]
    check(code == 200 and s["frames_written"] == sent["frames_sent"],
          f"every frame sent is written ({s.get('frames_written')} of {sent['frames_sent']})")
    check(c["packets_lost"] == 0 and c["frames_lost"] == 0 and c["frames_incomplete"] == 0 and c["ring_dropped"] == 0,
          f"nothing lost across the reload: {c}")

    if have_prom:
        board = json.loads((stage / "share" / "daqd" / "dashboards" / "grafana-daqd.json").read_text())
        reload_q = next(t["expr"] for p in board["panels"] for t in p.get("targets", [])
                        if "daq_config_reloads_total" in t["expr"])
        q = reload_q.replace('instance=~"$instance"', 'result="applied"').replace("$__rate_interval", "5m")
        got = None
        try:
            got = wait_for("the reload on the board", lambda: (query(q) or 0) > 0, 30)
        except TimeoutError:
            pass
        check(bool(got), f"the board's reload panel shows the applied reload ({q})")
        frames = None
        try:
            frames = wait_for("frames on the board",
                              lambda: query("sum(daq_frames_written_total)") == sent["frames_sent"], 30)
        except TimeoutError:
            pass
        check(bool(frames), "Prometheus has every frame written")
    else:
        print(f"SKIP: {prometheus} not found: the board step was not run")

    rc, _, timed_out = stop(d, 60)
    check(not timed_out and rc == 0, f"daqd exits 0 on SIGTERM (rc {rc})")
    try:  # sent before daqd exited: in the socket, read by the listener within its poll
        stopping = wait_for("STOPPING=1", lambda: notified("STOPPING=1"), 5)
    except TimeoutError:
        stopping = False
    check(stopping, "STOPPING=1 sent when draining started")
    check(notified("WATCHDOG=1"), "WATCHDOG=1 pings while running")
except Exception as e:  # noqa: BLE001 - reported as a failure with daqd's log
    check(False, f"{type(e).__name__}: {e}")
finally:
    for p in (sim, prom, d):
        if p is not None and p.poll() is None:
            stop(p, 20, term_grace=10)
    listening = False
    listener.join(2)
    notify.close()
if failures:
    print(f"{len(failures)} check(s) failed; daqd's log:\n" + log_path.read_text(errors="replace")[-4000:])
    sys.exit(1)
shutil.rmtree(scratch, ignore_errors=True)
print("service check passed")
