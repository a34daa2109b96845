"""Training throughput in excerpts per second: (a) the data loader alone, (b) the model
step alone on one batch already on the device, with its time per step and the peak memory
it takes, (c) both together, side by side in one run. (c) / (b)
near 1 means the device never waits for data. Then (d) the per-epoch validation pass
(training.validation.validate over the cache's validation tracks) in seconds per second of audio, with
a full-scale epoch projected from it and (c).

    python -m bench.train_throughput --cache cache --steps 10
    python -m bench.train_throughput --cache cache --device cuda --steps 50
    python -m bench.train_throughput --cache cache --model bsrnn --steps 4
    python -m bench.train_throughput --cache cache --model bsrnn --mask complex --device cuda --no-valid
    python -m bench.train_throughput --cache cache --device cuda --precision fp32

Peak memory: on CUDA what torch allocated on the device during (b); on a CPU this
process's peak resident set so far (the loader's batches, with --workers 0, included).

A cache smaller than the measurements need is read again, epoch after epoch.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from bench.common import batches_forever
from formats.cache import StemCache
from model import MASKS, MODELS, build_model, count_parameters, takes_complex
from training.augment import AUGMENTATIONS
from training.loader import make_loader
from training.loop import batch_targets, separation_loss
from training.losses import DEFAULT_LOSSES, LOSSES
from training.precision import PRECISIONS, Precision, set_up_precision
from training.settings import check_loss, new_model_config
from training.validation import validate
from utils import SAMPLE_RATE, HelpFormatter, resolve_device, run_cli

# Full scale: 86 training tracks x 64 excerpts per epoch; 14 validation tracks, whose length
# is assumed to be MUSDB18's mean (150 tracks, about 10 hours: ~240 s each).
FULL_TRAIN_TRACKS, FULL_VALID_TRACKS, MEAN_TRACK_SECONDS = 86, 14, 240.0


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step(model, optimizer, scaler: torch.amp.GradScaler, batch: torch.Tensor, device: torch.device,
         precision: Precision, loss_name: str) -> None:
    """One training step as training.loop.train_epoch takes it; batch (B, sources, channels, samples)."""
    mixture, targets = batch_targets(batch, device, takes_complex(model))
    loss = separation_loss(model, mixture, targets, precision, loss_name)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mib(device: torch.device) -> float:
    """MiB: on CUDA the most torch allocated on the device since reset_peak_memory; on a
    CPU this process's peak resident set since it started (Linux reports it in KiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rate(fn, steps: int, batch_size: int, device: torch.device, warmup: int = 2) -> float:
    """Excerpts per second of fn() over `steps` calls after `warmup` warm-up calls."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        fn()
    synchronize(device)
    return steps * batch_size / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--cache", default="cache", help="cache written by preprocess.py")
    p.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    p.add_argument("--batch-size", type=int, default=16, help="batch size")
    p.add_argument("--seq-dur", type=float, default=6.0, help="excerpt seconds")
    p.add_argument("--model", choices=list(MODELS), default="umx", help="the network to time")
    p.add_argument("--hidden-size", type=int, default=None, help="model width (default: the model's own)")
    p.add_argument("--nb-layers", type=int, default=None, help="model depth, as train.py's (default: the model's own)")
    p.add_argument("--mask", choices=list(MASKS), default="magnitude", help="as train.py's: complex needs --model bsrnn")
    p.add_argument("--loss", choices=list(LOSSES), default=None,
                   help="as train.py's (default: the mask's own, " + ", ".join(
                       f"{loss} for {mask}" for mask, loss in DEFAULT_LOSSES.items()) + ")")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="as train.py's: auto by the card (bf16 on 8.0+, fp16 on 7.x, fp32 before and on the CPU)")
    p.add_argument("--samples-per-track", type=int, default=64, help="excerpts per track per epoch (projection)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls before each measurement")
    p.add_argument("--no-valid", action="store_true", help="skip (d), the validation pass")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    precision = set_up_precision(args.precision, device)
    loss_name = args.loss or DEFAULT_LOSSES[args.mask]
    check_loss(loss_name, args.mask)
    cache = StemCache(args.cache)
    config = new_model_config(args.model, args.hidden_size, args.nb_layers, True, True, None, mask=args.mask)
    model = build_model(config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = precision.grad_scaler(device.type)
    print(f"device {device}, {precision.name} ({precision.reason}), {torch.get_num_threads()} torch threads, {args.workers} workers, "
          f"model {args.model} ({args.mask} masks, loss {loss_name}) {count_parameters(model):,} parameters, "
          f"batch {args.batch_size} x {args.seq_dur:g} s")
    print(f"{'format':<11} {'(a) loader':>11} {'(b) step':>10} {'(c) both':>10} {'(c)/(b)':>8}   excerpts/s"
          f"   {'(b) ms/step':>11} {'peak MiB':>9}")
    loader, sampler = make_loader(cache, args.seq_dur, 64, AUGMENTATIONS, args.batch_size, args.workers, seed=0,
                                  device=device)
    batches = batches_forever(loader, sampler)
    loader_rate = rate(lambda: next(batches), args.steps, args.batch_size, device, args.warmup)
    fixed = next(batches).stems(device)  # on the device once: (b) times the step alone
    reset_peak_memory(device)
    step_rate = rate(lambda: step(model, optimizer, scaler, fixed, device, precision, loss_name),
                     args.steps, args.batch_size, device, args.warmup)
    peak = peak_memory_mib(device)
    both_rate = rate(lambda: step(model, optimizer, scaler, next(batches), device, precision, loss_name),
                     args.steps, args.batch_size, device, args.warmup)
    print(f"{'stems':<11} {loader_rate:11.1f} {step_rate:10.2f} {both_rate:10.2f} {both_rate / step_rate:8.2f}"
          f"{'':13} {1000 * args.batch_size / step_rate:11.1f} {peak:9.0f}", flush=True)
    if args.no_valid:
        return
    names = cache.names("valid")
    if not names:
        print("(d) validation: skipped, the cache holds no validation tracks")
        return
    audio_seconds = sum(cache.stems(n).shape[-1] for n in names) / SAMPLE_RATE
    validate(model, cache, names[:1], device, loss_name)  # warm-up
    synchronize(device)
    started = time.perf_counter()
    validate(model, cache, names, device, loss_name)
    synchronize(device)
    per_audio_second = (time.perf_counter() - started) / audio_seconds
    epoch = FULL_TRAIN_TRACKS * args.samples_per_track / both_rate
    valid = FULL_VALID_TRACKS * MEAN_TRACK_SECONDS * per_audio_second
    print(f"(d) validation: {len(names)} tracks, {audio_seconds:.0f} s of audio in "
          f"{per_audio_second * audio_seconds:.1f} s = {per_audio_second * 1000:.1f} ms per second of audio")
    print(f"    PROJECTION, full scale: training epoch {FULL_TRAIN_TRACKS} x {args.samples_per_track} excerpts at "
          f"(c) {both_rate:.2f}/s = {epoch:.0f} s; validation {FULL_VALID_TRACKS} x "
          f"~{MEAN_TRACK_SECONDS:.0f} s = {valid:.0f} s ({100 * valid / epoch:.1f}% of the training epoch); 150 epochs = "
          f"{150 * (epoch + valid) / 3600:.1f} h")


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
