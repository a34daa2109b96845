"""The training loader: random excerpts of the cache's training tracks (data.TrainChunks),
batched by a background thread of this process or by DataLoader worker processes, each
torchrun process taking its share of every epoch."""

from __future__ import annotations

from typing import Sequence

import torch
from torch.utils.data import DataLoader

from data import BackgroundLoader, EpochSampler, StemBatch, TrainChunks
from formats.cache import StemCache
from training.distributed import rank_and_world
from utils import SAMPLE_RATE


def make_loader(cache: StemCache, seq_dur: float, samples_per_track: int, augmentations: Sequence[str],
                batch_size: int, workers: int, seed: int, device: torch.device, progress=lambda x, **_: x,
                multiprocessing_context: str | None = None) -> tuple[BackgroundLoader | DataLoader, EpochSampler]:
    """The training loader and its EpochSampler: with workers 0 a data.BackgroundLoader
    (one thread of this process fills the next batch while the device trains), otherwise a
    DataLoader with `workers` processes. multiprocessing_context ('fork', 'spawn', ...;
    None: the platform's default) is how workers start; it needs workers > 0. Batches are
    data.StemBatch of batch_size / world_size excerpts, page-locked when `device` is a GPU;
    for a CPU `device` the background thread also makes their audio."""
    dataset = TrainChunks(cache, cache.names("train"), int(seq_dur * SAMPLE_RATE), samples_per_track, augmentations,
                          seed, progress)
    rank, world = rank_and_world()
    sampler = EpochSampler(len(dataset), seed, rank, world)
    pin = device.type == "cuda"
    if workers == 0:
        return BackgroundLoader(dataset, sampler, batch_size // world, pin, make_audio=device.type == "cpu"), sampler
    loader = DataLoader(dataset, batch_size=batch_size // world, sampler=sampler, num_workers=workers,
                        collate_fn=StemBatch.collate, pin_memory=pin, persistent_workers=True, drop_last=False,
                        multiprocessing_context=multiprocessing_context)
    return loader, sampler
