"""ChunkShuffleSampler across ranks, workers and epochs; DataLoader workers
under fork, forkserver and spawn."""

import os
import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import daqload
from conftest import pattern


def _loader(ds, sampler, workers, ctx=None, batch=64):
    kw = dict(batch_size=batch, sampler=sampler, collate_fn=daqload.collate, num_workers=workers)
    if workers:
        kw["multiprocessing_context"] = ctx
    return DataLoader(ds, **kw)


def _check_batches(ds, batches, expect_idx):
    """Batches hold exactly the items of expect_idx, in that order, with the right samples."""
    fn = torch.cat([b["frame_number"] for b in batches]).numpy()
    units = torch.cat([b["unit"] for b in batches]).numpy()
    np.testing.assert_array_equal(fn, ds.frame_numbers()[expect_idx])
    np.testing.assert_array_equal(units, ds.item_units()[expect_idx])
    raw = torch.cat([b["raw"] for b in batches])
    assert raw.dtype == torch.int32
    rows = np.linspace(0, len(fn) - 1, 50).astype(int)
    if "missing_packets" in batches[0]:  # incomplete frames have zeros where packets were lost
        complete = torch.cat([b["missing_packets"] for b in batches]).numpy() == 0
        rows = rows[complete[rows]]
    np.testing.assert_array_equal(raw[rows].numpy(), pattern(fn[rows], units[rows]))
    return fn, units


def test_two_ranks_two_workers_two_epochs(plain_run):
    ds = daqload.RunDataset(plain_run, fields=("raw", "frame_number", "unit"))
    n = len(ds)
    orders = {}
    for epoch in (0, 1):
        seen = np.zeros(n, dtype=int)
        for rank in (0, 1):
            s = daqload.ChunkShuffleSampler(ds, seed=5, num_replicas=2, rank=rank)
            s.set_epoch(epoch)
            expect = s.indices()
            batches = list(_loader(ds, s, 2, "fork"))
            _check_batches(ds, batches, expect)
            np.add.at(seen, expect, 1)
            orders[(epoch, rank)] = expect
            # Chunk locality: a batch of 64 reads few of the 128-row chunks.
            chunk = np.searchsorted(ds.chunk_boundaries(), expect[:64 * 10], side="right")
            per_batch = [len(set(chunk[i:i + 64])) for i in range(0, len(chunk), 64)]
            assert max(per_batch) <= 8, per_batch
        pad = s.total_size - n
        assert (seen >= 1).all() and int((seen - 1).sum()) == pad, "every frame once per epoch (plus padding)"
    assert not np.array_equal(orders[(0, 0)], orders[(1, 0)]), "a new epoch gives a new order"
    assert not np.array_equal(orders[(0, 0)], np.sort(orders[(0, 0)])), "shuffled"


def test_exactly_once_without_padding_and_drop_last(rotated_run):
    ds = daqload.RunDataset(rotated_run, fields=("frame_number",))
    n = len(ds)
    for drop_last in (False, True):
        for R in (2, 3):
            got = np.concatenate([daqload.ChunkShuffleSampler(ds, num_replicas=R, rank=r, drop_last=drop_last).indices()
                                  for r in range(R)])
            if drop_last:
                assert len(got) == (n // R) * R and len(np.unique(got)) == len(got)
            else:
                assert len(got) == -(-n // R) * R and set(got.tolist()) == set(range(n))
    s = daqload.ChunkShuffleSampler(ds, shuffle=False)
    assert list(s) == list(range(n))


def test_resume_from_state_dict(plain_run):
    ds = daqload.RunDataset(plain_run, fields=("frame_number",))
    s = daqload.ChunkShuffleSampler(ds, seed=11, num_replicas=2, rank=1)
    s.set_epoch(3)
    full = list(s)
    it = iter(s)
    first = [next(it) for _ in range(1000)]
    sd = s.state_dict()
    assert sd["epoch"] == 3 and sd["position"] == 1000
    s2 = daqload.ChunkShuffleSampler(ds, seed=11, num_replicas=2, rank=1)
    s2.load_state_dict(pickle.loads(pickle.dumps(sd)))
    s2.set_epoch(3)  # the usual loop calls set_epoch again: the position stays
    assert len(s2) == len(full) - 1000
    rest = list(s2)
    assert first + rest == full
    assert len(s2) == len(full) and list(s2) == full  # the next pass is the whole epoch again
    # Resuming after batches actually trained (the loader fetches ahead).
    loader = _loader(ds, s, 2, "fork", batch=100)
    s.set_epoch(4)
    done = []
    for k, b in enumerate(loader):
        done.append(b["frame_number"])
        if k == 2:
            break
    sd = s.state_dict(position=3 * 100)
    s3 = daqload.ChunkShuffleSampler(ds, seed=11, num_replicas=2, rank=1)
    s3.load_state_dict(sd)
    rest = torch.cat([b["frame_number"] for b in _loader(ds, s3, 0)])
    s.set_epoch(5)
    s.set_epoch(4)
    np.testing.assert_array_equal(torch.cat(done + [rest]).numpy(), ds.frame_numbers()[s.indices()])
    with pytest.raises(ValueError, match="seed"):
        daqload.ChunkShuffleSampler(ds, seed=12, num_replicas=2, rank=1).load_state_dict(sd)


@pytest.mark.parametrize("ctx,workers", [(None, 0), ("fork", 2), ("forkserver", 2), ("spawn", 2)])
def test_workers_under_each_start_method(rotated_run, ctx, workers):
    ds = daqload.RunDataset(rotated_run, fields=("raw", "frame_number", "unit", "missing_packets"))
    # Touch it in the parent first: handles, descriptors, thread pool, caches.
    first = ds[0]
    ds.get_batch(np.arange(0, len(ds), 97))
    assert ds.run._h5 and ds.run._fds
    s = daqload.ChunkShuffleSampler(ds, seed=2)
    s.set_epoch(1)
    batches = list(_loader(ds, s, workers, ctx, batch=128))
    _check_batches(ds, batches, s.indices())
    assert torch.equal(ds[0]["raw"], first["raw"])  # the parent's handles still work


def test_no_handle_survives_pickle_or_fork(plain_run):
    ds = daqload.RunDataset(plain_run, fields=("raw",))
    ds.get_batch([0, 1, 2])
    parent_files = list(ds.run._h5.values())
    clone = pickle.loads(pickle.dumps(ds))
    assert clone.run._h5 == {} and clone.run._fds == {} and clone.run._executor is None
    assert torch.equal(clone.get_batch([5])["raw"], ds.get_batch([5])["raw"])
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: reads through its own handles
        ok = 0
        try:
            b = ds.get_batch([7, 8])
            ok = int(ds.run._pid == os.getpid() and all(f not in parent_files for f in ds.run._h5.values())
                     and torch.equal(b["raw"][0].long(), torch.from_numpy(pattern([7], [0])[0])))
        finally:
            os.write(w, bytes([ok]))
            os._exit(0)
    os.close(w)
    assert os.read(r, 1) == b"\x01"
    os.waitpid(pid, 0)
    assert all(f.id.valid for f in parent_files)
