"""bench.gpu_check's sections after the data: precision agreement, train.py at each
precision, torchrun, every phase method and throughput."""

from __future__ import annotations

import contextlib
import csv
import gc
import json
import math
import os
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Collection, Sequence

import numpy as np
import torch
import torch.distributed as dist

from bench.common import batches_forever
from bench.gpu_records import (DEFAULT_BATCH, MODELS, REPO_ROOT, SEED, TOLERANCES, Run, Sizes, error_text,
                               generated_stems, is_out_of_memory, precisions_to_check, relative_difference)
from bench.train_throughput import FULL_TRAIN_TRACKS, synchronize
from formats import checkpoint
from formats.cache import StemCache
from model import build_model, takes_complex
from separation.mel_vocoder import Vocoder
from separation.phase import PHASE_METHODS, PhaseSettings, resolve_gl_backend
from separation.segments import SeparationSettings, separate
from training.augment import AUGMENTATIONS
from training.loader import make_loader
from training.loop import batch_targets, separation_loss, train_epoch
from training.losses import DEFAULT_LOSSES
from training.precision import Precision, resolve_precision, set_up_precision
from training.settings import new_model_config
from training.validation import validate
from utils import HOP, N_FFT, STEMS, UserError, resolve_device, write_text

# ------------------------------------------------------------------ precision

def new_model(name: str, sizes: Sizes, device: torch.device, seed: int = SEED) -> torch.nn.Module:
    """One of MODELS at `sizes`, initialised from `seed`, on `device`."""
    kind, mask = MODELS[name]
    torch.manual_seed(seed)
    config = new_model_config(kind, sizes.hidden_size, sizes.nb_layers, True, True, None, mask=mask)
    return build_model(config).to(device)


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, batch,
               precision: Precision, device: torch.device, loss_name: str, update: bool = True) -> torch.Tensor:
    """One training step as training.loop.train_epoch takes it, on a loader batch; its loss, not
    read back. Without `update` only the loss is computed (a step the scaler would skip)."""
    mixture, targets = batch_targets(batch, device, takes_complex(model))
    loss = separation_loss(model, mixture, targets, precision, loss_name)
    if update:
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    return loss.detach()


def train_steps(model: torch.nn.Module, batches: Sequence, steps: int, precision: Precision, device: torch.device,
                loss_name: str, watch_scaler: bool = False,
                skip: Collection[int] = ()) -> tuple[list[float], float, list[int]]:
    """`steps` training steps on `batches` in turn -> (each step's loss, seconds, the steps
    the gradient scaler skipped). The losses are read back once, at the end. watch_scaler:
    read the scale after every step (a wait for the device) to find the steps it skipped,
    whose gradients held an inf or NaN. The steps in `skip` compute their loss but do not
    update the weights, as such a skipped step."""
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = precision.grad_scaler(device.type)
    watch = watch_scaler and precision.scales_gradients
    losses, skipped = [], []
    synchronize(device)
    started = time.perf_counter()
    for step in range(steps):
        scale = scaler.get_scale() if watch else None
        losses.append(train_step(model, optimizer, scaler, batches[step % len(batches)], precision, device, loss_name,
                                 update=step not in skip))
        if watch and scaler.get_scale() < scale:
            skipped.append(step)
    synchronize(device)
    seconds = time.perf_counter() - started
    return torch.stack(losses).float().cpu().tolist(), seconds, skipped


def agreement(result: dict, reference: dict) -> dict:
    """How far a run's losses lie from the fp32 reference's: its first loss relative to the
    reference's, and the mean of its last round of batches relative to how far the
    reference's mean fell from the first round to the last (a sign-free scale: the complex
    model's loss, an SDR term in it, crosses 0 as it trains)."""
    fall = reference["first_round_mean"] - reference["last_round_mean"]
    return {"first_step": relative_difference(result["losses"][0], reference["losses"][0]),
            "last_round": abs(result["last_round_mean"] - reference["last_round_mean"]) / max(abs(fall), 1e-12)}


def precision_section(record: dict, run: Run, cache: StemCache, sizes: Sizes, device: torch.device) -> None:
    """Each model at each precision from the same initial weights on the same batches.

    fp16's gradient scaler skips the first steps, until its scale (2^16 at the start)
    stops overflowing the fp16 gradients; that is by design, and a few steps in thousands.
    So fp16 is compared with an fp32 run that skips the same steps' updates ("fp32 with
    fp16's skips"), which isolates the arithmetic; a check fails only if the scaler
    skipped more than half the steps (it never found a workable scale)."""
    loader, sampler = make_loader(cache, sizes.seq_dur, sizes.train_samples_per_track, AUGMENTATIONS,
                                  sizes.agreement_batch, 0, SEED, device)
    batches_iter = batches_forever(loader, sampler)
    batches = [next(batches_iter) for _ in range(sizes.agreement_batches)]
    per_round = sizes.agreement_batches
    record |= {"batch_size": sizes.agreement_batch, "steps": sizes.agreement_steps, "distinct_batches": per_round,
               "tolerances": {name: {"first_step": first, "last_round": last}
                              for name, (first, last) in TOLERANCES.items()}}

    def steps_from_init(model_name: str, precision_name: str, skip: Collection[int] = ()) -> dict:
        model = new_model(model_name, sizes, device)
        for module in model.modules():  # the same arithmetic on both sides, no random masks
            if isinstance(module, torch.nn.RNNBase):
                module.dropout = 0.0
        precision = resolve_precision(precision_name, device)
        losses, seconds, skipped = train_steps(model, batches, sizes.agreement_steps, precision, device,
                                               DEFAULT_LOSSES[MODELS[model_name][1]], watch_scaler=True, skip=skip)
        return {"losses": losses, "steps_per_s": round(sizes.agreement_steps / seconds, 3),
                "first_round_mean": float(np.mean(losses[:per_round])),
                "last_round_mean": float(np.mean(losses[-per_round:])),
                "skipped_steps": skipped or sorted(skip), "reason": precision.reason}

    for model_name in MODELS:
        runs: dict = {}
        record[model_name] = runs
        for precision_name in precisions_to_check(device):
            result = run.item(runs, precision_name, lambda: steps_from_init(model_name, precision_name),
                              out_of_memory_ok=True)
            if result is None:
                continue
            finite = all(math.isfinite(loss) for loss in result["losses"])
            run.check(f"precision: {model_name} {precision_name} losses finite", finite)
            if precision_name == "fp32":
                run.check(f"precision: {model_name} fp32 learns (its last round's loss below its first's)",
                          result["last_round_mean"] < result["first_round_mean"])
            line = (f"  {model_name:<14}{precision_name:<6}{result['steps_per_s']:8.2f} steps/s   loss "
                    f"{result['first_round_mean']:.4g} -> {result['last_round_mean']:.4g}")
            reference, reference_name = runs.get("fp32", {}), "fp32"
            if result["skipped_steps"]:
                skipped = result["skipped_steps"]
                line += f"   scaler skipped {len(skipped)} steps"
                run.check(f"precision: {model_name} {precision_name} the gradient scaler settles",
                          len(skipped) <= sizes.agreement_steps // 2, skipped=len(skipped), steps=sizes.agreement_steps)
                reference_name = "fp32 with fp16's skips"
                reference = run.item(runs, reference_name, lambda: steps_from_init(model_name, "fp32", set(skipped)),
                                     out_of_memory_ok=True)
                reference = reference or {}
            if precision_name != "fp32" and "losses" in reference and finite:
                first_limit, last_limit = TOLERANCES[precision_name]
                result["vs_fp32"] = {"reference": reference_name, **agreement(result, reference)}
                first, last = result["vs_fp32"]["first_step"], result["vs_fp32"]["last_round"]
                run.check(f"precision: {model_name} {precision_name} first-step loss agrees with fp32",
                          first <= first_limit, difference=first, limit=first_limit)
                run.check(f"precision: {model_name} {precision_name} last-round loss agrees with {reference_name}",
                          last <= last_limit, difference=last, limit=last_limit)
                line += (f"   vs {reference_name}: first step {100 * first:.3f}%, last round {100 * last:.2f}% of "
                         "fp32's fall")
            print(line, flush=True)


# ---------------------------------------------------------------------- train

def train_section(record: dict, run: Run, cache: StemCache, sizes: Sizes, device: torch.device,
                  workdir: Path) -> None:
    """train.py at each precision, as a user runs it (a subprocess; what it printed is kept
    in the record when it fails)."""
    model_flags = [] if sizes.hidden_size is None else ["--hidden-size", str(sizes.hidden_size)]
    model_flags += [] if sizes.nb_layers is None else ["--nb-layers", str(sizes.nb_layers)]
    for precision_name in precisions_to_check(device):
        directory = workdir / f"train-{precision_name}"
        argv = ["--cache", str(cache.root), "--checkpoint-dir", str(directory), "--epochs", str(sizes.train_epochs),
                "--save-epochs", str(sizes.train_epochs), "--precision", precision_name, "--device", str(device),
                "--seq-dur", str(sizes.seq_dur), "--samples-per-track", str(sizes.train_samples_per_track),
                "--batch-size", str(sizes.train_batch), "--workers", str(sizes.workers), *model_flags]

        def one_run() -> dict:
            started = time.perf_counter()
            finished = subprocess.run([sys.executable, str(REPO_ROOT / "train.py"), *argv], capture_output=True,
                                      text=True, cwd=REPO_ROOT)
            if finished.returncode != 0:
                record[f"{precision_name} output"] = (finished.stdout + finished.stderr)[-3000:]
                raise RuntimeError(f"train.py exited with {finished.returncode}")
            with open(directory / "log.csv") as f:
                rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
            state = checkpoint.load(directory / "last.pt")
            return {"argv": argv, "seconds": round(time.perf_counter() - started, 1), "epochs": rows,
                    "recorded_precision": state["train_args"].get("precision"),
                    "recorded_reason": state["train_args"].get("precision_reason")}
        result = run.item(record, precision_name, one_run)
        if result is None:
            continue
        finite = all(math.isfinite(row[key]) for row in result["epochs"] for key in ("train_loss", "valid_loss"))
        run.check(f"train: train.py {precision_name} losses finite",
                  finite and len(result["epochs"]) == sizes.train_epochs)
        run.check(f"train: train.py {precision_name} checkpoint records its precision",
                  result["recorded_precision"] == precision_name and bool(result["recorded_reason"]),
                  recorded=result["recorded_precision"], reason=result["recorded_reason"])
        last = result["epochs"][-1]
        print(f"  {precision_name:<6}epochs {len(result['epochs'])} in {result['seconds']} s: train "
              f"{last['train_loss']:.4g} valid {last['valid_loss']:.4g}, vocals SDR {last['valid_sdr_vocals']:.2f} dB  "
              f"({result['recorded_reason']})", flush=True)


# ------------------------------------------------------------------- torchrun

def torchrun_section(record: dict, run: Run, cache: StemCache, device: torch.device, quick: bool,
                     workdir: Path) -> None:
    result_path = workdir / "ddp_worker.json"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
               "-m", "bench.gpu_check", "--ddp-worker", str(result_path), str(cache.root), "--device", str(device),
               *(["--quick"] if quick else [])]
    record["command"] = " ".join(command[1:])
    started = time.perf_counter()
    try:
        finished = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True,
                                  timeout=max(run.time_left(), 60.0))
    except subprocess.TimeoutExpired as err:
        raise UserError(f"torchrun did not finish in {err.timeout:.0f} s") from err
    record["seconds_with_start"] = round(time.perf_counter() - started, 1)
    record["returncode"] = finished.returncode
    if finished.returncode != 0:
        record["stderr_tail"] = finished.stderr[-3000:]
    worker = json.loads(result_path.read_text()) if result_path.is_file() else {}
    record |= worker
    run.check("torchrun: the worker finished", finished.returncode == 0 and bool(worker),
              returncode=finished.returncode)
    if worker:
        run.check("torchrun: all_reduce over the process group", worker["all_reduce"] == worker["world_size"],
                  backend=worker["backend"])
        run.check("torchrun: DDP epoch and validation losses finite",
                  math.isfinite(worker["train_loss"]) and math.isfinite(worker["valid_loss"]))
        print(f"  {worker['backend']} world {worker['world_size']}: epoch of {worker['steps']} steps in "
              f"{worker['epoch_seconds']} s, train {worker['train_loss']:.4g} valid {worker['valid_loss']:.4g}; "
              f"{record['seconds_with_start']} s with torchrun's start", flush=True)


def ddp_worker(result_path: Path, cache_dir: str, device_name: str, sizes: Sizes) -> None:
    """The torchrun section's process: one epoch of umx through train's own functions in
    DistributedDataParallel over an NCCL (CUDA) or gloo (CPU) process group."""
    device = resolve_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend)
    try:
        precision = set_up_precision("auto", device)
        cache = StemCache(cache_dir)
        loader, sampler = make_loader(cache, sizes.seq_dur, sizes.train_samples_per_track, AUGMENTATIONS,
                                      sizes.train_batch, sizes.workers, SEED, device)
        model = new_model("umx", sizes, device)
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        sampler.set_epoch(1)
        synchronize(device)
        started = time.perf_counter()
        train_loss = train_epoch(net, loader, optimizer, precision.grad_scaler(device.type), device,
                                 epoch=1, progress=False, precision=precision)
        synchronize(device)
        epoch_seconds = time.perf_counter() - started
        validation = validate(model, cache, cache.names("valid"), device)
        ones = torch.ones((), device=device)
        dist.all_reduce(ones)
        if dist.get_rank() == 0:
            write_text(result_path, json.dumps({
                "backend": backend, "world_size": dist.get_world_size(), "all_reduce": ones.item(),
                "precision": precision.name, "steps": len(loader), "epoch_seconds": round(epoch_seconds, 2),
                "train_loss": train_loss, "valid_loss": validation.loss, "valid_sdr": validation.sdr}))
    finally:
        dist.destroy_process_group()


# ------------------------------------------------------------------- separate

def separate_section(record: dict, run: Run, sizes: Sizes, device: torch.device) -> None:
    """Every phase method through separation.segments.separate on `device`, on a generated mixture."""
    mixture = generated_stems(2000, sizes.separate_seconds).sum(0).T.copy()  # (samples, channels)
    record["audio_seconds"] = sizes.separate_seconds
    vocoder = Vocoder(nb_bins=N_FFT // 2 + 1, hop=HOP, **sizes.vocoder).to(device).eval()
    default_backend = resolve_gl_backend("auto", device)
    other_backend = "torch" if default_backend == "librosa" else "librosa"
    record["griffinlim_default_backend"] = default_backend
    for model_name in ("umx", "bsrnn-complex"):
        model = new_model(model_name, sizes, device).eval()
        complex_estimates = takes_complex(model)
        # The magnitude methods on the magnitude model; "model" on the complex one.
        runs = [(phase, phase, {"gl_backend": default_backend}) for phase, method in PHASE_METHODS.items()
                if method.complex_estimate == complex_estimates]
        if not complex_estimates:
            runs.append((f"griffinlim ({other_backend})", "griffinlim", {"gl_backend": other_backend}))
        results: dict = {}
        record[model_name] = results
        for key, phase, extra in runs:
            def one_run() -> dict:
                timings: dict[str, float] = {}
                settings = SeparationSettings((phase,), PhaseSettings(gl_iters=sizes.gl_iters, **extra))
                estimates = separate(model, mixture, settings, device, vocoder, timings)[phase]
                audio = np.stack([estimates[stem] for stem in STEMS])
                return {"seconds": round(timings[phase], 3),
                        "x_real_time": round(sizes.separate_seconds / max(timings[phase], 1e-9), 1),
                        "finite": bool(np.isfinite(audio).all()), "shape_ok": audio.shape[1:] == mixture.shape}
            result = run.item(results, key, one_run)
            if result is None:
                continue
            run.check(f"separate: {model_name} {key}", result["finite"] and result["shape_ok"])
            print(f"  {model_name:<14}{key:<22}{result['seconds']:8.2f} s  {result['x_real_time']:7.1f}x real time",
                  flush=True)


# ----------------------------------------------------------------- throughput

def peak_memory(device: torch.device) -> dict:
    """torch's peak allocated and reserved GPU memory since the last reset, in MiB."""
    if device.type != "cuda":
        return {"memory": "skipped: needs CUDA"}
    return {"peak_allocated_mib": round(torch.cuda.max_memory_allocated(device) / 2**20),
            "peak_reserved_mib": round(torch.cuda.max_memory_reserved(device) / 2**20)}


def fixed_batch_rate(model_name: str, batch_size: int, cache: StemCache, sizes: Sizes, device: torch.device,
                     precision: Precision) -> dict:
    """Training steps on one loaded batch (copied and transformed on the device each
    step, as in training, with no loader to wait for): rates and peak memory."""
    loader, sampler = make_loader(cache, sizes.seq_dur, max(sizes.train_samples_per_track, batch_size),
                                  AUGMENTATIONS, batch_size, 0, SEED, device)
    batch = next(batches_forever(loader, sampler))
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    model = new_model(model_name, sizes, device)
    loss_name = DEFAULT_LOSSES[MODELS[model_name][1]]
    train_steps(model, [batch], sizes.warmup_steps, precision, device, loss_name)
    _, seconds, _ = train_steps(model, [batch], sizes.timed_steps, precision, device, loss_name)
    return {"steps_per_s": round(sizes.timed_steps / seconds, 3),
            "excerpts_per_s": round(sizes.timed_steps * batch_size / seconds, 2), **peak_memory(device)}


class UtilizationSampler:
    """torch.cuda.utilization (NVML, through pynvml: the percentage of its last sample
    period, 1/6 s to 1 s by card, in which a kernel ran on the GPU, whoever ran it)
    sampled every `interval` seconds by a thread while the context is open."""

    def __init__(self, device: torch.device, interval: float = 0.1) -> None:
        self.device, self.interval, self.samples = device, interval, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.samples.append(torch.cuda.utilization(self.device))

    def __enter__(self) -> "UtilizationSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def nvml_available(device: torch.device) -> str | None:
    """None when torch.cuda.utilization answers on `device`, else why not."""
    try:
        torch.cuda.utilization(device)
        return None
    except Exception as err:  # pynvml missing (ModuleNotFoundError), or NVML refusing
        return error_text(err)


def fed_rate(model_name: str, cache: StemCache, sizes: Sizes, device: torch.device, precision: Precision) -> dict:
    """Training steps with the loader feeding them (its workers, as train.py's default),
    for at least sizes.fed_seconds, and the GPU's busy fraction meanwhile: NVML's reading
    where pynvml is installed, and always the events' measure: the sum over steps of the
    GPU time from a step's first queued work to its last, over the wall time; time the GPU
    waits on the host between steps (for the loader) counts as idle, gaps within a step
    as busy, so it is an upper bound."""
    loader, sampler = make_loader(cache, sizes.seq_dur, sizes.train_samples_per_track, AUGMENTATIONS,
                                  min(DEFAULT_BATCH, max(sizes.batch_sizes)), sizes.workers, SEED, device)
    batches = batches_forever(loader, sampler)
    model = new_model(model_name, sizes, device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = precision.grad_scaler(device.type)

    def one_step() -> None:
        train_step(model, optimizer, scaler, next(batches), precision, device, DEFAULT_LOSSES[MODELS[model_name][1]])

    for _ in range(sizes.warmup_steps):  # the workers' start, cuDNN's choice of kernels
        one_step()
    synchronize(device)
    cuda = device.type == "cuda"
    nvml_missing = nvml_available(device) if cuda else "needs CUDA"
    events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
    sampler_context = UtilizationSampler(device) if nvml_missing is None else contextlib.nullcontext()
    steps = 0
    with sampler_context:
        started = time.perf_counter()
        while steps < sizes.timed_steps or time.perf_counter() - started < sizes.fed_seconds:
            if cuda:
                events.append((torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)))
                events[-1][0].record()
            one_step()
            if cuda:
                events[-1][1].record()
            steps += 1
        synchronize(device)
        wall = time.perf_counter() - started
    result = {"batch_size": loader.batch_size, "workers": sizes.workers, "steps": steps,
              "steps_per_s": round(steps / wall, 3), "excerpts_per_s": round(steps * loader.batch_size / wall, 2)}
    if not cuda:
        result["busy_fraction"] = "skipped: needs CUDA"
        return result
    result["busy_fraction_events"] = round(sum(a.elapsed_time(b) for a, b in events) / 1000 / wall, 3)
    if nvml_missing is None and sampler_context.samples:
        result["busy_fraction_nvml"] = round(float(np.mean(sampler_context.samples)) / 100, 3)
    else:
        result["busy_fraction_nvml"] = f"skipped: {nvml_missing or 'no sample taken'}"
    return result




def throughput_section(record: dict, run: Run, cache: StemCache, sizes: Sizes, device: torch.device) -> None:
    precision = resolve_precision("auto", device)
    record["precision"] = precision.name
    print(f"  {'model':<14}{'batch':>6}{'steps/s':>10}{'excerpts/s':>12}{'peak alloc MiB':>16}"
          f"{'peak reserved MiB':>19}", flush=True)
    for model_name in MODELS:
        rows: dict = {}
        record[model_name] = rows
        out_of_memory_at = None
        for batch_size in sizes.batch_sizes:
            key = f"batch {batch_size}"
            if out_of_memory_at is not None:
                rows[key] = {"status": f"skipped: batch {out_of_memory_at} ran out of memory"}
                continue
            if run.time_left() <= 0:
                rows[key] = {"status": "skipped: time budget spent"}
                continue
            try:
                rows[key] = fixed_batch_rate(model_name, batch_size, cache, sizes, device, precision)
            except Exception as err:
                if not is_out_of_memory(err):
                    rows[key] = {"status": "error", "error": error_text(err),
                                 "traceback": traceback.format_exc()[-4000:]}
                    print(f"  {model_name:<14}{batch_size:>6}  ERROR {rows[key]['error']}", flush=True)
                    continue
                rows[key] = {"out_of_memory": True, "error": error_text(err)}
                out_of_memory_at = batch_size
            finally:
                gc.collect()  # the failed step's tensors, before the next size asks for memory
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            row = rows[key]
            if row.get("out_of_memory"):
                print(f"  {model_name:<14}{batch_size:>6}  out of memory", flush=True)
            elif "steps_per_s" in row:
                print(f"  {model_name:<14}{batch_size:>6}{row['steps_per_s']:10.2f}{row['excerpts_per_s']:12.1f}"
                      f"{row.get('peak_allocated_mib', '-'):>16}{row.get('peak_reserved_mib', '-'):>19}", flush=True)
    for model_name in MODELS:
        fed = run.item(record[model_name], "loader_fed", lambda: fed_rate(model_name, cache, sizes, device, precision),
                       out_of_memory_ok=True)
        if fed is not None:
            busy = fed.get("busy_fraction", f"{fed.get('busy_fraction_nvml')} (NVML), "
                                            f"{fed.get('busy_fraction_events')} (CUDA events, an upper bound)")
            print(f"  {model_name:<14}with the loader: batch {fed['batch_size']}, {fed['workers']} workers: "
                  f"{fed['steps_per_s']:.2f} steps/s, {fed['excerpts_per_s']:.1f} excerpts/s; GPU busy {busy}",
                  flush=True)
    record["by_model"] = {model_name: model_summary(record[model_name]) for model_name in MODELS}
    print(f"  {'model':<14}{'largest batch run':>18}{'reserved MiB at 16':>20}{'fed excerpts/s':>16}"
          f"{'epoch, PROJECTED':>18}", flush=True)
    for model_name, row in record["by_model"].items():
        epoch = row["epoch_minutes_projected"]
        print(f"  {model_name:<14}{row['largest_batch_run'] or '-':>18}{row['reserved_mib_at_16'] or '-':>20}"
              f"{row['fed_excerpts_per_s'] or '-':>16}{'-' if epoch is None else f'{epoch:.1f} min':>18}", flush=True)


def model_summary(rows: dict) -> dict:
    """One model's throughput rows in the figures a card's table needs: the largest batch
    that ran, the memory torch reserved at the default batch, the loader-fed rate, and the
    training part of a full-scale epoch (FULL_TRAIN_TRACKS x 64 excerpts) projected from it."""
    ran = [int(key.split()[1]) for key, row in rows.items() if key.startswith("batch ") and "steps_per_s" in row]
    fed = rows.get("loader_fed") or {}
    rate = fed.get("excerpts_per_s")
    return {"largest_batch_run": max(ran, default=None),
            "reserved_mib_at_16": rows.get(f"batch {DEFAULT_BATCH}", {}).get("peak_reserved_mib"),
            "fed_excerpts_per_s": rate,
            "epoch_minutes_projected": round(FULL_TRAIN_TRACKS * 64 / rate / 60, 1) if rate else None}


