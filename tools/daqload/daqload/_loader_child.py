"""The loader subprocess of daqload.Loader(in_subprocess=True).

Started by the Loader as ``python -m daqload._loader_child SOCK ARENA RELEASE``
with three inherited descriptors: a socket to the parent (messages framed by
``Wire``: a fixed 20-byte header, struct ``<IIiiI`` = kind, iteration id, two
integers, payload length, then the payload, pickled, for the few messages
that have one), the memfd holding the arena of batch slots, and the read end
of a pipe on which the parent writes the 4-byte numbers of slots the trainer
has dropped.

Messages, parent -> child: INIT (payload: the configuration), EPOCH (eid;
payload: the batches' index arrays), STREAM (eid, drop_last), STOP (eid),
EXIT. Child -> parent: READY (pid), BATCH (eid, slot, rows: the header
alone, no pickle), END (eid), STOPPED (eid), ERROR (eid; payload: pickled
exception or None, traceback, text).

Per batch nothing wakes in the child: the reading thread that finished the
next batch in order sends its BATCH message itself (daqload._pipeline's
Pipeline with ``deliver=``), and released slots are read from the pipe by
the reading threads when they take a slot (``_ReleasedSlots``; a thread
sleeps on the pipe only when no slot is free). The main thread waits on the
socket for the parent's requests. The child exits on EXIT, on EOF of the
socket (the parent closed the Loader or died; EOF of the release pipe also
stops the readers) and when its parent pid changes (checked every second),
so it never outlives the trainer. It does not import torch unless the
source is a RunStream or there is a transform.
"""

from __future__ import annotations

import logging
import mmap
import os
import pickle
import select
import socket
import struct
import sys
import threading
import traceback

# Message kinds (Wire). Parent -> child:
INIT, EPOCH, STREAM, STOP, EXIT = 1, 2, 3, 4, 5
# child -> parent:
READY, BATCH, END, STOPPED, ERROR = 11, 12, 13, 14, 15

_HDR = struct.Struct("<IIiiI")  # kind, eid, a, b, payload bytes


class Wire:
    """Framed messages on a stream socket: (kind, eid, a, b, payload bytes).
    send() from any thread; recv() from one thread at a time."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self._buf = bytearray()
        self._lock = threading.Lock()

    def fileno(self):
        return self.sock.fileno()

    def send(self, kind, eid=0, a=0, b=0, payload=b""):
        data = _HDR.pack(kind, eid, a, b, len(payload))
        with self._lock:
            if payload:
                self.sock.sendall(data + payload)
            else:
                self.sock.sendall(data)

    def buffered(self):
        """A whole message is buffered (recv() will not block)."""
        buf = self._buf
        return len(buf) >= _HDR.size and len(buf) >= _HDR.size + _HDR.unpack_from(buf)[4]

    def recv(self, timeout=None):
        """The next message; EOFError when the other side closed, TimeoutError after `timeout` s."""
        buf = self._buf
        while True:
            want = 1 << 12
            if len(buf) >= _HDR.size:
                kind, eid, a, b, plen = _HDR.unpack_from(buf)
                end = _HDR.size + plen
                if len(buf) >= end:
                    payload = bytes(buf[_HDR.size:end]) if plen else b""
                    del buf[:end]
                    return kind, eid, a, b, payload
                want = max(want, min(end - len(buf), 1 << 22))
            if timeout is not None:
                r, _, _ = select.select([self.sock], [], [], timeout)
                if not r:
                    raise TimeoutError()
            data = self.sock.recv(want)
            if not data:
                raise EOFError()
            buf += data

    def close(self):
        self.sock.close()


def _error_payload(e):
    """ERROR's payload: (pickled exception or None, traceback, text), pickled."""
    tb = getattr(e, "__daqload_tb__", None) or "".join(traceback.format_exception(type(e), e, e.__traceback__))
    try:
        exc = pickle.dumps(e)
        pickle.loads(exc)
    except Exception:
        exc = None
    return pickle.dumps((exc, tb, f"{type(e).__name__}: {e}"))


class _ReleasedSlots:
    """The arena's free slots, in the child: the parent writes the numbers of the slots the trainer
    dropped to the release pipe (non-blocking here); take() reads whatever is there and sleeps on the
    pipe only when no slot is free, so a release costs the child nothing while it has slots to read
    into. The interface of daqload._pipeline.SlotSource (take, give, wake, reset)."""

    def __init__(self, nslots, rel_fd):
        self._free = list(range(nslots))
        self._fd = rel_fd
        os.set_blocking(rel_fd, False)
        self._buf = b""
        self._lock = threading.Lock()
        self._stopped = False
        self._eof = False
        self._wake_r, self._wake_w = os.pipe()  # wake() makes threads sleeping on the release pipe return
        os.set_blocking(self._wake_r, False)

    def _drain(self):
        """Released slots into the free list (under the lock)."""
        while not self._eof:
            try:
                data = os.read(self._fd, 4096)
            except BlockingIOError:
                return
            if not data:
                self._eof = True  # the parent is gone
                return
            data = self._buf + data
            whole = len(data) // 4 * 4
            self._buf = data[whole:]
            self._free.extend(int.from_bytes(data[i:i + 4], "little") for i in range(0, whole, 4))
            if len(data) < 4096:
                return

    def take(self):
        from ._pipeline import Stopped
        while True:
            with self._lock:
                if not self._free:
                    self._drain()
                if self._free:
                    return self._free.pop()
                if self._stopped or self._eof:
                    raise Stopped()
            select.select([self._fd, self._wake_r], [], [])

    def give(self, slot):
        with self._lock:
            self._free.append(slot)

    def wake(self):
        with self._lock:
            self._stopped = True
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass

    def reset(self):
        """After wake(), once no thread uses the slots: take() waits again."""
        with self._lock:
            self._stopped = False
            try:
                while os.read(self._wake_r, 4096):
                    pass
            except BlockingIOError:
                pass

    def drain(self):
        with self._lock:
            self._drain()
            return not self._eof


class _Child:
    def __init__(self, wire, arena_fd, rel_fd, cfg):
        import numpy as np

        self.wire = wire
        self.cfg = cfg
        self.specs = cfg["specs"]
        self.bs = cfg["batch_size"]
        size = cfg["slot_bytes"] * cfg["nslots"]
        self.mm = mmap.mmap(arena_fd, size)
        os.close(arena_fd)
        self.arrays = []
        for i in range(cfg["nslots"]):
            base = i * cfg["slot_bytes"]
            slot = {}
            for sp, off in zip(self.specs, cfg["layout"]):
                count = int(self.bs * np.prod(sp.item_shape, dtype=np.int64))
                a = np.frombuffer(self.mm, dtype=sp.dtype, count=count, offset=base + off)
                slot[sp.name] = a.reshape((self.bs,) + sp.item_shape)
            self.arrays.append(slot)
        self.slots = _ReleasedSlots(cfg["nslots"], rel_fd)
        self.source = pickle.loads(cfg["source"])
        self.transform = pickle.loads(cfg["transform"]) if cfg["transform"] is not None else None
        self.current = None  # (eid, thread or None, stop function)

    def send(self, kind, eid=0, a=0, b=0, payload=b""):
        """A message to the parent; False when it is gone."""
        try:
            self.wire.send(kind, eid, a, b, payload)
            return True
        except OSError:
            return False

    def send_error(self, eid, e):
        return self.send(ERROR, eid, payload=_error_payload(e))

    # ---- batches ---------------------------------------------------------------

    def _apply_transform(self, slot, n):
        """The user's transform on the slot's tensors; results copied back into the slot."""
        import torch
        arrays = self.arrays[slot]
        batch = {k: torch.from_numpy(a[:n]) for k, a in arrays.items()}
        out = self.transform(batch)
        if out is None:
            return
        for k, v in out.items():
            if k not in batch:
                raise ValueError(f"in_subprocess=True: the transform returned field {k!r}, which is not one of the "
                                 f"batch's {list(batch)} (it may only change them in place or replace them with "
                                 "tensors of the same shape and type)")
            t = batch[k]
            if not isinstance(v, torch.Tensor) or v.shape != t.shape or v.dtype != t.dtype:
                raise ValueError(f"in_subprocess=True: the transform returned {k!r} as "
                                 f"{getattr(v, 'dtype', type(v).__name__)} {tuple(getattr(v, 'shape', ()))}; the shared "
                                 f"buffer holds {t.dtype} {tuple(t.shape)}")
            if v.data_ptr() != t.data_ptr():
                t.copy_(v)

    def _epoch(self, eid, batches):
        """Starts an epoch: its reading threads hand the batches to the parent themselves."""
        from ._pipeline import Pipeline

        arrays = self.arrays

        class _Arena:  # the reader, on slot numbers
            def __init__(s, reader):
                s.reader = reader

            def prepare(s):
                s.reader.prepare()

            def read(s, idx, slot):
                return s.reader.read(idx, arrays[slot])

        def deliver(k, slot, n, exc):
            if exc is not None:
                self.send_error(eid, exc)
            elif k is None:
                self.send(END, eid)
            else:
                self.send(BATCH, eid, slot, n)

        ready = (lambda slot, n: self._apply_transform(slot, n)) if self.transform is not None else None
        p = Pipeline(_Arena(self.source), batches, self.cfg["threads"], self.cfg["ahead"], self.slots,
                     transform=ready, name="daqload-child", deliver=deliver)
        self.current = (eid, None, p.stop)
        try:
            p.start()
        except BaseException as e:
            p.stop()
            self.send_error(eid, e)

    def _stream(self, eid, drop_last):
        from .stream import StreamInterrupted
        stop_event = threading.Event()
        stream = self.source

        def run():
            slot, n = None, 0
            stream._stop_event = stop_event
            try:
                for item in stream:
                    if slot is None:
                        from ._pipeline import Stopped
                        try:
                            slot = self.slots.take()
                        except Stopped:
                            return
                    arrays = self.arrays[slot]
                    for sp in self.specs:
                        v = item[sp.name].numpy()
                        if sp.kind == "row" and v.shape[-1] != arrays[sp.name].shape[-1]:
                            raise ValueError(f"unit with {v.shape[-1]} channels; the loader's buffers hold "
                                             f"{arrays[sp.name].shape[-1]} (pick units of one size with unit=)")
                        arrays[sp.name][n] = v
                    n += 1
                    if n == self.bs:
                        if self.transform is not None:
                            self._apply_transform(slot, n)
                        self.send(BATCH, eid, slot, n)
                        slot, n = None, 0
                if n and not drop_last:
                    if self.transform is not None:
                        self._apply_transform(slot, n)
                    self.send(BATCH, eid, slot, n)
                elif slot is not None:
                    self.slots.give(slot)
                self.send(END, eid)
            except StreamInterrupted:
                if slot is not None:
                    self.slots.give(slot)
            except BaseException as e:
                self.send_error(eid, e)
            finally:
                stream._stop_event = None

        def stop():
            stop_event.set()
            self.slots.wake()
        t = threading.Thread(target=run, name="daqload-child-stream", daemon=True)
        self.current = (eid, t, stop)
        t.start()

    def _stop_current(self):
        if self.current is not None:
            _eid, t, stop = self.current
            stop()
            if t is not None:
                t.join()
            self.current = None

    # ---- main loop -------------------------------------------------------------

    def loop(self, parent_pid):
        while True:
            if not self.wire.buffered():
                r, _, _ = select.select([self.wire], [], [], 1.0)
                if os.getppid() != parent_pid:
                    return
                if not r:
                    continue
            try:
                kind, eid, a, _b, payload = self.wire.recv()
            except (EOFError, OSError):
                return
            if kind in (EPOCH, STREAM):
                self._stop_current()
                self.slots.reset()
                self.slots.drain()
                if kind == EPOCH:
                    self._epoch(eid, pickle.loads(payload))
                else:
                    self._stream(eid, bool(a))
            elif kind == STOP:
                if self.current is not None and self.current[0] == eid:
                    self._stop_current()
                self.send(STOPPED, eid)
            elif kind == EXIT:
                return


def main(argv):
    sock_fd, arena_fd, rel_fd = (int(x) for x in argv[1:4])
    wire = Wire(socket.socket(fileno=sock_fd))
    try:
        kind, _eid, _a, _b, payload = wire.recv()
        cfg = pickle.loads(payload)
    except (EOFError, OSError):
        return 1
    for p in reversed(cfg["sys_path"]):
        if p not in sys.path:
            sys.path.insert(0, p)
    logging.basicConfig(level=cfg["log_level"], format="%(levelname)s %(name)s (loader subprocess): %(message)s")
    try:
        child = _Child(wire, arena_fd, rel_fd, cfg)
    except BaseException as e:
        try:
            wire.send(ERROR, 0, payload=_error_payload(e))
        except OSError:
            pass
        return 1
    child.send(READY, 0, os.getpid())
    try:
        child.loop(cfg["parent_pid"])
    finally:
        try:
            child._stop_current()
        except BaseException:
            pass
    return 0


if __name__ == "__main__":
    rc = main(sys.argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)  # reading threads are stopped; do not wait for anything else at interpreter exit
