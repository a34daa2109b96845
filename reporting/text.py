"""report.py's words: labels, the tables, the findings computed from the loss history and
the results, the novelty and methodology lists, all shared by the slides and results.md,
which this module writes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from formats.experiment_table import Experiment
from model import MASKS, config_mask
from reporting.runs import METRICS, Run, Training, checkpoint_order, groups, phase_order
from separation.phase import PHASE_METHODS
from training.augment import AUGMENTATION_REGISTRY, parse_augmentations
from training.losses import DEFAULT_LOSSES, LOSSES
from training.schedules import LR_SCHEDULES
from training.settings import build_parser as train_parser
from utils import STEMS, write_text

REQUIRED_EPOCHS = (25, 50, 150)
# Training flags that say where or how fast a run went, not what it did.
INCIDENTAL_FLAGS = ("cache", "checkpoint_dir", "workers", "device", "precision", "save_epochs")


# ------------------------------------------------------------------ formatting

def phase_label(phase: str) -> str:
    """The phase method's label in phase.PHASE_METHODS; a name it does not list, as it is."""
    return PHASE_METHODS[phase].label if phase in PHASE_METHODS else phase


def db(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.2f}"


def plural(count: int, noun: str) -> str:
    """1 epoch, 2 epochs."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{seconds / 60:.1f} min"


def flag_value(value: object) -> str:
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


def loss_label(name: str) -> str:
    """The loss's description in losses.LOSSES; a name it does not list, as it is."""
    return LOSSES[name].description if name in LOSSES else name


def default_train_args(train_args: dict) -> dict:
    """train.py's defaults (training/settings.py's parser) as train_args records them for a
    run of this one's mask kind: --loss at the loss train.py resolves it to for that mask,
    so a flag left at its default never reads as changed."""
    defaults = vars(train_parser().parse_args([]))
    return {**defaults, "loss": DEFAULT_LOSSES[train_args.get("mask", defaults["mask"])]}


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
    """One row per run; where the runs' scores come from different phase methods (a
    complex-mask model's own estimate beside the mixture phase of magnitude models), each
    name says which."""
    mixed = len({r["phase"] for r in experiment.rows}) > 1
    header = ["Experiment", "Vocals", "Accompaniment", "Parameters"]
    rows = [[f"{r['name']} · {phase_label(r['phase'])}" if mixed and r["phase"] else r["name"],
             db(r["vocals"]), db(r["accompaniment"]),
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
            + best_findings(main, primary, training.best_epoch, best_basis(training))
            + phase_findings(main, primary, training.best_epoch) + spread_findings(main, primary))


def best_basis(training: Training) -> str:
    """What chose best.pt: the highest validation SDR where the history records it (train.py
    ranks by it), else the lowest validation loss."""
    return "highest validation SDR" if "valid_sdr_vocals" in training.history[0] else "lowest validation loss"


def validation_figures(row: dict) -> str:
    """One history row's validation figures: SDR (vocals / accompaniment) where recorded, and the loss."""
    sdr = (f"SDR {row['valid_sdr_vocals']:.2f} / {row['valid_sdr_accompaniment']:.2f} dB, "
           if "valid_sdr_vocals" in row else "")
    return f"{sdr}loss {row['valid_loss']:.4g}"


def training_finding(training: Training) -> str:
    history = training.history
    best, last = next(h for h in history if h["epoch"] == training.best_epoch), history[-1]
    text = (f"Training ran {plural(last['epoch'], 'epoch')} in {duration(sum(h['seconds'] for h in history))}; best.pt "
            f"({best_basis(training)}) is epoch {best['epoch']} ({validation_figures(best)})")
    if last["epoch"] > best["epoch"]:
        since = last["epoch"] - best["epoch"]
        text += (f" and the validation did not improve in the last {plural(since, 'epoch') if since > 1 else 'epoch'} "
                 f"({validation_figures(last)} at the end)")
    text += f"; final training loss {last['train_loss']:.4g}."
    drops = sum(b["lr"] < a["lr"] for a, b in zip(history, history[1:]))
    if drops and training.train_args.get("lr_schedule", "plateau") == "plateau":
        text += f" The learning rate was lowered {plural(drops, 'time')}, to {last['lr']:.3g}."
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


def best_findings(runs: list[Run], phase: str, best_epoch: int, basis: str) -> list[str]:
    """Does best.pt's epoch (chosen on `basis`) also give the highest SDR?"""
    candidates = [r for r in runs if r.phase == phase]
    tops = {stem: max(candidates, key=lambda r: r.median[stem]) for stem in STEMS}
    parts = "; ".join(f"{stem} {top.median[stem]:.2f} dB ({top.checkpoint}, epoch {top.epoch})"
                      for stem, top in tops.items())
    if best_epoch not in {r.epoch for r in candidates}:
        verdict = f"the epoch of {basis} ({best_epoch}) was not scored"
    elif all(top.epoch == best_epoch for top in tops.values()):
        verdict = f"both at the epoch of {basis} ({best_epoch})"
    else:
        verdict = f"so the {basis} (epoch {best_epoch}) does not give the highest SDR for both stems"
    return [f"Highest median SDR with the {phase_label(phase)}: {parts}; {verdict}."]


def phase_findings(runs: list[Run], primary: str, best_epoch: int) -> list[str]:
    """Every other phase method against the primary one, on the best checkpoint if scored."""
    by_key = {(r.checkpoint, r.phase): r for r in runs}
    out = []
    for phase in sorted({r.phase for r in runs} - {primary}, key=phase_order):
        both = [r.checkpoint for r in runs if r.phase == phase and (r.checkpoint, primary) in by_key]
        if not both:
            continue
        # best.pt's epoch is the one the comparison is asked for.
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


def best_epochs(training: Training) -> set[int]:
    """The epochs Griffin-Lim is asked for on: best.pt's, and the best of epochs 25, 50 and
    150 by the same validation SDR (for a student who takes the best among those)."""
    rows = [h for h in training.history if h["epoch"] in REQUIRED_EPOCHS and "valid_sdr_vocals" in h]
    best_required = {max(rows, key=lambda h: sum(h[f"valid_sdr_{stem}"] for stem in STEMS))["epoch"]} if rows else set()
    return {training.best_epoch} | best_required


def novelty(training: Training, runs: list[Run], experiments: list[Experiment]) -> dict[str, list[str]]:
    """Headed lists: what was done beyond the required tasks, which required results are
    missing (only if any), which training flags differ from their defaults.

    Required: the mixture phase on epochs 25, 50 and 150 and Griffin-Lim on the best
    epoch (best.pt's, or the best of those three: best_epochs), all on the test set."""
    beyond = [f"Phase reconstruction by '{phase_label(p)}', beyond the mixture phase and Griffin-Lim."
              for p in sorted({r.phase for r in runs} - {"mixture", "griffinlim"})]
    gl_epochs = best_epochs(training)
    gl_extra = sorted({r.checkpoint for r in runs if r.phase == "griffinlim" and r.epoch not in gl_epochs},
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
        beyond.append(f"{plural(len(experiments), 'experiment table')}: {', '.join(e.title for e in experiments)}.")

    test = {(r.epoch, r.phase) for r in runs if r.subset == "test"}
    missing = [f"Epoch {e} with the mixture phase on the test set." for e in REQUIRED_EPOCHS
               if (e, "mixture") not in test]
    if not any((e, "griffinlim") in test for e in gl_epochs):
        missing.append(f"Griffin-Lim on the best epoch ({' or '.join(map(str, sorted(gl_epochs)))}) on the test set.")

    defaults = default_train_args(training.train_args)
    changed = [f"--{k.replace('_', '-')} {flag_value(v)} (default {flag_value(defaults[k])})"
               for k, v in training.train_args.items()
               if k in defaults and k not in INCIDENTAL_FLAGS and v != defaults[k]]
    out = {"Beyond the required tasks": beyond or ["Nothing beyond the required tasks."]}
    if missing:
        out["Required results not found"] = missing
    out["Training flags changed from the defaults"] = changed or ["None: every training flag at its default."]
    return out


def discussion_prompts(training: Training, runs: list[Run]) -> list[str]:
    """Questions the discussion page puts to the student, chosen by what the runs hold;
    the answers are the student's (the report never writes them)."""
    main = groups(runs)[0]
    phases = {r.phase for r in main}
    prompts = []
    if len({r.epoch for r in main if r.phase == "mixture"}) > 1:
        prompts.append("Why does the SDR change between the scored epochs as it does? Compare the loss curves: "
                       "where does the validation loss flatten, and does the SDR follow it?")
    if {"mixture", "griffinlim"} <= phases:
        prompts.append("Griffin-Lim starts from the same magnitudes as the mixture phase: why does its SDR differ "
                       "so much, and do the two sound as different as the numbers say (listening page)?")
    if phases - {"mixture", "griffinlim"}:
        prompts.append("What do the other phase methods change, and is their gain worth their cost in time?")
    prompts += ["Which tracks separate worst (per-track SDR), and what do they have in common when you listen?",
                "Vocals against accompaniment: which is harder here, and why?",
                "What would you change first with more time or compute, and what do you expect it to gain?"]
    return prompts


def architecture(cfg: dict) -> str:
    """model_config -> a short name; a config without "model" is umx's."""
    if cfg.get("model", "umx") == "bsrnn":
        causal = "" if cfg["bidirectional"] else ", causal in time"
        masks = ", complex masks" if config_mask(cfg) == "complex" else ""
        return f"band-split RNN ({cfg['nb_layers']} time/band LSTM pairs{causal}{masks})"
    if cfg["nb_layers"] == 0:
        return "per-frame network (no LSTM)"
    return f"{cfg['nb_layers']}-layer {'BiLSTM' if cfg['bidirectional'] else 'causal LSTM'}"


def model_lines(cfg: dict, rate: int, n_fft: int) -> list[str]:
    """The methodology page's description of the network, from its model_config."""
    if cfg.get("model", "umx") == "bsrnn":
        return [f"{architecture(cfg)}, {cfg['feature_size']} features per band, one trunk shared by both stems",
                f"output: {MASKS[config_mask(cfg)]}",
                f"input: all {cfg['nb_bins']} bins in {len(cfg['band_widths'])} bands "
                f"({min(cfg['band_widths'])}–{max(cfg['band_widths'])} bins wide), {cfg['nb_channels']} channels"]
    return [f"{architecture(cfg)}, hidden size {cfg['hidden_size']}, one trunk shared by both stems",
            "output: " + ("masks applied to the mixture magnitude" if cfg["use_mask"] else "magnitudes directly"),
            f"input: {cfg['max_bin']} of {cfg['nb_bins']} bins (up to {cfg['max_bin'] * rate / n_fft / 1000:.1f} kHz), "
            f"{cfg['nb_channels']} channels"]


def methodology(training: Training, runs: list[Run]) -> dict[str, list[str]]:
    cfg, args, stft = training.model_config, training.train_args, training.stft
    rate, n_fft, hop = stft["sample_rate"], stft["n_fft"], stft["hop"]
    augment = [f"{a}: {AUGMENTATION_REGISTRY[a].description}" for a in parse_augmentations(args["augment"])]
    return {
        "Model": [*model_lines(cfg, rate, n_fft), f"{training.parameters:,} parameters"],
        "STFT": [
            f"n_fft {n_fft} ({1000 * n_fft / rate:.0f} ms Hann window), hop {hop} ({1000 * hop / rate:.1f} ms)",
            f"{rate} Hz; the same STFT for training, inference and Griffin-Lim",
        ],
        "Data and augmentation": [
            f"{args['seq_dur']:g} s excerpts, {args['samples_per_track']} per track per epoch, "
            f"from cached {args.get('data', 'stems')}",
            *(augment or ["no augmentation"]),
        ],
        "Training": [
            f"{plural(args['epochs'], 'epoch')}, batch {args['batch_size']}, Adam lr {args['lr']:g}, "
            f"weight decay {args['weight_decay']:g}, seed {args['seed']}"
            + (f"; trained on {training.machine}" if training.machine else ""),
            (f"ReduceLROnPlateau: factor {args['lr_decay_gamma']:g}, patience {plural(args['lr_decay_patience'], 'epoch')}"
             if args.get("lr_schedule", "plateau") == "plateau" else f"lr schedule: {LR_SCHEDULES[args['lr_schedule']]}"),
            f"loss: {loss_label(args.get('loss', 'mse'))}; best.pt = {best_basis(training)}",
            *([f"precision: {args['precision']}" + (f" ({args['precision_reason']})" if args.get("precision_reason")
                                                     else "")] if args.get("precision") else []),
        ],
        "Evaluation": [
            "museval BSSEval v4 on 1 s frames: median over frames per track, then median over tracks",
            "phase: " + ", ".join(phase_label(p) for p in sorted({r.phase for r in runs}, key=phase_order)),
            *gl_backend_lines(runs),
        ],
    }


def gl_backend_lines(runs: list[Run]) -> list[str]:
    """Which Griffin-Lim backend ran, where summary.json records it."""
    backends = {r.gl_backend or "not recorded" for r in runs if r.phase == "griffinlim"}
    names = {"librosa": "librosa.griffinlim", "torch": "the torch backend (the same update, on the device)"}
    return [f"Griffin-Lim ran as {' and '.join(names.get(b, b) for b in sorted(backends))}"] if backends else []


# ------------------------------------------------------------------ results.md

def write_markdown(path: Path, training: Training, runs: list[Run], experiments: list[Experiment]) -> None:
    best = next(h for h in training.history if h["epoch"] == training.best_epoch)
    parts = [f"# Results\n\nModel: {training.parameters:,} parameters; {plural(len(training.history), 'epoch')}; best "
             f"epoch {training.best_epoch} ({best_basis(training)}: {validation_figures(best)}). SDR in dB: median over "
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
