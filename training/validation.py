"""Validation after each epoch: each validation track separated once by the function
inference.py uses (separation.segments.separate), giving the --loss of the model's
estimates and the SDR of the output; best.pt is the epoch whose validation SDR is highest."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.distributed as dist

from formats.cache import StemCache, mixture_and_targets
from model import takes_complex
from separation.segments import SEGMENT_OVERLAP, SEGMENT_SAMPLES, SeparationSettings, separate
from training.distributed import all_mean, rank_and_world
from training.loop import batch_targets
from training.losses import LOSSES
from utils import STEMS


@dataclass(frozen=True)
class Validation:
    """One epoch's validation: the mean --loss, and per stem the median over tracks of each
    track's SDR (dB, whole track) of what inference.py outputs by default for the model:
    with the mixture phase (--phase mixture) for a magnitude model, the ISTFT of its own
    estimate (--phase model) for a complex-mask one. best.pt is the epoch whose mean of the
    two stems' SDRs is highest."""
    loss: float
    sdr: dict[str, float]


def best_epoch(history: Sequence[dict]) -> dict:
    """The history row of best.pt: the highest validation SDR (mean of the stems); rows
    without a validation SDR (the first checkpoints' format) rank last, by their validation loss."""
    def rank(row: dict) -> tuple[float, float]:
        sdrs = [row[f"valid_sdr_{stem}"] for stem in STEMS if f"valid_sdr_{stem}" in row]
        return (float(np.mean(sdrs)) if sdrs else -math.inf, -row["valid_loss"])
    return max(history, key=rank)


def track_sdr(estimates: dict[str, np.ndarray], targets: np.ndarray) -> list[float]:
    """Per stem (STEMS order), 10 log10 of the target's energy over the error's, each +1e-8,
    summed over the whole track and both channels. estimates: separate()'s {stem: (samples,
    channels)}; targets (stems, channels, samples)."""
    sdrs = []
    for k, stem in enumerate(STEMS):
        truth = targets[k].astype(np.float64)
        signal = np.square(truth).sum()
        error = np.square(truth - estimates[stem].T.astype(np.float64)).sum()
        sdrs.append(float(10 * np.log10((signal + 1e-8) / (error + 1e-8))))
    return sdrs


@torch.no_grad()
def validate(model: torch.nn.Module, cache: StemCache, names: Sequence[str], device: torch.device,
             loss_name: str = "mse", segment: int = SEGMENT_SAMPLES, overlap: int = SEGMENT_OVERLAP) -> Validation:
    """Loss and SDR over whole validation tracks (no augmentation), from one pass of each
    track through separate(), as inference.py runs it: float32, in segments of `segment`
    samples overlapping by `overlap`, with the phase inference.py uses by default for the
    model. The loss is each segment's --loss on the model's estimates, weighted by the
    segment's frame count; the SDR (track_sdr) is of the separated waveforms. Under torchrun
    each process takes every world_size-th track."""
    model.eval()
    complex_input = takes_complex(model)
    phase = "model" if complex_input else "mixture"
    settings = SeparationSettings(phases=(phase,), segment=segment, overlap=overlap)
    rank, world = rank_and_world()
    weighted_losses, frames = [], 0
    track_sdrs = []  # (stems,) per track
    for name in names[rank::world]:
        stems = torch.from_numpy(np.array(cache.stems(name))).to(device)  # sources, channels, samples
        # mixture, then the stems; channels, samples (summed on the device, as training's are)
        audio = mixture_and_targets(stems)

        def add_loss(start: int, stop: int, estimate: torch.Tensor) -> None:
            nonlocal frames
            _, targets = batch_targets(stems[None, ..., start:stop], device, complex_input)
            weighted_losses.append(LOSSES[loss_name].function(estimate[None], targets) * estimate.shape[-1])
            frames += estimate.shape[-1]

        estimates = separate(model, audio[0].T.cpu().numpy(), settings, device, on_estimate=add_loss)[phase]
        track_sdrs.append(track_sdr(estimates, audio[1:].cpu().numpy()))
    total = torch.stack(weighted_losses).sum() if weighted_losses else torch.zeros((), device=device)
    if world > 1:
        gathered: list[list] = [[] for _ in range(world)]
        dist.all_gather_object(gathered, track_sdrs)
        track_sdrs = [sdr for part in gathered for sdr in part]
    medians = np.median(np.array(track_sdrs), axis=0)
    return Validation(all_mean(total, frames), {stem: float(medians[k]) for k, stem in enumerate(STEMS)})
