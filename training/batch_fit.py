"""Whether a training batch fits the GPU, measured on the card itself before training starts.

A training step's memory grows linearly with the batch: a fixed part (weights, gradients,
the optimizer's moments, cuDNN's workspace) plus a part per excerpt (the activations saved for
backward). Two probe steps, at batches of one and two excerpts, give both parts on the very
card, cuDNN version and precision of the run, where a table measured elsewhere could not. A
batch that does not fit stops the run with one line naming the largest that does, instead of
an out-of-memory error some minutes into the first epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from utils import UserError

# The share of the card's memory a run may plan for: the allocator's fragmentation and the
# CUDA context take the rest.
USABLE_SHARE = 0.9
GIB = 2 ** 30


@dataclass(frozen=True)
class StepMemory:
    """A training step's peak memory on the device: fixed + per_excerpt * batch (bytes)."""
    fixed: int
    per_excerpt: int

    def at(self, batch_size: int) -> int:
        return self.fixed + self.per_excerpt * batch_size

    def largest_batch(self, available: int) -> int:
        return max(0, (available - self.fixed) // max(self.per_excerpt, 1))


def peak_memory(device: torch.device, run_step: Callable[[], None]) -> int:
    """The device's peak allocated bytes while run_step() runs."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    run_step()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device)


def measure_step_memory(device: torch.device, run_step: Callable[[int], None], optimizer_bytes: int) -> StepMemory:
    """StepMemory from run_step(1) and run_step(2), one forward and backward pass each at that
    batch size; optimizer_bytes: what the optimizer's state will add once it has stepped."""
    one, two = (peak_memory(device, lambda b=b: run_step(b)) for b in (1, 2))
    per_excerpt = max(two - one, 0)
    return StepMemory(fixed=one - per_excerpt + optimizer_bytes, per_excerpt=per_excerpt)


def check_batch_fits(device: torch.device, batch_size: int, run_step: Callable[[int], None],
                     optimizer_bytes: int) -> StepMemory | None:
    """A UserError naming the largest batch that fits when `batch_size` excerpts would not fit
    the CUDA device's memory; the measured StepMemory when they do; None off CUDA."""
    if device.type != "cuda":
        return None
    memory = measure_step_memory(device, run_step, optimizer_bytes)
    total = torch.cuda.get_device_properties(device).total_memory
    available = int(USABLE_SHARE * total)
    if memory.at(batch_size) > available:
        largest = memory.largest_batch(available)
        fits = (f"--batch-size {largest} fits" if largest else
                "not even one excerpt fits: use a shorter --seq-dur or a smaller model")
        raise UserError(f"--batch-size {batch_size} needs about {memory.at(batch_size) / GIB:.1f} GiB on "
                        f"{torch.cuda.get_device_name(device)} ({total / GIB:.1f} GiB, about "
                        f"{available / GIB:.1f} GiB usable; {memory.per_excerpt / GIB:.2f} GiB per excerpt): "
                        f"{fits}")
    return memory
