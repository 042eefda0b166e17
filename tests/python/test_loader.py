"""daqload.Loader: batches equal RunDataset reads (every field, 0/1/many
threads, in-process and in a subprocess, drop_last, resumed samplers, 2
ranks), buffer reuse and zero-copy sharing, and shutdown (break, a failing
transform, a killed child, a dying parent, del) leaving no thread, process,
/dev/shm entry or memfd behind. Run files come from the real daqd."""

import gc
import os
import signal
import subprocess
import sys
import threading
import time
import warnings

import numpy as np
import pytest
import torch

import daqload
from conftest import DAQLOAD_DIR, pattern

ALL = ("raw", "frame_number", "timestamp_ns", "missing_packets", "unit")


def _wait_for(cond, what, timeout=20.0):
    """Waits until cond() is true; fails naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.01)


def _arena_maps():
    with open("/proc/self/maps") as f:
        return [ln for ln in f if "daqload-arena" in ln]


def _arena_fds():
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if "daqload-arena" in os.readlink(f"/proc/self/fd/{fd}"):
                out.append(fd)
        except OSError:
            pass
    return out


def _shm():
    """The /dev/shm entries this process (and its children) hold open or mapped. /dev/shm is shared
    with every other process on the machine (other test suites make and remove entries there all the
    time), so its listing is no measure of what this process leaks; what it maps or holds open is."""
    pids = [str(os.getpid())] + [c for c in os.listdir("/proc") if c.isdigit() and _ppid(c) == str(os.getpid())]
    held = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/maps") as f:
                held.update(ln.split(None, 5)[5].strip() for ln in f if "/dev/shm/" in ln)
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("/dev/shm/"):
                    held.add(target)
        except OSError:
            pass
    return sorted(held)


def _ppid(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[1]
    except (OSError, IndexError):
        return None


def _state():
    return {"threads": sorted(t.name for t in threading.enumerate()), "shm": _shm(),
            "arena fds": _arena_fds(), "arena maps": _arena_maps()}


@pytest.fixture
def no_leaks():
    """The threads, the /dev/shm entries held and the memfd arenas after the test are those before it."""
    gc.collect()
    before = _state()
    yield
    gc.collect()
    _wait_for(lambda: _state() == before, f"threads/shm/memfd back to {before} (now {_state()})")


def _check_equal(ds, batches, idx, bs, fields):
    ref = ds.get_batch(idx)
    assert [len(b[fields[0]]) for b in batches] == [min(bs, len(idx) - k) for k in range(0, len(idx), bs)][:len(batches)]
    for f in fields:
        got = torch.cat([b[f] for b in batches])
        assert got.dtype == ref[f].dtype, f
        assert torch.equal(got, ref[f][:len(got)]), f"field {f} differs"


def _collect(loader):
    """The batches of one iteration, each cloned (so that the loader's buffers can be reused)."""
    return [{k: v.clone() for k, v in b.items()} for b in loader]


@pytest.mark.parametrize("in_subprocess", [False, True], ids=["threads", "subprocess"])
@pytest.mark.parametrize("threads", [0, 1, 3])
def test_batches_equal_dataset_reads(any_run, in_subprocess, threads, no_leaks):
    ds = daqload.RunDataset(any_run, fields=ALL)
    s = daqload.ChunkShuffleSampler(ds, seed=3)
    bs = 96  # 6000 items: a partial last batch
    with daqload.Loader(ds, batch_size=bs, sampler=s, threads=threads, in_subprocess=in_subprocess) as loader:
        assert len(loader) == -(-len(ds) // bs)
        idx = s.indices()
        batches = _collect(loader)
        assert len(batches) == -(-len(ds) // bs)
        _check_equal(ds, batches, idx, bs, ALL)
        # raw against the test pattern too (complete frames), not only against RunDataset
        fn = torch.cat([b["frame_number"] for b in batches]).numpy()
        un = torch.cat([b["unit"] for b in batches]).numpy()
        ok = torch.cat([b["missing_packets"] for b in batches]).numpy() == 0
        rows = np.flatnonzero(ok)[::97]
        np.testing.assert_array_equal(torch.cat([b["raw"] for b in batches]).numpy()[rows], pattern(fn[rows], un[rows]))
        # the next epoch: a new order, the same frames
        loader.set_epoch(1)
        idx1 = s.indices()
        assert not np.array_equal(idx, idx1)
        _check_equal(ds, _collect(loader), idx1, bs, ("frame_number", "unit"))


@pytest.mark.parametrize("in_subprocess", [False, True], ids=["threads", "subprocess"])
@pytest.mark.parametrize("compressed", [False, True], ids=["uncompressed", "bslz4"])
def test_every_field_and_dtype_drop_last(plain_pair, compressed, in_subprocess, no_leaks):
    """raw in all three types, calibrated (float32), windows, skip_incomplete, drop_last on and off."""
    files = plain_pair[0 if compressed else 1]
    fields = ALL + ("calibrated",)
    for raw_dtype, window, drop_last in (("int32", 1, True), ("int16", 1, False), ("float32", 3, True)):
        ds = daqload.RunDataset(files, fields=fields, raw_dtype=raw_dtype, window=window)
        assert ds.read_path == ("pread+bslz4" if compressed else "pread")
        s = daqload.ChunkShuffleSampler(ds, seed=11)
        bs = 128
        with daqload.Loader(ds, batch_size=bs, sampler=s, threads=2, in_subprocess=in_subprocess,
                            drop_last=drop_last) as loader:
            idx = s.indices()
            n_batches = len(idx) // bs if drop_last else -(-len(idx) // bs)
            assert len(loader) == n_batches
            batches = _collect(loader)
            assert len(batches) == n_batches
            if window > 1:
                assert batches[0]["raw"].shape == (bs, window, 4096) and batches[0]["frame_number"].shape == (bs, window)
            _check_equal(ds, batches, idx[:n_batches * bs] if drop_last else idx, bs, fields)


def test_h5py_fallback_and_rotated_skip_incomplete(rotated_run, no_leaks):
    """Files read through h5py (fast_path=False) and a rotated run with lost packets, skip_incomplete."""
    for ds in (daqload.RunDataset(rotated_run, fields=ALL, fast_path=False),
               daqload.RunDataset(rotated_run, fields=ALL, skip_incomplete=True, window=2)):
        s = daqload.ChunkShuffleSampler(ds, seed=2)
        with daqload.Loader(ds, batch_size=200, sampler=s, threads=2) as loader:
            _check_equal(ds, _collect(loader), s.indices(), 200, ALL)


@pytest.mark.parametrize("in_subprocess", [False, True], ids=["threads", "subprocess"])
def test_resumed_sampler(plain_run, in_subprocess, no_leaks):
    """The sampler's position advances with the batches handed out: state_dict() after batch k resumes at k+1."""
    ds = daqload.RunDataset(plain_run, fields=("frame_number", "unit"))
    bs = 100
    s = daqload.ChunkShuffleSampler(ds, seed=9)
    s.set_epoch(4)
    full = s.indices()
    with daqload.Loader(ds, batch_size=bs, sampler=s, threads=2, in_subprocess=in_subprocess, prefetch=4) as loader:
        for k, b in enumerate(loader):
            if k == 6:
                break
        sd = s.state_dict()
    assert sd["epoch"] == 4 and sd["position"] == 7 * bs
    s2 = daqload.ChunkShuffleSampler(ds, seed=9)
    s2.load_state_dict(sd)
    with daqload.Loader(ds, batch_size=bs, sampler=s2, threads=2, in_subprocess=in_subprocess) as loader:
        assert len(loader) == -(-(len(full) - 7 * bs) // bs)
        rest = _collect(loader)
    _check_equal(ds, rest, full[7 * bs:], bs, ("frame_number", "unit"))
    assert s2.state_dict()["position"] == 0  # epoch finished


@pytest.mark.parametrize("in_subprocess", [False, True], ids=["threads", "subprocess"])
def test_two_ranks_every_frame_once_per_epoch(plain_run, in_subprocess, no_leaks):
    ds = daqload.RunDataset(plain_run, fields=("frame_number", "unit"))
    fn, un = ds.frame_numbers().astype(np.int64), ds.item_units()
    key_all = un * (1 << 40) + fn
    samplers = [daqload.ChunkShuffleSampler(ds, seed=1, num_replicas=2, rank=r) for r in (0, 1)]
    loaders = [daqload.Loader(ds, batch_size=64, sampler=s, threads=2, in_subprocess=in_subprocess)
               for s in samplers]
    try:
        orders = []
        for epoch in (0, 1):
            seen = []
            for ld in loaders:
                ld.set_epoch(epoch)
                b = _collect(ld)
                seen.append(torch.cat([x["unit"] for x in b]).numpy() * (1 << 40) + torch.cat([x["frame_number"] for x in b]).numpy())
            allk = np.concatenate(seen)
            pad = samplers[0].total_size - len(ds)
            assert len(allk) == len(ds) + pad
            assert set(allk.tolist()) == set(key_all.tolist()), "every frame, per epoch"
            assert len(np.unique(allk)) == len(ds) and pad == len(allk) - len(np.unique(allk)), "once (plus padding)"
            orders.append(seen[0])
        assert not np.array_equal(orders[0], orders[1]), "a new order per epoch"
    finally:
        for ld in loaders:
            ld.close()


def test_buffers_are_reused(plain_run, no_leaks):
    """In-process: a batch dropped by the trainer gives its buffer back; no new memory per batch."""
    ds = daqload.RunDataset(plain_run, fields=("raw", "frame_number"))
    with daqload.Loader(ds, batch_size=64, threads=2, prefetch=2) as loader:
        ptrs = set()
        for b in loader:
            ptrs.add(b["raw"].data_ptr())
        assert len(ptrs) <= loader._nslots, f"{len(ptrs)} buffers for {len(loader)} batches"
        kept = list(loader)  # a trainer that keeps every batch gets fresh buffers, with the right data
        _check_equal(ds, kept, np.arange(len(ds)), 64, ("raw", "frame_number"))
        del kept


def test_subprocess_batches_are_shared_not_copied(plain_run, no_leaks):
    ds = daqload.RunDataset(plain_run, fields=("raw", "frame_number"))
    with daqload.Loader(ds, batch_size=64, threads=1, in_subprocess=True) as loader:
        maps = []
        for ln in _arena_maps():
            lo, hi = (int(x, 16) for x in ln.split()[0].split("-"))
            maps.append((lo, hi))
        assert maps, "the arena is mapped in the parent"
        child = loader._child.proc
        for k, b in enumerate(loader):
            p = b["raw"].data_ptr()
            assert any(lo <= p < hi for lo, hi in maps), "batch tensors live on the shared arena"
            if k == 20:
                break
        # a trainer keeping many batches: the loader copies instead of starving the child
        kept = [b for _, b in zip(range(3 * loader._nslots), loader)]
        _check_equal(ds, kept, np.arange(len(kept) * 64), 64, ("raw", "frame_number"))
        del kept, b
    assert child.poll() is not None, "the child is gone after close()"


class _Boom(Exception):
    pass


class FailAt:
    """A transform (picklable, for the subprocess) that fails on the batch starting at frame_number `fn`."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, batch):
        if int(batch["frame_number"][0]) == self.fn:
            raise _Boom(f"transform failed at frame {self.fn}")
        return batch


def add_one(batch):
    batch["raw"] += 1
    return batch


@pytest.mark.parametrize("in_subprocess", [False, True], ids=["threads", "subprocess"])
def test_shutdown_on_break_and_del(plain_run, in_subprocess, no_leaks):
    ds = daqload.RunDataset(plain_run, fields=("raw", "frame_number"))
    loader = daqload.Loader(ds, batch_size=64, threads=3, in_subprocess=in_subprocess, prefetch=3,
                            transform=add_one)
    child = loader._child.proc if in_subprocess else None
    ref = ds.get_batch(np.arange(64 * 5))
    for k, b in enumerate(loader):
        assert torch.equal(b["raw"], ref["raw"][k * 64:(k + 1) * 64] + 1), "the transform ran"
        if k == 4:
            break
    del b
    if not in_subprocess:
        _wait_for(lambda: not [t for t in threading.enumerate() if t.name.startswith("daqload-loader")],
                  "the reading threads to end after break")
    else:
        assert child.poll() is None, "the child stays for the next epoch"
    # a new iteration after a break starts from the beginning (no sampler: in order)
    b = next(iter(loader))
    assert torch.equal(b["raw"], ref["raw"][:64] + 1)
    del b
    del loader  # no close(): the finaliser stops everything
    gc.collect()
    if child is not None:
        child.wait(timeout=20)


@pytest.mark.parametrize("in_subprocess", [False, True], ids=["threads", "subprocess"])
def test_exception_in_transform(plain_run, in_subprocess, no_leaks):
    ds = daqload.RunDataset(plain_run, fields=("raw", "frame_number"))
    bs = 100  # in order: batch 3 starts at row 300
    fail = FailAt(int(ds.frame_numbers()[300]))
    with daqload.Loader(ds, batch_size=bs, threads=2, in_subprocess=in_subprocess, transform=fail) as loader:
        got = 0
        with pytest.raises(_Boom, match="transform failed at frame") as ei:
            for _ in loader:
                got += 1
        assert got == 3
        if in_subprocess:
            cause = ei.value.__cause__
            assert cause is not None and "in the daqload loader subprocess" in str(cause)
            assert "in __call__" in str(cause), "the child's traceback names the function that failed"
        # the loader still works afterwards: a new iteration
        it = iter(loader)
        assert len(next(it)["raw"]) == bs
        del it


def test_killing_the_child_is_a_clear_error(plain_run, no_leaks):
    ds = daqload.RunDataset(plain_run, fields=("raw",))
    loader = daqload.Loader(ds, batch_size=64, threads=1, in_subprocess=True)
    child = loader._child.proc
    it = iter(loader)
    next(it)
    os.kill(child.pid, signal.SIGKILL)
    with pytest.raises(daqload.LoaderError, match=rf"loader subprocess \(pid {child.pid}\) was killed by signal SIGKILL"):
        for _ in it:
            pass
    del it
    loader.close()
    assert child.poll() == -signal.SIGKILL


_PARENT = r"""
import os, sys, time
sys.path.insert(0, {pkg!r})
import daqload
loader = daqload.Loader({files!r}, batch_size=64, threads=1, in_subprocess=True)
it = iter(loader)
next(it)
print(loader._child.proc.pid, flush=True)
sys.stdin.readline()   # the test kills us while we wait here
"""


def test_child_dies_with_the_parent(plain_run, tmp_path):
    """SIGKILL of the training process: its loader subprocess notices (EOF) and exits."""
    script = tmp_path / "parent.py"
    script.write_text(_PARENT.format(pkg=str(DAQLOAD_DIR), files=[str(p) for p in plain_run]))
    parent = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        line = parent.stdout.readline()
        assert line.strip().isdigit(), f"parent printed {line!r}"
        child_pid = int(line)
        assert os.path.exists(f"/proc/{child_pid}")
        parent.kill()
        parent.wait(timeout=20)

        def gone():
            try:
                with open(f"/proc/{child_pid}/stat") as f:
                    return f.read().split(") ")[1].split()[0] == "Z"  # a zombie waiting for init is gone too
            except FileNotFoundError:
                return True
        _wait_for(gone, f"the loader subprocess {child_pid} to exit after its parent was killed")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def test_pin_memory_and_device_fall_back_with_one_warning(plain_run, no_leaks):
    if torch.cuda.is_available():  # pragma: no cover - Debian's torch has no CUDA
        pytest.skip("CUDA present: the fallback is not taken")
    ds = daqload.RunDataset(plain_run, fields=("raw", "frame_number"))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        loader = daqload.Loader(ds, batch_size=64, threads=1, pin_memory=True, device="cuda")
        mine = [x for x in w if "daqload.Loader" in str(x.message)]
        assert len(mine) == 1 and "CUDA is not available" in str(mine[0].message)
        with loader:
            b = next(iter(loader))
            assert b["raw"].device.type == "cpu"
            assert torch.equal(b["raw"], ds.get_batch(np.arange(64))["raw"])
            del b
    assert len([x for x in w if "daqload.Loader" in str(x.message)]) == 1


def test_loader_from_paths_and_errors(plain_run, no_leaks):
    with daqload.Loader(plain_run, batch_size=500, fields=("raw", "unit"), raw_dtype="int16", threads=1) as loader:
        assert len(loader) == 12
        b = next(iter(loader))
        assert b["raw"].dtype == torch.int16 and b["raw"].shape == (500, 4096)
        del b
    with pytest.raises(ValueError, match="per-item transform"):
        daqload.Loader(daqload.RunDataset(plain_run, transform=add_one), batch_size=8)
    with pytest.raises(daqload.MissingFieldError):
        daqload.Loader(plain_run, batch_size=8, fields=("calibrated",))
    with pytest.raises(daqload.LoaderError, match="cannot be sent to the loader subprocess"):
        daqload.Loader(plain_run, batch_size=8, in_subprocess=True, transform=lambda b: b)


def test_damaged_file_in_the_child(plain_run, tmp_path, no_leaks):
    """A read failing in the subprocess (the file cut short after opening) re-raises in the parent."""
    import shutil
    p = tmp_path / "cut.h5"
    shutil.copy(plain_run[0], p)
    ds = daqload.RunDataset(str(p), fields=("raw",))
    with daqload.Loader(ds, batch_size=64, threads=1, in_subprocess=True) as loader:
        os.truncate(p, os.path.getsize(p) // 2)
        with pytest.raises(daqload.DamagedChunkError, match=r"cut\.h5: /units/u\d/raw chunk") as ei:
            for _ in loader:
                pass
        assert "in the daqload loader subprocess" in str(ei.value.__cause__)


@pytest.mark.parametrize("in_subprocess", [False, True], ids=["threads", "subprocess"])
def test_run_stream(plain_run, in_subprocess, no_leaks):
    """A RunStream (here over a finished run: it reads it whole and ends) in batches."""
    stream = daqload.RunStream(plain_run[0], fields=("raw", "frame_number", "unit"), idle_timeout=20,
                               poll_interval=0.02, reopen_interval=0.1)
    with daqload.Loader(stream, batch_size=256, in_subprocess=in_subprocess) as loader:
        batches = _collect(loader)
        with pytest.raises(TypeError):
            len(loader)
    fn = torch.cat([b["frame_number"] for b in batches]).numpy()
    un = torch.cat([b["unit"] for b in batches]).numpy()
    ds = daqload.RunDataset(plain_run, fields=("frame_number",))
    want = sorted(zip(ds.item_units().tolist(), ds.frame_numbers().tolist()))
    assert sorted(zip(un.tolist(), fn.tolist())) == want, "every frame once"
    raw = torch.cat([b["raw"] for b in batches]).numpy()
    rows = np.arange(0, len(fn), 211)
    np.testing.assert_array_equal(raw[rows], pattern(fn[rows], un[rows]))
    ds.run.close()  # HDF5 opens a file either as a SWMR reader or not, once per process
    # break out of a stream mid-way: the follower thread stops
    with daqload.Loader(daqload.RunStream(plain_run[0], fields=("raw",), idle_timeout=20, poll_interval=0.02),
                        batch_size=64, in_subprocess=in_subprocess) as loader:
        for k, b in enumerate(loader):
            if k == 2:
                break
        del b


@pytest.mark.parametrize("in_subprocess", [False, True], ids=["threads", "subprocess"])
def test_mapped_and_pread_paths(rotated_run, monkeypatch, in_subprocess, no_leaks):
    """Uncompressed rows come from the files mapped into memory by default, with pread when DAQLOAD_MMAP=0."""
    ds = daqload.RunDataset(rotated_run, fields=ALL)
    for env, mapped in ((None, True), ("0", False)):
        if env is not None:
            monkeypatch.setenv("DAQLOAD_MMAP", env)
        s = daqload.ChunkShuffleSampler(ds, seed=4)
        with daqload.Loader(ds, batch_size=100, sampler=s, threads=2, in_subprocess=in_subprocess) as loader:
            _check_equal(ds, _collect(loader), s.indices(), 100, ALL)
            if not in_subprocess:
                assert (loader._reader()._map_base is not None) == mapped


def test_loader_follows_a_live_run(bins, tmp_path, no_leaks):
    """A Loader (in a subprocess) over a RunStream while a real daqd writes the run: every frame once,
    the first batches while the run grows, the end when daqd closes the file."""
    from daqload.capture import Daqd
    from conftest import build_dir
    from test_stream import _drive

    d = Daqd(build_dir(), tmp_path, "live", config="[storage]\nflush_interval_ms = 200\n").start()
    events = {}
    driver = threading.Thread(target=_drive, args=(d, events), daemon=True)
    stream = daqload.RunStream(tmp_path / "live", fields=("raw", "frame_number", "unit"), idle_timeout=20,
                               poll_interval=0.05, reopen_interval=0.5)
    got, first_at = [], None
    driver.start()
    try:
        with daqload.Loader(stream, batch_size=32, in_subprocess=True) as loader:
            for b in loader:
                if first_at is None:
                    first_at = time.monotonic()
                raw = b["raw"].numpy().astype(np.int64)
                got += list(zip(b["unit"].tolist(), b["frame_number"].tolist(), raw.sum(axis=1).tolist()))
            del b
    finally:
        driver.join(60)
        d.kill()
    assert "error" not in events, events.get("error")
    assert first_at is not None and first_at < events["sim_done"], "no batch while the run was growing"
    run = daqload.open_run(events["summary"]["files"])
    want = []
    for u in run.units:
        r = run.read(u, fields=("raw", "frame_number"))
        want += list(zip([u] * len(r["raw"]), r["frame_number"].tolist(), r["raw"].astype(np.int64).sum(axis=1).tolist()))
    run.close()
    assert len(got) == len(set(got)), "a frame was handed out twice"
    assert sorted(got) == sorted(want)


class _SlowReader:
    """A Pipeline reader (no files): batch k's slot gets k; batch `fail` raises; odd batches take longer,
    so that the reading threads finish out of order."""

    def __init__(self, fail=None):
        self.fail = fail

    def prepare(self):
        pass

    def read(self, idx, slot):
        k = int(idx[0])
        if k == self.fail:
            raise _Boom(f"batch {k}")
        time.sleep(0.002 if k % 2 else 0.0)
        slot[0] = k
        return 1


@pytest.mark.parametrize("threads", [1, 3])
def test_pipeline_hands_out_in_order_from_the_workers(threads):
    """The subprocess's hand-out (Pipeline with deliver=): every batch once, in order, from the reading
    threads themselves, then the end; a failed batch is the last thing handed out."""
    from daqload._pipeline import Pipeline, SlotSource

    for fail in (None, 7):
        slots = SlotSource([[None] for _ in range(5)])
        got, done = [], threading.Event()

        def deliver(k, slot, n, exc):
            got.append((k, None if slot is None else slot[0], exc))
            if slot is not None:
                slots.give(slot)
            if k is None or exc is not None:
                done.set()
        p = Pipeline(_SlowReader(fail), [np.array([k]) for k in range(40)], threads, 2, slots, deliver=deliver)
        p.start()
        assert done.wait(20), f"not handed out: {got}"
        p.stop()
        if fail is None:
            assert got == [(k, k, None) for k in range(40)] + [(None, None, None)]
        else:
            assert got[:fail] == [(k, k, None) for k in range(fail)]
            assert len(got) == fail + 1 and isinstance(got[-1][2], _Boom) and got[-1][:2] == (fail, None)
        assert slots.free_count() == 5, "every slot back after stop()"
        assert not [t for t in threading.enumerate() if t.name.startswith("daqload-loader")]
