"""daqload — read daqd run files (format daq1-run) from Python and PyTorch.

- ``open_run(paths)`` → ``Run``: units, channels, frame counts, attributes,
  ``read(unit, start, stop, fields)`` → numpy arrays. A master file of a run
  of several hosts (daqctl) opens as the whole run; ``Run.detector()`` →
  ``DetectorView``, every unit of a frame side by side.
- ``RunDataset``: a map-style torch Dataset, one item per frame (or window).
- ``ChunkShuffleSampler``: shuffled, chunk-local order; ranks; resumable.
- ``RunStream``: an IterableDataset following a run while daqd writes it.
- ``StreamDataset``: an IterableDataset of the frames a daqd server streams
  live over ZeroMQ (docs/STREAM.md); ``StreamClient`` / ``decode_chunk`` the
  lower level.
- ``collate``: the DataLoader collate_fn that keeps RunDataset batches as read.
- ``Loader``: daqload's own batch loader (threads, or threads in one
  subprocess; shared-memory batches; pinned buffers and CUDA copies).

Reading uses ``os``-level ``preadv`` from a thread pool for uncompressed
chunks of closed files; bitshuffle/LZ4 chunks (compressed runs) are read with
pread and decompressed by the native extension ``daqload._native`` on the same
threads; h5py (+ hdf5plugin) otherwise (``Run.read_path()``: 'pread',
'pread+bslz4', 'h5py' or 'mixed', logged on the ``daqload`` logger). See
docs/TRAINING.md and tools/daqload/README.md.
"""

from ._errors import DaqloadError, DamagedChunkError, MissingFieldError, RunFormatError, RunNotFoundError
from ._run import ALL_FIELDS, FORMAT_NAME, SUPPORTED_FORMAT_VERSIONS, DetectorView, Run, open_run, resolve_paths

__version__ = "0.1.0"

__all__ = [
    "ALL_FIELDS", "FORMAT_NAME", "SUPPORTED_FORMAT_VERSIONS",
    "DaqloadError", "DamagedChunkError", "MissingFieldError", "RunFormatError", "RunNotFoundError",
    "Run", "DetectorView", "open_run", "resolve_paths",
    "RunDataset", "FrameBatch", "collate", "ChunkShuffleSampler", "RunStream", "Loader", "LoaderError",
    "StreamDataset", "StreamClient", "decode_chunk",
]


def __getattr__(name):
    # torch is optional for open_run/Run: import the torch parts on first use.
    if name in ("RunDataset", "FrameBatch", "collate", "RAW_DTYPES"):
        from . import dataset
        return getattr(dataset, name)
    if name == "ChunkShuffleSampler":
        from .sampler import ChunkShuffleSampler
        return ChunkShuffleSampler
    if name in ("Loader", "LoaderError"):
        from . import loader
        return getattr(loader, name)
    if name == "RunStream":
        from .stream import RunStream
        return RunStream
    if name in ("StreamDataset", "StreamClient", "decode_chunk", "StreamError"):
        from . import live
        return getattr(live, name)
    raise AttributeError(f"module 'daqload' has no attribute {name!r}")
