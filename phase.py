"""Phase reconstruction: turn the separator's magnitude estimates into waveforms.

Every method takes estimate_mag (stems, channels, bins, frames), the mixture's complex
STFT (channels, bins, frames) and the output length, and returns (stems, channels,
length) float32 audio. inference.py picks them by name from PHASE_METHODS."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from utils import HOP, N_FFT, istft


def phase_mixture(estimate_mag: torch.Tensor, mixture_spec: torch.Tensor, length: int, **_) -> np.ndarray:
    """Each estimate takes the mixture's phase. (stems, C, F, T) -> (stems, C, length)."""
    spec = torch.polar(estimate_mag, torch.angle(mixture_spec).expand_as(estimate_mag))
    return istft(spec, length).cpu().numpy()


def phase_griffinlim(estimate_mag: torch.Tensor, mixture_spec: torch.Tensor, length: int,
                     gl_iters: int = 32, seed: int = 0, **_) -> np.ndarray:
    """librosa.griffinlim on every stem and channel from its own random initial phase,
    with the separator's STFT settings. (stems, C, F, T) -> (stems, C, length)."""
    import librosa

    return librosa.griffinlim(
        estimate_mag.cpu().numpy(), n_iter=gl_iters, hop_length=HOP, win_length=N_FFT, n_fft=N_FFT,
        window="hann", center=True, length=length, random_state=seed,
    ).astype(np.float32)


PHASE_METHODS: dict[str, Callable[..., np.ndarray]] = {"mixture": phase_mixture, "griffinlim": phase_griffinlim}
