"""Training objectives, by name (train.py --loss): how the separator's magnitude estimates
are compared with the true stems. The registry `LOSSES` feeds the flag, its help text and
the report's labels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from utils import istft

# Power of the compressed-magnitude loss: 0.3 is the usual compression in speech
# enhancement (it roughly follows loudness perception), so quiet time-frequency regions,
# where vocals and accompaniment bleed into each other, weigh more than under plain MSE.
COMPRESSION = 0.3
# Floor added to magnitudes before compressing: the gradient of m ** 0.3 grows without
# bound at 0. 1e-3 is ~70 dB below a full-scale sine's peak bin on this STFT.
COMPRESSION_FLOOR = 1e-3
# Weight of the time-domain term against the magnitude MSE, per dB. At the start of training
# both terms change by a few units per epoch on this STFT's magnitude scale, so neither
# swamps the other's gradient.
SDR_WEIGHT = 1.0
# The SDR term's soft floor, relative to the mixture's energy (-30 dB): an excerpt whose
# vocals are silent would otherwise have an SDR of -infinity for any non-zero estimate.
SDR_FLOOR = 1e-3


@dataclass(frozen=True)
class Targets:
    """What a training batch is compared with.

    magnitudes: (batch, stems, channels, bins, frames) true stem magnitudes.
    mixture_spec: (batch, channels, bins, frames) complex mixture STFT, or None.
    audio: (batch, stems, channels, samples) true stem waveforms, or None.
    The last two exist when training from stems (train.py --data stems)."""
    magnitudes: torch.Tensor
    mixture_spec: torch.Tensor | None = None
    audio: torch.Tensor | None = None


def magnitude_mse(estimate_mag: torch.Tensor, targets: Targets) -> torch.Tensor:
    """Mean squared error of the magnitudes, both stems: Open-Unmix's loss."""
    return torch.nn.functional.mse_loss(estimate_mag, targets.magnitudes)


def compressed_mse(estimate_mag: torch.Tensor, targets: Targets) -> torch.Tensor:
    """Mean squared error of magnitude ** COMPRESSION."""
    return torch.nn.functional.mse_loss((estimate_mag + COMPRESSION_FLOOR) ** COMPRESSION,
                                        (targets.magnitudes + COMPRESSION_FLOOR) ** COMPRESSION)


def mixture_phase_audio(estimate_mag: torch.Tensor, mixture_spec: torch.Tensor, length: int) -> torch.Tensor:
    """estimate_mag (batch, stems, channels, bins, frames) with the phase of mixture_spec
    (batch, channels, bins, frames) -> waveforms (batch, stems, channels, length): what
    inference.py --phase mixture outputs."""
    phase = mixture_spec / mixture_spec.abs().clamp_min(1e-12)
    return istft(estimate_mag * phase.unsqueeze(1), length)


def soft_floor_sdr(estimate_audio: torch.Tensor, true_audio: torch.Tensor, floor: torch.Tensor) -> torch.Tensor:
    """10 log10((|s|^2 + floor) / (|s - s_hat|^2 + floor)) in dB over the last axis."""
    signal = true_audio.pow(2).sum(-1)
    error = (true_audio - estimate_audio).pow(2).sum(-1)
    return 10 * torch.log10((signal + floor) / (error + floor))


def mse_and_sdr(estimate_mag: torch.Tensor, targets: Targets) -> torch.Tensor:
    """Magnitude MSE plus SDR_WEIGHT x the negative SDR (dB) of the mixture-phase waveforms
    (the multi-domain loss of CrossNet-Open-Unmix, Sawata et al. 2021). The SDR is per
    excerpt, stem and channel, floored at SDR_FLOOR of the mixture's energy."""
    if targets.audio is None or targets.mixture_spec is None:
        raise ValueError("the mse+sdr loss needs waveforms: train from stems (--data stems)")
    estimate_audio = mixture_phase_audio(estimate_mag, targets.mixture_spec, targets.audio.shape[-1])
    mixture_energy = targets.audio.sum(1, keepdim=True).pow(2).sum(-1)  # batch, 1, channels
    sdr = soft_floor_sdr(estimate_audio, targets.audio, SDR_FLOOR * mixture_energy)
    return magnitude_mse(estimate_mag, targets) - SDR_WEIGHT * sdr.mean()


@dataclass(frozen=True)
class Loss:
    function: Callable[[torch.Tensor, Targets], torch.Tensor]
    description: str
    needs_audio: bool = False


LOSSES: dict[str, Loss] = {
    "mse": Loss(magnitude_mse, "MSE of the magnitudes (Open-Unmix)"),
    "compressed": Loss(compressed_mse, f"MSE of magnitude ** {COMPRESSION}"),
    "mse+sdr": Loss(mse_and_sdr, "MSE of the magnitudes plus the negative SDR of the mixture-phase waveforms "
                                 "(CrossNet-Open-Unmix's multi-domain loss; stems only)", needs_audio=True),
}


def loss_help() -> str:
    return "; ".join(f"{name}: {loss.description}" for name, loss in LOSSES.items())
