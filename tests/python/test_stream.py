"""RunStream following a run that a real daqd is writing."""

import threading
import time

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import daqload
from daqload.capture import Daqd, simulate
from conftest import build_dir


def _drive(d, events):
    """daq-sim: 2 units for 3 s; a third unit (id 7) joins after 1.2 s; then daqd is stopped."""
    try:
        sim = simulate(build_dir(), d.port, units=2, duration=3, rate=60, background=True)
        time.sleep(1.2)
        sim2 = simulate(build_dir(), d.port, units=1, first_unit=7, duration=1.2, rate=20, background=True)
        for p in (sim, sim2):
            out, err = p.communicate(timeout=30)
            if p.returncode != 0:
                raise RuntimeError(f"daq-sim failed: {err}")
        events["sim_done"] = time.monotonic()
        time.sleep(0.5)
        events["summary"] = d.stop(timeout=30)
        events["stopped"] = time.monotonic()
    except BaseException as e:  # noqa: BLE001 - reported by the test
        events["error"] = e
        d.kill()


@pytest.mark.parametrize("rotate,workers", [(False, 0), (True, 2)])
def test_stream_follows_a_live_run(bins, tmp_path, rotate, workers):
    cfg = "[storage]\nflush_interval_ms = 200\n"
    if rotate:
        cfg += 'rotate_bytes = "8MiB"\nchunk_bytes = "256KiB"\n'
    d = Daqd(build_dir(), tmp_path, "live", config=cfg).start()
    events = {}
    driver = threading.Thread(target=_drive, args=(d, events), daemon=True)
    stream = daqload.RunStream(tmp_path / "live", fields=("raw", "frame_number", "unit"), idle_timeout=20,
                               poll_interval=0.05, reopen_interval=0.5)
    got, first_at = [], None
    driver.start()
    try:
        if workers:
            source = DataLoader(stream, batch_size=16, num_workers=workers, multiprocessing_context="fork")
        else:
            source = (torch.utils.data.default_collate([x]) for x in stream)
        for b in source:
            if first_at is None:
                first_at = time.monotonic()
            for k in range(len(b["unit"])):
                raw = b["raw"][k]
                got.append((int(b["unit"][k]), int(b["frame_number"][k]), int(raw.sum()), int(raw[-1])))
        ended_at = time.monotonic()
    finally:
        driver.join(60)
        d.kill()
    assert "error" not in events, events.get("error")
    assert first_at is not None and first_at < events["sim_done"], "no frame was yielded while the run was growing"
    assert ended_at - events["stopped"] < 8, "the stream did not end promptly after the run was closed"
    if not workers:
        assert stream.ended_by == "stopped_at"
    files = events["summary"]["files"]
    if rotate:
        assert len(files) >= 2
    run = daqload.open_run(files)
    assert 7 in run.units, "the unit that joined mid-run"
    want = []
    for u in run.units:
        r = run.read(u, fields=("raw", "frame_number"))
        raw = r["raw"].astype(np.int64)
        want += list(zip([u] * len(raw), r["frame_number"].tolist(), raw.sum(axis=1).tolist(), raw[:, -1].tolist()))
    assert len(got) == len(set(got)), "a frame was yielded twice"
    assert sorted(got) == sorted(want)
