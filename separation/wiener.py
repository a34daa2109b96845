"""The multichannel Wiener filter refined by expectation-maximisation (norbert's, as
Open-Unmix applies it), in torch on the device of its input: `wiener`, behind phase.py's
"wiener" phase method."""

from __future__ import annotations

import numpy as np
import torch

# Frames per batch of the filter's per-bin channel x channel algebra.
WIENER_BATCH_FRAMES = 200

# The filter's default eps: norbert's own default for single-precision input. Open-Unmix
# passes 1e-10 (inference.py --wiener-eps).
WIENER_EPS = float(np.finfo(np.float32).eps)


def _covariance(y: torch.Tensor) -> torch.Tensor:
    """y (stems, C, F, T) -> sum over frames of y y^H, (stems, F, C, C)."""
    return torch.einsum("scft,sdft->sfcd", y, y.conj())


def _power(y: torch.Tensor) -> torch.Tensor:
    """Each source's power spectral density, its power averaged over channels (norbert's
    model): y (stems, C, F, T) complex -> (stems, F, T) real."""
    return (y.real ** 2 + y.imag ** 2).mean(1)


def _spatial_covariances(y: torch.Tensor, eps: float) -> torch.Tensor:
    """Each source's spatial covariance matrix, the PSD-weighted mean of y y^H over
    frames (norbert's update): sum_t y y^H / (eps + sum_t psd). Accumulated over frame
    batches, to bound memory, in double precision as norbert advises for single-precision
    STFTs (a 60-s segment sums ~2600 frames).

    y (stems, C, F, T) complex -> (stems, F, C, C) complex128."""
    total = torch.zeros((), dtype=torch.complex128, device=y.device)
    weight = torch.full((), eps, dtype=torch.float64, device=y.device)
    for t in range(0, y.shape[-1], WIENER_BATCH_FRAMES):
        batch = y[..., t:t + WIENER_BATCH_FRAMES].to(torch.complex128)
        total = total + _covariance(batch)
        weight = weight + _power(batch).sum(-1)
    return total / weight[..., None, None]


def _solve(matrix: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """matrix^-1 rhs: matrix (..., C, C), rhs (..., C) -> (..., C). Stereo by Cramer's
    rule, as norbert inverts 2 x 2 matrices: linalg.solve's per-matrix overhead made it
    the filter's slowest step on millions of tiny systems."""
    if matrix.shape[-1] != 2:
        return torch.linalg.solve(matrix, rhs)
    a, b, c, d = matrix[..., 0, 0], matrix[..., 0, 1], matrix[..., 1, 0], matrix[..., 1, 1]
    x0, x1 = rhs.unbind(-1)
    return torch.stack((d * x0 - b * x1, a * x1 - c * x0), -1) / (a * d - b * c)[..., None]


def _wiener_frames(mix: torch.Tensor, psd: torch.Tensor, cov: torch.Tensor, eps: float) -> torch.Tensor:
    """The multichannel Wiener estimates v_j R_j Cxx^-1 x for a batch of frames.

    mix (C, F, B) complex, psd (stems, F, B), cov (stems, F, C, C) -> (stems, C, F, B),
    all in cov's precision."""
    channels = mix.shape[0]
    psd = psd.to(cov.dtype)
    # norbert's regulariser keeps Cxx invertible where every source is silent.
    regulariser = eps ** 0.5 * torch.eye(channels, dtype=cov.dtype, device=cov.device)
    mix_cov = regulariser + torch.einsum("sfb,sfcd->fbcd", psd, cov)
    whitened = _solve(mix_cov, mix.to(cov.dtype).permute(1, 2, 0))  # (F, B, C): Cxx^-1 x
    # R_j (Cxx^-1 x) first, a batched matrix product: the three-operand einsum is ten times slower.
    return torch.einsum("sfcd,fbd->scfb", cov, whitened) * psd[:, None]


def _wiener_window(mag: torch.Tensor, mix: torch.Tensor, iterations: int, softmask: bool, eps: float,
                   scale_factor: float) -> torch.Tensor:
    """norbert.wiener(mag, mix, iterations, use_softmask=softmask, eps=eps) on one window
    of frames: mag (stems, C, F, T) real, mix (C, F, T) complex -> (stems, C, F, T) in
    mix's dtype. The estimates are stored in that dtype between iterations; every sum
    and solve runs in double precision, batch by batch (WIENER_BATCH_FRAMES)."""
    if softmask:
        y = mix * (mag / (eps + mag.sum(0)))
    else:
        # The estimates under the mixture's phase (angle 0 where the mixture is exactly 0, as numpy's).
        y = torch.polar(mag, torch.angle(mix).expand_as(mag))
    if iterations == 0:
        return y
    # norbert scales the mixture to a peak of ~scale_factor so that eps is small against
    # every audible bin whatever the STFT's gain.
    scale = max(1.0, float(mix.abs().max()) / scale_factor)
    mix = mix / scale
    y /= scale  # in place, as below: y is this function's own, and a copy is 170 MB per 60 s
    for _ in range(iterations):
        cov = _spatial_covariances(y, eps)
        # Each batch's PSD comes from its own frames, read before they are overwritten.
        for t in range(0, mix.shape[-1], WIENER_BATCH_FRAMES):
            batch = slice(t, t + WIENER_BATCH_FRAMES)
            y[..., batch] = _wiener_frames(mix[..., batch], _power(y[..., batch].to(cov.dtype)), cov, eps)
    return y.mul_(scale)


def wiener(mag: torch.Tensor, mix: torch.Tensor, iterations: int = 1, softmask: bool = True,
           eps: float = WIENER_EPS, win_len: int = 0, scale_factor: float = 10.0) -> torch.Tensor:
    """The multichannel Wiener filter refined by expectation-maximisation: norbert's
    `wiener(mag, mix, iterations, use_softmask=softmask, eps=eps)` on complex128 input.

    mag (stems, C, F, T) real, mix (C, F, T) complex -> (stems, C, F, T) complex.
    Starts from the soft mask mix * mag_j / (eps + sum(mag)) (softmask) or from mag_j
    under the mixture's phase; each iteration estimates every source's power spectral
    density and spatial covariance matrix from the current estimates, then re-separates
    the mixture with the Wiener gains they give.

    win_len > 0 filters each window of win_len frames alone (its own covariances, its own
    scale), as Open-Unmix's Separator does with wiener_win_len=300 and softmask=False,
    eps=1e-10 (in single precision); 0 filters all frames as one window. Mono only (the
    tests; inference runs in stereo) differs from norbert, which adds eps once more to a
    1 x 1 Cxx."""
    frames = mix.shape[-1]
    if not 0 < win_len < frames:
        return _wiener_window(mag, mix, iterations, softmask, eps, scale_factor)
    out = torch.empty(mag.shape, dtype=mix.dtype, device=mix.device)
    for t in range(0, frames, win_len):
        window = slice(t, t + win_len)
        out[..., window] = _wiener_window(mag[..., window], mix[..., window], iterations, softmask, eps, scale_factor)
    return out
