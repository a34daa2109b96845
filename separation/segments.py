"""Separating one signal with a trained model: the model's estimates (magnitudes, or a
complex-mask model's complex STFTs), segment by segment for long tracks, turned into
waveforms by the phase methods of phase.py and joined with a crossfade. This is the
library behind inference.py (which scores MUSDB18 tracks through evaluation.py and
separates any audio file through audio_files.py) and train.py's validation.

    estimates = separate(model, mixture, SeparationSettings(("wiener",)), device)["wiener"]
    # {stem: (samples, channels)}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from model import takes_complex
from separation.phase import PHASE_METHODS, PhaseSettings
from utils import HOP, SAMPLE_RATE, STEMS, UserError, stft


@torch.no_grad()
def separate_estimates(model: torch.nn.Module, mixture_spec: torch.Tensor,
                       chunk_frames: int = 2048, context_frames: int = 128) -> torch.Tensor:
    """mixture_spec (channels, bins, frames) complex -> the model's estimates (stems,
    channels, bins, frames): float32 magnitudes from the mixture magnitude, or a
    complex-mask model's complex64 STFTs from the mixture STFT (model.takes_complex).

    Long tracks go through the model in chunks with `context_frames` of overlap on each
    side that are computed and dropped, so the LSTM sees context at chunk edges while
    memory stays bounded."""
    mixture = mixture_spec if takes_complex(model) else mixture_spec.abs()
    frames = mixture.shape[-1]
    out = []
    for start in range(0, frames, chunk_frames):
        lo, hi = max(0, start - context_frames), min(frames, start + chunk_frames + context_frames)
        estimate = model(mixture[None, ..., lo:hi])[0]
        estimate = estimate if estimate.is_complex() else estimate.float()
        out.append(estimate[..., start - lo: start - lo + min(chunk_frames, frames - start)])
    return torch.cat(out, dim=-1)


def check_phases(model: torch.nn.Module, phases: Sequence[str], name: str) -> None:
    """A UserError, before any separation, when a phase method cannot use `model`'s
    estimates (--phase model on a magnitude model); `name` says which model."""
    refused = [phase for phase in phases if not PHASE_METHODS[phase].applies_to(takes_complex(model))]
    if refused:
        raise UserError(f"--phase {' '.join(refused)} needs a model with complex masks (train.py --model bsrnn "
                        f"--mask complex); {name} estimates magnitudes")


# Long tracks are separated in time segments so that peak memory (the STFTs, the model's
# activations, the phase methods' working copies) does not grow with track length. Both
# sizes are multiples of HOP, so every segment's STFT frames fall on the whole track's frame
# grid; neighbouring segments overlap by SEGMENT_OVERLAP samples, joined by a linear crossfade.
SEGMENT_SAMPLES = round(60 * SAMPLE_RATE / HOP) * HOP       # ~60 s
SEGMENT_OVERLAP = round(4 * SAMPLE_RATE / HOP) * HOP        # ~4 s


@dataclass(frozen=True)
class SeparationSettings:
    """How separate() turns a mixture into waveforms: the phase methods to run (names of
    PHASE_METHODS, each one output), their settings, and the segments (samples, multiples
    of HOP; see SEGMENT_SAMPLES) with their crossfaded overlap."""
    phases: tuple[str, ...] = ("mixture",)
    phase: PhaseSettings = PhaseSettings()
    segment: int = SEGMENT_SAMPLES
    overlap: int = SEGMENT_OVERLAP

    def __post_init__(self) -> None:
        object.__setattr__(self, "phases", tuple(self.phases))  # any sequence of names, kept as a tuple
        unknown = [phase for phase in self.phases if phase not in PHASE_METHODS]
        if unknown:
            raise ValueError(f"unknown phase method {unknown[0]!r} (phase methods: {', '.join(PHASE_METHODS)})")
        if not 0 <= self.overlap < self.segment:
            raise ValueError("need 0 <= overlap < segment")


def segment_bounds(length: int, segment: int = SEGMENT_SAMPLES,
                   overlap: int = SEGMENT_OVERLAP) -> list[tuple[int, int]]:
    """[(start, stop)] of the segments covering `length` samples: each `segment` long
    (the last one shorter, but longer than `overlap`), starting every segment - overlap
    samples. One segment, (0, length), when the track fits in one."""
    if not 0 <= overlap < segment:
        raise ValueError("need 0 <= overlap < segment")
    step = segment - overlap
    bounds = [(0, min(segment, length))]
    while bounds[-1][1] < length:
        start = bounds[-1][0] + step
        bounds.append((start, min(start + segment, length)))
    return bounds


def crossfade_weights(start: int, stop: int, length: int, overlap: int = SEGMENT_OVERLAP) -> np.ndarray:
    """Linear fade-in over the first `overlap` samples (unless the segment starts the track)
    and fade-out over the last `overlap` (unless it ends it); the weights of overlapping
    segments sum to one, sample by sample. float32 (stop - start,)."""
    weights = np.ones(stop - start, dtype=np.float32)
    ramp = ((np.arange(overlap) + 0.5) / overlap).astype(np.float32)
    if start > 0:
        weights[:overlap] = ramp
    if stop < length:
        weights[-overlap:] = 1 - ramp
    return weights


class _Joined:
    """One phase method's output over a whole signal, built segment by segment in order:
    each segment continues the previous one's output over the overlap (its lead-in, see
    phase.py) and is crossfaded in. float32 (stems, channels, length)."""

    def __init__(self, phase: str, length: int, channels: int, overlap: int, settings: PhaseSettings,
                 vocoder: torch.nn.Module | None) -> None:
        self.phase, self.length, self.overlap = phase, length, overlap
        self.settings, self.vocoder = settings, vocoder
        self.signal = np.zeros((len(STEMS), channels, length), dtype=np.float32)
        self.lead_in: np.ndarray | None = None  # only the last overlap of the output is kept
        self.seconds = 0.0

    def add(self, start: int, stop: int, estimate: torch.Tensor, mixture_spec: torch.Tensor) -> None:
        """estimate (stems, channels, bins, frames) of separate_estimates, mixture_spec
        (channels, bins, frames), of samples start:stop. A method that takes magnitudes
        gets a complex estimate's magnitude; a magnitude estimate goes through as it is."""
        method = PHASE_METHODS[self.phase]
        if estimate.is_complex() and not method.complex_estimate:
            estimate = estimate.abs()
        timings: dict[str, float] = {}
        piece = method(estimate, mixture_spec, stop - start, self.settings, self.lead_in, self.vocoder, timings)
        self.seconds += timings[self.phase]
        # A track within one segment gets weights of one: exactly the method's own output.
        self.signal[..., start:stop] += piece * crossfade_weights(start, stop, self.length, self.overlap)
        self.lead_in = np.ascontiguousarray(piece[..., piece.shape[-1] - self.overlap:])

    def estimates(self) -> dict[str, np.ndarray]:
        """{stem: (samples, channels)}."""
        return {stem: self.signal[i].T for i, stem in enumerate(STEMS)}


def _mixture_spec(mixture: np.ndarray, device: torch.device) -> torch.Tensor:
    """mixture (samples, channels) -> its STFT (channels, bins, frames) on `device`."""
    return stft(torch.from_numpy(np.ascontiguousarray(mixture.T, dtype=np.float32)).to(device))


class PhaseJob:
    """A phase method deferred by separate_deferring(): the model's estimates of every
    segment of one signal, kept on the CPU, to be turned into waveforms by run(), in this
    process or in a worker (it pickles). run() goes through the segments in order, as
    separate() does, so its result is separate()'s for the same method and settings.
    Holds the mixture and the magnitudes: ~0.4 GB for a 4-minute stereo track (twice the
    magnitudes' share for complex estimates). A method that needs a vocoder cannot be
    deferred: the vocoder stays with the model."""

    def __init__(self, phase: str, mixture: np.ndarray, overlap: int, settings: PhaseSettings) -> None:
        self.phase, self.mixture, self.overlap, self.settings = phase, mixture, overlap, settings
        self.segments: list[tuple[int, int, torch.Tensor]] = []  # (start, stop, estimates)

    def run(self) -> tuple[dict[str, np.ndarray], float]:
        """({stem: (samples, channels)}, seconds the phase method took)."""
        joined = _Joined(self.phase, *self.mixture.shape, self.overlap, self.settings, None)
        for start, stop, estimate in self.segments:
            joined.add(start, stop, estimate, _mixture_spec(self.mixture[start:stop], estimate.device))
        return joined.estimates(), joined.seconds


def separate(model: torch.nn.Module, mixture: np.ndarray, settings: SeparationSettings, device: torch.device,
             vocoder: torch.nn.Module | None = None, timings: dict[str, float] | None = None,
             on_estimate: Callable[[int, int, torch.Tensor], None] | None = None) -> dict[str, dict[str, np.ndarray]]:
    """mixture (samples, channels) -> {phase: {stem: (samples, channels)}} for every phase
    of settings.phases, with the model on `device` (and `vocoder`, --phase vocoder's, there too).

    The model and every phase method run segment by segment (see SEGMENT_SAMPLES); a track
    no longer than one segment is separated whole, exactly as without segmenting. Segments
    run in order, and each phase method gets its previous segment's output over the overlap
    as a lead-in to continue, so that the crossfade joins two versions of one signal rather
    than two unrelated phases (which would dip ~3 dB mid-crossfade). Each phase method's
    seconds, summed over segments, go to timings[phase] when timings is given, and each
    segment's (start, stop, model estimates on the device) to on_estimate when it is given,
    before the phase methods use them (training's validation takes its loss from them). A
    phase method that cannot use the model's estimates (check_phases) is a UserError."""
    estimates, _ = separate_deferring(model, mixture, settings, device, (), vocoder, timings, on_estimate)
    return estimates


def separate_deferring(model: torch.nn.Module, mixture: np.ndarray, settings: SeparationSettings,
                       device: torch.device, defer: Sequence[str], vocoder: torch.nn.Module | None = None,
                       timings: dict[str, float] | None = None,
                       on_estimate: Callable[[int, int, torch.Tensor], None] | None = None
                       ) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, PhaseJob]]:
    """separate(), except for the phases in `defer`, which are not run: (the others'
    {phase: {stem: (samples, channels)}}, {deferred phase: a PhaseJob holding the model's
    estimates}), each job's run() giving the waveforms (and seconds) separate() would, in
    another process (see processes.Workers)."""
    check_phases(model, settings.phases, "the model")
    length, channels = mixture.shape
    joined = {phase: _Joined(phase, length, channels, settings.overlap, settings.phase, vocoder)
              for phase in settings.phases if phase not in defer}
    job_mixture = np.asarray(mixture, dtype=np.float32)  # what _mixture_spec makes of it, in half musdb's float64
    jobs = {phase: PhaseJob(phase, job_mixture, settings.overlap, settings.phase)
            for phase in settings.phases if phase in defer}
    for start, stop in segment_bounds(length, settings.segment, settings.overlap):
        mixture_spec = _mixture_spec(mixture[start:stop], device)
        estimate = separate_estimates(model, mixture_spec)
        if on_estimate is not None:
            on_estimate(start, stop, estimate)
        for method in joined.values():
            method.add(start, stop, estimate, mixture_spec)
        for job in jobs.values():
            job.segments.append((start, stop, estimate.cpu()))
    if timings is not None:
        timings |= {phase: method.seconds for phase, method in joined.items()}
    return {phase: method.estimates() for phase, method in joined.items()}, jobs
