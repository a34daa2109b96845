"""Training precision: which one `--precision auto` picks on which device, and the autocast
and gradient scaler that go with it. One frozen `Precision` value is resolved once from the
flag and travels whole through training, validation and the benchmarks.

What auto picks, by CUDA compute capability:
    >= 8.0  (A100, H100, RTX 30/40)  bf16 autocast: native bf16 tensor cores, float32's range,
                                     so no gradient scaler
    7.x     (V100, T4, RTX 20)       fp16 autocast + GradScaler: fp16 tensor cores; these cards
                                     have no bf16 hardware, and torch emulates it there
                                     (torch.cuda.is_bf16_supported() is True anyway), slower
                                     than float32
    < 7.0   (GTX 10 series, P100)    fp32: no tensor cores, and fp16 arithmetic on consumer
                                     Pascal runs at a small fraction of fp32's rate
    CPU                              fp32: CPU autocast buys little for LSTMs, which run in
                                     float32 anyway (below)

The LSTMs (model.lstm_forward) run in float32 under bf16, whose 8-bit mantissa would round a
recurrence step after step, and on the CPU (oneDNN has no fp16 LSTM). Under fp16 on CUDA they
run in fp16 through cuDNN, autocast's own choice and the tensor-core path on a T4 or V100:
fp16 carries the same 10-bit mantissa as the TF32 that float32 LSTMs use on Ampere, its
narrow range is what the GradScaler guards for the gradients, and the LSTM's activations are
bounded by its sigmoid and tanh gates.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Precision:
    """A resolved --precision: "fp32", "bf16" or "fp16", and why it was chosen."""
    name: str
    reason: str

    def __post_init__(self):
        if self.name not in _AUTOCAST_DTYPES and self.name != "fp32":
            raise ValueError(f"unknown precision {self.name!r}")

    def autocast(self, device_type: str) -> contextlib.AbstractContextManager:
        """The forward pass's autocast on `device_type` ("cuda" or "cpu"); off under fp32."""
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type, dtype=_AUTOCAST_DTYPES[self.name])

    @property
    def scales_gradients(self) -> bool:
        """fp16's gradients would underflow unscaled; bf16 has float32's range."""
        return self.name == "fp16"

    def grad_scaler(self, device_type: str) -> torch.amp.GradScaler:
        """A GradScaler that scales the loss under fp16; a pass-through (enabled=False)
        under fp32 and bf16."""
        return torch.amp.GradScaler(device_type, enabled=self.scales_gradients)


def cuda_capability(device: torch.device) -> tuple[int, int]:
    """The CUDA device's compute capability (major, minor); its own function so that tests
    can stand in for each card class."""
    return torch.cuda.get_device_capability(device)


def resolve_precision(requested: str, device: torch.device) -> Precision:
    """--precision `requested` on `device` -> the Precision to train with (see the module's
    table for "auto"). An explicit choice is kept, with a reason that says when it runs slow."""
    if requested not in PRECISIONS:
        raise ValueError(f"unknown precision {requested!r}: one of {', '.join(PRECISIONS)}")
    if device.type != "cuda":
        if requested == "auto":
            return Precision("fp32", f"auto on {device.type}: float32")
        return Precision(requested, f"asked for on {device.type}")
    major, minor = cuda_capability(device)
    card = f"compute capability {major}.{minor}"
    if requested == "auto":
        if major >= 8:
            return Precision("bf16", f"auto on {card}: native bf16 tensor cores")
        if major == 7:
            return Precision("fp16", f"auto on {card}: fp16 tensor cores, no bf16 hardware")
        return Precision("fp32", f"auto on {card}: no tensor cores, slow fp16")
    if requested == "bf16" and major < 8:
        return Precision("bf16", f"asked for on {card}, which emulates bf16: slower than fp32")
    if requested == "fp16" and major < 7:
        return Precision("fp16", f"asked for on {card}, which has no tensor cores: slower than fp32")
    return Precision(requested, f"asked for on {card}")


def set_up_precision(requested: str, device: torch.device) -> Precision:
    """resolve_precision, and on CUDA lets float32 matmuls use TF32 tensor cores.

    TF32 because the LSTMs run in float32 under bf16 (model.lstm_forward), as does everything
    under fp32: on Ampere and later, full-float32 matmuls run several times slower than TF32
    ones, whose 10-bit mantissa is still 3 bits more than bf16's and keeps float32's range and
    accumulation. cuDNN's LSTM and convolutions already use TF32 by torch's default
    (torch.backends.cudnn.allow_tf32); this covers the Linear layers' matmuls. Cards before
    Ampere ignore it. The setting is process-wide, hence only on CUDA."""
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")
    return resolve_precision(requested, device)
