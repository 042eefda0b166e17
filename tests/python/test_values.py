"""Everything daqload returns equals a plain h5py read of the same file."""

import logging

import h5py
import numpy as np
import pytest
import torch

import daqload
from conftest import CHANNELS, h5py_unit, pattern, write_run_file

FIELDS = ("raw", "frame_number", "timestamp_ns", "missing_packets")


def test_open_run_describes_the_run(any_run):
    run = daqload.open_run(any_run)
    with h5py.File(any_run[0], "r") as f:
        assert run.run_name == f.attrs["run_name"]
        assert run.attrs["format"] == "daq1-run" and run.attrs["format_version"] == 1
        assert run.attrs["started_at"] == f.attrs["started_at"]
    with h5py.File(any_run[-1], "r") as f:
        assert run.attrs["stopped_at"] == f.attrs["stopped_at"]
    assert run.files == any_run
    assert run.units == (0, 1)
    assert run.channels == {0: CHANNELS, 1: CHANNELS}
    for u in run.units:
        assert run.frame_count(u) == len(h5py_unit(any_run, u, "frame_number"))
    assert len(run) == sum(run.frame_counts.values())
    assert run.read_path() == "pread" and not run.live


def test_rotated_series_is_found_by_directory_glob_and_name(rotated_run):
    import os
    d = os.path.dirname(rotated_run[0])
    shuffled = list(reversed(rotated_run))
    for spec in (shuffled, os.path.join(d, "rot_*.h5"), os.path.join(d, "rot")):
        assert daqload.open_run(spec).files == rotated_run


@pytest.mark.parametrize("fast", [None, False])
def test_read_equals_h5py(any_run, fast):
    run = daqload.open_run(any_run, fast_path=fast)
    assert run.read_path() == ("pread" if fast is None else "h5py")
    for u in run.units:
        ref = {f: h5py_unit(any_run, u, f) for f in FIELDS}
        n = len(ref["raw"])
        for start, stop in ((0, n), (5, 37), (n - 300, n - 1), (1000, 2100)):
            got = run.read(u, start, stop, fields=FIELDS)
            for f in FIELDS:
                assert got[f].dtype == ref[f].dtype, f
                np.testing.assert_array_equal(got[f], ref[f][start:stop], err_msg=f"unit {u} {f} [{start}:{stop}]")


@pytest.mark.parametrize("raw_dtype", ["int32", "int16", "float32"])
def test_dataset_batches_equal_h5py(any_run, raw_dtype):
    ds = daqload.RunDataset(any_run, fields=FIELDS + ("unit",), raw_dtype=raw_dtype)
    refs = {u: {f: h5py_unit(any_run, u, f) for f in FIELDS} for u in (0, 1)}
    n0 = len(refs[0]["raw"])
    assert len(ds) == n0 + len(refs[1]["raw"])
    rng = np.random.default_rng(3)
    idx = np.concatenate([rng.permutation(len(ds))[:300], [0, len(ds) - 1, n0 - 1, n0, 5, 5, 6]])
    b = daqload.collate(ds.__getitems__(idx))
    assert b["raw"].dtype == daqload.RAW_DTYPES[raw_dtype] and b["raw"].shape == (len(idx), CHANNELS)
    assert b["frame_number"].dtype == torch.int64 and b["missing_packets"].dtype == torch.int32
    units = (idx >= n0).astype(int)
    rows = np.where(units == 1, idx - n0, idx)
    for f in FIELDS:
        want = np.stack([refs[u][f][r] for u, r in zip(units, rows)])
        got = b[f].numpy()
        if f == "raw" and raw_dtype == "int16":
            got = got.view(np.uint16)
        np.testing.assert_array_equal(got, want.astype(got.dtype), err_msg=f)
    np.testing.assert_array_equal(b["unit"].numpy(), units)
    # One item through __getitem__ is the same as in the batch.
    item = ds[int(idx[0])]
    for f in FIELDS:
        assert torch.equal(item[f], b[f][0])
    # default_collate over the FrameBatch gives the same batch (with a copy).
    d = torch.utils.data.default_collate(ds.__getitems__(idx[:20]))
    for f in FIELDS:
        assert torch.equal(d[f], b[f][:20])


def test_windows_and_skip_incomplete(rotated_run):
    mp = {u: h5py_unit(rotated_run, u, "missing_packets") for u in (0, 1)}
    fn = {u: h5py_unit(rotated_run, u, "frame_number").astype(np.int64) for u in (0, 1)}
    assert sum(int((m > 0).sum()) for m in mp.values()) > 0, "the lossy capture has no incomplete frames"
    ds = daqload.RunDataset(rotated_run, fields=("raw", "frame_number", "missing_packets"), skip_incomplete=True)
    assert len(ds) == sum(int((m == 0).sum()) for m in mp.values())
    b = ds.get_batch(np.arange(len(ds)))
    assert int(b["missing_packets"].abs().sum()) == 0
    # Complete frames carry the full test pattern.
    units = ds.item_units()
    sel = np.linspace(0, len(ds) - 1, 200).astype(int)
    np.testing.assert_array_equal(b["raw"].numpy()[sel], pattern(b["frame_number"].numpy()[sel], units[sel]))

    W = 4
    ds = daqload.RunDataset(rotated_run, unit=1, fields=("raw", "frame_number"), window=W)
    ok = (fn[1][W - 1:] - fn[1][:-W + 1]) == W - 1  # no lost frame inside a window
    assert len(ds) == int(ok.sum())
    raw1 = h5py_unit(rotated_run, 1, "raw")
    starts = np.flatnonzero(ok)
    pick = np.random.default_rng(1).choice(len(ds), 64, replace=False)
    b = ds.get_batch(pick)
    assert b["raw"].shape == (64, W, CHANNELS) and b["frame_number"].shape == (64, W)
    for k, i in enumerate(pick):
        s = starts[i]
        np.testing.assert_array_equal(b["raw"][k].numpy(), raw1[s:s + W])
        np.testing.assert_array_equal(b["frame_number"][k].numpy(), fn[1][s:s + W])


def test_transform_is_applied(plain_run):
    ds = daqload.RunDataset(plain_run, unit=0, fields=("raw", "frame_number"),
                            transform=lambda it: (it["raw"].float().mean(), it["frame_number"]))
    m, f = ds[10]
    assert int(f) == 10 and abs(float(m) - pattern([10], [0]).mean()) < 1e-3
    batch = torch.utils.data.default_collate(ds.__getitems__([1, 2, 3]))
    assert batch[1].tolist() == [1, 2, 3]


def test_fast_path_conditions_and_fallback(tmp_path, caplog):
    plain = write_run_file(tmp_path / "a.h5", units={0: 100, 3: 40}, calibrated=True)
    gz = write_run_file(tmp_path / "gz.h5", units={0: 100, 3: 40}, calibrated=True, compression="gzip")
    sparse = write_run_file(tmp_path / "sparse.h5", units={0: 100}, allocate=False)
    with caplog.at_level(logging.INFO, logger="daqload"):
        a = daqload.RunDataset(plain, fields=("raw", "calibrated", "frame_number"), unit=0)
    assert a.read_path == "pread" and "pread" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="daqload"):
        b = daqload.RunDataset(gz, fields=("raw", "calibrated", "frame_number"), unit=0)
    assert b.read_path == "h5py" and "h5py" in caplog.text
    assert "filtered" in b.run.read_path_reasons("raw")[gz]
    idx = np.random.default_rng(0).permutation(100)
    x, y = a.get_batch(idx), b.get_batch(idx)
    for f in ("raw", "calibrated", "frame_number"):
        assert torch.equal(x[f], y[f]), f
    assert x["calibrated"].dtype == torch.float32
    with h5py.File(plain, "r") as f:
        np.testing.assert_array_equal(x["calibrated"].numpy(), f["units/u0/calibrated"][:][idx])
    # Chunks never written read as zeros, on both paths.
    s1 = daqload.RunDataset(sparse, fields=("raw",))
    s2 = daqload.RunDataset(sparse, fields=("raw",), fast_path=False)
    assert s1.read_path == "pread" and s2.read_path == "h5py"
    with h5py.File(sparse, "r") as f:
        ref = f["units/u0/raw"][:]
    assert (ref[16:32] == 0).all() and (ref[0:16] != 0).any()
    for d in (s1, s2):
        np.testing.assert_array_equal(d.get_batch(idx)["raw"].numpy(), ref[idx])


def test_calibrated_absent_is_a_clear_error(plain_run):
    with pytest.raises(daqload.MissingFieldError, match="'calibrated' is not in run 'plain'"):
        daqload.RunDataset(plain_run, fields=("raw", "calibrated"))
    with pytest.raises(ValueError, match="unknown field 'rwa'"):
        daqload.RunDataset(plain_run, fields=("rwa",))
    with pytest.raises(KeyError, match="unit 9 is not in run"):
        daqload.RunDataset(plain_run, unit=9)


def test_pread_plan_duplicates_gaps_and_zero_rows(tmp_path):
    from daqload import _pread
    data = np.arange(64 * 10, dtype=np.uint8).reshape(64, 10)
    p = tmp_path / "blob"
    data.tofile(p)
    import os
    fd = os.open(p, os.O_RDONLY)
    try:
        rows = np.array([5, 3, 3, 40, 41, 42, 60, 7, 9, 5, 0])
        offs = rows * 10
        offs[-1] = -1  # no stored chunk: zeros
        dest = np.full((len(rows), 10), 255, dtype=np.uint8)
        trash = np.empty(100, dtype=np.uint8)
        plan = _pread.plan(np.zeros(len(rows)), offs, np.arange(len(rows)), 10, dest.ctypes.data, trash.ctypes.data, 30)
        _pread.run_segments(plan, 0, len(plan.seg_bytes), {0: fd}, {0: str(p)})
        _pread.finish(plan, dest)
        want = data[rows]
        want[-1] = 0
        np.testing.assert_array_equal(dest, want)
        assert len(plan.seg_bytes) == 3  # 3..9 (gaps <= 30 bytes read through), 40..42, 60
    finally:
        os.close(fd)
