"""daqctl's command line: status, start, stop, runs, master (README.md).

Exit status: 0 done; 1 a host failed, refused, lost data or could not be
reached (the message names it); 2 a usage or hosts-file error.
"""

from __future__ import annotations

import argparse
import json
import sys

from . import __version__
from .client import DaqctlError, Host, HostError
from .cluster import INFO_FIELDS, LOSS_FIELDS, Cluster, StartError


def parse_meta(items) -> dict:
    """['sample=x', 'energy_keV=12.4', 'cooled=true'] -> {'sample': 'x', 'energy_keV': 12.4, 'cooled': True}:
    integers, then floats, then true/false, else the text as it is."""
    out = {}
    for item in items or ():
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise DaqctlError(f"--meta {item!r}: expected KEY=VALUE")
        out[key] = parse_value(text)
    return out


def parse_value(text: str):
    t = text.strip()
    low = t.lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return int(t, 10)
    except ValueError:
        pass
    try:
        v = float(t)
        if v == v and v not in (float("inf"), float("-inf")):  # JSON has no NaN or infinity
            return v
    except ValueError:
        pass
    return text


def _table(rows, head):
    widths = [max(len(str(r[i])) for r in [head] + rows) for i in range(len(head))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(head)] + [line(r) for r in rows])


def _cluster(args) -> Cluster:
    if args.hosts and args.url:
        raise DaqctlError("give --hosts FILE or --url URL, not both")
    if args.hosts:
        return Cluster.from_file(args.hosts, master_dir=args.master_dir, timeout=args.timeout)
    url = args.url or "http://127.0.0.1:8080"
    h = Host(url, token_file=args.token_file, tag=args.tag, output_dir=args.output_dir, timeout=args.timeout)
    return Cluster([h], master_dir=args.master_dir, single=args.tag is None)


def cmd_status(c: Cluster, args) -> int:
    st = c.status()
    rows, bad = [], []
    for h in c.hosts:
        s = st[h.tag]
        if isinstance(s, Exception):
            rows.append([h.tag, h.url, "UNREACHABLE", "", "", ""])
            bad.append(str(s))
            continue
        run = s.get("run") or {}
        units = s.get("units") or []
        rows.append([h.tag, h.url, run.get("state", "idle") if run else "idle", run.get("run", run.get("name", "-")) if run else "-",
                     run.get("frames_written", "") if run else "", ",".join(str(u["unit"]) for u in units) or "-"])
    if args.json:
        print(json.dumps({t: (str(v) if isinstance(v, Exception) else v) for t, v in st.items()}, indent=1))
    else:
        print(_table(rows, ["host", "url", "state", "run", "frames", "units"]))
    for m in bad:
        print(f"daqctl: {m}", file=sys.stderr)
    return 1 if bad else 0


def cmd_runs(c: Cluster, args) -> int:
    res = c.runs()
    bad = []
    rows = []
    for h in c.hosts:
        r = res[h.tag]
        if isinstance(r, Exception):
            bad.append(str(r))
            continue
        for run in r.get("runs", []):
            rows.append([h.tag, run.get("name"), run.get("frames"), run.get("size_bytes"), run.get("started_at"),
                         run.get("stopped_at"), "active" if run.get("active") else ""])
    if args.json:
        print(json.dumps({t: (str(v) if isinstance(v, Exception) else v) for t, v in res.items()}, indent=1))
    else:
        print(_table(rows, ["host", "run", "frames", "bytes", "started", "stopped", ""]))
    for m in bad:
        print(f"daqctl: {m}", file=sys.stderr)
    return 1 if bad else 0


def cmd_start(c: Cluster, args) -> int:
    meta = parse_meta(args.meta)
    try:
        r = c.start(args.run, meta=meta, prepare_timeout_s=args.prepare_timeout, compression=args.compression,
                    write_master=not args.no_master)
    except StartError as e:
        print(f"daqctl: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"run": r.run, "skew_s": r.skew_s, "started_spread_ns": r.started_spread_ns,
                          "master": r.master, "master_note": r.master_note,
                          "hosts": {t: {"commit_answer_s": hs.commit_answer_s, "started_unix_ns": hs.started_unix_ns,
                                        "answer": hs.committed} for t, hs in r.hosts.items()}}, indent=1))
    else:
        rows = [[t, hs.committed.get("state", ""), ",".join((hs.prepared or hs.committed).get("files", []) or []),
                 hs.started_unix_ns if hs.started_unix_ns is not None else "-", f"{hs.commit_answer_s * 1e3:.3f}"]
                for t, hs in r.hosts.items()]
        print(f"run {r.run} recording on {len(r.hosts)} host(s)")
        print(_table(rows, ["host", "state", "files", "started_unix_ns", "commit answer +ms"]))
        if len(r.hosts) > 1:
            spread = "-" if r.started_spread_ns is None else f"{r.started_spread_ns / 1e6:.3f} ms"
            print(f"start skew: {r.skew_s * 1e3:.3f} ms between the first and last commit answer; "
                  f"hosts' started_unix_ns spread {spread}")
        if r.master:
            print(f"master file: {r.master}")
    if r.master_note:
        print(f"daqctl: note: {r.master_note}", file=sys.stderr)
    return 0


def cmd_stop(c: Cluster, args) -> int:
    r = c.stop(allow_loss=args.allow_loss, write_master=not args.no_master)
    if args.json:
        print(json.dumps({"run": r.run, "ok": r.ok, "problems": r.problems, "master": r.master,
                          "hosts": {t: hs.answer for t, hs in r.hosts.items()}}, indent=1))
    else:
        cols = ["frames_written"] + [k for k in LOSS_FIELDS] + [k for k in INFO_FIELDS if k != "frames_written"]
        rows = []
        for t, hs in r.hosts.items():
            a = hs.answer or {}
            counts = a.get("counts") or {}
            if hs.answer is None:
                state = "UNREACHABLE" if getattr(hs.error, "status", None) is None else f"HTTP {hs.error.status}"
            else:
                state = "FAILED" if a.get("failed") else ("PROBLEM" if hs.problems else "ok")
            rows.append([t, a.get("run", "-"), state] + [a.get(k, counts.get(k, "")) if k == "frames_written"
                                                         else counts.get(k, "") for k in cols])
        print(_table(rows, ["host", "run", "state"] + cols))
        if r.master:
            print(f"master file: {r.master}")
    for p in r.problems:
        print(f"daqctl: {p}", file=sys.stderr)
    return 0 if r.ok else 1


def cmd_master(c: Cluster, args) -> int:
    path, notes = c.write_master(args.run)
    print(f"master file: {path}")
    for n in notes:
        print(f"daqctl: note: {n}", file=sys.stderr)
    return 1 if any("left out" in n for n in notes) else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="daqctl", description="Start, stop and watch runs on one or several daqd servers.")
    p.add_argument("--version", action="version", version=f"daqctl {__version__}")
    g = p.add_argument_group("which daqd")
    g.add_argument("--hosts", metavar="FILE", help="TOML file with one [[hosts]] table per daqd (url, token_file, "
                   "tag, output_dir)")
    g.add_argument("--url", help="one daqd (default http://127.0.0.1:8080)")
    g.add_argument("--token-file", help="with --url: the file holding its API token")
    g.add_argument("--tag", help="with --url: run it as a one-host cluster with this host tag (<run>_<tag>.h5 "
                   "and a master file) rather than as plain daqd")
    g.add_argument("--output-dir", help="with --url: where its files are, as seen from here")
    p.add_argument("--master-dir", default=".", help="where the master file <run>.h5 goes (default: .)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each HTTP answer (default 10)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("status", help="each daqd's state, run and units")
    sub.add_parser("runs", help="the runs each daqd has on disk")
    s = sub.add_parser("start", help="start RUN on every host (two-phase: prepare all, then commit all)")
    s.add_argument("run")
    s.add_argument("--meta", action="append", metavar="KEY=VALUE",
                   help="metadata stored in every file (repeatable); numbers and true/false are typed")
    s.add_argument("--prepare-timeout", type=float, help="seconds a host keeps a prepared run (daqd's default 30)")
    s.add_argument("--compression", choices=("none", "bslz4"))
    s.add_argument("--no-master", action="store_true", help="do not write the master file")
    s = sub.add_parser("stop", help="stop the run on every host, check the counts, rebuild the master file")
    s.add_argument("--allow-loss", action="store_true", help="lost packets/frames are reported but do not fail")
    s.add_argument("--no-master", action="store_true", help="do not rebuild the master file")
    s = sub.add_parser("master", help="(re)build the master file <master-dir>/<run>.h5 from the hosts' files")
    s.add_argument("run")
    return p


COMMANDS = {"status": cmd_status, "runs": cmd_runs, "start": cmd_start, "stop": cmd_stop, "master": cmd_master}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        c = _cluster(args)
    except DaqctlError as e:
        print(f"daqctl: {e}", file=sys.stderr)
        return 2
    if args.command == "master" and c.single:
        print("daqctl: master needs --hosts FILE (or --url with --tag): a plain daqd run is its own file",
              file=sys.stderr)
        return 2
    try:
        return COMMANDS[args.command](c, args)
    except HostError as e:
        print(f"daqctl: {e}", file=sys.stderr)
        return 1
    except DaqctlError as e:
        print(f"daqctl: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # the master directory or a host's files (h5py raises OSError too)
        print(f"daqctl: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
