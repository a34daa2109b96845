"""CUDA code paths on a CPU-only torch: fake CUDA tensors (shapes, dtypes and devices,
no data) through the project's real code.

torch's FakeTensorMode makes tensors on a "cuda" device that carry no data; every op on
them computes only the output's shape, dtype and device, and an op that mixes a cuda and
a CPU tensor raises as it would on a GPU. A CPU build of torch still lacks what a CUDA
device needs beyond kernels, so:

- build_shim() compiles fake_cuda_runtime.cpp (a no-op CUDA device guard and hooks that
  report one device) against the installed torch, into BUILD_DIR (gitignored);
- install(library) loads it before torch is imported (a process can do this once, so the
  tier runs in a subprocess: scenarios.py), then patches the Python side: autocast("cuda")
  and GradScaler("cuda") run, the card reports compute capability CAPABILITY, CUDA events
  are no-ops, and reading a value from a fake tensor gives a placeholder (see
  _placeholder_scalar);
- fake_cuda() is the mode to run the code in; cpu_compute_log() records any op that
  computes on the CPU meanwhile, which the FakeTensorMode alone does not catch (a whole
  computation done on the CPU and moved afterwards mixes nothing); OnTheHost lets a
  training loader do its own work as in training, on real CPU tensors.

Nothing here measures time or tells whether a kernel exists for a dtype on a given card;
memory on fake tensors is bench/gpu_memory.py's.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

SOURCE = Path(__file__).with_name("fake_cuda_runtime.cpp")
# Gitignored; a different torch or shim source builds a library of its own name.
BUILD_DIR = Path(__file__).with_name("build")
# What the fake card reports to torch.cuda.get_device_capability: an Ampere card, on which
# bf16 is native (precision.py's table); each scenario names its precision explicitly.
CAPABILITY = (8, 0)


class ShimUnavailable(Exception):
    """The fake CUDA runtime cannot be built here; the message says why, in one line."""


def _torch_dir() -> Path:
    spec = importlib.util.find_spec("torch")  # found, not imported: the shim must load first
    if spec is None or not spec.submodule_search_locations:
        raise ShimUnavailable("torch is not installed")
    return Path(list(spec.submodule_search_locations)[0])


def build_shim(build_dir: Path = BUILD_DIR) -> Path:
    """The shared library of fake_cuda_runtime.cpp for the installed torch, compiled on
    first use (a few seconds) and kept in build_dir; ShimUnavailable when it cannot be."""
    torch_dir = _torch_dir()
    include, lib = torch_dir / "include", torch_dir / "lib"
    if not (include / "ATen" / "detail" / "CUDAHooksInterface.h").is_file():
        raise ShimUnavailable(f"torch's C++ headers are not installed (no {include}/ATen)")
    compiler = shutil.which(os.environ.get("CXX", "g++"))
    if compiler is None:
        raise ShimUnavailable(f"no C++ compiler ({os.environ.get('CXX', 'g++')}) on PATH")
    key = hashlib.sha256(SOURCE.read_bytes() + (torch_dir / "version.py").read_bytes()
                         + str(torch_dir).encode()).hexdigest()[:16]
    library = build_dir / f"libfakecuda-{key}.so"
    if library.is_file():
        return library
    build_dir.mkdir(parents=True, exist_ok=True)
    partial = build_dir / f"{library.name}.{os.getpid()}.part"
    # The rpath lets the library find libc10 and libtorch_cpu before torch has loaded them.
    command = [compiler, "-shared", "-fPIC", "-std=c++20", "-O1", f"-I{include}",
               f"-I{include / 'torch' / 'csrc' / 'api' / 'include'}", f"-L{lib}", f"-Wl,-rpath,{lib}",
               str(SOURCE), "-o", str(partial), "-lc10", "-ltorch_cpu"]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        partial.unlink(missing_ok=True)
        errors = [line for line in result.stderr.splitlines() if "error" in line] or result.stderr.splitlines() or ["?"]
        raise ShimUnavailable(f"{Path(compiler).name} could not build the fake CUDA runtime: {errors[0].strip()}")
    os.replace(partial, library)  # atomic: a concurrent build finds a whole library or none
    return library


# How many values have been read from fake CUDA tensors: on a GPU, each read waits for the
# device to finish the work queued before it.
device_reads = 0


def _placeholder_scalar(fake_mode, func, tensor):
    """The value of item(), int(), float(), bool() and tolist() on a fake tensor, which has
    none: the value of a healthy run at each read these code paths make. Floats 0.0 (a
    finite loss; no inf found by the GradScaler), integers -1 (train.py's "no non-finite
    step yet"), booleans False (istft's check that the window's overlap-add vanishes
    somewhere)."""
    import torch
    global device_reads
    device_reads += tensor.device.type == "cuda"
    if tensor.dtype == torch.bool:
        return False
    if tensor.dtype.is_floating_point or tensor.dtype.is_complex:
        return 0.0
    return -1


def _placeholder_equal(fake_mode, func, *args, **kwargs):
    # torch.equal's only caller on these paths is istft's window check: "not degenerate".
    return False


def _placeholder_numpy(self, *, force: bool = False):
    """A fake CPU tensor's .numpy(): zeros of its shape and dtype. A fake cuda tensor
    raises, as a real one does: the code must move it to the CPU first."""
    import numpy as np
    if self.device.type != "cpu":
        raise TypeError(f"can't convert {self.device} device type tensor to numpy. Use Tensor.cpu() to copy the "
                        "tensor to host memory first.")
    return np.zeros(tuple(self.shape), dtype=np.dtype(str(self.dtype).removeprefix("torch.")))


class _NoOpEvent:
    """torch.cuda.Event for a device that has no work in flight."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def record(self, stream=None) -> None:
        pass

    def synchronize(self) -> None:
        pass

    def query(self) -> bool:
        return True


def install(library: Path) -> None:
    """Loads the fake CUDA runtime, then torch, and patches torch's Python side for it."""
    if "torch" in sys.modules:
        raise RuntimeError("the fake CUDA runtime must be loaded before torch is imported")
    ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)
    import torch
    import torch._subclasses.fake_tensor as fake_tensor
    from torch._subclasses import fake_impls

    # autocast("cuda") and GradScaler("cuda") turn themselves off where torch.cuda is absent.
    torch.cuda.amp.common.amp_definitely_not_available = lambda: False
    torch.cuda.is_bf16_supported = lambda including_emulation=True: CAPABILITY >= (8, 0) or including_emulation
    torch.cuda.get_device_capability = lambda device=None: CAPABILITY
    torch.cuda.Event = _NoOpEvent
    # FakeTensorMode starts a CUDA context by allocating a real cuda tensor: there is none to start.
    fake_tensor.init_gpu_context = lambda device: None
    fake_impls.op_implementations_dict[torch.ops.aten._local_scalar_dense.default] = _placeholder_scalar
    fake_impls.op_implementations_dict[torch.ops.aten.equal.default] = _placeholder_equal
    fake_tensor.FakeTensor.numpy = _placeholder_numpy


def fake_cuda():
    """The mode in which tensors made on "cuda" are fake. Real CPU tensors (a model built
    outside it, the loader's batches) may come in: an op on them makes fake ones. Build a
    model outside the mode and .to("cuda") it inside."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    return FakeTensorMode(allow_non_fake_inputs=True)


# Fewer elements than this on the CPU are bookkeeping (the optimizer's step count, a batch's
# row numbers), not signal work: the smallest signal here, an STFT window, has 4096.
CPU_WORK_ELEMENTS = 256


def cpu_compute_log():
    """A TorchDispatchMode recording, by op name, every op that computes a CPU tensor of
    CPU_WORK_ELEMENTS elements or more; views and copies from a device do not count.
    Enter it inside fake_cuda(); its .ops is a dict {op: count}."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    # Copies count only within the CPU (a dtype conversion there is CPU work); between devices
    # they are the transfers every step makes.
    copies = {torch.ops.aten._to_copy.default, torch.ops.aten.copy_.default}
    free = {torch.ops.aten.lift_fresh.default, torch.ops.aten.lift_fresh_copy.default, torch.ops.aten._pin_memory.default,
            torch.ops.aten.detach.default, torch.ops.aten.alias.default}

    def from_the_cpu(func, args) -> bool:
        sources = [a for a in args[1 if func == torch.ops.aten.copy_.default else 0:] if isinstance(a, torch.Tensor)]
        return bool(sources) and sources[0].device.type == "cpu"

    class CpuCompute(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.ops: dict[str, int] = {}

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func in free or func.is_view or func in copies and not from_the_cpu(func, args):
                return out
            for tensor in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(tensor, torch.Tensor) and tensor.device.type == "cpu" and tensor.numel() >= CPU_WORK_ELEMENTS:
                    name = str(func.overloadpacket.__name__)
                    self.ops[name] = self.ops.get(name, 0) + 1
            return out

    return CpuCompute()


class OnTheHost:
    """A training loader whose own work (reading, collating, pinning) runs as it does in
    training, on real CPU tensors outside the fake mode and the logs; the batches it
    delivers then enter the step as its input."""

    def __init__(self, loader) -> None:
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        from torch.utils._python_dispatch import _disable_current_modes
        with _disable_current_modes():
            batches = iter(self.loader)
        while True:
            with _disable_current_modes():
                batch = next(batches, None)
            if batch is None:
                return
            yield batch
