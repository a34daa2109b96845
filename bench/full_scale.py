"""A full-size dry run: build a MUSDB18-HQ-shaped root at the real size from the 7-second
clips (each clip tiled to a real track's length), then measure on this machine what a
full training run costs and project it.

    python -m bench.full_scale --out /data/fullscale                    # 86 + 14 + 50 tracks, ~32 GB WAV
    python -m bench.full_scale --out /tmp/fs --tracks 6 --minutes 1     # a medium-size rehearsal
    python -m bench.full_scale --out /data/fullscale --skip separation  # rerun: the build is reused

Phases: (1) build DIR/{train,test}/<track>/{mixture,drums,bass,other,vocals}.wav (16-bit,
tracks already complete are kept; every file is written atomically); (2) preprocess the
train and valid splits into DIR/cache with data.preprocess, as preprocess.py does, and
train's input statistics; (3) the training loader's excerpts/s at each --workers under each
--contexts start method, with the process tree's peak memory, beside the float32 item path
it replaced (bench.data_loading.FloatItems); (4) one training step on
the device; (5) training.validation.validate over the valid tracks, once; (6) segments.separate
(mixture phase) and evaluation.evaluate_track (museval) on one test track, and each of
--phases on it, timed per process as inference.py with a pool runs it (on a CPU all on
one thread, as in a pool process that separates whole tracks; on a GPU the model on the
device and the pooled phase methods and museval on one thread). Then one epoch and 150
epochs at full scale, and the test set's evaluation with --phases on --cores cores, are
projected, a table printed and
DIR/full_scale.json written. A rerun keeps the figures of --skip'ed phases from the
earlier full_scale.json with the same build and settings, and reuses the cache (preprocess
figures too, when nothing was left to cache)."""

from __future__ import annotations

import argparse
import contextlib
import functools
import heapq
import json
import math
import os
import time
from pathlib import Path
from typing import Sequence

import torch
from tqdm import tqdm

from bench.common import PeakTreeMemory, batches_forever, one_thread
from bench.full_size_data import (FULL_TEST_TRACKS, LENGTH_SPREAD, build, build_plan, clips_root, directory_bytes,
                                  track_lengths)
from bench.train_throughput import FULL_TRAIN_TRACKS, FULL_VALID_TRACKS, MEAN_TRACK_SECONDS, rate, step, synchronize
from data import input_statistics, open_musdb, preprocess
from formats.cache import StemCache
from model import MODELS, build_model
from separation import evaluation, processes, segments
from separation.phase import PHASE_METHODS, PhaseSettings, resolve_gl_backend
from training.augment import AUGMENTATIONS
from training.loader import make_loader
from training.losses import DEFAULT_LOSSES
from training.precision import PRECISIONS, Precision, set_up_precision
from training.settings import new_model_config
from training.validation import validate
from utils import (SAMPLE_RATE, STEMS, HelpFormatter, UserError, add_debug_flag, machine_description,
                   remove_stale_parts, resolve_device, run_cli, write_text)

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULT_FILE = "full_scale.json"
PHASES = ("loader", "step", "validation", "separation")  # the phases --skip can leave out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--clips", default=str(REPO_ROOT.parent / "shared" / "musdb18-7" / "train"),
                   help="the MUSDB18 7-second training clips (.stem.mp4): a root's train/ folder, or the root")
    p.add_argument("--out", required=True, help="where the root (train/, test/), cache/ and full_scale.json go")
    p.add_argument("--tracks", type=int, default=None,
                   help=f"at most N tracks per split (default {FULL_TRAIN_TRACKS} train, {FULL_VALID_TRACKS} valid, "
                        f"{FULL_TEST_TRACKS} test)")
    p.add_argument("--minutes", type=float, default=None,
                   help=f"every track this long (default {MEAN_TRACK_SECONDS:g} s +- {LENGTH_SPREAD:g} s, "
                        "a fixed draw per track)")
    g = p.add_argument_group("measurements")
    g.add_argument("--workers", type=int, nargs="+", default=[0, 2, 4], help="DataLoader worker counts to time")
    g.add_argument("--contexts", nargs="+", default=["fork", "spawn"], choices=("fork", "spawn", "forkserver"),
                   help="worker start methods to time (for worker counts above 0)")
    g.add_argument("--batches", type=int, default=20, help="timed loader batches per configuration")
    g.add_argument("--steps", type=int, default=3, help="timed training steps")
    g.add_argument("--batch-size", type=int, default=16, help="excerpts per batch")
    g.add_argument("--seq-dur", type=float, default=6.0, help="excerpt seconds")
    g.add_argument("--samples-per-track", type=int, default=64, help="excerpts per training track per epoch")
    g.add_argument("--model", choices=list(MODELS), default="umx", help="the network")
    g.add_argument("--hidden-size", type=int, default=None, help="model width (default: the model's own)")
    g.add_argument("--device", default="auto", help="auto, cpu or cuda")
    g.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="of the training step, as train.py's: auto is bf16 on CUDA, fp32 on CPU (validation runs fp32)")
    g.add_argument("--phases", nargs="+", default=["mixture", "griffinlim"], choices=list(PHASE_METHODS),
                   help="phase methods timed on the test track (inference.py's defaults: 32 Griffin-Lim iterations, "
                        "librosa backend) and projected for the test set; the default is Task 2's")
    g.add_argument("--cores", type=int, default=16,
                   help="cores of the machine the test set's evaluation is projected for, with inference.py's "
                        "pool of --cores workers: on a CPU each separates whole tracks (model, phase methods, "
                        "museval); on a GPU they run museval and the phase methods slow on a CPU beside the model")
    g.add_argument("--skip", nargs="+", default=[], choices=PHASES,
                   help="keep these phases' figures from the earlier DIR/full_scale.json (same build and settings)")
    add_debug_flag(p)
    return p


# ------------------------------------------------------------ measurements

def measure_preprocess(out: Path, plan: list[dict], previous: dict) -> dict:
    """data.preprocess of the train and valid splits into out/cache, as preprocess.py runs
    it. Tracks cached by an earlier run are skipped, so the time is scaled up from the
    tracks cached now; with none left, the earlier run's figures are kept."""
    cache_dir = out / "cache"
    remove_stale_parts(cache_dir)
    cache = StemCache.create_or_open(cache_dir)
    strangers = set(cache.names()) - {e["name"] for e in plan}
    if strangers:  # training and validation would read them too
        raise UserError(f"{cache_dir} holds {len(strangers)} track(s) this build does not plan (e.g. "
                        f"{min(strangers)}): remove {cache_dir}")
    splits = {split: open_musdb(str(out), True, "train", split).tracks for split in ("train", "valid")}
    todo = sum(not cache.is_cached(t.name) for tracks in splits.values() for t in tracks)
    started = time.perf_counter()
    for split, tracks in splits.items():
        broken = preprocess(tracks, split, cache, progress=tqdm)
        if broken:
            raise UserError(f"built track(s) could not be cached: {', '.join(broken)}")
    seconds = time.perf_counter() - started
    total = sum(len(tracks) for tracks in splits.values())
    if todo == 0:  # nothing was timed
        print("cache complete: preprocess figures from the earlier run" if "preprocess_s" in previous else
              f"cache complete and no earlier figures of these settings: remove {cache_dir} to time preprocessing")
        return {"preprocess_s": previous.get("preprocess_s", math.nan), "preprocess_tracks_timed": 0,
                "cache_bytes": directory_bytes(cache_dir)}
    return {"preprocess_s": seconds * total / todo, "preprocess_tracks_timed": todo,
            "cache_bytes": directory_bytes(cache_dir)}


def measure_loader(cache: StemCache, args: argparse.Namespace, device: torch.device) -> list[dict]:
    """Excerpts/s of training.loader.make_loader (stems, all augmentations; path 'int16') and of the
    float32 item path it replaced (bench.data_loading.float_loader; path 'float32'), side by
    side, per worker count and start method over --batches batches, with the process tree's
    peak memory meanwhile. The first
    batch's wait (the workers' start-up) is reported apart, and the batches the workers
    prefetched meanwhile (DataLoader's prefetch_factor, 2 per worker) are not timed: they
    come at once, faster than the workers' steady rate. `cache` is the one the input
    statistics read, with every track's array open, as train.py hands it to its workers."""
    from bench.data_loading import float_loader  # the baseline lives with the loader bench

    configs = [(p, w, c) for w in args.workers for c in (args.contexts if w > 0 else [None]) for p in ("float32", "int16")]
    rows = []
    for path, workers, context in configs:
        with PeakTreeMemory() as memory:
            if path == "int16":
                loader, sampler = make_loader(cache, args.seq_dur, args.samples_per_track, AUGMENTATIONS,
                                              args.batch_size, workers, seed=0, device=device,
                                              multiprocessing_context=context)
            else:
                loader, sampler = float_loader(cache, args.seq_dur, args.samples_per_track, AUGMENTATIONS,
                                               args.batch_size, workers, 0, context)
            prefetched = 2 * workers
            iterator = batches_forever(loader, sampler)
            started = time.perf_counter()
            next(iterator)
            startup = time.perf_counter() - started
            excerpts_per_s = rate(functools.partial(next, iterator), args.batches, args.batch_size, torch.device("cpu"),
                                  warmup=prefetched)
            del iterator, loader  # the workers end here, inside the sampled span
        row = {"path": path, "workers": workers, "context": context or "-", "excerpts_per_s": excerpts_per_s,
               "first_batch_s": startup, "peak_memory_bytes": memory.peak, "memory_kind": memory.kind}
        print(f"loader {path:<7} {workers} workers {row['context']:<6} {excerpts_per_s:8.1f} excerpts/s, first batch "
              f"{startup:.1f} s, peak {memory.kind or 'memory'} {memory.peak / 2**30:.2f} GiB", flush=True)
        rows.append(row)
    return rows


def training_model(cache: StemCache, args: argparse.Namespace) -> tuple[torch.nn.Module, float]:
    """The model train.py would build (umx with input statistics of the training tracks)
    and the seconds those statistics took, a once-per-run cost."""
    config = new_model_config(args.model, args.hidden_size, None, True, True, None)
    started = time.perf_counter()
    if args.model == "umx":
        mean, std = input_statistics(cache, cache.names("train"), progress=tqdm)
        config |= {"input_mean": (-mean).tolist(), "input_scale": (1.0 / std).tolist()}
    seconds = time.perf_counter() - started
    torch.manual_seed(0)
    return build_model(config), seconds


def measure_step(model: torch.nn.Module, cache: StemCache, args: argparse.Namespace, device: torch.device,
                 precision: Precision) -> float:
    """Seconds of one training step (train_throughput.step) on one fixed loader batch."""
    loader, _ = make_loader(cache, args.seq_dur, args.samples_per_track, AUGMENTATIONS, args.batch_size,
                            0, seed=0, device=device)
    batch = next(iter(loader))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    loss = DEFAULT_LOSSES["magnitude"]  # the bench builds magnitude-mask models only
    scaler = precision.grad_scaler(device.type)
    return args.batch_size / rate(lambda: step(model, optimizer, scaler, batch, device, precision, loss),
                                  args.steps, args.batch_size, device, warmup=1)


def measure_validation(model: torch.nn.Module, cache: StemCache, device: torch.device) -> dict:
    names = cache.names("valid")
    synchronize(device)
    started = time.perf_counter()
    validate(model, cache, names, device)
    synchronize(device)
    seconds = time.perf_counter() - started
    audio = sum(cache.length(n) for n in names) / SAMPLE_RATE
    return {"valid_s_per_epoch": seconds, "valid_audio_s": audio, "valid_s_per_audio_s": seconds / audio}


def measure_separation(model: torch.nn.Module, out: Path, device: torch.device, phases: Sequence[str]) -> dict:
    """On the first test track, in seconds per minute of audio: segments.separate (mixture
    phase: the model, the STFTs and that phase), evaluation.evaluate_track (museval), and
    each of `phases` by itself, as inference.py with a pool of one process per core runs
    them: on a CPU all in a pool process on one thread (processes.models_in_workers); on a
    GPU the model and the phases it keeps in this process, and those it pools
    (processes.pooled_phases) as a PhaseJob on one thread, as in a pool process. museval
    runs on one thread either way."""
    import museval  # noqa: F401  (imported here so that its import is not timed)

    track = sorted(open_musdb(str(out), True, "test").tracks, key=lambda t: t.name)[0]
    mixture = evaluation.track_mixture(track)
    minutes = mixture.shape[0] / SAMPLE_RATE / 60
    in_workers = processes.models_in_workers(device, 2)  # as with any pool (--workers above 1)
    where_the_model_runs = one_thread if in_workers else contextlib.nullcontext
    model.eval()
    with where_the_model_runs():
        segments.separate(model, mixture[:SAMPLE_RATE], segments.SeparationSettings(), device)  # warm-up
        started = time.perf_counter()
        estimates = segments.separate(model, mixture, segments.SeparationSettings(), device)["mixture"]
        separate_s = time.perf_counter() - started
    print(f"separated {minutes:.1f} min in {separate_s:.1f} s; museval ...", flush=True)
    with one_thread():  # as in a pool process
        started = time.perf_counter()
        evaluation.evaluate_track(track, {stem: estimates[stem] for stem in STEMS})
        museval_s = time.perf_counter() - started
    # PhaseSettings' defaults are inference.py's flag defaults; "auto" picks the backend by device.
    settings = segments.SeparationSettings(tuple(phases), PhaseSettings(gl_backend=resolve_gl_backend("auto", device)))
    pooled = [] if in_workers else processes.pooled_phases(settings, device, 2)
    timings: dict[str, float] = {}
    with where_the_model_runs():
        _, jobs = segments.separate_deferring(model, mixture, settings, device, pooled, timings=timings)
    for phase in pooled:
        print(f"{phase} on one thread ...", flush=True)
        with one_thread():
            _, timings[phase] = jobs[phase].run()
    phase_s = {phase: timings[phase] / minutes for phase in phases}
    print("phase methods, s per audio minute: " + ", ".join(f"{p} {s:.1f}" for p, s in phase_s.items()), flush=True)
    return {"separate_s_per_audio_minute": separate_s / minutes, "museval_s_per_audio_minute": museval_s / minutes,
            "separation_track": track.name, "separation_audio_minutes": minutes, "phase_s_per_audio_minute": phase_s,
            "phase_pooled": pooled, "separation_threads": 1 if in_workers else torch.get_num_threads()}


def project_test_evaluation(results: dict, cores: int) -> dict:
    """inference.py --workers `cores` on `cores` cores, with the measured phases, on the
    FULL_TEST_TRACKS of the full-size build (its drawn lengths, whatever --tracks and
    --minutes built). On a CPU (processes.models_in_workers) each pool process separates
    whole tracks on one thread: the model, every phase method and museval once per phase;
    the tracks go, in name order, each to the first process that is free (as
    ProcessPoolExecutor hands them out), and the projection is when the last one finishes
    (the pool's start, seconds, left out). On a GPU the main process runs the model
    (separation less its mixture phase) and the phases it keeps, and the pool the pooled
    phases and museval, shared among `cores`; the two overlap, so their sum is an upper
    bound."""
    lengths = [n / SAMPLE_RATE / 60 for n in track_lengths("test", FULL_TEST_TRACKS, None)]
    minutes = sum(lengths)
    phase_s = results["phase_s_per_audio_minute"]
    model_s = results["separate_s_per_audio_minute"] - phase_s.get("mixture", 0.0)
    museval_s = len(phase_s) * results["museval_s_per_audio_minute"]
    projection = {"phases": list(phase_s), "cores": cores, "audio_minutes": minutes}
    if processes.models_in_workers(torch.device(results["machine"]["device"]), cores):
        track_s = model_s + sum(phase_s.values()) + museval_s  # per audio minute, in one pool process
        finish = [0.0] * cores  # a min-heap of the processes' busy-until times
        for length in lengths:
            heapq.heapreplace(finish, finish[0] + length * track_s)
        hours = max(finish) / 3600
        projection |= {"whole_tracks": True, "process_s_per_audio_minute": track_s,
                       "evenly_spread_h": minutes * track_s / cores / 3600}
    else:
        main_s = model_s + sum(s for p, s in phase_s.items() if p not in results["phase_pooled"])
        pool_s = (sum(phase_s[p] for p in results["phase_pooled"]) + museval_s) / cores
        hours = minutes * (main_s + pool_s) / 3600
        projection |= {"whole_tracks": False, "main_h": minutes * main_s / 3600, "pool_h": minutes * pool_s / 3600}
    return {"projected_test_eval_h": hours, "test_eval_projection": projection}


def project(results: dict, args: argparse.Namespace) -> dict:
    """One full-scale epoch: FULL_TRAIN_TRACKS x --samples-per-track excerpts, limited by
    the step or by training's best loader (the int16 path: its workers, or with 0 workers
    its background thread, load while the step runs, so the two overlap), plus validation of
    FULL_VALID_TRACKS x MEAN_TRACK_SECONDS."""
    trained_with = [r for r in results["loader"] if r.get("path") == "int16"] or results["loader"]  # an older json's
    best = max(trained_with, key=lambda r: r["excerpts_per_s"])
    excerpts = FULL_TRAIN_TRACKS * args.samples_per_track
    steps = math.ceil(excerpts / args.batch_size)
    step_s, loader_s = steps * results["step_s"], excerpts / best["excerpts_per_s"]
    train_s = max(step_s, loader_s)
    valid_s = FULL_VALID_TRACKS * MEAN_TRACK_SECONDS * results["valid_s_per_audio_s"]
    epoch_s = train_s + valid_s
    return {"loader_excerpts_per_s": best["excerpts_per_s"],
            "loader_best": f"{best['workers']} workers {best['context']}",
            "projection": {"steps_per_epoch": steps, "steps_s": step_s, "loading_s": loader_s, "train_s": train_s,
                           "valid_s": valid_s},
            "projected_epoch_s": epoch_s, "projected_150_epochs_h": 150 * epoch_s / 3600}


# --------------------------------------------------------------------- main

PHASE_KEYS = {"loader": ("loader",), "step": ("step_s",),
              "validation": ("valid_s_per_epoch", "valid_audio_s", "valid_s_per_audio_s"),
              "separation": ("separate_s_per_audio_minute", "museval_s_per_audio_minute", "separation_track",
                             "separation_audio_minutes", "phase_s_per_audio_minute", "phase_pooled",
                             "separation_threads")}


def settings(config: dict) -> dict:
    """What the figures depend on: the build and the measurement flags, not where the files
    are, what was skipped, the cores projected for, nor the phase methods timed (figures
    are kept per method: see previous_results)."""
    return {k: v for k, v in config.items() if k not in ("clips", "out", "skip", "cores", "phases")}


def previous_results(path: Path, config: dict, skip: Sequence[str]) -> dict:
    """The earlier run's results when it had the same settings (else none); every figure
    of every --skip'ed phase must be in them (a run from before a figure existed measured
    the phase otherwise)."""
    previous = {}
    if path.is_file():
        earlier = json.loads(path.read_text())
        if settings(earlier.get("config", {})) == settings(config):
            previous = earlier
    missing = [phase for phase in skip if any(key not in previous for key in PHASE_KEYS[phase])]
    if "separation" in skip and not set(config["phases"]) <= set(previous.get("phase_s_per_audio_minute", {})):
        missing.append("separation (for every --phases method)")
    if missing:
        raise UserError(f"--skip {' '.join(missing)}: no figures for it in {path} from a run with the same build "
                        "and settings")
    return previous


def print_table(results: dict) -> None:
    gib = 2 ** 30
    rows = [("cache size", f"{results['cache_bytes'] / 1e9:.2f} GB"),
            ("preprocess", f"{results['preprocess_s']:.0f} s"),
            ("input statistics", f"{results['input_statistics_s']:.0f} s (once per run)")]
    rows += [(f"loader {r.get('path', 'float32')} {r['workers']} workers {r['context']}",
              f"{r['excerpts_per_s']:.1f} excerpts/s, peak {r['memory_kind'] or 'memory'} "
              f"{r['peak_memory_bytes'] / gib:.2f} GiB") for r in results["loader"]]
    p = results["projection"]
    rows += [("training step", f"{results['step_s']:.3f} s"),
             ("validation", f"{results['valid_s_per_epoch']:.1f} s for {results['valid_audio_s']:.0f} s of audio"),
             ("separation", f"{results['separate_s_per_audio_minute']:.2f} s per audio minute, "
                            f"{results['separation_threads']} threads"),
             ("museval", f"{results['museval_s_per_audio_minute']:.2f} s per audio minute")]
    rows += [(f"phase {phase}{' (pool)' if phase in results['phase_pooled'] else ''}", f"{s:.2f} s per audio minute")
             for phase, s in results["phase_s_per_audio_minute"].items()]
    t = results["test_eval_projection"]
    if t["whole_tracks"]:
        test_set = (f"{results['projected_test_eval_h'] * 60:.1f} min ({t['cores']} processes of whole tracks, "
                    f"{t['process_s_per_audio_minute']:.1f} s per audio minute each; evenly spread "
                    f"{t['evenly_spread_h'] * 60:.1f})")
    else:
        test_set = (f"{results['projected_test_eval_h'] * 60:.1f} min (main process {t['main_h'] * 60:.1f}, "
                    f"pool {t['pool_h'] * 60:.1f})")
    rows += [
             ("projected epoch", f"{results['projected_epoch_s']:.0f} s ({p['steps_per_epoch']} steps "
                                 f"{p['steps_s']:.0f} s, loading {p['loading_s']:.0f} s, validation {p['valid_s']:.0f} s)"),
             ("projected 150 epochs", f"{results['projected_150_epochs_h']:.1f} h"),
             (f"projected test set, {' '.join(t['phases'])}, {t['cores']} cores", test_set)]
    width = max(len(label) for label, _ in rows)
    print("\n".join(f"{label:<{width}}  {value}" for label, value in rows))


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if min(args.batches, args.steps, args.batch_size, args.samples_per_track, args.cores) < 1 or min(args.workers) < 0:
        raise UserError("--batches, --steps, --batch-size, --samples-per-track and --cores must be positive, "
                        "--workers >= 0")
    device = resolve_device(args.device)
    precision = set_up_precision(args.precision, device)
    args.precision = precision.name  # the JSON records what ran, not "auto"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plan = build_plan(clips_root(args.clips), args.tracks, args.minutes)
    config = {**{k: v for k, v in vars(args).items() if k != "debug"},
              "build": [[e["split"], e["name"], e["length"]] for e in plan]}
    previous = previous_results(out / RESULT_FILE, json.loads(json.dumps(config)), args.skip)
    results = {"machine": {"description": machine_description(device), "device": str(device),
                           "torch_threads": torch.get_num_threads(), "load_average": os.getloadavg(),
                           "memory_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")},
               "config": config,
               "reused": list(args.skip)}
    results |= build(out, plan)
    results |= measure_preprocess(out, plan, previous)
    cache = StemCache(out / "cache")
    model, results["input_statistics_s"] = training_model(cache, args)
    model.to(device)
    for phase in PHASE_KEYS:
        if phase in args.skip:
            results |= {k: previous[k] for k in PHASE_KEYS[phase]}
        elif phase == "loader":
            results["loader"] = measure_loader(cache, args, device)
        elif phase == "step":
            results["step_s"] = measure_step(model, cache, args, device, precision)
            print(f"training step {results['step_s']:.3f} s", flush=True)
        elif phase == "validation":
            results |= measure_validation(model, cache, device)
            print(f"validation {results['valid_s_per_epoch']:.1f} s", flush=True)
        else:
            results |= measure_separation(model, out, device, args.phases)
    results |= project(results, args)
    results |= project_test_evaluation(results, args.cores)
    write_text(out / RESULT_FILE, json.dumps(results, indent=1))
    print_table(results)
    print(f"results in {out / RESULT_FILE}")


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
