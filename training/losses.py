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
    spectrograms: (batch, stems, channels, bins, frames) complex true stem STFTs, or None.
    The last three exist when training from stems (train.py --data stems).
    stem_weights: (stems,) each stem's weight in the loss (train.py --stem-weights), or None
    for the plain mean over both stems."""
    magnitudes: torch.Tensor
    mixture_spec: torch.Tensor | None = None
    audio: torch.Tensor | None = None
    spectrograms: torch.Tensor | None = None
    stem_weights: torch.Tensor | None = None


def stem_mean(values: torch.Tensor, stem_weights: torch.Tensor | None) -> torch.Tensor:
    """The mean of values (batch, stems, ...), each stem's entries weighted by stem_weights
    (stems,) relative to their mean, so that equal weights give the plain mean."""
    if stem_weights is None:
        return values.mean()
    weights = stem_weights.to(values.device, values.dtype).view(1, -1, *(1,) * (values.dim() - 2))
    return (values * weights).mean() / weights.mean()


def stem_mse(estimate: torch.Tensor, truth: torch.Tensor, stem_weights: torch.Tensor | None) -> torch.Tensor:
    """Mean squared error of estimate against truth, both (batch, stems, ...), per stem_mean.
    Unweighted it is torch's mse_loss itself, so runs without --stem-weights stay
    bit-identical to those from before the flag."""
    if stem_weights is None:
        return torch.nn.functional.mse_loss(estimate, truth)
    return stem_mean((estimate - truth).pow(2), stem_weights)


def magnitude_mse(estimate_mag: torch.Tensor, targets: Targets) -> torch.Tensor:
    """Mean squared error of the magnitudes, both stems: Open-Unmix's loss."""
    return stem_mse(estimate_mag, targets.magnitudes, targets.stem_weights)


def compressed_mse(estimate_mag: torch.Tensor, targets: Targets) -> torch.Tensor:
    """Mean squared error of magnitude ** COMPRESSION."""
    return stem_mse((estimate_mag + COMPRESSION_FLOOR) ** COMPRESSION,
                    (targets.magnitudes + COMPRESSION_FLOOR) ** COMPRESSION, targets.stem_weights)


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


def negative_sdr(estimate_audio: torch.Tensor, true_audio: torch.Tensor,
                 stem_weights: torch.Tensor | None = None) -> torch.Tensor:
    """-SDR_WEIGHT x the mean SDR (dB) of estimate_audio against true_audio, both (batch,
    stems, channels, samples): per excerpt, stem and channel, floored at SDR_FLOOR of the
    mixture's (the stems' sum's) energy; the stems weighted per stem_mean."""
    mixture_energy = true_audio.sum(1, keepdim=True).pow(2).sum(-1)  # batch, 1, channels
    return -SDR_WEIGHT * stem_mean(soft_floor_sdr(estimate_audio, true_audio, SDR_FLOOR * mixture_energy), stem_weights)


def mse_and_sdr(estimate_mag: torch.Tensor, targets: Targets) -> torch.Tensor:
    """Magnitude MSE plus SDR_WEIGHT x the negative SDR (dB) of the mixture-phase waveforms
    (the multi-domain loss of CrossNet-Open-Unmix, Sawata et al. 2021). The SDR is per
    excerpt, stem and channel, floored at SDR_FLOOR of the mixture's energy."""
    if targets.audio is None or targets.mixture_spec is None:
        raise ValueError("the mse+sdr loss needs waveforms: train from stems (--data stems)")
    estimate_audio = mixture_phase_audio(estimate_mag, targets.mixture_spec, targets.audio.shape[-1])
    return magnitude_mse(estimate_mag, targets) + negative_sdr(estimate_audio, targets.audio, targets.stem_weights)


def complex_mse(estimate_spec: torch.Tensor, targets: Targets) -> torch.Tensor:
    """Mean squared error of the real and imaginary parts of the complex estimates, both
    stems: estimate_spec (batch, stems, channels, bins, frames) complex."""
    if targets.spectrograms is None:
        raise ValueError("the complex losses need the stems' STFTs: train from stems (--data stems)")
    return stem_mse(torch.view_as_real(estimate_spec), torch.view_as_real(targets.spectrograms), targets.stem_weights)


def complex_and_sdr(estimate_spec: torch.Tensor, targets: Targets) -> torch.Tensor:
    """complex_mse plus SDR_WEIGHT x the negative SDR (dB) of the estimates' own waveforms
    (their ISTFT, what inference.py --phase model outputs), the time-domain term of mse+sdr.

    The default of complex-mask models. The band-split RNN paper trains with a spectral term
    on the real and imaginary parts plus a time-domain term (L1 on both); these are mse+sdr's
    two terms carried to the complex domain. Per bin, the MSE
    of the real and imaginary parts is half the squared complex error |S - S'|^2, of which
    the magnitude MSE's (|S| - |S'|)^2 is the part the phase does not cause: the same units
    and scale, so SDR_WEIGHT, chosen so that neither of mse+sdr's terms swamps the other,
    keeps that balance. And the SDR term is the figure the model is scored on, where an L1
    waveform term is not. Which works best is for measurement (docs/experiments.md)."""
    if targets.audio is None:
        raise ValueError("the complex+sdr loss needs waveforms: train from stems (--data stems)")
    estimate_audio = istft(estimate_spec, targets.audio.shape[-1])
    return complex_mse(estimate_spec, targets) + negative_sdr(estimate_audio, targets.audio, targets.stem_weights)


@dataclass(frozen=True)
class Loss:
    """function(estimates, targets) -> the loss; mask: the model.MASKS kind whose estimates
    it compares (magnitudes, or complex STFTs); needs_audio: it needs the stems' waveforms
    or STFTs, which only --data stems gives."""
    function: Callable[[torch.Tensor, Targets], torch.Tensor]
    description: str
    needs_audio: bool = False
    mask: str = "magnitude"


LOSSES: dict[str, Loss] = {
    "mse": Loss(magnitude_mse, "MSE of the magnitudes (Open-Unmix)"),
    "compressed": Loss(compressed_mse, f"MSE of magnitude ** {COMPRESSION}"),
    "mse+sdr": Loss(mse_and_sdr, "MSE of the magnitudes plus the negative SDR of the mixture-phase waveforms "
                                 "(CrossNet-Open-Unmix's multi-domain loss; stems only)", needs_audio=True),
    "complex": Loss(complex_mse, "--mask complex: MSE of the real and imaginary parts of the complex estimates "
                                 "(stems only)", needs_audio=True, mask="complex"),
    "complex+sdr": Loss(complex_and_sdr, "--mask complex: complex plus the negative SDR of the estimates' own "
                                         "waveforms (their ISTFT; stems only)", needs_audio=True, mask="complex"),
}
# Each mask kind's --loss when none is given (complex_and_sdr says why complex+sdr).
DEFAULT_LOSSES = {"magnitude": "mse", "complex": "complex+sdr"}


def loss_help() -> str:
    return "; ".join(f"{name}: {loss.description}" for name, loss in LOSSES.items())
