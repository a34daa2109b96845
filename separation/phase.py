"""Phase reconstruction: turn the separator's estimates into waveforms.

Every method takes estimate_mag (stems, channels, bins, frames), the mixture's complex
STFT (channels, bins, frames) and the output length, and returns (stems, channels,
length) float32 audio, and takes its own keyword options (an option it does not take
is an error). The estimate is a magnitude, except for the methods marked
`complex_estimate` ("model"), which take a complex-mask model's complex estimate itself;
the others apply to the magnitude of such an estimate as to any other. inference.py picks them by name from PHASE_METHODS; each entry also
accepts `timings`, a dict in which it records its own wall-clock seconds under its
name, so a caller that runs several methods on one model output can time each, and says
whether it is slow on a CPU (PhaseMethod.cpu_bound), so that a caller can run it in a
pool of processes.

Segments of a long track (separation.separate) are joined by a crossfade, which only
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

import inspect
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Mapping

import numpy as np
import torch

from separation.mel_vocoder import vocode
from utils import HOP, N_FFT, UserError, istft, stft

# Bins (signals x frequencies x frames) per batch of the torch iterations: 128 MB per
# complex64 copy, of which an iteration holds about five. One signal of a 3-minute track
# fills a batch; a longer one goes alone (a Griffin-Lim signal cannot be split in time).
# Larger batches bought no speed on CPU, and these operations already fill a GPU.
MAX_BATCH_BINS = 2**24
# Frames per batch of the Wiener filter's per-bin channel x channel algebra.
WIENER_BATCH_FRAMES = 200


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

def phase_mixture(estimate_mag: torch.Tensor, mixture_spec: torch.Tensor, length: int,
                  lead_in: np.ndarray | None = None) -> np.ndarray:
    """Each estimate takes the mixture's phase. (stems, C, F, T) -> (stems, C, length).
    lead_in is ignored: every segment takes the mixture's own phase, continuous by itself."""
    spec = torch.polar(estimate_mag, torch.angle(mixture_spec).expand_as(estimate_mag))
    return istft(spec, length).cpu().numpy()


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


def phase_griffinlim(estimate_mag: torch.Tensor, mixture_spec: torch.Tensor, length: int,
                     gl_iters: int = 32, gl_momentum: float = 0.99, gl_backend: str = "auto",
                     seed: int = 0, lead_in: np.ndarray | None = None) -> np.ndarray:
    """Griffin-Lim on every stem and channel from librosa's seeded random initial phase.

    backend 'librosa' calls librosa.griffinlim (the reference); 'torch' runs the same
    update from the same initial phase, batched on the input's device; 'auto' picks by
    the device (resolve_gl_backend). With a lead-in the frames it covers are held to its
    phase, which librosa.griffinlim cannot do: both backends then run griffinlim_torch, the
    same update (tested against librosa's), from the same seeded phase elsewhere.
    (stems, C, F, T) -> (stems, C, length)."""
    gl_backend = resolve_gl_backend(gl_backend, estimate_mag.device)
    known = _lead_in_spectrum(lead_in, estimate_mag.device)
    if gl_backend == "torch" or known is not None:
        return _griffinlim_batched(estimate_mag, length, gl_iters, gl_momentum,
                                   _librosa_random_init(estimate_mag, seed), known)
    import librosa

    return librosa.griffinlim(
        estimate_mag.cpu().numpy(), n_iter=gl_iters, hop_length=HOP, win_length=N_FFT, n_fft=N_FFT,
        window="hann", center=True, length=length, momentum=gl_momentum, random_state=seed,
    ).astype(np.float32)


def phase_griffinlim_mixinit(estimate_mag: torch.Tensor, mixture_spec: torch.Tensor, length: int,
                             gl_iters: int = 32, gl_momentum: float = 0.99,
                             lead_in: np.ndarray | None = None) -> np.ndarray:
    """The same Griffin-Lim (torch backend) started from the mixture's phase instead of
    a random one (the lead-in's where there is one). (stems, C, F, T) -> (stems, C, length)."""
    mixture_phase = torch.sgn(mixture_spec)
    channels = mixture_spec.shape[0]
    # Signal i of the flattened (stems * C) batch is channel i % C of its stem.
    return _griffinlim_batched(estimate_mag, length, gl_iters, gl_momentum,
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
               gl_iters: int = 32, lead_in: np.ndarray | None = None) -> np.ndarray:
    """MISI (torch, batched over channels, which it treats independently).
    (stems, C, F, T) -> (stems, C, length)."""
    stems, channels = estimate_mag.shape[:2]
    known = _lead_in_spectrum(lead_in, estimate_mag.device)
    out = np.empty((stems, channels, length), dtype=np.float32)
    for batch in _batches(channels, stems * estimate_mag[0, 0].numel()):
        out[:, batch] = misi(estimate_mag[:, batch], mixture_spec[batch], length, gl_iters,
                             None if known is None else known[:, batch]).cpu().numpy()
    return out


# -------------------------------------------------------------------- Wiener

# The filter's default eps: norbert's own default for single-precision input, which this
# project used before the choice was exposed. Open-Unmix passes 1e-10.
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


def phase_wiener(estimate_mag: torch.Tensor, mixture_spec: torch.Tensor, length: int, wiener_iters: int = 1,
                 wiener_softmask: bool = True, wiener_eps: float = WIENER_EPS, wiener_win_len: int = 0,
                 lead_in: np.ndarray | None = None) -> np.ndarray:
    """Multichannel Wiener / EM post-filter (see wiener); it changes magnitudes as well
    as phases. (stems, C, F, T) -> (stems, C, length). lead_in is ignored: the filter
    takes its phase from the mixture, the same in every segment."""
    spec = wiener(estimate_mag, mixture_spec, wiener_iters, wiener_softmask, wiener_eps, wiener_win_len)
    return istft(spec, length).cpu().numpy()


# --------------------------------------------------------------------- model

def phase_model(estimate: torch.Tensor, mixture_spec: torch.Tensor, length: int,
                lead_in: np.ndarray | None = None) -> np.ndarray:
    """A complex-mask model's own estimate: its ISTFT, phase and all. estimate (stems, C,
    F, T) complex -> (stems, C, length). lead_in is ignored: the estimate is the model's
    masks times the mixture STFT, whose frames fall on the whole track's grid in every
    segment, so two segments' estimates of their overlap differ only as far as the
    model's context does, as with the mixture phase."""
    return istft(estimate, length).cpu().numpy()


# ------------------------------------------------------------------- vocoder

def phase_vocoder(estimate_mag: torch.Tensor, mixture_spec: torch.Tensor, length: int,
                  vocoder: torch.nn.Module | None = None, lead_in: np.ndarray | None = None) -> np.ndarray:
    """Every stem and channel through the trained mel vocoder (vocoder.py), which makes
    its own magnitudes and phases from the mel spectrogram of the estimate; the mixture
    is not used. The vocoder must be on the input's device. (stems, C, F, T) -> (stems, C, length)."""
    if vocoder is None:
        raise ValueError("the vocoder phase method needs vocoder=<a trained mel_vocoder.Vocoder>")
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
    applies to such models only (applies_to).

    A call takes only the method's own options: one it does not take is an error, not
    ignored, so that a misspelt option cannot silently run with the default. A caller
    that holds one set of options for several methods (inference.py's flags) hands each
    method select(options)."""
    name: str
    label: str
    method: Callable[..., np.ndarray]
    slow_on_cpu: bool = False
    cpu_backend: str | None = None
    complex_estimate: bool = False

    @property
    def defaults(self) -> dict[str, object]:
        """The options the method takes and their defaults: its parameters after
        (estimate_mag, mixture_spec, length)."""
        parameters = list(inspect.signature(self.method).parameters.values())[3:]
        return {p.name: p.default for p in parameters}

    def __call__(self, estimate_mag: torch.Tensor, mixture_spec: torch.Tensor, length: int,
                 timings: dict[str, float] | None = None, **options) -> np.ndarray:
        unknown = options.keys() - self.defaults.keys()
        if unknown:
            raise UserError(f"phase method '{self.name}' takes no option {_listed(unknown)} "
                            f"(its options: {_listed(self.defaults)})")
        start = time.perf_counter()
        # Methods return numpy arrays, so any GPU work has finished when the clock stops.
        signals = self.method(estimate_mag, mixture_spec, length, **options)
        if timings is not None:
            timings[self.name] = time.perf_counter() - start
        return signals

    def select(self, options: Mapping[str, object]) -> dict[str, object]:
        """The entries of `options`, a set meant for several methods, that this method
        takes. A name that no phase method takes can only be a misspelling: an error."""
        unknown = options.keys() - PHASE_OPTIONS
        if unknown:
            raise UserError(f"no phase method takes the option {_listed(unknown)} "
                            f"(phase options: {_listed(PHASE_OPTIONS)})")
        return {name: value for name, value in options.items() if name in self.defaults}

    def applies_to(self, complex_estimates: bool) -> bool:
        """Whether the method can turn a model's estimates into waveforms: every method
        takes magnitudes (a complex estimate's among them), "model" complex estimates only."""
        return complex_estimates or not self.complex_estimate

    def cpu_bound(self, device: torch.device, **options) -> bool:
        """Whether, with the model's tensors on `device` and these options (a set for
        several methods, as select() takes), the method spends minutes per track on a CPU core."""
        backend = {**self.defaults, **self.select(options)}.get("gl_backend")
        if backend is not None:
            backend = resolve_gl_backend(backend, device)
        on_cpu = device.type == "cpu" or (self.cpu_backend is not None and backend == self.cpu_backend)
        return self.slow_on_cpu and on_cpu


def _listed(names: Iterable[str]) -> str:
    return ", ".join(sorted(names))


PHASE_METHODS: dict[str, PhaseMethod] = {m.name: m for m in (
    PhaseMethod("mixture", "mixture phase", phase_mixture),
    PhaseMethod("griffinlim", "Griffin-Lim", phase_griffinlim, slow_on_cpu=True, cpu_backend="librosa"),
    PhaseMethod("griffinlim-mixinit", "GL, mixture init", phase_griffinlim_mixinit, slow_on_cpu=True),
    PhaseMethod("misi", "MISI", phase_misi, slow_on_cpu=True),
    PhaseMethod("wiener", "Wiener/EM", phase_wiener),
    PhaseMethod("vocoder", "mel vocoder", phase_vocoder),
    PhaseMethod("model", "model's complex estimate", phase_model, complex_estimate=True),
)}
# Every option some phase method takes: what PhaseMethod.select accepts.
PHASE_OPTIONS = frozenset(name for m in PHASE_METHODS.values() for name in m.defaults)


def default_phases(complex_estimates: bool, scoring: bool) -> list[str]:
    """inference.py's --phase when none is given: for models that make complex estimates,
    their own ("model", what train.py validates them on); for magnitude models the mixture
    phase when scoring (Task 1 asks for it) and the Wiener filter when separating files
    (the best-scoring of them on the validation clips: the README's results table)."""
    if complex_estimates:
        return ["model"]
    return ["mixture"] if scoring else ["wiener"]
