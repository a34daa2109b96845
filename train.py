"""Train the two-stem separator on the cache written by preprocess.py.

    python train.py --epochs 150
    python train.py --epochs 150 --resume          # continue from checkpoints/last.pt
    python train.py --model bsrnn --epochs 150     # the band-split RNN instead of the Open-Unmix-style model
    python train.py --model bsrnn --mask complex   # band-split RNN with complex masks: it estimates the phase
    python train.py --precision fp32               # float32 throughout, whatever the card
    torchrun --nproc_per_node 4 train.py ...       # DistributedDataParallel, one GPU per process
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from data import input_statistics
from formats import checkpoint
from formats.cache import StemCache
from model import build_model, count_parameters
from training.batch_fit import GIB, check_batch_fits
from training.distributed import rank_and_world, setup_distributed
from training.loader import make_loader
from training.loop import probe_step, train_epoch
from training.schedules import make_scheduler
from training.settings import TrainSettings, build_parser, check_resumable, resolve_settings
from training.validation import best_epoch, validate
from utils import UserError, machine_description, remove_stale_parts, run_cli, write_text


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser(__doc__).parse_args(argv)
    device = setup_distributed(args.device)
    try:
        run(resolve_settings(args, device, world=rank_and_world()[1]), device)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run(settings: TrainSettings, device: torch.device) -> None:
    """The training run; under torchrun only rank 0 prints and writes checkpoints."""
    rank, world = rank_and_world()
    is_main = rank == 0
    log = print if is_main else (lambda *a, **k: None)
    progress_bar = tqdm if is_main else (lambda x, **_: x)  # one progress bar per run, not per torchrun process
    cache = StemCache(settings.cache)
    valid_names = cache.names("valid")
    if not valid_names:
        raise UserError(f"the cache {settings.cache} holds no validation tracks: preprocess the 'valid' split too")
    ckpt_dir = Path(settings.checkpoint_dir)
    if is_main:
        remove_stale_parts(ckpt_dir)
    torch.manual_seed(settings.seed)

    # The model: resumed from last.pt, or new (umx's input scaler from the training set's statistics;
    # bsrnn normalises each band itself).
    resume_state = None
    if settings.resume:
        model, resume_state = checkpoint.load_for_resume(ckpt_dir / "last.pt")
        check_resumable(settings, resume_state, ckpt_dir / "last.pt")
        stats = resume_state["input_stats"]
    elif settings.model == "umx":
        mean, std = input_statistics(cache, cache.names("train"), progress=progress_bar)
        stats = {"mean": mean.tolist(), "std": std.tolist()}
        model = build_model({**settings.model_config, "input_mean": (-mean).tolist(),
                             "input_scale": (1.0 / std).tolist()})
    else:
        stats = None
        model = build_model(settings.model_config)
    model.to(device)
    precision = settings.precision
    log(f"model: {count_parameters(model):,} parameters ({json.dumps(model.config)})")
    log(f"precision: {precision.name} ({precision.reason})")

    # Fused on CUDA: one kernel for every parameter, and under fp16 the GradScaler hands it the
    # found-inf flag on the device instead of reading it back at every step.
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay,
                                 fused=device.type == "cuda")
    scaler = precision.grad_scaler(device.type)
    adam_bytes = 2 * sum(p.numel() * p.element_size() for p in model.parameters())  # its two moments
    process_batch = settings.batch_size // world
    run_step = probe_step(model, len(cache.sources), settings.seq_dur, precision, settings.loss, device)
    step_memory = check_batch_fits(device, process_batch, run_step, adam_bytes)
    if step_memory is not None:
        log(f"memory: about {step_memory.at(process_batch) / GIB:.1f} GiB per step "
            f"({step_memory.per_excerpt / GIB:.2f} GiB per excerpt)")
    history: list[dict] = [] if resume_state is None else resume_state["history"]
    start_epoch = 1 if resume_state is None else resume_state["epoch"] + 1
    if resume_state is not None:
        log(f"resuming from {ckpt_dir / 'last.pt'} at epoch {start_epoch}")

    loader, sampler = make_loader(cache, settings.seq_dur, settings.samples_per_track, settings.augmentations,
                                  settings.batch_size, settings.workers, settings.seed, device, progress=progress_bar)
    scheduler = make_scheduler(settings.lr_schedule, optimizer, settings.epochs * len(loader),
                               settings.lr_decay_patience, settings.lr_decay_gamma)
    per_step = settings.lr_schedule != "plateau"
    if resume_state is not None:  # after making the scheduler, which sets the lr of its first step
        optimizer.load_state_dict(resume_state["optimizer_state"])
        scheduler.load_state_dict(resume_state["scheduler_state"])
        if "scaler_state" in resume_state:  # an fp16 run's loss scale, so a resumed run repeats an unbroken one
            scaler.load_state_dict(resume_state["scaler_state"])
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    run_facts = {"input_stats": stats, "train_args": settings.train_args(), "machine": machine_description(device, world)}

    for epoch in range(start_epoch, settings.epochs + 1):
        started = time.perf_counter()
        torch.manual_seed(settings.seed * 100_003 + epoch)  # dropout draws repeat on resume
        sampler.set_epoch(epoch)
        train_loss = train_epoch(net, loader, optimizer, scaler, device, epoch, progress=is_main, precision=precision,
                                 loss_name=settings.loss, after_step=scheduler.step if per_step else lambda: None)
        validation = validate(model, cache, valid_names, device, settings.loss)
        if not np.isfinite(validation.loss):  # never save weights that give a non-finite loss
            raise UserError(f"validation loss became {validation.loss} at epoch {epoch}; the last good checkpoint "
                            "is kept; try a lower --lr")
        if not per_step:
            scheduler.step(validation.loss)
        history.append({"epoch": epoch, "train_loss": train_loss, "valid_loss": validation.loss,
                        **{f"valid_sdr_{stem}": sdr for stem, sdr in validation.sdr.items()},
                        "lr": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - started})
        best = best_epoch(history)
        if not is_main:
            continue
        facts = {**run_facts, "epoch": epoch, "history": history, "best_epoch": best["epoch"]}
        if best["epoch"] == epoch:
            checkpoint.save(ckpt_dir / "best.pt", checkpoint.separator_state(model, **facts))
        if epoch in settings.kept_epochs:
            checkpoint.save(ckpt_dir / f"epoch_{epoch:03d}.pt", checkpoint.separator_state(model, **facts))
        checkpoint.save(ckpt_dir / "last.pt", checkpoint.separator_state(
            model, **facts, optimizer_state=optimizer.state_dict(), scheduler_state=scheduler.state_dict(),
            scaler_state=scaler.state_dict()))
        write_log(ckpt_dir / "log.csv", history)
        print(f"epoch {epoch:3d}  train {train_loss:.5f}  valid {validation.loss:.5f}  SDR "
              f"{' / '.join(f'{sdr:.2f}' for sdr in validation.sdr.values())} dB  best epoch {best['epoch']}  "
              f"{history[-1]['seconds']:.1f}s")


def write_log(path: Path, history: list[dict]) -> None:
    """The loss history as CSV, rewritten whole each epoch."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    write_text(path, out.getvalue())


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
