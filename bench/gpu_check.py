"""The first thing to run on a GPU: checks that training, torchrun and separation work on
it, and measures it, in under 8 minutes, printing as it goes and writing everything to
one JSON file (--out).

    python -m bench.gpu_check                                # -> gpu_check.json
    python -m bench.gpu_check --out t4.json --budget 300     # a shorter run
    python -m bench.gpu_check --sections precision torchrun  # only these sections
    python -m bench.gpu_check --root ../shared/musdb18-7     # the 7-second clips instead of generated tracks

Sections, in this order:
  data        a stem cache in a temporary folder: generated tracks (a harmonic line with
              pauses, noise bursts on a beat grid, a bass line and chords), or --root's
              first clips, preprocessed as preprocess.py does
  precision   for umx, bsrnn and bsrnn --mask complex, and each precision the card runs in
              hardware (fp32 always, fp16 from compute capability 7.0, bf16 from 8.0):
              optimizer steps from the same initial weights on the same batches (LSTM
              dropout off, so the runs differ by their arithmetic alone); checks every loss
              is finite and each precision's losses agree with fp32's (TOLERANCES); a
              model the card cannot hold at batch 4 is recorded as skipped
  train       train.main, a few epochs of umx at each of those precisions: finite training
              and validation losses in log.csv, and the checkpoint records the precision
  torchrun    torchrun --nproc_per_node 1 of this script's own DDP worker: an NCCL process
              group (gloo on a CPU), DistributedDataParallel, training.loop.train_epoch,
              training.validation.validate and an all_reduce (train.py itself starts no process group
              for a single process)
  separate    separation.separate with every phase method on the device (umx for the
              magnitude methods, the complex-mask model for "model"; the vocoder an
              untrained mel_vocoder.Vocoder), Griffin-Lim with both backends
  throughput  per model and --batch-sizes at --precision auto: steps/s, excerpts/s and peak
              GPU memory (torch's allocated and reserved) of a training step on a batch
              already loaded (out of memory recorded, not an error); then at the default
              batch with the loader feeding it, and the GPU's busy fraction meanwhile

Every section, and every item within one, runs in its own try: a failure is recorded in
the JSON with its error and the run goes on. None starts after --budget seconds (recorded
as skipped; an item already started finishes, but torchrun is stopped at the budget's
end, or after a minute where less was left when it started): the default leaves that
last item and the start-up room within 8 minutes, and a slow card's skipped sections can
be run on their own with --sections. The JSON is rewritten after every section, so an
interrupted run leaves what it measured.

Exit status: 0 when every check passed (skipped ones aside); 2, with one `error:` line,
when a check failed or a section raised (the JSON written first), or when there is no
CUDA device (unless --device cpu).

--device cpu --quick runs every section with tiny sizes on the CPU: it checks this
script (tests/test_gpu_check.py), and its figures mean nothing. There every precision
runs (CPU autocast has bf16 and fp16), torchrun uses gloo, and the GPU memory and busy
fraction are recorded as skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import gc
import io
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Collection, Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist

from formats import checkpoint
import train
from training.augment import AUGMENTATIONS
from training.loader import make_loader
from training.loop import batch_targets, separation_loss, train_epoch
from training.settings import new_model_config
from training.validation import validate
from bench.common import batches_forever
from bench.train_throughput import FULL_TRAIN_TRACKS, synchronize
from formats.cache import SOURCES, StemCache
from training.losses import DEFAULT_LOSSES
from model import build_model, takes_complex
from utils import STEMS
from separation.mel_vocoder import Vocoder
from separation.phase import PHASE_METHODS, PhaseSettings, resolve_gl_backend
from training.precision import Precision, cuda_capability, resolve_precision, set_up_precision
from separation.segments import SeparationSettings, separate
from utils import HOP, N_FFT, SAMPLE_RATE, HelpFormatter, UserError, add_debug_flag, resolve_device, run_cli, write_text

REPO_ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("data", "precision", "train", "torchrun", "separate", "throughput")
# The models checked: name -> (--model, --mask).
MODELS = {"umx": ("umx", "magnitude"), "bsrnn": ("bsrnn", "magnitude"), "bsrnn-complex": ("bsrnn", "complex")}
# How far a precision's losses may lie from fp32's, on the same batches from the same initial
# weights: (the first step's loss, relative to fp32's; the mean loss over the last round of
# batches, relative to how far fp32's mean loss fell from the first round to the last). The
# first step differs by the forward pass's rounding alone (and every model's loss lies far
# from 0 at its start); the last round also by where the rounded gradients have taken the
# weights. Measured on the CPU (its autocast has bf16 and fp16 too, though not CUDA's
# kernels) for the three models at full size, 24 steps of 2 x 3 s: at most 0.021% on the
# first step and 0.21% of fp32's fall on the last round (bench/README.md has the table and
# the command). The limits, some 50 times those, leave room for a GPU's own arithmetic
# (TF32 matmuls under fp32, cuDNN's kernels, non-deterministic reductions), while a precision
# that breaks (an fp16 layer that overflows or flushes to zero, a run that stops learning)
# lies off by a good part of the fall: one that does not learn at all, by 100%.
TOLERANCES = {"bf16": (0.01, 0.10), "fp16": (0.01, 0.10)}
SEED = 42


@dataclass(frozen=True)
class Sizes:
    """How much each section does: FULL on a GPU, QUICK for --quick (tests on a CPU)."""
    train_tracks: int          # generated (or --root's) training tracks
    valid_tracks: int
    track_seconds: float       # of each generated track
    seq_dur: float             # training excerpt seconds
    hidden_size: int | None    # model width and depth: None is the model's own default
    nb_layers: int | None
    agreement_batch: int       # batch size of the precision section
    agreement_batches: int     # distinct batches, taken in turn: a round
    agreement_steps: int       # optimizer steps per precision
    train_epochs: int
    train_samples_per_track: int
    train_batch: int
    separate_seconds: float    # length of the separated mixture
    gl_iters: int
    vocoder: dict              # mel_vocoder.Vocoder's size ({}: its defaults), untrained
    batch_sizes: tuple[int, ...]
    warmup_steps: int
    timed_steps: int
    fed_seconds: float         # at least this long with the loader feeding (busy fraction)
    workers: int               # DataLoader workers


FULL = Sizes(train_tracks=8, valid_tracks=2, track_seconds=20.0, seq_dur=6.0, hidden_size=None, nb_layers=None,
             agreement_batch=4, agreement_batches=4, agreement_steps=24, train_epochs=2, train_samples_per_track=8,
             train_batch=16, separate_seconds=30.0, gl_iters=32, vocoder={}, batch_sizes=(8, 16, 32),
             warmup_steps=2, timed_steps=5, fed_seconds=5.0, workers=min(4, os.cpu_count() or 1))
QUICK = Sizes(train_tracks=3, valid_tracks=1, track_seconds=2.0, seq_dur=0.5, hidden_size=16, nb_layers=1,
              agreement_batch=2, agreement_batches=2, agreement_steps=16, train_epochs=1, train_samples_per_track=2,
              train_batch=2, separate_seconds=1.0, gl_iters=2,
              vocoder={"n_mels": 32, "dim": 16, "hidden": 32, "nb_blocks": 2}, batch_sizes=(2, 4), warmup_steps=1,
              timed_steps=1, fed_seconds=0.0, workers=0)
DEFAULT_BATCH = 16  # train.py's --batch-size: the throughput section's loader-fed run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--out", default="gpu_check.json", help="the JSON file written (atomically, after every section)")
    p.add_argument("--budget", type=float, default=400.0,
                   help="seconds after which no further section or item starts (recorded as skipped)")
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                   help="the sections to run (data always runs when another needs it)")
    p.add_argument("--root", default=None,
                   help="a MUSDB18 root (.stem.mp4, e.g. the 7-second clips) whose first tracks are cached instead "
                        "of generated ones (needs ffmpeg)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=None,
                   help=f"the throughput section's batch sizes (default {' '.join(map(str, FULL.batch_sizes))})")
    p.add_argument("--workdir", default=None,
                   help="where the cache and checkpoints go, kept afterwards (default: a temporary folder, deleted)")
    p.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu (with --quick: the tests' check)")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes everywhere: checks this script, e.g. on a CPU; its figures mean nothing")
    p.add_argument("--ddp-worker", nargs=2, metavar=("RESULT", "CACHE"), default=None, help=argparse.SUPPRESS)
    add_debug_flag(p)
    return p


# ------------------------------------------------------------------ records

class Run:
    """The results so far, the time budget, and the JSON they are written to."""

    def __init__(self, out: Path, budget: float, argv: Sequence[str]) -> None:
        self.out, self.started = out, time.monotonic()
        self.deadline = self.started + budget
        self.results: dict = {"command": ["python", "-m", "bench.gpu_check", *argv], "budget_s": budget,
                              "sections": {}, "checks": []}

    def time_left(self) -> float:
        return self.deadline - time.monotonic()

    def check(self, name: str, passed: bool, **detail) -> None:
        """Records a pass/fail check (and prints it when it fails)."""
        self.results["checks"].append({"check": name, "passed": bool(passed), **detail})
        if not passed:
            print(f"  CHECK FAILED: {name} {json.dumps(detail)}", flush=True)

    def write(self) -> None:
        self.results["seconds"] = round(time.monotonic() - self.started, 1)
        write_text(self.out, json.dumps(self.results, indent=1, default=str) + "\n")

    def section(self, name: str, skip: str | None, function: Callable[[dict], None]) -> None:
        """Runs function(record) as section `name`, unless `skip` says why not or the budget
        is spent; an exception is recorded in the section, not raised."""
        record: dict = {}
        self.results["sections"][name] = record
        if skip is not None:
            record["status"] = f"skipped: {skip}"
        elif self.time_left() <= 0:
            record["status"] = "skipped: time budget spent"
        else:
            print(f"--- {name}", flush=True)
            started = time.monotonic()
            try:
                function(record)
                record["status"] = "ok"
            except Exception as err:  # any failure: recorded, and the next section runs
                record |= {"status": "error", "error": error_text(err), "traceback": traceback.format_exc()[-4000:]}
                print(f"  ERROR: {record['error']}", flush=True)
            record["seconds"] = round(time.monotonic() - started, 1)
        if record["status"] != "ok":
            print(f"--- {name}: {record['status']}", flush=True)
        self.write()

    def item(self, record: dict, key: str, function: Callable[[], dict], out_of_memory_ok: bool = False) -> dict | None:
        """record[key] = function(), or the error it raised, or skipped when the budget is
        spent; returns the result (None unless it ran to the end). out_of_memory_ok: running
        out of GPU memory is the card's size, not a failure: recorded as skipped."""
        if self.time_left() <= 0:
            record[key] = {"status": "skipped: time budget spent"}
            return None
        try:
            record[key] = function()
            return record[key]
        except Exception as err:
            if out_of_memory_ok and is_out_of_memory(err):
                record[key] = {"status": "skipped: out of memory", "error": error_text(err)}
            else:
                record[key] = {"status": "error", "error": error_text(err),
                               "traceback": traceback.format_exc()[-4000:]}
            print(f"  {key}: {record[key]['status']}: {record[key]['error']}", flush=True)
            return None
        finally:
            gc.collect()  # a failed run's tensors, before the next one asks for memory
            if torch.cuda.is_initialized():
                torch.cuda.empty_cache()


def error_text(err: BaseException) -> str:
    """The exception's type and first line, and where in the project's code it was raised."""
    frames = [f for f in traceback.extract_tb(err.__traceback__)
              if f.filename.startswith(str(REPO_ROOT)) and "site-packages" not in f.filename]
    where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    message = str(err).strip().splitlines()
    return f"{type(err).__name__}: {message[0] if message else ''}{where}"


def relative_difference(value: float, reference: float) -> float:
    return abs(value - reference) / max(abs(reference), 1e-12)


# --------------------------------------------------------------------- device

def precisions_to_check(device: torch.device) -> list[str]:
    """fp32 always; on CUDA fp16 from compute capability 7.0 and bf16 from 8.0, the cards
    with tensor cores for them (before, fp16 runs at a fraction of fp32's rate and bf16 is
    emulated); on the CPU all three, whose autocast runs both: that checks every path of
    this script."""
    if device.type != "cuda":
        return ["fp32", "bf16", "fp16"]
    major, _ = cuda_capability(device)
    return ["fp32"] + (["fp16"] if major >= 7 else []) + (["bf16"] if major >= 8 else [])


def describe_device(device: torch.device) -> dict:
    """What ran: the card, its capability and memory, the software versions, and the
    precision --precision auto chooses on it."""
    auto = resolve_precision("auto", device)
    facts = {"device": str(device), "torch": torch.__version__, "python": platform.python_version(),
             "cpu_count": os.cpu_count(), "auto_precision": auto.name, "auto_reason": auto.reason,
             "precisions_checked": precisions_to_check(device)}
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        facts |= {"name": properties.name, "capability": ".".join(map(str, cuda_capability(device))),
                  "memory_gib": round(properties.total_memory / 2**30, 1),
                  "multiprocessors": properties.multi_processor_count, "cuda": torch.version.cuda,
                  "cudnn": torch.backends.cudnn.version(), "gpus": torch.cuda.device_count()}
    return facts


# ----------------------------------------------------------------------- data

def generated_stems(seed: int, seconds: float) -> np.ndarray:
    """A made-up track's four sources, (4, 2, samples) float32 in cache.SOURCES order: a
    harmonic line that rests on some beats (vocals), noise bursts every half beat (drums),
    a low line (bass) and sustained chords (other), each panned, the mixture peaking at
    0.8. Enough structure for the models' losses to fall in a few steps; no musical value."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    beats = t * rng.uniform(90.0, 140.0) / 60.0

    def line(low: float, high: float, beats_per_note: int, harmonics: int) -> np.ndarray:
        notes = (beats // beats_per_note).astype(int)
        phase = 2 * np.pi * np.cumsum(rng.uniform(low, high, notes[-1] + 1)[notes]) / SAMPLE_RATE
        return sum(np.sin(k * phase) / k for k in range(1, harmonics + 1))

    sung = rng.random(int(beats[-1]) + 1) < 0.7
    sources = {
        "vocals": line(200, 400, 1, 5) * sung[beats.astype(int)] * np.sin(np.pi * (beats % 1)) ** 2,
        "drums": rng.standard_normal(len(t)) * np.exp(-12 * (beats % 0.5)),
        "bass": line(50, 100, 2, 2),
        "other": line(300, 600, 4, 3) + line(400, 800, 4, 3),
    }
    stems = []
    for name in SOURCES:
        mono = sources[name] / max(np.sqrt(np.mean(sources[name] ** 2)), 1e-9)
        angle = rng.uniform(0.2, 0.8) * np.pi / 2  # constant-power pan, off centre
        stems.append(np.stack([np.cos(angle) * mono, np.sin(angle) * mono]))
    stems = np.stack(stems)
    return (stems * (0.8 / np.abs(stems.sum(0)).max())).astype(np.float32)


def make_cache(directory: Path, sizes: Sizes, root: str | None) -> StemCache:
    """The cache the other sections train from: generated tracks, or --root's first tracks."""
    cache = StemCache.create_or_open(directory)
    if root is None:
        for split, count, first_seed in (("train", sizes.train_tracks, 0), ("valid", sizes.valid_tracks, 1000)):
            for k in range(count):
                cache.add_track(f"generated {split} {k}", split, generated_stems(first_seed + k, sizes.track_seconds))
        return cache
    from data import open_musdb, preprocess  # musdb and ffmpeg only for --root

    for split, count in (("train", sizes.train_tracks), ("valid", sizes.valid_tracks)):
        preprocess(open_musdb(root, False, "train", split).tracks[:count], split, cache, progress=lambda x, **_: x)
    return cache


def data_section(record: dict, run: Run, cache_dir: Path, sizes: Sizes, root: str | None) -> StemCache:
    started = time.perf_counter()
    cache = make_cache(cache_dir, sizes, root)
    lengths = [cache.length(name) / SAMPLE_RATE for name in cache.names()]
    record |= {"source": root or "generated", "train_tracks": len(cache.names("train")),
               "valid_tracks": len(cache.names("valid")), "audio_seconds": round(sum(lengths), 1),
               "build_seconds": round(time.perf_counter() - started, 1)}
    print(f"  {record['train_tracks']} train + {record['valid_tracks']} valid tracks, {record['audio_seconds']} s "
          f"of audio ({record['source']}) in {record['build_seconds']} s", flush=True)
    run.check("data: the cache holds training and validation tracks",
              record["train_tracks"] > 0 and record["valid_tracks"] > 0)
    return cache


# ------------------------------------------------------------------ precision

def new_model(name: str, sizes: Sizes, device: torch.device, seed: int = SEED) -> torch.nn.Module:
    """One of MODELS at `sizes`, initialised from `seed`, on `device`."""
    kind, mask = MODELS[name]
    torch.manual_seed(seed)
    config = new_model_config(kind, sizes.hidden_size, sizes.nb_layers, True, True, None, mask=mask)
    return build_model(config).to(device)


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, batch,
               precision: Precision, device: torch.device, loss_name: str, update: bool = True) -> torch.Tensor:
    """One training step as training.loop.train_epoch takes it, on a loader batch; its loss, not
    read back. Without `update` only the loss is computed (a step the scaler would skip)."""
    mixture, targets = batch_targets(batch, device, takes_complex(model))
    loss = separation_loss(model, mixture, targets, precision, loss_name)
    if update:
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    return loss.detach()


def train_steps(model: torch.nn.Module, batches: Sequence, steps: int, precision: Precision, device: torch.device,
                loss_name: str, watch_scaler: bool = False,
                skip: Collection[int] = ()) -> tuple[list[float], float, list[int]]:
    """`steps` training steps on `batches` in turn -> (each step's loss, seconds, the steps
    the gradient scaler skipped). The losses are read back once, at the end. watch_scaler:
    read the scale after every step (a wait for the device) to find the steps it skipped,
    whose gradients held an inf or NaN. The steps in `skip` compute their loss but do not
    update the weights, as such a skipped step."""
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = precision.grad_scaler(device.type)
    watch = watch_scaler and precision.scales_gradients
    losses, skipped = [], []
    synchronize(device)
    started = time.perf_counter()
    for step in range(steps):
        scale = scaler.get_scale() if watch else None
        losses.append(train_step(model, optimizer, scaler, batches[step % len(batches)], precision, device, loss_name,
                                 update=step not in skip))
        if watch and scaler.get_scale() < scale:
            skipped.append(step)
    synchronize(device)
    seconds = time.perf_counter() - started
    return torch.stack(losses).float().cpu().tolist(), seconds, skipped


def agreement(result: dict, reference: dict) -> dict:
    """How far a run's losses lie from the fp32 reference's: its first loss relative to the
    reference's, and the mean of its last round of batches relative to how far the
    reference's mean fell from the first round to the last (a sign-free scale: the complex
    model's loss, an SDR term in it, crosses 0 as it trains)."""
    fall = reference["first_round_mean"] - reference["last_round_mean"]
    return {"first_step": relative_difference(result["losses"][0], reference["losses"][0]),
            "last_round": abs(result["last_round_mean"] - reference["last_round_mean"]) / max(abs(fall), 1e-12)}


def precision_section(record: dict, run: Run, cache: StemCache, sizes: Sizes, device: torch.device) -> None:
    """Each model at each precision from the same initial weights on the same batches.

    fp16's gradient scaler skips the first steps, until its scale (2^16 at the start)
    stops overflowing the fp16 gradients; that is by design, and a few steps in thousands.
    So fp16 is compared with an fp32 run that skips the same steps' updates ("fp32 with
    fp16's skips"), which isolates the arithmetic; a check fails only if the scaler
    skipped more than half the steps (it never found a workable scale)."""
    loader, sampler = make_loader(cache, sizes.seq_dur, sizes.train_samples_per_track, AUGMENTATIONS,
                                  sizes.agreement_batch, 0, SEED, device)
    batches_iter = batches_forever(loader, sampler)
    batches = [next(batches_iter) for _ in range(sizes.agreement_batches)]
    per_round = sizes.agreement_batches
    record |= {"batch_size": sizes.agreement_batch, "steps": sizes.agreement_steps, "distinct_batches": per_round,
               "tolerances": {name: {"first_step": first, "last_round": last}
                              for name, (first, last) in TOLERANCES.items()}}

    def steps_from_init(model_name: str, precision_name: str, skip: Collection[int] = ()) -> dict:
        model = new_model(model_name, sizes, device)
        for module in model.modules():  # the same arithmetic on both sides, no random masks
            if isinstance(module, torch.nn.RNNBase):
                module.dropout = 0.0
        precision = resolve_precision(precision_name, device)
        losses, seconds, skipped = train_steps(model, batches, sizes.agreement_steps, precision, device,
                                               DEFAULT_LOSSES[MODELS[model_name][1]], watch_scaler=True, skip=skip)
        return {"losses": losses, "steps_per_s": round(sizes.agreement_steps / seconds, 3),
                "first_round_mean": float(np.mean(losses[:per_round])),
                "last_round_mean": float(np.mean(losses[-per_round:])),
                "skipped_steps": skipped or sorted(skip), "reason": precision.reason}

    for model_name in MODELS:
        runs: dict = {}
        record[model_name] = runs
        for precision_name in precisions_to_check(device):
            result = run.item(runs, precision_name, lambda: steps_from_init(model_name, precision_name),
                              out_of_memory_ok=True)
            if result is None:
                continue
            finite = all(math.isfinite(loss) for loss in result["losses"])
            run.check(f"precision: {model_name} {precision_name} losses finite", finite)
            if precision_name == "fp32":
                run.check(f"precision: {model_name} fp32 learns (its last round's loss below its first's)",
                          result["last_round_mean"] < result["first_round_mean"])
            line = (f"  {model_name:<14}{precision_name:<6}{result['steps_per_s']:8.2f} steps/s   loss "
                    f"{result['first_round_mean']:.4g} -> {result['last_round_mean']:.4g}")
            reference, reference_name = runs.get("fp32", {}), "fp32"
            if result["skipped_steps"]:
                skipped = result["skipped_steps"]
                line += f"   scaler skipped {len(skipped)} steps"
                run.check(f"precision: {model_name} {precision_name} the gradient scaler settles",
                          len(skipped) <= sizes.agreement_steps // 2, skipped=len(skipped), steps=sizes.agreement_steps)
                reference_name = "fp32 with fp16's skips"
                reference = run.item(runs, reference_name, lambda: steps_from_init(model_name, "fp32", set(skipped)),
                                     out_of_memory_ok=True)
                reference = reference or {}
            if precision_name != "fp32" and "losses" in reference and finite:
                first_limit, last_limit = TOLERANCES[precision_name]
                result["vs_fp32"] = {"reference": reference_name, **agreement(result, reference)}
                first, last = result["vs_fp32"]["first_step"], result["vs_fp32"]["last_round"]
                run.check(f"precision: {model_name} {precision_name} first-step loss agrees with fp32",
                          first <= first_limit, difference=first, limit=first_limit)
                run.check(f"precision: {model_name} {precision_name} last-round loss agrees with {reference_name}",
                          last <= last_limit, difference=last, limit=last_limit)
                line += (f"   vs {reference_name}: first step {100 * first:.3f}%, last round {100 * last:.2f}% of "
                         "fp32's fall")
            print(line, flush=True)


# ---------------------------------------------------------------------- train

def train_section(record: dict, run: Run, cache: StemCache, sizes: Sizes, device: torch.device,
                  workdir: Path) -> None:
    """train.main at each precision, as a user runs it (in this process; what it printed
    is kept in the record when it fails)."""
    model_flags = [] if sizes.hidden_size is None else ["--hidden-size", str(sizes.hidden_size)]
    model_flags += [] if sizes.nb_layers is None else ["--nb-layers", str(sizes.nb_layers)]
    for precision_name in precisions_to_check(device):
        directory = workdir / f"train-{precision_name}"
        argv = ["--cache", str(cache.root), "--checkpoint-dir", str(directory), "--epochs", str(sizes.train_epochs),
                "--save-epochs", str(sizes.train_epochs), "--precision", precision_name, "--device", str(device),
                "--seq-dur", str(sizes.seq_dur), "--samples-per-track", str(sizes.train_samples_per_track),
                "--batch-size", str(sizes.train_batch), "--workers", str(sizes.workers), *model_flags]

        def one_run() -> dict:
            output = io.StringIO()
            started = time.perf_counter()
            try:
                with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
                    train.main(argv)
            except BaseException:
                record[f"{precision_name} output"] = output.getvalue()[-3000:]
                raise
            with open(directory / "log.csv") as f:
                rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
            state = checkpoint.load(directory / "last.pt")
            return {"argv": argv, "seconds": round(time.perf_counter() - started, 1), "epochs": rows,
                    "recorded_precision": state["train_args"].get("precision"),
                    "recorded_reason": state["train_args"].get("precision_reason")}
        result = run.item(record, precision_name, one_run)
        if result is None:
            continue
        finite = all(math.isfinite(row[key]) for row in result["epochs"] for key in ("train_loss", "valid_loss"))
        run.check(f"train: train.main {precision_name} losses finite",
                  finite and len(result["epochs"]) == sizes.train_epochs)
        run.check(f"train: train.main {precision_name} checkpoint records its precision",
                  result["recorded_precision"] == precision_name and bool(result["recorded_reason"]),
                  recorded=result["recorded_precision"], reason=result["recorded_reason"])
        last = result["epochs"][-1]
        print(f"  {precision_name:<6}epochs {len(result['epochs'])} in {result['seconds']} s: train "
              f"{last['train_loss']:.4g} valid {last['valid_loss']:.4g}, vocals SDR {last['valid_sdr_vocals']:.2f} dB  "
              f"({result['recorded_reason']})", flush=True)


# ------------------------------------------------------------------- torchrun

def torchrun_section(record: dict, run: Run, cache: StemCache, device: torch.device, quick: bool,
                     workdir: Path) -> None:
    result_path = workdir / "ddp_worker.json"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
               "-m", "bench.gpu_check", "--ddp-worker", str(result_path), str(cache.root), "--device", str(device),
               *(["--quick"] if quick else [])]
    record["command"] = " ".join(command[1:])
    started = time.perf_counter()
    try:
        finished = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True,
                                  timeout=max(run.time_left(), 60.0))
    except subprocess.TimeoutExpired as err:
        raise UserError(f"torchrun did not finish in {err.timeout:.0f} s") from err
    record["seconds_with_start"] = round(time.perf_counter() - started, 1)
    record["returncode"] = finished.returncode
    if finished.returncode != 0:
        record["stderr_tail"] = finished.stderr[-3000:]
    worker = json.loads(result_path.read_text()) if result_path.is_file() else {}
    record |= worker
    run.check("torchrun: the worker finished", finished.returncode == 0 and bool(worker),
              returncode=finished.returncode)
    if worker:
        run.check("torchrun: all_reduce over the process group", worker["all_reduce"] == worker["world_size"],
                  backend=worker["backend"])
        run.check("torchrun: DDP epoch and validation losses finite",
                  math.isfinite(worker["train_loss"]) and math.isfinite(worker["valid_loss"]))
        print(f"  {worker['backend']} world {worker['world_size']}: epoch of {worker['steps']} steps in "
              f"{worker['epoch_seconds']} s, train {worker['train_loss']:.4g} valid {worker['valid_loss']:.4g}; "
              f"{record['seconds_with_start']} s with torchrun's start", flush=True)


def ddp_worker(result_path: Path, cache_dir: str, device_name: str, sizes: Sizes) -> None:
    """The torchrun section's process: one epoch of umx through train's own functions in
    DistributedDataParallel over an NCCL (CUDA) or gloo (CPU) process group."""
    device = resolve_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend)
    try:
        precision = set_up_precision("auto", device)
        cache = StemCache(cache_dir)
        loader, sampler = make_loader(cache, sizes.seq_dur, sizes.train_samples_per_track, AUGMENTATIONS,
                                      sizes.train_batch, sizes.workers, SEED, device)
        model = new_model("umx", sizes, device)
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        sampler.set_epoch(1)
        synchronize(device)
        started = time.perf_counter()
        train_loss = train_epoch(net, loader, optimizer, precision.grad_scaler(device.type), device,
                                 epoch=1, progress=False, precision=precision)
        synchronize(device)
        epoch_seconds = time.perf_counter() - started
        validation = validate(model, cache, cache.names("valid"), device, precision)
        ones = torch.ones((), device=device)
        dist.all_reduce(ones)
        if dist.get_rank() == 0:
            write_text(result_path, json.dumps({
                "backend": backend, "world_size": dist.get_world_size(), "all_reduce": ones.item(),
                "precision": precision.name, "steps": len(loader), "epoch_seconds": round(epoch_seconds, 2),
                "train_loss": train_loss, "valid_loss": validation.loss, "valid_sdr": validation.sdr}))
    finally:
        dist.destroy_process_group()


# ------------------------------------------------------------------- separate

def separate_section(record: dict, run: Run, sizes: Sizes, device: torch.device) -> None:
    """Every phase method through separation.separate on `device`, on a generated mixture."""
    mixture = generated_stems(2000, sizes.separate_seconds).sum(0).T.copy()  # (samples, channels)
    record["audio_seconds"] = sizes.separate_seconds
    vocoder = Vocoder(nb_bins=N_FFT // 2 + 1, hop=HOP, **sizes.vocoder).to(device).eval()
    default_backend = resolve_gl_backend("auto", device)
    other_backend = "torch" if default_backend == "librosa" else "librosa"
    record["griffinlim_default_backend"] = default_backend
    for model_name in ("umx", "bsrnn-complex"):
        model = new_model(model_name, sizes, device).eval()
        complex_estimates = takes_complex(model)
        # The magnitude methods on the magnitude model; "model" on the complex one.
        runs = [(phase, phase, {"gl_backend": default_backend}) for phase, method in PHASE_METHODS.items()
                if method.complex_estimate == complex_estimates]
        if not complex_estimates:
            runs.append((f"griffinlim ({other_backend})", "griffinlim", {"gl_backend": other_backend}))
        results: dict = {}
        record[model_name] = results
        for key, phase, extra in runs:
            def one_run() -> dict:
                timings: dict[str, float] = {}
                settings = SeparationSettings((phase,), PhaseSettings(gl_iters=sizes.gl_iters, **extra))
                estimates = separate(model, mixture, settings, device, vocoder, timings)[phase]
                audio = np.stack([estimates[stem] for stem in STEMS])
                return {"seconds": round(timings[phase], 3),
                        "x_real_time": round(sizes.separate_seconds / max(timings[phase], 1e-9), 1),
                        "finite": bool(np.isfinite(audio).all()), "shape_ok": audio.shape[1:] == mixture.shape}
            result = run.item(results, key, one_run)
            if result is None:
                continue
            run.check(f"separate: {model_name} {key}", result["finite"] and result["shape_ok"])
            print(f"  {model_name:<14}{key:<22}{result['seconds']:8.2f} s  {result['x_real_time']:7.1f}x real time",
                  flush=True)


# ----------------------------------------------------------------- throughput

def peak_memory(device: torch.device) -> dict:
    """torch's peak allocated and reserved GPU memory since the last reset, in MiB."""
    if device.type != "cuda":
        return {"memory": "skipped: needs CUDA"}
    return {"peak_allocated_mib": round(torch.cuda.max_memory_allocated(device) / 2**20),
            "peak_reserved_mib": round(torch.cuda.max_memory_reserved(device) / 2**20)}


def fixed_batch_rate(model_name: str, batch_size: int, cache: StemCache, sizes: Sizes, device: torch.device,
                     precision: Precision) -> dict:
    """Training steps on one loaded batch (copied and transformed on the device each
    step, as in training, with no loader to wait for): rates and peak memory."""
    loader, sampler = make_loader(cache, sizes.seq_dur, max(sizes.train_samples_per_track, batch_size),
                                  AUGMENTATIONS, batch_size, 0, SEED, device)
    batch = next(batches_forever(loader, sampler))
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    model = new_model(model_name, sizes, device)
    loss_name = DEFAULT_LOSSES[MODELS[model_name][1]]
    train_steps(model, [batch], sizes.warmup_steps, precision, device, loss_name)
    _, seconds, _ = train_steps(model, [batch], sizes.timed_steps, precision, device, loss_name)
    return {"steps_per_s": round(sizes.timed_steps / seconds, 3),
            "excerpts_per_s": round(sizes.timed_steps * batch_size / seconds, 2), **peak_memory(device)}


class UtilizationSampler:
    """torch.cuda.utilization (NVML, through pynvml: the percentage of its last sample
    period, 1/6 s to 1 s by card, in which a kernel ran on the GPU, whoever ran it)
    sampled every `interval` seconds by a thread while the context is open."""

    def __init__(self, device: torch.device, interval: float = 0.1) -> None:
        self.device, self.interval, self.samples = device, interval, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.samples.append(torch.cuda.utilization(self.device))

    def __enter__(self) -> "UtilizationSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def nvml_available(device: torch.device) -> str | None:
    """None when torch.cuda.utilization answers on `device`, else why not."""
    try:
        torch.cuda.utilization(device)
        return None
    except Exception as err:  # pynvml missing (ModuleNotFoundError), or NVML refusing
        return error_text(err)


def fed_rate(model_name: str, cache: StemCache, sizes: Sizes, device: torch.device, precision: Precision) -> dict:
    """Training steps with the loader feeding them (its workers, as train.py's default),
    for at least sizes.fed_seconds, and the GPU's busy fraction meanwhile: NVML's reading
    where pynvml is installed, and always the events' measure: the sum over steps of the
    GPU time from a step's first queued work to its last, over the wall time; time the GPU
    waits on the host between steps (for the loader) counts as idle, gaps within a step
    as busy, so it is an upper bound."""
    loader, sampler = make_loader(cache, sizes.seq_dur, sizes.train_samples_per_track, AUGMENTATIONS,
                                  min(DEFAULT_BATCH, max(sizes.batch_sizes)), sizes.workers, SEED, device)
    batches = batches_forever(loader, sampler)
    model = new_model(model_name, sizes, device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = precision.grad_scaler(device.type)

    def one_step() -> None:
        train_step(model, optimizer, scaler, next(batches), precision, device, DEFAULT_LOSSES[MODELS[model_name][1]])

    for _ in range(sizes.warmup_steps):  # the workers' start, cuDNN's choice of kernels
        one_step()
    synchronize(device)
    cuda = device.type == "cuda"
    nvml_missing = nvml_available(device) if cuda else "needs CUDA"
    events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
    sampler_context = UtilizationSampler(device) if nvml_missing is None else contextlib.nullcontext()
    steps = 0
    with sampler_context:
        started = time.perf_counter()
        while steps < sizes.timed_steps or time.perf_counter() - started < sizes.fed_seconds:
            if cuda:
                events.append((torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)))
                events[-1][0].record()
            one_step()
            if cuda:
                events[-1][1].record()
            steps += 1
        synchronize(device)
        wall = time.perf_counter() - started
    result = {"batch_size": loader.batch_size, "workers": sizes.workers, "steps": steps,
              "steps_per_s": round(steps / wall, 3), "excerpts_per_s": round(steps * loader.batch_size / wall, 2)}
    if not cuda:
        result["busy_fraction"] = "skipped: needs CUDA"
        return result
    result["busy_fraction_events"] = round(sum(a.elapsed_time(b) for a, b in events) / 1000 / wall, 3)
    if nvml_missing is None and sampler_context.samples:
        result["busy_fraction_nvml"] = round(float(np.mean(sampler_context.samples)) / 100, 3)
    else:
        result["busy_fraction_nvml"] = f"skipped: {nvml_missing or 'no sample taken'}"
    return result


def is_out_of_memory(err: BaseException) -> bool:
    """torch's own out-of-memory error, or cuDNN's or cuBLAS's failure to allocate."""
    return isinstance(err, torch.cuda.OutOfMemoryError) or any(
        sign in str(err) for sign in ("out of memory", "CUDNN_STATUS_ALLOC_FAILED", "CUBLAS_STATUS_ALLOC_FAILED"))


def throughput_section(record: dict, run: Run, cache: StemCache, sizes: Sizes, device: torch.device) -> None:
    precision = resolve_precision("auto", device)
    record["precision"] = precision.name
    print(f"  {'model':<14}{'batch':>6}{'steps/s':>10}{'excerpts/s':>12}{'peak alloc MiB':>16}"
          f"{'peak reserved MiB':>19}", flush=True)
    for model_name in MODELS:
        rows: dict = {}
        record[model_name] = rows
        out_of_memory_at = None
        for batch_size in sizes.batch_sizes:
            key = f"batch {batch_size}"
            if out_of_memory_at is not None:
                rows[key] = {"status": f"skipped: batch {out_of_memory_at} ran out of memory"}
                continue
            if run.time_left() <= 0:
                rows[key] = {"status": "skipped: time budget spent"}
                continue
            try:
                rows[key] = fixed_batch_rate(model_name, batch_size, cache, sizes, device, precision)
            except Exception as err:
                if not is_out_of_memory(err):
                    rows[key] = {"status": "error", "error": error_text(err),
                                 "traceback": traceback.format_exc()[-4000:]}
                    print(f"  {model_name:<14}{batch_size:>6}  ERROR {rows[key]['error']}", flush=True)
                    continue
                rows[key] = {"out_of_memory": True, "error": error_text(err)}
                out_of_memory_at = batch_size
            finally:
                gc.collect()  # the failed step's tensors, before the next size asks for memory
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            row = rows[key]
            if row.get("out_of_memory"):
                print(f"  {model_name:<14}{batch_size:>6}  out of memory", flush=True)
            elif "steps_per_s" in row:
                print(f"  {model_name:<14}{batch_size:>6}{row['steps_per_s']:10.2f}{row['excerpts_per_s']:12.1f}"
                      f"{row.get('peak_allocated_mib', '-'):>16}{row.get('peak_reserved_mib', '-'):>19}", flush=True)
    for model_name in MODELS:
        fed = run.item(record[model_name], "loader_fed", lambda: fed_rate(model_name, cache, sizes, device, precision),
                       out_of_memory_ok=True)
        if fed is not None:
            busy = fed.get("busy_fraction", f"{fed.get('busy_fraction_nvml')} (NVML), "
                                            f"{fed.get('busy_fraction_events')} (CUDA events, an upper bound)")
            print(f"  {model_name:<14}with the loader: batch {fed['batch_size']}, {fed['workers']} workers: "
                  f"{fed['steps_per_s']:.2f} steps/s, {fed['excerpts_per_s']:.1f} excerpts/s; GPU busy {busy}",
                  flush=True)
    record["by_model"] = {model_name: model_summary(record[model_name]) for model_name in MODELS}
    print(f"  {'model':<14}{'largest batch run':>18}{'reserved MiB at 16':>20}{'fed excerpts/s':>16}"
          f"{'epoch, PROJECTED':>18}", flush=True)
    for model_name, row in record["by_model"].items():
        epoch = row["epoch_minutes_projected"]
        print(f"  {model_name:<14}{row['largest_batch_run'] or '-':>18}{row['reserved_mib_at_16'] or '-':>20}"
              f"{row['fed_excerpts_per_s'] or '-':>16}{'-' if epoch is None else f'{epoch:.1f} min':>18}", flush=True)


def model_summary(rows: dict) -> dict:
    """One model's throughput rows in the figures a card's table needs: the largest batch
    that ran, the memory torch reserved at the default batch, the loader-fed rate, and the
    training part of a full-scale epoch (FULL_TRAIN_TRACKS x 64 excerpts) projected from it."""
    ran = [int(key.split()[1]) for key, row in rows.items() if key.startswith("batch ") and "steps_per_s" in row]
    fed = rows.get("loader_fed") or {}
    rate = fed.get("excerpts_per_s")
    return {"largest_batch_run": max(ran, default=None),
            "reserved_mib_at_16": rows.get(f"batch {DEFAULT_BATCH}", {}).get("peak_reserved_mib"),
            "fed_excerpts_per_s": rate,
            "epoch_minutes_projected": round(FULL_TRAIN_TRACKS * 64 / rate / 60, 1) if rate else None}


# ----------------------------------------------------------------------- main

def summarise(run: Run) -> tuple[list[str], list[str]]:
    """(the failed checks, the sections or items that raised)."""
    failed = [c["check"] for c in run.results["checks"] if not c["passed"]]

    def errors(name: str, node) -> Iterator[str]:
        if isinstance(node, dict):
            if node.get("status") == "error":
                yield name
            for key, value in node.items():
                yield from errors(f"{name} {key}", value)
    raised = [e for name, record in run.results["sections"].items() for e in errors(name, record)]
    return failed, raised


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.batch_sizes:
        if min(args.batch_sizes) < 1:
            raise UserError("--batch-sizes must be positive")
        sizes = Sizes(**{**asdict(sizes), "batch_sizes": tuple(args.batch_sizes)})
    if args.root is not None and not Path(args.root).is_dir():
        raise UserError(f"--root {args.root} is not a directory")
    if args.ddp_worker:
        ddp_worker(Path(args.ddp_worker[0]), args.ddp_worker[1], args.device, sizes)
        return
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("no CUDA device here: bench.gpu_check checks and measures a GPU, so run it where one is "
                        "(--device cpu --quick only checks the script itself)")
    device = resolve_device(args.device)
    if device.type != "cuda" and not args.quick:
        raise UserError(f"--device {args.device} without --quick: bench.gpu_check measures a GPU (--device cpu "
                        "--quick only checks the script itself)")
    set_up_precision("auto", device)  # TF32 matmuls on CUDA for the fp32 runs, as train.py
    run = Run(Path(args.out), args.budget, argv)
    run.results["device"] = describe_device(device)
    run.results["sizes"] = asdict(sizes)
    facts = run.results["device"]
    card = (f"{facts['name']}: compute capability {facts['capability']}, {facts['memory_gib']} GiB; CUDA "
            f"{facts['cuda']}, " if device.type == "cuda" else f"{device}: ")
    print(f"{card}torch {facts['torch']}; auto precision {facts['auto_precision']} ({facts['auto_reason']}); "
          f"checking {', '.join(facts['precisions_checked'])}; budget {args.budget:g} s", flush=True)
    needs_data = ("precision", "train", "torchrun", "throughput")
    with contextlib.ExitStack() as stack:
        workdir = Path(args.workdir) if args.workdir else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        made: dict[str, StemCache] = {}
        wanted = set(args.sections)
        run.section("data", None if wanted & {"data", *needs_data} else "not in --sections",
                    lambda r: made.setdefault("cache", data_section(r, run, workdir / "cache", sizes, args.root)))
        cache = made.get("cache")

        def skip(name: str) -> str | None:
            if name not in wanted:
                return "not in --sections"
            if name in needs_data and cache is None and run.time_left() > 0:
                return "no data: the data section did not finish"
            return None
        run.section("precision", skip("precision"), lambda r: precision_section(r, run, cache, sizes, device))
        run.section("train", skip("train"), lambda r: train_section(r, run, cache, sizes, device, workdir))
        run.section("torchrun", skip("torchrun"),
                    lambda r: torchrun_section(r, run, cache, device, args.quick, workdir))
        run.section("separate", skip("separate"), lambda r: separate_section(r, run, sizes, device))
        run.section("throughput", skip("throughput"), lambda r: throughput_section(r, run, cache, sizes, device))
    failed, raised = summarise(run)
    checks = run.results["checks"]
    run.results["summary"] = {"checks": len(checks), "failed": failed, "errors": raised,
                              "skipped": [name for name, record in run.results["sections"].items()
                                          if record["status"].startswith("skipped")]}
    run.write()
    print(f"{len(checks) - len(failed)} of {len(checks)} checks passed in {run.results['seconds']} s; "
          f"wrote {args.out}", flush=True)
    if failed or raised:
        raise UserError(f"{len(failed)} check(s) failed, {len(raised)} error(s): "
                        f"{'; '.join((failed + raised)[:3])}{' ...' if len(failed + raised) > 3 else ''} "
                        f"(details in {args.out})")


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
