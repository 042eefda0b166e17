"""The fast read path: rows of uncompressed chunks read with preadv(2).

The caller gives, for every row it wants, the file it is in, the byte offset
of the row in that file (from the chunk index) and the row of the destination
buffer it goes to. This module

1. sorts the rows by (file, offset) and drops duplicates (copied afterwards),
2. cuts them into segments of nearby rows of one file (gaps of at most
   ``max_gap_bytes`` are read into a scratch area rather than costing another
   system call),
3. builds the scatter list (``struct iovec``) of every segment with numpy, so
   the cost in Python is per segment, not per row,
4. issues one ``preadv`` per segment from a few threads (the GIL is released
   while the kernel copies), straight into the destination rows.

``preadv`` is called through ctypes (which releases the GIL); where libc cannot
be loaded, ``os.preadv`` with one memoryview per row is used instead.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os

import numpy as np

_IOV = np.dtype([("base", "<u8"), ("len", "<u8")])
_IOV_MAX = 1024  # Linux UIO_MAXIOV
_MAX_SEGMENT_BYTES = 256 << 20  # well below the kernel's ~2 GiB per call

try:
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    _preadv = _libc.preadv
    _preadv.restype = ctypes.c_ssize_t
    _preadv.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int64]
except (OSError, AttributeError):  # pragma: no cover - not on glibc/musl Linux
    _preadv = None

PREADV_BACKEND = "ctypes preadv" if _preadv is not None else "os.preadv"


class ScatterPlan:
    """The system calls that read one set of rows: segments of iovecs."""

    __slots__ = ("iov", "seg_file", "seg_offset", "seg_first", "seg_count", "seg_bytes", "seg_pos_end", "dup_dst",
                 "dup_src", "zero_pos")

    def total_bytes(self) -> int:
        return int(self.seg_bytes.sum()) if len(self.seg_bytes) else 0


_FILE_SHIFT = 46  # sort key: file id above the byte offset (files up to 64 TiB)


def plan(file_ids, offsets, positions, row_bytes: int, dest_addr: int, trash_addr: int, max_gap_bytes: int) -> ScatterPlan:
    """Builds the segments for reading rows.

    file_ids, offsets, positions: int64 arrays, one entry per wanted row;
    offset -1 means "no stored chunk: the row is zeros". Row k goes to
    ``dest_addr + positions[k] * row_bytes``.
    """
    p = ScatterPlan()
    file_ids = np.asarray(file_ids, dtype=np.int64)
    offsets = np.asarray(offsets, dtype=np.int64)
    positions = np.asarray(positions, dtype=np.int64)
    zero = offsets < 0
    if zero.any():
        p.zero_pos = positions[zero]
        keep = ~zero
        file_ids, offsets, positions = file_ids[keep], offsets[keep], positions[keep]
    else:
        p.zero_pos = positions[:0]
    key = (file_ids << _FILE_SHIFT) | offsets
    order = np.argsort(key)
    k, q = key[order], positions[order]
    d = np.diff(k)
    dup = d == 0
    if dup.any():
        first = np.concatenate(([True], ~dup))
        group = np.cumsum(first) - 1
        first_pos = q[first]
        p.dup_dst = q[~first]
        p.dup_src = first_pos[group[~first]]
        k, q = k[first], q[first]
        d = np.diff(k)
    else:
        p.dup_dst = p.dup_src = q[:0]
    n = len(k)
    if n == 0:
        p.iov = np.zeros(0, dtype=_IOV)
        empty = np.zeros(0, dtype=np.int64)
        p.seg_file = p.seg_offset = p.seg_first = p.seg_count = p.seg_bytes = p.seg_pos_end = empty
        return p

    gap = d - row_bytes  # bytes between two rows; huge across files
    brk = (gap < 0) | (gap > max_gap_bytes)
    # Bound the rows per segment: at most ~2 iovecs per row, IOV_MAX per call.
    max_rows = max(1, min(_IOV_MAX // 2 - 1, _MAX_SEGMENT_BYTES // max(1, row_bytes)))
    if n > max_rows:
        seg_id = np.concatenate(([0], np.cumsum(brk)))
        starts = np.flatnonzero(np.concatenate(([True], brk)))
        rel = np.arange(n) - starts[seg_id]
        brk = brk | ((rel[1:] % max_rows) == 0)
    isbrk = np.concatenate(([True], brk))
    seg_start_rows = np.flatnonzero(isbrk)
    nseg = len(seg_start_rows)
    seg_id = np.cumsum(isbrk) - 1
    hole = np.concatenate(([False], (gap > 0) & ~brk))
    dest = (dest_addr + q * row_bytes).astype(np.uint64)
    if hole.any():
        entry = np.arange(n) + np.cumsum(hole)
        total = n + int(np.count_nonzero(hole))
        base = np.empty(total, dtype=np.uint64)
        length = np.empty(total, dtype=np.uint64)
        is_trash = np.zeros(total, dtype=bool)
        eseg = np.empty(total, dtype=np.int64)
        base[entry] = dest
        length[entry] = row_bytes
        eseg[entry] = seg_id
        he = entry[hole] - 1
        base[he] = trash_addr
        length[he] = gap[hole[1:]].astype(np.uint64)
        is_trash[he] = True
        eseg[he] = seg_id[hole]
        m = (base[1:] == base[:-1] + length[:-1]) & (eseg[1:] == eseg[:-1]) & ~is_trash[1:] & ~is_trash[:-1]
    else:
        base, eseg = dest, seg_id
        length = np.full(n, row_bytes, dtype=np.uint64)
        m = (dest[1:] == dest[:-1] + row_bytes) & ~brk
    # Merge neighbouring entries whose destinations are contiguous too
    # (sequential reads become one entry per segment).
    if m.any():
        starts = np.flatnonzero(np.concatenate(([True], ~m)))
        base = base[starts]
        length = np.add.reduceat(length, starts)
        eseg = eseg[starts]
    iov = np.empty(len(base), dtype=_IOV)
    iov["base"] = base
    iov["len"] = length
    p.iov = iov
    p.seg_first = np.searchsorted(eseg, np.arange(nseg))
    p.seg_count = np.diff(np.append(p.seg_first, len(base)))
    ks = k[seg_start_rows]
    p.seg_file = ks >> _FILE_SHIFT
    p.seg_offset = ks & ((1 << _FILE_SHIFT) - 1)
    seg_end_rows = np.append(seg_start_rows[1:], n) - 1
    p.seg_bytes = (k[seg_end_rows] - ks) + row_bytes
    p.seg_pos_end = q[seg_end_rows] + 1  # with positions in file order: segment s fills rows [end[s-1], end[s])
    return p


def _read_segment_fallback(fd, iov, offset, path):
    """Slow path: os.preadv with memoryviews (no ctypes), also used for short reads."""
    views = []
    for b, ln in zip(iov["base"].tolist(), iov["len"].tolist()):
        views.append((ctypes.c_char * ln).from_address(b))
    done = 0
    want = int(iov["len"].sum())
    while done < want:
        # Skip what was read already.
        bufs, skip = [], done
        for v in views:
            if skip >= len(v):
                skip -= len(v)
                continue
            bufs.append(memoryview(v).cast("B")[skip:])
            skip = 0
        try:
            got = os.preadv(fd, bufs[:_IOV_MAX], offset + done)
        except InterruptedError:
            continue
        if got == 0:
            raise OSError(errno.EIO, f"unexpected end of file reading {want} bytes at offset {offset}", path)
        done += got


def run_segments(p: ScatterPlan, lo: int, hi: int, fds, paths, after=None, block_bytes=256 << 10) -> None:
    """Reads segments lo..hi-1 of a plan. fds/paths: indexable by file id.
    after(s): called after segment s whenever about block_bytes were read
    since the last call, and after the last one (to use the rows while they
    are still in the CPU cache)."""
    iov = p.iov
    if hi <= lo:
        return
    iov_addr = iov.ctypes.data
    files = p.seg_file[lo:hi].tolist()
    firsts = p.seg_first[lo:hi].tolist()
    counts = p.seg_count[lo:hi].tolist()
    offsets = p.seg_offset[lo:hi].tolist()
    wants = p.seg_bytes[lo:hi].tolist()
    preadv = _preadv
    pending = 0
    for s, (fid, first, count, off, want) in enumerate(zip(files, firsts, counts, offsets, wants), lo):
        fd = fds[fid]
        if preadv is None:
            _read_segment_fallback(fd, iov[first:first + count], off, paths[fid])
            continue
        while True:
            got = preadv(fd, iov_addr + first * 16, count, off)
            if got >= 0:
                break
            e = ctypes.get_errno()
            if e != errno.EINTR:
                raise OSError(e, f"preadv of {want} bytes at offset {off} failed: {os.strerror(e)}", paths[fid])
        if got != want:  # short read (file truncated under us?): finish the slow way
            if got == 0:
                raise OSError(errno.EIO, f"unexpected end of file reading {want} bytes at offset {off}", paths[fid])
            _finish_short(fd, iov[first:first + count], off, got, paths[fid])
        if after is not None:
            pending += want
            if pending >= block_bytes or s == hi - 1:
                after(s)
                pending = 0


def _finish_short(fd, sub, off, got, path):
    lens = sub["len"].astype(np.int64)
    ends = np.cumsum(lens)
    k = int(np.searchsorted(ends, got, side="right"))
    if k >= len(sub):
        return
    rest = sub[k:].copy()
    before = int(ends[k - 1]) if k > 0 else 0
    skip = got - before
    rest["base"][0] += skip
    rest["len"][0] -= skip
    _read_segment_fallback(fd, rest, off + got, path)


def split_segments(p: ScatterPlan, parts: int):
    """Cuts the segments of a plan into at most `parts` ranges of similar byte count."""
    nseg = len(p.seg_bytes)
    if nseg == 0:
        return []
    parts = max(1, min(parts, nseg))
    if parts == 1:
        return [(0, nseg)]
    cum = np.cumsum(p.seg_bytes)
    cuts = np.searchsorted(cum, cum[-1] * np.arange(1, parts) / parts, side="left") + 1
    bounds = np.unique(np.concatenate(([0], np.clip(cuts, 0, nseg), [nseg])))
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def finish(p: ScatterPlan, dest2d: np.ndarray) -> None:
    """After the reads: zero rows without stored chunk, copy duplicated rows."""
    if len(p.zero_pos):
        dest2d[p.zero_pos] = 0
    if len(p.dup_dst):
        dest2d[p.dup_dst] = dest2d[p.dup_src]
