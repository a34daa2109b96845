"""One training step and one epoch of them: a loader batch turned into the model's input
and the targets, the estimates under the run's precision, the --loss, the optimizer step;
and the probe step batch_fit measures memory with."""

from __future__ import annotations

from typing import Callable

import torch
from tqdm import tqdm

from data import StemBatch
from formats.cache import mixture_and_targets
from model import takes_complex
from training.distributed import all_mean
from training.losses import LOSSES, Targets
from training.precision import Precision
from utils import SAMPLE_RATE, UserError, stft


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
    return mixture, Targets(spec[:, 1:].abs(), audio=audio[:, 1:], spectrograms=spec[:, 1:])


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


def probe_step(model: torch.nn.Module, sources: int, seq_dur: float, precision: Precision, loss_name: str,
               device: torch.device) -> Callable[[int], None]:
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


SYNC_STEPS = 50  # train_epoch reads the device back once in this many steps, and at an epoch's last


def train_epoch(model: torch.nn.Module, loader, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                device: torch.device, epoch: int, progress: bool, precision: Precision, loss_name: str = "mse",
                after_step: Callable[[], None] = lambda: None) -> float:
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
