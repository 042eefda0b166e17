"""Fixtures for the daqload tests.

Run files come from the real daqd + daq-sim (found under $DAQD_BUILD_DIR,
default build/release of this checkout; tests that need them are skipped
with a message when they are not built), plus small files written with h5py
for the error cases and the h5py fallback paths.

daqload's native extension (daqload._native, the compressed fast path) is
built first, in place (tools/daqload: `setup.py build_ext --inplace`, which
rebuilds only when _native.cpp or the codec header changed; the build
directory is tools/daqload/build, both ignored by git). Tests that need it
fail with the compiler's output when it cannot be built.
"""

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
DAQLOAD_DIR = REPO / "tools" / "daqload"
sys.path.insert(0, str(DAQLOAD_DIR))


def _build_native():
    """Builds daqload._native next to its sources; returns None or what went wrong."""
    try:
        r = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=DAQLOAD_DIR,
                           capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    return None if r.returncode == 0 else f"exit {r.returncode}\n{r.stdout}\n{r.stderr}"


NATIVE_BUILD_ERROR = _build_native()

from daqload.capture import capture_run, find_binaries  # noqa: E402

CHANNELS = 4096
FRAMES = 3000
UNITS = 2
INV13 = pow(13, -1, 65536)


def build_dir() -> Path:
    d = Path(os.environ.get("DAQD_BUILD_DIR", "build/release"))
    return d if d.is_absolute() else REPO / d


@pytest.fixture(scope="session")
def bins():
    try:
        return find_binaries(build_dir())
    except FileNotFoundError as e:
        pytest.skip(f"{e} [DAQD_BUILD_DIR={build_dir()}]")


@pytest.fixture(scope="session")
def runs_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="session")
def plain_run(bins, runs_dir):
    """2 units x 4096 channels x 3000 frames, one file, 1 MiB chunks, no injected faults."""
    return capture_run(build_dir(), runs_dir, "plain", units=UNITS, channels=CHANNELS, frames=FRAMES, rate=800)


@pytest.fixture(scope="session")
def rotated_run(bins, runs_dir):
    """The same shape rotated every 16 MiB (3 files), 256 KiB chunks (32 rows), 0.2 % packet loss."""
    cfg = '[storage]\nrotate_bytes = "16MiB"\nchunk_bytes = "256KiB"\n'
    files = capture_run(build_dir(), runs_dir, "rot", units=UNITS, channels=CHANNELS, frames=FRAMES, rate=800,
                        config=cfg, sim_args=["--loss", "0.002", "--seed", "7"])
    assert len(files) >= 2
    return files


@pytest.fixture(params=["plain", "rotated"])
def any_run(request):
    return request.getfixturevalue(request.param + "_run")


@pytest.fixture(scope="session")
def native():
    """daqload._native, built by this conftest."""
    if NATIVE_BUILD_ERROR is not None:
        pytest.fail(f"daqload._native could not be built (tools/daqload: setup.py build_ext --inplace): "
                    f"{NATIVE_BUILD_ERROR}")
    from daqload import _native
    return _native


CALIBRATE = '[processing]\nstages = ["calibrate"]\n'  # runs with a calibrated field too
BSLZ4 = '[storage]\ncompression = "bslz4"\n'


@pytest.fixture(scope="session")
def plain_pair(bins, runs_dir):
    """The same traffic as plain_run (with the calibrate stage: raw and calibrated)
    recorded by daqd with storage.compression = "bslz4" and uncompressed:
    (compressed files, uncompressed files). No faults: the two hold the same
    frames, samples and missing_packets (timestamp_ns is the time of arrival)."""
    d = runs_dir / "pair"
    args = dict(units=UNITS, channels=CHANNELS, frames=FRAMES, rate=800)
    packed = capture_run(build_dir(), d, "plainz", config=CALIBRATE + BSLZ4, **args)
    raw = capture_run(build_dir(), d, "plain", config=CALIBRATE, **args)
    return packed, raw


@pytest.fixture(scope="session")
def rotated_pair(bins, runs_dir):
    """As rotated_run (256 KiB chunks: 32 rows, 0.2 % packet loss, seed 7),
    compressed and not, rotated into several files each (every 768 KiB stored
    compressed, 16 MiB uncompressed: rotation counts stored bytes). No
    calibrate stage: with it, daqd (as of this writing) rotates compressed
    runs after far fewer stored bytes than rotate_bytes."""
    d = runs_dir / "pair"
    args = dict(units=UNITS, channels=CHANNELS, frames=FRAMES, rate=800, sim_args=["--loss", "0.002", "--seed", "7"])
    chunks = '[storage]\nchunk_bytes = "256KiB"\n'
    packed = capture_run(build_dir(), d, "rotz", config=chunks + 'compression = "bslz4"\nrotate_bytes = "768KiB"\n',
                         **args)
    raw = capture_run(build_dir(), d, "rot", config=chunks + 'rotate_bytes = "16MiB"\n', **args)
    assert len(packed) >= 2 and len(raw) >= 2
    return packed, raw


@pytest.fixture(scope="session")
def plain_bslz4(plain_pair):
    """A compressed run written by daqd: 2 units x 4096 channels x 3000 frames, 1 MiB chunks (128 rows), one file."""
    return plain_pair[0]


@pytest.fixture(params=["plain", "rotated"])
def any_pair(request):
    """(compressed files, the same traffic recorded uncompressed)."""
    return request.getfixturevalue(request.param + "_pair")


def h5py_unit(files, unit, field):
    """A field of one unit over a run's files, concatenated, read with plain h5py."""
    parts = []
    for p in files:
        with h5py.File(p, "r") as f:
            g = f["units"].get(f"u{unit}")
            if g is not None and field in g:
                parts.append(g[field][:])
    return np.concatenate(parts)


def pattern(frame_numbers, units, channels=CHANNELS):
    """The test pattern daq-sim sends: (f*7 + u*13 + c) mod 65536."""
    f = np.asarray(frame_numbers, dtype=np.int64)[:, None]
    u = np.asarray(units, dtype=np.int64)[:, None]
    return ((f * 7 + u * 13 + np.arange(channels)[None, :]) % 65536).astype(np.int64)


def write_run_file(path, *, units=None, channels=64, fmt="daq1-run", version=1, stopped=True, run_name="crafted",
                   compression=None, chunk_rows=16, calibrated=False, allocate=True, started_at="2026-01-01T00:00:00.000Z"):
    """A small daq1-like run file written with h5py (test pattern data)."""
    units = {0: 100} if units is None else units
    with h5py.File(path, "w", libver="latest") as f:
        if fmt is not None:
            f.attrs["format"] = fmt
        if version is not None:
            f.attrs["format_version"] = np.int32(version)
        f.attrs["run_name"] = run_name
        f.attrs["started_at"] = started_at
        if stopped:
            f.attrs["stopped_at"] = "2026-01-01T00:01:00.000Z"
        ug = f.create_group("units")
        for u, n in units.items():
            g = ug.create_group(f"u{u}")
            g.attrs["unit_id"] = np.int32(u)
            g.attrs["channels"] = np.int32(channels)
            fn = np.arange(n, dtype=np.uint64) + 10
            raw = pattern(fn, np.full(n, u), channels).astype(np.uint16)
            kw = dict(chunks=(chunk_rows, channels), maxshape=(None, channels), compression=compression)
            d = g.create_dataset("raw", shape=(n, channels), dtype="<u2", **kw)
            if allocate:
                d[...] = raw
            else:  # only every other chunk stored: the rest reads as zeros
                for c in range(0, n, 2 * chunk_rows):
                    d[c:c + chunk_rows] = raw[c:c + chunk_rows]
            g.create_dataset("frame_number", data=fn, chunks=(chunk_rows,), maxshape=(None,))
            g.create_dataset("timestamp_ns", data=fn * 1000 + 5, chunks=(chunk_rows,), maxshape=(None,))
            mp = np.zeros(n, dtype=np.uint16)
            mp[3::17] = 2
            g.create_dataset("missing_packets", data=mp, chunks=(chunk_rows,), maxshape=(None,))
            if calibrated:
                g.create_dataset("calibrated", data=raw.astype(np.float32) * 0.5, chunks=(chunk_rows, channels),
                                 maxshape=(None, channels), compression=compression)
    return str(path)
