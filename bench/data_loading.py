"""Time one training epoch's data loading from each cache format, side by side.

    python bench/data_loading.py --cache cache --batches 40

`stems` delivers raw audio excerpts (all augmentations); the STFT then runs on the
training device, so its cost is printed separately for this machine's CPU.
`magnitudes` delivers ready magnitudes (only whole-mixture augmentations are exact).
Both at the training defaults: batch 16, 6-second excerpts, 64 excerpts per track."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from common import batches_forever  # noqa: E402
from data import AUGMENTATIONS, StemCache  # noqa: E402
from train import batch_magnitudes, make_loader  # noqa: E402
from utils import HelpFormatter, run_cli  # noqa: E402


def time_loader(cache: StemCache, kind: str, batches: int, args) -> tuple[float, float, int]:
    """Seconds per batch of the loader alone and of the loader plus magnitudes on the CPU,
    over `batches` batches after one warm-up batch; also the total batches in an epoch."""
    loader, sampler = make_loader(cache, kind, args.seq_dur, args.samples_per_track, AUGMENTATIONS,
                                  args.batch_size, args.workers, seed=0, device=torch.device("cpu"))
    cpu = torch.device("cpu")
    load = with_stft = 0.0
    iterator = batches_forever(loader, sampler)
    next(iterator)
    for _ in range(batches):
        started = time.perf_counter()
        batch = next(iterator)
        loaded = time.perf_counter()
        batch_magnitudes(batch, kind == "stems", cpu)
        load += loaded - started
        with_stft += time.perf_counter() - started
    return load / batches, with_stft / batches, len(loader)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--cache", default="cache", help="cache written by preprocess.py --magnitudes")
    p.add_argument("--batches", type=int, default=40, help="batches timed per format (an epoch is extrapolated)")
    p.add_argument("--batch-size", type=int, default=16, help="batch size")
    p.add_argument("--seq-dur", type=float, default=6.0, help="excerpt seconds")
    p.add_argument("--samples-per-track", type=int, default=64, help="excerpts per track per epoch")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    args = p.parse_args(argv)
    cache = StemCache(args.cache)
    rows = {kind: time_loader(cache, kind, args.batches, args) for kind in ("stems", "magnitudes")}
    n_batches = rows["stems"][2]
    print(f"{len(cache.names('train'))} train tracks, {n_batches} batches per epoch, "
          f"{args.workers} workers, {torch.get_num_threads()} torch threads")
    print(f"{'format':<11} {'loader s/batch':>15} {'epoch s':>9} {'+ |STFT| on CPU s/batch':>24} {'epoch s':>9}")
    for kind, (load, with_stft, _) in rows.items():
        print(f"{kind:<11} {load:15.3f} {load * n_batches:9.1f} {with_stft:24.3f} {with_stft * n_batches:9.1f}")
    ratio = rows["magnitudes"][0] / rows["stems"][0]
    print(f"loader time magnitudes / stems: {ratio:.2f}x")


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
