"""Learning-rate schedules, by name (train.py --lr-schedule): the registry `LR_SCHEDULES`
feeds the flag, its help text and the report. vocoder.py's decay is `cosine_factor` too."""

from __future__ import annotations

import math

import torch

# Share of all steps spent warming the cosine schedule up from 0: the first Adam steps,
# taken before its moment estimates settle, are then small.
WARMUP_FRACTION = 0.02
LR_SCHEDULES = {
    "plateau": "--lr until the validation loss stops falling for --lr-decay-patience epochs, then x "
               "--lr-decay-gamma (Open-Unmix's schedule)",
    "cosine": f"a linear warm-up over {WARMUP_FRACTION:.0%} of all steps, then half a cosine from --lr to 0 at the "
              "last step of --epochs (resume with the same --epochs to continue the same curve)",
}


def make_scheduler(name: str, optimizer: torch.optim.Optimizer, total_steps: int, patience: int, gamma: float):
    """The --lr-schedule's scheduler. "cosine" steps after every batch, "plateau" once per
    epoch on the validation loss (train.run does both calls)."""
    if name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=gamma, patience=patience)
    warmup = max(1, round(WARMUP_FRACTION * total_steps))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: cosine_factor(step, total_steps, warmup))


def cosine_factor(step: int, total_steps: int, warmup: int = 0) -> float:
    """The cosine schedule's share of the peak learning rate at `step` (from 0): a linear
    rise over the first `warmup` steps, then half a cosine from 1 down to 0 at `total_steps`."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total_steps - warmup))))
