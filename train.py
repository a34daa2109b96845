"""Train the two-stem separator on the cache written by preprocess.py.

    python train.py --epochs 150
    python train.py --epochs 150 --resume          # continue from checkpoints/last.pt
    python train.py --model bsrnn --epochs 150     # the band-split RNN instead of the Open-Unmix-style model
    python train.py --model bsrnn --mask complex   # band-split RNN with complex masks: it estimates the phase
    python train.py --precision fp32               # float32 throughout, whatever the card
    torchrun --nproc_per_node 4 train.py ...       # DistributedDataParallel, one GPU per process
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from tqdm import tqdm

from formats import checkpoint
from training.batch_fit import GIB, check_batch_fits
from training.augment import parse_augmentations
from formats.cache import StemCache, mixture_and_targets
from data import BackgroundLoader, EpochSampler, StemBatch, TrainChunks, input_statistics
from training.losses import DEFAULT_LOSSES, LOSSES, Targets, mixture_phase_audio
from training.precision import Precision, set_up_precision
from model import bandwidth_bins, build_model, config_mask, count_parameters, takes_complex
from training.schedules import make_scheduler
from training.settings import DEFAULT_SAVE_EPOCHS, build_parser
from utils import (N_FFT, SAMPLE_RATE, STEMS, UserError, istft, machine_description, remove_stale_parts,
                   resolve_device, run_cli, stft, write_text)

def new_model_config(model: str, hidden_size: int | None, nb_layers: int | None, use_mask: bool,
                     bidirectional: bool, bandwidth: float | None, mask: str = "magnitude") -> dict:
    """The build_model config of a new model from the model flags (without umx's input
    statistics); a size flag left out takes the model's own default."""
    if model == "umx":
        if mask != "magnitude":
            raise UserError(f"--mask {mask} applies only to --model bsrnn: umx estimates magnitude masks")
        config = {"hidden_size": hidden_size, "nb_layers": nb_layers, "use_mask": use_mask,
                  "bidirectional": bidirectional,
                  "max_bin": None if bandwidth is None else bandwidth_bins(bandwidth, SAMPLE_RATE, N_FFT)}
    else:
        if not use_mask:
            raise UserError("--no-mask applies only to --model umx: bsrnn's per-band norms discard the input level, "
                            "so it always estimates masks")
        if bandwidth is not None:
            raise UserError("--bandwidth applies only to --model umx: bsrnn covers every bin with its bands")
        config = {"feature_size": hidden_size, "nb_layers": nb_layers, "bidirectional": bidirectional, "mask": mask}
    return {"model": model, **{k: v for k, v in config.items() if v is not None}}


# ------------------------------------------------------------------ one step

def batch_targets(batch: StemBatch | torch.Tensor, device: torch.device,
                  complex_input: bool = False) -> tuple[torch.Tensor, Targets]:
    """Loader batch -> (the model's input (B, C, F, T), Targets of both stems).

    batch is TrainChunks' StemBatch (int16 codes, turned into audio here, on the device) or
    float32 stems (B, sources, C, samples) (validation's whole-track pieces). The input is
    the mixture magnitude, or with complex_input (a complex-mask model) the complex
    mixture STFT."""
    if isinstance(batch, StemBatch):
        batch = batch.stems(device)
    else:
        batch = batch.to(device, non_blocking=True)
    audio = mixture_and_targets(batch)
    spec = stft(audio)  # float32, outside any autocast: complex tensors have no bf16
    mixture = spec[:, 0] if complex_input else spec[:, 0].abs()
    return mixture, Targets(spec[:, 1:].abs(), mixture_spec=spec[:, 0], audio=audio[:, 1:], spectrograms=spec[:, 1:])


def estimate_stems(model: torch.nn.Module, mixture: torch.Tensor, precision: Precision) -> torch.Tensor:
    """mixture (B, C, F, T), the model's input (see batch_targets) -> estimates (B, 2, C, F, T)
    in float32 (magnitudes) or complex64 (a complex-mask model's, which multiplies its masks
    in float32 itself), whatever `precision` the model's forward pass ran in."""
    with precision.autocast(mixture.device.type):
        estimate = model(mixture)
    return estimate if estimate.is_complex() else estimate.float()


def separation_loss(model: torch.nn.Module, mixture: torch.Tensor, targets: Targets, precision: Precision,
                    loss: str = "mse") -> torch.Tensor:
    """The --loss between the model's estimates of both stems and the targets, in float32."""
    return LOSSES[loss].function(estimate_stems(model, mixture, precision), targets)


def probe_step(model: torch.nn.Module, sources: int, seq_dur: float, precision: Precision,
               loss_name: str, device: torch.device) -> Callable[[int], None]:
    """run_step(batch_size): one forward and backward pass of `model` on random excerpts of
    the run's shape (`sources` stems each, as the cache holds), for batch_fit's measurement.
    The model's weights, buffers (BatchNorm's running statistics) and every random stream
    are as they were afterwards, so a run that measures repeats one that does not."""
    samples = int(seq_dur * SAMPLE_RATE)

    def run_step(batch_size: int) -> None:
        saved = {name: value.clone() for name, value in model.state_dict().items()}
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            batch = torch.randn(batch_size, sources, 2, samples, device=device)
            mixture, targets = batch_targets(batch, device, takes_complex(model))
            separation_loss(model, mixture, targets, precision, loss_name).backward()
        model.zero_grad(set_to_none=True)
        model.load_state_dict(saved)

    return run_step


def check_loss(loss: str, mask: str) -> None:
    """A UserError unless --loss `loss` compares the estimates a model with `mask` masks makes.

    A magnitude loss on a complex-mask model would leave the phase its masks set untrained
    (and --phase model, its default output, with it); a complex loss needs complex estimates."""
    if LOSSES[loss].mask != mask:
        raise UserError(f"--loss {loss} compares {LOSSES[loss].mask} estimates: with --mask {mask} use one of "
                        f"{', '.join(name for name, entry in LOSSES.items() if entry.mask == mask)}")


SYNC_STEPS = 50  # train_epoch reads the device back once in this many steps, and at an epoch's last


def train_epoch(model, loader, optimizer, scaler: torch.amp.GradScaler, device: torch.device,
                epoch: int, progress: bool, precision: Precision, loss_name: str = "mse", after_step=lambda: None) -> float:
    """One pass over the loader, calling after_step() after each optimizer step; returns
    the mean training loss over all processes.

    The loop reads nothing back from the device but every SYNC_STEPS steps (the progress
    bar's loss and the check for a non-finite loss), so the GPU is never left waiting on the
    host within them; a non-finite loss is reported with the step it first appeared at."""
    model.train()
    complex_input = takes_complex(model)
    total, count = torch.zeros((), device=device), 0
    first_bad_step, first_bad_loss = torch.full((), -1, device=device), torch.zeros((), device=device)
    bar = tqdm(loader, desc=f"epoch {epoch}", leave=False, disable=not progress)
    for step, batch in enumerate(bar):
        mixture, targets = batch_targets(batch, device, complex_input)
        loss = separation_loss(model, mixture, targets, precision, loss_name)
        first_bad = (first_bad_step < 0) & ~torch.isfinite(loss)
        first_bad_step = torch.where(first_bad, step, first_bad_step)
        first_bad_loss = torch.where(first_bad, loss.detach(), first_bad_loss)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        after_step()
        total += loss.detach() * len(batch)
        count += len(batch)
        if (step + 1) % SYNC_STEPS == 0 or step + 1 == len(loader):
            check_finite(first_bad_step, first_bad_loss, epoch)
            if progress:
                bar.set_postfix(loss=f"{total.item() / count:.4g}")
    return all_mean(total, count)


def check_finite(first_bad_step: torch.Tensor, first_bad_loss: torch.Tensor, epoch: int) -> None:
    """A UserError if a training step's loss was not finite (first_bad_step >= 0, its loss
    first_bad_loss)."""
    bad = int(first_bad_step)
    if bad >= 0:
        raise UserError(f"loss became {first_bad_loss.item()} at epoch {epoch}, batch {bad}; the last good "
                        "checkpoint is kept; try a lower --lr")


@dataclass(frozen=True)
class Validation:
    """One epoch's validation: the mean --loss, and per stem the median over tracks of each
    track's SDR (dB, whole track) of what inference.py outputs by default for the model:
    with the mixture phase (--phase mixture) for a magnitude model, the ISTFT of its own
    estimate (--phase model) for a complex-mask one. best.pt is the epoch whose mean of the
    two stems' SDRs is highest."""
    loss: float
    sdr: dict[str, float]


def best_epoch(history: Sequence[dict]) -> dict:
    """The history row of best.pt: the highest validation SDR (mean of the stems); rows
    from before validation SDR was recorded rank last, by their validation loss."""
    def rank(row: dict) -> tuple[float, float]:
        sdrs = [row[f"valid_sdr_{stem}"] for stem in STEMS if f"valid_sdr_{stem}" in row]
        return (float(np.mean(sdrs)) if sdrs else -math.inf, -row["valid_loss"])
    return max(history, key=rank)


@torch.no_grad()
def validate(model, cache: StemCache, names: Sequence[str], device: torch.device, precision: Precision,
             chunk_seconds: float = 60.0, loss_name: str = "mse") -> Validation:
    """Loss and SDR over whole validation tracks (no augmentation), fed in chunks so memory
    does not grow with track length; the loss is weighted by each chunk's frame count, the
    SDR sums each track's signal and error energies over its chunks. Under torchrun each
    process takes every world_size-th track."""
    model.eval()
    complex_input = takes_complex(model)
    rank, world = rank_and_world()
    total, frames = torch.zeros((), device=device), 0
    chunk = int(chunk_seconds * SAMPLE_RATE)
    track_sdrs = []  # (stems,) per track
    for name in names[rank::world]:
        stems = cache.stems(name)
        signal = error = torch.zeros(len(STEMS), device=device, dtype=torch.float64)
        for start in range(0, stems.shape[-1], chunk):
            piece = torch.from_numpy(np.array(stems[:, :, start:start + chunk]))[None]
            mixture, targets = batch_targets(piece, device, complex_input)
            estimate = estimate_stems(model, mixture, precision)
            n = mixture.shape[-1]
            total += LOSSES[loss_name].function(estimate, targets) * n
            frames += n
            audio = (istft(estimate, piece.shape[-1]) if complex_input
                     else mixture_phase_audio(estimate, targets.mixture_spec, piece.shape[-1]))
            signal = signal + targets.audio.double().pow(2).sum((0, 2, 3))
            error = error + (targets.audio - audio).double().pow(2).sum((0, 2, 3))
        track_sdrs.append((10 * torch.log10((signal + 1e-8) / (error + 1e-8))).tolist())
    if world > 1:
        gathered: list[list] = [[] for _ in range(world)]
        dist.all_gather_object(gathered, track_sdrs)
        track_sdrs = [sdr for part in gathered for sdr in part]
    medians = np.median(np.array(track_sdrs), axis=0)
    return Validation(all_mean(total, frames), {stem: float(medians[k]) for k, stem in enumerate(STEMS)})


# ------------------------------------------------------------- distributed

def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_mean(total: torch.Tensor, count: int) -> float:
    """total / count summed over all processes (just the local ratio without torchrun)."""
    if rank_and_world()[1] > 1:
        both = torch.stack([total.double(), torch.tensor(float(count), device=total.device, dtype=torch.float64)])
        dist.all_reduce(both)
        total, count = both[0], both[1].item()
    return total.item() / max(count, 1)


def setup_distributed(device_name: str) -> torch.device:
    """Under torchrun (WORLD_SIZE > 1) join the process group, NCCL on GPUs and gloo on
    CPUs, and give each process its own GPU; otherwise just resolve the device."""
    if int(os.environ.get("WORLD_SIZE", 1)) == 1:
        return resolve_device(device_name)
    device = resolve_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


# --------------------------------------------------------------------- run

def make_loader(cache: StemCache, seq_dur: float, samples_per_track: int,
                augmentations: Sequence[str], batch_size: int, workers: int, seed: int, device: torch.device,
                progress=lambda x, **_: x, multiprocessing_context: str | None = None):
    """The training loader and its EpochSampler: with workers 0 a
    data.BackgroundLoader (one thread of this process fills the next batch while the device
    trains), otherwise a DataLoader with `workers` processes. multiprocessing_context
    ('fork', 'spawn', ...; None: the platform's default) is how workers start; it needs
    workers > 0. Stem batches are data.StemBatch, page-locked when `device` is a GPU; for a
    CPU `device` the background thread also makes their audio."""
    names = cache.names("train")
    dataset = TrainChunks(cache, names, int(seq_dur * SAMPLE_RATE), samples_per_track, augmentations, seed, progress)
    rank, world = rank_and_world()
    if batch_size % world:
        raise UserError(f"--batch-size {batch_size} must be divisible by the {world} torchrun processes")
    sampler = EpochSampler(len(dataset), seed, rank, world)
    pin = device.type == "cuda"
    if workers == 0:
        return BackgroundLoader(dataset, sampler, batch_size // world, pin, make_audio=device.type == "cpu"), sampler
    loader = DataLoader(dataset, batch_size=batch_size // world, sampler=sampler, num_workers=workers,
                        collate_fn=StemBatch.collate, pin_memory=pin,
                        persistent_workers=workers > 0, drop_last=False, multiprocessing_context=multiprocessing_context)
    return loader, sampler


def write_log(path: Path, history: list[dict]) -> None:
    """The loss history as CSV, rewritten whole each epoch."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    write_text(path, out.getvalue())


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser(__doc__).parse_args(argv)
    device = setup_distributed(args.device)
    try:
        run(args, device)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run(args: argparse.Namespace, device: torch.device) -> None:
    """The training run; under torchrun only rank 0 prints and writes checkpoints."""
    is_main = rank_and_world()[0] == 0
    log = print if is_main else (lambda *a, **k: None)
    progress_bar = tqdm if is_main else (lambda x, **_: x)  # one progress bar per run, not per torchrun process
    precision = set_up_precision(args.precision, device)
    args.precision = precision.name  # train_args records what ran, not "auto"
    save_epochs = resolve_save_epochs(args.save_epochs, args.epochs)
    config = new_model_config(args.model, args.hidden_size, args.nb_layers, not args.no_mask, not args.unidirectional,
                              args.bandwidth, args.mask)
    args.loss = args.loss or DEFAULT_LOSSES[args.mask]  # train_args records the loss used
    check_loss(args.loss, args.mask)
    augmentations = parse_augmentations(args.augment)
    cache = StemCache(args.cache)
    valid_names = cache.names("valid")
    if not valid_names:
        raise UserError(f"the cache {args.cache} holds no validation tracks: preprocess the 'valid' split too")
    ckpt_dir = Path(args.checkpoint_dir)
    if is_main:
        remove_stale_parts(ckpt_dir)
    torch.manual_seed(args.seed)

    resume_state = None
    if args.resume:
        model, resume_state = checkpoint.load_for_resume(ckpt_dir / "last.pt")
        stats = resume_state["input_stats"]
        resumed_schedule = resume_state.get("train_args", {}).get("lr_schedule", "plateau")
        if resumed_schedule != args.lr_schedule:
            raise UserError(f"{ckpt_dir / 'last.pt'} was trained with --lr-schedule {resumed_schedule}: "
                            f"resume it with the same schedule")
        resumed_mask = config_mask(resume_state["model_config"])
        if resumed_mask != args.mask:
            raise UserError(f"{ckpt_dir / 'last.pt'} has {resumed_mask} masks: resume it with --mask {resumed_mask}")
        if resume_state["epoch"] >= args.epochs:
            raise UserError(f"{ckpt_dir / 'last.pt'} is already at epoch {resume_state['epoch']}: "
                            f"ask for more --epochs than that to continue")
    elif args.model == "umx":
        mean, std = input_statistics(cache, cache.names("train"), progress=progress_bar)
        stats = {"mean": mean.tolist(), "std": std.tolist()}
        model = build_model({**config, "input_mean": (-mean).tolist(), "input_scale": (1.0 / std).tolist()})
    else:  # bsrnn normalises each band itself: no training-set statistics
        stats = None
        model = build_model(config)
    model.to(device)
    log(f"model: {count_parameters(model):,} parameters ({json.dumps(model.config)})")
    log(f"precision: {precision.name} ({precision.reason})")

    # Fused on CUDA: one kernel for every parameter, and under fp16 the GradScaler hands it the
    # found-inf flag on the device instead of reading it back at every step.
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay,
                                 fused=device.type == "cuda")
    scaler = precision.grad_scaler(device.type)
    adam_bytes = 2 * sum(p.numel() * p.element_size() for p in model.parameters())  # its two moments
    process_batch = args.batch_size // rank_and_world()[1]
    step_memory = check_batch_fits(device, process_batch, probe_step(model, len(cache.sources),
                                                                     args.seq_dur, precision, args.loss, device),
                                   adam_bytes)
    if step_memory is not None:
        log(f"memory: about {step_memory.at(process_batch) / GIB:.1f} GiB per step "
            f"({step_memory.per_excerpt / GIB:.2f} GiB per excerpt)")
    history: list[dict] = []
    start_epoch = 1
    if resume_state is not None:
        history = resume_state["history"]
        start_epoch = resume_state["epoch"] + 1
        log(f"resuming from {ckpt_dir / 'last.pt'} at epoch {start_epoch}")

    loader, sampler = make_loader(cache, args.seq_dur, args.samples_per_track, augmentations,
                                  args.batch_size, args.workers, args.seed, device,
                                  progress=progress_bar)
    scheduler = make_scheduler(args.lr_schedule, optimizer, args.epochs * len(loader), args.lr_decay_patience,
                               args.lr_decay_gamma)
    per_step = args.lr_schedule != "plateau"
    if resume_state is not None:  # after making the scheduler, which sets the lr of its first step
        optimizer.load_state_dict(resume_state["optimizer_state"])
        scheduler.load_state_dict(resume_state["scheduler_state"])
        if "scaler_state" in resume_state:  # an fp16 run's loss scale, so a resumed run repeats an unbroken one
            scaler.load_state_dict(resume_state["scaler_state"])
    train_args = {k: v for k, v in vars(args).items() if k not in ("resume", "debug")}
    train_args["precision_reason"] = precision.reason
    net = model
    if rank_and_world()[1] > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    for epoch in range(start_epoch, args.epochs + 1):
        started = time.perf_counter()
        torch.manual_seed(args.seed * 100_003 + epoch)  # dropout draws repeat on resume
        sampler.set_epoch(epoch)
        train_loss = train_epoch(net, loader, optimizer, scaler, device, epoch,
                                 progress=is_main, precision=precision, loss_name=args.loss,
                                 after_step=scheduler.step if per_step else lambda: None)
        validation = validate(net, cache, valid_names, device, precision, loss_name=args.loss)
        valid_loss = validation.loss
        if not np.isfinite(valid_loss):  # never save weights that give a non-finite loss
            raise UserError(f"validation loss became {valid_loss} at epoch {epoch}; the last good checkpoint "
                            "is kept; try a lower --lr")
        if not per_step:
            scheduler.step(valid_loss)
        history.append({"epoch": epoch, "train_loss": train_loss, "valid_loss": valid_loss,
                        **{f"valid_sdr_{stem}": sdr for stem, sdr in validation.sdr.items()},
                        "lr": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - started})
        best = best_epoch(history)
        if not is_main:
            continue
        facts = {"input_stats": stats, "epoch": epoch, "history": history, "best_epoch": best["epoch"],
                 "train_args": train_args, "machine": machine_description(device, rank_and_world()[1])}
        if best["epoch"] == epoch:
            checkpoint.save(ckpt_dir / "best.pt", checkpoint.separator_state(model, **facts))
        if epoch in save_epochs:
            checkpoint.save(ckpt_dir / f"epoch_{epoch:03d}.pt", checkpoint.separator_state(model, **facts))
        checkpoint.save(ckpt_dir / "last.pt", checkpoint.separator_state(
            model, **facts, optimizer_state=optimizer.state_dict(), scheduler_state=scheduler.state_dict(),
            scaler_state=scaler.state_dict()))
        write_log(ckpt_dir / "log.csv", history)
        print(f"epoch {epoch:3d}  train {train_loss:.5f}  valid {valid_loss:.5f}  SDR "
              f"{' / '.join(f'{sdr:.2f}' for sdr in validation.sdr.values())} dB  best epoch {best['epoch']}  "
              f"{history[-1]['seconds']:.1f}s")


def resolve_save_epochs(requested: Sequence[int] | None, epochs: int) -> set[int]:
    """Explicit save epochs past --epochs are a mistake; the defaults just shrink."""
    if requested is None:
        return {e for e in DEFAULT_SAVE_EPOCHS if e <= epochs}
    late = [e for e in requested if e > epochs or e < 1]
    if late:
        raise UserError(f"--save-epochs {' '.join(map(str, late))} outside 1..--epochs {epochs}")
    return set(requested)


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
