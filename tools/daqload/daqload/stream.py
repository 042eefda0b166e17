"""RunStream: follow a run while daqd writes it (SWMR reader)."""

from __future__ import annotations

import logging
import os
import re
import time

import h5py
import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from . import _compressed
from ._errors import DaqloadError, MissingFieldError, RunFormatError
from ._run import ALL_FIELDS, REQUIRED_FIELDS, ROW_FIELDS, _SERIES_RE, check_root
from .dataset import _META_NUMPY, PSEUDO_FIELDS, RAW_DTYPES
from .sampler import _dist_defaults

log = logging.getLogger("daqload")


class StreamInterrupted(Exception):
    """Raised inside a RunStream's iteration when its ``_stop_event`` (set by
    daqload.Loader to stop following) is set while it waits for new rows."""


class _Target:
    """Which file(s) a stream follows: one file, or a rotated series."""

    def __init__(self, path):
        p = os.fsdecode(os.fspath(path))
        if os.path.isdir(p):
            raise ValueError(f"{p} is a directory; RunStream follows one run: pass runs/<name>.h5, "
                             "runs/<name>_00000.h5 or runs/<name>")
        self.given = p
        base = os.path.basename(p)
        m = _SERIES_RE.match(base)
        if m:
            self.prefix = os.path.join(os.path.dirname(p), m.group("run"))
            self.first = int(m.group("num"))
            self.single = None
        elif p.endswith(".h5"):
            self.prefix, self.first, self.single = None, None, p
        else:
            self.prefix, self.first, self.single = p, None, None  # decided when a file appears

    def series_path(self, k):
        return f"{self.prefix}_{k:05d}.h5"

    def resolve(self):
        """(path, number or None) of the first file, or None while nothing exists yet."""
        if self.single is not None:
            return (self.single, None) if os.path.exists(self.single) else None
        if self.first is not None:
            path = self.series_path(self.first)
            return (path, self.first) if os.path.exists(path) else None
        if os.path.exists(self.prefix + ".h5"):
            self.single = self.prefix + ".h5"
            return self.single, None
        d = os.path.dirname(self.prefix) or "."
        name = os.path.basename(self.prefix)
        nums = []
        try:
            for f in os.listdir(d):
                m = _SERIES_RE.match(f)
                if m and m.group("run") == name:
                    nums.append(int(m.group("num")))
        except FileNotFoundError:
            return None
        if not nums:
            return None
        self.first = min(nums)
        return self.series_path(self.first), self.first


def _open_swmr(path, deadline):
    last = None
    while True:
        try:
            return h5py.File(path, "r", libver="latest", swmr=True)
        except OSError as e:  # being reopened by the writer (new unit, stopped_at): retry
            last = e
            if os.path.exists(path) and not h5py.is_hdf5(path):
                raise RunFormatError(f"{path}: not a daq1 run file (not an HDF5 file)") from None
        if time.monotonic() > deadline:
            raise DaqloadError(f"{path}: could not open it as a SWMR reader: {last}")
        time.sleep(0.05)


class RunStream(IterableDataset):
    """Frames of a run as daqd writes them: an IterableDataset of dicts
    {field: tensor} (fields and types as RunDataset, window 1).

    ``path``: ``runs/<name>.h5``, ``runs/<name>_00000.h5`` (a rotated series:
    the following numbers are read as they appear) or ``runs/<name>`` (either;
    waits for the first file to appear).

    The stream opens the file as a SWMR reader, refreshes the datasets every
    ``poll_interval`` seconds and yields the new rows. Rows are handed out
    once they have been visible for one poll (a reader can see a grown extent
    a moment before its chunk is written) and their frame_numbers ascend. It
    reopens the file every ``reopen_interval`` seconds (a unit that appears
    mid-run is only visible after a reopen) and ends when the file has the
    root attribute ``stopped_at`` after a reopen and, for a series, no next
    file appears within ``rotation_grace`` seconds; or, with a warning, when
    no new row arrived for ``idle_timeout`` seconds.

    Sharding: rows are dealt out in blocks of one stored chunk over
    ``num_replicas × DataLoader workers`` shards (rank × worker), each block
    to one shard; every process opens its own reader when iterated.
    """

    def __init__(self, path, *, unit=None, fields=("raw",), transform=None, skip_incomplete=False,
                 raw_dtype="int32", idle_timeout=60.0, poll_interval=0.1, reopen_interval=1.0,
                 rotation_grace=2.0, num_replicas=None, rank=None):
        self.target = _Target(path)
        self.units = None if unit is None else ({int(unit)} if isinstance(unit, (int, np.integer)) else {int(u) for u in unit})
        self.fields = (fields,) if isinstance(fields, str) else tuple(fields)
        for f in self.fields:
            if f not in ALL_FIELDS + PSEUDO_FIELDS:
                raise ValueError(f"unknown field {f!r}; fields of a daq1 run: {', '.join(ALL_FIELDS + PSEUDO_FIELDS)}")
        if raw_dtype not in RAW_DTYPES:
            raise ValueError(f"raw_dtype must be one of {list(RAW_DTYPES)}, got {raw_dtype!r}")
        self.raw_dtype = raw_dtype
        self.transform = transform
        self.skip_incomplete = bool(skip_incomplete)
        self.idle_timeout = float(idle_timeout)
        self.poll_interval = float(poll_interval)
        self.reopen_interval = float(reopen_interval)
        self.rotation_grace = float(rotation_grace)
        self.num_replicas, self.rank = _dist_defaults(num_replicas, rank)
        self.read_path = "h5py (SWMR)"
        self.ended_by = None  # after iteration in this process: "stopped_at" or "idle_timeout"

    _stop_event = None  # a threading.Event: set, the waits below raise StreamInterrupted (daqload.Loader)

    def _sleep(self, seconds):
        ev = self._stop_event
        if ev is None:
            time.sleep(seconds)
        elif ev.wait(seconds):
            raise StreamInterrupted()

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_stop_event", None)
        return state

    def _shard(self):
        wi = get_worker_info()
        nw, wid = (wi.num_workers, wi.id) if wi is not None else (1, 0)
        return self.rank * nw + wid, self.num_replicas * nw

    def __iter__(self):
        shard, nshards = self._shard()
        return self._follow(shard, nshards)

    # ---- the follower --------------------------------------------------------

    def _follow(self, shard, nshards):
        t0 = time.monotonic()
        while True:
            first = self.target.resolve()
            if first is not None:
                break
            if time.monotonic() - t0 > self.idle_timeout:
                raise DaqloadError(f"{self.target.given}: no run file appeared within {self.idle_timeout:g} s")
            self._sleep(self.poll_interval)
        path, num = first
        log.info("following %s (shard %d of %d, %s)", path, shard, nshards, self.read_path)
        while True:
            ended = yield from self._follow_file(path, num, shard, nshards)
            if ended != "stopped_at" or num is None:
                self.ended_by = ended
                return
            nxt = self.target.series_path(num + 1)
            deadline = time.monotonic() + self.rotation_grace
            while not os.path.exists(nxt) and time.monotonic() < deadline:
                self._sleep(min(0.05, self.poll_interval))
            if not os.path.exists(nxt):
                self.ended_by = ended
                log.info("run ended (%s has stopped_at, no %s)", path, os.path.basename(nxt))
                return
            path, num = nxt, num + 1
            log.info("continuing in %s", path)

    def _follow_file(self, path, num, shard, nshards):
        need = (set(self.fields) - set(PSEUDO_FIELDS)) | {"frame_number"}
        if self.skip_incomplete:
            need.add("missing_packets")
        seen, settled, last_fn = {}, {}, {}
        f = _open_swmr(path, time.monotonic() + self.idle_timeout)
        try:
            attrs = check_root(path, f)
            if attrs.get("compression", "none") != "none":
                _compressed.ensure_h5py_filters()  # h5py decodes bitshuffle/LZ4 (filter 32008) through hdf5plugin
            final = "stopped_at" in f.attrs
            last_progress = last_reopen = time.monotonic()
            while True:
                progressed = False
                try:
                    for uid, g in self._units(f):
                        present = set(g.keys())
                        if not all(x in present for x in REQUIRED_FIELDS):
                            continue  # a unit being created right now: complete after the next reopen
                        dsets = {}
                        for fld in need:
                            if fld not in present:
                                raise MissingFieldError(f"field {fld!r} is not in {path}: /units/u{uid} has only "
                                                        f"{', '.join(k for k in ALL_FIELDS if k in present)}")
                            d = g[fld]
                            if not final:
                                d.refresh()
                            dsets[fld] = d
                        n = min(d.shape[0] for d in dsets.values())
                        limit = n if final else min(n, settled.get(uid, 0))
                        settled[uid] = n
                        a = seen.get(uid, 0)
                        if limit <= a:
                            continue
                        fn = dsets["frame_number"][a:limit]
                        prev = last_fn.get(uid)
                        ok = np.concatenate(([prev is None or fn[0] > prev], fn[1:] > fn[:-1])) if len(fn) else fn
                        if not ok.all():
                            bad = int(np.argmin(ok))
                            if final:
                                raise RunFormatError(f"{path}: /units/u{uid}/frame_number not ascending at row {a + bad}")
                            limit = a + bad  # not written yet: read it next time
                            if limit <= a:
                                continue
                        yield from self._emit(uid, dsets, a, limit, num or 0, shard, nshards)
                        seen[uid] = limit
                        last_fn[uid] = int(fn[limit - a - 1])
                        progressed = True
                except (OSError, KeyError, RuntimeError) as e:  # the writer is reopening the file: reopen too
                    if time.monotonic() - last_progress > self.idle_timeout:
                        raise DaqloadError(f"{path}: reading failed for {self.idle_timeout:g} s: {e}") from e
                    log.debug("read from %s failed (%s): reopening", path, e)
                    f.close()
                    self._sleep(min(0.05, self.poll_interval))
                    f = _open_swmr(path, time.monotonic() + self.idle_timeout)
                    last_reopen = time.monotonic()
                    final = "stopped_at" in f.attrs
                    continue
                now = time.monotonic()
                if progressed:
                    last_progress = now
                if final:
                    return "stopped_at"
                next_exists = num is not None and os.path.exists(self.target.series_path(num + 1))
                if next_exists or now - last_reopen >= self.reopen_interval:
                    f.close()
                    f = _open_swmr(path, now + self.idle_timeout)
                    last_reopen = time.monotonic()
                    if "stopped_at" in f.attrs:
                        final = True
                        continue
                if now - last_progress > self.idle_timeout:
                    log.warning("%s: no new frames for %g s and no stopped_at: ending the stream "
                                "(did the writer die?)", path, self.idle_timeout)
                    return "idle_timeout"
                if not progressed:
                    self._sleep(self.poll_interval)
        finally:
            f.close()

    def _units(self, f):
        out = []
        for name in f["units"]:
            m = re.match(r"^u(\d+)$", name)
            if m and (self.units is None or int(m.group(1)) in self.units):
                g = f["units"].get(name)  # None while the writer is still creating it
                if isinstance(g, h5py.Group):
                    out.append((int(m.group(1)), g))
        out.sort(key=lambda x: x[0])
        return out

    def _emit(self, uid, dsets, a, b, filenum, shard, nshards):
        cr = dsets["frame_number"].chunks[0] if dsets["frame_number"].chunks else 1024
        for c in range(a // cr, (b - 1) // cr + 1):
            if (c + uid + filenum) % nshards != shard:
                continue
            lo, hi = max(a, c * cr), min(b, (c + 1) * cr)
            cols = {}
            for fld, d in dsets.items():
                arr = d[lo:hi]
                cols[fld] = arr
            keep = None
            if self.skip_incomplete:
                keep = np.flatnonzero(cols["missing_packets"] == 0)
            tensors = {}
            for fld in self.fields:
                if fld == "unit":
                    tensors[fld] = torch.full((hi - lo,), uid, dtype=torch.int64)
                    continue
                arr = cols[fld]
                if fld in ROW_FIELDS:
                    if arr.dtype == np.uint16:
                        arr = arr.view(np.int16) if self.raw_dtype == "int16" else arr.astype(
                            np.int32 if self.raw_dtype == "int32" else np.float32)
                    elif arr.dtype.kind == "u":
                        arr = arr.astype(np.int64)
                else:
                    arr = arr.astype(_META_NUMPY[fld])
                tensors[fld] = torch.from_numpy(np.ascontiguousarray(arr))
            rows = range(hi - lo) if keep is None else keep.tolist()
            for i in rows:
                item = {k: v[i] for k, v in tensors.items()}
                yield self.transform(item) if self.transform is not None else item
