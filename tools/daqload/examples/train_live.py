#!/usr/bin/env python3
"""Train the beam-spot model of docs/TRAINING.md on live data: two ranks
under torch.distributed (gloo), each PULLing from the same daqd stream, so
that ZeroMQ spreads the chunks between them (docs/STREAM.md).

    # against a running daqd (daqd --stream tcp://127.0.0.1:5555 ...):
    /usr/bin/python3 tools/daqload/examples/train_live.py --endpoint tcp://127.0.0.1:5555
    # the whole story: starts daqd and daq-sim --detector --beam itself
    /usr/bin/python3 tools/daqload/examples/train_live.py

Each rank reads ``daqload.StreamDataset`` through a DataLoader, the model is
wrapped in DistributedDataParallel, and ``join()`` lets the ranks end with
different numbers of batches (ZeroMQ does not split the frames evenly).
Both ranks end on the run's end-of-run message. Rank 0 prints (and with
--out writes as JSON) the frames each rank trained on, the frames daqd
wrote, and the spot error before and after.
"""

import argparse
import json
import os
import socket
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, os.path.dirname(HERE))  # tools/daqload, when not pip-installed
sys.path.insert(0, HERE)

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

import daqload  # noqa: E402
from train_on_run import SpotNet, loss_and_error, make_inputs  # noqa: E402  (the model of docs/TRAINING.md)


def rank_main(rank, world, master_port, endpoint, batch, result_path):
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(master_port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)  # the same initial weights on every rank (DDP also broadcasts them)
    net = DistributedDataParallel(SpotNet())
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3)
    ds = daqload.StreamDataset(endpoint, fields=("raw", "frame_number"), start_timeout=120)
    loader = DataLoader(ds, batch_size=batch)
    frames, errors, t0 = 0, [], time.monotonic()
    with net.join():  # ranks end with different numbers of batches
        for b in loader:
            x, y = make_inputs(b["raw"], b["frame_number"])
            loss, err = loss_and_error(net, x, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            frames += len(y)
            errors.append(float(err.mean()))
    mine = {"rank": rank, "frames": frames, "batches": len(errors), "first_errors": errors[:3],
            "last_errors": errors[-3:], "end": ds.stats.get("end"), "seconds": time.monotonic() - t0}
    every = [None] * world
    dist.all_gather_object(every, mine)
    if rank == 0:
        end = next((r["end"] for r in every if r["end"]), None) or {}
        first = [e for r in every for e in r["first_errors"]]
        last = [e for r in every for e in r["last_errors"]]
        result = {"world_size": world, "frames_per_rank": [r["frames"] for r in every],
                  "batches_per_rank": [r["batches"] for r in every], "frames_written": end.get("frames_written"),
                  "frames_dropped": end.get("frames_dropped"), "run": end.get("run"),
                  "error_first_px": sum(first) / max(1, len(first)), "error_last_px": sum(last) / max(1, len(last))}
        print(f"== run {result['run']}: ranks trained on {result['frames_per_rank']} frames "
              f"(daqd wrote {result['frames_written']}, stream dropped {result['frames_dropped']}); "
              f"spot error {result['error_first_px']:.1f} px on the first batches, "
              f"{result['error_last_px']:.1f} px on the last", flush=True)
        if result_path:
            with open(result_path, "w") as f:
                json.dump(result, f)
    # The model (its DDP reducer) goes before the process group, once every
    # rank is past its last collective: torch 1.13 can deadlock when the
    # reducer is the last owner of the group at interpreter exit (its
    # destructor joins a gloo thread that waits for the GIL).
    del net, opt
    dist.barrier()
    dist.destroy_process_group()


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--endpoint", help="daqd's stream (stream.listen); default: start daqd and daq-sim here")
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--frames", type=int, default=12000, help="frames daq-sim sends (without --endpoint)")
    ap.add_argument("--build-dir", default=os.path.join(REPO, "build", "release"))
    ap.add_argument("--out", help="write rank 0's result as JSON here")
    a = ap.parse_args()
    if a.endpoint:
        mp.spawn(rank_main, args=(a.ranks, free_port(), a.endpoint, a.batch, a.out), nprocs=a.ranks)
        return
    import tempfile
    from daqload.capture import Daqd, simulate
    from daqload.procs import http, msum, parse_metrics
    stream, web = free_port(), free_port()
    endpoint = f"tcp://127.0.0.1:{stream}"
    out = tempfile.mkdtemp(prefix="daqload-live-")
    with Daqd(a.build_dir, out, time.strftime("live-%Y%m%dT%H%M%S"),
              extra_args=["--stream", endpoint, "--http", f"127.0.0.1:{web}"]) as d:
        ctx = mp.get_context("spawn")
        ranks = mp.start_processes(rank_main, args=(a.ranks, free_port(), endpoint, a.batch, a.out),
                                   nprocs=a.ranks, join=False, start_method="spawn")
        deadline = time.monotonic() + 120
        while True:  # every rank connected before the data flows
            code, text, _ = http("GET", f"http://127.0.0.1:{web}/metrics", 5)
            if code == 200 and (msum(parse_metrics(text), "daq_stream_peers", socket="push") or 0) >= a.ranks:
                break
            if time.monotonic() > deadline:
                sys.exit("the ranks did not connect to daqd's stream within 120 s")
            time.sleep(0.1)
        print(f"== daqd streams at {endpoint}; daq-sim --detector --beam: 1 unit × 4096 channels × {a.frames} frames")
        simulate(a.build_dir, d.port, units=1, channels=4096, frames=a.frames, rate=200,
                 extra_args=["--detector", "--beam"])
        del ctx
    while not ranks.join():  # the end-of-run message (daqd stopped) ends every rank
        pass


if __name__ == "__main__":
    main()
