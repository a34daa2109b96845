"""Helpers shared by the benchmarks; a benchmark run as a script has bench/ on sys.path."""

from __future__ import annotations

import itertools
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
