"""ChunkShuffleSampler: shuffled order that keeps reads chunk-sized."""

from __future__ import annotations

import math

import numpy as np
from torch.utils.data import Sampler


def _dist_defaults(num_replicas, rank):
    if num_replicas is None or rank is None:
        try:
            import torch.distributed as dist

            ready = dist.is_available() and dist.is_initialized()
        except Exception:  # pragma: no cover
            ready = False
        if num_replicas is None:
            num_replicas = dist.get_world_size() if ready else 1
        if rank is None:
            rank = dist.get_rank() if ready else 0
    num_replicas, rank = int(num_replicas), int(rank)
    if num_replicas < 1:
        raise ValueError(f"num_replicas must be >= 1, got {num_replicas}")
    if not 0 <= rank < num_replicas:
        raise ValueError(f"rank must be in [0, {num_replicas - 1}], got {rank}")
    return num_replicas, rank


class ChunkShuffleSampler(Sampler):
    """Item order for a RunDataset (anything with ``__len__`` and
    ``chunk_boundaries()``): the stored chunks in a random order, and the
    items of every ``window_chunks`` consecutive chunks (of that order)
    shuffled together. A batch then reads from a few chunks only.

    ``num_replicas``/``rank`` split each epoch's order into contiguous parts,
    one per rank, as DistributedSampler does (default: from torch.distributed
    when it is initialised, else 1 and 0). Without ``drop_last`` the order is
    padded with its first items to a multiple of num_replicas; with it, the
    tail is dropped. ``set_epoch(e)`` picks the epoch (order = f(seed, epoch)).

    Resuming: ``state_dict()`` records the epoch and how many items of it this
    rank has handed out; a new sampler given ``load_state_dict(sd)`` continues
    the same order from there. A DataLoader fetches ahead of the training
    loop (num_workers × prefetch_factor batches); to resume exactly after the
    last *trained* batch, save ``state_dict(position=batches_done * batch_size)``.
    """

    def __init__(self, dataset, *, shuffle=True, seed=0, num_replicas=None, rank=None, drop_last=False,
                 window_chunks=4):
        self.dataset = dataset
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.num_replicas, self.rank = _dist_defaults(num_replicas, rank)
        self.drop_last = bool(drop_last)
        self.window_chunks = max(1, int(window_chunks))
        self.epoch = 0
        self._position = 0  # items of this epoch already handed out
        self._bounds = np.asarray(dataset.chunk_boundaries(), dtype=np.int64)
        n = len(dataset)
        if int(self._bounds[-1]) != n:
            raise ValueError("chunk_boundaries() does not end at len(dataset)")
        R = self.num_replicas
        if self.drop_last and n % R:
            self.num_samples = n // R
        else:
            self.num_samples = math.ceil(n / R)
        self.total_size = self.num_samples * R

    def set_epoch(self, epoch: int) -> None:
        epoch = int(epoch)
        if epoch != self.epoch:
            self.epoch = epoch
            self._position = 0

    def _order(self) -> np.ndarray:
        """The whole epoch's order (all ranks), before padding."""
        n = len(self.dataset)
        if not self.shuffle or n == 0:
            return np.arange(n, dtype=np.int64)
        rng = np.random.default_rng([self.seed, self.epoch])
        b = self._bounds
        lengths = np.diff(b)
        perm = rng.permutation(len(lengths))
        plen = lengths[perm]
        # Items of the chunks in permuted order.
        starts = np.repeat(b[:-1][perm] - np.concatenate(([0], np.cumsum(plen)))[:-1], plen)
        order = starts + np.arange(n, dtype=np.int64)
        # Shuffle inside windows of window_chunks chunks.
        win = np.repeat(np.arange(len(plen)) // self.window_chunks, plen)
        key = win + rng.random(n)
        return order[np.argsort(key, kind="stable")]

    def indices(self) -> np.ndarray:
        """This rank's items of the current epoch, in order (all of them)."""
        order = self._order()
        n = len(order)
        if self.total_size > n:
            pad = self.total_size - n
            reps = math.ceil(pad / max(1, n))
            order = np.concatenate([order] + [order] * reps)[:self.total_size] if n else order
        else:
            order = order[:self.total_size]
        lo = self.rank * self.num_samples
        return order[lo:lo + self.num_samples]

    def __iter__(self):
        mine = self.indices()
        start = self._position
        epoch = self.epoch
        for k, i in enumerate(mine[start:].tolist(), start + 1):
            if self.epoch != epoch:  # set_epoch() called while iterating
                return
            self._position = k
            yield i
        if self.epoch == epoch:
            self._position = 0  # epoch done: the next iteration starts it again

    def __len__(self):
        return self.num_samples - self._position

    def state_dict(self, position=None) -> dict:
        """Where this rank is: epoch and items handed out (or `position`)."""
        return {
            "epoch": self.epoch,
            "position": int(self._position if position is None else position),
            "seed": self.seed,
            "shuffle": self.shuffle,
            "num_replicas": self.num_replicas,
            "rank": self.rank,
            "drop_last": self.drop_last,
            "window_chunks": self.window_chunks,
            "dataset_len": len(self.dataset),
        }

    def load_state_dict(self, sd: dict) -> None:
        for k in ("seed", "shuffle", "num_replicas", "rank", "drop_last", "window_chunks", "dataset_len"):
            mine = len(self.dataset) if k == "dataset_len" else getattr(self, k)
            if k in sd and sd[k] != mine:
                raise ValueError(f"state_dict was saved with {k}={sd[k]!r}, this sampler has {mine!r}")
        pos = int(sd.get("position", 0))
        if not 0 <= pos <= self.num_samples:
            raise ValueError(f"position {pos} out of range 0..{self.num_samples}")
        self.epoch = int(sd.get("epoch", 0))
        self._position = pos
