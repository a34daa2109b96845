"""Scoring MUSDB18 tracks: every track separated by every checkpoint with every phase
method (segments.py), spread over processes (processes.Workers), scored with museval
BSSEval v4 on 1-second frames, then summed up as the median over frames per track and the
median over tracks. inference.py is its command line; formats/summary.py stores a run's scores.

    scores = evaluate(ModelFiles({"best": "best.pt"}).load(device), tracks, SeparationSettings(), device,
                      workers=4, out=Path("results"))
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm import tqdm

from formats.summary import run_name
from separation.processes import LoadedModels, Workers
from separation.segments import PhaseJob, SeparationSettings, separate_deferring
from utils import SAMPLE_RATE, STEMS, UserError, save_audio

SAMPLE_SECONDS = 30.0  # listening excerpts: this long, from the middle of the track


@dataclass
class RunScores:
    """One run's results (a checkpoint's model with one phase method) on the tracks scored:
    each track's median SDR over frames by stem, and the seconds its phase method took."""
    sdr: dict[str, dict[str, float]]
    phase_seconds: dict[str, float]


def evaluate(models: LoadedModels, tracks: list, settings: SeparationSettings, device: torch.device, workers: int,
             out: Path, save_estimates: bool = False, samples_dir: Path | None = None,
             samples: int = 0) -> dict[str, RunScores]:
    """Separate and score every track with every separator and every phase method of
    `settings`; {run (summary.run_name of the checkpoint and phase): its scores, tracks in
    the order given}.

    The model runs in this process on `device`, or on a CPU-only run in each of `workers`
    pool processes, with its own copy loaded from models.files, whole tracks at a time (see
    Workers.separate). museval's per-track JSON goes to out/<run>/, full-length estimates
    to out/<run>/estimates/ with save_estimates, and listening excerpts of the first
    `samples` tracks to samples_dir/<run>/<track>/."""
    with Workers(workers, device=device, models=models.files) as pool:
        for index, track in enumerate(tqdm(tracks, desc="tracks")):
            pool.separate(ScoreTrack(track, settings, out, save_estimates, samples_dir if index < samples else None),
                          models)
        finished = pool.results()
    scores = {}
    for checkpoint in models.files.separators.values():
        for phase in settings.phases:
            run = run_name(checkpoint, phase)
            per_track = [(track.name, *finished[(run, track.name)]) for track in tracks]
            scores[run] = RunScores({t: sdr for t, sdr, _ in per_track}, {t: s for t, _, s in per_track})
    return scores


def evaluate_track(track, estimates: dict[str, np.ndarray], output_dir: str | Path | None = None) -> dict[str, float]:
    """museval BSSEval v4 on 1-second frames; returns each stem's median SDR over frames
    (NaN frames, i.e. silent references, skipped as museval's own aggregation does).
    Writes museval's per-track JSON under output_dir when given."""
    import museval

    scores = museval.eval_mus_track(track, estimates, output_dir=str(output_dir) if output_dir else None)
    frame_scores = scores.df
    sdr = frame_scores[frame_scores["metric"] == "SDR"].groupby("target")["score"].median()
    return {stem: float(sdr[stem]) for stem in STEMS}


@dataclass(frozen=True)
class ScoreTrack:
    """The SeparateWork of evaluation: one track separated by every checkpoint's model with
    every phase method of `settings`, each run's estimates handed to the pool as a
    finish_run job keyed (run, track name); listening samples go under
    samples_dir/<run>/<track>/ when samples_dir is given."""
    track: Any  # a musdb Track
    settings: SeparationSettings
    out: Path
    save_estimates: bool
    samples_dir: Path | None

    def __call__(self, pool: Workers, models: LoadedModels, device: torch.device, defer: Sequence[str]) -> None:
        mixture = track_mixture(self.track)
        for name, model in models.separators.items():
            timings: dict[str, float] = {}  # each phase method run here records its own seconds
            estimates, jobs = separate_deferring(model, mixture, self.settings, device, defer, models.vocoder, timings)
            for phase in self.settings.phases:
                run = run_name(models.files.separators[name], phase)
                made = estimates[phase] if phase in estimates else jobs[phase]
                sample_dir = None if self.samples_dir is None else self.samples_dir / run / self.track.name
                pool.submit((run, self.track.name), finish_run, self.track, made, timings.get(phase), self.out / run,
                            self.save_estimates, sample_dir)


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


def format_table(scores: dict[str, RunScores]) -> str:
    """{run name: its scores} -> a plain-text table of every track's SDR and the seconds
    its phase method took, with a median row (SDR in dB, s/track in s)."""
    runs = list(scores)
    tracks = sorted({t for r in scores.values() for t in r.sdr})
    width = max([len("median") + 2] + [len(t) for t in tracks])
    head = f"{'track':<{width}}" + "".join(f" | {run[:29]:^29}" for run in runs)
    sub = " " * width + "".join(f" | {'vocals':>9} {'accomp.':>9} {'s/track':>9}" for _ in runs)
    lines = [head, sub, "-" * len(sub)]
    for track in tracks:
        row = f"{track:<{width}}"
        for run in runs:
            s = scores[run].sdr.get(track, {})
            row += " | " + " ".join(f"{s.get(stem, float('nan')):9.2f}" for stem in STEMS)
            row += f" {scores[run].phase_seconds.get(track, float('nan')):9.2f}"
        lines.append(row)
    lines.append("-" * len(sub))
    row = f"{'median':<{width}}"
    for run in runs:
        median = median_over_tracks(scores[run].sdr)
        run_seconds = list(scores[run].phase_seconds.values())
        row += " | " + " ".join(f"{median[stem]:9.2f}" for stem in STEMS)
        row += f" {np.median(run_seconds) if run_seconds else float('nan'):9.2f}"
    lines.append(row)
    return "\n".join(lines)


def track_mixture(track) -> np.ndarray:
    """The track's mixture (samples, channels), or a UserError naming the track."""
    try:
        audio = track.audio
    except Exception as err:  # stempeg/ffmpeg failures surface as many types
        raise UserError(f"cannot decode track '{track.name}': {type(err).__name__}: {err}".splitlines()[0]) from err
    if audio is None or audio.ndim != 2 or audio.shape[0] == 0:
        raise UserError(f"track '{track.name}' decoded to no audio ({track.path})")
    return audio


