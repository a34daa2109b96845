"""Helpers shared by the benchmarks; a benchmark run as a script has bench/ on sys.path."""

from __future__ import annotations

import itertools
import os
import threading
from typing import Iterator

import torch
from torch.utils.data import DataLoader

from data import EpochSampler
from utils import UserError


def batches_forever(loader: DataLoader, sampler: EpochSampler, first_epoch: int = 1) -> Iterator[torch.Tensor]:
    """train.make_loader's batches epoch after epoch, each epoch drawing its own excerpts as
    in training, so that a timing may ask for more batches than one epoch of a small cache
    holds (4 tracks x 64 excerpts are 16 batches of 16)."""
    if len(loader) == 0:  # would otherwise loop forever without yielding
        raise UserError("the training loader holds no batches: the cache needs a training track and "
                        "--samples-per-track at least 1")

    def batches() -> Iterator[torch.Tensor]:
        for epoch in itertools.count(first_epoch):
            sampler.set_epoch(epoch)
            yield from loader

    return batches()


def tree_pss(pid: int) -> int:
    """Bytes of PSS of `pid` and all its descendants (0 where /proc cannot tell)."""
    total = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            total += sum(int(line.split()[1]) * 1024 for line in f if line.startswith("Pss:"))
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                total += sum(tree_pss(int(child)) for child in f.read().split())
    except (OSError, ValueError):  # a process that just exited, or no /proc
        pass
    return total


class PeakPss:
    """Samples tree_pss of this process every 50 ms in a thread; .peak is the largest."""

    def __enter__(self) -> "PeakPss":
        self.peak, self._stop = tree_pss(os.getpid()), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, tree_pss(os.getpid()))

    def __exit__(self, *_) -> None:
        self._stop.set()
        self._thread.join()
