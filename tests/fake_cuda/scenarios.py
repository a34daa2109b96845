"""The fake-CUDA tier's scenarios: the project's training step, validation and separation
on fake CUDA tensors (harness.py), each asserting that its tensors stay on the device with
the intended dtypes, and negative controls that show the checks can fail.

    python -m fake_cuda.scenarios --library LIB --cache CACHE --out RESULTS.json [NAME ...]

(from the repository root, with it and tests/ on PYTHONPATH; tests/test_fake_cuda.py runs
it once and turns each scenario into a test). RESULTS.json maps each scenario's name to
{"ok": bool, "error": the failure's last lines or null, "seen": what it observed,
"seconds": how long it took}.

The models are small (a few units per layer), the excerpts half a second and the tracks
a few seconds: on fake tensors the cost is per op, not per element, and the devices and
dtypes do not depend on the sizes. Everything but the sizes is the code training and
inference run: training.loader.make_loader's loader over a real cache, training.loop.train_epoch
with the precision's GradScaler and Adam, training.validation.validate, segments.separate.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Callable, Iterator

from fake_cuda import harness  # imports no torch: the fake CUDA runtime must load first

SEQ_SECONDS = 0.5      # training excerpts
BATCH_SIZE = 2         # three training tracks, one excerpt each: a batch of 2 and one of 1
MIXTURE_SECONDS = 3.5  # separated in two segments, the second with a lead-in
SEGMENT_SECONDS, OVERLAP_SECONDS = 2.0, 0.5  # validation's 4-second tracks: three segments
GL_ITERS = 2
# The sync scenarios' epoch: 3 tracks x 4 excerpts in batches of 2, 6 steps; and the values
# train_epoch may read back from the device in a whole epoch: loop.check_finite's at its last
# step and the mean loss.
SYNC_EXCERPTS_PER_TRACK, FIXED_READS = 4, 2
# label -> (--model, --mask) of each kind of model
MODEL_KINDS = {"umx": ("umx", "magnitude"), "bsrnn": ("bsrnn", "magnitude"), "bsrnn-complex": ("bsrnn", "complex")}
# Options per phase method beyond its defaults, one separation each: every Griffin-Lim backend that runs.
PHASE_VARIANTS = {"griffinlim": [{"gl_backend": "torch"}, {"gl_backend": "librosa"}]}


class ScenarioFailed(AssertionError):
    pass


def check(condition: bool, message: str) -> None:
    if not condition:
        raise ScenarioFailed(message)


# ---------------------------------------------------------------- what is seen

def describe(tensor) -> str:
    """'cuda float32' for a tensor's device type and dtype."""
    return f"{tensor.device.type} {str(tensor.dtype).removeprefix('torch.')}"


class Seen:
    """What a scenario observed: where each kind of tensor was and its dtype, as
    {what: sorted descriptions}, and the ops that computed on the CPU."""

    def __init__(self) -> None:
        self.tensors: dict[str, set[str]] = {}
        self.cpu_ops: dict[str, int] = {}
        self.autocast_dtypes: set[str] = set()
        self.device_reads, self.steps = 0, 0  # values read back from the device, over training steps

    def add(self, what: str, tensor) -> None:
        if tensor is not None:
            self.tensors.setdefault(what, set()).add(describe(tensor))

    def expect(self, what: str, *allowed: str) -> None:
        found = self.tensors.get(what)
        check(bool(found), f"no {what} was seen")
        check(found <= set(allowed), f"{what}: {sorted(found)}, expected {' or '.join(allowed)}")

    def as_json(self) -> dict:
        return {"tensors": {k: sorted(v) for k, v in self.tensors.items()}, "cpu_ops": self.cpu_ops,
                "autocast_dtypes": sorted(self.autocast_dtypes), "device_reads": self.device_reads,
                "steps": self.steps}


@contextlib.contextmanager
def spy(module, name: str, record: Callable) -> Iterator[None]:
    """module.name wrapped so that record(result, *args) sees each call's result; the
    callers look the name up in the module, so they call the wrapper."""
    original = getattr(module, name)

    def wrapper(*args, **kwargs):
        result = original(*args, **kwargs)
        record(result, *args)
        return result

    setattr(module, name, wrapper)
    try:
        yield
    finally:
        setattr(module, name, original)


@contextlib.contextmanager
def watching(seen: Seen, *models) -> Iterator[None]:
    """Records into `seen` the model's inputs and outputs of the step (loop.batch_targets,
    estimate_stems, every losses.LOSSES function, segments.separate_estimates, each phase
    method's inputs), every LSTM's input and output, the dtypes autocast produced on the device,
    and the ops that computed on the CPU."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from separation import phase, segments
    from training import loop, losses, validation

    def targets_seen(result, *args):
        mixture, targets = result
        seen.add("model input", mixture)
        for field in ("magnitudes", "audio", "spectrograms"):
            seen.add(f"targets.{field}", getattr(targets, field))

    def lstm_seen(module, inputs, output):
        seen.add("LSTM input", inputs[0])
        seen.add("LSTM output", output[0])

    def loss_seen(entry):
        def function(estimates, targets):
            loss = entry.function(estimates, targets)
            seen.add("loss", loss)
            return loss
        return dataclasses.replace(entry, function=function)

    original_losses = dict(losses.LOSSES)
    original_call = phase.PhaseMethod.__call__

    def phase_seen(method, estimate, mixture_spec, *args, **kwargs):
        seen.add(f"{method.name} estimate", estimate)
        seen.add("mixture STFT", mixture_spec)
        return original_call(method, estimate, mixture_spec, *args, **kwargs)

    class Dtypes(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for tensor in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(tensor, torch.Tensor) and tensor.dtype in (torch.float16, torch.bfloat16):
                    seen.autocast_dtypes.add(describe(tensor))
            return out

    hooks = [m.register_forward_hook(lstm_seen) for model in models for m in model.modules()
             if isinstance(m, torch.nn.LSTM)]
    cpu_compute = harness.cpu_compute_log()
    phase.PhaseMethod.__call__ = phase_seen
    losses.LOSSES.update({name: loss_seen(entry) for name, entry in original_losses.items()})
    try:
        with spy(loop, "batch_targets", targets_seen), spy(validation, "batch_targets", targets_seen), \
                spy(loop, "estimate_stems", lambda result, *a: seen.add("estimates", result)), \
                spy(segments, "separate_estimates", lambda result, *a: seen.add("estimates", result)), \
                cpu_compute, Dtypes():
            yield
    finally:
        phase.PhaseMethod.__call__ = original_call
        losses.LOSSES.update(original_losses)
        for hook in hooks:
            hook.remove()
        seen.cpu_ops.update(cpu_compute.ops)


# ------------------------------------------------------------------- the runs

def device():
    import torch
    return torch.device("cuda")


# bsrnn's bands for the tiny models: every band has its own layers, so the vocals layout's 41
# bands cost 10x the ops of these 4 (fake tensors cost per op), doing the same things.
TINY_BAND_WIDTHS = [64, 192, 768, 1025]


def tiny_model(kind: str):
    """A model of `kind` (MODEL_KINDS) at a few units per layer, on the CPU."""
    import torch

    from model import build_model
    from training.settings import new_model_config

    name, mask = MODEL_KINDS[kind]
    config = new_model_config(name, 8, 1, True, True, None, mask=mask)
    if name == "bsrnn":
        config["band_widths"] = TINY_BAND_WIDTHS
    torch.manual_seed(0)
    return build_model(config)


def expected_dtypes(kind: str) -> tuple[str, str]:
    """(the model input's and the estimates' dtype) for a model of `kind`."""
    return ("complex64", "complex64") if MODEL_KINDS[kind][1] == "complex" else ("float32", "float32")


def check_step(seen: Seen, kind: str, precision_name: str) -> None:
    """The assertions every training or validation step makes of what it saw (validation
    separates as inference does: fp32)."""
    model_input, estimates = expected_dtypes(kind)
    seen.expect("model input", f"cuda {model_input}")
    seen.expect("estimates", f"cuda {estimates}")
    seen.expect("loss", "cuda float32")
    seen.expect("targets.magnitudes", "cuda float32")
    seen.expect("targets.spectrograms", "cuda complex64")
    seen.expect("targets.audio", "cuda float32")
    # precision.py's LSTM policy: cuDNN's fp16 LSTM under CUDA fp16 (autocast casts its
    # input, whatever the layer before made), float32 under anything else.
    if precision_name == "fp16":
        seen.expect("LSTM input", "cuda float32", "cuda float16")
        seen.expect("LSTM output", "cuda float16")
    else:
        seen.expect("LSTM input", "cuda float32")
        seen.expect("LSTM output", "cuda float32")
    autocast = {"fp32": set(), "bf16": {"cuda bfloat16"}, "fp16": {"cuda float16"}}[precision_name]
    check(seen.autocast_dtypes == autocast,
          f"low-precision outputs {sorted(seen.autocast_dtypes)} under {precision_name}, expected {sorted(autocast)}")
    check(not seen.cpu_ops, f"ops computed on the CPU: {seen.cpu_ops}")


def run_training(seen: Seen, kind: str, precision_name: str, cache: Path, loss: str | None = None, move_model: bool = True, excerpts_per_track: int = 1) -> float:
    """loop.train_epoch over make_loader's loader for the device, on fake CUDA."""
    import torch

    from formats.cache import StemCache
    from training.loader import make_loader
    from training.loop import train_epoch
    from training.losses import DEFAULT_LOSSES
    from training.precision import resolve_precision

    model = tiny_model(kind)
    loader, _ = make_loader(cache=StemCache(cache), seq_dur=SEQ_SECONDS,
                                  samples_per_track=excerpts_per_track,
                                  augmentations=(), batch_size=BATCH_SIZE, workers=0, seed=0, device=device())
    loss = loss or DEFAULT_LOSSES[MODEL_KINDS[kind][1]]
    with harness.fake_cuda():
        if move_model:
            model.to(device())
        precision = resolve_precision(precision_name, device())
        check(precision.name == precision_name, f"resolve_precision({precision_name!r}) gave {precision.name}")
        scaler = precision.grad_scaler("cuda")
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        reads_before = harness.device_reads
        with watching(seen, model):
            mean_loss = train_epoch(model=model, loader=harness.OnTheHost(loader), optimizer=optimizer, scaler=scaler,
                                    device=device(), epoch=1, progress=False,
                                    precision=precision, loss_name=loss)
        seen.device_reads = harness.device_reads - reads_before
        seen.steps = len(loader)
        check(isinstance(mean_loss, float), f"train_epoch returned {type(mean_loss).__name__}, not a float")
        for parameter in model.parameters():
            seen.add("parameters", parameter)
            seen.add("gradients", parameter.grad)
        for state in optimizer.state.values():
            for key, value in state.items():
                if key != "step":  # Adam counts steps in a CPU scalar unless capturable
                    seen.add("Adam state", value)
        check(scaler.is_enabled() == (precision_name == "fp16"),
              f"GradScaler enabled={scaler.is_enabled()} under {precision_name}")
    seen.expect("parameters", "cuda float32")
    seen.expect("gradients", "cuda float32")
    seen.expect("Adam state", "cuda float32")  # the optimizer stepped: the scaler found no inf
    return mean_loss


def train_scenario(kind: str, precision_name: str, loss: str | None = None):
    def scenario(seen: Seen, cache: Path) -> None:
        run_training(seen, kind, precision_name, cache, loss)
        check_step(seen, kind, precision_name)
    return scenario


def sync_scenario(precision_name: str):
    """An epoch of many steps reads values back from the device a fixed number of times
    (loop.check_finite's and the mean loss's), not at every step; except that under fp16
    the GradScaler reads whether it found an inf at every step (torch's GradScaler.step
    does, for an optimizer that is not fused)."""
    def scenario(seen: Seen, cache: Path) -> None:
        run_training(seen, "umx", precision_name, cache, excerpts_per_track=SYNC_EXCERPTS_PER_TRACK)
        check(seen.steps > FIXED_READS, f"only {seen.steps} steps: too few to tell reads per step from fixed ones")
        allowed = FIXED_READS + (seen.steps if precision_name == "fp16" else 0)
        check(seen.device_reads <= allowed,
              f"{seen.device_reads} values read from the device over {seen.steps} steps, at most {allowed} expected")
    return scenario


def validate_scenario(kind: str):
    def scenario(seen: Seen, cache: Path) -> None:
        from formats.cache import StemCache
        from training.losses import DEFAULT_LOSSES
        from training.validation import validate
        from utils import HOP, SAMPLE_RATE, STEMS

        model = tiny_model(kind)
        stems = StemCache(cache)
        with harness.fake_cuda():
            model.to(device())
            with watching(seen, model):
                result = validate(model=model, cache=stems, names=stems.names("valid"), device=device(),
                                  loss_name=DEFAULT_LOSSES[MODEL_KINDS[kind][1]],
                                  segment=round(SEGMENT_SECONDS * SAMPLE_RATE / HOP) * HOP,
                                  overlap=round(OVERLAP_SECONDS * SAMPLE_RATE / HOP) * HOP)
        check(set(result.sdr) == set(STEMS), f"validation SDR for {sorted(result.sdr)}")
        check_step(seen, kind, "fp32")
    return scenario


def separate_scenario(kind: str, phase_name: str, options: dict):
    def scenario(seen: Seen, cache: Path) -> None:
        import numpy as np

        from separation import segments
        from separation.mel_vocoder import Vocoder
        from separation.phase import PHASE_METHODS, PhaseSettings
        from utils import HOP, SAMPLE_RATE, STEMS

        model = tiny_model(kind).eval()
        vocoder = Vocoder(n_mels=16, dim=8, hidden=16, nb_blocks=1).eval() if phase_name == "vocoder" else None
        length = int(MIXTURE_SECONDS * SAMPLE_RATE)
        mixture = np.zeros((length, 2), dtype=np.float32)
        settings = segments.SeparationSettings((phase_name,), PhaseSettings(gl_iters=GL_ITERS, **options),
                                               segment=round(SEGMENT_SECONDS * SAMPLE_RATE / HOP) * HOP,
                                               overlap=round(OVERLAP_SECONDS * SAMPLE_RATE / HOP) * HOP)
        with harness.fake_cuda():
            model.to(device())
            if vocoder is not None:
                vocoder.to(device())
            with watching(seen, model):
                out = segments.separate(model, mixture, settings, device(), vocoder)
        estimates = out[phase_name]
        check(set(estimates) == set(STEMS), f"separate gave {sorted(estimates)}")
        for stem, audio in estimates.items():
            check(isinstance(audio, np.ndarray) and audio.shape == (length, 2) and audio.dtype == np.float32,
                  f"{stem}: {type(audio).__name__} {getattr(audio, 'shape', '')} {getattr(audio, 'dtype', '')}")
        _, estimate_dtype = expected_dtypes(kind)
        seen.expect("estimates", f"cuda {estimate_dtype}")
        seen.expect("mixture STFT", "cuda complex64")
        takes = "complex64" if PHASE_METHODS[phase_name].complex_estimate else "float32"
        seen.expect(f"{phase_name} estimate", f"cuda {takes}")
        seen.expect("LSTM output", "cuda float32")  # inference runs without autocast
        check(not seen.cpu_ops, f"ops computed on the CPU: {seen.cpu_ops}")
    return scenario


# ------------------------------------------------------------ negative controls

def must_fail(scenario: Callable, expected: type, mentions: str, patches: Callable[[], contextlib.AbstractContextManager]):
    """A control: `scenario` run under `patches` (a bug put in on purpose) must raise
    `expected` with `mentions` in its message, or the tier could not catch that bug."""
    def control(seen: Seen, cache: Path) -> None:
        try:
            with patches():
                scenario(seen, cache)
        except expected as error:
            check(mentions in str(error), f"raised {type(error).__name__}, but not about {mentions!r}: {error}")
            seen.tensors.setdefault("raised", set()).add(f"{type(error).__name__}: {str(error).splitlines()[0]}")
            return
        raise ScenarioFailed(f"the bug went unnoticed: no {expected.__name__} mentioning {mentions!r}")
    return control


@contextlib.contextmanager
def cpu_stft_window():
    """utils.stft's window made on the CPU whatever the audio's device."""
    import torch

    import utils
    original = utils._window
    utils._window = lambda n_fft, device: torch.hann_window(n_fft, periodic=True)
    try:
        yield
    finally:
        utils._window = original


@contextlib.contextmanager
def stft_on_the_cpu():
    """The training step's STFT computed on the CPU and its result moved back: nothing mixes
    devices, only the CPU-compute log can tell."""
    from training import loop
    original = loop.stft
    loop.stft = lambda audio, *args, **kwargs: original(audio.cpu(), *args, **kwargs).to(audio.device)
    try:
        yield
    finally:
        loop.stft = original


@contextlib.contextmanager
def cpu_lead_in():
    """The previous segment's output, which a phase method continues, turned into a
    spectrum on the CPU whatever the device."""
    import torch

    from separation import phase
    original = phase._lead_in_spectrum
    phase._lead_in_spectrum = lambda lead_in, device: original(lead_in, torch.device("cpu"))
    try:
        yield
    finally:
        phase._lead_in_spectrum = original


def training_with(**changes) -> Callable:
    def scenario(seen: Seen, cache: Path) -> None:
        run_training(seen, "umx", "fp32", cache, **changes)
    return scenario


def scenarios() -> dict[str, Callable[[Seen, Path], None]]:
    """Every scenario by name: each model kind under each precision for training and
    validation, each model kind with each phase method it can use, the other losses, and
    the controls."""
    from separation.phase import PHASE_METHODS
    from training.losses import DEFAULT_LOSSES, LOSSES
    from training.precision import PRECISIONS

    precisions = [p for p in PRECISIONS if p != "auto"]
    table: dict[str, Callable] = {}
    for kind in MODEL_KINDS:
        for precision_name in precisions:
            table[f"train {kind} {precision_name}"] = train_scenario(kind, precision_name)
    for precision_name in precisions:
        table[f"sync umx {precision_name}: no value read back at every step"] = sync_scenario(precision_name)
    for loss, entry in LOSSES.items():
        if loss not in DEFAULT_LOSSES.values():
            kind = "bsrnn-complex" if entry.mask == "complex" else "bsrnn"
            table[f"train {kind} fp16 loss {loss}"] = train_scenario(kind, "fp16", loss=loss)
    for kind in MODEL_KINDS:
        table[f"validate {kind}"] = validate_scenario(kind)
    for kind, (_, mask) in MODEL_KINDS.items():
        for phase_name, method in PHASE_METHODS.items():
            if method.applies_to(mask == "complex"):
                for options in PHASE_VARIANTS.get(phase_name, [{}]):
                    label = " ".join([phase_name, *map(str, options.values())])
                    table[f"separate {kind} {label}"] = separate_scenario(kind, phase_name, options)
    table["control: a CPU STFT window raises"] = must_fail(training_with(), RuntimeError, "device", cpu_stft_window)
    table["control: a lead-in spectrum on the CPU raises"] = must_fail(
        separate_scenario("umx", "griffinlim", {"gl_backend": "torch"}), RuntimeError, "device", cpu_lead_in)
    table["control: a model left on the CPU raises"] = must_fail(training_with(move_model=False), RuntimeError,
                                                                "device", contextlib.nullcontext)
    table["control: an STFT computed on the CPU is caught"] = must_fail(
        train_scenario("umx", "fp32"), ScenarioFailed, "ops computed on the CPU", stft_on_the_cpu)
    return table


def run(names: list[str], cache: Path) -> dict[str, dict]:
    import warnings

    # torch's notes that this build has no cuDNN and no pinned memory: known, and beside the point here
    warnings.filterwarnings("ignore", message=".*cuDNN.*")
    warnings.filterwarnings("ignore", message=".*pin_memory.*")
    table = scenarios()
    results = {}
    for name in names or list(table):
        seen, started = Seen(), time.perf_counter()
        try:
            table[name](seen, cache)
            results[name] = {"ok": True, "error": None}
        except Exception:
            results[name] = {"ok": False, "error": "".join(traceback.format_exc().splitlines(True)[-60:])}
        results[name] |= {"seen": seen.as_json(), "seconds": round(time.perf_counter() - started, 2)}
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--library", type=Path, required=True, help="the built fake CUDA runtime (harness.build_shim)")
    p.add_argument("--cache", type=Path, required=True, help="a preprocess.py cache with stems and magnitudes")
    p.add_argument("--out", type=Path, required=True, help="where to write the results (JSON)")
    p.add_argument("--list", action="store_true", help="write the scenario names only")
    p.add_argument("names", nargs="*", help="scenarios to run (default: all)")
    args = p.parse_args()
    harness.install(args.library)
    import torch
    torch.set_num_threads(1)
    results = sorted(scenarios()) if args.list else run(args.names, args.cache)
    args.out.write_text(json.dumps(results, indent=1))
    if not args.list:
        failed = [name for name, result in results.items() if not result["ok"]]
        print(f"{len(results) - len(failed)} passed, {len(failed)} failed" + "".join(f"\n  {n}" for n in failed))


if __name__ == "__main__":
    sys.exit(main())
