"""Compressed runs (bitshuffle + LZ4, HDF5 filter 32008) written by daqd
(storage.compression = "bslz4"): daqload's fast path (pread + daqload._native)
returns what the same traffic recorded uncompressed returns and what h5py +
hdf5plugin reads, sample for sample; damaged chunks are clear errors; h5py +
hdf5plugin is the fallback."""

import logging
import os
import shutil
import subprocess
import sys
import threading
import time

import h5py
import hdf5plugin
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import daqload
from conftest import CHANNELS, DAQLOAD_DIR, h5py_unit, write_run_file
from daqload.capture import recompress_run

FIELDS = ("raw", "frame_number", "timestamp_ns", "missing_packets")
ALL = ("raw", "calibrated", "frame_number", "timestamp_ns", "missing_packets")
# What the same traffic recorded twice holds alike (timestamp_ns is the time of arrival).
SAME = ("raw", "calibrated", "frame_number", "missing_packets")
BSLZ4 = dict(compression=hdf5plugin.Bitshuffle(nelems=0, cname="lz4"))


def _fields(run):
    """The fields of ALL a run has (daqd writes calibrated with the calibrate stage)."""
    return [f for f in ALL if f in run.fields(run.units[0])]


def _datasets(path):
    """The per-frame datasets of a file's unit groups (u<id>/<field>; the calibration constants stay raw)."""
    with h5py.File(path, "r") as f:
        return [f"{u}/{k}" for u in f["units"] for k in ALL if k in f["units"][u]]


def test_compressed_files_are_stored_as_daqd_stores_them(any_pair):
    """The fixtures: filter 32008 with cd_values (0, 3, item size, 0, 2) on every
    dataset, the chunks of the uncompressed run, every chunk filtered (mask 0)."""
    files, plain = any_pair
    with h5py.File(plain[0], "r") as p:
        attrs = set(p.attrs)
        chunks = {name: p["units"][name].chunks for name in _datasets(plain[0])}
        assert "compression" not in attrs
    for cp in files:
        with h5py.File(cp, "r") as c:
            assert c.attrs["compression"] == "bslz4" and set(c.attrs) - {"compression"} == attrs
            names = _datasets(cp)
            assert sorted(names) == sorted(chunks) and len(names) >= 8  # 2 units x 4 or 5 fields
            for name in names:
                d = c["units"][name]
                assert d.chunks == chunks[name], name
                dcpl = d.id.get_create_plist()
                assert dcpl.get_nfilters() == 1
                fid, _flags, cd, _ = dcpl.get_filter(0)
                assert (fid, tuple(cd)) == (32008, (0, 3, d.dtype.itemsize, 0, 2)), name
                n = d.id.get_num_chunks()
                assert n == -(-d.shape[0] // d.chunks[0])
                infos = [d.id.get_chunk_info(i) for i in range(n)]
                assert all(i.filter_mask == 0 for i in infos), name
                if name.endswith("raw"):
                    assert sum(i.size for i in infos) < d.nbytes / 4, name  # the test pattern shrinks


def test_every_field_reads_like_the_uncompressed_run_and_h5py(any_pair, native, caplog):
    files, plain = any_pair
    with caplog.at_level(logging.INFO, logger="daqload"):
        run = daqload.open_run(files)
        run.log_read_path("raw")
    assert "raw read with pread + bitshuffle/LZ4 decompression in daqload._native" in caplog.text
    ref = daqload.open_run(plain)
    ALL = _fields(run)  # noqa: N806 - calibrated where the run has it
    SAME = [f for f in ALL if f != "timestamp_ns"]  # noqa: N806
    for f in ALL:
        assert run.read_path(f) == "pread+bslz4", (f, run.read_path_reasons(f))
        assert ref.read_path(f) == "pread"
    assert run.frame_counts == ref.frame_counts
    for u in run.units:
        h5 = {f: h5py_unit(files, u, f) for f in ALL}  # h5py + hdf5plugin
        n = run.frame_count(u)
        with h5py.File(files[0], "r") as f:
            crows = f[f"units/u{u}/raw"].chunks[0]
        ends = np.cumsum([len(h5py_unit([p], u, "frame_number")) for p in files])  # where the next file starts
        before = int(ends[-2]) if len(ends) > 1 else 0
        last0 = before + ((n - before) // crows) * crows  # first row of the run's last chunk
        assert 0 < n - last0 < crows  # a partial one
        ranges = [(0, n), (0, 1), (n - 1, n), (crows, crows + 1), (crows - 1, crows + 1),  # single rows, a boundary
                  (crows - 3, 3 * crows + 5), (5, 37), (last0 - 2, n), (last0, n), (n - 300, n - 7)]
        ranges += [(int(e) - 3, int(e) + 2) for e in ends[:-1]]  # across files
        for start, stop in ranges:
            got = run.read(u, start, stop, fields=ALL)
            want = ref.read(u, start, stop, fields=SAME)
            for f in ALL:
                assert got[f].dtype == h5[f].dtype, f
                np.testing.assert_array_equal(got[f], h5[f][start:stop], err_msg=f"unit {u} {f} [{start}:{stop}]")
                if f in SAME:
                    np.testing.assert_array_equal(got[f], want[f], err_msg=f"unit {u} {f} [{start}:{stop}]")
    assert sum(int((h5py_unit(files, u, "missing_packets") > 0).sum()) for u in run.units) > 0 or len(files) == 1


@pytest.mark.parametrize("raw_dtype", ["int32", "int16", "float32"])
@pytest.mark.parametrize("io_threads", [1, 2])
def test_random_index_sets_equal_the_uncompressed_run(any_pair, native, raw_dtype, io_threads):
    files, plain = any_pair
    fields = tuple(f for f in SAME if f in _fields(daqload.open_run(files))) + ("unit",)
    ds = daqload.RunDataset(files, fields=fields, raw_dtype=raw_dtype, io_threads=io_threads)
    ref = daqload.RunDataset(plain, fields=fields, raw_dtype=raw_dtype)
    assert ds.read_path == "pread+bslz4" and ref.read_path == "pread" and len(ds) == len(ref)
    rng = np.random.default_rng(5)
    n0 = ds.run.frame_count(0)
    for idx in (rng.permutation(len(ds))[:500],                   # scattered rows
                rng.integers(0, len(ds), 2000),                     # with repeats
                np.array([n0 - 1, n0, 0, len(ds) - 1, 7, 7, 6]),    # unit boundary, ends, duplicates
                np.arange(len(ds)),                                 # every row, whole chunks
                np.arange(len(ds))[::-1].copy()):                   # every row, backwards
        a, b = ds.get_batch(idx), ref.get_batch(idx)
        for f in fields:
            assert a[f].dtype == b[f].dtype and torch.equal(a[f], b[f]), f
    ts = daqload.RunDataset(files, fields=("timestamp_ns", "unit"), native=True)
    b = ts.get_batch(np.arange(len(ts)))
    want = np.concatenate([h5py_unit(files, u, "timestamp_ns") for u in ts.run.units])
    np.testing.assert_array_equal(b["timestamp_ns"].numpy(), want.astype(np.int64))


def test_odd_shapes_calibrated_and_unallocated_chunks(tmp_path, native):
    """103 channels in chunks of 45 rows: rows straddle LZ4 blocks, chunks end in
    elements stored as they are (n % 8); float32 calibrated; chunks never
    written read as zeros."""
    src = write_run_file(tmp_path / "odd.h5", units={0: 500, 4: 91}, channels=103, chunk_rows=45, calibrated=True)
    (c,) = recompress_run([src], tmp_path / "c")
    sparse = write_run_file(tmp_path / "sparse.h5", units={0: 300}, channels=103, chunk_rows=45, allocate=False, **BSLZ4)
    fields = ("raw", "calibrated", "frame_number", "timestamp_ns", "missing_packets")
    run, ref = daqload.open_run(c), daqload.open_run(src)
    assert all(run.read_path(f) == "pread+bslz4" for f in fields)
    rng = np.random.default_rng(2)
    for u in (0, 4):
        n = run.frame_count(u)
        for start, stop in ((0, n), (44, 46), (n - 1, n), (3, n - 2)):
            got, want = run.read(u, start, stop, fields=fields), ref.read(u, start, stop, fields=fields)
            for f in fields:
                np.testing.assert_array_equal(got[f], want[f], err_msg=f"{u} {f} {start}:{stop}")
    ds = daqload.RunDataset(c, fields=("raw", "calibrated"))
    dr = daqload.RunDataset(src, fields=("raw", "calibrated"))
    idx = rng.integers(0, len(ds), 400)
    a, b = ds.get_batch(idx), dr.get_batch(idx)
    assert a["calibrated"].dtype == torch.float32
    assert torch.equal(a["raw"], b["raw"]) and torch.equal(a["calibrated"], b["calibrated"])

    s = daqload.open_run(sparse)
    assert s.read_path("raw") == "pread+bslz4" and s.read_path("frame_number") == "pread"
    got = s.read(0, 0, 300, fields=("raw",))["raw"]
    with h5py.File(sparse, "r") as f:
        want = f["units/u0/raw"][:]
    assert (want[45:90] == 0).all() and (want[:45] != 0).any()
    np.testing.assert_array_equal(got, want)


def test_the_native_extension_does_the_reads(plain_bslz4, native, monkeypatch):
    calls = []
    real = native.gather

    def counting(*a, **kw):
        calls.append((a[-2], a[-1], threading.get_ident()))
        return real(*a, **kw)

    monkeypatch.setattr(native, "gather", counting)
    ds = daqload.RunDataset(plain_bslz4, fields=("raw", "frame_number"), io_threads=2)
    b = ds.get_batch(np.arange(0, 2000, 3))
    # frame_number (the whole field, once per unit) and raw (16 chunks), split over the 2 I/O threads.
    assert len(calls) >= 4 and any(lo > 0 for lo, _, _ in calls)
    assert len({ident for _, _, ident in calls}) == 2
    assert b["frame_number"].tolist() == list(range(0, 2000, 3))


def _corrupt(path, dataset, chunk, how):
    """Damages one stored chunk of a copy of a file in place."""
    with h5py.File(path, "r") as f:
        info = f[dataset].id.get_chunk_info(chunk)
    with open(path, "r+b") as fh:
        if how == "lz4":  # the LZ4 data of the first block (rows 0, …) overwritten
            fh.seek(info.byte_offset + 12)
            c = int.from_bytes(fh.read(4), "big")
            fh.write(bytes([0xFF]) * c)
        elif how == "header":  # a declared size that does not fit the chunk
            fh.seek(info.byte_offset)
            fh.write((1 << 40).to_bytes(8, "big"))
        elif how == "block":  # a block length running past the chunk
            fh.seek(info.byte_offset + 12)
            fh.write((0x7FFFFFF0).to_bytes(4, "big"))
    return info


@pytest.mark.parametrize("how,message", [("lz4", "LZ4 block is damaged"),
                                         ("header", "chunk holds 1099511627776 bytes, expected 1048576 "
                                                    r"\(128 rows\)|larger than the buffer"),
                                         ("block", "block runs past the end of the chunk")])
def test_a_damaged_chunk_is_a_clear_error(plain_bslz4, native, tmp_path, how, message):
    bad = str(tmp_path / "plain.h5")
    shutil.copy(plain_bslz4[0], bad)
    info = _corrupt(bad, "units/u1/raw", 3, how)
    run = daqload.open_run(bad)
    assert run.read_path() == "pread+bslz4"
    with pytest.raises(daqload.DamagedChunkError) as e:
        run.read(1, 384, 385)  # the first row of chunk 3 (rows 384..511), in its first LZ4 block
    msg = str(e.value)
    assert bad in msg and "/units/u1/raw chunk 3 (rows 384..511" in msg, msg
    assert f"{info.size} bytes at offset {info.byte_offset}" in msg and "bitshuffle/LZ4" in msg
    import re
    assert re.search(message, msg), msg
    assert isinstance(e.value, daqload.RunFormatError)
    # The same chunk in a batch (on the I/O threads), and the rest of the file still reads.
    ds = daqload.RunDataset(bad, fields=("raw",), unit=1, io_threads=2)
    with pytest.raises(daqload.DamagedChunkError, match="chunk 3"):
        ds.get_batch(np.arange(0, 1000, 2))
    ok = run.read(1, 0, 384)["raw"]
    np.testing.assert_array_equal(ok, daqload.open_run(plain_bslz4).read(1, 0, 384)["raw"])


def test_a_damaged_metadata_chunk_and_a_truncated_file(plain_bslz4, native, tmp_path):
    bad = str(tmp_path / "plain.h5")
    shutil.copy(plain_bslz4[0], bad)
    _corrupt(bad, "units/u0/frame_number", 2, "lz4")
    with pytest.raises(daqload.DamagedChunkError, match=r"/units/u0/frame_number chunk 2 \(rows 256..383"):
        daqload.open_run(bad).read(0, 0, 10, fields=("frame_number",))
    # A file cut short after the run was opened: the chunk is past its end.
    cut = str(tmp_path / "cut.h5")
    shutil.copy(plain_bslz4[0], cut)
    run = daqload.open_run(cut)
    assert run.read_path("raw") == "pread+bslz4"
    with h5py.File(cut, "r") as f:
        info = f["units/u0/raw"].id.get_chunk_info(5)
    os.truncate(cut, info.byte_offset + 10)
    with pytest.raises(daqload.DamagedChunkError, match="chunk 5 .* the file ends inside the chunk"):
        run.read(0, 5 * 128, 5 * 128 + 1, fields=("raw",))


def test_hostile_chunk_bytes_never_crash(native):
    rng = np.random.default_rng(0)
    data = (np.arange(45 * 103) % 977).astype(np.uint16)
    good = native.compress(data, 2)
    assert np.array_equal(np.frombuffer(native.decompress(good, 2), dtype=np.uint16), data)
    errors = 0
    for t in range(3000):
        b = bytearray(good)
        for _ in range(1 + t % 4):
            b[rng.integers(len(b))] = rng.integers(256)
        if t % 7 == 0:
            b = b[:rng.integers(len(b))]
        try:
            native.decompress(bytes(b), 2, 1 << 20)
        except ValueError as e:
            assert str(e).startswith("bslz4: ")
            errors += 1
    assert errors > 100
    with pytest.raises(ValueError, match="shorter than its header"):
        native.decompress(b"\0" * 5, 2)


@pytest.mark.parametrize("how", ["argument", "env"])
def test_fallback_when_the_extension_is_off(plain_pair, monkeypatch, caplog, how):
    plain_bslz4, plain_run = plain_pair
    kw = {}
    if how == "argument":
        kw["native"] = False
    else:
        monkeypatch.setenv("DAQLOAD_NATIVE", "0")
    with caplog.at_level(logging.INFO, logger="daqload"):
        ds = daqload.RunDataset(plain_bslz4, fields=ALL, **kw)
    assert ds.read_path == "h5py" and ds.run.read_path("frame_number") == "h5py"
    assert "switched off" in ds.run.read_path_reasons()[plain_bslz4[0]]
    assert "raw read through h5py" in caplog.text
    ref = daqload.RunDataset(plain_run, fields=SAME)
    fast = daqload.RunDataset(plain_bslz4, fields=ALL, native=True)  # native=True overrides DAQLOAD_NATIVE
    assert fast.read_path == "pread+bslz4"
    idx = np.random.default_rng(1).integers(0, len(ds), 300)
    a, b, c = ds.get_batch(idx), ref.get_batch(idx), fast.get_batch(idx)
    for f in ALL:
        assert torch.equal(a[f], c[f]), f
        if f in SAME:
            assert torch.equal(a[f], b[f]), f


def test_fallback_for_other_filters_and_unfiltered_chunks(tmp_path, native):
    plain = write_run_file(tmp_path / "p.h5", units={0: 100}, chunk_rows=16)
    other = write_run_file(tmp_path / "bs.h5", units={0: 100}, chunk_rows=16,
                           compression=hdf5plugin.Bitshuffle(nelems=0, cname="none"))
    masked = str(tmp_path / "masked.h5")
    (c,) = recompress_run([plain], tmp_path / "c")
    shutil.copy(c, masked)
    with h5py.File(masked, "a") as f:  # chunk 2 stored without its filter (filter mask 1), as HDF5 may do
        d = f["units/u0/raw"]
        d.id.write_direct_chunk((32, 0), np.ascontiguousarray(d[32:48]).tobytes(), filter_mask=1)
    runs = {p: daqload.open_run(p) for p in (other, masked, c)}
    assert runs[c].read_path() == "pread+bslz4"
    assert runs[other].read_path() == "h5py" and "without LZ4" in runs[other].read_path_reasons()[other]
    assert runs[masked].read_path() == "h5py"
    assert "chunk 2 was stored without its filter" in runs[masked].read_path_reasons()[masked]
    want = daqload.open_run(plain).read(0, 0, 100)
    for p, r in runs.items():
        got = r.read(0, 0, 100)
        for f in FIELDS:
            np.testing.assert_array_equal(got[f], want[f], err_msg=f"{p} {f}")


def _run_py(code):
    env = dict(os.environ, PYTHONPATH=str(DAQLOAD_DIR))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_hdf5plugin_is_imported_only_for_the_fallback(plain_bslz4, native):
    code = ("import sys, daqload; r = daqload.open_run({p!r}, native={n}); "
            "x = r.read(0, 0, 300); r.read(1, 5, 9, fields=('raw', 'missing_packets')); "
            "print(r.read_path(), 'hdf5plugin' in sys.modules, int(x['frame_number'][-1]))")
    assert _run_py(code.format(p=plain_bslz4[0], n=None)) == ["pread+bslz4", "False", "299"]
    assert _run_py(code.format(p=plain_bslz4[0], n=False)) == ["h5py", "True", "299"]


def test_the_native_call_releases_the_gil(plain_bslz4, native):
    """While one thread is in _native.gather (one call of about 0.4 s), another runs Python code."""
    run = daqload.open_run(plain_bslz4, io_threads=1)
    t = run._field_table("raw")
    seg = np.zeros(t.crows[0] * 20, dtype=np.int64)
    local = np.arange(len(seg), dtype=np.int64)
    from daqload import _compressed
    p = _compressed.plan_tasks(t, seg, local, local, run._seg_file)
    dest = np.empty((len(seg), CHANNELS), dtype=np.int32)
    fd = run._fd(0)

    def call(reps):  # the 20 chunks, reps times over, in one call
        k = len(p["chunk"])
        rows = np.diff(p["row_start"])
        r = np.tile(rows, reps)
        args = [np.full(k * reps, fd, dtype=np.int64)] + [np.tile(p[x], reps) for x in ("offsets", "sizes", "chunk_rows")]
        args += [np.concatenate(([0], np.cumsum(r))), np.tile(p["src_rows"], reps), np.tile(p["dst_rows"], reps)]
        assert native.gather(*args, 2, CHANNELS, dest, "u16>i32", 0, k * reps) is None

    reps = 1
    while True:  # reps for a call of 0.3 s or more
        t0 = time.perf_counter()
        call(reps)
        dt = time.perf_counter() - t0
        if dt >= 0.3:
            break
        reps = max(2 * reps, int(reps * 0.4 / max(dt, 1e-3)) + 1)
    stamps, stop = [], threading.Event()

    def spin():
        i = 0
        while not stop.is_set():
            i += 1
            if i % 64 == 0:
                stamps.append(time.perf_counter())

    th = threading.Thread(target=spin)
    th.start()
    while not stamps:
        pass
    a = time.perf_counter()
    call(reps)
    b = time.perf_counter()
    stop.set()
    th.join()
    assert b - a > 0.1  # the middle half is 10 switch intervals (5 ms) at least
    # With the GIL held, the other thread could run only at the call's ends (for a switch
    # interval, when the main thread goes back to Python), never in the middle half of it.
    during = [s for s in stamps if a + (b - a) / 4 < s < b - (b - a) / 4]
    assert len(during) > 20, f"{64 * len(during)} iterations of the other thread in the middle {(b - a) / 2:.2f} s"
    np.testing.assert_array_equal(dest[:300], daqload.open_run(plain_bslz4).read(0, 0, 300)["raw"])


@pytest.mark.parametrize("workers", [0, 2])
def test_dataloader_on_a_compressed_run_gives_the_same_samples(any_pair, native, workers):
    """RunDataset + ChunkShuffleSampler + DataLoader: every frame once, each equal to
    the same frame of the uncompressed recording (the order follows the chunks,
    which differ where the two runs' files rotate differently)."""
    files, plain = any_pair
    fields = [f for f in SAME if f in _fields(daqload.open_run(files))] + ["unit"]
    got = []
    for p in (files, plain):
        ds = daqload.RunDataset(p, fields=fields)
        assert ds.read_path == ("pread+bslz4" if p is files else "pread")
        sampler = daqload.ChunkShuffleSampler(ds, seed=3)
        sampler.set_epoch(1)
        loader = DataLoader(ds, batch_size=128, sampler=sampler, collate_fn=daqload.collate, num_workers=workers)
        batches = list(loader)
        assert len(batches) == -(-len(ds) // 128)
        b = {f: torch.cat([x[f] for x in batches]) for f in fields}
        key = b["unit"] * (1 << 40) + b["frame_number"]
        order = torch.argsort(key)
        assert len(torch.unique(key)) == len(ds)  # every frame once
        got.append({f: v[order] for f, v in b.items()})
    a, b = got
    for f in fields:
        assert torch.equal(a[f], b[f]), f


def test_runstream_reads_a_compressed_run(plain_pair, tmp_path):
    """RunStream (h5py, SWMR) on a compressed run: h5py decodes filter 32008 (hdf5plugin)."""
    from daqload import RunStream
    # Copies: HDF5 will not open a file as a SWMR reader while this process (another
    # test's Run not yet collected) holds it open without SWMR.
    plain_bslz4 = [shutil.copy(plain_pair[0][0], tmp_path / "z.h5")]
    plain_run = [shutil.copy(plain_pair[1][0], tmp_path / "p.h5")]
    got = [(int(i["unit"]), int(i["frame_number"]), i["raw"]) for i in
           RunStream(plain_bslz4[0], fields=("raw", "frame_number", "unit"), idle_timeout=5)]
    want = [(int(i["unit"]), int(i["frame_number"]), i["raw"]) for i in
            RunStream(plain_run[0], fields=("raw", "frame_number", "unit"), idle_timeout=5)]
    assert len(got) == len(want) == 6000
    for (u, f, r), (v, g, s) in zip(sorted(got, key=lambda x: x[:2]), sorted(want, key=lambda x: x[:2])):
        assert (u, f) == (v, g) and torch.equal(r, s)


def test_without_the_extension_built_compressed_runs_read_through_h5py(plain_pair, tmp_path):
    """A daqload package without daqload._native (not built): the fallback, and why."""
    shutil.copytree(DAQLOAD_DIR / "daqload", tmp_path / "daqload", ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    code = ("import sys, daqload; r = daqload.open_run(sys.argv[1]); x = r.read(0, 0, 300); "
            "print(r.read_path(), 'hdf5plugin' in sys.modules, int(x['frame_number'][-1])); "
            "print(r.read_path_reasons()[sys.argv[1]])\n"
            "try:\n    daqload.open_run(sys.argv[1], native=True)\nexcept daqload.DaqloadError as e:\n    print('raised', e)")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    env.pop("DAQLOAD_NATIVE", None)
    r = subprocess.run([sys.executable, "-c", code, plain_pair[0][0]], capture_output=True, text=True, env=env,
                       timeout=120, cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "h5py True 299"
    assert "daqload._native is not built" in lines[1]
    assert lines[2].startswith("raised native=True: daqload._native is not built")
