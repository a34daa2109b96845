"""inference.py --input: separating audio files that are not in MUSDB18 (any format
libsndfile or ffmpeg reads, any rate, mono or stereo) and writing their stems back in the
input's rate, length and channel count. Nothing is scored: there is no reference."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from formats.checkpoint import load_separator
from model import takes_complex
from separation.processes import ModelFiles, Workers
from separation.phase import default_phases
from separation.segments import PhaseJob, check_phases, separate
from utils import SAMPLE_RATE, UserError, audio_info, read_audio_any, resample, save_audio


def separate_files(files: Sequence[str | Path], checkpoint: str | Path, out: Path, phases: Sequence[str] | None,
                   audio_format: str, device: torch.device, workers: int = 1, vocoder_file: str | None = None,
                   **phase_options) -> list[Path]:
    """Separate audio files with one checkpoint and write their stems to out/<file stem>/
    (out/<file stem>/<phase>/ with several phases); phases None: phase.default_phases for
    the checkpoint's model (a phase method it cannot use is a UserError, before any work).
    Every input is checked (exists, is audio, mono or stereo) before any model runs, and
    every file is written atomically. With `workers` > 1 several files are separated at
    once (see Workers.separate: on a CPU each pool process reads, separates and writes
    whole files; on a GPU the model runs here and the pool runs the phase methods that are
    slow on a CPU and writes the stems); vocoder_file is the checkpoint of phase_options'
    vocoder, for the pool processes to load. Returns the stem files written, in input order."""
    inputs = [Path(p) for p in files]
    for path in inputs:
        _, channels = audio_info(path)
        if channels not in (1, 2):
            raise UserError(f"input {path} has {channels} channels; only mono and stereo files can be separated")
    stems_of = [p.stem for p in inputs]
    clashes = sorted({s for s in stems_of if stems_of.count(s) > 1})
    if clashes:
        raise UserError(f"several inputs would be written to the same folder {out / clashes[0]}: rename one")
    model_name = Path(checkpoint).stem
    separators = {model_name: load_separator(checkpoint, device)[0]}
    phases = phases or default_phases(takes_complex(separators[model_name]), scoring=False)
    check_phases(separators[model_name], phases, str(checkpoint))
    with Workers(workers, device=device, models=ModelFiles({model_name: str(checkpoint)}, vocoder_file)) as pool:
        for path in inputs:
            pool.separate(submit_file, separators, phases, path, out, audio_format, **phase_options)
        written = pool.results()
    return [target for name in stems_of for phase in phases for target in written[(name, phase)]]


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

