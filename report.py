"""Turn finished runs into the material to hand in, all written under --out:

    report.pdf   16:9 slides: cover, novelty, methodology, results, findings, then the
                 details and analysis (loss curves, per-track SDR, BSSEval metrics,
                 spectrograms, optional experiments). Pages whose inputs are missing are left out.
    results.md   the same tables in Markdown, ready to paste
    index.html   listening page: every excerpt with a player, its spectrogram and its SDR;
                 works opened from disk (audio/ holds copies of the excerpts)

    python report.py
    python report.py --checkpoint-dir checkpoints --results-dir results --out report

Inputs: the checkpoints of train.py, the results/<checkpoint>-<phase>/ folders of inference.py
(summary.json and museval's per-track JSON) and its listening excerpts in samples/.
Optional experiment tables: every <experiments-dir>/*.json and <results-dir>/experiments.json
holding a list of {"name": str, "vocals": dB, "accompaniment": dB, "params": {...}}
(params optional) gets a table page named after the file.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import platform
import re
import shutil
import subprocess
import textwrap
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Iterable, Sequence
from urllib.parse import quote, urlsplit, urlunsplit

import matplotlib

matplotlib.use("Agg")  # writes files only; must not need a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.backends.backend_pdf import PdfPages  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from model import STEMS  # noqa: E402
from utils import (HelpFormatter, UserError, add_debug_flag, atomic_path, load_audio,  # noqa: E402
                   load_checkpoint, run_cli, write_text)

REPO = Path(__file__).resolve().parent
PAGE_SIZE = (40 / 3, 7.5)  # inches: 960 x 540 pt, 16:9
ACCENT = "#1f4e79"
PHASE_LABELS = {"mixture": "mixture phase", "griffinlim": "Griffin-Lim", "griffinlim-mixinit": "GL, mixture init",
                "misi": "MISI", "wiener": "Wiener/EM"}
REQUIRED_EPOCHS = (25, 50, 150)
METRICS = ("SDR", "SIR", "SAR", "ISR")
SAMPLE_FILES = ("mixture", "reference_vocals", "reference_accompaniment", "vocals", "accompaniment")
EXPERIMENT_ROWS_PER_PAGE = 14
# Training flags that say where or how fast a run went, not what it did.
INCIDENTAL_FLAGS = ("cache", "checkpoint_dir", "workers", "device", "precision", "save_epochs")
AUGMENTATION_TEXT = {
    "gain": "random gain per source",
    "swap": "random left/right swap per source",
    "chunk": "sources from independent positions of the track",
    "remix": "sources drawn from different tracks",
    "automix": "accompaniment from a track of compatible tempo, placed on the vocals track's beats",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--checkpoint-dir", default="checkpoints", help="train.py's checkpoints (loss history, settings)")
    p.add_argument("--results-dir", default="results", help="inference.py's --out: <checkpoint>-<phase>/summary.json")
    p.add_argument("--samples-dir", default="samples", help="inference.py's listening excerpts")
    p.add_argument("--experiments-dir", default="experiments", help="optional experiment tables (*.json)")
    p.add_argument("--out", default="report", help="output directory")
    add_debug_flag(p)
    return p


# ------------------------------------------------------------------ inputs

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


@dataclass
class Experiment:
    """One optional experiment table: rows of {name, vocals, accompaniment, params}."""
    title: str
    rows: list[dict]


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
    state = load_checkpoint(source)
    try:
        return Training(source, state["history"], state["best_epoch"], state["train_args"], state["model_config"],
                        state["stft"], state["parameters"], saved)
    except KeyError as err:
        raise UserError(f"checkpoint {source} has no {err} entry (written by an older train.py?)") from err


def load_runs(results_dir: Path) -> list[Run]:
    if not results_dir.is_dir():
        raise UserError(f"--results-dir {results_dir} does not exist: score checkpoints first (inference.py)")
    runs = [load_run(path) for path in sorted(results_dir.glob("*/summary.json"))]
    if not runs:
        raise UserError(f"no results in {results_dir} (expected <checkpoint>-<phase>/summary.json): "
                        "score checkpoints first (inference.py)")
    return sorted(runs, key=lambda r: (checkpoint_order(r.checkpoint), phase_order(r.phase)))


def load_run(summary_path: Path) -> Run:
    folder = summary_path.parent
    try:
        s = json.loads(summary_path.read_text())
        tracks = {t: {stem: float(v[stem]) for stem in STEMS} for t, v in s["tracks"].items()}
        seconds = list(s.get("phase_seconds", {}).values())  # summaries of older inference.py lack it
        run = Run(folder.name, Path(s["checkpoint"]).stem, s["epoch"], s["phase"], s["subset"], s["split"],
                  {stem: float(s["median_sdr"][stem]) for stem in STEMS}, tracks, {},
                  float(np.median(seconds)) if seconds else None)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise UserError(f"{summary_path} is not a summary written by inference.py "
                        f"({type(err).__name__}: {err})") from err
    run.metrics = museval_metrics(folder / run.subset, list(tracks))
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
    return [load_experiment(p) for p in paths]


def load_experiment(path: Path) -> Experiment:
    try:
        rows = json.loads(path.read_text())
        if not isinstance(rows, list) or not rows:
            raise ValueError("expected a non-empty list of rows")
        rows = [{"name": str(r["name"]), "vocals": float(r["vocals"]), "accompaniment": float(r["accompaniment"]),
                 "params": dict(r.get("params") or {})} for r in rows]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise UserError(f"{path}: not an experiment table, a list of "
                        f"{{name, vocals, accompaniment, params}} ({type(err).__name__}: {err})") from err
    return Experiment(path.stem.replace("_", " "), rows)


# ------------------------------------------------------------ run metadata

def git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def commit() -> str | None:
    """HEAD's short hash, marked when the working tree has uncommitted changes."""
    head = git("rev-parse", "--short", "HEAD")
    # --no-optional-locks: a report must not rewrite the repository's index.
    dirty = git("--no-optional-locks", "status", "--porcelain", "--untracked-files=no")
    return f"{head} (uncommitted changes)" if head and dirty else head


def repository_url() -> str | None:
    """origin as a browsable https address, without any credentials it may carry."""
    url = git("remote", "get-url", "origin")
    if not url:
        return None
    ssh = re.fullmatch(r"[\w.-]+@([\w.-]+):(.+)", url)
    if ssh:
        url = f"https://{ssh.group(1)}/{ssh.group(2)}"
    parts = urlsplit(url)
    url = urlunsplit((parts.scheme, parts.hostname or "", parts.path, "", ""))
    return url.removesuffix(".git")


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = re.findall(r"model name\s*:\s*(.+)", cpuinfo.read_text())
        cpu = names[0].strip() if names else cpu
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA GPU"
    return f"{platform.system()} {platform.release()}, {cpu}, {gpu}"


def default_train_args() -> dict:
    from train import build_parser as train_parser  # train.py's own defaults, so they never drift

    return vars(train_parser().parse_args([]))


# ------------------------------------------------------------------ formatting

def phase_label(phase: str) -> str:
    return PHASE_LABELS.get(phase, phase)


def db(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.2f}"


def duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{seconds / 60:.1f} min"


def flag_value(value) -> str:
    if value is None:  # train.py's size flags: None takes the chosen model's own default
        return "the model's own"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value))
    return str(value)


def evaluation_label(run: Run) -> str:
    where = {("test", ""): "test set", ("train", "valid"): "validation split",
             ("train", "train"): "training split", ("train", ""): "training subset"}
    return f"{where.get((run.subset, run.split or ''), run.subset)} ({len(run.tracks)} tracks)"


def run_label(run: Run) -> str:
    return f"{run.checkpoint} · {phase_label(run.phase)}"


def groups(runs: list[Run]) -> list[list[Run]]:
    """Runs that scored the same tracks, the test set first."""
    by_set: dict[tuple, list[Run]] = {}
    for run in runs:
        by_set.setdefault(run.evaluation, []).append(run)
    return sorted(by_set.values(), key=lambda g: (g[0].subset != "test", g[0].evaluation))


# ---------------------------------------------------------------- tables

def results_table(runs: list[Run]) -> tuple[list[str], list[list[str]]]:
    """One row per checkpoint and phase method; the phase method's time where recorded."""
    timed = any(r.seconds is not None for r in runs)
    header = ["Checkpoint", "Epoch", "Phase", "Vocals SDR", "Accompaniment SDR"] + ["Phase time (s/track)"] * timed
    rows = [[r.checkpoint, str(r.epoch), phase_label(r.phase), *(db(r.median[stem]) for stem in STEMS)]
            + [db(math.nan if r.seconds is None else r.seconds)] * timed for r in runs]
    return header, rows


def metrics_table(runs: list[Run]) -> tuple[list[str], list[list[str]]]:
    header = ["Checkpoint · phase"] + [f"{stem.capitalize()} ({m})" for stem in STEMS for m in METRICS]
    rows = [[run_label(r)] + [db(r.metrics[stem][m]) for stem in STEMS for m in METRICS] for r in runs if r.metrics]
    return header, rows


def experiment_table(experiment: Experiment) -> tuple[list[str], list[list[str]]]:
    header = ["Experiment", "Vocals", "Accompaniment", "Parameters"]
    rows = [[r["name"], db(r["vocals"]), db(r["accompaniment"]),
             ", ".join(f"{k}={v}" for k, v in r["params"].items())] for r in experiment.rows]
    return header, rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


# ----------------------------------------------------------------- findings

def findings(training: Training, runs: list[Run]) -> list[str]:
    """Sentences computed from the history and the main evaluation set's results."""
    main = groups(runs)[0]
    where = evaluation_label(main[0])
    primary = "mixture" if any(r.phase == "mixture" for r in main) else main[0].phase
    return ([training_finding(training)] + progression_findings(main, primary, where)
            + best_findings(main, primary, training.best_epoch)
            + phase_findings(main, primary, training.best_epoch) + spread_findings(main, primary))


def training_finding(training: Training) -> str:
    history = training.history
    best, last = min(history, key=lambda h: h["valid_loss"]), history[-1]
    text = (f"Training ran {last['epoch']} epochs in {duration(sum(h['seconds'] for h in history))}; validation "
            f"loss was lowest at epoch {best['epoch']} ({best['valid_loss']:.4g})")
    if last["epoch"] > best["epoch"]:
        since = last["epoch"] - best["epoch"]
        text += (f" and did not improve in the last {f'{since} epochs' if since > 1 else 'epoch'} "
                 f"({last['valid_loss']:.4g} at the end)")
    text += f"; final training loss {last['train_loss']:.4g}."
    drops = sum(b["lr"] < a["lr"] for a, b in zip(history, history[1:]))
    if drops:
        text += f" The learning rate was lowered {drops} time(s), to {last['lr']:.3g}."
    return text


def progression_findings(runs: list[Run], phase: str, where: str) -> list[str]:
    """SDR against training epochs, e.g. 25 -> 50 -> 150."""
    by_epoch: dict[int, Run] = {}
    for run in runs:
        if run.phase == phase and run.epoch is not None:
            by_epoch.setdefault(run.epoch, run)
    epochs = sorted(by_epoch)
    if len(epochs) < 2:
        return []
    out = []
    for stem in STEMS:
        values = [by_epoch[e].median[stem] for e in epochs]
        path = " → ".join(f"{v:.2f} dB (epoch {e})" for e, v in zip(epochs, values))
        text = (f"{stem.capitalize()} SDR on the {where}, {phase_label(phase)}: {path}, "
                f"{values[-1] - values[0]:+.2f} dB overall")
        if len(epochs) > 2:
            steps = np.diff(values)
            k = int(np.argmax(steps))
            text += f"; the largest step ({steps[k]:+.2f} dB) came between epochs {epochs[k]} and {epochs[k + 1]}"
        out.append(text + ".")
    return out


def best_findings(runs: list[Run], phase: str, best_epoch: int) -> list[str]:
    """Does the lowest validation loss also give the highest SDR?"""
    candidates = [r for r in runs if r.phase == phase]
    tops = {stem: max(candidates, key=lambda r: r.median[stem]) for stem in STEMS}
    parts = "; ".join(f"{stem} {top.median[stem]:.2f} dB ({top.checkpoint}, epoch {top.epoch})"
                      for stem, top in tops.items())
    if best_epoch not in {r.epoch for r in candidates}:
        verdict = f"the epoch of lowest validation loss ({best_epoch}) was not scored"
    elif all(top.epoch == best_epoch for top in tops.values()):
        verdict = f"both at the epoch of lowest validation loss ({best_epoch})"
    else:
        verdict = f"so the lowest validation loss (epoch {best_epoch}) does not give the highest SDR for both stems"
    return [f"Highest median SDR with the {phase_label(phase)}: {parts}; {verdict}."]


def phase_findings(runs: list[Run], primary: str, best_epoch: int) -> list[str]:
    """Every other phase method against the primary one, on the best checkpoint if scored."""
    by_key = {(r.checkpoint, r.phase): r for r in runs}
    out = []
    for phase in sorted({r.phase for r in runs} - {primary}, key=phase_order):
        both = [r.checkpoint for r in runs if r.phase == phase and (r.checkpoint, primary) in by_key]
        if not both:
            continue
        # The checkpoint of lowest validation loss is the one the comparison is asked for.
        ckpt = min(both, key=lambda c: (by_key[(c, phase)].epoch != best_epoch, c != "best", checkpoint_order(c)))
        other, base = by_key[(ckpt, phase)], by_key[(ckpt, primary)]
        parts = [f"{stem} {other.median[stem]:.2f} vs {base.median[stem]:.2f} dB "
                 f"({other.median[stem] - base.median[stem]:+.2f} dB)" for stem in STEMS]
        if other.seconds is not None and base.seconds is not None:
            parts.append(f"{other.seconds:.2f} vs {base.seconds:.2f} s per track")
        out.append(f"{phase_label(phase)} against the {phase_label(primary)} on {ckpt} (epoch {other.epoch}): "
                   + ", ".join(parts) + ".")
    return out


def spread_findings(runs: list[Run], phase: str) -> list[str]:
    """How far single tracks sit from the median, for the run of highest vocals SDR."""
    run = max((r for r in runs if r.phase == phase), key=lambda r: r.median["vocals"])
    if len(run.tracks) < 2:
        return []
    vocals = {t: v["vocals"] for t, v in run.tracks.items() if not math.isnan(v["vocals"])}
    low, high = min(vocals, key=vocals.get), max(vocals, key=vocals.get)
    louder = sum(v["accompaniment"] > v["vocals"] for v in run.tracks.values())
    return [f"Per track ({run_label(run)}), vocals SDR spans {vocals[low]:.2f} dB ({low}) to "
            f"{vocals[high]:.2f} dB ({high}); accompaniment scores higher than vocals on "
            f"{louder} of {len(run.tracks)} tracks."]


def novelty(training: Training, runs: list[Run], experiments: list[Experiment]) -> dict[str, list[str]]:
    """Headed lists: what was done beyond the required tasks, which required results are
    missing (only if any), which training flags differ from their defaults.

    Required: the mixture phase on epochs 25, 50 and 150 and Griffin-Lim on the best
    epoch, all on the test set."""
    beyond = [f"Phase reconstruction by '{phase_label(p)}', beyond the mixture phase and Griffin-Lim."
              for p in sorted({r.phase for r in runs} - {"mixture", "griffinlim"})]
    gl_extra = sorted({r.checkpoint for r in runs if r.phase == "griffinlim" and r.epoch != training.best_epoch},
                      key=checkpoint_order)
    if gl_extra:
        beyond.append(f"Griffin-Lim scored on {', '.join(gl_extra)} (required: the best epoch only).")
    extra = sorted({r.checkpoint for r in runs if r.epoch not in REQUIRED_EPOCHS and r.epoch != training.best_epoch},
                   key=checkpoint_order)
    if extra:
        beyond.append(f"Checkpoints scored besides epochs {', '.join(map(str, REQUIRED_EPOCHS))} "
                      f"and the best: {', '.join(extra)}.")
    beyond += [f"Also scored on the {evaluation_label(g[0])}." for g in groups(runs) if g[0].subset != "test"]
    if experiments:
        beyond.append(f"{len(experiments)} experiment table(s): {', '.join(e.title for e in experiments)}.")

    test = {(r.epoch, r.phase) for r in runs if r.subset == "test"}
    missing = [f"Epoch {e} with the mixture phase on the test set." for e in REQUIRED_EPOCHS
               if (e, "mixture") not in test]
    if (training.best_epoch, "griffinlim") not in test:
        missing.append(f"Griffin-Lim on the best epoch ({training.best_epoch}) on the test set.")

    defaults = default_train_args()
    changed = [f"--{k.replace('_', '-')} {flag_value(v)} (default {flag_value(defaults[k])})"
               for k, v in training.train_args.items()
               if k in defaults and k not in INCIDENTAL_FLAGS and v != defaults[k]]
    out = {"Beyond the required tasks": beyond or ["Nothing beyond the required tasks."]}
    if missing:
        out["Required results not found"] = missing
    out["Training flags changed from the defaults"] = changed or ["None: every training flag at its default."]
    return out


def architecture(cfg: dict) -> str:
    """model_config -> a short name; a config without "model" predates bsrnn and is umx."""
    if cfg.get("model", "umx") == "bsrnn":
        causal = "" if cfg["bidirectional"] else ", causal in time"
        return f"band-split RNN ({cfg['nb_layers']} time/band LSTM pairs{causal})"
    if cfg["nb_layers"] == 0:
        return "per-frame network (no LSTM)"
    return f"{cfg['nb_layers']}-layer {'BiLSTM' if cfg['bidirectional'] else 'causal LSTM'}"


def model_lines(cfg: dict, rate: int, n_fft: int) -> list[str]:
    """The methodology page's description of the network, from its model_config."""
    if cfg.get("model", "umx") == "bsrnn":
        return [f"{architecture(cfg)}, {cfg['feature_size']} features per band, one trunk shared by both stems",
                "output: masks applied to the mixture magnitude",
                f"input: all {cfg['nb_bins']} bins in {len(cfg['band_widths'])} bands "
                f"({min(cfg['band_widths'])}–{max(cfg['band_widths'])} bins wide), {cfg['nb_channels']} channels"]
    return [f"{architecture(cfg)}, hidden size {cfg['hidden_size']}, one trunk shared by both stems",
            "output: " + ("masks applied to the mixture magnitude" if cfg["use_mask"] else "magnitudes directly"),
            f"input: {cfg['max_bin']} of {cfg['nb_bins']} bins (up to {cfg['max_bin'] * rate / n_fft / 1000:.1f} kHz), "
            f"{cfg['nb_channels']} channels"]


def methodology(training: Training, runs: list[Run]) -> dict[str, list[str]]:
    from data import GAIN_RANGE, parse_augmentations

    cfg, args, stft = training.model_config, training.train_args, training.stft
    rate, n_fft, hop = stft["sample_rate"], stft["n_fft"], stft["hop"]
    text = {**AUGMENTATION_TEXT, "gain": f"random gain {GAIN_RANGE[0]:g}–{GAIN_RANGE[1]:g} per source"}
    augment = [f"{a}: {text.get(a, a)}" for a in parse_augmentations(args["augment"])]
    if args["data"] == "magnitudes":
        augment.append("on cached magnitudes only gain and swap apply, to the whole excerpt")
    return {
        "Model": [*model_lines(cfg, rate, n_fft), f"{training.parameters:,} parameters"],
        "STFT": [
            f"n_fft {n_fft} ({1000 * n_fft / rate:.0f} ms Hann window), hop {hop} ({1000 * hop / rate:.1f} ms)",
            f"{rate} Hz; the same STFT for training, inference and Griffin-Lim",
        ],
        "Data and augmentation": [
            f"{args['seq_dur']:g} s excerpts, {args['samples_per_track']} per track per epoch, "
            f"from cached {args['data']}",
            *(augment or ["no augmentation"]),
        ],
        "Training": [
            f"{args['epochs']} epochs, batch {args['batch_size']}, Adam lr {args['lr']:g}, "
            f"weight decay {args['weight_decay']:g}, seed {args['seed']}",
            f"ReduceLROnPlateau: factor {args['lr_decay_gamma']:g}, patience {args['lr_decay_patience']} epochs",
            "loss: MSE of the magnitude estimates; best.pt = lowest validation loss",
        ],
        "Evaluation": [
            "museval BSSEval v4 on 1 s frames: median over frames per track, then median over tracks",
            "phase: " + ", ".join(phase_label(p) for p in sorted({r.phase for r in runs}, key=phase_order)),
        ],
    }


# -------------------------------------------------------------------- pages

class Deck:
    """The PDF: every page one 16:9 figure with a title and a page number."""

    def __init__(self, pdf: PdfPages) -> None:
        self.pdf, self.pages = pdf, 0

    def page(self, title: str, subtitle: str = "") -> plt.Figure:
        fig = plt.figure(figsize=PAGE_SIZE)
        fig.text(0.05, 0.9, title, fontsize=24, weight="bold", color=ACCENT)
        if subtitle:
            fig.text(0.05, 0.855, subtitle, fontsize=12, color="0.35")
        fig.add_artist(plt.Line2D([0.05, 0.95], [0.835, 0.835], color=ACCENT, linewidth=1.5))
        return fig

    def add(self, fig: plt.Figure) -> None:
        self.pages += 1
        fig.text(0.95, 0.03, str(self.pages), fontsize=10, color="0.5", ha="right")
        self.pdf.savefig(fig)
        plt.close(fig)


def bullets(fig: plt.Figure, x: float, y: float, items: Iterable[str], width: int, size: float = 13,
            heading: str | None = None) -> float:
    """Wrapped bullet list from (x, y) downwards in figure coordinates; returns the y below it."""
    step = size * 1.45 / 72 / PAGE_SIZE[1]  # one text line in figure coordinates
    if heading:
        fig.text(x, y, heading, fontsize=size + 2, weight="bold", color=ACCENT, va="top")
        y -= step * 1.5
    for item in items:
        lines = textwrap.wrap(item, width) or [""]
        fig.text(x, y, "•", fontsize=size, va="top", color=ACCENT)
        fig.text(x + 0.015, y, "\n".join(lines), fontsize=size, va="top", linespacing=1.3)
        y -= step * (len(lines) + 0.45)
    return y - step * 0.5


def draw_table(fig: plt.Figure, top: float, header: list[str], rows: list[list[str]],
               bold: Iterable[tuple[int, int]] = (), size: float = 12, row_height: float = 0.045) -> float:
    """A table across the page from `top` down, columns as wide as their text; returns its bottom."""
    header = [h.replace(" (", "\n(") for h in header]  # two-line headers keep the columns narrow
    header_lines = max(h.count("\n") + 1 for h in header)
    height = min(0.72, row_height * (len(rows) + header_lines))
    chars = [max([len(line) for line in h.split("\n")] + [len(r[i]) for r in rows]) + 3 for i, h in enumerate(header)]
    ax = fig.add_axes([0.05, top - height, 0.9, height])
    ax.axis("off")
    # bbox: the table fills the axes; cell heights keep their ratios.
    table = ax.table(cellText=rows, colLabels=header, colWidths=[c / sum(chars) for c in chars],
                     cellLoc="center", bbox=[0, 0, 1, 1])
    table.auto_set_font_size(False)
    table.set_fontsize(min(size, 0.55 * height * PAGE_SIZE[1] * 72 / (len(rows) + header_lines)))  # fit many rows
    bold = set(bold)
    for (row, col), cell in table.get_celld().items():
        cell.set_edgecolor("0.8")
        if row == 0:
            cell.set_facecolor(ACCENT)
            cell.set_text_props(color="white", weight="bold")
            cell.set_height(cell.get_height() * header_lines)
        elif (row - 1, col) in bold:
            cell.set_text_props(weight="bold")
        if row > 0 and row % 2 == 0:
            cell.set_facecolor("#f2f5f9")
    return top - height


def column_maxima(rows: list[list[str]], columns: Iterable[int]) -> set[tuple[int, int]]:
    """(row, column) of the highest number (and its ties) in each of `columns`."""
    out = set()
    for col in columns:
        values = [float(r[col]) if r[col] != "–" else -math.inf for r in rows]
        out |= {(i, col) for i, v in enumerate(values) if v == max(values) > -math.inf}
    return out


def cover_page(deck: Deck, training: Training, runs: list[Run]) -> None:
    fig = plt.figure(figsize=PAGE_SIZE)
    fig.patches.append(plt.Rectangle((0, 0.62), 1, 0.38, transform=fig.transFigure, color=ACCENT))
    fig.text(0.06, 0.8, "Vocals / accompaniment separation", fontsize=34, weight="bold", color="white")
    fig.text(0.06, 0.7, f"{architecture(training.model_config)} separator, {training.history[-1]['epoch']} epochs, "
             f"scored on the {evaluation_label(groups(runs)[0][0])}", fontsize=16, color="white")
    lines = [("Date", date.today().isoformat()), ("Commit", commit()), ("Report built on", machine()),
             ("Model", f"{training.parameters:,} parameters"),
             ("Training", f"{len(training.history)} epochs, {duration(sum(h['seconds'] for h in training.history))}")]
    y = 0.52
    for key, value in lines:
        if value:
            fig.text(0.06, y, key, fontsize=14, weight="bold", color=ACCENT)
            fig.text(0.22, y, value, fontsize=14)
            y -= 0.065
    url = repository_url()
    if url:
        fig.text(0.06, y, "Repository", fontsize=14, weight="bold", color=ACCENT)
        fig.text(0.22, y, url, fontsize=14, color="#1a5fb4", url=url)
    deck.add(fig)


def novelty_page(deck: Deck, training: Training, runs: list[Run], experiments: list[Experiment]) -> None:
    *left, (flags_heading, flags) = novelty(training, runs, experiments).items()
    fig = deck.page("Novelty", "What this run did beyond the required tasks")
    y = 0.77
    for heading, items in left:
        y = bullets(fig, 0.05, y, items, 62, heading=heading)
    bullets(fig, 0.53, 0.77, flags, 62, heading=flags_heading)
    deck.add(fig)


def methodology_page(deck: Deck, training: Training, runs: list[Run]) -> None:
    sections = list(methodology(training, runs).items())
    fig = deck.page("Methodology", f"Settings read from {training.source.name}")
    left, right = [sections[i] for i in (0, 1, 3)], [sections[i] for i in (2, 4)]
    for column, x in ((left, 0.05), (right, 0.53)):
        y = 0.77
        for heading, items in column:
            y = bullets(fig, x, y, items, 62, size=12, heading=heading)
    deck.add(fig)


def results_page(deck: Deck, runs: list[Run]) -> None:
    header, rows = results_table(runs)
    fig = deck.page(f"Results on the {evaluation_label(runs[0])}",
                    "Median over tracks of the per-track median SDR (dB, higher is better); the highest in bold")
    bottom = draw_table(fig, 0.79, header, rows, column_maxima(rows, (3, 4)), size=13)
    if bottom - 0.18 >= 0.15:
        sdr_bars(fig, runs, bottom - 0.08)
    deck.add(fig)


def sdr_bars(fig: plt.Figure, runs: list[Run], top: float) -> None:
    """Grouped bars: checkpoints along x, one bar per phase method, one panel per stem."""
    checkpoints = list(dict.fromkeys(r.checkpoint for r in runs))
    phases = sorted({r.phase for r in runs}, key=phase_order)
    by_key = {(r.checkpoint, r.phase): r for r in runs}
    width = 0.8 / len(phases)
    for i, stem in enumerate(STEMS):
        ax = fig.add_axes([0.07 + i * 0.47, 0.08, 0.41, top - 0.08])
        for k, phase in enumerate(phases):
            xs = [j for j, c in enumerate(checkpoints) if (c, phase) in by_key]
            values = [by_key[(checkpoints[j], phase)].median[stem] for j in xs]
            bars = ax.bar([x + (k - (len(phases) - 1) / 2) * width for x in xs], values, width,
                          label=phase_label(phase), color=plt.cm.tab10(k))
            ax.bar_label(bars, fmt="%.2f", fontsize=8, padding=2)
        ax.set_xticks(range(len(checkpoints)), checkpoints, fontsize=9)
        ax.axhline(0, color="0.3", linewidth=0.8)
        ax.set_ylabel(f"{stem} SDR (dB)")
        ax.margins(y=0.2)
        ax.grid(axis="y", alpha=0.3)
        if i == 0:
            ax.legend(fontsize=9)


def findings_page(deck: Deck, training: Training, runs: list[Run]) -> None:
    fig = deck.page("Findings", "Computed from the loss history and the results")
    bullets(fig, 0.05, 0.77, findings(training, runs), 115, size=13)
    deck.add(fig)


def loss_page(deck: Deck, training: Training) -> None:
    h = training.history
    epochs = [e["epoch"] for e in h]
    marker = "." if len(h) < 30 else None
    fig = deck.page("Training and validation loss", "Dashed: saved epoch checkpoints; star: best epoch (best.pt)")
    ax = fig.add_axes([0.07, 0.12, 0.6, 0.66])
    ax.plot(epochs, [e["train_loss"] for e in h], label="training", color=ACCENT, marker=marker)
    ax.plot(epochs, [e["valid_loss"] for e in h], label="validation", color="#c0392b", marker=marker)
    for epoch in training.saved_epochs:
        ax.axvline(epoch, color="0.5", linestyle="--", linewidth=1)
        ax.text(epoch, 1.01, f"epoch {epoch}", transform=ax.get_xaxis_transform(), ha="center", fontsize=9, color="0.4")
    best = next(e for e in h if e["epoch"] == training.best_epoch)
    ax.plot(best["epoch"], best["valid_loss"], marker="*", markersize=18, color="#f1c40f", markeredgecolor="k",
            linestyle="none", label=f"best: epoch {best['epoch']}")
    ax.set(xlabel="epoch", ylabel="MSE loss")
    ax.legend()
    lr, secs = fig.add_axes([0.74, 0.47, 0.22, 0.31]), fig.add_axes([0.74, 0.12, 0.22, 0.22])
    lr.step(epochs, [e["lr"] for e in h], where="post", color=ACCENT)
    lr.set(title="learning rate", yscale="log")
    secs.bar(epochs, [e["seconds"] for e in h], color="0.6")
    secs.set(title="seconds per epoch", xlabel="epoch")
    for axis in (ax, lr, secs):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
    deck.add(fig)


def boxplot_page(deck: Deck, runs: list[Run]) -> None:
    fig = deck.page(f"Per-track SDR on the {evaluation_label(runs[0])}",
                    "One box per checkpoint and phase method; dots are tracks")
    labels = [f"{r.checkpoint}\n{phase_label(r.phase)}" for r in runs]
    rng = np.random.default_rng(0)  # fixed jitter: the same report for the same inputs
    for i, stem in enumerate(STEMS):
        ax = fig.add_axes([0.07 + i * 0.47, 0.2, 0.42, 0.58])
        values = [[v[stem] for v in r.tracks.values() if not math.isnan(v[stem])] for r in runs]
        ax.boxplot(values, showfliers=False, medianprops={"color": "#c0392b"})
        for k, vals in enumerate(values, start=1):
            ax.plot(k + rng.uniform(-0.12, 0.12, len(vals)), vals, ".", color=ACCENT, alpha=0.6)
        ax.set_xticks(range(1, len(runs) + 1), labels, fontsize=8 if len(runs) > 6 else 10,
                      rotation=30 if len(runs) > 4 else 0, ha="right" if len(runs) > 4 else "center")
        ax.set(title=stem, ylabel="SDR (dB)")
        ax.grid(axis="y", alpha=0.3)
    deck.add(fig)


def metrics_page(deck: Deck, runs: list[Run]) -> None:
    header, rows = metrics_table(runs)
    fig = deck.page(f"BSSEval metrics on the {evaluation_label(runs[0])}",
                    "Median over tracks of the per-track median (dB), from museval's per-track results")
    draw_table(fig, 0.79, header, rows, size=11)
    deck.add(fig)


def experiment_pages(deck: Deck, experiment: Experiment) -> None:
    header, rows = experiment_table(experiment)
    for start in range(0, len(rows), EXPERIMENT_ROWS_PER_PAGE):
        chunk = rows[start:start + EXPERIMENT_ROWS_PER_PAGE]
        fig = deck.page(f"Experiment: {experiment.title}", "Median SDR (dB)")
        draw_table(fig, 0.79, header, chunk, column_maxima(chunk, (1, 2)), size=11)
        deck.add(fig)


# ------------------------------------------------------------- spectrograms

def mel_db(audio: np.ndarray, rate: int, ref: float | None = None) -> tuple[np.ndarray, float]:
    """Mel power spectrogram in dB of the channel mean and the reference power used.

    Panels of one track share the mixture's peak as reference, so colours compare."""
    import librosa

    mel = librosa.feature.melspectrogram(y=audio.mean(axis=1), sr=rate, n_fft=2048, hop_length=512, n_mels=128)
    ref = ref if ref is not None else float(mel.max()) or 1.0
    return librosa.power_to_db(mel, ref=ref, top_db=None).clip(-80, 0), ref


def draw_spectrogram(ax: plt.Axes, spec: np.ndarray, rate: int, title: str) -> None:
    import librosa.display

    librosa.display.specshow(spec, sr=rate, hop_length=512, x_axis="s", y_axis="mel", ax=ax, cmap="magma",
                             vmin=-80, vmax=0, rasterized=True)
    ax.set_title(title, fontsize=10)
    ax.tick_params(labelsize=8)
    ax.set_xlabel("")
    ax.set_ylabel("")


def spectrogram_page(deck: Deck, samples: list[Sample], runs: dict[str, Run]) -> None:
    """Mixture, references and each phase method's estimates of one excerpt."""
    first = next((s for s in samples if s.run in runs and runs[s.run].checkpoint == "best"), samples[0])
    checkpoint = runs[first.run].checkpoint if first.run in runs else None
    same = [s for s in samples if s.track == first.track and
            (s.run == first.run or (checkpoint and s.run in runs and runs[s.run].checkpoint == checkpoint))]
    same.sort(key=lambda s: phase_order(runs[s.run].phase) if s.run in runs else (True, s.run))
    audio, rate = load_audio(first.folder / "mixture.wav")
    mix, ref = mel_db(audio, rate)
    fig = deck.page(f"Spectrograms: {first.track}",
                    f"{len(audio) / rate:.0f} s listening excerpt; estimates of {checkpoint or first.run}")
    columns = 2 + len(same)
    width = 0.9 / columns
    ax = fig.add_axes([0.05, 0.08, width - 0.015, 0.7])
    draw_spectrogram(ax, mix, rate, "mixture")
    for row, stem in enumerate(STEMS):
        panels = [(f"reference {stem}", first.folder / f"reference_{stem}.wav")]
        panels += [(f"{stem}, {phase_label(runs[s.run].phase) if s.run in runs else s.run}"
                    f" ({db(runs[s.run].tracks.get(s.track, {}).get(stem, math.nan)) if s.run in runs else '–'} dB)",
                    s.folder / f"{stem}.wav") for s in same]
        for col, (title, path) in enumerate(panels, start=1):
            ax = fig.add_axes([0.05 + col * width, 0.47 - row * 0.39, width - 0.015, 0.31])
            draw_spectrogram(ax, mel_db(load_audio(path)[0], rate, ref)[0], rate, title)
            ax.tick_params(labelleft=col == 1)  # the estimates share the references' frequency axis
    deck.add(fig)


def spectrogram_png(path: Path, audio: np.ndarray, rate: int, ref: float) -> None:
    fig = plt.figure(figsize=(3.8, 1.2), dpi=100)
    ax = fig.add_axes([0, 0, 1, 1])
    draw_spectrogram(ax, mel_db(audio, rate, ref)[0], rate, "")
    ax.set_axis_off()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


# -------------------------------------------------------------- the outputs

def write_pdf(path: Path, training: Training, runs: list[Run], samples: list[Sample],
              experiments: list[Experiment]) -> int:
    """Write the slides; returns the number of pages."""
    with atomic_path(path) as tmp, PdfPages(tmp, metadata={"Title": "Source separation report"}) as pdf:
        deck = Deck(pdf)
        cover_page(deck, training, runs)
        novelty_page(deck, training, runs, experiments)
        methodology_page(deck, training, runs)
        for group in groups(runs):
            results_page(deck, group)
        findings_page(deck, training, runs)
        loss_page(deck, training)
        for group in groups(runs):
            boxplot_page(deck, group)
            if any(r.metrics for r in group):
                metrics_page(deck, group)
        if samples:
            spectrogram_page(deck, samples, {r.name: r for r in runs})
        for experiment in experiments:
            experiment_pages(deck, experiment)
        return deck.pages


def write_markdown(path: Path, training: Training, runs: list[Run], experiments: list[Experiment]) -> None:
    best = next(h for h in training.history if h["epoch"] == training.best_epoch)
    parts = [f"# Results\n\nModel: {training.parameters:,} parameters; {len(training.history)} epochs; best "
             f"epoch {training.best_epoch} (validation loss {best['valid_loss']:.4g}). SDR in dB: median over "
             "tracks of the per-track median over 1 s frames (museval BSSEval v4)."]
    for group in groups(runs):
        parts.append(f"## Results on the {evaluation_label(group[0])}\n\n" + markdown_table(*results_table(group)))
        header, rows = metrics_table(group)
        if rows:
            parts.append(f"## BSSEval metrics on the {evaluation_label(group[0])}\n\n" + markdown_table(header, rows))
    parts.append("## Findings\n\n" + "\n".join(f"- {f}" for f in findings(training, runs)))
    for experiment in experiments:
        parts.append(f"## Experiment: {experiment.title}\n\n" + markdown_table(*experiment_table(experiment)))
    write_text(path, "\n\n".join(parts) + "\n")


def write_listening_page(out: Path, samples: list[Sample], runs: dict[str, Run]) -> None:
    """index.html plus audio/<track>/...: copies of the excerpts and their spectrograms."""
    audio_dir = out / "audio"
    shutil.rmtree(audio_dir, ignore_errors=True)  # holds only copies this function makes
    by_track: dict[str, list[Sample]] = {}
    for sample in samples:
        by_track.setdefault(sample.track, []).append(sample)
    sections = []
    for track, track_samples in sorted(by_track.items()):
        track_samples.sort(key=lambda s: sample_order(s, runs))
        first, folder = track_samples[0].folder, audio_dir / track
        ref = mel_db(*load_audio(first / "mixture.wav"))[1]
        # Mixture and references are the same for every run: one copy per track.
        cells = ['<div class="label">Mixture</div>', audio_card(first / "mixture.wav", folder, out, ref), "<div></div>",
                 '<div></div><div class="head">Vocals</div><div class="head">Accompaniment</div>',
                 '<div class="label">Reference</div>']
        cells += [audio_card(first / f"reference_{stem}.wav", folder, out, ref) for stem in STEMS]
        for sample in track_samples:
            run = runs.get(sample.run)
            label = (f"{html.escape(run.checkpoint)} (epoch {run.epoch})<br>{html.escape(phase_label(run.phase))}"
                     if run else html.escape(sample.run))
            cells.append(f'<div class="label">{label}</div>')
            cells += [audio_card(sample.folder / f"{stem}.wav", folder / sample.run, out, ref,
                                 run.tracks.get(track, {}).get(stem, math.nan) if run else math.nan)
                      for stem in STEMS]
        sections.append(f'<section><h2>{html.escape(track)}</h2><div class="grid">{"".join(cells)}</div></section>')
    write_text(out / "index.html", LISTENING_PAGE.format(date=date.today().isoformat(), sections="\n".join(sections)))


def sample_order(sample: Sample, runs: dict[str, Run]) -> tuple:
    run = runs.get(sample.run)
    return (checkpoint_order(run.checkpoint), phase_order(run.phase)) if run else ((9, 0, sample.run), (True, ""))


def audio_card(source: Path, folder: Path, out: Path, ref: float, sdr: float | None = None) -> str:
    """Copy one excerpt into the report, draw its spectrogram beside it, return its HTML."""
    target = folder / source.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    audio, rate = load_audio(target)
    spectrogram_png(target.with_suffix(".png"), audio, rate, ref)
    url, image = (quote(p.relative_to(out).as_posix()) for p in (target, target.with_suffix(".png")))
    score = f'<div class="sdr">SDR {db(sdr)} dB</div>' if sdr is not None else ""
    return (f'<figure>{score}<audio controls preload="metadata" src="{url}"></audio>'
            f'<img src="{image}" alt="spectrogram of {html.escape(source.stem)}" width="380" height="120"></figure>')


LISTENING_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Listening samples</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
h1, h2 {{ color: #1f4e79; }}
h2 {{ border-bottom: 2px solid #1f4e79; padding-bottom: .2em; margin-top: 1.5em; max-width: 1000px; }}
.grid {{ display: grid; grid-template-columns: 190px 380px 380px; column-gap: 1.2em; }}
.grid > * {{ border-top: 1px solid #ddd; padding: .5em 0; }}
.head {{ font-weight: 600; color: #1f4e79; }}
.label {{ font-weight: 600; display: flex; align-items: center; }}
figure {{ margin: 0; }}
.sdr {{ color: #555; margin-bottom: .2em; }}
audio {{ width: 380px; display: block; }}
img {{ display: block; width: 380px; height: 120px; }}
</style>
</head>
<body>
<h1>Listening samples</h1>
<p>Excerpts from the middle of each track. SDR: the whole track's median over 1 s frames (museval).<br>
Spectrograms: mel scale, 0 to -80 dB relative to the mixture's peak. Made {date}.</p>
{sections}
<script>
// Once every player has read its file, record the durations on <body> (0 for a file that
// failed), so an automated check can see that every excerpt loads and decodes.
const players = Array.from(document.querySelectorAll("audio"));
let pending = players.length;
function settled() {{
  if (--pending === 0) document.body.dataset.durations = JSON.stringify(players.map(a => a.duration || 0));
}}
players.forEach(a => {{
  if (a.readyState >= 1) settled();
  else {{
    a.addEventListener("loadedmetadata", settled, {{once: true}});
    a.addEventListener("error", settled, {{once: true}});
  }}
}});
</script>
</body>
</html>
"""


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    training = load_training(Path(args.checkpoint_dir))
    runs = load_runs(Path(args.results_dir))
    samples = load_samples(Path(args.samples_dir))
    experiments = load_experiments(Path(args.experiments_dir), Path(args.results_dir))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pages = write_pdf(out / "report.pdf", training, runs, samples, experiments)
    write_markdown(out / "results.md", training, runs, experiments)
    if samples:
        write_listening_page(out, samples, {r.name: r for r in runs})
        listening = f", {out / 'index.html'} ({len(samples)} excerpt sets)"
    else:
        # An old page would show excerpts of another run.
        (out / "index.html").unlink(missing_ok=True)
        shutil.rmtree(out / "audio", ignore_errors=True)
        listening = f"; no listening samples in {args.samples_dir}, so no index.html"
    print(f"wrote {out / 'report.pdf'} ({pages} pages), {out / 'results.md'}{listening}")


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
