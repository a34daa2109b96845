"""Separate MUSDB18 tracks with trained checkpoints and score them with museval
(BSSEval v4, 1-second frames; median over frames per track, then median over tracks).

    python inference.py --root /path/to/musdb18                       # test set, best.pt
    python inference.py --root /path/to/musdb18 --phase griffinlim
    python inference.py --root R --checkpoint checkpoints/epoch_025.pt checkpoints/epoch_050.pt checkpoints/epoch_150.pt
    python inference.py --root R --subset train --split valid         # the 14 validation tracks
    python inference.py --root R --phase mixture vocoder --vocoder checkpoints/vocoder.pt
    python inference.py --input song.mp3 live.flac                    # any audio files -> separated/<name>/ (wiener)
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Hashable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from checkpoint import load_separator, load_vocoder
from data import check_track, open_musdb, select_tracks
from model import STEMS
from phase import PHASE_METHODS, WIENER_EPS
from utils import (HOP, OUTPUT_FORMATS, SAMPLE_RATE, HelpFormatter, UserError, add_debug_flag, audio_info,
                   read_audio_any, resample, resolve_device, run_cli, save_audio, stft, write_text)

SAMPLE_SECONDS = 30.0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--root", default=None, help="MUSDB18 root (default: $MUSDB_PATH, else the 7-second previews)")
    g.add_argument("--is-wav", action="store_true", help="the root is MUSDB18-HQ (WAV folders)")
    g.add_argument("--subset", default="test", choices=("train", "test"), help="MUSDB18 subset to separate")
    g.add_argument("--split", default=None, choices=("train", "valid"),
                   help="with --subset train: musdb's training or validation split")
    g.add_argument("--tracks", nargs="+", default=None, help="only these tracks")
    g.add_argument("--input", nargs="+", default=None, metavar="FILE",
                   help="separate these audio files instead of MUSDB18 (any format libsndfile or ffmpeg reads, "
                        "any sample rate, mono or stereo); writes <out>/<file stem>/{vocals,accompaniment}.<format>, "
                        "scores nothing; --root, --subset, --split and --tracks are not used")
    g = p.add_argument_group("separation")
    g.add_argument("--checkpoint", nargs="+", default=["checkpoints/best.pt"],
                   help="one or more checkpoints; each gets its own row of results")
    g.add_argument("--phase", nargs="+", default=None, choices=list(PHASE_METHODS),
                   help="one or more (the model runs once per track, each gets its own row of results; default "
                        "mixture when evaluating, as Task 1 asks, and wiener with --input, the best-sounding: "
                        "+1.6 dB vocals SDR over mixture on clips outside the training set). "
                        "mixture: copy the mixture phase; griffinlim: librosa.griffinlim on each estimate from "
                        "a random phase (Task 2's reference); griffinlim-mixinit: the same iteration from the "
                        "mixture phase; misi: Multiple Input Spectrogram Inversion, all stems jointly kept "
                        "summing to the mixture; wiener: Open-Unmix's multichannel Wiener/EM post-filter; "
                        "vocoder: the mel vocoder of --vocoder makes each estimate's waveform from its mel "
                        "spectrogram alone")
    g.add_argument("--gl-iters", type=int, default=32,
                   help="iterations of griffinlim, griffinlim-mixinit and misi")
    g.add_argument("--gl-momentum", type=float, default=0.99,
                   help="fast Griffin-Lim momentum of griffinlim and griffinlim-mixinit (librosa's default)")
    g.add_argument("--gl-backend", default="librosa", choices=("librosa", "torch"),
                   help="backend of griffinlim: librosa (librosa.griffinlim itself) or torch (the same update "
                        "from the same seeded start, batched over stems and channels on --device; the fast "
                        "one, choose it for many tracks). griffinlim-mixinit and misi always run in torch")
    g.add_argument("--wiener-iters", type=int, default=1,
                   help="EM iterations of wiener (0: its initial estimate alone; Open-Unmix: 1)")
    g.add_argument("--wiener-softmask", action=argparse.BooleanOptionalAction, default=True,
                   help="wiener starts from the soft mask mixture * |estimate| / sum of |estimates|; with "
                        "--no-wiener-softmask from each |estimate| under the mixture's phase, as Open-Unmix does")
    g.add_argument("--wiener-eps", type=float, default=WIENER_EPS,
                   help="wiener's eps, the power of the white noise it leaves out (Open-Unmix: 1e-10)")
    g.add_argument("--wiener-win-len", type=int, default=0, metavar="FRAMES",
                   help="wiener filters each window of this many frames alone, with covariances from that "
                        "window only (Open-Unmix: 300); 0: each whole segment of inference at once")
    g.add_argument("--vocoder", default=None, metavar="PATH",
                   help="checkpoint written by vocoder.py; needed by (and only used by) --phase vocoder")
    g.add_argument("--seed", type=int, default=0, help="seed of griffinlim's random initial phase")
    g.add_argument("--device", default="auto", help="auto, cpu or cuda")
    g.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="processes that separate several tracks or files at once. On the CPU each one runs a "
                        "whole track (file): the model, the phase methods, museval and the writing of estimates, "
                        "samples or --input's stems, with its own copy of the models and cores / N threads. On a "
                        "GPU the model runs in the main process and they run museval, the writing and the phase "
                        "methods that are slow on a CPU (griffinlim's librosa backend) meanwhile. 0 or 1: all in "
                        "the main process, one after another")
    g = p.add_argument_group("output")
    g.add_argument("--out", default=None,
                   help="results go to <out>/<checkpoint name>-<phase>/ (default results); with --input, "
                        "stems go to <out>/<file stem>/ (default separated)")
    g.add_argument("--format", default="wav", choices=OUTPUT_FORMATS, help="with --input: format of the stems written")
    g.add_argument("--save-estimates", action="store_true",
                   help="also write full-length estimates to <out>/<checkpoint>-<phase>/estimates/<track>/")
    g.add_argument("--samples", type=int, default=3, help="tracks to write listening excerpts for")
    g.add_argument("--samples-dir", default="samples", help="excerpts go to <samples-dir>/<checkpoint>-<phase>/<track>/")
    add_debug_flag(p)
    return p


# ------------------------------------------------------------------ separation

@torch.no_grad()
def separate_magnitudes(model: torch.nn.Module, mixture_spec: torch.Tensor,
                        chunk_frames: int = 2048, context_frames: int = 128) -> torch.Tensor:
    """mixture_spec (channels, bins, frames) complex -> magnitudes (stems, channels, bins, frames).

    Long tracks go through the model in chunks with `context_frames` of overlap on each
    side that are computed and dropped, so the LSTM sees context at chunk edges while
    memory stays bounded."""
    mixture_mag = mixture_spec.abs()
    frames = mixture_mag.shape[-1]
    out = []
    for start in range(0, frames, chunk_frames):
        lo, hi = max(0, start - context_frames), min(frames, start + chunk_frames + context_frames)
        estimate = model(mixture_mag[None, ..., lo:hi])[0].float()
        out.append(estimate[..., start - lo: start - lo + min(chunk_frames, frames - start)])
    return torch.cat(out, dim=-1)


# Long tracks are separated in time segments so that peak memory (the STFTs, the model's
# activations, the phase methods' working copies) does not grow with track length. Both
# sizes are multiples of HOP, so every segment's STFT frames fall on the whole track's frame
# grid; neighbouring segments overlap by SEGMENT_OVERLAP samples, joined by a linear crossfade.
SEGMENT_SAMPLES = round(60 * SAMPLE_RATE / HOP) * HOP       # ~60 s
SEGMENT_OVERLAP = round(4 * SAMPLE_RATE / HOP) * HOP        # ~4 s


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

    def __init__(self, phase: str, length: int, channels: int, overlap: int, options: dict) -> None:
        self.phase, self.length, self.overlap = phase, length, overlap
        self.options = PHASE_METHODS[phase].select(options)  # the flags of every --phase: take this one's
        self.signal = np.zeros((len(STEMS), channels, length), dtype=np.float32)
        self.lead_in: np.ndarray | None = None  # only the last overlap of the output is kept
        self.seconds = 0.0

    def add(self, start: int, stop: int, estimate_mag: torch.Tensor, mixture_spec: torch.Tensor) -> None:
        """estimate_mag (stems, channels, bins, frames), mixture_spec (channels, bins, frames)
        of samples start:stop."""
        timings: dict[str, float] = {}
        piece = PHASE_METHODS[self.phase](estimate_mag, mixture_spec, stop - start, timings=timings,
                                          lead_in=self.lead_in, **self.options)
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
    """A phase method deferred by separate(): the model's magnitudes of every segment of
    one signal, kept on the CPU, to be turned into waveforms by run(), in this process or
    in a worker (it pickles). run() goes through the segments in order, as separate()
    does, so its result is separate()'s for the same method and options. Holds the
    mixture and the magnitudes: ~0.4 GB for a 4-minute stereo track."""

    def __init__(self, phase: str, mixture: np.ndarray, overlap: int, options: dict) -> None:
        self.phase, self.mixture, self.overlap, self.options = phase, mixture, overlap, options
        self.segments: list[tuple[int, int, torch.Tensor]] = []  # (start, stop, magnitudes)

    def run(self) -> tuple[dict[str, np.ndarray], float]:
        """({stem: (samples, channels)}, seconds the phase method took)."""
        joined = _Joined(self.phase, *self.mixture.shape, self.overlap, self.options)
        for start, stop, estimate_mag in self.segments:
            joined.add(start, stop, estimate_mag, _mixture_spec(self.mixture[start:stop], estimate_mag.device))
        return joined.estimates(), joined.seconds


def separate(model: torch.nn.Module, mixture: np.ndarray, phases: Sequence[str], device: torch.device,
             segment: int = SEGMENT_SAMPLES, overlap: int = SEGMENT_OVERLAP, timings: dict[str, float] | None = None,
             defer: Sequence[str] = (), **phase_options) -> dict[str, dict[str, np.ndarray] | PhaseJob]:
    """mixture (samples, channels) -> {phase: {stem: (samples, channels)}}.

    The model and every phase method run segment by segment (see SEGMENT_SAMPLES); a track
    no longer than one segment is separated whole, exactly as without segmenting. Segments
    run in order, and each phase method gets its previous segment's output over the overlap
    as a lead-in to continue, so that the crossfade joins two versions of one signal rather
    than two unrelated phases (which would dip ~3 dB mid-crossfade). Each phase method's
    seconds, summed over segments, go to timings[phase] when timings is given.

    The phases in `defer` are not run: their entry is a PhaseJob holding the magnitudes,
    whose run() gives the same estimates (and seconds) elsewhere (see Workers)."""
    length, channels = mixture.shape
    joined = {phase: _Joined(phase, length, channels, overlap, phase_options) for phase in phases if phase not in defer}
    # Models (the vocoder) stay in this process: no deferred method uses one.
    job_options = {k: v for k, v in phase_options.items() if not isinstance(v, torch.nn.Module)}
    job_mixture = np.asarray(mixture, dtype=np.float32)  # what _mixture_spec makes of it, in half musdb's float64
    jobs = {phase: PhaseJob(phase, job_mixture, overlap, job_options) for phase in phases if phase in defer}
    for start, stop in segment_bounds(length, segment, overlap):
        mixture_spec = _mixture_spec(mixture[start:stop], device)
        estimate_mag = separate_magnitudes(model, mixture_spec)
        for method in joined.values():
            method.add(start, stop, estimate_mag, mixture_spec)
        for job in jobs.values():
            job.segments.append((start, stop, estimate_mag.cpu()))
    if timings is not None:
        timings |= {phase: method.seconds for phase, method in joined.items()}
    return {phase: jobs[phase] if phase in jobs else joined[phase].estimates() for phase in phases}


def pooled_phases(phases: Sequence[str], device: torch.device, workers: int, **phase_options) -> list[str]:
    """With the model in the main process (see models_in_workers), the phases that a pool
    of `workers` > 1 processes runs as PhaseJobs (PHASE_METHODS' cpu_bound ones); the
    others take seconds and run where the model does, on `device`."""
    if workers <= 1:
        return []
    return [phase for phase in phases if PHASE_METHODS[phase].cpu_bound(device, **phase_options)]


# ------------------------------------------------------------------ evaluation

def evaluate_track(track, estimates: dict[str, np.ndarray], output_dir: str | Path | None = None) -> dict[str, float]:
    """museval BSSEval v4 on 1-second frames; returns each stem's median SDR over frames
    (NaN frames, i.e. silent references, skipped as museval's own aggregation does).
    Writes museval's per-track JSON under output_dir when given."""
    import museval

    scores = museval.eval_mus_track(track, estimates, output_dir=str(output_dir) if output_dir else None)
    frame_scores = scores.df
    sdr = frame_scores[frame_scores["metric"] == "SDR"].groupby("target")["score"].median()
    return {stem: float(sdr[stem]) for stem in STEMS}


def models_in_workers(device: torch.device, workers: int) -> bool:
    """Whether the pool's processes run the model too, each separating whole tracks (files)
    with its own copy of it: on a CPU-only run with a pool, where the model's CPU time would
    otherwise run track after track in the main process while the pool waits for it. On a
    GPU the model stays in the main process, on the one device, and the pool runs museval
    and the phase methods that are slow on a CPU (pooled_phases)."""
    return device.type == "cpu" and workers > 1


def worker_threads(workers: int) -> int:
    """torch/BLAS threads of each of `workers` pool processes: the cores shared among them,
    and never more than this process uses (so OMP_NUM_THREADS or torch.set_num_threads
    here bound the pool too)."""
    return max(1, min(torch.get_num_threads(), (os.cpu_count() or 1) // workers))


def _limit_threads(threads: int) -> None:
    """`threads` torch and BLAS threads in this process: the pool's processes share the
    cores (museval's least squares gain nothing from threads on its small systems, and the
    model's and phase methods' work is split across tracks instead)."""
    torch.set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(threads)
    except ImportError:
        pass


@dataclass(frozen=True)
class ModelFiles:
    """The checkpoints a run separates with, as files from which each pool process loads its
    own copies (models_in_workers): separators by name, and the vocoder of --phase vocoder."""
    separators: dict[str, str]
    vocoder: str | None = None


# A pool process's own models (see Workers), loaded once by its initializer: the separators
# by name, and the phase options that are models ({"vocoder": ...} when there is one).
_worker_separators: dict[str, torch.nn.Module] = {}
_worker_phase_models: dict[str, torch.nn.Module] = {}


def _start_worker(threads: int, models: ModelFiles | None) -> None:
    """Pool initializer: `threads` threads and, when given, the models (on the CPU)."""
    _limit_threads(threads)
    if models is not None:
        cpu = torch.device("cpu")
        _worker_separators.update({name: load_separator(path, cpu)[0] for name, path in models.separators.items()})
        if models.vocoder is not None:
            _worker_phase_models["vocoder"] = load_vocoder(models.vocoder, cpu)[0]


# separate_work(pool, separators, phases, device, defer, *args, **phase_options) separates one
# track or file and submits the jobs that finish it to `pool` (see Workers.separate).
SeparateWork = Callable[..., None]


def _separate_in_worker(separate_work: SeparateWork, phases: Sequence[str], args: tuple,
                        phase_options: dict) -> dict[Hashable, Any]:
    """A Workers job (models_in_workers): separate_work for one whole track or file in this
    pool process, with its own models on its CPU, every phase method run here (nothing
    deferred) and the finishing jobs run here, one after another; their results by key."""
    with Workers(1) as here:
        separate_work(here, _worker_separators, phases, torch.device("cpu"), (), *args,
                      **phase_options, **_worker_phase_models)
        return here.results()


# The key of a job that returns several keyed results (_separate_in_worker's), merged into results().
_SEVERAL = object()


class Workers:
    """Runs fn(*args) jobs (museval, phase methods that are slow on a CPU, writing files)
    in the calling process (workers 0 or 1) or in a pool of `workers` processes, so that
    --workers means one thing. submit() blocks while `max_pending` jobs are in flight
    (default 2 x workers), so the estimates, magnitudes or tracks they hold stay bounded in
    memory. Use as a context manager; results() waits for all and returns {key: fn's result}.

    separate() hands over a whole track or file. Given the run's `models` on a CPU-only run
    (models_in_workers), each pool process loads its own copy of them once and separates
    whole tracks itself; otherwise the model runs in the calling process on `device`."""

    def __init__(self, workers: int, max_pending: int | None = None, device: torch.device = torch.device("cpu"),
                 models: ModelFiles | None = None) -> None:
        self.workers = max(1, workers)
        self.max_pending = max_pending or 2 * self.workers
        self.device = device
        self.models = models if models is not None and models_in_workers(device, self.workers) else None
        self.pool = None
        if self.workers > 1:
            # spawn: the main process has torch's thread pools running, which fork does not copy safely
            self.pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_start_worker,
                                            initargs=(worker_threads(self.workers), self.models))
        self.pending: dict[Future, Hashable] = {}
        self.done: dict[Hashable, Any] = {}

    def submit(self, key: Hashable, fn: Callable[..., Any], *args) -> None:
        if self.pool is None:
            self.done[key] = fn(*args)
            return
        while len(self.pending) >= self.max_pending:
            self._collect(FIRST_COMPLETED)
        self.pending[self.pool.submit(fn, *args)] = key

    def separate(self, separate_work: SeparateWork, separators: dict[str, torch.nn.Module], phases: Sequence[str],
                 *args, **phase_options) -> None:
        """One whole track or file through `separators` and `phases` (see SeparateWork):
        with the models in the pool processes, one job there whose finishing jobs' results
        join results(); else here on `device`, the phase methods that are slow on a CPU
        (pooled_phases) deferred to the pool as PhaseJobs."""
        if self.models is None:
            defer = pooled_phases(phases, self.device, self.workers, **phase_options)
            separate_work(self, separators, phases, self.device, defer, *args, **phase_options)
            return
        # The pool process has its own copies of the models (the vocoder among the options).
        plain = {k: v for k, v in phase_options.items() if not isinstance(v, torch.nn.Module)}
        self.submit(_SEVERAL, _separate_in_worker, separate_work, phases, args, plain)

    def _collect(self, how: str) -> None:
        finished, _ = wait(list(self.pending), return_when=how)
        for future in finished:
            key = self.pending.pop(future)
            if key is _SEVERAL:
                self.done |= future.result()
            else:
                self.done[key] = future.result()

    def results(self) -> dict[Hashable, Any]:
        if self.pending:
            self._collect("ALL_COMPLETED")
        return self.done

    def __enter__(self) -> "Workers":
        return self

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=exc[0] is None, cancel_futures=exc[0] is not None)


def submit_track(pool: Workers, separators: dict[str, torch.nn.Module], phases: Sequence[str], device: torch.device,
                 defer: Sequence[str], track, out: Path, save_estimates: bool, samples_dir: Path | None,
                 **phase_options) -> None:
    """SeparateWork of evaluation: one track separated by every checkpoint's model with
    every phase method on `device` (those in `defer` as PhaseJobs), each run's estimates
    handed to `pool` as a finish_run job keyed (run, track name); listening samples go
    under samples_dir when given."""
    mixture = track_mixture(track)
    for name, model in separators.items():
        timings: dict[str, float] = {}  # each phase method run here records its own seconds
        separated = separate(model, mixture, phases, device, timings=timings, defer=defer, **phase_options)
        for phase, estimates in separated.items():
            run = f"{name}-{phase}"
            pool.submit((run, track.name), finish_run, track, estimates, timings.get(phase), out / run, save_estimates,
                        None if samples_dir is None else samples_dir / run / track.name)


def finish_run(track, estimates: dict[str, np.ndarray] | PhaseJob, phase_seconds: float | None, output_dir: Path,
               save_estimates: bool, sample_dir: Path | None) -> tuple[dict[str, float], float]:
    """A Workers job: one track's estimates of one run (made first when a PhaseJob, which
    times its phase method itself), written where asked (estimates, a listening sample in
    sample_dir) and scored (evaluate_track). Returns (scores, the phase method's seconds)."""
    if isinstance(estimates, PhaseJob):
        estimates, phase_seconds = estimates.run()
    if save_estimates:
        for stem, audio in estimates.items():
            save_audio(output_dir / "estimates" / track.name / f"{stem}.wav", audio)
    if sample_dir is not None:
        write_sample(sample_dir, track, estimates)
    return evaluate_track(track, estimates, output_dir), phase_seconds


def median_over_tracks(per_track: dict[str, dict[str, float]]) -> dict[str, float]:
    """Median over tracks of the per-track medians (tracks with no valid frame skipped)."""
    return {stem: float(np.nanmedian([t[stem] for t in per_track.values()])) if per_track else float("nan")
            for stem in STEMS}


def excerpt_bounds(length: int, seconds: float = SAMPLE_SECONDS) -> tuple[int, int]:
    """A `seconds` window from the middle of the track (the whole track if shorter)."""
    size = min(length, int(seconds * SAMPLE_RATE))
    start = (length - size) // 2
    return start, start + size


def write_sample(directory: Path, track, estimates: dict[str, np.ndarray]) -> None:
    """Listening excerpt: mixture, both estimates and both references."""
    lo, hi = excerpt_bounds(track.audio.shape[0])
    save_audio(directory / "mixture.wav", track.audio[lo:hi])
    for stem in STEMS:
        save_audio(directory / f"{stem}.wav", estimates[stem][lo:hi])
        save_audio(directory / f"reference_{stem}.wav", track.targets[stem].audio[lo:hi])


def format_table(results: dict[str, dict[str, dict[str, float]]],
                 seconds: dict[str, dict[str, float]] | None = None) -> str:
    """results {run name: {track: {stem: sdr}}} and seconds {run name: {track: seconds the
    phase method took}} -> a plain-text table with a median row (SDR in dB, s/track in s)."""
    runs = list(results)
    seconds = seconds or {}
    tracks = sorted({t for r in results.values() for t in r})
    width = max([len("median") + 2] + [len(t) for t in tracks])
    head = f"{'track':<{width}}" + "".join(f" | {run[:29]:^29}" for run in runs)
    sub = " " * width + "".join(f" | {'vocals':>9} {'accomp.':>9} {'s/track':>9}" for _ in runs)
    lines = [head, sub, "-" * len(sub)]
    for track in tracks:
        row = f"{track:<{width}}"
        for run in runs:
            s = results[run].get(track, {})
            row += " | " + " ".join(f"{s.get(stem, float('nan')):9.2f}" for stem in STEMS)
            row += f" {seconds.get(run, {}).get(track, float('nan')):9.2f}"
        lines.append(row)
    lines.append("-" * len(sub))
    row = f"{'median':<{width}}"
    for run in runs:
        median = median_over_tracks(results[run])
        run_seconds = list(seconds.get(run, {}).values())
        row += " | " + " ".join(f"{median[stem]:9.2f}" for stem in STEMS)
        row += f" {np.median(run_seconds) if run_seconds else float('nan'):9.2f}"
    lines.append(row)
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if min(args.gl_iters, args.wiener_iters, args.wiener_win_len) < 0 or args.gl_momentum < 0:
        raise UserError("--gl-iters, --wiener-iters, --wiener-win-len and --gl-momentum must not be negative")
    if not args.wiener_eps > 0:
        raise UserError("--wiener-eps must be positive (it keeps wiener's divisions finite in silence)")
    if args.workers < 0:
        raise UserError("--workers must not be negative")
    args.phase = args.phase or (["wiener"] if args.input else ["mixture"])
    phase_options = dict(gl_iters=args.gl_iters, gl_momentum=args.gl_momentum, gl_backend=args.gl_backend,
                         wiener_iters=args.wiener_iters, wiener_softmask=args.wiener_softmask,
                         wiener_eps=args.wiener_eps, wiener_win_len=args.wiener_win_len, seed=args.seed)
    if "vocoder" in args.phase:  # loaded once, before any other work, for every track and segment
        if args.vocoder is None:
            raise UserError("--phase vocoder needs --vocoder PATH, a checkpoint written by vocoder.py")
        phase_options["vocoder"] = load_vocoder(args.vocoder, resolve_device(args.device))[0]
    vocoder_file = args.vocoder if "vocoder" in args.phase else None  # what a pool process loads its copy from
    if args.input:
        if len(args.checkpoint) != 1:
            raise UserError("--input separates with one checkpoint: give a single --checkpoint")
        return separate_files(args.input, args.checkpoint[0], Path(args.out or "separated"), args.phase,
                              args.format, args.device, args.workers, vocoder_file, **phase_options)
    args.out = args.out or "results"
    if args.split and args.subset != "train":
        raise UserError("--split needs --subset train")
    device = resolve_device(args.device)
    models = {}
    for path in args.checkpoint:
        model, state = load_separator(path, device)
        models[Path(path).stem] = (path, model, state)
    if len(models) != len(args.checkpoint):
        raise UserError("checkpoints must have distinct file names (results are named after them)")
    tracks = select_tracks(open_musdb(args.root, args.is_wav, args.subset, args.split).tracks, args.tracks)
    tracks = sorted(tracks, key=lambda t: t.name)
    check_tracks(tracks)

    # The model runs in this process (on --device), or on a CPU-only run in each pool process
    # with its own copy, whole tracks at a time (see Workers.separate).
    separators = {name: model for name, (path, model, state) in models.items()}
    files = ModelFiles({name: str(path) for name, (path, model, state) in models.items()}, vocoder_file)
    with Workers(args.workers, device=device, models=files) as workers:
        for index, track in enumerate(tqdm(tracks, desc="tracks")):
            workers.separate(submit_track, separators, args.phase, track, Path(args.out), args.save_estimates,
                             Path(args.samples_dir) if index < args.samples else None, **phase_options)
        finished = workers.results()

    results: dict[str, dict[str, dict[str, float]]] = {}
    seconds: dict[str, dict[str, float]] = {}
    for name, (path, model, state) in models.items():
        for phase in args.phase:
            run = f"{name}-{phase}"
            per_track = {track.name: finished[(run, track.name)] for track in tracks}  # in track order
            results[run] = {track: scores for track, (scores, _) in per_track.items()}
            seconds[run] = {track: phase_s for track, (_, phase_s) in per_track.items()}
            summary = {
                "checkpoint": str(path), "epoch": state.get("epoch"), "phase": phase,
                "subset": args.subset, "split": args.split, "n_tracks": len(results[run]),
                "median_sdr": median_over_tracks(results[run]), "tracks": results[run],
                "phase_seconds": seconds[run],
            }
            if phase == "vocoder":
                summary["vocoder"] = str(args.vocoder)
            write_text(Path(args.out) / run / "summary.json", json.dumps(summary, indent=1))
    print(format_table(results, seconds))
    print(f"results in {Path(args.out)}/<checkpoint>-<phase>/summary.json")


# --------------------------------------------------------- MUSDB18 track checks

def check_tracks(tracks: list) -> None:
    """Fail before anything is written when a track cannot be decoded (a file ffprobe
    cannot open, a WAV folder missing a file, a .stem.mp4 lacking streams), naming it."""
    for track in tracks:
        check_track(track)


def track_mixture(track) -> np.ndarray:
    """The track's mixture (samples, channels), or a UserError naming the track."""
    try:
        audio = track.audio
    except Exception as err:  # stempeg/ffmpeg failures surface as many types
        raise UserError(f"cannot decode track '{track.name}': {type(err).__name__}: {err}".splitlines()[0]) from err
    if audio is None or audio.ndim != 2 or audio.shape[0] == 0:
        raise UserError(f"track '{track.name}' decoded to no audio ({track.path})")
    return audio


# ------------------------------------------------------------ --input: any file

def separate_files(files: Sequence[str | Path], checkpoint: str | Path, out: Path, phases: Sequence[str],
                   audio_format: str, device_name: str, workers: int = 1, vocoder_file: str | None = None,
                   **phase_options) -> None:
    """inference.py --input: separate audio files that are not in MUSDB18 and write their
    stems to out/<file stem>/ (out/<file stem>/<phase>/ with several phases); nothing is
    scored (there is no reference). Every input is checked (exists, is audio, mono or
    stereo) before any model runs, and every file is written atomically. With `workers` > 1
    several files are separated at once (see Workers.separate: on a CPU each pool process
    reads, separates and writes whole files; on a GPU the model runs here and the pool runs
    the phase methods that are slow on a CPU and writes the stems); vocoder_file is the
    checkpoint of phase_options' vocoder, for the pool processes to load. The stem paths
    are printed once all are written, in input order."""
    inputs = [Path(p) for p in files]
    for path in inputs:
        _, channels = audio_info(path)
        if channels not in (1, 2):
            raise UserError(f"input {path} has {channels} channels; only mono and stereo files can be separated")
    stems_of = [p.stem for p in inputs]
    clashes = sorted({s for s in stems_of if stems_of.count(s) > 1})
    if clashes:
        raise UserError(f"several inputs would be written to the same folder {out / clashes[0]}: rename one")
    device = resolve_device(device_name)
    model_name = Path(checkpoint).stem
    separators = {model_name: load_separator(checkpoint, device)[0]}
    with Workers(workers, device=device, models=ModelFiles({model_name: str(checkpoint)}, vocoder_file)) as pool:
        for path in inputs:
            pool.separate(submit_file, separators, phases, path, out, audio_format, **phase_options)
        written = pool.results()
    for name in stems_of:
        for phase in phases:
            for target in written[(name, phase)]:
                print(target)


def submit_file(pool: Workers, separators: dict[str, torch.nn.Module], phases: Sequence[str], device: torch.device,
                defer: Sequence[str], path: Path, out: Path, audio_format: str, **phase_options) -> None:
    """SeparateWork of --input: one file read and separated by the one model on `device`
    with every phase method (those in `defer` as PhaseJobs), each phase's stems handed to
    `pool` as a write_stems job keyed (file stem, phase)."""
    mixture, rate, shape = read_input(path)
    (model,) = separators.values()
    separated = separate(model, mixture, phases, device, defer=defer, **phase_options)
    for phase, estimates in separated.items():
        folder = out / path.stem / phase if len(phases) > 1 else out / path.stem
        pool.submit((path.stem, phase), write_stems, estimates, folder, audio_format, rate, shape)


def read_input(path: str | Path) -> tuple[np.ndarray, int, tuple[int, int]]:
    """Any audio file -> (its audio at the model's 44.1 kHz in stereo (samples, 2) float32,
    the file's sample rate, the file's (samples, channels))."""
    audio, rate = read_audio_any(path)
    if audio.shape[1] not in (1, 2):
        raise UserError(f"input {path} has {audio.shape[1]} channels; only mono and stereo files can be separated")
    mixture = resample(audio, rate, SAMPLE_RATE)
    if audio.shape[1] == 1:
        mixture = np.repeat(mixture, 2, axis=1)
    return np.ascontiguousarray(mixture, dtype=np.float32), rate, audio.shape


def write_stems(estimates: dict[str, np.ndarray] | PhaseJob, folder: Path, audio_format: str, rate: int,
                shape: tuple[int, int]) -> list[Path]:
    """A Workers job: each estimate (samples, 2) at 44.1 kHz (made first when a PhaseJob)
    back in the input's rate, length and channel count (a mono file's stems are the mean of
    the two separated channels), written to folder/<stem>.<audio_format>; the paths written."""
    if isinstance(estimates, PhaseJob):
        estimates, _ = estimates.run()
    length, channels = shape
    targets = []
    for stem, estimate in estimates.items():
        estimate = resample(np.asarray(estimate, dtype=np.float32), SAMPLE_RATE, rate)[:length]
        if estimate.shape[0] < length:  # soxr's rounding may leave a sample or two short
            estimate = np.pad(estimate, ((0, length - estimate.shape[0]), (0, 0)))
        if channels == 1:
            estimate = estimate.mean(axis=1, keepdims=True)
        targets.append(folder / f"{stem}.{audio_format}")
        save_audio(targets[-1], estimate, rate)
    return targets


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
