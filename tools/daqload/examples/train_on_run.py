#!/usr/bin/env python3
"""Capture a simulated run with daqd and train a small PyTorch model on it.

The whole user story in one script, on the CPU, in about a minute:

1. start ``daqd --run …`` and feed it with ``daq-sim`` (2 units × 4096 channels),
2. open the run with daqload and load it with ``daqload.Loader``
   (RunDataset + ChunkShuffleSampler; ``--dataloader``: torch's DataLoader
   with the zero-copy ``daqload.collate`` instead, the same batches),
3. train a small convolutional model to find a beam spot, test it on the other unit.

daq-sim's beam (``--beam``) sits still for a whole run, so to have a target
that changes from frame to frame the "beam spot" is painted onto each frame
here: the 4096 samples of a frame become a 64×64 image (daq-sim's test-pattern
ramp, or with ``--detector`` pedestals and noise), and a Gaussian spot is
added at a position that depends on the frame's frame_number. The model sees
only the image and learns the position.

    /usr/bin/python3 tools/daqload/examples/train_on_run.py
    /usr/bin/python3 tools/daqload/examples/train_on_run.py --run runs/beam01.h5 --seconds 30
    /usr/bin/python3 tools/daqload/examples/train_on_run.py --in-subprocess    # the Loader's threads in a child process
    /usr/bin/python3 tools/daqload/examples/train_on_run.py --dataloader --workers 1

Binaries default to build/release of this checkout (--build-dir).
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, os.path.dirname(HERE))  # tools/daqload, when not pip-installed

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

import daqload  # noqa: E402
from daqload.capture import Daqd, find_binaries, simulate  # noqa: E402

SIDE = 64  # 4096 channels = 64 × 64 pixels


def spot_position(frame_number):
    """Where the (synthetic) beam spot of a frame is, in pixels: a fixed
    pseudo-random walk over the frame numbers."""
    f = frame_number.double()
    x = 32 + 22 * torch.sin(f * 0.0137) + 6 * torch.sin(f * 0.291)
    y = 32 + 22 * torch.cos(f * 0.0089) + 6 * torch.sin(f * 0.173 + 1.0)
    return torch.stack([x, y], dim=1).float()


_grid = torch.arange(SIDE, dtype=torch.float32)


def make_inputs(raw, frame_number):
    """Batch from the loader → (images [B,1,64,64], targets [B,2] in [-1,1])."""
    img = raw.float().view(-1, 1, SIDE, SIDE)
    img = (img - img.mean(dim=(2, 3), keepdim=True)) / 4096.0  # the test-pattern ramp, about ±0.5
    pos = spot_position(frame_number)
    gx = torch.exp(-((_grid[None, :] - pos[:, :1]) ** 2) / 8.0)  # sigma 2 px
    gy = torch.exp(-((_grid[None, :] - pos[:, 1:]) ** 2) / 8.0)
    img = img + 0.8 * (gy[:, None, :, None] * gx[:, None, None, :])
    return img, (pos - 32) / 32


class SpotNet(nn.Module):
    """Projects the image onto its two axes (column and row means), runs
    1-D convolutions over each profile and scores every pixel position:
    64-way logits for x and for y. Small enough to train on a CPU in seconds."""

    def __init__(self):
        super().__init__()
        self.profile = nn.Sequential(
            nn.Conv1d(1, 16, 5, padding=2), nn.ReLU(),
            nn.Conv1d(16, 16, 5, padding=2), nn.ReLU(),
            nn.Conv1d(16, 1, 1))

    def forward(self, img):
        img = img[:, 0]
        prof = torch.cat([img.mean(dim=1), img.mean(dim=2)])[:, None]  # x profiles, then y profiles
        logits = self.profile(prof)[:, 0]
        return logits[:len(img)], logits[len(img):]


def loss_and_error(net, x, target):
    """Cross-entropy of both coordinates; mean distance of the argmax in pixels."""
    lx, ly = net(x)
    pos = target * 32 + 32
    tx, ty = pos[:, 0].round().long().clamp(0, SIDE - 1), pos[:, 1].round().long().clamp(0, SIDE - 1)
    loss = nn.functional.cross_entropy(lx, tx) + nn.functional.cross_entropy(ly, ty)
    guess = torch.stack([lx.argmax(dim=1), ly.argmax(dim=1)], dim=1).float()
    return loss, (guess - pos).norm(dim=1)


def sim_has_detector(build_dir):
    """Whether this daq-sim can send detector-like data (--detector)."""
    try:
        bins = find_binaries(build_dir)
        out = subprocess.run([bins["daq-sim"], "--help"], capture_output=True, text=True, timeout=10)
        return "--detector" in out.stdout + out.stderr
    except (OSError, subprocess.SubprocessError):
        return False


def capture(build_dir, out_dir, frames, rate, background):
    name = time.strftime("train-%Y%m%dT%H%M%S")
    if background == "auto":
        background = "detector" if sim_has_detector(build_dir) else "pattern"
    extra = ["--detector"] if background == "detector" else []
    print(f"== daqd --run {name} --output {out_dir}; daq-sim 2 units × 4096 channels × {frames} frames at {rate} Mbit/s"
          f" ({'detector pedestals and noise' if extra else 'test pattern'})")
    with Daqd(build_dir, out_dir, name) as d:
        sent = simulate(build_dir, d.port, units=2, channels=4096, frames=frames, rate=rate, extra_args=extra)
    print(f"   sent {sent['frames_sent']} frames; daqd wrote {d.summary.get('frames_written', '?')} "
          f"into {', '.join(d.summary['files'])}")
    return d.summary["files"]


def evaluate(net, loader):
    net.eval()
    err, n = 0.0, 0
    with torch.no_grad():
        for b in loader:
            x, y = make_inputs(b["raw"], b["frame_number"])
            err += float(loss_and_error(net, x, y)[1].sum())
            n += len(y)
    net.train()
    return err / max(1, n)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", default=os.path.join(REPO, "build", "release"), help="where daqd and daq-sim are")
    ap.add_argument("--out", help="directory for the run (default: a new temporary directory)")
    ap.add_argument("--run", help="train on this existing run (file, series, directory) instead of capturing one")
    ap.add_argument("--frames", type=int, default=6000, help="frames per unit to capture")
    ap.add_argument("--rate", type=float, default=400, help="daq-sim rate, Mbit/s")
    ap.add_argument("--seconds", type=float, default=30, help="training time budget")
    ap.add_argument("--background", choices=("auto", "pattern", "detector"), default="auto",
                    help="what daq-sim sends under the painted spot: its test pattern, or detector-like data "
                         "(--detector: pedestals and noise; 'auto' uses it when daq-sim has it)")
    ap.add_argument("--threads", type=int, default=1, help="daqload.Loader reading threads")
    ap.add_argument("--in-subprocess", action="store_true", help="run the Loader's threads in one child process")
    ap.add_argument("--dataloader", action="store_true",
                    help="load through torch's DataLoader (+ daqload.collate) instead of daqload.Loader")
    ap.add_argument("--workers", type=int, default=1, help="DataLoader workers (with --dataloader)")
    ap.add_argument("--batch", type=int, default=64)
    a = ap.parse_args()
    torch.manual_seed(0)
    # One compute thread: the model is tiny, and the loader needs the other
    # core (OpenMP threads fighting for busy cores cost far more).
    torch.set_num_threads(1)

    files = a.run or capture(a.build_dir, a.out or tempfile.mkdtemp(prefix="daqload-train-"), a.frames, a.rate,
                             a.background)
    run = daqload.open_run(files)
    print(f"== {run}: channels {run.channels}, frames {run.frame_counts}, raw read path: {run.read_path()}")
    if len(run.units) < 2:
        sys.exit("need a run with 2 units: unit 0 trains, the other one tests")
    train_unit, test_unit = run.units[0], run.units[1]
    fields = ("raw", "frame_number")
    train = daqload.RunDataset(run, unit=train_unit, fields=fields, skip_incomplete=True)
    test = daqload.RunDataset(run, unit=test_unit, fields=fields, skip_incomplete=True)
    sampler = daqload.ChunkShuffleSampler(train, seed=0)
    every_6th = range(0, len(test), 6)
    if a.dataloader:
        train_loader = DataLoader(train, batch_size=a.batch, sampler=sampler, collate_fn=daqload.collate,
                                  num_workers=a.workers, persistent_workers=a.workers > 0)
        test_loader = DataLoader(torch.utils.data.Subset(test, every_6th), batch_size=256)
        how = f"DataLoader with {a.workers} worker(s)"
    else:
        # The same batches (dicts of tensors, in the sampler's order), read by daqload's own threads.
        train_loader = daqload.Loader(train, batch_size=a.batch, sampler=sampler, threads=a.threads,
                                      in_subprocess=a.in_subprocess)
        test_loader = daqload.Loader(test, batch_size=256, sampler=every_6th, threads=1)
        how = f"daqload.Loader, {a.threads} thread(s){' in a subprocess' if a.in_subprocess else ''}"
    print(f"== training on unit {train_unit} ({len(train)} frames), testing on every 6th frame of unit {test_unit}, "
          f"{how}, {a.seconds:g} s budget")

    net = SpotNet()
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3)
    print(f"   before training: mean spot error {evaluate(net, test_loader):.1f} px")
    t0, epoch, step = time.monotonic(), 0, 0
    while time.monotonic() - t0 < a.seconds:
        sampler.set_epoch(epoch)
        loss_sum, nb = 0.0, 0
        for b in train_loader:
            x, y = make_inputs(b["raw"], b["frame_number"])
            loss = loss_and_error(net, x, y)[0]
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum, nb, step = loss_sum + float(loss), nb + 1, step + 1
            if time.monotonic() - t0 >= a.seconds:
                break
        epoch += 1
        if epoch > 5 and epoch % 5 and time.monotonic() - t0 < a.seconds:
            continue
        print(f"   epoch {epoch}: {nb} steps, train loss {loss_sum / max(1, nb):.4f}, "
              f"test error {evaluate(net, test_loader):.2f} px ({time.monotonic() - t0:.0f} s)", flush=True)
    err = evaluate(net, test_loader)
    print(f"== done: {step} steps in {time.monotonic() - t0:.0f} s; mean spot error on unit {test_unit}: {err:.2f} px "
          f"(image {SIDE}×{SIDE}, spot sigma 2 px)")
    if not a.dataloader:
        train_loader.close()
        test_loader.close()


if __name__ == "__main__":
    main()
