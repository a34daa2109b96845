"""Training objectives, by name (train.py --loss): how the separator's estimates are
compared with the true stems: magnitude estimates by the magnitude losses, the complex
estimates of a complex-mask model (model.MASKS) by the complex ones. The registry `LOSSES`
feeds the flag, its help text and the report's labels; each entry says which estimates it
compares, and `DEFAULT_LOSSES` is each mask kind's default."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from utils import istft

# Weight of the time-domain term against the spectral MSE, per dB. At the start of training
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
    audio: (batch, stems, channels, samples) true stem waveforms.
    spectrograms: (batch, stems, channels, bins, frames) complex true stem STFTs."""
    magnitudes: torch.Tensor
    audio: torch.Tensor
    spectrograms: torch.Tensor


def magnitude_mse(estimate_mag: torch.Tensor, targets: Targets) -> torch.Tensor:
    """Mean squared error of the magnitudes, both stems: Open-Unmix's loss."""
    return torch.nn.functional.mse_loss(estimate_mag, targets.magnitudes)


def soft_floor_sdr(estimate_audio: torch.Tensor, true_audio: torch.Tensor, floor: torch.Tensor) -> torch.Tensor:
    """10 log10((|s|^2 + floor) / (|s - s_hat|^2 + floor)) in dB over the last axis."""
    signal = true_audio.pow(2).sum(-1)
    error = (true_audio - estimate_audio).pow(2).sum(-1)
    return 10 * torch.log10((signal + floor) / (error + floor))


def negative_sdr(estimate_audio: torch.Tensor, true_audio: torch.Tensor) -> torch.Tensor:
    """-SDR_WEIGHT x the mean SDR (dB) of estimate_audio against true_audio, both (batch,
    stems, channels, samples): per excerpt, stem and channel, floored at SDR_FLOOR of the
    mixture's (the stems' sum's) energy."""
    mixture_energy = true_audio.sum(1, keepdim=True).pow(2).sum(-1)  # batch, 1, channels
    return -SDR_WEIGHT * soft_floor_sdr(estimate_audio, true_audio, SDR_FLOOR * mixture_energy).mean()


def complex_mse(estimate_spec: torch.Tensor, targets: Targets) -> torch.Tensor:
    """Mean squared error of the real and imaginary parts of the complex estimates, both
    stems: estimate_spec (batch, stems, channels, bins, frames) complex."""
    return torch.nn.functional.mse_loss(torch.view_as_real(estimate_spec), torch.view_as_real(targets.spectrograms))


def complex_and_sdr(estimate_spec: torch.Tensor, targets: Targets) -> torch.Tensor:
    """complex_mse plus SDR_WEIGHT x the negative SDR (dB) of the estimates' own waveforms
    (their ISTFT, what inference.py --phase model outputs).

    The default of complex-mask models. The band-split RNN paper trains with a spectral term
    on the real and imaginary parts plus a time-domain term (L1 on both); these are the
    multi-domain loss of CrossNet-Open-Unmix (Sawata et al. 2021, magnitude MSE plus the
    negative SDR) carried to the complex domain. Per bin, the MSE of the real and imaginary
    parts is half the squared complex error |S - S'|^2, of which the magnitude MSE's
    (|S| - |S'|)^2 is the part the phase does not cause: the same units and scale, so
    SDR_WEIGHT keeps neither term swamping the other. And the SDR term is the figure the
    model is scored on, where an L1 waveform term is not. Which works best is for
    measurement (docs/experiments.md)."""
    estimate_audio = istft(estimate_spec, targets.audio.shape[-1])
    return complex_mse(estimate_spec, targets) + negative_sdr(estimate_audio, targets.audio)


@dataclass(frozen=True)
class Loss:
    """function(estimates, targets) -> the loss; mask: the model.MASKS kind whose estimates
    it compares (magnitudes, or complex STFTs)."""
    function: Callable[[torch.Tensor, Targets], torch.Tensor]
    description: str
    mask: str = "magnitude"


LOSSES: dict[str, Loss] = {
    "mse": Loss(magnitude_mse, "MSE of the magnitudes (Open-Unmix)"),
    "complex": Loss(complex_mse, "--mask complex: MSE of the real and imaginary parts of the complex estimates",
                    mask="complex"),
    "complex+sdr": Loss(complex_and_sdr, "--mask complex: complex plus the negative SDR of the estimates' own "
                                         "waveforms (their ISTFT)", mask="complex"),
}
# Each mask kind's --loss when none is given (complex_and_sdr says why complex+sdr).
DEFAULT_LOSSES = {"magnitude": "mse", "complex": "complex+sdr"}


def loss_help() -> str:
    return "; ".join(f"{name}: {loss.description}" for name, loss in LOSSES.items())
