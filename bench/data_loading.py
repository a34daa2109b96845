"""Time one training epoch's data loading from each cache format, side by side.

    python -m bench.data_loading --cache cache --batches 40
    python -m bench.data_loading --cache cache --data stems --workers 0 2 --start-method spawn

`stems` delivers raw audio excerpts (all augmentations); the STFT then runs on the
training device, so its cost is printed separately for this machine's CPU.
`magnitudes` delivers ready magnitudes (only whole-mixture augmentations are exact).
Both at the training defaults: batch 16, 6-second excerpts, 64 excerpts per track.
Before each loader starts, every training track is opened in this process, as train.py's
input statistics do, so workers started by spawn or forkserver get what training's get.
Peak memory is the PSS of this process and its workers (Linux), sampled while timing."""

from __future__ import annotations

import argparse
import multiprocessing
import time

import torch

from augment import AUGMENTATIONS
from bench.common import PeakTreeMemory, batches_forever
from cache import StemCache
from train import batch_targets, make_loader
from utils import HelpFormatter, run_cli


def time_loader(cache: StemCache, kind: str, batches: int, workers: int, args) -> tuple[float, float, int, int]:
    """Seconds per batch of the loader alone and of the loader plus magnitudes on the CPU,
    over `batches` batches after one warm-up batch; the total batches in an epoch; the
    peak PSS in bytes of the process tree from the loader's start to the last batch."""
    for name in cache.names("train"):  # open every track's array, as input_statistics does in train.py
        (cache.stems(name) if kind == "stems" else cache.magnitudes(name))[0]
    cpu = torch.device("cpu")
    with PeakTreeMemory() as memory:
        loader, sampler = make_loader(cache, kind, args.seq_dur, args.samples_per_track, AUGMENTATIONS,
                                      args.batch_size, workers, seed=0, device=cpu)
        load = with_stft = 0.0
        iterator = batches_forever(loader, sampler)
        next(iterator)
        for _ in range(batches):
            started = time.perf_counter()
            batch = next(iterator)
            loaded = time.perf_counter()
            if not args.loader_only:
                batch_targets(batch, kind == "stems", cpu)
            load += loaded - started
            with_stft += time.perf_counter() - started
        n_batches = len(loader)
        del iterator, loader  # the workers exit
    return load / batches, with_stft / batches, n_batches, memory.peak


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--cache", default="cache", help="cache written by preprocess.py (--magnitudes for magnitudes)")
    p.add_argument("--data", choices=("stems", "magnitudes", "both"), default="both", help="which loader(s) to time")
    p.add_argument("--batches", type=int, default=40, help="batches timed per format (an epoch is extrapolated)")
    p.add_argument("--batch-size", type=int, default=16, help="batch size")
    p.add_argument("--seq-dur", type=float, default=6.0, help="excerpt seconds")
    p.add_argument("--samples-per-track", type=int, default=64, help="excerpts per track per epoch")
    p.add_argument("--workers", type=int, nargs="+", default=[2], help="DataLoader workers (each count timed)")
    p.add_argument("--loader-only", action="store_true", help="skip the |STFT| on the CPU (its columns repeat the loader's)")
    p.add_argument("--start-method", choices=multiprocessing.get_all_start_methods(), default=None,
                   help="how workers start (default: Python's on this platform)")
    args = p.parse_args(argv)
    if args.start_method:
        multiprocessing.set_start_method(args.start_method)
    cache = StemCache(args.cache)
    kinds = ("stems", "magnitudes") if args.data == "both" else (args.data,)
    sizes = {kind: sum(f.stat().st_size for f in (cache.root / kind).glob("*.npy")) for kind in kinds}
    print(f"{cache.root}: {len(cache.names('train'))} train tracks, "
          f"{', '.join(f'{kind} {size / 1e6:.0f} MB' for kind, size in sizes.items())}; "
          f"workers start by {multiprocessing.get_start_method()}, {torch.get_num_threads()} torch threads")
    print(f"{'format':<11} {'workers':>7} {'loader s/batch':>15} {'excerpts/s':>11} {'epoch s':>9} "
          f"{'+ |STFT| on CPU s/batch':>24} {'epoch s':>9} {'peak PSS MB':>12}")
    loads = {}
    for kind in kinds:
        for workers in args.workers:
            load, with_stft, n_batches, peak = time_loader(cache, kind, args.batches, workers, args)
            loads[kind, workers] = load
            print(f"{kind:<11} {workers:7d} {load:15.3f} {args.batch_size / load:11.1f} {load * n_batches:9.1f} "
                  f"{with_stft:24.3f} {with_stft * n_batches:9.1f} {peak / 1e6:12.0f}", flush=True)
    if len(kinds) == 2:
        for workers in args.workers:
            print(f"loader time magnitudes / stems, {workers} workers: "
                  f"{loads['magnitudes', workers] / loads['stems', workers]:.2f}x")


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
