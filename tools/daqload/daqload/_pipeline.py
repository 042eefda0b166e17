"""The reading side of daqload.Loader, free of torch: it runs in the training
process (threads) and in the loader subprocess (daqload._loader_child).

- ``BatchReader`` reads the items of one batch of a RunDataset into the
  arrays of a slot (a preallocated batch buffer): per field one planning
  step in numpy (rows -> chunk tasks) and one call into ``daqload._native``
  (``gather_mapped`` for uncompressed chunks of the run's files mapped into
  memory, ``gather_rows`` with pread when DAQLOAD_MMAP=0, ``gather`` for
  bitshuffle/LZ4 ones) that copies, decompresses and widens with the GIL
  released. Nothing
  per frame runs in Python. Files the fast path cannot read (live SWMR
  files, other filters, no native extension) go through ``Run._gather_rows``
  (h5py) under a lock.
- ``Pipeline`` runs a reader over the batches of an epoch on N threads, each
  thread reading whole batches into slots it takes from a ``SlotSource``,
  and hands the batches out in order. At most ``ahead`` batches are read
  ahead of the one handed out last.

Threads: a BatchReader's read() may run on several threads at once (its
state after construction is read-only; the fallback path is serialised);
a Pipeline is driven by one consumer thread, its free()/stop() may be
called from any thread.
"""

from __future__ import annotations

import mmap
import os
import threading
import traceback

import numpy as np

from . import _compressed
from ._errors import DaqloadError, DamagedChunkError

ROW_FIELDS = ("raw", "calibrated")

# (stored dtype, output dtype) pairs the native code widens while it copies.
_CONVERT = {("<u2", "<i4"): "u16>i32", ("<u2", "<f4"): "u16>f32"}


class FieldSpec:
    """What one field of a batch is: its kind ("row", "meta", "unit"), the
    output numpy dtype and the shape of one item."""

    __slots__ = ("name", "kind", "dtype", "item_shape")

    def __init__(self, name, kind, dtype, item_shape):
        self.name, self.kind, self.dtype, self.item_shape = name, kind, np.dtype(dtype), tuple(item_shape)

    def __getstate__(self):
        return (self.name, self.kind, self.dtype.str, self.item_shape)

    def __setstate__(self, s):
        self.name, self.kind, dt, self.item_shape = s
        self.dtype = np.dtype(dt)

    def nbytes(self, batch_size):
        return int(batch_size * np.prod(self.item_shape, dtype=np.int64) * self.dtype.itemsize)


class BatchReader:
    """Reads batches of items (RunDataset item indices) into slot arrays.

    Built from a RunDataset's description (picklable: the Run without its
    handles, the item table, the window and the field specs), so that the
    loader subprocess needs neither torch nor the dataset object."""

    def __init__(self, run, items, window, specs, max_gap_bytes=None):
        self.run = run
        self.items = np.asarray(items, dtype=np.int64)
        self.window = int(window)
        self.specs = list(specs)
        self.max_gap_bytes = int(os.environ.get("DAQLOAD_MAX_GAP", 65536) if max_gap_bytes is None else max_gap_bytes)
        self._prepared = False
        self._lock = threading.Lock()

    def __getstate__(self):
        return {"run": self.run, "items": self.items, "window": self.window, "specs": self.specs,
                "max_gap_bytes": self.max_gap_bytes}

    def __setstate__(self, s):
        self.__init__(s["run"], s["items"], s["window"], s["specs"], s["max_gap_bytes"])

    def prepare(self):
        """Everything that touches HDF5 or caches, before threads read: the
        chunk tables, the per-frame fields, the file descriptors."""
        if self._prepared:
            return
        run = self.run
        run._check_pid()
        self._mod, _ = _compressed.native(run._native_setting)
        self._fast = {}
        for sp in self.specs:
            if sp.kind == "row":
                t = run._field_table(sp.name)
                self._fast[sp.name] = self._mod is not None and bool(t.fast.all()) and len(t.fast) > 0
            elif sp.kind == "meta":
                run._meta_global(sp.name)
        self._fds = np.array([run._fd(fi) for fi in range(len(run.files))], dtype=np.int64)
        self._map_files()
        self._prepared = True

    def _map_files(self):
        """Maps the run's files (read-only, shared) when uncompressed rows are read natively and
        DAQLOAD_MMAP is not 0: rows are then copied/widened straight out of the page cache, one
        pass and no system call per run of rows (about 1.7x the pread path on the development VM)."""
        self._maps, self._map_base, self._map_len = [], None, None
        if os.environ.get("DAQLOAD_MMAP", "").strip().lower() in ("0", "false", "no", "off"):
            return
        if not any(self._fast.values()) or not hasattr(self._mod, "gather_mapped"):
            return
        base, length = [], []
        for fd in self._fds.tolist():
            size = os.fstat(fd).st_size
            if size == 0:
                base.append(0)
                length.append(0)
                continue
            mm = mmap.mmap(fd, size, prot=mmap.PROT_READ)
            view = np.frombuffer(mm, dtype=np.uint8)
            self._maps.append((mm, view))  # the view keeps the mapping (and its address) alive
            base.append(view.ctypes.data)
            length.append(size)
        self._map_base = np.array(base, dtype=np.int64)
        self._map_len = np.array(length, dtype=np.int64)

    def _mapped_ok(self, p, row_bytes):
        """The chunks of this batch lie inside the mappings, and the files still have their mapped
        length: a file cut short under a mapping would be SIGBUS on access, so such a batch goes
        through pread, which reports it (DamagedChunkError naming file and chunk)."""
        files = p["file"]
        ends = p["offsets"] + p["chunk_rows"] * row_bytes
        if (ends > self._map_len[files]).any():
            return False
        for fi in np.unique(files).tolist():
            if self._map_base[fi] == 0 or os.fstat(int(self._fds[fi])).st_size < self._map_len[fi]:
                return False
        return True

    def rows_of(self, idx):
        """Run-global rows of items idx (W rows per item with a window)."""
        starts = self.items[idx]
        W = self.window
        return (starts[:, None] + np.arange(W, dtype=np.int64)).reshape(-1) if W > 1 else starts

    def read(self, idx, slot) -> int:
        """Reads items idx into the first len(idx) entries of slot ({field: array [B, ...]})."""
        idx = np.asarray(idx, dtype=np.int64)
        n = len(idx)
        if n == 0:
            return 0
        g = self.rows_of(idx)
        run = self.run
        for sp in self.specs:
            out = slot[sp.name][:n]
            if sp.kind == "row":
                dest = out.reshape(len(g), -1)
                if self._fast[sp.name]:
                    self._read_rows_native(sp.name, g, dest)
                else:
                    with self._lock:  # h5py / the Run's own pread path: one thread at a time
                        stored = run.stored_dtype(sp.name, run.units[0])
                        if stored.itemsize == dest.dtype.itemsize:
                            run._gather_rows(sp.name, g, dest.view(stored))
                        else:
                            run._gather_rows(sp.name, g, np.empty(dest.shape, dtype=stored), convert_out=dest)
            elif sp.kind == "unit":
                ui = np.searchsorted(run._unit_base, g, side="right") - 1
                np.take(np.asarray(run.units, dtype=np.int64), ui, out=out.reshape(-1))
            else:
                meta = run._meta_global(sp.name)
                out.reshape(-1)[...] = meta[g]  # uint64 -> int64 etc.: the same values below 2**63
        return n

    def _read_rows_native(self, field, g, dest):
        run = self.run
        t = run._field_table(field)
        seg, local = run._locate(g)
        stored_elem = t.elem_size
        if dest.dtype.itemsize == stored_elem:
            conv = "copy"
        else:
            conv = _CONVERT.get((np.dtype(f"<u{stored_elem}").str if stored_elem == 2 else "", dest.dtype.str))
            if conv is None:  # pragma: no cover - the specs only ask for these
                raise DaqloadError(f"no conversion from {stored_elem}-byte {field} to {dest.dtype}")
        pos = np.arange(len(g), dtype=np.int64)
        comp = t.comp[seg]
        for compressed in (False, True):
            sel = np.flatnonzero(comp) if compressed else (np.flatnonzero(~comp) if comp.any() else None)
            if sel is not None and len(sel) == 0:
                continue
            s, lc, ps = (seg, local, pos) if sel is None else (seg[sel], local[sel], pos[sel])
            p = _compressed.plan_tasks(t, s, lc, ps, run._seg_file)
            k = len(p["chunk"])
            if k == 0:
                continue
            fds = self._fds[p["file"]]
            if compressed:
                fail = self._mod.gather(fds, p["offsets"], p["sizes"], p["chunk_rows"], p["row_start"], p["src_rows"],
                                        p["dst_rows"], stored_elem, t.row_elems, dest, conv, 0, k)
            elif self._map_base is not None and self._mapped_ok(p, t.row_bytes):
                fail = self._mod.gather_mapped(self._map_base[p["file"]], self._map_len[p["file"]], p["offsets"],
                                               p["chunk_rows"], p["row_start"], p["src_rows"], p["dst_rows"],
                                               stored_elem, t.row_elems, dest, conv, 0, k)
            else:
                gap_rows = max(0, self.max_gap_bytes // max(1, t.row_bytes))
                run_rows = max(1, (256 << 10) // max(1, t.row_bytes))
                fail = self._mod.gather_rows(fds, p["offsets"], p["chunk_rows"], p["row_start"], p["src_rows"],
                                             p["dst_rows"], stored_elem, t.row_elems, dest, conv, 0, k, gap_rows,
                                             run_rows)
            if fail is not None:
                self._raise(field, t, p, fail, compressed)

    def _raise(self, field, t, p, fail, compressed):
        task, kind, msg, err = fail
        run = self.run
        sg = int(p["seg"][task])
        fi, u = int(run._seg_file[sg]), run.units[int(run._seg_unit[sg])]
        cr = int(p["chunk_rows"][task])
        c = int(p["chunk"][task] - t.cbase[sg])
        where = (f"{run.files[fi]}: /units/u{u}/{field} chunk {c} (rows {c * cr}..{c * cr + cr - 1}, "
                 f"{int(p['sizes'][task])} bytes at offset {int(p['offsets'][task])})")
        if kind == "io":
            raise OSError(err, f"{where}: {msg}", run.files[fi])
        if compressed:
            raise DamagedChunkError(f"{where} cannot be decompressed: {msg} (bitshuffle/LZ4, filter 32008)")
        raise DamagedChunkError(f"{where}: {msg}")


def split_batches(indices, batch_size, drop_last):
    """The epoch's item indices cut into batches: a list of int64 arrays."""
    indices = np.asarray(indices, dtype=np.int64)
    n = len(indices)
    nb = n // batch_size if drop_last else -(-n // batch_size)
    return [indices[k * batch_size:min(n, (k + 1) * batch_size)] for k in range(nb)]


class Stopped(Exception):
    """The pipeline was stopped while a thread waited."""


class Pipeline:
    """Reads a list of batches with `threads` threads (0: in the consumer's
    thread, when it asks), in order, at most `ahead` batches ahead.

    ``slots`` is a SlotSource: ``take()`` (blocking; raises Stopped when
    stop() was called) and ``give(slot)``. A worker takes a slot before it
    claims the next batch, so the batch the consumer waits for always gets
    one as soon as any slot is free.

    Iterating yields (k, slot, n, payload): batch k, its slot, items read. The
    consumer gives each slot back (slots.give) when it is done with it. A
    read that failed raises there, in the consumer's thread, with the
    worker's traceback attached (``__daqload_tb__``).

    With ``deliver`` (the loader subprocess) nobody iterates: the workers
    hand the batches out themselves, in order, by calling ``deliver(k, slot,
    n, exc)`` (from whichever worker finished the next batch; one at a time;
    ``exc`` set for a batch that failed, its slot already given back, and
    nothing delivered after it) and ``deliver(None, None, 0, None)`` after
    the last batch. No thread wakes another per batch.
    """

    def __init__(self, reader, batches, threads, ahead, slots, name="daqload-loader", transform=None, discard=None,
                 deliver=None):
        self.reader = reader
        self.batches = batches
        self.threads = int(threads)
        self.ahead = max(1, int(ahead))
        self.slots = slots
        self.name = name
        # ready(slot, n) -> payload, in the worker after the read (tensors, the user's transform);
        # discard(slot, payload) for batches read but never handed out (default: give the slot back).
        self.transform = transform
        self.discard = discard or (lambda slot, payload: slots.give(slot))
        self._cond = threading.Condition()
        self._next = 0  # next batch to claim
        self._deliver = 0  # next batch to hand out
        self._results = {}
        self._stop = False
        self._workers = []
        self.deliver = deliver
        self._delivering = False  # a worker is handing batches out (deliver mode)

    def start(self):
        self.reader.prepare()
        if self.deliver is not None:
            if self.threads < 1:
                raise ValueError("a Pipeline with deliver= needs threads")
            if not self.batches:
                self.deliver(None, None, 0, None)
        for i in range(self.threads):
            t = threading.Thread(target=self._work, name=f"{self.name}-{i}", daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def _read_one(self, k, slot):
        try:
            n = self.reader.read(self.batches[k], slot)
            payload = self.transform(slot, n) if self.transform is not None else None
            return (slot, n, None, payload)
        except BaseException as e:  # handed to the consumer
            e.__daqload_tb__ = traceback.format_exc()
            return (slot, 0, e, None)

    def _work(self):
        nb = len(self.batches)
        while True:
            with self._cond:
                while not self._stop and self._next < nb and self._next >= self._deliver + self.ahead:
                    self._cond.wait()
                if self._stop or self._next >= nb:
                    return
            try:
                slot = self.slots.take()
            except Stopped:
                return
            with self._cond:
                if self._stop or self._next >= nb:
                    self.slots.give(slot)
                    return
                k = self._next
                self._next += 1
            res = self._read_one(k, slot)
            with self._cond:
                if self._stop:
                    self.discard(res[0], res[3])
                    return
                self._results[k] = res
                if self.deliver is None:
                    self._cond.notify_all()
                    continue
                if self._delivering:  # the worker handing out will find this batch
                    continue
                self._delivering = True
            if not self._hand_out(nb):
                return

    def _hand_out(self, nb):
        """Deliver mode: hands out the batches read, in order, until the next one is not read yet.
        False when the iteration is over (the last batch or a failure handed out)."""
        while True:
            with self._cond:
                k = self._deliver
                if self._stop or k not in self._results:
                    self._delivering = False
                    return not self._stop
                slot, n, exc, _payload = self._results.pop(k)
                self._deliver += 1
                if exc is not None:
                    self._stop = True  # nothing after a failure; stop() joins and cleans up
                self._cond.notify_all()  # a worker may wait for the window to move (no waiter: no system call)
            if exc is not None:
                self.slots.give(slot)
                self.deliver(k, None, 0, exc)
                return False
            self.deliver(k, slot, n, None)
            if k == nb - 1:
                self.deliver(None, None, 0, None)
                with self._cond:
                    self._delivering = False
                return False

    def __iter__(self):
        nb = len(self.batches)
        while self._deliver < nb:
            k = self._deliver
            if self.threads == 0:
                res = self._read_one(k, self.slots.take())
            else:
                with self._cond:
                    while k not in self._results and not self._stop:
                        self._cond.wait()
                    if self._stop:
                        return
                    res = self._results.pop(k)
            with self._cond:
                self._deliver += 1
                self._cond.notify_all()
            slot, n, exc, payload = res
            if exc is not None:
                self.slots.give(slot)
                raise exc
            yield k, slot, n, payload

    def stop(self):
        """Stops the workers (each finishes the batch it reads), waits for
        them, gives back the slots of batches read but not handed out."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self.slots.wake()
        for t in self._workers:
            t.join()
        self._workers = []
        with self._cond:
            for slot, _, _, payload in self._results.values():
                self.discard(slot, payload)
            self._results.clear()


class SlotSource:
    """A ring of batch buffers: take() a free one, give() it back.

    ``make()`` builds a new slot; with ``grow=True`` take() never waits
    (a new slot is made when none is free, and slots beyond ``size`` are
    dropped when given back: in the training process, a trainer that keeps
    batches gets fresh memory rather than a stall). With ``grow=False``
    (the subprocess arena) take() waits for a give()."""

    def __init__(self, slots, make=None, grow=False, size=None):
        self._free = list(slots)
        self._make = make
        self._grow = grow
        self._size = len(self._free) if size is None else size
        # Re-entrant: give() may run from a finaliser in a thread inside take().
        self._cond = threading.Condition(threading.RLock())
        self._stopped = False
        self.made = len(self._free)

    def take(self):
        with self._cond:
            while not self._free:
                if self._grow:
                    self.made += 1
                    return self._make()
                if self._stopped:
                    raise Stopped()
                self._cond.wait()
            return self._free.pop()

    def give(self, slot):
        with self._cond:
            if len(self._free) < self._size:
                self._free.append(slot)
            self._cond.notify()

    def wake(self):
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def reset(self):
        with self._cond:
            self._stopped = False

    def free_count(self):
        with self._cond:
            return len(self._free)
