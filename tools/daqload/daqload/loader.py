"""daqload.Loader: batches of a daqd run as torch tensors, without
torch.utils.data.DataLoader.

    loader = daqload.Loader("runs/beam01", batch_size=256, sampler=…, fields=("raw", "frame_number"), threads=2)
    for epoch in range(10):
        loader.set_epoch(epoch)
        for batch in loader:   # {"raw": int32 [256, channels], "frame_number": int64 [256]}
            ...

What runs where (tools/daqload/README.md, "Loader"):

- In the training process (``in_subprocess=False``): ``threads`` threads
  each read whole batches (daqload._pipeline.BatchReader: one numpy planning
  step and one GIL-free native call per field) into a ring of preallocated
  batch buffers (pinned when ``pin_memory`` and CUDA); ``threads=0`` reads
  in the caller's thread when it asks for the next batch. A buffer goes back
  to the ring when no tensor of its batch is alive any more (a finaliser on
  the numpy array under the tensors' storage).
- ``in_subprocess=True``: the same pipeline runs in one child process
  (daqload._loader_child, started with the same Python, spawn-safe: nothing
  is forked), reading into an arena of batch buffers in a memfd that both
  processes map. Batches cross as a fixed 20-byte message (slot, rows; no
  pickle), sent by the child's reading thread itself; the tensors handed to
  the trainer are built on the shared pages (no copy). When the trainer
  drops a batch, its slot number goes back to the child through a pipe (one
  atomic 4-byte write, safe from any thread and from finalisers), which the
  child's reading threads drain when they take a slot: no thread of the
  child wakes per batch unless it is waiting for a slot.
  If the trainer keeps all but one slot, further batches are copied out of
  the arena (one warning) so that the child never starves. A failure in the
  child re-raises in the parent with the child's traceback; the child exits
  when the parent closes the loader, exits or dies (EOF on its sockets, and
  its parent pid checked every second).
- ``device="cuda"``: each batch is copied to the GPU on a side stream from
  the pinned buffers, one batch ahead, so the copy overlaps the trainer's
  work on the previous batch. Without CUDA, ``pin_memory``/``device`` fall
  back to plain CPU batches with one warning.

Threads: a Loader is iterated by one thread at a time; starting a new
iteration stops the previous one. close() (or del / garbage collection) stops
threads and the child and frees the arena.
"""

from __future__ import annotations

import logging
import math
import mmap
import os
import pickle
import socket
import subprocess
import sys
import threading
import warnings
import weakref
import numpy as np
import torch

from . import _loader_child as _wire
from ._errors import DaqloadError
from ._pipeline import BatchReader, FieldSpec, Pipeline, SlotSource, split_batches
from .dataset import _META_NUMPY, PSEUDO_FIELDS, RunDataset

log = logging.getLogger("daqload")

_PAGE = mmap.PAGESIZE
_TORCH_TO_NUMPY = {torch.int16: np.int16, torch.int32: np.int32, torch.float32: np.float32, torch.int64: np.int64,
                   torch.float64: np.float64, torch.float16: np.float16, torch.uint8: np.uint8, torch.int8: np.int8}


class LoaderError(DaqloadError):
    """The loader could not deliver: its subprocess died or failed to start."""


class _RemoteTraceback(Exception):
    """The traceback of an exception raised in the loader subprocess (the
    ``__cause__`` of what the parent re-raises)."""

    def __init__(self, tb):
        super().__init__(tb)
        self.tb = tb

    def __str__(self):
        return f"\n\n--- in the daqload loader subprocess ---\n{self.tb}"


def _align(n):
    return (n + _PAGE - 1) // _PAGE * _PAGE


class _Lease:
    """The tensors of one batch handed to the trainer: when the last of them
    is gone, release(slot) runs (from whichever thread dropped it).
    cancel() makes it a no-op (the slot was given back another way)."""

    __slots__ = ("left", "slot", "release", "lock", "__weakref__")

    def __init__(self, count, slot, release):
        self.left, self.slot, self.release = count, slot, release
        self.lock = threading.Lock()

    def drop(self):
        with self.lock:
            self.left -= 1
            fire = self.left == 0 and self.release is not None
            release, self.release = (self.release, None) if fire else (None, self.release)
        if release is not None:
            release(self.slot)

    def cancel(self):
        with self.lock:
            self.release = None


def _tensors(arrays, n, lease):
    """{field: tensor} on the first n entries of each slot array, each tied to the lease."""
    out = {}
    for name, a in arrays.items():
        v = a[:n]  # a new array object: the tensor's storage holds it, and only it
        f = weakref.finalize(v, lease.drop)
        f.atexit = False
        out[name] = torch.from_numpy(v)
    return out


def _specs_of(ds: RunDataset, fields):
    specs = []
    W = ds.window
    lead = (W,) if W > 1 else ()
    for f in fields:
        if f in ("raw", "calibrated"):
            tdt, _ = ds._out_dtype(f)
            specs.append(FieldSpec(f, "row", _TORCH_TO_NUMPY[tdt], lead + (ds.channels,)))
        elif f == "unit":
            specs.append(FieldSpec(f, "unit", np.int64, lead))
        else:
            specs.append(FieldSpec(f, "meta", _META_NUMPY[f], lead))
    return specs


class _CudaCopier:
    """Batches to the GPU on a side stream, from pinned host buffers."""

    def __init__(self, device):
        import collections
        self.device = torch.device(device)
        self.stream = torch.cuda.Stream(self.device)
        self.in_flight = collections.deque()

    def submit(self, batch):
        with torch.cuda.stream(self.stream):
            gpu = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            ev = torch.cuda.Event()
            ev.record(self.stream)
        return gpu, ev, batch

    def finish(self, item):
        """The GPU batch, for the current stream; the pinned CPU batch (whose buffer goes back
        to the ring when it is dropped) is kept until its copy has completed."""
        gpu, ev, cpu = item
        cur = torch.cuda.current_stream(self.device)
        cur.wait_event(ev)
        for v in gpu.values():
            v.record_stream(cur)
        self.in_flight.append((ev, cpu))
        while self.in_flight and self.in_flight[0][0].query():
            self.in_flight.popleft()
        return gpu

    def drain(self):
        for ev, _ in self.in_flight:
            ev.synchronize()
        self.in_flight.clear()


class Loader:
    """Batches of a daqd run ({field: tensor [B, ...]}), read by daqload's own
    pipeline; replaces ``torch.utils.data.DataLoader`` + ``RunDataset``.

    ``dataset_or_paths``: a RunDataset (its units, window, raw_dtype,
    skip_incomplete apply; its per-item ``transform`` must be None), a
    RunStream (batches of the live run, in arrival order), or anything
    ``open_run`` takes (then ``RunDataset(paths, fields=fields,
    **dataset_options)``).

    - ``sampler``: the item order (default: in order). A ChunkShuffleSampler
      is followed with its ranks, epochs and position: the position advances
      as batches are *handed out*, so ``sampler.state_dict()`` saved after a
      batch resumes right after it. Any other sampler is read whole at the
      start of each iteration.
    - ``fields``: default the dataset's.
    - ``threads``: reading threads (0: in the iterating thread, no read-ahead).
    - ``prefetch``: batches read ahead of the one handed out.
    - ``in_subprocess``: run the reading threads in one child process.
    - ``pin_memory``, ``device``: pinned buffers, copy to ``device`` on a side
      stream. CPU only: one warning, plain CPU batches.
    - ``transform(batch) -> batch``: runs on the reading threads (in the
      child with ``in_subprocess``: then it must be picklable and return the
      batch's own tensors or tensors of the same shapes and types, which are
      copied into the shared buffer).
    """

    def __init__(self, dataset_or_paths, *, batch_size, sampler=None, fields=None, threads=2, in_subprocess=False,
                 pin_memory=False, device=None, prefetch=2, drop_last=False, transform=None, **dataset_options):
        from .stream import RunStream

        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.threads = int(threads)
        if self.threads < 0:
            raise ValueError("threads must be >= 0")
        self.prefetch = max(1, int(prefetch))
        self.drop_last = bool(drop_last)
        self.in_subprocess = bool(in_subprocess)
        self.transform = transform
        self.sampler = sampler
        self.stream = None
        if isinstance(dataset_or_paths, RunStream):
            if sampler is not None:
                raise ValueError("a RunStream has its own order: no sampler")
            self.stream = dataset_or_paths
            self.dataset = None
            fields = tuple(self.stream.fields) if fields is None else ((fields,) if isinstance(fields, str) else tuple(fields))
            self.fields = fields
        else:
            if isinstance(dataset_or_paths, RunDataset):
                ds = dataset_or_paths
                if dataset_options:
                    raise TypeError(f"options {sorted(dataset_options)} are for a RunDataset built from paths")
            else:
                ds = RunDataset(dataset_or_paths, fields=fields if fields is not None else ("raw",), **dataset_options)
            if ds.transform is not None:
                raise ValueError("the RunDataset has a per-item transform; the Loader works on whole batches: "
                                 "pass transform= (batch -> batch) to the Loader instead")
            self.dataset = ds
            fields = ds.fields if fields is None else ((fields,) if isinstance(fields, str) else tuple(fields))
            ds.run.check_fields([f for f in fields if f not in PSEUDO_FIELDS], units=ds.units)
            if any(f in ("raw", "calibrated") for f in fields) and ds.channels is None:
                raise ValueError("per-channel fields need a dataset built with one of them")
            self.fields = fields
        if not self.fields:
            raise ValueError("no fields asked for")

        self.pin_memory = bool(pin_memory)
        self.device = None if device is None else torch.device(device)
        if self.device is not None and self.device.type == "cpu":
            self.device = None
        wants_cuda = self.pin_memory or self.device is not None
        if wants_cuda and not torch.cuda.is_available():
            what = " and ".join(x for x in (("pin_memory=True" if self.pin_memory else ""),
                                            (f"device={device!r}" if self.device is not None else "")) if x)
            warnings.warn(f"daqload.Loader: {what} but CUDA is not available: batches stay in ordinary CPU memory",
                          RuntimeWarning, stacklevel=2)
            self.pin_memory, self.device = False, None
        if self.device is not None and self.device.type == "cuda":
            self.pin_memory = True  # async copies need pinned sources
        elif self.device is not None:
            raise ValueError(f"device {device!r}: the Loader copies to CUDA devices only")

        self._specs = self._make_specs()
        self._ahead = max(self.prefetch, self.threads, 1)
        self._nslots = self._ahead + 3  # + the batch the trainer holds, the previous one, a spare
        self._active = None  # the running iteration (a generator)
        self._reader_obj = None
        self._child = None
        self._warned_copy = False
        if self.in_subprocess:
            self._child = _Child(self)
        elif self.stream is None:
            self._slots = SlotSource([self._new_slot() for _ in range(self._nslots)], make=self._new_slot, grow=True)
        self._finalizer = weakref.finalize(self, Loader._shutdown, self._child)

    # ---- description -----------------------------------------------------

    def _make_specs(self):
        if self.dataset is not None:
            return _specs_of(self.dataset, self.fields)
        from .stream import RAW_DTYPES
        s = self.stream
        specs = []
        for f in self.fields:
            if f in ("raw", "calibrated"):
                specs.append(FieldSpec(f, "row", _TORCH_TO_NUMPY[RAW_DTYPES[s.raw_dtype]] if f == "raw" else np.float32,
                                       (None,)))  # channels: from the first item
            elif f == "unit":
                specs.append(FieldSpec(f, "unit", np.int64, ()))
            else:
                specs.append(FieldSpec(f, "meta", _META_NUMPY[f], ()))
        return specs

    def _epoch_indices(self):
        """(this iteration's item indices, position of the first in the sampler's epoch)."""
        s = self.sampler
        if s is None:
            return np.arange(len(self.dataset), dtype=np.int64), None
        if hasattr(s, "indices") and hasattr(s, "_position"):
            start = int(s._position)
            return np.asarray(s.indices(), dtype=np.int64)[start:], start
        return np.fromiter(iter(s), dtype=np.int64), None

    def __len__(self):
        if self.stream is not None:
            raise TypeError("a Loader over a RunStream has no length")
        n = len(self.sampler) if self.sampler is not None else len(self.dataset)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def set_epoch(self, epoch):
        if self.sampler is not None and hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __repr__(self):
        where = "subprocess" if self.in_subprocess else "in-process"
        src = repr(self.dataset) if self.dataset is not None else repr(self.stream)
        return (f"<daqload.Loader {src}: batch {self.batch_size}, fields {list(self.fields)}, {self.threads} "
                f"thread(s) {where}, prefetch {self.prefetch}>")

    # ---- buffers -------------------------------------------------------------

    def _new_slot(self):
        out = {}
        for sp in self._specs:
            shape = (self.batch_size,) + sp.item_shape
            if self.pin_memory:
                t = torch.empty(shape, dtype=torch.from_numpy(np.zeros(0, sp.dtype)).dtype, pin_memory=True)
                out[sp.name] = t.numpy()
            else:
                out[sp.name] = np.empty(shape, dtype=sp.dtype)
        return out

    # ---- iteration -----------------------------------------------------------

    def __iter__(self):
        if self._finalizer is not None and not self._finalizer.alive:
            raise LoaderError("the Loader is closed")
        prev = self._active() if self._active is not None else None
        if prev is not None:
            prev.close()
        gen = self._iterate()
        self._active = weakref.ref(gen)
        return gen

    def _iterate(self):
        if self.device is not None:
            yield from self._to_device(self._cpu_batches())
        else:
            yield from self._cpu_batches()

    def _to_device(self, batches):
        copier = _CudaCopier(self.device)
        pending = None
        try:
            for b in batches:
                item = copier.submit(b)
                del b
                if pending is not None:
                    yield copier.finish(pending)
                pending = item
            if pending is not None:
                yield copier.finish(pending)
                pending = None
        finally:
            if pending is not None:
                pending[1].synchronize()
            copier.drain()
            batches.close()

    def _cpu_batches(self):
        if self.stream is not None:
            src = self._child.iterate(None, None) if self.in_subprocess else self._stream_batches()
            try:
                for batch, _n in src:
                    yield batch
            finally:
                src.close()
            return
        idx, start = self._epoch_indices()
        batches = split_batches(idx, self.batch_size, self.drop_last)
        sampler, epoch = self.sampler, getattr(self.sampler, "epoch", None)
        done = 0
        src = self._child.iterate(idx, batches) if self.in_subprocess else self._inprocess(batches)
        try:
            for batch, n in src:
                done += n
                if start is not None and sampler.epoch == epoch:
                    sampler._position = start + done
                yield batch
            if start is not None and sampler.epoch == epoch:
                sampler._position = 0  # epoch done: the next iteration starts the next one
        finally:
            src.close()

    def _reader(self):
        """The BatchReader of this Loader (one: its file mappings are made once)."""
        if self._reader_obj is None:
            ds = self.dataset
            self._reader_obj = BatchReader(ds.run, ds._items, ds.window, self._specs)
        return self._reader_obj

    def _inprocess(self, batches):
        slots = self._slots
        slots.reset()
        user = self.transform

        def ready(slot, n):
            lease = _Lease(len(slot), slot, slots.give)
            try:
                batch = _tensors(slot, n, lease)
                return (user(batch) if user is not None else batch), lease
            except BaseException:
                lease.cancel()  # the pipeline gives the slot back
                raise

        def discard(slot, payload):
            if payload is not None:
                payload[1].cancel()
            slots.give(slot)

        p = Pipeline(self._reader(), batches, self.threads, self._ahead, slots, transform=ready, discard=discard,
                     name="daqload-loader").start()
        try:
            for _k, _slot, n, payload in p:
                yield payload[0], n
        finally:
            p.stop()

    def _stream_batches(self):
        """A RunStream in this process: one thread follows it and fills the buffers."""
        q = _StreamFiller(self.stream, self._specs, self.batch_size, self.drop_last, self._ahead)
        try:
            for arrays, n in q:
                lease = _Lease(len(arrays), arrays, q.give)
                batch = _tensors(arrays, n, lease)
                yield (self.transform(batch) if self.transform is not None else batch), n
        finally:
            q.stop()

    # ---- subprocess --------------------------------------------------------

    def _copy_or_share(self, arrays, n, slot, release):
        """Tensors on the shared slot, or a copy when the trainer holds too many."""
        child = self._child
        if child.held + 1 > self._nslots - 1:
            if not self._warned_copy:
                self._warned_copy = True
                log.warning("daqload.Loader: the trainer holds %d batches of the %d shared buffers; while it does, "
                            "further batches are copied out of them (so that the subprocess can go on reading)",
                            child.held, self._nslots)
            out = {k: torch.from_numpy(a[:n].copy()) for k, a in arrays.items()}
            release(slot)
            return out
        child.held_inc()

        def rel(s):
            child.held_dec()
            release(s)
        return _tensors(arrays, n, _Lease(len(arrays), slot, rel))

    # ---- shutdown ------------------------------------------------------------

    def close(self):
        """Stops the running iteration, the threads and the subprocess; frees the buffers."""
        gen = self._active() if self._active is not None else None
        if gen is not None:
            try:
                gen.close()
            except ValueError:  # pragma: no cover - closed from inside its own iteration
                pass
        self._active = None
        self._finalizer()

    @staticmethod
    def _shutdown(child):
        if child is not None:
            child.shutdown()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _StreamFiller:
    """Follows a RunStream on one thread, copying its items into batch buffers
    (items come one by one from the stream: its rate is the live run's).
    Iterating yields (arrays, n); give(arrays) returns a buffer."""

    def __init__(self, stream, specs, batch_size, drop_last, ahead):
        import queue
        self.stream, self.specs, self.batch_size, self.drop_last = stream, specs, batch_size, drop_last
        self.q = queue.Queue(maxsize=ahead)
        self.stop_event = threading.Event()
        self.free = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name="daqload-stream", daemon=True)
        self.thread.start()

    def _new(self, channels):
        return {sp.name: np.empty((self.batch_size,) + ((channels,) if sp.kind == "row" else ()), dtype=sp.dtype)
                for sp in self.specs}

    def give(self, arrays):
        with self.lock:
            if len(self.free) < 8:
                self.free.append(arrays)

    def _take(self, channels):
        with self.lock:
            while self.free:
                a = self.free.pop()
                if next(iter(a.values())).shape[1:2] == (channels,) or channels is None:
                    return a
        return self._new(channels)

    def _put(self, item):
        while not self.stop_event.is_set():
            try:
                self.q.put(item, timeout=0.1)
                return True
            except Exception:  # queue.Full
                continue
        return False

    def _run(self):
        from .stream import StreamInterrupted
        s = self.stream
        s._stop_event = self.stop_event
        arrays, n = None, 0
        try:
            for item in s:
                if arrays is None:
                    ch = next((int(item[sp.name].shape[-1]) for sp in self.specs if sp.kind == "row"), None)
                    arrays = self._take(ch)
                for sp in self.specs:
                    arrays[sp.name][n] = item[sp.name].numpy()
                n += 1
                if n == self.batch_size:
                    if not self._put((arrays, n, None)):
                        return
                    arrays, n = None, 0
            if n and not self.drop_last:
                self._put((arrays, n, None))
            self._put((None, 0, None))
        except StreamInterrupted:
            return
        except BaseException as e:
            self._put((None, 0, e))
        finally:
            s._stop_event = None

    def __iter__(self):
        while True:
            arrays, n, exc = self.q.get()
            if exc is not None:
                raise exc
            if arrays is None:
                return
            yield arrays, n

    def stop(self):
        self.stop_event.set()
        self.thread.join()


class _Child:
    """The loader subprocess of one Loader: the arena, the sockets, the process.
    Used by the thread iterating the Loader; held_* and release() from any."""

    def __init__(self, loader: Loader):
        self.loader = weakref.ref(loader)  # not a strong reference: the Loader's finaliser owns this object
        self.specs = loader._specs
        self.nslots = loader._nslots
        self.batch_size = loader.batch_size
        self.held = 0
        self._held_lock = threading.Lock()
        self.proc = None
        self.wire = None
        self.mm = None
        self.rel_w = None
        self._eid = 0
        self._closed = False
        self.stream = loader.stream is not None
        if self.stream:
            # Channels of a live run: known once it has a unit; the arena is sized on the largest row field.
            ch = _stream_channels(loader.stream)
            self.specs = [FieldSpec(sp.name, sp.kind, sp.dtype, (ch,) if sp.kind == "row" else ()) for sp in self.specs]
        self.layout = []
        off = 0
        for sp in self.specs:
            self.layout.append((sp, off))
            off += _align(sp.nbytes(self.batch_size))
        self.slot_bytes = max(off, _PAGE)
        size = self.slot_bytes * self.nslots
        fd = os.memfd_create("daqload-arena", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, size)
            self.mm = mmap.mmap(fd, size)
            self.slots = [self._arrays(i) for i in range(self.nslots)]
            psock, csock = socket.socketpair()
            rel_r, rel_w = os.pipe()
            os.set_blocking(rel_w, False)
            self.rel_w = rel_w
            env = dict(os.environ)
            pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
            env["PYTHONPATH"] = pkg_parent + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
            cmd = [sys.executable, "-m", "daqload._loader_child", str(csock.fileno()), str(fd), str(rel_r)]
            try:
                self.proc = subprocess.Popen(cmd, pass_fds=(csock.fileno(), fd, rel_r), env=env,
                                             stdin=subprocess.DEVNULL, close_fds=True)
            finally:
                csock.close()
                os.close(rel_r)
            self.wire = _wire.Wire(psock)
        finally:
            os.close(fd)
        if loader.pin_memory:
            self._register_pinned()
        cfg = {
            "sys_path": list(sys.path),
            "parent_pid": os.getpid(),
            "specs": self.specs,
            "layout": [off for _, off in self.layout],
            "slot_bytes": self.slot_bytes,
            "nslots": self.nslots,
            "batch_size": self.batch_size,
            "threads": max(1, loader.threads),
            "ahead": loader._ahead,
            "log_level": logging.getLogger("daqload").getEffectiveLevel(),
        }
        try:
            payload = loader.stream if self.stream else loader._reader()
            cfg["source"] = pickle.dumps(payload)
            cfg["transform"] = pickle.dumps(loader.transform) if loader.transform is not None else None
        except Exception as e:
            self.shutdown()
            raise LoaderError(f"in_subprocess=True: the dataset or transform cannot be sent to the loader "
                              f"subprocess: {e} (a transform must be a module-level function)") from e
        try:
            self.wire.send(_wire.INIT, payload=pickle.dumps(cfg))
            kind, _eid, _a, _b, payload = self._recv(deadline_s=120)
        except BaseException:
            self.shutdown()
            raise
        if kind == _wire.ERROR:
            self.shutdown()
            self._raise_remote(payload)
        if kind != _wire.READY:  # pragma: no cover - protocol bug
            self.shutdown()
            raise LoaderError(f"loader subprocess: unexpected message {kind} at start")

    def _arrays(self, i):
        base = i * self.slot_bytes
        out = {}
        for sp, off in self.layout:
            count = int(self.batch_size * np.prod(sp.item_shape, dtype=np.int64))
            a = np.frombuffer(self.mm, dtype=sp.dtype, count=count, offset=base + off)
            out[sp.name] = a.reshape((self.batch_size,) + sp.item_shape)
        return out

    def _register_pinned(self):
        try:
            addr = np.frombuffer(self.mm, dtype=np.uint8).ctypes.data
            rc = torch.cuda.cudart().cudaHostRegister(addr, len(self.mm), 0)
            if int(getattr(rc, "value", rc)) != 0:
                log.warning("daqload.Loader: cudaHostRegister of the shared arena failed (%s): copies to the GPU "
                            "are synchronous", rc)
        except Exception as e:  # pragma: no cover - needs CUDA
            log.warning("daqload.Loader: cannot pin the shared arena: %s", e)

    def held_inc(self):
        with self._held_lock:
            self.held += 1

    def held_dec(self):
        with self._held_lock:
            self.held -= 1

    def release(self, slot):
        """Slot back to the child: one 4-byte write (atomic on a pipe), any thread, finalisers included."""
        fd = self.rel_w
        if fd is None:
            return
        try:
            os.write(fd, int(slot).to_bytes(4, "little"))
        except (BlockingIOError, BrokenPipeError, OSError):
            pass  # the child is gone (or hopelessly behind): nothing to give back to

    def _died(self, what):
        code = None
        if self.proc is not None:
            try:
                code = self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                code = None
        if code is not None and code < 0:
            import signal
            try:
                how = f"was killed by signal {signal.Signals(-code).name}"
            except ValueError:
                how = f"was killed by signal {-code}"
        elif code is not None:
            how = f"exited with status {code}"
        else:
            how = "stopped answering"
        pid = self.proc.pid if self.proc is not None else "?"
        return LoaderError(f"daqload.Loader: the loader subprocess (pid {pid}) {how} {what}")

    def _recv(self, deadline_s=None):
        """The child's next message (kind, eid, a, b, payload)."""
        try:
            return self.wire.recv(deadline_s)
        except TimeoutError:
            raise self._died(f"(no answer within {deadline_s:g} s)") from None
        except (EOFError, OSError):
            raise self._died("while the trainer waited for a batch") from None

    def _raise_remote(self, payload):
        exc_bytes, tb, text = pickle.loads(payload)
        exc = None
        if exc_bytes is not None:
            try:
                exc = pickle.loads(exc_bytes)
            except Exception:
                exc = None
        if not isinstance(exc, BaseException):
            exc = LoaderError(f"in the loader subprocess: {text}")
        raise exc from _RemoteTraceback(tb)

    def iterate(self, indices, batches):
        """(batch tensors, rows) of one iteration, in order."""
        if self._closed:
            raise LoaderError("the Loader is closed")
        self._eid += 1
        eid = self._eid
        loader = self.loader()
        try:
            if self.stream:
                self.wire.send(_wire.STREAM, eid, int(loader.drop_last))
            else:
                self.wire.send(_wire.EPOCH, eid, payload=pickle.dumps([np.asarray(b) for b in batches], protocol=5))
        except OSError:
            raise self._died("before the iteration started") from None
        finished = False
        recv, release, slots, share = self._recv, self.release, self.slots, loader._copy_or_share
        BATCH = _wire.BATCH
        try:
            while True:
                kind, msg_eid, slot, n, payload = recv()
                if msg_eid != eid:  # of an iteration stopped earlier
                    if kind == BATCH:
                        release(slot)
                    continue
                if kind == BATCH:
                    yield share(slots[slot], n, slot, release), n
                elif kind == _wire.END:
                    finished = True
                    return
                elif kind == _wire.ERROR:
                    finished = True
                    self._raise_remote(payload)
        finally:
            if not finished and not self._closed and self.proc is not None and self.proc.poll() is None:
                self._stop(eid)

    def _stop(self, eid):
        try:
            self.wire.send(_wire.STOP, eid)
            while True:
                kind, msg_eid, slot, _n, _payload = self._recv(deadline_s=60)
                if kind == _wire.BATCH:
                    self.release(slot)
                elif kind == _wire.STOPPED and msg_eid == eid:
                    return
        except (LoaderError, OSError):
            pass

    def shutdown(self):
        """Ends the child (asks, then SIGKILL after 10 s), closes sockets, frees the arena
        (the mapping itself lives on while tensors of it are alive)."""
        if self._closed:
            return
        self._closed = True
        if self.wire is not None:
            try:
                self.wire.send(_wire.EXIT)
            except OSError:
                pass
        if self.proc is not None:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.wire is not None:
            self.wire.close()
            self.wire = None
        if self.rel_w is not None:
            fd, self.rel_w = self.rel_w, None
            os.close(fd)
        if self.mm is not None:
            self.slots = []
            try:
                self.mm.close()
            except BufferError:
                pass  # batches still alive: unmapped when the last one goes
            self.mm = None


def _stream_channels(stream):
    """Channels of the run a RunStream follows (waits for its first file, up to idle_timeout)."""
    import time

    import h5py
    deadline = time.monotonic() + stream.idle_timeout
    while True:
        first = stream.target.resolve()
        if first is not None:
            try:
                with h5py.File(first[0], "r", libver="latest", swmr=True) as f:
                    chans = [int(g["raw"].shape[1]) for g in f["units"].values()
                             if isinstance(g, h5py.Group) and "raw" in g and len(g["raw"].shape) == 2]
                if chans:
                    return max(chans)
            except OSError:
                pass
        if time.monotonic() > deadline:
            raise DaqloadError(f"{stream.target.given}: no run file with a unit appeared within {stream.idle_timeout:g} s")
        time.sleep(0.05)

