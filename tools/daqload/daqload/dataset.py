"""RunDataset: a daq1 run as a map-style torch Dataset, one item per frame
(or per window of consecutive frames)."""

from __future__ import annotations

import collections.abc
import logging
import sys

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

try:
    from torch.utils.data import default_collate as _default_collate
except ImportError:  # pragma: no cover - torch < 1.11
    from torch.utils.data._utils.collate import default_collate as _default_collate

from ._run import ROW_FIELDS, Run

log = logging.getLogger("daqload")

# uint16 samples: how they reach torch (torch has no uint16 tensors before 2.3).
RAW_DTYPES = {
    "int32": torch.int32,    # default: widened, values 0..65535 exactly
    "int16": torch.int16,    # the same bits reinterpreted: 32768..65535 read as -32768..-1; no conversion pass
    "float32": torch.float32,  # widened, exact
}

_META_TORCH = {"frame_number": torch.int64, "timestamp_ns": torch.int64, "missing_packets": torch.int32,
               "unit": torch.int64}
_META_NUMPY = {"frame_number": np.int64, "timestamp_ns": np.int64, "missing_packets": np.int32, "unit": np.int64}
# Not stored per frame, derived: the unit id of the item.
PSEUDO_FIELDS = ("unit",)


class FrameBatch(collections.abc.Sequence):
    """What RunDataset.__getitems__ returns: the batch already stacked
    (``.tensors``, {field: tensor [B, ...]}), and, as a sequence, one dict per
    item (views). ``daqload.collate`` returns ``.tensors`` as it is (no copy);
    torch's default_collate stacks the items (a copy) and gives the same."""

    __slots__ = ("tensors", "_n")

    def __init__(self, tensors: dict, n: int):
        self.tensors = tensors
        self._n = n

    def __len__(self):
        return self._n

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._n))]
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(i)
        return {k: v[i] for k, v in self.tensors.items()}


def collate(batch):
    """collate_fn for DataLoaders over RunDataset: a FrameBatch is returned as
    its stacked dict without copying; anything else goes to default_collate."""
    if isinstance(batch, FrameBatch):
        return dict(batch.tensors)
    return _default_collate(batch)


class _BufferPool:
    """Batch buffers of the main process, reused once nothing refers to them.

    A tensor made by torch.from_numpy keeps a reference to its numpy array
    (through its storage, which every view shares), so an array whose only
    reference is this pool is free: no tensor or view of it is alive. Reusing
    it saves the page faults of fresh memory for every batch."""

    def __init__(self, per_key=6):
        self.per_key = per_key
        self.free = {}

    def get(self, shape, np_dtype):
        key = (tuple(shape), np.dtype(np_dtype).str)
        arrs = self.free.setdefault(key, [])
        for a in arrs:
            if sys.getrefcount(a) <= 3:  # the list, `a`, getrefcount's argument
                return a
        a = np.empty(shape, dtype=np_dtype)
        if len(arrs) < self.per_key:
            arrs.append(a)
        return a


_TORCH_TO_NUMPY = {torch.int16: np.int16, torch.int32: np.int32, torch.float32: np.float32, torch.int64: np.int64,
                   torch.float64: np.float64, torch.float16: np.float16, torch.uint8: np.uint8, torch.int8: np.int8}


def _alloc(shape, dtype, shared: bool, pinned: bool, pool=None):
    numel = int(np.prod(shape))
    if pool is not None and not shared and not pinned and dtype in _TORCH_TO_NUMPY:
        return torch.from_numpy(pool.get(shape, _TORCH_TO_NUMPY[dtype]))
    if shared:
        # In a DataLoader worker: allocate the batch in shared memory, as
        # default_collate does, so sending it to the main process is no copy.
        try:
            elem = torch.empty(0, dtype=dtype)
            st = elem._typed_storage() if hasattr(elem, "_typed_storage") else elem.storage()
            storage = st._new_shared(numel)
            return elem.new(storage).view(shape) if numel else torch.empty(shape, dtype=dtype)
        except Exception:  # pragma: no cover - torch internals changed
            pass
    if pinned:
        return torch.empty(shape, dtype=dtype, pin_memory=True)
    return torch.empty(shape, dtype=dtype)


def _resolve_units(run: Run, unit):
    if unit is None:
        return list(run.units)
    if isinstance(unit, (int, np.integer, str)):
        return [run._unit_id(unit)]
    return [run._unit_id(u) for u in unit]


class RunDataset(Dataset):
    """A run as a map-style Dataset.

    Items are in unit order, then frame order: item ``i`` is one frame (or,
    with ``window=W``, ``W`` consecutive frames: consecutive rows whose
    frame_numbers follow each other without a gap) of one unit, as a dict
    {field: tensor}:

    - ``raw``: [channels] (or [W, channels]); uint16 samples widened to
      ``torch.int32`` by default; ``raw_dtype="int16"`` gives the same bits as
      int16 (values >= 32768 read negative; add 65536 or use ``.view`` on a
      wider type to undo) without a conversion pass; ``"float32"`` widened.
    - ``calibrated``: only when the run has it (else MissingFieldError);
      float data keeps its type, uint16 follows raw_dtype.
    - ``frame_number``, ``timestamp_ns``: int64 (stored uint64; the same value
      below 2**63).
    - ``missing_packets``: int32 (stored uint16; 0 = complete frame).
    - ``unit``: int64, the unit id (not stored per frame; handy with unit=None).

    ``skip_incomplete=True`` drops frames (windows) with missing packets.
    ``transform(item) -> anything`` is applied to each item.

    Use ``collate_fn=daqload.collate`` in the DataLoader: batches are read by
    ``__getitems__`` grouped by chunk straight into the batch tensor, and the
    collate step then copies nothing. Safe with DataLoader workers (fork,
    forkserver, spawn): no HDF5 handle or file descriptor crosses a process
    boundary; each process opens its own lazily.
    """

    def __init__(self, paths, *, unit=None, fields=("raw",), window=1, transform=None, skip_incomplete=False,
                 raw_dtype="int32", fast_path=None, io_threads=None, pin_memory=False, native=None):
        self.run = paths if isinstance(paths, Run) else Run(paths, fast_path=fast_path, io_threads=io_threads,
                                                             native=native)
        run = self.run
        self.units = _resolve_units(run, unit)
        if isinstance(fields, str):
            fields = (fields,)
        fields = tuple(fields)
        run.check_fields([f for f in fields if f not in PSEUDO_FIELDS], units=self.units)
        self.fields = fields
        if len(self.fields) == 0:
            raise ValueError("no fields asked for")
        if raw_dtype not in RAW_DTYPES:
            raw_dtype = {torch.int32: "int32", torch.int16: "int16", torch.float32: "float32"}.get(raw_dtype, raw_dtype)
            if raw_dtype not in RAW_DTYPES:
                raise ValueError(f"raw_dtype must be one of {list(RAW_DTYPES)}, got {raw_dtype!r}")
        self.raw_dtype = raw_dtype
        self.window = int(window)
        if self.window < 1:
            raise ValueError("window must be >= 1")
        self.transform = transform
        self.skip_incomplete = bool(skip_incomplete)
        self.pin_memory = bool(pin_memory)
        if self.pin_memory and not torch.cuda.is_available():
            log.warning("pin_memory=True but CUDA is not available: batches are not pinned")
            self.pin_memory = False
        row_fields = [f for f in self.fields if f in ROW_FIELDS]
        if row_fields:
            chans = {u: run.channels[u] for u in self.units}
            if len(set(chans.values())) > 1:
                raise ValueError(f"units of run {run.run_name!r} have different channel counts {chans}: "
                                 "items could not be batched; choose units with unit=…")
            self.channels = next(iter(chans.values()))
        else:
            self.channels = None
        self._items = self._build_items()
        for f in row_fields:
            run.log_read_path(f)

    # ---- index -------------------------------------------------------------

    def _build_items(self) -> np.ndarray:
        run, W = self.run, self.window
        parts = []
        for u in self.units:
            ui = run.units.index(u)
            base, n = int(run._unit_base[ui]), run.frame_counts[u]
            if n < W:
                continue
            ok = np.ones(n - W + 1, dtype=bool)
            if W > 1:
                fn = run._meta_global("frame_number")[base:base + n].astype(np.int64)
                ok &= (fn[W - 1:] - fn[:n - W + 1]) == W - 1
            if self.skip_incomplete:
                mp = run._meta_global("missing_packets")[base:base + n]
                bad = np.concatenate(([0], np.cumsum(mp != 0)))
                ok &= (bad[W:] - bad[:n - W + 1]) == 0
            parts.append(base + np.flatnonzero(ok))
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)

    def __len__(self):
        return len(self._items)

    @property
    def read_path(self) -> str:
        """'pread' (fast path), 'pread+bslz4' (fast path, compressed chunks), 'h5py'
        or 'mixed' for the per-channel fields read (Run.read_path)."""
        paths = {self.run.read_path(f) for f in self.fields if f in ROW_FIELDS}
        if not paths:
            return "memory"
        return paths.pop() if len(paths) == 1 else "mixed"

    def frame_numbers(self) -> np.ndarray:
        """frame_number of the first frame of every item."""
        return self.run._meta_global("frame_number")[self._items]

    def item_units(self) -> np.ndarray:
        """Unit id of every item."""
        ui = np.searchsorted(self.run._unit_base, self._items, side="right") - 1
        return np.asarray(self.run.units, dtype=np.int64)[ui]

    def chunk_boundaries(self) -> np.ndarray:
        """Item indices where a new stored chunk (of raw) starts, with 0 and
        len(self): items [b[k], b[k+1]) read from one chunk. Used by
        ChunkShuffleSampler."""
        if len(self._items) == 0:
            return np.zeros(1, dtype=np.int64)
        run = self.run
        seg, local = run._locate(self._items)
        crows = np.ones(len(run._seg_n), dtype=np.int64)
        for s in range(len(run._seg_n)):
            fi, u = int(run._seg_file[s]), run.units[int(run._seg_unit[s])]
            chunks = run._infos[fi].units[u]["fields"]["raw"][2]
            crows[s] = chunks[0] if chunks else 128
        key = seg * (1 << 40) + local // crows[seg]
        b = np.flatnonzero(np.diff(key) != 0) + 1
        return np.concatenate(([0], b, [len(self._items)])).astype(np.int64)

    # ---- reading -------------------------------------------------------------

    def _out_dtype(self, field):
        if field in ROW_FIELDS:
            stored = self.run.stored_dtype(field, self.units[0])
            if stored == np.uint16:
                return torch.int16 if self.raw_dtype == "int16" else RAW_DTYPES[self.raw_dtype], stored
            if stored.kind == "f" or stored in (np.int16, np.int32, np.int64, np.uint8, np.int8):
                return torch.from_numpy(np.zeros(0, dtype=stored)).dtype, stored
            return torch.int64, stored
        return _META_TORCH[field], None

    def __getitems__(self, indices):
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self._items)
        if len(idx) and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"index out of range for RunDataset of {n} items")
        idx = np.where(idx < 0, idx + n, idx)
        starts = self._items[idx]
        B, W = len(idx), self.window
        g = (starts[:, None] + np.arange(W, dtype=np.int64)).reshape(-1) if W > 1 else starts
        shared = get_worker_info() is not None and self.transform is None
        pinned = self.pin_memory and get_worker_info() is None
        lead = (B, W) if W > 1 else (B,)
        out = {}
        for field in self.fields:
            tdt, stored = self._out_dtype(field)
            if field in ROW_FIELDS:
                t = _alloc(lead + (self.channels,), tdt, shared, pinned, self._pool())
                tn = t.numpy().reshape(B * W, self.channels)
                if tn.dtype.itemsize == stored.itemsize:
                    self.run._gather_rows(field, g, tn.view(stored))
                else:  # read into a reused staging buffer, widen into place
                    self.run._gather_rows(field, g, self._staging(B * W, stored), convert_out=tn)
                out[field] = t
            elif field == "unit":
                ui = np.searchsorted(self.run._unit_base, g, side="right") - 1
                a = np.asarray(self.run.units, dtype=np.int64)[ui]
                out[field] = torch.from_numpy(a.reshape(lead))
            else:
                a = self.run._meta_global(field)[g].astype(_META_NUMPY[field], copy=False)
                out[field] = torch.from_numpy(np.ascontiguousarray(a).reshape(lead))
        batch = FrameBatch(out, B)
        if self.transform is not None:
            return [self.transform(item) for item in batch]
        return batch

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self.__getitems__(np.arange(*i.indices(len(self))))
        return self.__getitems__([i])[0]

    def get_batch(self, indices) -> dict:
        """{field: tensor [B, ...]} for a list of item indices (no transform)."""
        t, self.transform = self.transform, None
        try:
            return collate(self.__getitems__(indices))
        finally:
            self.transform = t

    def _pool(self):
        loc = self.run._local
        p = getattr(loc, "pool", None)
        if p is None:
            p = loc.pool = _BufferPool()
        return p

    def _staging(self, rows, dtype):
        loc = self.run._local
        st = getattr(loc, "staging", None)
        need = rows * self.channels
        if st is None or st.dtype != dtype or st.size < need:
            st = np.empty(max(need, 1), dtype=dtype)
            loc.staging = st
        return st[:need].reshape(rows, self.channels)

    def __repr__(self):
        return (f"<daqload.RunDataset {self.run.run_name!r}: {len(self)} items, units {self.units}, "
                f"fields {list(self.fields)}, window {self.window}, raw {self.raw_dtype}, read {self.read_path}>")
