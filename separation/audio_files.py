"""inference.py --input: separating audio files that are not in MUSDB18 (any format
libsndfile or ffmpeg reads, any rate, mono or stereo) and writing their stems back in the
input's rate, length and channel count. Nothing is scored: there is no reference."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from separation.processes import LoadedModels, Workers
from separation.segments import PhaseJob, SeparationSettings, separate_deferring
from utils import SAMPLE_RATE, UserError, audio_info, read_audio_any, resample, save_audio


def separate_files(files: Sequence[str | Path], models: LoadedModels, out: Path, settings: SeparationSettings,
                   audio_format: str, device: torch.device, workers: int = 1) -> list[Path]:
    """Separate audio files with the one separator of `models` and every phase method of
    `settings`, and write their stems to out/<file stem>/ (out/<file stem>/<phase>/ with
    several phases). Every input is checked (exists, is audio, mono or stereo) before any
    model runs, and every file is written atomically. With `workers` > 1 several files are
    separated at once (see Workers.separate: on a CPU each pool process reads, separates
    and writes whole files with its own copies of the models; on a GPU the model runs here
    and the pool runs the phase methods that are slow on a CPU and writes the stems).
    Returns the stem files written, in input order."""
    inputs = [Path(p) for p in files]
    for path in inputs:
        _, channels = audio_info(path)
        if channels not in (1, 2):
            raise UserError(f"input {path} has {channels} channels; only mono and stereo files can be separated")
    stems_of = [p.stem for p in inputs]
    clashes = sorted({s for s in stems_of if stems_of.count(s) > 1})
    if clashes:
        raise UserError(f"several inputs would be written to the same folder {out / clashes[0]}: rename one")
    with Workers(workers, device=device, models=models.files) as pool:
        for path in inputs:
            pool.separate(SeparateFile(path, settings, out, audio_format), models)
        written = pool.results()
    return [target for name in stems_of for phase in settings.phases for target in written[(name, phase)]]


@dataclass(frozen=True)
class SeparateFile:
    """The SeparateWork of --input: one file read and separated by the one model with every
    phase method of `settings`, each phase's stems handed to the pool as a write_stems job
    keyed (file stem, phase)."""
    path: Path
    settings: SeparationSettings
    out: Path
    audio_format: str

    def __call__(self, pool: Workers, models: LoadedModels, device: torch.device, defer: Sequence[str]) -> None:
        mixture, rate, shape = read_input(self.path)
        (model,) = models.separators.values()
        estimates, jobs = separate_deferring(model, mixture, self.settings, device, defer, models.vocoder)
        for phase in self.settings.phases:
            made = estimates[phase] if phase in estimates else jobs[phase]
            folder = self.out / self.path.stem / phase if len(self.settings.phases) > 1 else self.out / self.path.stem
            pool.submit((self.path.stem, phase), write_stems, made, folder, self.audio_format, rate, shape)


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

