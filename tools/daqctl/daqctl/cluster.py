"""Cluster: the daqd servers of one detector, started and stopped together.

A Cluster is a list of Hosts (client.Host) and where the master file goes.
It is used from one thread; each call fans out to one thread per host and
returns when every host has answered (or timed out).

- ``start(run)``: two-phase. Every host *prepares* (daqd checks the name and
  its disk, creates its file, records nothing); only when all said yes does
  any host *commit* (start recording). A failed prepare aborts every host that
  prepared, so nothing is left behind, and raises StartError naming the host.
- ``stop()``: stops every host, checks each one's answer (LOSS_FIELDS) and
  rebuilds the master file; StopResult.problems names each host that failed.
- ``write_master(run)``: the master file from the hosts' files (daqctl.master).

Hosts come from a TOML file (``Cluster.from_file``, one ``[[hosts]]`` table
each) or are given as Host objects. A Cluster of one host made with
``single=True`` is plain daqd: no host tag in the file name, no master file.
"""

from __future__ import annotations

import os
import threading
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from .client import NAME_RE, DaqctlError, Host, HostError, name_safe

# Counts in a stop answer (common/include/daqd/common/runs.hpp run_counts) that mean
# data was lost: a non-zero one fails the stop unless losses are allowed.
LOSS_FIELDS = ("packets_lost", "kernel_drops", "ring_dropped", "frames_incomplete", "frames_lost",
               "frames_overflow", "frames_failed")
# Shown in the table, never a failure on their own (their frames are counted above).
INFO_FIELDS = ("packets_received", "duplicates", "late", "invalid", "frames_complete", "frames_written")


class StartError(DaqctlError):
    """A start that did not happen: ``failures`` {tag: message}; ``aborted`` the hosts
    that were prepared and were aborted again; ``abort_failures`` {tag: message}."""

    def __init__(self, message, failures, aborted=(), abort_failures=None):
        super().__init__(message)
        self.failures = dict(failures)
        self.aborted = list(aborted)
        self.abort_failures = dict(abort_failures or {})


@dataclass
class HostStart:
    tag: str
    prepared: dict | None = None
    committed: dict | None = None
    commit_answer_s: float = 0.0  # seconds after the first host's commit answer
    started_unix_ns: int | None = None


@dataclass
class StartResult:
    run: str
    hosts: dict  # tag -> HostStart
    skew_s: float  # first to last commit answer, as seen by daqctl
    started_spread_ns: int | None  # max - min of the hosts' own started_unix_ns
    master: str | None = None
    master_note: str | None = None


@dataclass
class HostStop:
    tag: str
    answer: dict | None = None
    problems: list = field(default_factory=list)
    error: Exception | None = None  # the request's failure (HostError: .status None = no answer)


@dataclass
class StopResult:
    run: str | None
    hosts: dict  # tag -> HostStop
    master: str | None = None
    master_notes: list = field(default_factory=list)

    @property
    def problems(self) -> list:
        """'host TAG (URL): …' lines; empty when every host recorded without loss."""
        return [p for h in self.hosts.values() for p in h.problems] + list(self.master_notes)

    @property
    def ok(self) -> bool:
        return not self.problems


def _parallel(hosts, fn):
    """{tag: (result, None) or (None, exception)} of fn(host) on one thread per host."""
    out = {}
    if not hosts:
        return out
    with ThreadPoolExecutor(max_workers=len(hosts), thread_name_prefix="daqctl") as pool:
        futs = {h.tag: pool.submit(fn, h) for h in hosts}
        for tag, fu in futs.items():
            try:
                out[tag] = (fu.result(), None)
            except Exception as e:  # noqa: BLE001 - every host's outcome is reported, none swallowed
                out[tag] = (None, e)
    return out


def _what(e: BaseException) -> str:
    return str(e) if isinstance(e, DaqctlError) else f"{type(e).__name__}: {e}"


def _msg(host: Host, e: BaseException) -> str:
    if isinstance(e, HostError):
        return str(e)
    return f"host {host.tag} ({host.url}): {type(e).__name__}: {e}"


class Cluster:
    """The daqd servers of one run. ``master_dir``: where ``<run>.h5`` goes."""

    def __init__(self, hosts, *, master_dir=".", single=False):
        hosts = list(hosts)
        if not hosts:
            raise DaqctlError("no hosts")
        tags = [h.tag for h in hosts]
        dup = sorted({t for t in tags if tags.count(t) > 1})
        if dup:
            raise DaqctlError(f"host tag {dup[0]!r} is used by more than one host: "
                              + ", ".join(h.url for h in hosts if h.tag == dup[0]) + " (give each a distinct tag)")
        if single and len(hosts) != 1:
            raise DaqctlError("single=True is for one host")
        self.hosts = hosts
        self.master_dir = os.fspath(master_dir)
        self.single = single

    @classmethod
    def from_file(cls, path, *, master_dir=".", timeout=None) -> "Cluster":
        """Hosts from a TOML file: one [[hosts]] table each with url, token_file
        and optionally tag and output_dir (relative paths: relative to the
        file's directory). A host without a tag gets the host part of its URL
        made name-safe; where that is the same for several hosts (one machine,
        several ports) each of them gets '<host>-<port>'."""
        path = os.fspath(path)
        try:
            with open(path, "rb") as f:
                doc = tomllib.load(f)
        except OSError as e:
            raise DaqctlError(f"{path}: cannot read: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise DaqctlError(f"{path}: not valid TOML: {e}") from None
        items = doc.get("hosts")
        if not isinstance(items, list) or not items or not all(isinstance(t, dict) for t in items):
            raise DaqctlError(f"{path}: expected one [[hosts]] table per daqd (with url and token_file)")
        base = os.path.dirname(os.path.abspath(path))
        known = {"url", "token_file", "tag", "output_dir", "timeout_s"}
        specs = []
        for i, t in enumerate(items):
            where = f"{path}: hosts[{i}]"
            extra = sorted(set(t) - known)
            if extra:
                raise DaqctlError(f"{where}: unknown key {extra[0]!r} (known: {', '.join(sorted(known))})")
            if not isinstance(t.get("url"), str):
                raise DaqctlError(f"{where}: 'url' (a string) is missing")
            for k in ("token_file", "tag", "output_dir"):
                if k in t and not isinstance(t[k], str):
                    raise DaqctlError(f"{where}: {k!r} must be a string")
            if "tag" in t and not NAME_RE.match(t["tag"]):
                raise DaqctlError(f"{where}: tag {t['tag']!r}: only A-Za-z0-9._- are allowed")
            rel = lambda p: p if p is None or os.path.isabs(p) else os.path.join(base, p)  # noqa: E731
            try:
                h = Host(t["url"], token_file=rel(t.get("token_file")), tag=t.get("tag"),
                         output_dir=rel(t.get("output_dir")))
            except DaqctlError as e:
                raise DaqctlError(f"{where}: {e}") from None
            to = t.get("timeout_s", timeout)
            if to is not None:
                h.timeout = float(to)
            specs.append((h, "tag" in t))
        defaults = [h.tag for h, given in specs if not given]
        for h, given in specs:
            if not given and defaults.count(h.tag) > 1:
                h.tag = name_safe(f"{h._hostname}-{h._port or (443 if h._scheme == 'https' else 80)}")
        return cls([h for h, _ in specs], master_dir=master_dir)

    def host(self, tag) -> Host:
        for h in self.hosts:
            if h.tag == tag:
                return h
        raise KeyError(tag)

    # ---- status --------------------------------------------------------------

    def status(self) -> dict:
        """{tag: status dict, or the HostError}."""
        return {t: (r if e is None else e) for t, (r, e) in _parallel(self.hosts, Host.status).items()}

    def runs(self) -> dict:
        """{tag: GET /api/v1/runs answer, or the HostError}."""
        return {t: (r if e is None else e) for t, (r, e) in _parallel(self.hosts, Host.runs).items()}

    # ---- start ---------------------------------------------------------------

    def start(self, run: str, *, meta=None, prepare_timeout_s=None, compression=None,
              write_master=True) -> StartResult:
        """Starts `run` on every host, two-phase (module docstring). Raises
        StartError naming every host that refused (nothing is recording then)."""
        if not NAME_RE.match(run or ""):
            raise DaqctlError(f"run name {run!r}: only A-Za-z0-9._- are allowed")
        if self.single:
            h = self.hosts[0]
            try:
                ans = h.start(run, meta=meta, compression=compression)
            except HostError as e:
                raise StartError(str(e), {h.tag: str(e)}) from None
            hs = HostStart(h.tag, committed=ans, started_unix_ns=ans.get("started_unix_ns"))
            return StartResult(run, {h.tag: hs}, 0.0, 0 if hs.started_unix_ns is not None else None)

        prepared = _parallel(self.hosts, lambda h: h.start(run, meta=meta, host_tag=h.tag, prepare=True,
                                                           prepare_timeout_s=prepare_timeout_s,
                                                           compression=compression))
        failures = {t: _msg(self.host(t), e) for t, (_, e) in prepared.items() if e is not None}
        for t, (ans, e) in prepared.items():
            if e is None and (not isinstance(ans, dict) or ans.get("state") != "prepared"):
                failures[t] = (f"host {t} ({self.host(t).url}): answered the prepare with state "
                               f"{ans.get('state') if isinstance(ans, dict) else ans!r}, not 'prepared' "
                               "(a daqd without two-phase start? it may be recording now)")
        if failures:
            ready = [t for t, (_, e) in prepared.items() if e is None]
            # A prepare that got no answer may still have happened: abort it too.
            unsure = [t for t, (_, e) in prepared.items() if isinstance(e, HostError) and e.status is None]
            self._abort_and_raise(run, failures, ready, "prepare", unsure=unsure)

        barrier = threading.Barrier(len(self.hosts), timeout=max(h.timeout for h in self.hosts))
        committed = _parallel(self.hosts, lambda h: h.commit(run, barrier=barrier))
        failures = {t: _msg(self.host(t), e) for t, (_, e) in committed.items() if e is not None}
        if failures:
            self._abort_and_raise(run, failures, [h.tag for h in self.hosts], "commit")
        first = min(at for (_, at), _ in committed.values())
        last = max(at for (_, at), _ in committed.values())
        hosts = {}
        for h in self.hosts:
            (ans, at), _ = committed[h.tag]
            hosts[h.tag] = HostStart(h.tag, prepared=prepared[h.tag][0], committed=ans, commit_answer_s=at - first,
                                     started_unix_ns=ans.get("started_unix_ns"))
        ns = [hs.started_unix_ns for hs in hosts.values()]
        spread = (max(ns) - min(ns)) if all(isinstance(x, int) for x in ns) else None
        result = StartResult(run, hosts, last - first, spread)
        if write_master:
            try:
                result.master, notes = self.write_master(run, live=True)
                result.master_note = "; ".join(notes) or None
            except Exception as e:  # noqa: BLE001 - the run records; the master can be written again (daqctl master)
                result.master_note = f"master file not written: {_what(e)}"
        return result

    def _abort_and_raise(self, run, failures, to_abort, phase, unsure=()):
        """Aborts `run` on the hosts to_abort (prepared or recording) and unsure (no
        answer to the prepare: a 409 there means nothing was prepared), then raises."""
        hosts = [self.host(t) for t in list(to_abort) + list(unsure)]
        aborted = _parallel(hosts, lambda h: h.abort(run))
        abort_failures = {t: _msg(self.host(t), e) for t, (_, e) in aborted.items() if e is not None
                          and not (t in unsure and isinstance(e, HostError) and e.status == 409)}
        lines = [f"run {run!r} not started: {phase} failed on {len(failures)} of {len(self.hosts)} host(s):"]
        lines += [f"  {m}" for m in failures.values()]
        ok = [t for t in to_abort if t not in abort_failures]
        ok += [t for t in unsure if aborted[t][1] is None]
        if ok:
            lines.append(f"  aborted on {', '.join(ok)} (their files removed)")
        for m in abort_failures.values():
            lines.append(f"  ABORT FAILED: {m} (stop it by hand and delete its files)")
        raise StartError("\n".join(lines), failures, ok, abort_failures)

    def abort(self, run: str) -> dict:
        """Aborts `run` on every host (its files removed): {tag: answer or HostError}."""
        return {t: (r if e is None else e) for t, (r, e) in _parallel(self.hosts, lambda h: h.abort(run)).items()}

    # ---- stop ----------------------------------------------------------------

    def stop(self, *, allow_loss=False, write_master=True) -> StopResult:
        """Stops every host's run; StopResult.problems names every host that
        could not be reached, had no run, failed, wrote no frame, or (unless
        allow_loss) counts lost data in LOSS_FIELDS."""
        answers = _parallel(self.hosts, Host.stop)
        hosts = {}
        names = {}
        for h in self.hosts:
            ans, e = answers[h.tag]
            hs = HostStop(h.tag, ans)
            hosts[h.tag] = hs
            if e is not None:
                hs.error = e
                hs.problems.append(_msg(h, e))
                continue
            names[h.tag] = ans.get("run")
            where = f"host {h.tag} ({h.url}): run {ans.get('run')!r}"
            if ans.get("failed"):
                hs.problems.append(f"{where} FAILED: {ans.get('error') or 'no reason given'}")
            if not ans.get("frames_written"):
                hs.problems.append(f"{where} wrote 0 frames (nothing reached this host?)")
            counts = ans.get("counts") or {}
            lost = {k: counts.get(k, 0) for k in LOSS_FIELDS if counts.get(k, 0)}
            if lost and not allow_loss:
                hs.problems.append(f"{where} lost data: " + ", ".join(f"{k}={v}" for k, v in lost.items()))
        run = None
        distinct = sorted(set(n for n in names.values() if n))
        if len(distinct) > 1:
            for t, n in names.items():
                hosts[t].problems.append(f"host {t} ({self.host(t).url}): stopped run {n!r}, the others "
                                         f"{[x for x in distinct if x != n]}")
        if distinct:
            run = distinct[0] if len(distinct) == 1 else None
        result = StopResult(run, hosts)
        if write_master and run is not None and not self.single:
            try:
                result.master, result.master_notes = self.write_master(run)
            except Exception as e:  # noqa: BLE001 - the stop's answers are reported whatever happens here
                result.master_notes = [f"master file not written: {_what(e)}"]
        return result

    # ---- master --------------------------------------------------------------

    def write_master(self, run: str, *, live=None):
        """Writes <master_dir>/<run>.h5 (daqctl.master.write_master); returns
        (path, notes). live=True: unlimited mappings over the files being
        written (at start); None: decided per host from its files."""
        from . import master  # h5py only here

        return master.write_master(self, run, live=live)

