"""Phase reconstruction: turn the separator's estimates into waveforms.

Every method takes estimate_mag (stems, channels, bins, frames), the mixture's complex
STFT (channels, bins, frames), the output length and the run's PhaseSettings (one frozen
value holding every method's options; each method reads its own fields), and returns
(stems, channels, length) float32 audio. The estimate is a magnitude, except for the
methods marked `complex_estimate` ("model"), which take a complex-mask model's complex
estimate itself; the others apply to the magnitude of such an estimate as to any other.
The vocoder method also takes the trained vocoder, a model loaded with the separators
(processes.LoadedModels). inference.py picks the methods by name from PHASE_METHODS; each
entry also accepts `timings`, a dict in which it records its own wall-clock seconds under
its name, so a caller that runs several methods on one model output can time each, and
says whether it is slow on a CPU (PhaseMethod.cpu_bound), so that a caller can run it in
a pool of processes.

Segments of a long track (segments.separate) are joined by a crossfade, which only
works if both sides of it are nearly the same signal. Every entry therefore also accepts
`lead_in` (stems, channels, samples) float32: the method's own output, from the previous
segment, over the first `samples` of this one (None for a first or only segment). The
methods that make their own phase continue it: Griffin-Lim and MISI hold the STFT frames
the lead-in fully covers to its phase (with the estimate's magnitude) from the first
iteration on, so the iterations make the rest of the segment consistent with it; the
vocoder turns each bin by the constant that aligns it with the lead-in. The mixture
phase and the Wiener filter take their phase from the mixture, the same in every
segment, and ignore it; so does "model", whose complex masks multiply that same mixture
STFT.

The torch iterations run on the device of their input tensors."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch

from separation.mel_vocoder import vocode
from separation.wiener import WIENER_EPS, wiener
from utils import HOP, N_FFT, istft, stft

# Bins (signals x frequencies x frames) per batch of the torch iterations: 128 MB per
# complex64 copy, of which an iteration holds about five. One signal of a 3-minute track
# fills a batch; a longer one goes alone (a Griffin-Lim signal cannot be split in time).
# Larger batches bought no speed on CPU, and these operations already fill a GPU.
MAX_BATCH_BINS = 2**24

GL_BACKENDS = {
    "auto": "torch on CUDA, librosa on the CPU",
    "librosa": "librosa.griffinlim itself, on the CPU",
    "torch": "the same update from the same seeded start, batched over stems and channels on the device",
}


def resolve_gl_backend(requested: str, device: torch.device) -> str:
    """griffinlim's backend on `device`: "auto" is the torch one on CUDA, where librosa would
    leave the GPU idle while the CPU runs every iteration, and librosa.griffinlim (the
    homework's reference) on the CPU, where the torch one is no faster (docs/speed.md)."""
    if requested not in GL_BACKENDS:
        raise ValueError(f"unknown Griffin-Lim backend {requested!r}")
    if requested == "auto":
        return "torch" if device.type == "cuda" else "librosa"
    return requested


@dataclass(frozen=True)
class PhaseSettings:
    """Every phase method's options, inference.py's flags of the same names (whose defaults
    these are; inference.py checks the values). gl_iters: iterations of griffinlim,
    griffinlim-mixinit and misi; gl_momentum: the fast Griffin-Lim momentum; gl_backend:
    griffinlim's backend, resolved for the device (resolve_gl_backend: "librosa" or
    "torch", the CPU's choice by default); wiener_*: the Wiener filter's iterations, soft
    mask start, eps and window (see wiener.wiener); seed: griffinlim's random start."""
    gl_iters: int = 32
    gl_momentum: float = 0.99
    gl_backend: str = "librosa"
    wiener_iters: int = 1
    wiener_softmask: bool = True
    wiener_eps: float = WIENER_EPS
    wiener_win_len: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.gl_backend == "auto" or self.gl_backend not in GL_BACKENDS:
            raise ValueError(f"gl_backend {self.gl_backend!r}: give a resolved backend (resolve_gl_backend)")


# ------------------------------------------------------------------- helpers

def _batches(count: int, bins_each: int) -> Iterator[slice]:
    """Slices of range(count) whose items hold at most MAX_BATCH_BINS bins (at least one item)."""
    size = max(1, MAX_BATCH_BINS // max(1, bins_each))
    for start in range(0, count, size):
        yield slice(start, min(count, start + size))


def _with_magnitude(spec: torch.Tensor, mag: torch.Tensor) -> torch.Tensor:
    """spec's phase under magnitude mag: (..., F, T) complex, (..., F, T) real -> complex.

    librosa's mag * spec / (|spec| + tiny), except on bins below ~1e-19, which stay tiny
    rather than unit. In real arithmetic: torch's complex sgn/abs and complex-by-real
    products are several times slower, and this runs on every bin each iteration."""
    parts = torch.view_as_real(spec)
    real, imag = parts.unbind(-1)
    gain = real.square().addcmul_(imag, imag).clamp_min_(torch.finfo(mag.dtype).tiny).rsqrt_().mul_(mag)
    out = torch.empty_like(parts)
    torch.mul(real, gain, out=out[..., 0])
    torch.mul(imag, gain, out=out[..., 1])
    return torch.view_as_complex(out)


def _lead_in_spectrum(lead_in: np.ndarray | None, device: torch.device) -> torch.Tensor | None:
    """The frames of a segment's STFT that the audio already produced fixes.

    lead_in (..., samples) -> (..., bins, frames) complex, the first frames of its STFT:
    those whose window lies within it (the zero padding before the first sample is the
    same in the segment's own STFT), so they equal the segment's frames if the segment
    starts with this audio. None without a lead-in or one shorter than half a window."""
    if lead_in is None:
        return None
    frames = (lead_in.shape[-1] - N_FFT // 2) // HOP + 1
    if frames <= 0:
        return None
    return stft(torch.from_numpy(lead_in).to(device))[..., :frames]


def _held(known: torch.Tensor | None, mag: torch.Tensor) -> torch.Tensor | None:
    """The frames an iteration holds: known (..., F, P)'s phase under the first P frames
    of mag (..., F, T), the method's own magnitude (the lead-in's may differ a little: it
    comes from the previous segment's estimate). None when known is None."""
    return None if known is None else _with_magnitude(known, mag[..., :known.shape[-1]])


def _hold(spec: torch.Tensor, held: torch.Tensor | None) -> torch.Tensor:
    """spec (..., F, T) with its first frames replaced, in place, by held (..., F, P)."""
    if held is not None:
        spec[..., :held.shape[-1]] = held
    return spec


# ------------------------------------------------------------------- mixture

def mixture_phase_audio(estimate_mag: torch.Tensor, mixture_spec: torch.Tensor, length: int) -> torch.Tensor:
    """Each estimate's magnitude under the mixture's phase, and its ISTFT: estimate_mag
    (..., stems, C, F, T), mixture_spec (..., C, F, T) -> (..., stems, C, length), float32
    on the input's device, differentiable in estimate_mag. A bin where the mixture is
    exactly 0 takes phase 0 (numpy's angle), keeping the estimate's magnitude."""
    angle = torch.angle(mixture_spec).unsqueeze(-4)
    return istft(torch.polar(estimate_mag.to(angle.dtype), angle.expand_as(estimate_mag)), length)


def phase_mixture(estimate_mag: torch.Tensor, mixture_spec: torch.Tensor, length: int,
                  settings: PhaseSettings, lead_in: np.ndarray | None = None) -> np.ndarray:
    """Each estimate takes the mixture's phase. (stems, C, F, T) -> (stems, C, length).
    lead_in is ignored: every segment takes the mixture's own phase, continuous by itself."""
    return mixture_phase_audio(estimate_mag, mixture_spec, length).cpu().numpy()


# --------------------------------------------------------------- Griffin-Lim

def griffinlim_torch(mag: torch.Tensor, init: torch.Tensor, length: int, n_iter: int,
                     momentum: float = 0.99, known: torch.Tensor | None = None) -> torch.Tensor:
    """Fast Griffin-Lim with librosa.griffinlim's exact update, batched over signals.

    mag (signals, bins, frames) real, init (signals, bins, frames) complex unit phase
    -> (signals, length) real. Each step sets the spectrogram to the STFT of its
    inverse minus momentum / (1 + momentum) times the previous such STFT, then keeps
    only its phase under the target magnitude. known (signals, bins, P) complex, when
    given, holds the first P frames at its phase throughout (see _lead_in_spectrum)."""
    beta = momentum / (1 + momentum)
    held = _held(known, mag)
    angles = _hold(_with_magnitude(init, mag), held)
    previous = None
    for _ in range(n_iter):
        rebuilt = stft(istft(angles, length))
        angles = _with_magnitude(rebuilt if previous is None else torch.sub(rebuilt, previous, alpha=beta), mag)
        angles = _hold(angles, held)
        previous = rebuilt
    return istft(angles, length)


def _griffinlim_batched(mag: torch.Tensor, length: int, n_iter: int, momentum: float,
                        init: Callable[[slice], torch.Tensor], known: torch.Tensor | None) -> np.ndarray:
    """mag (stems, C, F, T) -> (stems, C, length): griffinlim_torch over batches of
    signals; init(batch) gives the batch's unit initial phase (batch, F, T); known
    (stems, C, F, P) or None, the frames held (see _lead_in_spectrum)."""
    signals = mag.reshape(-1, *mag.shape[-2:])
    known = None if known is None else known.reshape(-1, *known.shape[-2:])
    out = np.empty((signals.shape[0], length), dtype=np.float32)
    for batch in _batches(signals.shape[0], signals[0].numel()):
        out[batch] = griffinlim_torch(signals[batch], init(batch), length, n_iter, momentum,
                                      None if known is None else known[batch]).cpu().numpy()
    return out.reshape(*mag.shape[:-2], length)


def _librosa_random_init(mag: torch.Tensor, seed: int) -> Callable[[slice], torch.Tensor]:
    """The initial phase librosa.griffinlim(random_state=seed) draws, batch by batch.

    librosa draws one uniform angle per bin of the whole (stems, C, F, T) array in C
    order; drawing consecutive batches from the same RandomState continues that stream,
    so the torch backend starts from librosa's very phases without holding them all."""
    rng = np.random.RandomState(seed)
    shape = mag.shape[-2:]

    def init(batch: slice) -> torch.Tensor:
        draw = rng.random_sample((batch.stop - batch.start, *shape))
        # Single precision from here on: the phasors end up complex64 in librosa too.
        angle = torch.from_numpy(draw).to(mag.device, torch.float32).mul_(2 * np.pi)
        return torch.polar(torch.ones_like(angle), angle)
    return init


def phase_griffinlim(estimate_mag: torch.Tensor, mixture_spec: torch.Tensor, length: int,
                     settings: PhaseSettings, lead_in: np.ndarray | None = None) -> np.ndarray:
    """Griffin-Lim on every stem and channel from librosa's seeded random initial phase.

    backend 'librosa' calls librosa.griffinlim (the reference); 'torch' runs the same
    update from the same initial phase, batched on the input's device. With a lead-in the
    frames it covers are held to its phase, which librosa.griffinlim cannot do: both
    backends then run griffinlim_torch, the same update (tested against librosa's), from
    the same seeded phase elsewhere. (stems, C, F, T) -> (stems, C, length)."""
    known = _lead_in_spectrum(lead_in, estimate_mag.device)
    if settings.gl_backend == "torch" or known is not None:
        return _griffinlim_batched(estimate_mag, length, settings.gl_iters, settings.gl_momentum,
                                   _librosa_random_init(estimate_mag, settings.seed), known)
    import librosa

    return librosa.griffinlim(
        estimate_mag.cpu().numpy(), n_iter=settings.gl_iters, hop_length=HOP, win_length=N_FFT, n_fft=N_FFT,
        window="hann", center=True, length=length, momentum=settings.gl_momentum, random_state=settings.seed,
    ).astype(np.float32)


def phase_griffinlim_mixinit(estimate_mag: torch.Tensor, mixture_spec: torch.Tensor, length: int,
                             settings: PhaseSettings, lead_in: np.ndarray | None = None) -> np.ndarray:
    """The same Griffin-Lim (torch backend) started from the mixture's phase instead of
    a random one (the lead-in's where there is one). (stems, C, F, T) -> (stems, C, length)."""
    mixture_phase = torch.sgn(mixture_spec)
    channels = mixture_spec.shape[0]
    # Signal i of the flattened (stems * C) batch is channel i % C of its stem.
    return _griffinlim_batched(estimate_mag, length, settings.gl_iters, settings.gl_momentum,
                               lambda batch: mixture_phase[torch.arange(batch.start, batch.stop) % channels],
                               _lead_in_spectrum(lead_in, estimate_mag.device))


# ---------------------------------------------------------------------- MISI

def misi(mag: torch.Tensor, mixture_spec: torch.Tensor, length: int, n_iter: int,
         known: torch.Tensor | None = None) -> torch.Tensor:
    """Multiple Input Spectrogram Inversion (Gunawan & Sen 2010), from the mixture phase.

    mag (stems, C, F, T) real, mixture_spec (C, F, T) complex -> (stems, C, length).
    Each step shares the time-domain mixture error equally among the stems, so their sum
    is the mixture, then re-imposes each stem's magnitude on the STFT of the result.
    known (stems, C, F, P) complex, when given, holds the first P frames at its phase
    throughout (see _lead_in_spectrum)."""
    held = _held(known, mag)
    mixture = istft(mixture_spec, length)
    spec = _hold(_with_magnitude(mixture_spec.expand_as(mag), mag), held)
    for _ in range(n_iter):
        signals = istft(spec, length)
        signals += (mixture - signals.sum(0)) / mag.shape[0]
        spec = _hold(_with_magnitude(stft(signals), mag), held)
    return istft(spec, length)


def phase_misi(estimate_mag: torch.Tensor, mixture_spec: torch.Tensor, length: int,
               settings: PhaseSettings, lead_in: np.ndarray | None = None) -> np.ndarray:
    """MISI (torch, batched over channels, which it treats independently).
    (stems, C, F, T) -> (stems, C, length)."""
    stems, channels = estimate_mag.shape[:2]
    known = _lead_in_spectrum(lead_in, estimate_mag.device)
    out = np.empty((stems, channels, length), dtype=np.float32)
    for batch in _batches(channels, stems * estimate_mag[0, 0].numel()):
        out[:, batch] = misi(estimate_mag[:, batch], mixture_spec[batch], length, settings.gl_iters,
                             None if known is None else known[:, batch]).cpu().numpy()
    return out


# -------------------------------------------------------------------- Wiener

def phase_wiener(estimate_mag: torch.Tensor, mixture_spec: torch.Tensor, length: int,
                 settings: PhaseSettings, lead_in: np.ndarray | None = None) -> np.ndarray:
    """Multichannel Wiener / EM post-filter (see wiener.wiener); it changes magnitudes as
    well as phases. (stems, C, F, T) -> (stems, C, length). lead_in is ignored: the filter
    takes its phase from the mixture, the same in every segment."""
    spec = wiener(estimate_mag, mixture_spec, settings.wiener_iters, settings.wiener_softmask, settings.wiener_eps,
                  settings.wiener_win_len)
    return istft(spec, length).cpu().numpy()


# --------------------------------------------------------------------- model

def phase_model(estimate: torch.Tensor, mixture_spec: torch.Tensor, length: int,
                settings: PhaseSettings, lead_in: np.ndarray | None = None) -> np.ndarray:
    """A complex-mask model's own estimate: its ISTFT, phase and all. estimate (stems, C,
    F, T) complex -> (stems, C, length). lead_in is ignored: the estimate is the model's
    masks times the mixture STFT, whose frames fall on the whole track's grid in every
    segment, so two segments' estimates of their overlap differ only as far as the
    model's context does, as with the mixture phase."""
    return istft(estimate, length).cpu().numpy()


# ------------------------------------------------------------------- vocoder

def phase_vocoder(estimate_mag: torch.Tensor, mixture_spec: torch.Tensor, length: int,
                  settings: PhaseSettings, lead_in: np.ndarray | None, vocoder: torch.nn.Module) -> np.ndarray:
    """Every stem and channel through the trained mel vocoder (vocoder.py), which makes
    its own magnitudes and phases from the mel spectrogram of the estimate; the mixture
    is not used. The vocoder must be on the input's device. (stems, C, F, T) -> (stems, C, length)."""
    signals = estimate_mag.reshape(-1, *estimate_mag.shape[-2:])
    known = _lead_in_spectrum(lead_in, estimate_mag.device)
    known = None if known is None else known.reshape(-1, *known.shape[-2:])
    out = np.empty((signals.shape[0], length), dtype=np.float32)
    with torch.no_grad():
        for batch in _batches(signals.shape[0], signals[0].numel()):
            out[batch] = vocode(vocoder, signals[batch], length,
                                None if known is None else known[batch]).cpu().numpy()
    return out.reshape(*estimate_mag.shape[:-2], length)


# ------------------------------------------------------------------ registry

@dataclass(frozen=True)
class PhaseMethod:
    """A phase method by name, called as the method itself; a call also records its
    wall-clock seconds in timings[name] when `timings` is given.

    label: how tables and slides name it. slow_on_cpu: many STFT round trips per estimate
    (minutes per track on one CPU core), so a caller with several cores runs it in a pool
    of processes when it runs on the CPU; the others take seconds and stay where the model
    runs. cpu_backend: the value of gl_backend with which the method runs on the CPU
    whatever the device (librosa). complex_estimate: the method takes the complex
    estimate of a complex-mask model (model.takes_complex) instead of a magnitude, so it
    applies to such models only (applies_to). needs_vocoder: the method takes the trained
    vocoder too."""
    name: str
    label: str
    method: Callable[..., np.ndarray]
    slow_on_cpu: bool = False
    cpu_backend: str | None = None
    complex_estimate: bool = False
    needs_vocoder: bool = False

    def __call__(self, estimate: torch.Tensor, mixture_spec: torch.Tensor, length: int,
                 settings: PhaseSettings = PhaseSettings(), lead_in: np.ndarray | None = None,
                 vocoder: torch.nn.Module | None = None, timings: dict[str, float] | None = None) -> np.ndarray:
        """estimate (stems, C, F, T), mixture_spec (C, F, T) -> (stems, C, length) float32;
        vocoder: the trained vocoder, which only the method that needs_vocoder uses."""
        start = time.perf_counter()
        if not self.needs_vocoder:
            signals = self.method(estimate, mixture_spec, length, settings, lead_in)
        elif vocoder is None:
            raise ValueError(f"the {self.name} phase method needs a trained vocoder (mel_vocoder.Vocoder)")
        else:
            signals = self.method(estimate, mixture_spec, length, settings, lead_in, vocoder)
        # Methods return numpy arrays, so any GPU work has finished when the clock stops.
        if timings is not None:
            timings[self.name] = time.perf_counter() - start
        return signals

    def applies_to(self, complex_estimates: bool) -> bool:
        """Whether the method can turn a model's estimates into waveforms: every method
        takes magnitudes (a complex estimate's among them), "model" complex estimates only."""
        return complex_estimates or not self.complex_estimate

    def cpu_bound(self, device: torch.device, settings: PhaseSettings) -> bool:
        """Whether, with the model's tensors on `device` and these settings, the method
        spends minutes per track on a CPU core."""
        on_cpu = device.type == "cpu" or (self.cpu_backend is not None and settings.gl_backend == self.cpu_backend)
        return self.slow_on_cpu and on_cpu


PHASE_METHODS: dict[str, PhaseMethod] = {m.name: m for m in (
    PhaseMethod("mixture", "mixture phase", phase_mixture),
    PhaseMethod("griffinlim", "Griffin-Lim", phase_griffinlim, slow_on_cpu=True, cpu_backend="librosa"),
    PhaseMethod("griffinlim-mixinit", "GL, mixture init", phase_griffinlim_mixinit, slow_on_cpu=True),
    PhaseMethod("misi", "MISI", phase_misi, slow_on_cpu=True),
    PhaseMethod("wiener", "Wiener/EM", phase_wiener),
    PhaseMethod("vocoder", "mel vocoder", phase_vocoder, needs_vocoder=True),
    PhaseMethod("model", "model's complex estimate", phase_model, complex_estimate=True),
)}


def default_phases(complex_estimates: bool, scoring: bool) -> list[str]:
    """inference.py's --phase when none is given: for models that make complex estimates,
    their own ("model", what train.py validates them on); for magnitude models the mixture
    phase when scoring (Task 1 asks for it) and the Wiener filter when separating files
    (the best-scoring of them on the validation clips: the README's results table)."""
    if complex_estimates:
        return ["model"]
    return ["mixture"] if scoring else ["wiener"]
