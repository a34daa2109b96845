"""Loader-only excerpts/s of the training loader, its int16 path against a float32 item path
(the baseline), side by side in one run; then a CPU training step fed by each path.

    python -m bench.data_loading --cache cache --batches 40
    python -m bench.data_loading --cache cache --workers 0 2 --start-method spawn
    python -m bench.data_loading --full-size /data/full --batches 20   # a ~4-min-a-track cache, built once
    python -m bench.data_loading --full-size /data/full --stems 2 --reload  # what the page cache keeps (cgroup)
    python -m bench.data_loading --cache cache --steps 3   # + a CPU training step, both paths

Paths: `int16` is training.loader.make_loader's (items carry each source's int16 codes and scale;
with --workers 0 a background thread fills reused buffers, data.BackgroundLoader, timed
as it feeds a GPU: the codes alone, the buffers not page-locked here);
`float32` is the baseline (FloatItems: each item converted to float32,
scaled and swapped on the CPU, then batched by a DataLoader). Both draw the same items.
Per core: excerpts/s over the cores the loader keeps busy (its thread or main process
with 0 workers, else one per worker). `+ targets on CPU` adds training.loop.batch_targets
(conversion, mixture and |STFT|) on this CPU, the work the int16 path moves to the device.
--steps times train_epoch's loop (loader, then a step of the default model) with 0 workers,
the two paths taking turns step by step.
Before each loader starts every training track is opened in this process, as train.py's
input statistics do, so workers started by spawn or forkserver get what training's get.
Peak memory is the PSS of this process and its workers (Linux), sampled while timing;
disk MB/excerpt what they read from storage (/proc/<pid>/io), 0 when the page cache
holds the cache, about the excerpt's size when every excerpt comes from disk."""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from bench.common import PeakTreeMemory, batches_forever, tree_read_bytes
from data import BackgroundLoader, EpochSampler, TrainChunks
from formats.cache import SOURCE_SETS, StemCache
from model import build_model
from training.augment import AUGMENTATIONS, Excerpt, augment_item
from training.loader import make_loader
from training.loop import batch_targets, separation_loss
from training.losses import DEFAULT_LOSSES
from training.precision import set_up_precision
from training.settings import new_model_config
from utils import SAMPLE_RATE, HelpFormatter, UserError, run_cli


class FloatItems(Dataset):
    """The float32 item path, the baseline of this bench and the reference of the test that
    TrainChunks' int16 items give bit-identical audio: item `index`
    is drawn as TrainChunks draws it and returned as (sources, channels, samples) float32,
    each source's codes times its scale and gain in one pass on the CPU, a swapped source
    written in reverse channel order."""

    def __init__(self, chunks: TrainChunks) -> None:
        self.chunks = chunks

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, index: int) -> torch.Tensor:
        chunks, pool = self.chunks, self.chunks.pool
        rng = np.random.default_rng([chunks.seed, index])
        track = pool.names[(index % len(chunks)) // chunks.samples_per_track]
        start = pool.random_start(track, rng)
        excerpts = augment_item([Excerpt(track, start) for _ in chunks.cache.sources], pool, rng)
        out = np.empty((len(excerpts), 2, chunks.seq_len), dtype=np.float32)
        for k, excerpt in enumerate(excerpts):
            stem = chunks.cache.stems(excerpt.track)[k, :, excerpt.start:excerpt.start + chunks.seq_len]
            target = out[k, ::-1] if excerpt.swap else out[k]
            n = min(chunks.seq_len, stem.shape[-1])
            np.multiply(stem.codes[..., :n], np.float32(stem.scale * excerpt.gain), out=target[..., :n])
            target[..., n:] = 0
        return torch.from_numpy(out)


def float_loader(cache: StemCache, seq_dur: float, samples_per_track: int, augmentations: Sequence[str],
                 batch_size: int, workers: int, seed: int,
                 multiprocessing_context: str | None = None) -> tuple[DataLoader, EpochSampler]:
    """The float32 path's loader: a DataLoader of FloatItems with training's sampler."""
    chunks = TrainChunks(cache, cache.names("train"), int(seq_dur * SAMPLE_RATE), samples_per_track, augmentations,
                         seed)
    sampler = EpochSampler(len(chunks), seed)
    return DataLoader(FloatItems(chunks), batch_size=batch_size, sampler=sampler, num_workers=workers,
                      persistent_workers=workers > 0, multiprocessing_context=multiprocessing_context), sampler


def loader_for(path: str, cache: StemCache, workers: int, args, training_device: str = "cuda") -> tuple:
    """(loader, sampler) of `path` ('int16' or 'float32'), training's settings, seed 0.
    int16 with 0 workers: make_loader's background thread as it feeds a GPU
    (`training_device` cuda: the codes alone, here in memory that is not page-locked) or
    a CPU (cpu: the thread also makes the audio)."""
    if path == "float32":
        return float_loader(cache, args.seq_dur, args.samples_per_track, AUGMENTATIONS, args.batch_size, workers, 0)
    if path == "int16" and workers == 0:
        chunks = TrainChunks(cache, cache.names("train"), int(args.seq_dur * SAMPLE_RATE), args.samples_per_track,
                             AUGMENTATIONS, 0)
        sampler = EpochSampler(len(chunks), 0)
        return BackgroundLoader(chunks, sampler, args.batch_size, pin=False,
                                make_audio=training_device == "cpu"), sampler
    return make_loader(cache, args.seq_dur, args.samples_per_track, AUGMENTATIONS, args.batch_size, workers,
                       seed=0, device=torch.device("cpu"))


def time_loader(cache: StemCache, path: str, batches: int, workers: int, first_epoch: int,
                args) -> tuple[float, float, int, int, int]:
    """Seconds per batch of the loader alone and of the loader plus batch_targets on the CPU,
    over `batches` batches of epochs from `first_epoch` on (each timing its own epochs, so
    that none finds the excerpts of the one before in the page cache) after the warm-up
    (one batch, and those the workers prefetch);
    the batches in an epoch; the peak PSS in bytes of the process tree meanwhile; the bytes
    it read from storage over the timed batches (what the page cache did not hold)."""
    for name in cache.names("train"):  # open every track's array, as input_statistics does in train.py
        cache.stems(name)
    cpu = torch.device("cpu")
    with PeakTreeMemory() as memory:
        loader, sampler = loader_for(path, cache, workers, args)
        load = with_targets = 0.0
        iterator = batches_forever(loader, sampler, first_epoch)
        for _ in range(1 + 2 * workers):  # DataLoader's prefetch_factor 2 per worker arrive at once
            next(iterator)
        read_before = tree_read_bytes()
        for _ in range(batches):
            started = time.perf_counter()
            batch = next(iterator)
            loaded = time.perf_counter()
            if not args.loader_only:
                batch_targets(batch, cpu)
            load += loaded - started
            with_targets += time.perf_counter() - started
        n_batches = len(loader)
        read = tree_read_bytes() - read_before  # before the workers exit with their counts
        del iterator, loader  # the workers exit
    return load / batches, with_targets / batches, n_batches, memory.peak, read


def time_steps(cache: StemCache, args) -> dict[str, float]:
    """Seconds per step of train_epoch's loop with 0 workers, per stem path: the next
    batch, then a step of the default model (float32 on the CPU) on it. The two paths
    take turns step by step, each with its own copy of the model, so that a change in
    the machine's load meets both; one warm-up step each."""
    precision = set_up_precision("fp32", torch.device("cpu"))
    runs = {}
    for path in ("float32", "int16"):
        torch.manual_seed(0)
        model = build_model(new_model_config("umx", None, None, True, True, None))
        loader, sampler = loader_for(path, cache, 0, args, training_device="cpu")
        runs[path] = (model, torch.optim.Adam(model.parameters(), lr=1e-3), batches_forever(loader, sampler))
    seconds = dict.fromkeys(runs, 0.0)
    scaler = precision.grad_scaler("cpu")
    for step in range(1 + args.steps):
        for path, (model, optimizer, batches) in runs.items():
            started = time.perf_counter()
            mixture, targets = batch_targets(next(batches), torch.device("cpu"))
            loss = separation_loss(model, mixture, targets, precision, DEFAULT_LOSSES["magnitude"])
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if step > 0:
                seconds[path] += time.perf_counter() - started
    return {path: total / args.steps for path, total in seconds.items()}


def reload_page_cache(cache: StemCache) -> float:
    """Drop the cache's files from the page cache, then read them all once, so that it
    holds what this machine's memory, or the memory cgroup this runs in, lets it keep of
    them, as in a long training run (a cgroup counts only the pages its processes read).
    Returns the seconds the reading took."""
    files = sorted((cache.root / "stems").glob("*.npy"))
    os.sync()  # dirty pages cannot be dropped
    for path in files:
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(descriptor)
    started = time.perf_counter()
    for path in files:
        with open(path, "rb", buffering=0) as f:
            while f.read(1 << 24):
                pass
    return time.perf_counter() - started


def cache_bytes(cache: StemCache) -> int:
    return sum(f.stat().st_size for f in (cache.root / "stems").glob("*.npy"))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--cache", default="cache", help="cache written by preprocess.py")
    p.add_argument("--full-size", default=None, metavar="DIR",
                   help="instead of --cache, DIR/cache-<N>stems: a full-size cache (86 + 14 tracks of ~4 minutes, "
                        "bench.full_scale's lengths) tiled from --clips, built on the first run (~17 GB with "
                        "--stems 4)")
    p.add_argument("--stems", type=int, choices=sorted(SOURCE_SETS, reverse=True), default=4,
                   help="with --full-size: the cache's stems (preprocess.py --stems)")
    p.add_argument("--clips", default=str(Path(__file__).resolve().parents[2] / "shared" / "musdb18-7"),
                   help="with --full-size: the MUSDB18 7-second clips' root")
    p.add_argument("--batches", type=int, default=40, help="batches timed per loader (an epoch is extrapolated)")
    p.add_argument("--batch-size", type=int, default=16, help="batch size")
    p.add_argument("--seq-dur", type=float, default=6.0, help="excerpt seconds")
    p.add_argument("--samples-per-track", type=int, default=64, help="excerpts per track per epoch")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader workers (each count timed)")
    p.add_argument("--loader-only", action="store_true", help="skip batch_targets on the CPU")
    p.add_argument("--reload", action="store_true",
                   help="first drop the cache from the page cache and read it once, so that the page cache holds what "
                        "memory (or a memory cgroup's limit) lets it keep, as in a long run")
    p.add_argument("--steps", type=int, default=0, help="also time this many training steps per stem path (0: none)")
    p.add_argument("--start-method", choices=multiprocessing.get_all_start_methods(), default=None,
                   help="how workers start (default: Python's on this platform)")
    args = p.parse_args(argv)
    if args.batches < 1 or args.steps < 0 or min(args.workers) < 0:
        raise UserError("--batches must be positive, --steps and --workers at least 0")
    if args.start_method:
        multiprocessing.set_start_method(args.start_method)
    if args.full_size:
        from bench.full_size_data import full_size_cache
        cache = full_size_cache(Path(args.full_size) / f"cache-{args.stems}stems", args.clips, SOURCE_SETS[args.stems])
    else:
        cache = StemCache(args.cache)
    cores = os.cpu_count() or 1
    if args.reload:
        seconds = reload_page_cache(cache)
        print(f"cache dropped from the page cache and read once in {seconds:.0f} s")
    print(f"{cache.root}: {len(cache.names('train'))} train tracks, {len(cache.sources)} stems, "
          f"{cache_bytes(cache) / 1e9:.2f} GB; {cores} cores; "
          f"workers start by {multiprocessing.get_start_method()}, {torch.get_num_threads()} torch threads")
    print(f"{'path':<10} {'workers':>7} {'loader s/batch':>15} {'excerpts/s':>11} {'per core':>9} {'epoch s':>8} "
          f"{'+ targets on CPU s/batch':>25} {'peak PSS MB':>12} {'disk MB/excerpt':>16}")
    rates = {}
    configs = [(path, workers) for workers in args.workers for path in ("float32", "int16")]
    for timing, (path, workers) in enumerate(configs):
        load, with_targets, n_batches, peak, read = time_loader(cache, path, args.batches, workers, 1 + 1000 * timing,
                                                                args)
        rates[path, workers] = args.batch_size / load
        busy = min(cores, max(1, workers))
        print(f"{path:<10} {workers:7d} {load:15.4f} {rates[path, workers]:11.1f} {rates[path, workers] / busy:9.1f} "
              f"{load * n_batches:8.1f} {with_targets if not args.loader_only else float('nan'):25.3f} "
              f"{peak / 1e6:12.0f} {read / 1e6 / (args.batches * args.batch_size):16.2f}", flush=True)
    for workers in args.workers:
        print(f"loader excerpts/s int16 / float32, {workers} workers: "
              f"{rates['int16', workers] / rates['float32', workers]:.2f}x")
    if args.steps:
        seconds = time_steps(cache, args)
        print(f"CPU training step with 0 workers (loader + default model, batch {args.batch_size}): "
              f"float32 {seconds['float32']:.2f} s, int16 {seconds['int16']:.2f} s, "
              f"int16 / float32 {seconds['int16'] / seconds['float32']:.3f}")


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
