"""The master file of a multi-host run: <master_dir>/<run>.h5, HDF5 virtual
datasets (VDS) over the hosts' files. The only module of daqctl that imports
h5py. Layout: docs/DATASET.md "Master file".

Two kinds of mapping:

- *fixed*: a closed file's rows of a unit, ``master[off:off+n] <- file[0:n]``;
- *unlimited*: the file a host is still writing, ``master[off:] <- file[0:]``
  (count H5S_UNLIMITED), so that a SWMR reader of the master sees the rows
  grow after ``refresh()``.

At start every unit maps unlimited onto its host's first file; at stop
(or ``daqctl master RUN``) every unit maps fixed onto every file of its host,
and ``/detector`` stacks the units frame by frame.

Rationale (detector view as a VDS, not a copy): a copy would double the
run's size and take minutes for a long run; a VDS with one mapping per
contiguous stretch of frames costs a few hundred bytes per stretch, so the
master stays small and is written in seconds, and a stretch only breaks where
a unit lost a frame or a file ends. ``present``, ``frame_number``,
``missing_packets`` and ``timestamp_ns`` of the view are small and copied.

Rationale (mappings built with the low-level API): h5py's VirtualLayout and
VirtualSource compute a selection from the shape they are given, and for a
source that has no rows yet (the start of a run) that selection is empty, so
h5py 3.7 does not turn it into an unlimited one; the dataspaces are therefore
made here with h5s directly.
"""

from __future__ import annotations

import datetime
import os
import re
import time

import h5py
import numpy as np
from h5py import h5d, h5p, h5s, h5t

from .client import DaqctlError, HostError

UNLIMITED = h5s.UNLIMITED
MASTER_VERSION = 1
FIELD_DTYPES = {"raw": "<u2", "calibrated": "<f4", "frame_number": "<u8", "timestamp_ns": "<u8",
                "missing_packets": "<u2"}
ROW_FIELDS = ("raw", "calibrated")
FIELDS = ("raw", "calibrated", "frame_number", "timestamp_ns", "missing_packets")
REQUIRED = ("raw", "frame_number", "timestamp_ns", "missing_packets")
# Root attributes of a host file that are the host's own (kept under /hosts/<tag>, not at the root).
HOST_ROOT_ATTRS = ("config", "default", "host", "recovered_at", "recovered_frames", "run_name", "server_version",
                   "started_at", "stopped_at")
_UNIT_RE = re.compile(r"^u(\d+)$")


class MasterError(DaqctlError):
    """The master file cannot be written: the message names the host(s) and file(s)."""


def _py(v):
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, np.generic):
        return v.item()
    return v


def _now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def host_files(directory: str, run: str, tag: str) -> list:
    """A host's files of a run, in order: <run>_<tag>.h5 first, then
    <run>_<tag>_NNNNN.h5 by number."""
    base = f"{run}_{tag}"
    series = re.compile(re.escape(base) + r"_(\d{5,})\.h5$")
    try:
        names = os.listdir(directory)
    except OSError as e:
        raise MasterError(f"{directory}: cannot list: {e.strerror}") from None
    first = [n for n in names if n == base + ".h5"]
    numbered = sorted((int(m.group(1)), n) for n in names if (m := series.match(n)))
    return [os.path.join(directory, n) for n in first + [n for _, n in numbered]]


def _open(path, retries=20):
    """(h5py.File, closed): a closed file opened plainly, else as a SWMR reader
    (a file being written, or left open by a writer that died). daqd closes
    and reopens its file for a moment when it adds a unit: retried."""
    last = None
    for _ in range(retries):
        try:
            return h5py.File(path, "r"), True
        except OSError as e:
            last = e
        try:
            return h5py.File(path, "r", libver="latest", swmr=True), False
        except OSError as e:
            last = e
        time.sleep(0.1)
    raise MasterError(f"{path}: cannot open: {last}")


class _FileScan:
    """What the master needs of one host file (f None: a file being written that
    could not be opened yet: no attributes, no units known from it)."""

    def __init__(self, path, f, closed):
        self.path = path
        self.closed = closed
        if f is None:
            self.attrs, self.meta, self.units_attrs, self.units, self.accounting = {}, {}, {}, {}, {}
            return
        self.attrs = {k: _py(v) for k, v in f.attrs.items()}
        self.meta = {k: _py(v) for k, v in f["metadata"].attrs.items()} if "metadata" in f else {}
        self.units_attrs = {k: f["units"].attrs[k] for k in f["units"].attrs} if "units" in f else {}
        # The run's own counts (written at stop): {"": totals, unit id: that unit's}.
        self.accounting = {}
        if "accounting" in f and isinstance(f["accounting"], h5py.Group):
            a = f["accounting"]
            self.accounting[""] = {k: a.attrs[k] for k in a.attrs}
            for name, g in a.items():
                m = _UNIT_RE.match(name)
                if m and isinstance(g, h5py.Group):
                    self.accounting[int(m.group(1))] = {k: g.attrs[k] for k in g.attrs}
        self.units = {}
        for name, g in (f["units"].items() if "units" in f else ()):
            m = _UNIT_RE.match(name)
            if not m or not isinstance(g, h5py.Group):
                continue
            fields = {}
            for fld in FIELDS:
                if fld in g and isinstance(g[fld], h5py.Dataset):
                    d = g[fld]
                    if not closed:
                        d.refresh()
                    fields[fld] = (d.dtype, tuple(d.shape), {k: d.attrs[k] for k in d.attrs})
            if any(x not in fields for x in REQUIRED):
                continue  # a unit group being made: the next rebuild sees it
            rows = min(s[0] for _, s, _ in fields.values())
            self.units[int(m.group(1))] = {
                "channels": int(fields["raw"][1][1]), "rows": int(rows), "fields": fields,
                "attrs": {k: g.attrs[k] for k in g.attrs}, "stream": int(_py(g.attrs.get("stream", 0)))}


class _HostScan:
    def __init__(self, host):
        self.host = host
        self.dir = None
        self.files = []  # _FileScan
        self.live = False
        self.left_out = None  # why this host's files are not in the master
        self.status = None
        self.extra_units = {}  # live: unit -> (channels, fields) known from status/config, not yet in a file


def _recording(host, run):
    """(status, True when the host is recording `run` now); (None, False) when unreachable."""
    try:
        st = host.status()
    except HostError:
        return None, False
    r = st.get("run") or {}
    # "run" is the run's name, "name" its file stem (<run>_<tag>); a daqd before issue 14 has "name" only.
    return st, r.get("run", r.get("name")) == run and r.get("state") in ("recording", "prepared", None)


def _config_units(scan: _FileScan):
    """(units.list {id: channels}, calibrate stage on) of the file's `config` attribute."""
    import tomllib

    try:
        cfg = tomllib.loads(scan.attrs.get("config") or "")
    except (tomllib.TOMLDecodeError, TypeError):
        return {}, False
    units = {}
    for u in (cfg.get("units") or {}).get("list") or []:
        if isinstance(u, dict) and "id" in u and "channels" in u:
            units[int(u["id"])] = int(u["channels"])
    stages = (cfg.get("processing") or {}).get("stages") or []
    return units, "calibrate" in stages


def scan_hosts(cluster, run, live):
    """[_HostScan] of every host; notes (strings) for what was left out."""
    notes = []
    scans = []
    for h in cluster.hosts:
        s = _HostScan(h)
        scans.append(s)
        try:
            s.dir = h.files_dir()
        except HostError as e:
            s.left_out = f"{e} (and no output_dir in the hosts file)"
            notes.append(f"host {h.tag}: left out of the master: {s.left_out}")
            continue
        paths = host_files(s.dir, run, h.tag)
        if not paths:
            s.left_out = f"no file {run}_{h.tag}.h5 (or {run}_{h.tag}_NNNNN.h5) in {s.dir}"
            notes.append(f"host {h.tag} ({h.url}): left out of the master: {s.left_out}")
            continue
        opened = []
        try:
            for p in paths:
                try:
                    opened.append(_open(p, retries=20 if live is not True else 5))
                except MasterError as e:
                    if live is not True:
                        raise
                    # At start: the units come from daqd's status and configuration instead.
                    notes.append(f"host {h.tag}: {e}; its units are taken from its status")
                    opened.append((None, False))
            any_open = any(not closed for _, closed in opened)
            if live is True:
                s.live = True
            elif any_open:
                s.status, s.live = _recording(h, run)
                if not s.live:
                    bad = [p for p, (_, c) in zip(paths, opened) if not c]
                    s.left_out = (f"{', '.join(bad)} was not closed and daqd is not recording {run!r} "
                                  f"(daqd died?): daqd mends it at its next start (docs/OPERATIONS.md 'After a "
                                  f"crash'); then run 'daqctl master {run}' again")
                    notes.append(f"host {h.tag} ({h.url}): left out of the master: {s.left_out}")
                    continue
            s.files = [_FileScan(p, f, c) for p, (f, c) in zip(paths, opened)]
        finally:
            for f, _ in opened:
                if f is not None:
                    f.close()
        if s.live:
            st = s.status
            if st is None:
                st, _ = _recording(h, run)
            cfg_units, calibrate = _config_units(s.files[0])
            known = dict(cfg_units)
            for u in (st or {}).get("units") or []:
                if u.get("channels"):
                    known[int(u["unit"])] = int(u["channels"])
            fields = ("raw", "calibrated", "frame_number", "timestamp_ns", "missing_packets") if calibrate \
                else REQUIRED
            for u, ch in known.items():
                if not any(u in fs.units for fs in s.files):
                    s.extra_units[u] = (ch, fields)
    return scans, notes


def _create_vds(group, name, dtype, row_shape, mappings, rows, live, fill):
    """A VDS `name` in group: mappings [(dest_row, n or None (unlimited), file, dataset, src_row)]."""
    dt = np.dtype(dtype)
    rank_tail = tuple(row_shape)
    dcpl = h5p.create(h5p.DATASET_CREATE)
    dcpl.set_fill_value(np.full(1, fill, dtype=dt))
    maxshape = ((UNLIMITED if live else rows),) + rank_tail
    tail0 = (0,) * len(rank_tail)
    tail1 = (1,) * len(rank_tail)
    for d0, n, fname, dset, s0 in mappings:
        if n == 0:
            continue
        vsp = h5s.create_simple((rows,) + rank_tail, maxshape)
        if n is None:
            ssp = h5s.create_simple((0,) + rank_tail, (UNLIMITED,) + rank_tail)
            vsp.select_hyperslab((d0,) + tail0, (UNLIMITED,) + tail1, (1,) + tail1, (1,) + rank_tail)
            ssp.select_hyperslab((s0,) + tail0, (UNLIMITED,) + tail1, (1,) + tail1, (1,) + rank_tail)
        else:
            ssp = h5s.create_simple((s0 + n,) + rank_tail, (UNLIMITED,) + rank_tail)
            vsp.select_hyperslab((d0,) + tail0, (1,) + tail1, None, (n,) + rank_tail)
            ssp.select_hyperslab((s0,) + tail0, (1,) + tail1, None, (n,) + rank_tail)
        dcpl.set_virtual(vsp, fname.encode(), dset.encode(), ssp)
    space = h5s.create_simple((rows,) + rank_tail, maxshape)
    dsid = h5d.create(group.id, name.encode(), h5t.py_create(dt), space, dcpl=dcpl)
    return h5py.Dataset(dsid)


def _copy_attrs(src: dict, dst, skip=()):
    for k, v in src.items():
        if k in skip:
            continue
        try:
            dst[k] = v
        except (TypeError, ValueError):
            dst[k] = str(_py(v))


def write_master(cluster, run, live=None):
    """Writes <cluster.master_dir>/<run>.h5; returns (path, notes). Raises
    MasterError when no host has a file of the run, or a unit is recorded by
    two hosts."""
    t0 = time.monotonic()
    scans, notes = scan_hosts(cluster, run, live)
    used = [s for s in scans if s.left_out is None]
    if not used:
        raise MasterError(f"no host has a file of run {run!r}: " + "; ".join(notes))
    master_dir = os.path.abspath(cluster.master_dir)
    os.makedirs(master_dir, exist_ok=True)
    path = os.path.join(master_dir, f"{run}.h5")

    # Which host records which unit.
    owner = {}
    for s in used:
        mine = {u for fs in s.files for u in fs.units} | set(s.extra_units)
        for u in mine:
            if u in owner and owner[u] is not s:
                other = owner[u]
                in_files = lambda sc: [os.path.basename(fs.path) for fs in sc.files if u in fs.units]  # noqa: E731
                if s.live and u in s.extra_units and not in_files(s):
                    notes.append(f"unit {u}: seen by host {s.host.tag} but recorded by {other.host.tag}: "
                                 f"mapped onto {other.host.tag}")
                    continue
                if other.live and u in other.extra_units and not in_files(other):
                    notes.append(f"unit {u}: seen by host {other.host.tag} but recorded by {s.host.tag}: "
                                 f"mapped onto {s.host.tag}")
                    owner[u] = s
                    continue
                raise MasterError(
                    f"unit {u} is recorded by two hosts: {other.host.tag} ({', '.join(in_files(other)) or 'live'}) "
                    f"and {s.host.tag} ({', '.join(in_files(s)) or 'live'}); a unit must go to one daqd only")
            owner[u] = s
    units = sorted(owner)
    any_live = any(s.live for s in used)

    def rel(p):
        return os.path.relpath(os.path.abspath(p), master_dir)

    tmp = os.path.join(master_dir, f".{run}.h5.tmp-{os.getpid()}")
    detector_note = None
    try:
        with h5py.File(tmp, "w", libver="latest") as f:
            first = min((s.files[0] for s in used), key=lambda fs: str(fs.attrs.get("started_at", "")))
            _copy_attrs(first.attrs, f.attrs, skip=HOST_ROOT_ATTRS)
            f.attrs.setdefault("format", "daq1-run")
            f.attrs.setdefault("format_version", np.int32(1))
            f.attrs["run_name"] = run
            starts = [str(s.files[0].attrs["started_at"]) for s in used if "started_at" in s.files[0].attrs]
            if starts:
                f.attrs["started_at"] = min(starts)
            stops = [s.files[-1].attrs.get("stopped_at") for s in used]
            if not any_live and len(used) == len(scans) and all(stops):
                f.attrs["stopped_at"] = max(str(x) for x in stops)
            versions = sorted({str(s.files[0].attrs["server_version"]) for s in used
                               if "server_version" in s.files[0].attrs})
            if versions:
                f.attrs["server_version"] = versions[0] if len(versions) == 1 else ", ".join(versions)
            sources = sorted({str(fs.attrs["data_source"]) for s in used for fs in s.files
                              if "data_source" in fs.attrs and fs.attrs["data_source"] != "none"})
            if sources:
                f.attrs["data_source"] = sources[0] if len(sources) == 1 else "mixed"
            f.attrs.setdefault("NX_class", "NXroot")
            f.attrs["master_version"] = np.int32(MASTER_VERSION)
            f.attrs["master_written_at"] = _now_iso()
            f.attrs["master_state"] = "live" if any_live else ("final" if len(used) == len(scans) else "partial")
            f.attrs["hosts"] = [s.host.tag for s in scans]

            meta = {}
            for s in used:
                for k, v in {k: v for fs in s.files for k, v in fs.meta.items()}.items():
                    if k in meta and str(meta[k]) != str(v):
                        notes.append(f"metadata {k!r}: host {s.host.tag} has {v!r}, another host {meta[k]!r}")
                    meta.setdefault(k, v)
            mg = f.create_group("metadata")
            _copy_attrs(meta, mg.attrs)
            mg.attrs.setdefault("NX_class", "NXcollection")

            hg = f.create_group("hosts")
            hg.attrs["NX_class"] = "NXcollection"
            for s in scans:
                g = hg.create_group(s.host.tag)
                g.attrs["url"] = s.host.url
                if s.dir is not None:
                    g.attrs["output_dir"] = s.dir
                g.attrs["files"] = [rel(fs.path) for fs in s.files] if s.files else np.array([], dtype=h5py.string_dtype())
                g.attrs["state"] = "left out: " + s.left_out if s.left_out else ("live" if s.live else "final")
                if s.files:
                    _copy_attrs({k: v for k, v in s.files[0].attrs.items() if k in HOST_ROOT_ATTRS}, g.attrs)
                    if "stopped_at" in s.files[-1].attrs:
                        g.attrs["stopped_at"] = s.files[-1].attrs["stopped_at"]
                g.attrs["units"] = np.array(sorted(u for u in units if owner[u] is s), dtype=np.int32)

            ug = f.create_group("units")
            _copy_attrs(first.units_attrs, ug.attrs)
            seg_of = {}
            for u in units:
                s = owner[u]
                g = ug.create_group(f"u{u}")
                have = [fs for fs in s.files if u in fs.units]
                info0 = have[0].units[u] if have else None
                if info0 is not None:
                    _copy_attrs(info0["attrs"], g.attrs)
                    channels = info0["channels"]
                    fields = [fld for fld in FIELDS if all(fld in fs.units[u]["fields"] for fs in have)]
                else:
                    channels, fields = s.extra_units[u]
                    g.attrs["unit_id"] = np.int32(u)
                    g.attrs["channels"] = np.int32(channels)
                g.attrs["host"] = s.host.tag
                for fs in s.files:  # a later stream (DATASET.md "Streams") begins in a later file
                    if u in fs.units and fs.units[u]["stream"] != (info0 or {}).get("stream", 0):
                        g.attrs["streams"] = np.array(sorted({x.units[u]["stream"] for x in have}), dtype=np.int32)
                        break
                # Segments: (master row, rows, file) of each file; the last one of a live host unlimited.
                segs, off = [], 0
                for i, fs in enumerate(s.files):
                    last = i == len(s.files) - 1
                    n = fs.units[u]["rows"] if u in fs.units else 0
                    if s.live and last:
                        segs.append((off, None, fs))
                    elif n:
                        segs.append((off, n, fs))
                        off += n
                seg_of[u] = segs
                for fld in fields:
                    dtype = info0["fields"][fld][0] if info0 else np.dtype(FIELD_DTYPES[fld])
                    row_shape = (channels,) if fld in ROW_FIELDS else ()
                    maps = [(d0, n, rel(fs.path), f"units/u{u}/{fld}", 0) for d0, n, fs in segs]
                    fill = np.nan if np.dtype(dtype).kind == "f" else 0
                    d = _create_vds(g, fld, dtype, row_shape, maps, off, s.live, fill)
                    if info0 is not None:
                        _copy_attrs(info0["fields"][fld][2], d.attrs)

            if not any_live:
                detector_note = _write_detector(f, units, owner, seg_of, rel)
            else:
                detector_note = "no detector view while a host is recording (written at stop)"
            _write_accounting(f, used, units, owner)
            # NeXus: /entry (NXentry) with the units under instrument/ and the detector view as data/,
            # hard links to /units/u<id> and /detector (their layout stays as it is).
            entry = f.create_group("entry")
            entry.attrs["NX_class"] = "NXentry"
            entry.attrs["title"] = run
            inst = entry.create_group("instrument")
            inst.attrs["NX_class"] = "NXinstrument"
            for u in units:
                inst[f"u{u}"] = ug[f"u{u}"]
            if "detector" in f:
                entry["data"] = f["detector"]
                entry.attrs["default"] = "data"
            f.attrs["default"] = "entry"
            f.attrs["master_seconds"] = time.monotonic() - t0
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if detector_note and not any_live:
        notes.append(detector_note)
    return path, notes


def _write_accounting(f, used, units, owner):
    """/accounting: the hosts' counts summed, and each unit's from its host (the
    last file of a host that has them: daqd writes them at stop)."""
    acc = {}
    for s in used:
        for fs in reversed(s.files):
            if fs.accounting:
                acc[s.host.tag] = fs.accounting
                break
    if not acc:
        return
    g = f.create_group("accounting")
    g.attrs["NX_class"] = "NXcollection"
    g.attrs["description"] = ("the run's own counts, summed over the hosts that wrote them ("
                              + ", ".join(acc) + "); per unit from the unit's host")
    totals = {}
    for a in acc.values():
        for k, v in a.get("", {}).items():
            if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
                totals[k] = totals.get(k, 0) + int(v)
    for k, v in totals.items():
        g.attrs[k] = np.uint64(v)
    for u in units:
        a = acc.get(owner[u].host.tag, {}).get(u)
        if a is not None:
            _copy_attrs(a, g.create_group(f"u{u}").attrs)


def _write_detector(f, units, owner, seg_of, rel):
    """/detector: every unit's rows stacked by (stream, frame_number). Returns
    a note when the view is left out (and why), else None."""
    if not units:
        return "no detector view: no unit has rows"
    chans = {}
    for u in units:
        for fs in owner[u].files:
            if u in fs.units:
                chans[u] = fs.units[u]["channels"]
                break
    if len(set(chans.values())) != 1:
        return f"no detector view: units have different channel counts {chans}"
    channels = next(iter(chans.values()))
    # Per unit: frame_number, stream, and (segment, row in segment) of every row.
    per = {}
    for u in units:
        fn, st, seg_i, local = [], [], [], []
        for k, (d0, n, fs) in enumerate(seg_of[u]):
            with h5py.File(fs.path, "r") as src:
                fn.append(src[f"units/u{u}/frame_number"][0:n])
            st.append(np.full(n, fs.units[u]["stream"], dtype=np.int64))
            seg_i.append(np.full(n, k, dtype=np.int64))
            local.append(np.arange(n, dtype=np.int64))
        per[u] = (np.concatenate(fn).astype(np.uint64), np.concatenate(st), np.concatenate(seg_i),
                  np.concatenate(local))
    all_fn = np.concatenate([per[u][0] for u in units])
    all_st = np.concatenate([per[u][1] for u in units])
    order = np.lexsort((all_fn, all_st))
    sfn, sst = all_fn[order], all_st[order]
    new = np.ones(len(order), dtype=bool)
    new[1:] = (sfn[1:] != sfn[:-1]) | (sst[1:] != sst[:-1])
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.cumsum(new) - 1
    n_frames = int(new.sum())
    frame_number = sfn[new]
    stream = sst[new]
    U = len(units)
    present = np.zeros((n_frames, U), dtype=np.uint8)
    missing = np.zeros((n_frames, U), dtype=np.uint16)
    stamps = np.zeros((n_frames, U), dtype=np.uint64)
    targets = {}
    pos = 0
    for k, u in enumerate(units):
        n = len(per[u][0])
        t = rank[pos:pos + n]
        pos += n
        if n > 1 and np.any(np.diff(t) <= 0):
            return (f"no detector view: unit {u} has frame numbers that repeat or go back within a stream "
                    f"(host {owner[u].host.tag})")
        present[t, k] = 1
        targets[u] = t
    has_cal = all("calibrated" in f[f"units/u{u}"] for u in units)
    dg = f.create_group("detector")
    dg.attrs["NX_class"] = "NXdata"
    dg.attrs["signal"] = "data"
    dg.attrs["axes"] = ["frame_number", ".", "."]
    dg.attrs["description"] = ("all units of a frame stacked: data[i, k] is unit unit_id[k] of frame frame_number[i]; "
                               "present[i, k] = 0: that unit has no row for the frame (data is the fill value)")
    for fld, name, fill in (("raw", "data", 0), ("calibrated", "calibrated", np.nan)):
        if fld == "calibrated" and not has_cal:
            continue
        dtype = f[f"units/u{units[0]}/{fld}"].dtype
        maps = []
        for k, u in enumerate(units):
            t = targets[u]
            _, _, seg_i, local = per[u]
            if not len(t):
                continue
            br = np.flatnonzero((np.diff(t) != 1) | (np.diff(seg_i) != 0)) + 1
            starts = np.concatenate(([0], br))
            ends = np.concatenate((br, [len(t)]))
            for a, b in zip(starts.tolist(), ends.tolist()):
                fs = seg_of[u][int(seg_i[a])][2]
                maps.append((int(t[a]), k, b - a, rel(fs.path), f"units/u{u}/{fld}", int(local[a])))
        d = _create_detector_vds(dg, name, dtype, n_frames, U, channels, maps, fill)
        d.attrs["fill_value_meaning"] = "the unit has no row for this frame (see present)"
        src = f[f"units/u{units[0]}/{fld}"]
        for key in ("units", "description"):
            if key in src.attrs:
                d.attrs[key] = src.attrs[key]
    for u in units:
        k = units.index(u)
        t = targets[u]
        _, _, seg_i, local = per[u]
        for j, (d0, n, fs) in enumerate(seg_of[u]):
            sel = seg_i == j
            with h5py.File(fs.path, "r") as src:
                missing[t[sel], k] = src[f"units/u{u}/missing_packets"][0:n]
                stamps[t[sel], k] = src[f"units/u{u}/timestamp_ns"][0:n]
    dg.create_dataset("frame_number", data=frame_number).attrs["description"] = "frame_number of each row"
    if np.any(stream):
        dg.create_dataset("stream", data=stream.astype(np.int32)).attrs["description"] = "stream of each row"
    dg.create_dataset("unit_id", data=np.asarray(units, dtype=np.int32)).attrs["description"] = "unit of each column"
    small = dict(chunks=True, compression="gzip", compression_opts=1, shuffle=True)  # zlib: every HDF5 has it
    p = dg.create_dataset("present", data=present, **small)
    p.attrs["description"] = "1: the unit has this frame; 0: it has no row for it (lost), data holds the fill value"
    dg.create_dataset("missing_packets", data=missing, **small).attrs["description"] = \
        "missing_packets of the unit's row (0 where present is 0)"
    ts = dg.create_dataset("timestamp_ns", data=stamps, **small)
    ts.attrs["description"] = "timestamp_ns of the unit's row (0 where present is 0)"
    ts.attrs["units"] = "ns"
    return None


def _create_detector_vds(group, name, dtype, n_frames, n_units, channels, maps, fill):
    """[n_frames, n_units, channels] VDS; maps [(frame row, unit column, rows, file, dataset, source row)]."""
    dt = np.dtype(dtype)
    dcpl = h5p.create(h5p.DATASET_CREATE)
    dcpl.set_fill_value(np.full(1, fill, dtype=dt))
    shape = (n_frames, n_units, channels)
    for t0, k, n, fname, dset, s0 in maps:
        vsp = h5s.create_simple(shape, shape)
        vsp.select_hyperslab((t0, k, 0), (1, 1, 1), None, (n, 1, channels))
        ssp = h5s.create_simple((s0 + n, channels), (UNLIMITED, channels))
        ssp.select_hyperslab((s0, 0), (1, 1), None, (n, channels))
        dcpl.set_virtual(vsp, fname.encode(), dset.encode(), ssp)
    space = h5s.create_simple(shape, shape)
    return h5py.Dataset(h5d.create(group.id, name.encode(), h5t.py_create(dt), space, dcpl=dcpl))
