"""bench.gpu_check's shared pieces: the sizes it runs at, the record of checks it
fills, the device facts and the generated data."""

from __future__ import annotations

import gc
import json
import os
import platform
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from formats.cache import SOURCES, StemCache
from training.precision import cuda_capability, resolve_precision
from utils import SAMPLE_RATE, write_text

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


def is_out_of_memory(err: BaseException) -> bool:
    """torch's own out-of-memory error, or cuDNN's or cuBLAS's failure to allocate."""
    return isinstance(err, torch.cuda.OutOfMemoryError) or any(
        sign in str(err) for sign in ("out of memory", "CUDNN_STATUS_ALLOC_FAILED", "CUBLAS_STATUS_ALLOC_FAILED"))


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


