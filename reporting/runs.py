"""report.py's inputs: what train.py's checkpoints, inference.py's results/<checkpoint>-<phase>/
folders (summary.json, museval's per-track JSON), its listening excerpts and experiments.py's
tables (experiment_table.py) hold, read into Training, Run, Sample and Experiment, and the order
they are shown in."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from formats import checkpoint, experiment_table, summary
from formats.experiment_table import Experiment
from utils import STEMS, UserError

METRICS = ("SDR", "SIR", "SAR", "ISR")
SAMPLE_FILES = ("mixture", "reference_vocals", "reference_accompaniment", "vocals", "accompaniment")


@dataclass
class Training:
    """What the newest checkpoint says about the training run."""
    source: Path
    history: list[dict]
    best_epoch: int
    train_args: dict
    model_config: dict
    stft: dict
    parameters: int
    saved_epochs: list[int]
    machine: str  # what trained it ("" where the checkpoint does not record it)


@dataclass
class Run:
    """One <results-dir>/<checkpoint>-<phase>/ folder of inference.py."""
    name: str
    checkpoint: str  # the checkpoint's file stem: epoch_025, best, last
    epoch: int | None
    phase: str
    subset: str
    split: str | None
    median: dict[str, float]  # stem -> median over tracks of the per-track median SDR
    tracks: dict[str, dict[str, float]]  # track -> stem -> median SDR over frames
    metrics: dict[str, dict[str, float]]  # stem -> BSSEval metric -> median of medians; {} without museval JSON
    seconds: float | None  # median over tracks of the phase method's time; None if not recorded
    gl_backend: str | None = None  # griffinlim's backend, librosa or torch; None: another phase or not recorded

    @property
    def evaluation(self) -> tuple:
        """Runs are compared only when they scored the same tracks."""
        return self.subset, self.split or "", tuple(sorted(self.tracks))


@dataclass
class Sample:
    """One <samples-dir>/<run>/<track>/ folder of listening excerpts."""
    run: str
    track: str
    folder: Path


def saved_epoch(stem: str) -> int | None:
    """epoch_025 -> 25; other checkpoint names -> None."""
    match = re.fullmatch(r"epoch_(\d+)", stem)
    return int(match.group(1)) if match else None


def checkpoint_order(stem: str) -> tuple:
    """Table order: epoch files by epoch, then best, last, anything else by name."""
    epoch = saved_epoch(stem)
    if epoch is not None:
        return 0, epoch, ""
    return {"best": 1, "last": 2}.get(stem, 3), 0, stem


def phase_order(phase: str) -> tuple:
    return phase != "mixture", phase


def load_training(checkpoint_dir: Path) -> Training:
    if not checkpoint_dir.is_dir():
        raise UserError(f"--checkpoint-dir {checkpoint_dir} does not exist: train first (train.py)")
    files = {f.stem: f for f in checkpoint_dir.glob("*.pt")}
    if not files:
        raise UserError(f"no checkpoints (*.pt) in {checkpoint_dir}: train first (train.py)")
    saved = sorted(e for e in map(saved_epoch, files) if e is not None)
    # last.pt holds the whole history; without it the latest epoch file holds the most.
    source = (files.get("last") or (files[f"epoch_{saved[-1]:03d}"] if saved else None) or files.get("best")
              or sorted(files.values())[0])
    state = checkpoint.load(source)
    try:
        return Training(source, state["history"], state["best_epoch"], state["train_args"], state["model_config"],
                        state["stft"], state["parameters"], saved, state.get("machine", ""))
    except KeyError as err:
        raise UserError(f"checkpoint {source} has no {err} entry (written by an older train.py?)") from err


def load_runs(results_dir: Path) -> list[Run]:
    if not results_dir.is_dir():
        raise UserError(f"--results-dir {results_dir} does not exist: score checkpoints first (inference.py)")
    runs = [load_run(path) for path in sorted(results_dir.glob(f"*/{summary.FILE_NAME}"))]
    if not runs:
        raise UserError(f"no results in {results_dir} (expected <checkpoint>-<phase>/{summary.FILE_NAME}): "
                        "score checkpoints first (inference.py)")
    return sorted(runs, key=lambda r: (checkpoint_order(r.checkpoint), phase_order(r.phase)))


def load_run(summary_path: Path) -> Run:
    folder = summary_path.parent
    s = summary.read(summary_path)
    seconds = list(s.phase_seconds.values())  # empty where the summary does not record them
    run = Run(folder.name, Path(s.checkpoint).stem, s.epoch, s.phase, s.subset, s.split, s.median_sdr, s.tracks,
              {}, float(np.median(seconds)) if seconds else None, s.gl_backend)
    run.metrics = museval_metrics(folder / run.subset, list(s.tracks))
    return run


def museval_metrics(folder: Path, tracks: list[str]) -> dict[str, dict[str, float]]:
    """Median over tracks of each track's median over frames, for every BSSEval metric,
    from museval's per-track JSON; {} unless every track has its JSON."""
    per_track: dict[str, dict[str, list[float]]] = {stem: {m: [] for m in METRICS} for stem in STEMS}
    for track in tracks:
        path = folder / f"{track}.json"
        if not path.is_file():
            return {}
        try:
            targets = json.loads(path.read_text())["targets"]
            for target in targets:
                if target["name"] not in per_track:
                    continue
                for metric in METRICS:
                    values = [f["metrics"][metric] for f in target["frames"]]
                    values = np.array([np.nan if v is None else v for v in values], dtype=float)
                    per_track[target["name"]][metric].append(nan_median(values))
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise UserError(f"{path} is not a museval result ({type(err).__name__}: {err})") from err
    return {stem: {m: nan_median(np.array(v, dtype=float)) for m, v in metrics.items()}
            for stem, metrics in per_track.items()}


def nan_median(values: np.ndarray) -> float:
    """Median of the non-NaN values (NaN frames are silent references); NaN if none."""
    values = values[~np.isnan(values)]
    return float(np.median(values)) if values.size else float("nan")


def load_samples(samples_dir: Path) -> list[Sample]:
    """Excerpt folders with all five files; an empty list if there are none."""
    if not samples_dir.is_dir():
        raise UserError(f"--samples-dir {samples_dir} does not exist (inference.py --samples-dir)")
    folders = sorted(p for p in samples_dir.glob("*/*") if p.is_dir())
    return [Sample(f.parent.name, f.name, f) for f in folders
            if all((f / f"{name}.wav").is_file() for name in SAMPLE_FILES)]


def load_experiments(experiments_dir: Path, results_dir: Path) -> list[Experiment]:
    paths = sorted(experiments_dir.glob("*.json")) if experiments_dir.is_dir() else []
    if (results_dir / "experiments.json").is_file():
        paths.append(results_dir / "experiments.json")
    return [experiment_table.read(p) for p in paths]


def groups(runs: list[Run]) -> list[list[Run]]:
    """Runs that scored the same tracks, the test set first."""
    by_set: dict[tuple, list[Run]] = {}
    for run in runs:
        by_set.setdefault(run.evaluation, []).append(run)
    return sorted(by_set.values(), key=lambda g: (g[0].subset != "test", g[0].evaluation))
