"""open_run / Run: a daq1 run (one file or a rotated series) as numpy arrays.

Layout of the files: docs/DATASET.md. A Run keeps, per process, its own HDF5
handles and file descriptors: it remembers the pid that opened them and opens
new ones, lazily, when it finds itself in another process (a DataLoader worker
after fork); pickling it (spawn, forkserver) drops them. It is meant for one
thread at a time (DataLoader workers are processes, so that is the usual case);
the reads it does itself use a private thread pool.
"""

from __future__ import annotations

import glob
import logging
import math
import os
import re
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import h5py
import numpy as np

from . import _compressed, _pread
from ._errors import DaqloadError, DamagedChunkError, MissingFieldError, RunFormatError, RunNotFoundError

log = logging.getLogger("daqload")

FORMAT_NAME = "daq1-run"
SUPPORTED_FORMAT_VERSIONS = (1,)
ROW_FIELDS = ("raw", "calibrated")  # [n_frames, channels]
META_FIELDS = ("frame_number", "timestamp_ns", "missing_packets")  # [n_frames]
ALL_FIELDS = ROW_FIELDS + META_FIELDS
REQUIRED_FIELDS = ("raw", "frame_number", "timestamp_ns", "missing_packets")

_SERIES_RE = re.compile(r"^(?P<run>.+)_(?P<num>\d{5,})\.h5$")
_UNIT_RE = re.compile(r"^u(\d+)$")

# h5py objects of handles opened by another process (inherited through fork).
# They are kept, never used and never closed, so that no HDF5 call touches
# the parent's state from the child.
_INHERITED = []

# (stored dtype, output dtype) pairs daqload._native widens while it copies rows.
_NATIVE_CONVERT = {("<u2", "<i4"): "u16>i32", ("<u2", "<f4"): "u16>f32"}


def _env_fast_path():
    v = os.environ.get("DAQLOAD_FAST_PATH", "").strip().lower()
    if v in ("0", "false", "no", "off"):
        return False
    return None


def _has_glob(p: str) -> bool:
    return any(c in p for c in "*?[")


def _series_key(path: str):
    base = os.path.basename(path)
    m = _SERIES_RE.match(base)
    if m:
        return (os.path.dirname(os.path.abspath(path)), m.group("run"), int(m.group("num")), base)
    return (os.path.dirname(os.path.abspath(path)), base[:-3] if base.endswith(".h5") else base, -1, base)


def _not_a_run_file(path: str):
    """Why a .h5 file found in a directory is not a run file daqload should
    read (a calibration file from a pedestal run, any other HDF5 file), or
    None for a run file (or a file whose trouble opening it will name)."""
    if os.path.basename(path).endswith(".calib.h5"):
        return "a calibration file (daqd --pedestal-run), not a run file"
    try:
        f, _ = _open_h5(path)
    except Exception:  # noqa: BLE001 - not ours to judge here: opening it later says what is wrong
        return None
    with f:
        fmt = _py(f.attrs.get("format", None))
    if fmt is None:
        return "an HDF5 file without a 'format' attribute, not a daq1 run file"
    if fmt != FORMAT_NAME:
        return f"format {fmt!r}, not a daq1 run file"
    return None


def resolve_paths(paths, skipped=None) -> list:
    """The run files named by a path, a directory, a glob pattern, a run name
    without suffix ("runs/beam01" for runs/beam01.h5 or runs/beam01_00000.h5 …)
    or a list of those, sorted so that a rotated series is in number order.

    In a directory, .h5 files that are not run files (a pedestal run's
    <name>.calib.h5 beside the runs, other HDF5 files) are skipped: each is
    logged (logger "daqload") with the reason, and appended to `skipped` as
    (path, reason) when a list is given. Files named one by one are never
    skipped: they are read, and refused with the reason if they are not runs."""
    if isinstance(paths, (str, bytes, os.PathLike)):
        items = [paths]
    else:
        items = list(paths)
        if not items:
            raise RunNotFoundError("no run files given (empty list)")
    found = []
    for item in items:
        p = os.fsdecode(os.fspath(item))
        if os.path.isdir(p):
            files = sorted(glob.glob(os.path.join(glob.escape(p), "*.h5")))
            runs = []
            for f in files:
                why = _not_a_run_file(f)
                if why is None:
                    runs.append(f)
                    continue
                log.info("%s: skipped: %s", f, why)
                if skipped is not None:
                    skipped.append((f, why))
            if not runs:
                also = f" (skipped {len(files)} that are not run files: " + \
                    "; ".join(f"{os.path.basename(f)}: {_not_a_run_file(f)}" for f in files) + ")" if files else ""
                raise RunNotFoundError(f"{p}: directory holds no .h5 run files{also}")
            found += runs
        elif os.path.exists(p):
            found.append(p)
        elif _has_glob(p):
            files = sorted(f for f in glob.glob(p) if os.path.isfile(f))
            if not files:
                raise RunNotFoundError(f"{p}: no file matches this pattern")
            found += files
        elif os.path.exists(p + ".h5"):
            # A run that does not rotate by size is <run>.h5, continued in
            # <run>_00001.h5, … when a unit started a new stream (DATASET.md).
            found.append(p + ".h5")
            prefix = os.path.basename(p)
            found += [f for f in glob.glob(glob.escape(p) + "_*.h5")
                      if (m := _SERIES_RE.match(os.path.basename(f))) and m.group("run") == prefix]
        else:
            prefix = os.path.basename(p)
            files = [f for f in glob.glob(glob.escape(p) + "_*.h5")
                     if (m := _SERIES_RE.match(os.path.basename(f))) and m.group("run") == prefix]
            if not files:
                raise RunNotFoundError(f"{p}: no such run file (nor {p}.h5 or {p}_00000.h5, …)")
            found += files
    seen, out = set(), []
    for f in found:
        key = os.path.realpath(f)
        if key not in seen:
            seen.add(key)
            out.append(f)
    out.sort(key=_series_key)
    return out


def _py(v):
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, np.generic):
        return v.item()
    return v


def _open_h5(path: str, live_hint: bool = False):
    """Opens a run file for reading: (h5py.File, swmr). A file being written
    (or left "open for write" by a writer that died) is opened as a SWMR
    reader."""
    if not live_hint:
        try:
            return h5py.File(path, "r"), False
        except FileNotFoundError:
            raise RunNotFoundError(f"{path}: no such file") from None
        except OSError as e:
            msg = str(e)
            if not os.path.exists(path):
                raise RunNotFoundError(f"{path}: no such file") from None
            if not h5py.is_hdf5(path):
                raise RunFormatError(f"{path}: not a daq1 run file (not an HDF5 file)") from None
            if "already open for write" not in msg and "SWMR" not in msg and "lock" not in msg:
                raise RunFormatError(f"{path}: cannot be read as HDF5: {msg}") from None
    try:
        return h5py.File(path, "r", libver="latest", swmr=True), True
    except FileNotFoundError:
        raise RunNotFoundError(f"{path}: no such file") from None
    except OSError as e:
        raise DaqloadError(f"{path}: cannot open as a SWMR reader: {e}") from None


def check_root(path: str, f) -> dict:
    """Root attributes of an open file, after checking it is a daq1 run this
    version of daqload reads."""
    attrs = {k: _py(v) for k, v in f.attrs.items()}
    if "format" not in attrs:
        raise RunFormatError(f"{path}: not a daq1 run file: no root attribute 'format' "
                             f"(a daq1 run has format = '{FORMAT_NAME}')")
    if attrs["format"] != FORMAT_NAME:
        raise RunFormatError(f"{path}: not a daq1 run file: root attribute format = {attrs['format']!r}, "
                             f"expected {FORMAT_NAME!r}")
    v = attrs.get("format_version")
    if not isinstance(v, int) or v not in SUPPORTED_FORMAT_VERSIONS:
        raise RunFormatError(f"{path}: unsupported format_version {v!r} of {FORMAT_NAME} "
                             f"(this daqload reads version {', '.join(map(str, SUPPORTED_FORMAT_VERSIONS))}); "
                             "a newer daqload may read it")
    if "units" not in f or not isinstance(f["units"], h5py.Group):
        raise RunFormatError(f"{path}: damaged daq1 run file: no /units group")
    return attrs


def scan_units(path: str, f, live: bool) -> dict:
    """{unit_id: {"channels", "rows", "fields": {name: (shape, dtype, chunks)}}} of an open file."""
    units = {}
    for name, g in f["units"].items():
        m = _UNIT_RE.match(name)
        if not m or not isinstance(g, h5py.Group):
            continue
        uid = int(m.group(1))
        fields = {}
        for fld in ALL_FIELDS:
            if fld in g and isinstance(g[fld], h5py.Dataset):
                d = g[fld]
                if live:
                    d.refresh()
                fields[fld] = (tuple(d.shape), d.dtype, d.chunks)
        missing = [x for x in REQUIRED_FIELDS if x not in fields]
        if missing:
            raise RunFormatError(f"{path}: damaged daq1 run file: /units/{name} has no dataset {missing[0]}")
        raw_shape = fields["raw"][0]
        if len(raw_shape) != 2:
            raise RunFormatError(f"{path}: damaged daq1 run file: /units/{name}/raw has shape {raw_shape}, expected 2-D")
        channels = int(raw_shape[1])
        lengths = {fld: s[0] for fld, (s, _, _) in fields.items()}
        rows = min(lengths.values())
        if not live and len(set(lengths.values())) != 1:
            raise RunFormatError(f"{path}: damaged daq1 run file: datasets of /units/{name} differ in length {lengths}")
        if "calibrated" in fields and tuple(fields["calibrated"][0][1:]) != (channels,):
            raise RunFormatError(f"{path}: /units/{name}/calibrated has shape {fields['calibrated'][0]}, "
                                 f"expected (n, {channels})")
        units[uid] = {"channels": channels, "rows": int(rows), "fields": fields}
    return units


class _FileInfo:
    __slots__ = ("path", "attrs", "live", "units")

    def __init__(self, path, attrs, live, units):
        self.path, self.attrs, self.live, self.units = path, attrs, live, units


class _FieldTable:
    """Where the rows of one field are, per segment: fast (pread) or not."""

    __slots__ = ("fast", "comp", "filtered", "cbase", "crows", "offsets", "sizes", "row_bytes", "elem_size",
                 "row_elems", "reasons", "chunk_rows")


class Run:
    """A daq1 run: one file or a rotated series.

    Attributes: ``files`` (paths, in order), ``attrs`` (root attributes of the
    first file; ``stopped_at`` is the last file's), ``units`` (sorted unit ids),
    ``channels`` ({unit: channels}), ``frame_counts`` ({unit: frames}),
    ``live`` (True when a file was still being written at open: then the run
    is a snapshot of that moment, read through h5py).

    ``fast_path=False`` (or DAQLOAD_FAST_PATH=0) reads everything through
    h5py; ``native=False`` (or DAQLOAD_NATIVE=0) leaves out only the native
    extension, so that compressed (bitshuffle/LZ4) chunks are read through
    h5py + hdf5plugin; ``native=True`` raises DaqloadError when the extension
    is not built.
    """

    def __init__(self, paths, *, fast_path=None, io_threads=None, native=None, resolve_master=True):
        if isinstance(paths, Run):
            raise TypeError("already a Run")
        # Files of a directory that are not runs (a calibration file beside them): (path, reason).
        self.skipped = []
        self.files = resolve_paths(paths, self.skipped)
        self._fast_setting = _env_fast_path() if fast_path is None else bool(fast_path)
        self._native_setting = _compressed.native_setting_from_env() if native is None else (True if native else False)
        if self._native_setting is True:
            mod, why = _compressed.native(True)
            if mod is None:
                raise DaqloadError(f"native=True: {why}")
        self._io_threads_setting = io_threads
        self._reset_process_state()
        # A master file of a multi-host run (daqctl): read its hosts' files
        # directly when its mappings are plain concatenations of them, else
        # the master's virtual datasets through h5py (master_read_path says which).
        self.master, self.master_attrs, self.master_read_path = None, None, None
        self.master_h5py_reason = None
        self.files, master = _expand_masters(self.files)
        if master is not None:
            self.master, self.master_attrs, sources, why = master
            if not resolve_master:
                sources, why = None, "resolve_master=False"
            if sources is not None:
                infos = self._scan_files(sources, live_hint=False)
                mismatch = _master_mismatch(self.master, infos)
                if mismatch is None:
                    self.files, self.master_read_path = list(sources), "sources"
                else:
                    self.close()
                    self._reset_process_state()
                    why = mismatch
            if self.master_read_path is None:
                self.files, self.master_read_path = [self.master], "h5py"
                self.master_h5py_reason = why
                log.info("master %s read through h5py (virtual datasets): %s", self.master, why)
                infos = self._scan_files(self.files, live_hint=self.master_attrs.get("master_state") == "live")
        else:
            infos = self._scan_files(self.files, live_hint=False)
        self._infos = infos
        first = infos[0].attrs
        for info in infos[1:] if self.master is None else ():
            a = info.attrs
            if a.get("run_name") != first.get("run_name") or a.get("started_at") != first.get("started_at"):
                raise RunFormatError(
                    f"{info.path} belongs to run {a.get('run_name')!r} started {a.get('started_at')}, but "
                    f"{infos[0].path} to run {first.get('run_name')!r} started {first.get('started_at')}: "
                    "pass the files of one run only")
        if self.master is not None:
            first = self.master_attrs
        self.attrs = dict(first)
        self.attrs.pop("stopped_at", None)
        if self.master is not None:
            if "stopped_at" in first:
                self.attrs["stopped_at"] = first["stopped_at"]
        elif "stopped_at" in infos[-1].attrs:
            self.attrs["stopped_at"] = infos[-1].attrs["stopped_at"]
        self.live = any(i.live for i in infos)
        self.units = tuple(sorted({u for i in infos for u in i.units}))
        self.channels = {}
        for u in self.units:
            ch = {i.units[u]["channels"] for i in infos if u in i.units}
            if len(ch) != 1:
                raise RunFormatError(f"{self.files[0]}…: unit {u} has different channel counts in different files: {sorted(ch)}")
            self.channels[u] = ch.pop()
        # Segments: (unit, file) pairs with rows, in run-global row order
        # (unit by unit, files in order). Global row = unit_base[unit] + row in unit.
        seg_unit, seg_file, seg_n = [], [], []
        self.frame_counts = {}
        for ui, u in enumerate(self.units):
            total = 0
            for fi, info in enumerate(infos):
                n = info.units.get(u, {}).get("rows", 0)
                if n > 0:
                    seg_unit.append(ui)
                    seg_file.append(fi)
                    seg_n.append(n)
                    total += n
            self.frame_counts[u] = total
        self._seg_unit = np.asarray(seg_unit, dtype=np.int64)
        self._seg_file = np.asarray(seg_file, dtype=np.int64)
        self._seg_n = np.asarray(seg_n, dtype=np.int64)
        self._seg_start = np.concatenate(([0], np.cumsum(self._seg_n)))[:-1].astype(np.int64)
        counts = [self.frame_counts[u] for u in self.units]
        self._unit_base = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
        self._tables = {}
        self._meta = {}
        self._logged = set()

    def _scan_files(self, files, live_hint):
        infos = []
        for i, path in enumerate(files):
            f, swmr = _open_h5(path, live_hint=live_hint)
            try:
                attrs = check_root(path, f)
                live = swmr or "stopped_at" not in attrs
                units = scan_units(path, f, swmr)
            except BaseException:
                f.close()
                raise
            infos.append(_FileInfo(path, attrs, live, units))
            self._h5[i] = f
        return infos

    # ---- per-process state -------------------------------------------------

    def _reset_process_state(self):
        self._pid = os.getpid()
        self._h5 = {}
        self._fds = {}
        self._executor = None
        self._nthreads = None
        self._local = threading.local()

    def _check_pid(self):
        if self._pid != os.getpid():
            # Inherited through fork: never use (or close through HDF5) the
            # parent's handles; plain descriptors are closed, they are ours.
            _INHERITED.extend(self._h5.values())
            for fd in self._fds.values():
                try:
                    os.close(fd)
                except OSError:
                    pass
            self._reset_process_state()

    def _file(self, fi: int):
        self._check_pid()
        f = self._h5.get(fi)
        if f is None:
            f, _ = _open_h5(self.files[fi], live_hint=self._infos[fi].live)
            self._h5[fi] = f
        return f

    def _fd(self, fi: int) -> int:
        fd = self._fds.get(fi)
        if fd is None:
            try:
                fd = os.open(self.files[fi], os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            except FileNotFoundError:
                raise RunNotFoundError(f"{self.files[fi]}: no such file (removed after the run was opened?)") from None
            self._fds[fi] = fd
        return fd

    def io_threads(self) -> int:
        """Threads used for pread (per process)."""
        if self._nthreads is None:
            n = self._io_threads_setting
            if n is None:
                n = min(8, max(2, os.cpu_count() or 2))
                tud = sys.modules.get("torch.utils.data")
                wi = tud.get_worker_info() if tud is not None else None
                if wi is not None:
                    n = max(1, math.ceil(n / wi.num_workers))
            self._nthreads = max(1, int(n))
        return self._nthreads

    def _pool(self):
        if self._executor is None and self.io_threads() > 1:
            self._executor = ThreadPoolExecutor(self.io_threads(), thread_name_prefix="daqload-io")
        return self._executor

    def close(self):
        """Closes this process's handles (the Run can still be used: it reopens)."""
        if self._pid == os.getpid():
            for f in self._h5.values():
                try:
                    f.close()
                except Exception:  # pragma: no cover
                    pass
            for fd in self._fds.values():
                try:
                    os.close(fd)
                except OSError:
                    pass
            if self._executor is not None:
                self._executor.shutdown(wait=False)
        self._reset_process_state()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            if self._pid == os.getpid():
                for fd in self._fds.values():
                    os.close(fd)
                self._fds = {}
                if self._executor is not None:
                    self._executor.shutdown(wait=False)
        except Exception:
            pass

    def __getstate__(self):
        state = self.__dict__.copy()
        for k in ("_h5", "_fds", "_executor", "_local", "_pid", "_nthreads"):
            state.pop(k, None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._reset_process_state()

    # ---- description ---------------------------------------------------------

    @property
    def run_name(self):
        return self.attrs.get("run_name")

    def __len__(self):
        return int(self._unit_base[-1])

    def frame_count(self, unit=None) -> int:
        """Frames of one unit, or of all units."""
        if unit is None:
            return len(self)
        return self.frame_counts[self._unit_id(unit)]

    def fields(self, unit) -> tuple:
        """Fields of a unit present in every file that has the unit."""
        u = self._unit_id(unit)
        have = None
        for info in self._infos:
            if u in info.units:
                s = set(info.units[u]["fields"])
                have = s if have is None else have & s
        return tuple(f for f in ALL_FIELDS if f in (have or ()))

    def _unit_id(self, unit) -> int:
        try:
            u = int(unit)
        except (TypeError, ValueError):
            u = None
        if u is None or u not in self.channels:
            raise KeyError(f"unit {unit!r} is not in run {self.run_name!r} ({self.files[0]}…); units: {list(self.units)}")
        return u

    def check_fields(self, fields, units=None):
        fields = (fields,) if isinstance(fields, str) else tuple(fields)
        for fld in fields:
            if fld not in ALL_FIELDS:
                raise ValueError(f"unknown field {fld!r}; fields of a daq1 run: {', '.join(ALL_FIELDS)}")
        for u in (self.units if units is None else units):
            have = self.fields(u)
            for fld in fields:
                if fld not in have:
                    where = [i.path for i in self._infos if u in i.units and fld not in i.units[u]["fields"]]
                    hint = " (calibration is not written into run files yet)" if fld == "calibrated" else ""
                    raise MissingFieldError(f"field {fld!r} is not in run {self.run_name!r}: unit {u} in "
                                            f"{where[0]} has only {', '.join(self.fields(u))}{hint}")
        return fields

    def detector(self) -> "DetectorView":
        """The detector view of a master file (daqctl): all units of a frame
        side by side. MissingFieldError when the run is not a master or its
        master has none (written at stop)."""
        if self.master is None:
            raise MissingFieldError(f"run {self.run_name!r} ({self.files[0]}…) is not a master file: "
                                    "no detector view")
        return DetectorView(self)

    def __repr__(self):
        return (f"<daqload.Run {self.run_name!r}: {len(self.files)} file(s), units {list(self.units)}, "
                f"{len(self)} frames{', live' if self.live else ''}>")

    # ---- fast path: chunk index ----------------------------------------------

    def _field_table(self, field: str) -> _FieldTable:
        t = self._tables.get(field)
        if t is not None:
            return t
        nseg = len(self._seg_n)
        t = _FieldTable()
        t.fast = np.zeros(nseg, dtype=bool)
        t.cbase = np.zeros(nseg, dtype=np.int64)
        t.crows = np.ones(nseg, dtype=np.int64)
        t.chunk_rows = np.ones(nseg, dtype=np.int64)
        t.comp = np.zeros(nseg, dtype=bool)
        t.filtered = np.zeros(nseg, dtype=bool)
        t.reasons = {}
        t.row_bytes = 0
        offs, sizes = [], []
        total = 0
        for s in range(nseg):
            fi, u = int(self._seg_file[s]), self.units[int(self._seg_unit[s])]
            info = self._infos[fi]
            shape, dtype, chunks = info.units[u]["fields"][field]
            t.row_elems = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            t.elem_size = int(dtype.itemsize)
            t.row_bytes = t.elem_size * t.row_elems
            t.chunk_rows[s] = chunks[0] if chunks else max(1, int(self._seg_n[s]))
            reason = None
            if self._fast_setting is False:
                reason = "fast path switched off (fast_path=False or DAQLOAD_FAST_PATH=0)"
            elif info.live:
                reason = "file is being written (SWMR) or was not closed (no stopped_at)"
            ds = self._file(fi)[f"units/u{u}/{field}"]
            t.filtered[s] = ds.id.get_create_plist().get_nfilters() > 0
            if reason is None:
                idx, reason = chunk_index(ds, int(self._seg_n[s]), native=self._native_setting)
                if idx is not None:
                    crows, arr, sz, codec = idx
                    t.fast[s] = True
                    t.comp[s] = codec == "bslz4"
                    t.crows[s] = crows
                    t.cbase[s] = total
                    offs.append(arr)
                    sizes.append(sz)
                    total += len(arr)
            if reason is not None:
                t.reasons[info.path] = reason
        t.offsets = np.concatenate(offs) if offs else np.zeros(0, dtype=np.int64)
        t.sizes = np.concatenate(sizes) if sizes else np.zeros(0, dtype=np.int64)
        self._tables[field] = t
        return t

    def read_path(self, field: str = "raw") -> str:
        """How a field is read, in all files: 'pread' (fast path, uncompressed
        chunks), 'pread+bslz4' (fast path, bitshuffle/LZ4 chunks decompressed
        by daqload._native), 'h5py', or 'mixed' (different files, different ways)."""
        t = self._field_table(field)
        if len(t.fast) == 0:
            return "pread"
        ways = {("pread+bslz4" if c else "pread") if f else "h5py" for f, c in zip(t.fast.tolist(), t.comp.tolist())}
        return ways.pop() if len(ways) == 1 else "mixed"

    def read_path_reasons(self, field: str = "raw") -> dict:
        """{file: why it is read through h5py} for a field."""
        return dict(self._field_table(field).reasons)

    def log_read_path(self, field: str = "raw"):
        if field in self._logged:
            return
        self._logged.add(field)
        path = self.read_path(field)
        t = self._field_table(field)
        if path == "pread":
            log.info("run %r (%d file(s)): %s read with pread from uncompressed chunks (%s, %d I/O threads)",
                     self.run_name, len(self.files), field, _pread.PREADV_BACKEND, self.io_threads())
        elif path == "pread+bslz4":
            mod, _ = _compressed.native(self._native_setting)
            log.info("run %r (%d file(s)): %s read with pread + bitshuffle/LZ4 decompression in daqload._native "
                     "(%s, %d I/O threads)", self.run_name, len(self.files), field, mod.SIMD, self.io_threads())
        elif not t.reasons:  # mixed, all on the fast path
            log.info("run %r (%d file(s)): %s read with pread, from uncompressed chunks in some files and "
                     "bitshuffle/LZ4 chunks in others (%d I/O threads)", self.run_name, len(self.files), field,
                     self.io_threads())
        else:
            why = "; ".join(f"{os.path.basename(p)}: {r}" for p, r in list(t.reasons.items())[:3])
            log.info("run %r (%d file(s)): %s read through h5py%s (%s)", self.run_name, len(self.files), field,
                     " for some files" if path == "mixed" else "", why)

    # ---- reading ---------------------------------------------------------------

    def _meta_global(self, field: str) -> np.ndarray:
        """A per-frame field over all run-global rows (loaded once, cached)."""
        a = self._meta.get(field)
        if a is None:
            parts = []
            t = None
            for s in range(len(self._seg_n)):
                fi, u = int(self._seg_file[s]), self.units[int(self._seg_unit[s])]
                ds = self._file(fi)[f"units/u{u}/{field}"]
                n = int(self._seg_n[s])
                if ds.id.get_create_plist().get_nfilters() > 0:
                    # Compressed: decompressed by daqload._native when it can (the chunk index says).
                    t = t or self._field_table(field)
                    if t.comp[s]:
                        part = np.empty(n, dtype=ds.dtype)
                        self._bslz4_rows(field, t, np.full(n, s, dtype=np.int64), np.arange(n, dtype=np.int64),
                                         np.arange(n, dtype=np.int64), part)
                        parts.append(part)
                        continue
                    _compressed.ensure_h5py_filters()
                parts.append(ds[0:n])
            dtype = parts[0].dtype if parts else np.dtype(np.uint64)
            a = np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)
            self._meta[field] = a
        return a

    def _locate(self, g):
        s = np.searchsorted(self._seg_start, g, side="right") - 1
        return s, g - self._seg_start[s]

    def _gather_rows(self, field: str, g: np.ndarray, dest: np.ndarray, convert_out=None) -> None:
        """Reads rows (run-global indices g) of a per-channel field into dest
        (shape (len(g), channels), C-contiguous, the stored item size).

        With convert_out (an array of another dtype, shaped like dest), the
        rows end up there, converted, and dest is scratch space: rows are
        read in file order into dest and converted block by block while they
        are still in the CPU cache."""
        self._check_pid()
        g = np.asarray(g, dtype=np.int64)
        if len(g) == 0:
            return
        t = self._field_table(field)
        seg, local = self._locate(g)
        fast = t.fast[seg]
        comp = t.comp[seg]
        plain = fast & ~comp
        if convert_out is not None and plain.all():
            self._staged_rows(t, seg, local, dest, convert_out)
            return
        if convert_out is not None and comp.all():
            conv = _NATIVE_CONVERT.get((dest.dtype.str, convert_out.dtype.str))
            if conv is not None:  # widened by the native code, straight into place
                self._bslz4_rows(field, t, seg, local, np.arange(len(g), dtype=np.int64), convert_out, conv)
                return
        if plain.any():
            sel = np.flatnonzero(plain) if not plain.all() else None
            fs, fl = (seg, local) if sel is None else (seg[sel], local[sel])
            pos = np.arange(len(g), dtype=np.int64) if sel is None else sel.astype(np.int64)
            files, offs = self._row_offsets(t, fs, fl)
            self._pread_rows(files, offs, pos, t.row_bytes, dest)
        if comp.any():
            sel = np.flatnonzero(comp)
            self._bslz4_rows(field, t, seg[sel], local[sel], sel.astype(np.int64), dest)
        if not fast.all():
            sel = np.flatnonzero(~fast)
            self._h5py_rows(field, seg[sel], local[sel], sel, dest)
        if convert_out is not None:
            self._parallel(lambda a, b: np.copyto(convert_out[a:b], dest[a:b], casting="unsafe"), len(g), dest.nbytes)

    def _bslz4_rows(self, field, t, seg, local, pos, dest, convert="copy"):
        """Rows (segment, row in segment) of bitshuffle/LZ4 chunks into rows pos
        of dest: one task per chunk, run by daqload._native on the I/O threads."""
        mod, why = _compressed.native(self._native_setting)
        if mod is None:  # pragma: no cover - the chunk index only marks chunks compressed with the extension
            raise DaqloadError(why)
        p = _compressed.plan_tasks(t, seg, local, pos, self._seg_file)
        k = len(p["chunk"])
        if k == 0:
            return
        fds = np.array([self._fd(int(fi)) for fi in p["file"].tolist()], dtype=np.int64) if k < 64 else None
        if fds is None:
            uniq = {int(fi): self._fd(int(fi)) for fi in np.unique(p["file"]).tolist()}
            fds = np.array([uniq[fi] for fi in p["file"].tolist()], dtype=np.int64)
        row_elems = t.row_elems
        if not dest.flags.c_contiguous or not dest.flags.writeable:
            raise ValueError("destination rows must be a writable C-contiguous array")

        def part(a, b):
            return mod.gather(fds, p["offsets"], p["sizes"], p["chunk_rows"], p["row_start"], p["src_rows"],
                              p["dst_rows"], t.elem_size, row_elems, dest, convert, a, b)

        pool = self._pool()
        work = len(p["src_rows"]) * t.row_bytes + int(p["sizes"].sum())
        if pool is None or k < 2 or work < (1 << 20):
            failures = [part(0, k)]
        else:
            parts = _compressed.split_tasks(p, t.row_bytes, self.io_threads())
            futs = [pool.submit(part, a, b) for a, b in parts[1:]]
            failures = [part(*parts[0])] + [f.result() for f in futs]
        failures = [f for f in failures if f is not None]
        if failures:
            task, kind, msg, err = min(failures)
            s = int(p["seg"][task])
            fi, u = int(self._seg_file[s]), self.units[int(self._seg_unit[s])]
            cr = int(p["chunk_rows"][task])
            c = int(p["chunk"][task] - t.cbase[s])
            where = (f"{self.files[fi]}: /units/u{u}/{field} chunk {c} (rows {c * cr}..{c * cr + cr - 1}, "
                     f"{int(p['sizes'][task])} bytes at offset {int(p['offsets'][task])})")
            if kind == "io":
                raise OSError(err, f"{where}: {msg}", self.files[fi])
            raise DamagedChunkError(f"{where} cannot be decompressed: {msg} (bitshuffle/LZ4, filter 32008)")

    def _row_offsets(self, t, seg, local):
        crows = t.crows[seg]
        chunk = local // crows
        base = t.offsets[t.cbase[seg] + chunk]
        return self._seg_file[seg], np.where(base >= 0, base + (local - chunk * crows) * t.row_bytes, -1)

    def _parallel(self, fn, n, nbytes):
        """fn(a, b) over slices of range(n), on the I/O threads when worth it."""
        pool = self._pool()
        if pool is None or nbytes < (1 << 20) or n < 2:
            fn(0, n)
            return
        cuts = np.linspace(0, n, min(self.io_threads(), n) + 1).astype(int).tolist()
        futs = [pool.submit(fn, a, b) for a, b in zip(cuts[1:-1], cuts[2:])]
        fn(cuts[0], cuts[1])
        for f in futs:
            f.result()

    def _staged_rows(self, t, seg, local, staging, out):
        files, offs = self._row_offsets(t, seg, local)
        zero = offs < 0
        if zero.any():
            out[np.flatnonzero(zero)] = 0
        idx = np.flatnonzero(~zero)
        key = (files[idx] << _pread._FILE_SHIFT) | offs[idx]
        order = np.argsort(key, kind="stable")
        ks = key[order]
        inputs = idx[order]  # input rows in file order
        uniq = np.concatenate(([True], ks[1:] != ks[:-1])) if len(ks) else np.zeros(0, dtype=bool)
        m = int(np.count_nonzero(uniq))
        dups = m != len(ks)
        rank = np.cumsum(uniq) - 1 if dups else None
        u_files = (ks[uniq] >> _pread._FILE_SHIFT) if dups else files[inputs]
        u_offs = (ks[uniq] & ((1 << _pread._FILE_SHIFT) - 1)) if dups else ks
        row_bytes = t.row_bytes
        rows = staging.reshape(staging.shape[0], -1)
        max_gap = max(int(os.environ.get("DAQLOAD_MAX_GAP", 65536)), 2 * row_bytes)
        trash = self._trash(max_gap)
        p = _pread.plan(u_files, u_offs, np.arange(m, dtype=np.int64), row_bytes, staging.ctypes.data,
                        trash.ctypes.data, max_gap)
        fds = {int(fi): self._fd(int(fi)) for fi in np.unique(p.seg_file)}
        ends = p.seg_pos_end.tolist()

        def convert(a, b):  # staging rows [a, b) (file order) -> out
            if dups:
                ja, jb = np.searchsorted(rank, (a, b))
                out[inputs[ja:jb]] = rows[rank[ja:jb]]
            else:
                out[inputs[a:b]] = rows[a:b]

        def task(s0, s1):
            done = [ends[s0 - 1] if s0 > 0 else 0]

            def after(s):
                convert(done[0], ends[s])
                done[0] = ends[s]
            _pread.run_segments(p, s0, s1, fds, self.files, after)

        nseg = len(p.seg_bytes)
        pool = self._pool()
        if pool is None or p.total_bytes() < (1 << 20) or nseg < 2:
            task(0, nseg)
        else:
            parts = _pread.split_segments(p, self.io_threads())
            futs = [pool.submit(task, a, b) for a, b in parts[1:]]
            task(*parts[0])
            for f in futs:
                f.result()

    def _trash(self, nbytes):
        trash = getattr(self._local, "trash", None)
        if trash is None or trash.nbytes < nbytes:
            trash = np.empty(nbytes, dtype=np.uint8)
            self._local.trash = trash
        return trash

    def _pread_rows(self, files, offs, pos, row_bytes, dest):
        row_view = dest.reshape(dest.shape[0], -1)
        if row_view.strides[0] != row_bytes or not dest.flags.c_contiguous:
            raise ValueError("destination rows must be contiguous and of the stored row size")
        max_gap = max(int(os.environ.get("DAQLOAD_MAX_GAP", 65536)), 2 * row_bytes)
        trash = self._trash(max_gap)
        p = _pread.plan(files, offs, pos, row_bytes, dest.ctypes.data, trash.ctypes.data, max_gap)
        uniq = np.unique(p.seg_file) if len(p.seg_file) else []
        fds = {int(fi): self._fd(int(fi)) for fi in uniq}
        pool = self._pool()
        total = p.total_bytes()
        if pool is None or total < (1 << 20) or len(p.seg_bytes) < 2:
            _pread.run_segments(p, 0, len(p.seg_bytes), fds, self.files)
        else:
            parts = _pread.split_segments(p, self.io_threads())
            futs = [pool.submit(_pread.run_segments, p, a, b, fds, self.files) for a, b in parts[1:]]
            a, b = parts[0]
            _pread.run_segments(p, a, b, fds, self.files)
            for fu in futs:
                fu.result()
        _pread.finish(p, row_view)

    def _h5py_rows(self, field, seg, local, pos, dest):
        t = self._field_table(field)
        order = np.lexsort((local, seg))
        seg, local, pos = seg[order], local[order], pos[order]
        bounds = np.flatnonzero(np.diff(seg)) + 1
        for lo_i, hi_i in zip(np.concatenate(([0], bounds)), np.concatenate((bounds, [len(seg)]))):
            s = int(seg[lo_i])
            fi, u = int(self._seg_file[s]), self.units[int(self._seg_unit[s])]
            ds = self._file(fi)[f"units/u{u}/{field}"]
            if t.filtered[s]:
                _compressed.ensure_h5py_filters()
            rows, p = local[lo_i:hi_i], pos[lo_i:hi_i]
            cr = int(t.chunk_rows[s])
            # Spans of nearby rows within one chunk: one h5py read each.
            cut = (np.diff(rows) > max(1, cr // 4)) | (np.diff(rows // cr) != 0)
            starts = np.concatenate(([0], np.flatnonzero(cut) + 1))
            ends = np.concatenate((starts[1:], [len(rows)]))
            for a, b in zip(starts, ends):
                r0, r1 = int(rows[a]), int(rows[b - 1]) + 1
                buf = np.empty((r1 - r0,) + dest.shape[1:], dtype=ds.dtype)
                ds.read_direct(buf, np.s_[r0:r1])
                dest[p[a:b]] = buf[rows[a:b] - r0].view(dest.dtype)

    def read(self, unit, start=0, stop=None, fields=("raw", "frame_number", "timestamp_ns", "missing_packets")) -> dict:
        """Rows start..stop-1 of one unit (across all files) as numpy arrays,
        {field: array}, in the stored types (raw uint16 [n, channels],
        frame_number/timestamp_ns uint64 [n], missing_packets uint16 [n])."""
        u = self._unit_id(unit)
        fields = self.check_fields(fields, units=[u])
        n = self.frame_counts[u]
        start, stop, step = slice(start, stop).indices(n)
        if step != 1:
            raise ValueError("read() takes a contiguous range")
        ui = self.units.index(u)
        g = self._unit_base[ui] + np.arange(start, max(start, stop), dtype=np.int64)
        out = {}
        for fld in fields:
            if fld in ROW_FIELDS:
                s0 = int(np.flatnonzero(self._seg_unit == ui)[0]) if len(g) else 0
                fi = int(self._seg_file[s0]) if len(self._seg_file) else 0
                shape, dtype, _ = self._infos[fi].units[u]["fields"][fld]
                dest = np.empty((len(g),) + tuple(shape[1:]), dtype=dtype)
                self._gather_rows(fld, g, dest)
                out[fld] = dest
            else:
                out[fld] = self._meta_global(fld)[g]
        return out

    def stored_dtype(self, field: str, unit=None) -> np.dtype:
        u = self.units[0] if unit is None else self._unit_id(unit)
        for info in self._infos:
            if u in info.units and field in info.units[u]["fields"]:
                return info.units[u]["fields"][field][1]
        raise MissingFieldError(f"field {field!r} is not in run {self.run_name!r}")


def _is_master(attrs) -> bool:
    return "master_version" in attrs


def _expand_masters(files):
    """(files without the master and the files it maps, master) where master is
    None or (master path, its root attributes, its source files in order or
    None, why they are not read directly). One master at most."""
    masters = []
    for p in files:
        try:
            f, _ = _open_h5(p)
        except DaqloadError:
            continue  # named properly when it is opened as a run file
        with f:
            attrs = {k: _py(v) for k, v in f.attrs.items()}
            if not _is_master(attrs):
                continue
            check_root(p, f)
            sources, why = _master_sources(p, f, attrs)
        masters.append((p, attrs, sources, why))
    if not masters:
        return files, None
    if len(masters) > 1:
        raise RunFormatError(f"{masters[0][0]} and {masters[1][0]} are both master files: open one run at a time")
    m = masters[0]
    mapped = {os.path.realpath(x) for x in (m[2] or ())}
    rest = [p for p in files if p != m[0] and os.path.realpath(p) not in mapped]
    if rest:
        raise RunFormatError(f"{m[0]} is a master file; {rest[0]} is not one of the files it maps: "
                             "open the master on its own")
    return [m[0]], m


def _master_source_path(master: str, name: str) -> str:
    """Where HDF5 finds a VDS source named `name` in master file `master`: an
    absolute path as it is (else its file name beside the master), a relative
    one relative to the master's directory."""
    d = os.path.dirname(os.path.abspath(master))
    if os.path.isabs(name):
        return name if os.path.exists(name) else os.path.join(d, os.path.basename(name))
    return os.path.normpath(os.path.join(d, name))


def _master_sources(path, f, attrs):
    """(source files in order, None) when every unit dataset of the master is
    its source datasets one after the other, whole (written at stop); else
    (None, why). RunNotFoundError when a mapped file is missing."""
    if attrs.get("master_state") == "live":
        return None, "the master is live (a host was recording when it was written): read as a SWMR reader"
    order = []
    for uname, g in f["units"].items():
        if not isinstance(g, h5py.Group) or not _UNIT_RE.match(uname):
            continue
        for fld in ALL_FIELDS:
            if fld not in g:
                continue
            ds = g[fld]
            dcpl = ds.id.get_create_plist()
            if dcpl.get_layout() != h5py.h5d.VIRTUAL:
                return None, f"/units/{uname}/{fld} is not a virtual dataset"
            expect = 0
            try:
                for i in range(dcpl.get_virtual_count()):
                    vs, ss = dcpl.get_virtual_vspace(i), dcpl.get_virtual_srcspace(i)
                    if not (vs.is_regular_hyperslab() and ss.is_regular_hyperslab()):
                        return None, f"/units/{uname}/{fld}: a mapping is not a block of rows"
                    vstart, _, vcount, vblock = vs.get_regular_hyperslab()
                    sstart, _, scount, sblock = ss.get_regular_hyperslab()
                    if vstart[0] != expect or sstart[0] != 0 or vcount[0] != 1 or vblock[0] != sblock[0]:
                        return None, f"/units/{uname}/{fld}: mapping {i} is not the next source, whole, from row 0"
                    expect += vblock[0]
                    if dcpl.get_virtual_dsetname(i) != f"units/{uname}/{fld}":
                        return None, f"/units/{uname}/{fld}: mapping {i} reads {dcpl.get_virtual_dsetname(i)}"
                    src = _master_source_path(path, dcpl.get_virtual_filename(i))
                    if not os.path.exists(src):
                        raise RunNotFoundError(f"{path}: master file of run {attrs.get('run_name')!r} maps "
                                               f"{dcpl.get_virtual_filename(i)!r}, which is missing ({src}): move "
                                               "the hosts' files with the master, keeping their relative paths")
                    if src not in order:
                        order.append(src)
            except RuntimeError as e:  # an unlimited selection has no bounds
                return None, f"/units/{uname}/{fld}: {e}"
            if expect != ds.shape[0]:
                return None, f"/units/{uname}/{fld}: its mappings cover {expect} of {ds.shape[0]} rows"
    if not order:
        return None, "the master maps no file"
    return order, None


def _master_mismatch(master, infos):
    """None when the source files hold, per unit, the rows the master maps; else why not."""
    with h5py.File(master, "r") as f:
        for uname, g in f["units"].items():
            m = _UNIT_RE.match(uname)
            if not m or "raw" not in g:
                continue
            u = int(m.group(1))
            rows = sum(i.units[u]["rows"] for i in infos if u in i.units)
            if rows != g["raw"].shape[0]:
                return f"unit {u}: the sources hold {rows} rows, the master maps {g['raw'].shape[0]}"
        for i in infos:
            for u in i.units:
                if f"u{u}" not in f["units"] and i.units[u]["rows"]:
                    return f"unit {u} of {i.path} is not in the master"
    return None


class DetectorView:
    """The ``/detector`` view of a master file: every unit of a frame side by
    side, aligned by frame_number. ``frame_number`` [n_frames], ``present``
    [n_frames, n_units] (bool), ``unit_ids``, ``shape`` (n_frames, n_units,
    channels); ``read(start, stop, field)`` -> numpy [n, n_units, channels]
    with ``fill`` where a unit has no row for a frame. Rows come through the
    run's own read path (the hosts' files, pread where it can) when the run
    reads them directly, else from the master's virtual dataset via h5py."""

    def __init__(self, run):
        self.run = run
        with h5py.File(run.master, "r", libver="latest", swmr=run.master_attrs.get("master_state") == "live") as f:
            if "detector" not in f:
                raise MissingFieldError(f"{run.master}: no detector view (written by daqctl at stop, when all "
                                        "units have the same channel count)")
            g = f["detector"]
            self.frame_number = g["frame_number"][:]
            self.present = g["present"][:].astype(bool)
            self.unit_ids = tuple(int(u) for u in g["unit_id"][:])
            self.shape = tuple(g["data"].shape)
            self.fields = tuple(x for x in ("raw", "calibrated") if ("data" if x == "raw" else x) in g)
            self._fill = {x: g["data" if x == "raw" else x].fillvalue for x in self.fields}
        self._rowpos = np.cumsum(self.present, axis=0) - 1  # row of unit k holding frame i (where present)
        direct = run.master_read_path == "sources"
        if direct:
            for k, u in enumerate(self.unit_ids):
                if run.frame_counts.get(u, 0) != int(self.present[:, k].sum()):
                    direct = False
        self.direct = direct

    def __len__(self):
        return self.shape[0]

    def fill(self, field="raw"):
        return self._fill[field]

    def read(self, start=0, stop=None, field="raw") -> np.ndarray:
        """Frames start..stop-1 of the view: [n, n_units, channels]."""
        if field not in self.fields:
            raise MissingFieldError(f"{self.run.master}: the detector view has no {field!r} (it has {self.fields})")
        start, stop, _ = slice(start, stop).indices(self.shape[0])
        stop = max(start, stop)
        run = self.run
        if not self.direct:
            with h5py.File(run.master, "r") as f:
                return f["detector/data" if field == "raw" else f"detector/{field}"][start:stop]
        dtype = run.stored_dtype(field, self.unit_ids[0])
        out = np.full((stop - start, self.shape[1], self.shape[2]), self._fill[field], dtype=dtype)
        for k, u in enumerate(self.unit_ids):
            sel = np.flatnonzero(self.present[start:stop, k])
            if not len(sel):
                continue
            ui = run.units.index(u)
            g = run._unit_base[ui] + self._rowpos[start + sel, k]
            rows = np.empty((len(sel), self.shape[2]), dtype=dtype)
            run._gather_rows(field, g.astype(np.int64), rows)
            out[sel, k] = rows
        return out


def chunk_index(ds, n_rows: int, native=None):
    """((chunk_rows, byte offset per chunk or -1, stored bytes per chunk, codec), None)
    when a dataset can be read with pread: native little-endian, whole rows per
    chunk, and either uncompressed (codec None) or compressed with exactly
    bitshuffle + LZ4 (filter 32008, codec "bslz4", every chunk filtered: mask 0)
    while daqload._native is available (``native`` False: it is not used);
    else (None, reason)."""
    if not hasattr(ds.id, "get_chunk_info_by_coord"):
        return None, "h5py has no chunk query (needs h5py >= 3.0 built with HDF5 >= 1.10.5)"
    dt = ds.dtype
    if dt.kind not in "uif" or dt.byteorder == ">" or (dt.byteorder == "=" and sys.byteorder != "little"):
        return None, f"dtype {dt} is not a native little-endian number"
    shape = ds.shape
    row_bytes = dt.itemsize * int(np.prod(shape[1:]))
    dcpl = ds.id.get_create_plist()
    layout = dcpl.get_layout()
    if layout == h5py.h5d.CONTIGUOUS:
        off = ds.id.get_offset()
        arr = np.array([-1 if off is None else off], dtype=np.int64)
        if off is None and ds.fillvalue != 0:
            return None, "unallocated dataset with a non-zero fill value"
        return (max(1, n_rows), arr, np.array([max(1, n_rows) * row_bytes], dtype=np.int64), None), None
    if layout == h5py.h5d.VIRTUAL:
        return None, "a virtual dataset (HDF5 VDS, a master file's)"
    if layout != h5py.h5d.CHUNKED:
        return None, "compact layout"
    codec = None
    if dcpl.get_nfilters():
        why = _compressed.filter_check(dcpl, dt)
        if why is not None:
            return None, why
        mod, why = _compressed.native(native)
        if mod is None:
            return None, f"bitshuffle/LZ4 chunks, but {why}"
        codec = "bslz4"
    chunks = ds.chunks
    if tuple(chunks[1:]) != tuple(shape[1:]):
        return None, f"chunks {chunks} do not hold whole rows of {shape}"
    crows = int(chunks[0])
    nchunks = (n_rows + crows - 1) // crows
    arr = np.full(nchunks, -1, dtype=np.int64)
    sizes = np.zeros(nchunks, dtype=np.int64)
    want = crows * row_bytes
    zero_tail = (0,) * (len(shape) - 1)
    for c in range(nchunks):
        info = ds.id.get_chunk_info_by_coord((c * crows,) + zero_tail)
        if info.byte_offset is None:
            continue
        if codec is None and (info.filter_mask != 0 or info.size != want):
            return None, f"chunk {c} is stored as {info.size} bytes (filter mask {info.filter_mask}), expected {want}"
        if codec is not None and info.filter_mask != 0:
            return None, f"chunk {c} was stored without its filter (filter mask {info.filter_mask})"
        if codec is not None and info.size <= 0:
            return None, f"chunk {c} is stored as {info.size} bytes"
        arr[c] = info.byte_offset
        sizes[c] = info.size
    if (arr < 0).any() and np.any(ds.fillvalue != 0):
        return None, "unallocated chunks with a non-zero fill value"
    return (crows, arr, sizes, codec), None


def open_run(paths, *, fast_path=None, io_threads=None, native=None, resolve_master=True) -> Run:
    """Opens a run: a file, a rotated series (directory, glob, run name without
    suffix, or a list of files; series files are sorted by their number).

    A master file of a run of several hosts (daqctl, ``<run>.h5`` with
    virtual datasets over the hosts' files) opens as the whole run: its
    hosts' files are read directly when its mappings are plain concatenations
    of them (``run.master_read_path == "sources"``), else — a live master, or
    ``resolve_master=False`` — its virtual datasets through h5py ("h5py").
    ``run.detector()`` gives its detector view.

    Raises RunNotFoundError for missing paths, RunFormatError naming the file
    for a file that is not a daq1 run or has an unknown format_version.
    """
    return Run(paths, fast_path=fast_path, io_threads=io_threads, native=native, resolve_master=resolve_master)
