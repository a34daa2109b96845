"""Run named sets of short trainings with one budget and seed, score each on the validation
split, and write one comparison table per set (Markdown + JSON; report.py reads the JSON).

    python experiments.py --set structure --root /path/musdb --epochs 8
    python experiments.py --set all --root ../shared/musdb18-7 --cache cache --jobs 2
    python experiments.py --set complex --root R --phases model mixture wiener

Every run is a train.py call with the budget flags followed by the run's own flags, and
an inference.py call on the final epoch's checkpoint (musdb's valid split, museval median
of medians) with the --phases that run can use (`run_phases`: model needs complex masks). The final epoch is scored, not the best one: best.pt is chosen
on the same validation tracks. Runs live in <out>/runs/<run flags>-<hash of the train.py
arguments>/; a run already trained and scored with the same arguments is reused, and an
interrupted one resumes, so the same command finishes what is missing. A run shared by
two sets (the default model) is trained once.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from formats import checkpoint, experiment_table, summary
from formats.cache import StemCache
from model import BSRNN_SIZES, config_mask
from separation.phase import PHASE_METHODS, default_phases
from utils import HelpFormatter, UserError, add_debug_flag, run_cli, write_text

REPO = Path(__file__).resolve().parent

# Set -> run name -> train.py flags that differ from the project's defaults.
EXPERIMENT_SETS: dict[str, dict[str, list[str]]] = {
    "augmentation": {
        "none": ["--augment", "none"],
        "gain": ["--augment", "gain"],
        "swap": ["--augment", "swap"],
        "chunk": ["--augment", "chunk"],
        "remix": ["--augment", "remix"],
        "automix": ["--augment", "automix"],
        "all (default)": [],
    },
    "structure": {
        "3 BiLSTM layers (default)": [],
        "1 BiLSTM layer": ["--nb-layers", "1"],
        "no LSTM": ["--nb-layers", "0"],
        "no mask": ["--no-mask"],
        # One direction holds all hidden units (10.26 M parameters at 448): 440 keeps it under 10 M.
        "unidirectional LSTM": ["--unidirectional", "--hidden-size", "440"],
    },
    "models": {
        "umx (default)": [],
        "bsrnn": ["--model", "bsrnn"],
    },
    # The recipe at equal budgets (docs/experiments.md): each candidate differs from the
    # default in one flag; the seeds say how far a score moves by chance alone.
    "recipe": {
        "default (seed 42)": [],
        "cosine schedule": ["--lr-schedule", "cosine"],
        "seed 43": ["--seed", "43"],
        "seed 44": ["--seed", "44"],
    },
    # Complex masks against magnitude masks and umx, all under 10 M parameters: the
    # band-split RNN with magnitude masks, with complex masks at the magnitude model's size
    # (the mask alone changes), at its complex default, and at the paper's depth of 12 pairs
    # with N narrowed to fit. Score with --phases model mixture wiener: each complex run's
    # own estimate and the phase methods on its magnitudes, on the same models.
    # At batch 16 x 6 s the 40 x 12 run needs about 25 GB (docs/experiments.md).
    "complex": {
        "umx (default)": [],
        "bsrnn, magnitude masks": ["--model", "bsrnn"],
        "bsrnn, complex masks, N=32 x 2 pairs": ["--model", "bsrnn", "--mask", "complex", "--hidden-size", "32",
                                                 "--nb-layers", "2"],
        "bsrnn, complex masks, N={} x {} pairs (default)".format(*BSRNN_SIZES["complex"]):
            ["--model", "bsrnn", "--mask", "complex"],
        "bsrnn, complex masks, N=40 x 12 pairs": ["--model", "bsrnn", "--mask", "complex", "--hidden-size", "40",
                                                  "--nb-layers", "12"],
    },
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--set", nargs="+", default=["all"], choices=[*EXPERIMENT_SETS, "all"], help="experiment sets to run")
    p.add_argument("--only", nargs="+", default=None, metavar="RUN", help="only these runs of the chosen sets")
    g = p.add_argument_group("data")
    g.add_argument("--cache", default="cache", help="cache written by preprocess.py (train and valid splits)")
    g.add_argument("--root", default=None, help="MUSDB18 root the valid split is scored on (default: $MUSDB_PATH)")
    g.add_argument("--is-wav", action="store_true", help="the root is MUSDB18-HQ (WAV folders)")
    g = p.add_argument_group("budget (the same for every run)")
    g.add_argument("--epochs", type=int, default=8, help="epochs per run")
    g.add_argument("--samples-per-track", type=int, default=4, help="excerpts per training track per epoch")
    g.add_argument("--seq-dur", type=float, default=6.0, help="excerpt length in seconds")
    g.add_argument("--batch-size", type=int, default=16, help="excerpts per batch")
    g.add_argument("--seed", type=int, default=42, help="seed of every run")
    g.add_argument("--train-args", default="", help="further train.py flags for every run, before the run's own "
                                                    "(e.g. \"--lr 3e-3 --workers 2\")")
    g = p.add_argument_group("execution")
    g.add_argument("--jobs", type=int, default=1,
                   help="runs trained at once; each gets cores / jobs threads (two one-thread runs beat one "
                        "two-thread run on a small CPU)")
    g.add_argument("--device", default="auto", help="auto, cpu or cuda (for training and separation)")
    g.add_argument("--phases", nargs="+", default=None, metavar="PHASE", choices=list(PHASE_METHODS),
                   help="phase methods each run is scored with (inference.py --phase), those the run can use: model "
                        "needs complex masks; the first fills report.py's rows. Default, and for a run that can use "
                        "none of them: inference.py's default for its model (model for complex masks, else mixture)")
    g.add_argument("--eval-workers", type=int, default=0, help="museval processes per scoring (inference --workers)")
    g.add_argument("--out", default="experiments", help="tables go to <out>/<set>.{md,json}, runs to <out>/runs/")
    add_debug_flag(p)
    return p


def selected_runs(sets: Sequence[str], only: Sequence[str] | None) -> dict[str, dict[str, list[str]]]:
    """{set: {run: flags}} for the requested sets, narrowed to `only` when given."""
    names = list(EXPERIMENT_SETS) if "all" in sets else list(dict.fromkeys(sets))
    chosen = {s: {r: f for r, f in EXPERIMENT_SETS[s].items() if only is None or r in only} for s in names}
    if only is not None:
        known = {r for s in names for r in EXPERIMENT_SETS[s]}
        unknown = [r for r in only if r not in known]
        if unknown:
            raise UserError(f"no run named {', '.join(map(repr, unknown))} in the set(s) {', '.join(names)}; "
                            f"runs: {', '.join(sorted(known))}")
    return {s: runs for s, runs in chosen.items() if runs}


def budget_arguments(cache: str, epochs: int, samples_per_track: int, seq_dur: float, batch_size: int, seed: int,
                     device: str, extra: str = "") -> list[str]:
    """The train.py arguments every run of one budget starts with (the run's flags follow)."""
    return ["--cache", cache, "--epochs", str(epochs), "--samples-per-track", str(samples_per_track),
            "--seq-dur", f"{seq_dur:g}", "--batch-size", str(batch_size), "--seed", str(seed), "--device", device,
            *shlex.split(extra)]


def run_directory(out: Path, flags: Sequence[str], train_args: Sequence[str]) -> Path:
    """<out>/runs/<run flags>-<hash of all train.py arguments>: equal arguments share one directory."""
    digest = hashlib.sha1(json.dumps(list(train_args)).encode()).hexdigest()[:8]
    slug = re.sub(r"[^a-z0-9]+", "-", " ".join(flags).lower()).strip("-") or "defaults"
    return out / "runs" / f"{slug}-{digest}"


def _script(script: str, args: Sequence[str], log: Path, threads: int) -> None:
    """Run one of the project's scripts, its output appended to `log`; a failure names the log."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    with open(log, "a") as stream:
        stream.write(f"$ {script} {shlex.join(args)}\n")
        stream.flush()
        code = subprocess.call([sys.executable, str(REPO / script), *args], stdout=stream, stderr=stream,
                               cwd=REPO, env=env)
    if code != 0:
        tail = log.read_text().strip().splitlines()[-1:] or [""]
        raise UserError(f"{script} failed for {log.parent.name} (see {log}): {tail[0]}")


def run_phases(requested: Sequence[str] | None, complex_estimates: bool) -> list[str]:
    """The phase methods a run is scored with: the requested ones its model can use, in
    order ("model" needs complex estimates); none requested or none usable: inference.py's
    default for it (phase.default_phases)."""
    usable = [phase for phase in requested or () if PHASE_METHODS[phase].applies_to(complex_estimates)]
    return usable or default_phases(complex_estimates, scoring=True)


def run_experiment(directory: Path, train_args: Sequence[str], epochs: int, score_args: Sequence[str],
                   threads: int, phases: Sequence[str] | None = None) -> dict:
    """Train (or resume, or reuse) one run and score its final epoch with each phase
    method it can use (run_phases; the first gives the row's main scores); returns the row facts."""
    directory.mkdir(parents=True, exist_ok=True)
    log = directory / "log.txt"
    final = directory / f"epoch_{epochs:03d}.pt"
    if not final.is_file():
        resume = ["--resume"] if (directory / "last.pt").is_file() else []
        _script("train.py", [*train_args, "--checkpoint-dir", str(directory), "--save-epochs", str(epochs), *resume],
                log, threads)
    state = checkpoint.load(final)
    phases = run_phases(phases, config_mask(state["model_config"]) == "complex")
    summaries = {phase: directory / "eval" / f"{final.stem}-{phase}" / summary.FILE_NAME for phase in phases}
    missing = [phase for phase, path in summaries.items() if not path.is_file()]
    if missing:
        _script("inference.py", ["--checkpoint", str(final), "--out", str(directory / "eval"), "--samples", "0",
                                 "--phase", *missing, *score_args], log, threads)
    scores = {phase: summary.read(path) for phase, path in summaries.items()}
    main = scores[phases[0]]
    return {
        "phase": phases[0], "vocals": main.median_sdr["vocals"], "accompaniment": main.median_sdr["accompaniment"],
        "by_phase": {phase: score.median_sdr for phase, score in scores.items()},
        "tracks": len(main.tracks), "parameters": state["parameters"],
        "valid_loss": state["history"][-1]["valid_loss"],
        "train_minutes": sum(h["seconds"] for h in state["history"]) / 60,
    }


def write_tables(out: Path, set_name: str, runs: dict[str, list[str]], facts: dict[str, dict], budget: str,
                 requested: Sequence[str] | None = None) -> Path:
    """<out>/<set>.json (report.py's rows) and <out>/<set>.md; returns the Markdown path.
    A row's vocals and accompaniment are those of its main phase method, "phase"; the
    Markdown has a column per phase method any run was scored with, in the order of
    `requested` (--phases) first, and a dash where a run was not (model on magnitude masks)."""
    rows = [{"name": name, "phase": facts[name]["phase"], "vocals": facts[name]["vocals"],
             "accompaniment": facts[name]["accompaniment"], "by_phase": facts[name]["by_phase"],
             "params": {"flags": shlex.join(flags) or "(defaults)", "parameters": facts[name]["parameters"],
                        "valid_loss": round(facts[name]["valid_loss"], 4)}} for name, flags in runs.items()]
    experiment_table.write(out / f"{set_name}.json", rows)
    order = list(requested or ())
    phases = sorted(dict.fromkeys(phase for f in facts.values() for phase in f["by_phase"]),
                    key=lambda phase: order.index(phase) if phase in order else len(order))
    lines = [f"# Experiment: {set_name}", "", budget, "",
             "| Run | train.py flags | Parameters | Valid loss | "
             + " | ".join(f"{phase}: vocals / accompaniment SDR (dB)" for phase in phases) + " | Train min |",
             "|---|---|---:|---:|" + "---:|" * len(phases) + "---:|"]
    for name, flags in runs.items():
        f = facts[name]
        sdrs = " | ".join(f"{f['by_phase'][phase]['vocals']:.2f} / {f['by_phase'][phase]['accompaniment']:.2f}"
                          if phase in f["by_phase"] else "–" for phase in phases)
        lines.append(f"| {name} | `{shlex.join(flags) or '(defaults)'}` | {f['parameters']:,} | {f['valid_loss']:.4f} "
                     f"| {sdrs} | {f['train_minutes']:.1f} |")
    path = out / f"{set_name}.md"
    write_text(path, "\n".join(lines) + "\n")
    return path


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.jobs < 1 or args.epochs < 1:
        raise UserError("--jobs and --epochs must be at least 1")
    if not Path(args.cache).is_dir():
        raise UserError(f"cache {args.cache} does not exist: run preprocess.py first")
    StemCache(args.cache)  # a directory that is not a cache fails here, before any run starts
    sets = selected_runs(args.set, args.only)
    out = Path(args.out)
    budget_args = budget_arguments(args.cache, args.epochs, args.samples_per_track, args.seq_dur, args.batch_size,
                                   args.seed, args.device, args.train_args)
    score_args = ["--subset", "train", "--split", "valid", "--device", args.device,
                  "--workers", str(args.eval_workers), *(["--root", args.root] if args.root else []),
                  *(["--is-wav"] if args.is_wav else [])]

    directories = {}  # run directory -> train.py arguments (shared runs once)
    for runs in sets.values():
        for name, flags in runs.items():
            train_args = [*budget_args, *flags]
            directories.setdefault(run_directory(out, flags, train_args), train_args)
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    facts_of: dict[Path, dict] = {}
    print(f"{len(directories)} runs, {args.jobs} at a time; each one's progress is in {out}/runs/<run>/log.txt",
          flush=True)
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        futures = {pool.submit(run_experiment, d, a, args.epochs, score_args, threads, args.phases): d for d, a in directories.items()}
        for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
            facts = facts_of[futures[future]] = future.result()
            print(f"[{done}/{len(futures)}] {futures[future].name}: vocals {facts['vocals']:.2f} dB, accompaniment "
                  f"{facts['accompaniment']:.2f} dB, {facts['train_minutes']:.1f} min of training", flush=True)

    budget = (f"Budget per run: {args.epochs} epochs x {args.samples_per_track} excerpts of {args.seq_dur:g} s per "
              f"training track, batch {args.batch_size}, seed {args.seed}"
              + (f", `{args.train_args}`" if args.train_args else "")
              + f". Scored on the final epoch: museval median-of-medians SDR over musdb's valid split "
                f"({args.root or 'MUSDB_PATH'}); phase methods: "
                + (", ".join(args.phases) if args.phases else "each run's own, inference.py's default") + ".")
    for set_name, runs in sets.items():
        facts = {name: facts_of[run_directory(out, flags, [*budget_args, *flags])] for name, flags in runs.items()}
        path = write_tables(out, set_name, runs, facts, budget, args.phases)
        print(path.read_text())


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
