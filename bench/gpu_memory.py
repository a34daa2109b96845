"""GPU memory of one training step, measured without a GPU: train.py's step code (batch_targets,
separation_loss, backward through the precision's GradScaler, Adam) on fake CUDA tensors
(tests/fake_cuda: shapes, dtypes and devices without data), for each model at full size,
each precision, and two batch sizes; from them, the largest batch that fits each card.

    python -m bench.gpu_memory                              # umx, bsrnn, bsrnn-complex; fp32, bf16, fp16
    python -m bench.gpu_memory --models bsrnn-complex --precisions bf16 --batch 16 --seconds 6

What is counted, per step: the weights and Adam's two moments (float32, kept between steps),
and the peak over the forward and backward pass of every other tensor alive on the device
(the batch and its STFTs, activations, the tensors autograd saves for backward, autocast's
low-precision copies of the weights, the gradients). "saved" is the part autograd keeps for
backward. Activations grow in proportion to the batch and the rest does not, so the two
batch sizes give a line (exact: bsrnn fp32 at batch 4 and 12 lies on the line through 8
and 16 within 1 MiB), and the line gives the largest batch within each card's memory.

The LSTMs run as torch's composite LSTM (there is no cuDNN here): the per-step tensors it
saves stand in for the reserve space in which cuDNN's LSTM keeps the same activations.
Under fp16 it also keeps a copy of its weights per time step, which cuDNN does not: those
are taken out, one copy per weight kept ("composite_lstm_casts_mib" in the JSON says how
much; ~1.7 GiB for umx at 6 s). Not counted: the CUDA context, cuDNN's workspace and any
difference between its reserve space and the composite LSTM's tensors, and the caching
allocator's rounding and fragmentation: leave room for them.

Each model runs in a child process, which must load the stand-in CUDA runtime before torch.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import weakref
from pathlib import Path

MIB = 2**20
MODEL_KINDS = {"umx": ("umx", "magnitude"), "bsrnn": ("bsrnn", "magnitude"), "bsrnn-complex": ("bsrnn", "complex")}
PRECISION_NAMES = ("fp32", "bf16", "fp16")
# Memory of each card class in MiB, as nvidia-smi reports it, by the table's column name.
CARDS = {
    "1080Ti": 11264,      # GTX 1080 Ti, 11 GB
    "T4": 15360,          # T4 (Colab), 16 GB
    "V100-16": 16384,     # V100, 16 GB
    "3090/4090": 24576,   # RTX 3090 / 4090, 24 GB
    "A100-40": 40960,     # A100, 40 GB
    "80GB": 81920,        # A100 / H100, 80 GB
}


def measure(kind: str, precision_name: str, batch: int, seconds: float) -> dict:
    """One training step of a full-size `kind` model on fake CUDA tensors: MiB of the
    weights, Adam's moments, the peak of the step's other tensors, and what autograd saved."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from model import build_model, takes_complex
    from tests.fake_cuda import harness
    from training.loop import batch_targets, separation_loss
    from training.losses import DEFAULT_LOSSES
    from training.precision import resolve_precision
    from training.settings import new_model_config
    from utils import SAMPLE_RATE

    name, mask = MODEL_KINDS[kind]
    torch.manual_seed(0)
    model = build_model(new_model_config(name, None, None, True, True, None, mask=mask))
    device = torch.device("cuda")

    def storage_key(tensor: torch.Tensor) -> int:
        return tensor.untyped_storage()._cdata

    class LiveBytes(TorchDispatchMode):
        """Bytes of the device storages that ops have made and something still holds."""

        def __init__(self, excluded: set[int]) -> None:
            super().__init__()
            self.excluded, self.holders, self.sizes, self.live, self.peak = excluded, {}, {}, 0, 0

        def _track(self, tensor) -> None:
            if not isinstance(tensor, torch.Tensor) or tensor.device.type != "cuda":
                return
            key = storage_key(tensor)
            if key in self.excluded:
                return
            if key not in self.holders:
                self.holders[key], self.sizes[key] = 0, tensor.untyped_storage().nbytes()
                self.live += self.sizes[key]
                self.peak = max(self.peak, self.live)
            self.holders[key] += 1
            weakref.finalize(tensor, self._release, key)

        def _release(self, key: int) -> None:
            self.holders[key] -= 1
            if not self.holders[key]:
                self.live -= self.sizes.pop(key)
                del self.holders[key]

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for tensor in out if isinstance(out, (tuple, list)) else (out,):
                self._track(tensor)
            return out

    with harness.fake_cuda():
        model.to(device).train()
        parameters = list(model.parameters())
        weights = {storage_key(p) for p in parameters}
        weight_bytes = sum(p.numel() * p.element_size() for p in parameters)
        precision = resolve_precision(precision_name, device)
        scaler = precision.grad_scaler("cuda")
        optimizer = torch.optim.Adam(parameters, lr=1e-3)
        # float32 stems (batch, sources, channels, samples), the input batch_targets makes its audio of
        stems = torch.zeros(batch, 4, 2, int(seconds * SAMPLE_RATE))
        saved: dict[int, int] = {}
        # torch's composite LSTM, which the fake run goes through, casts an LSTM's weights to
        # fp16 again at every time step under autocast and saves each copy for backward (the
        # step's matmul takes a transposed view, which autocast does not cache); cuDNN's LSTM
        # casts them once per forward. Those copies are counted apart and replaced by one each.
        lstms = [module for module in model.modules() if isinstance(module, torch.nn.LSTM)]
        lstm_weights = [p for module in lstms for p in module.parameters() if p.dim() == 2]
        lstm_shapes = {tuple(p.shape) for p in lstm_weights} | {tuple(p.shape)[::-1] for p in lstm_weights}
        in_lstm = [False]
        for module in lstms:
            module.register_forward_pre_hook(lambda *_: in_lstm.__setitem__(0, True))
            module.register_forward_hook(lambda *_: in_lstm.__setitem__(0, False))
        step_casts: dict[int, int] = {}

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            key = storage_key(tensor)
            if key not in weights:
                saved[key] = tensor.untyped_storage().nbytes()
                if (in_lstm[0] and tensor.dtype in (torch.float16, torch.bfloat16)
                        and tuple(tensor.shape) in lstm_shapes):
                    step_casts[key] = saved[key]
            return tensor

        live = LiveBytes(weights)
        started = time.perf_counter()
        with live:
            mixture, targets = batch_targets(stems, device, takes_complex(model))
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
                loss = separation_loss(model, mixture, targets, precision, DEFAULT_LOSSES[mask])
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            del mixture, targets, loss
            step_peak = live.peak
            scaler.step(optimizer)
            scaler.update()
        moment_bytes = sum(value.numel() * value.element_size() for state in optimizer.state.values()
                           for key, value in state.items() if key != "step")
    seconds_taken = time.perf_counter() - started
    cast_once = sum(p.numel() for p in lstm_weights) * 2 if step_casts else 0  # one fp16/bf16 copy of each
    composite_only = sum(step_casts.values()) - cast_once
    total = weight_bytes + moment_bytes + step_peak - composite_only
    return {"model": kind, "precision": precision_name, "batch": batch, "seconds": seconds,
            "weights_mib": weight_bytes / MIB, "adam_mib": moment_bytes / MIB,
            "saved_mib": (sum(saved.values()) - composite_only) / MIB, "step_peak_mib": step_peak / MIB,
            "composite_lstm_casts_mib": composite_only / MIB, "total_mib": total / MIB,
            "fake_run_seconds": seconds_taken}


def largest_batch(small: dict, large: dict, capacity_mib: float) -> int:
    """The largest batch whose step fits capacity_mib, on the line through two measurements."""
    per_excerpt = (large["total_mib"] - small["total_mib"]) / (large["batch"] - small["batch"])
    fixed = large["total_mib"] - per_excerpt * large["batch"]
    return max(0, int((capacity_mib - fixed) // per_excerpt))


def child(kind: str, precisions: list[str], batches: list[int], seconds: float, library: str) -> None:
    """One model's measurements, in a process whose torch sees the stand-in CUDA runtime."""
    from tests.fake_cuda import harness
    harness.install(Path(library))
    import warnings

    import torch
    warnings.filterwarnings("ignore", message=".*cuDNN.*")
    torch.set_num_threads(1)
    for precision_name in precisions:
        for batch in batches:
            print(json.dumps(measure(kind, precision_name, batch, seconds)), flush=True)


def build_parser() -> argparse.ArgumentParser:
    from utils import HelpFormatter  # imports torch: only in the parent process
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--models", nargs="+", choices=list(MODEL_KINDS), default=list(MODEL_KINDS),
                   help="models at their default size; bsrnn-complex is --model bsrnn --mask complex")
    p.add_argument("--precisions", nargs="+", choices=PRECISION_NAMES, default=list(PRECISION_NAMES),
                   help="train.py --precision values (autocast on CUDA; fp16 with the GradScaler)")
    p.add_argument("--batch", type=int, default=16, help="the batch size of the table (train.py's default)")
    p.add_argument("--line-batch", type=int, default=8,
                   help="the second batch size measured, for the line that gives the largest batch per card")
    p.add_argument("--seconds", type=float, default=6.0, help="excerpt length (train.py --seq-dur)")
    p.add_argument("--out", type=Path, default=Path("gpu_memory.json"), help="where to write the figures (JSON)")
    return p


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        kind, precisions, batches, seconds, library = argv[1:]
        child(kind, precisions.split(","), [int(b) for b in batches.split(",")], float(seconds), library)
        return
    from tests.fake_cuda import harness
    from utils import UserError, run_cli, write_text

    def run(argv) -> None:
        args = build_parser().parse_args(argv)
        if args.line_batch == args.batch or min(args.batch, args.line_batch) < 1:
            raise UserError("--batch and --line-batch must be two different positive batch sizes")
        try:
            library = harness.build_shim()
        except harness.ShimUnavailable as reason:
            raise UserError(f"cannot measure on fake CUDA tensors here: {reason}") from None
        batches = sorted({args.batch, args.line_batch})
        print(f"training step on fake CUDA tensors, full-size models, {args.seconds:g}-s excerpts; MiB. "
              "Not counted: CUDA context, cuDNN workspace and LSTM buffers, allocator rounding.")
        rows = []
        for kind in args.models:
            command = [sys.executable, "-m", "bench.gpu_memory", "--child", kind, ",".join(args.precisions),
                       ",".join(map(str, batches)), str(args.seconds), str(library)]
            result = subprocess.run(command, capture_output=True, text=True)
            if result.returncode:
                raise UserError(f"the {kind} measurement failed: {result.stderr.strip().splitlines()[-1]}")
            rows += [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
        table = summarise(rows, args.batch, args.line_batch)
        print_table(table, args.batch)
        write_text(args.out, json.dumps({"seconds": args.seconds, "batch": args.batch, "cards_mib": CARDS,
                                         "measurements": rows, "table": table}, indent=1))
        print(f"wrote {args.out}")

    sys.exit(run_cli(run, argv))


def summarise(rows: list[dict], batch: int, line_batch: int) -> list[dict]:
    """Per model and precision: the step at `batch`, MiB per excerpt, and the largest batch per card."""
    by_case = {(r["model"], r["precision"], r["batch"]): r for r in rows}
    table = []
    for (kind, precision_name, size), row in by_case.items():
        if size != batch:
            continue
        other = by_case[(kind, precision_name, line_batch)]
        small, large = sorted((row, other), key=lambda r: r["batch"])
        table.append({**{k: row[k] for k in ("model", "precision", "weights_mib", "adam_mib", "saved_mib",
                                              "total_mib")},
                      "mib_per_excerpt": (large["total_mib"] - small["total_mib"]) / (large["batch"] - small["batch"]),
                      "largest_batch": {card: largest_batch(small, large, mib) for card, mib in CARDS.items()}})
    return table


def print_table(table: list[dict], batch: int) -> None:
    print(f"{'model':<14} {'precision':<9} {'weights+Adam':>12} {f'saved @{batch}':>10} {f'step @{batch}':>10} "
          f"{'per excerpt':>11} | largest batch: " + " ".join(f"{card:>9}" for card in CARDS))
    for row in table:
        print(f"{row['model']:<14} {row['precision']:<9} {row['weights_mib'] + row['adam_mib']:12,.0f} "
              f"{row['saved_mib']:10,.0f} {row['total_mib']:10,.0f} {row['mib_per_excerpt']:11,.1f} | {'':14} "
              + " ".join(f"{row['largest_batch'][card]:>9}" for card in CARDS))

if __name__ == "__main__":
    main()
