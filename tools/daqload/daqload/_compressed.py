"""The compressed fast path: rows of bitshuffle/LZ4 chunks (HDF5 filter 32008).

daqd writes compressed runs (root attribute ``compression = "bslz4"``) with
every dataset of a unit group filtered by bitshuffle + LZ4, chunk by chunk.
The chunk index (_run.chunk_index) records each chunk's byte offset and stored
size; this module turns the rows a caller wants into a list of chunk tasks
(one per chunk touched: which rows of it go to which rows of the destination)
and has the native extension, ``daqload._native`` (daqload/_native.cpp, on
daqd's own codec header), pread + decompress + scatter them, from daqload's
I/O threads with the GIL released.

h5py stays the fallback (extension not built or switched off, a filter or a
chunk the fast path does not take); ``ensure_h5py_filters()`` imports
hdf5plugin then, so that h5py can decode filter 32008.
"""

from __future__ import annotations

import logging
import os

import numpy as np

log = logging.getLogger("daqload")

FILTER_BSLZ4 = 32008  # HDF5 registered filter: bitshuffle
LZ4 = 2  # cd_values[4] of filter 32008

_native = None
_native_error = None
_h5py_filters = None


def native_setting_from_env():
    """False when DAQLOAD_NATIVE switches the extension off, else None."""
    v = os.environ.get("DAQLOAD_NATIVE", "").strip().lower()
    return False if v in ("0", "false", "no", "off") else None


def native(setting=None):
    """(module, None) or (None, why the compressed fast path is not available)."""
    global _native, _native_error
    if setting is False:
        return None, "native extension switched off (native=False or DAQLOAD_NATIVE=0)"
    if _native is None and _native_error is None:
        try:
            from . import _native as m
        except ImportError as e:
            _native_error = (f"daqload._native is not built ({e}); build it with "
                             "`/usr/bin/python3 -m pip install --no-build-isolation tools/daqload` (README)")
        else:
            _native = m
    return _native, _native_error


def ensure_h5py_filters() -> None:
    """Lets h5py decode filter 32008: imports hdf5plugin once (it registers the
    bitshuffle filter with HDF5). Without it, h5py may still find a system
    HDF5 plugin (Debian's bitshuffle package) through HDF5_PLUGIN_PATH."""
    global _h5py_filters
    if _h5py_filters is None:
        try:
            import hdf5plugin  # noqa: F401
            _h5py_filters = True
        except ImportError as e:
            _h5py_filters = False
            log.warning("hdf5plugin is not installed (%s): h5py can read bitshuffle/LZ4 datasets only if an HDF5 "
                        "plugin for filter 32008 is on HDF5_PLUGIN_PATH (Debian: python3-hdf5plugin)", e)


def filter_check(dcpl, dtype) -> str | None:
    """None when a dataset's filter pipeline is exactly bitshuffle + LZ4 for its
    element size; else why not."""
    nf = dcpl.get_nfilters()
    filters = [dcpl.get_filter(i) for i in range(nf)]
    names = []
    for fid, _flags, _cd, name in filters:
        try:
            names.append(f"{name.decode(errors='replace').split(';')[0]} ({fid})")
        except Exception:  # pragma: no cover
            names.append(str(fid))
    if nf != 1 or filters[0][0] != FILTER_BSLZ4:
        return f"chunks are filtered ({', '.join(names)}); the fast path reads bitshuffle/LZ4 (32008) alone"
    cd = tuple(filters[0][2])
    if len(cd) < 5 or cd[4] != LZ4:
        return f"bitshuffle without LZ4 (cd_values {cd})"
    if cd[2] != dtype.itemsize:
        return f"bitshuffle element size {cd[2]} is not the item size {dtype.itemsize} of {dtype}"
    return None


def plan_tasks(t, seg, local, pos, seg_file):
    """Chunk tasks for rows (segment, row in segment) going to rows pos of the
    destination: a dict of int64 arrays in chunk order (rows of a chunk in
    row order), ready for _native.gather."""
    crows = t.crows[seg]
    chunk = local // crows
    cid = t.cbase[seg] + chunk
    src = local - chunk * crows
    order = np.lexsort((src, cid))
    cs = cid[order]
    starts = np.flatnonzero(np.concatenate(([True], cs[1:] != cs[:-1]))) if len(cs) else np.zeros(0, dtype=np.int64)
    tseg = seg[order][starts]
    tchunk = cs[starts]
    return {
        "chunk": tchunk,
        "seg": tseg,
        "file": seg_file[tseg],
        "offsets": t.offsets[tchunk],
        "sizes": t.sizes[tchunk],
        "chunk_rows": crows[order][starts],
        "row_start": np.append(starts, len(cs)).astype(np.int64),
        "src_rows": np.ascontiguousarray(src[order], dtype=np.int64),
        "dst_rows": np.ascontiguousarray(pos[order], dtype=np.int64),
    }


def split_tasks(p, row_bytes: int, parts: int):
    """Task ranges [a, b) of similar work for `parts` threads: per chunk, its stored
    bytes (pread) and its rows wanted (only their LZ4 blocks are decompressed, then copied)."""
    k = len(p["chunk"])
    parts = max(1, min(parts, k))
    if parts == 1:
        return [(0, k)]
    w = p["sizes"] + 2 * np.diff(p["row_start"]) * row_bytes
    cum = np.cumsum(w)
    cuts = np.searchsorted(cum, cum[-1] * np.arange(1, parts) / parts, side="left") + 1
    bounds = np.unique(np.concatenate(([0], np.clip(cuts, 0, k), [k])))
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
