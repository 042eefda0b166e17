"""The live stream of a daqd server (docs/STREAM.md): ZeroMQ PULL of every
stored chunk, SUB of run messages; ``StreamDataset`` yields the same items as
``RunDataset``.

    ds = daqload.StreamDataset("tcp://daq01:5555", fields=("raw", "frame_number"))
    for batch in torch.utils.data.DataLoader(ds, batch_size=64):
        ...

Needs pyzmq (Debian: python3-zmq). Compressed chunks (bitshuffle + LZ4) are
decoded by ``daqload._native`` (the GIL released), else by hdf5plugin's
bitshuffle codec.
"""

from __future__ import annotations

import json
import logging
import time

import numpy as np

log = logging.getLogger("daqload")

FORMAT_NAME = "daqd-stream"
SUPPORTED_VERSIONS = (1,)
META_FIELDS = ("frame_number", "timestamp_ns", "missing_packets")


class StreamError(RuntimeError):
    """A message that does not follow docs/STREAM.md."""


def publish_endpoint(endpoint: str) -> str:
    """The PUB endpoint daqd uses when stream.publish is not set: the port + 1
    (ipc: the path + '.pub')."""
    if endpoint.startswith("ipc://"):
        return endpoint + ".pub"
    head, _, port = endpoint.rpartition(":")
    if not endpoint.startswith("tcp://") or not port.isdigit():
        raise ValueError(f"cannot derive the publish endpoint of {endpoint!r}: pass publish=")
    return f"{head}:{int(port) + 1}"


def _decompress(part, elem_size: int) -> bytes:
    try:
        from . import _native
    except ImportError:
        _native = None
    if _native is not None:
        return _native.decompress(part, elem_size)
    # hdf5plugin's bitshuffle filter, through an in-memory HDF5 chunk is heavy:
    # the bitshuffle module (Debian: bitshuffle) when present.
    import bitshuffle  # noqa: F401  (holds the GIL)
    buf = np.frombuffer(part, dtype=np.uint8)
    total = int.from_bytes(bytes(buf[:8]), "big")
    block = int.from_bytes(bytes(buf[8:12]), "big") // elem_size
    out = bitshuffle.decompress_lz4(buf[12:], (total // elem_size,), np.dtype(f"u{elem_size}"), block)
    return out.tobytes()


def decode_chunk(parts) -> dict:
    """A chunk message (list of frames/bytes) → dict: the header's fields, and
    ``frame_number``/``timestamp_ns``/``missing_packets`` (numpy, one per new
    frame) and ``arrays``: {name: numpy [frames, channels]} of the new rows."""
    if len(parts) < 1:
        raise StreamError("empty message")
    try:
        h = json.loads(bytes(parts[0]))
    except ValueError as e:
        raise StreamError(f"chunk header is not JSON: {e}") from None
    if h.get("format") != FORMAT_NAME or h.get("version") not in SUPPORTED_VERSIONS:
        raise StreamError(f"not a {FORMAT_NAME} v{SUPPORTED_VERSIONS} message: {h.get('format')!r} "
                          f"v{h.get('version')!r}")
    n = int(h["frames"])
    out = dict(h)
    out["frame_number"] = np.asarray(h["frame_number"], dtype=np.uint64)
    out["timestamp_ns"] = np.asarray(h["timestamp_ns"], dtype=np.uint64)
    out["missing_packets"] = np.asarray(h["missing_packets"], dtype=np.uint16)
    specs = h.get("arrays", [])
    if len(parts) != 1 + len(specs):
        raise StreamError(f"chunk {h.get('seq')}: {len(parts) - 1} array parts for {len(specs)} arrays")
    arrays = {}
    for spec, part in zip(specs, parts[1:]):
        dt = np.dtype(spec["dtype"])
        rows, channels = spec["shape"]
        data = _decompress(part, dt.itemsize) if h["compression"] == "bslz4" else part
        a = np.frombuffer(data, dtype=dt)
        if a.size != rows * channels:
            raise StreamError(f"chunk {h.get('seq')}: {spec['name']} holds {a.size} values, shape says {rows}x{channels}")
        first = int(spec["first_row"])
        arrays[spec["name"]] = a.reshape(rows, channels)[first:first + n]
    out["arrays"] = arrays
    return out


class StreamClient:
    """PULL from one or more daqd stream endpoints and SUB to their run
    messages. ``recv(timeout)`` → ("chunk", dict) | ("run_start", dict) |
    ("run_end", dict) | ("preview", dict, numpy) | None on timeout.

    CURVE (a daqd off loopback): ``server_key`` = daqd's public key (Z85),
    ``keypair`` = (public, secret) of this client (zmq.curve_keypair())."""

    def __init__(self, endpoints, *, publish=None, server_key=None, keypair=None, rcvhwm=64, previews=False,
                 context=None):
        import zmq
        self._zmq = zmq
        if isinstance(endpoints, str):
            endpoints = [endpoints]
        self.endpoints = list(endpoints)
        if publish is None:
            publish = [publish_endpoint(e) for e in self.endpoints]
        elif isinstance(publish, str):
            publish = [publish]
        self.publish = list(publish)
        self._own_ctx = context is None
        self.ctx = context or zmq.Context()
        self.pull = self.ctx.socket(zmq.PULL)
        self.sub = self.ctx.socket(zmq.SUB)
        for s in (self.pull, self.sub):
            s.setsockopt(zmq.LINGER, 0)
            if server_key is not None:
                if keypair is None:
                    keypair = zmq.curve_keypair()
                s.curve_serverkey = server_key.encode() if isinstance(server_key, str) else server_key
                s.curve_publickey = keypair[0]
                s.curve_secretkey = keypair[1]
        self.pull.setsockopt(zmq.RCVHWM, rcvhwm)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"run ")
        if previews:
            self.sub.setsockopt(zmq.SUBSCRIBE, b"preview ")
        for e in self.publish:
            self.sub.connect(e)
        for e in self.endpoints:
            self.pull.connect(e)
        self.poller = zmq.Poller()
        self.poller.register(self.sub, zmq.POLLIN)
        self.poller.register(self.pull, zmq.POLLIN)

    def recv(self, timeout: float | None = None):
        zmq = self._zmq
        # Run messages first: a run's start is handled before its chunks.
        ready = dict(self.poller.poll(None if timeout is None else int(timeout * 1000)))
        if not ready:
            return None
        if self.sub in ready:
            msg = self.sub.recv(zmq.NOBLOCK, copy=True)
            return self._pub_message(msg)
        parts = self.pull.recv_multipart(zmq.NOBLOCK, copy=False)
        return "chunk", decode_chunk([p.buffer for p in parts])

    @staticmethod
    def _pub_message(msg: bytes):
        if msg.startswith(b"run "):
            j = json.loads(msg[4:])
            return j.get("type", "run"), j
        if msg.startswith(b"preview "):
            head, _, payload = msg.partition(b"\n")
            j = json.loads(head.split(b" ", 2)[2])
            return "preview", j, np.frombuffer(payload, dtype=np.dtype(j["dtype"]))
        raise StreamError(f"unknown message on the PUB socket: {msg[:40]!r}")

    def close(self):
        self.pull.close(0)
        self.sub.close(0)
        if self._own_ctx:
            self.ctx.term()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _torch_dataset_base():
    from torch.utils.data import IterableDataset
    return IterableDataset


class StreamDataset(_torch_dataset_base()):
    """An IterableDataset of the frames a daqd server streams (docs/STREAM.md):
    items are the dicts of tensors ``RunDataset`` gives (``raw`` widened to
    int32 by default, ``calibrated`` float32, ``frame_number``/``timestamp_ns``
    int64, ``missing_packets`` int32, ``unit`` int64).

    It follows one run: ``run`` by name, or the first one whose messages
    arrive, and ends after that run's end-of-run message, once no chunk has
    come for ``drain_timeout`` seconds (chunks still in flight from daqd
    arrive first; several consumers share the chunks, so none can know how
    many are its own). With a single consumer it ends as soon as every chunk
    the end message counts is in (``exact=True``, the default for one
    process). ``start_timeout``: raise TimeoutError if no run begins within
    that many seconds (None: wait forever).

    With several ranks (torch.distributed) or DataLoader workers each
    iterator connects its own PULL socket: daqd's PUSH hands each chunk to
    one of them. ``stats`` (per iterator) counts chunks, frames and sequence
    numbers received, and holds the end-of-run message."""

    def __init__(self, endpoints, *, fields=("raw",), raw_dtype="int32", run=None, publish=None, server_key=None,
                 keypair=None, drain_timeout=0.5, start_timeout=None, exact=None, unit=None):
        super().__init__()
        self.endpoints = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        self.fields = (fields,) if isinstance(fields, str) else tuple(fields)
        if raw_dtype not in ("int32", "int16", "float32"):
            raise ValueError(f"raw_dtype must be 'int32', 'int16' or 'float32', got {raw_dtype!r}")
        self.raw_dtype = raw_dtype
        self.run = run
        self.publish = publish
        self.server_key = server_key
        self.keypair = keypair
        self.drain_timeout = float(drain_timeout)
        self.start_timeout = start_timeout
        self.exact = exact
        self.units = None if unit is None else ({unit} if isinstance(unit, int) else set(unit))
        self.stats = {}

    def _convert(self, name, a):
        import torch
        if a.dtype == np.uint16:
            if self.raw_dtype == "int16":
                return torch.from_numpy(a.view(np.int16).copy())
            return torch.from_numpy(a.astype(np.int32 if self.raw_dtype == "int32" else np.float32))
        return torch.from_numpy(np.array(a))

    def chunks(self):
        """The run's decoded chunks (dicts as decode_chunk), in arrival order."""
        from torch.utils.data import get_worker_info
        exact = self.exact
        if exact is None:
            import torch.distributed as dist
            multi = (get_worker_info() is not None and get_worker_info().num_workers > 1) or (
                dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1)
            exact = not multi
        stats = self.stats = {"chunks": 0, "frames": 0, "seqs": set(), "run": self.run, "end": None, "start": None}
        run = self.run
        t0 = time.monotonic()
        with StreamClient(self.endpoints, publish=self.publish, server_key=self.server_key,
                          keypair=self.keypair) as client:
            end = None
            while True:
                if end is None:
                    timeout = 0.2
                else:
                    if exact and end.get("chunks") is not None:
                        if len(stats["seqs"]) + end.get("chunks_dropped", 0) >= end["chunks"]:
                            return
                    timeout = self.drain_timeout
                m = client.recv(timeout)
                if m is None:
                    if end is not None:
                        return  # nothing more in flight
                    if run is None and self.start_timeout is not None and time.monotonic() - t0 > self.start_timeout:
                        raise TimeoutError(f"no run streamed from {self.endpoints} within {self.start_timeout} s")
                    continue
                kind = m[0]
                if kind == "run_start":
                    if run is None:
                        run = stats["run"] = m[1]["run"]
                    if m[1]["run"] == run and stats["start"] is None:
                        stats["start"] = m[1]
                elif kind == "run_end":
                    if run is not None and m[1]["run"] == run:
                        end = stats["end"] = m[1]
                elif kind == "chunk":
                    c = m[1]
                    if run is None:
                        run = stats["run"] = c["run"]
                    if c["run"] != run:
                        continue
                    stats["chunks"] += 1
                    stats["frames"] += c["frames"]
                    stats["seqs"].add(c["seq"])
                    if self.units is not None and c["unit"] not in self.units:
                        continue
                    yield c

    def __iter__(self):
        import torch
        for c in self.chunks():
            n = c["frames"]
            cols = {}
            for f in self.fields:
                if f in c["arrays"]:
                    cols[f] = self._convert(f, c["arrays"][f])
                elif f == "frame_number" or f == "timestamp_ns":
                    cols[f] = torch.from_numpy(c[f].astype(np.int64))
                elif f == "missing_packets":
                    cols[f] = torch.from_numpy(c[f].astype(np.int32))
                elif f == "unit":
                    cols[f] = torch.full((n,), c["unit"], dtype=torch.int64)
                else:
                    from ._errors import MissingFieldError
                    raise MissingFieldError(f"field {f!r} is not in the stream of run {c['run']!r} "
                                            f"(arrays: {sorted(c['arrays'])})")
            for i in range(n):
                yield {f: t[i] for f, t in cols.items()}
