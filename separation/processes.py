"""Separation and scoring spread over processes: `Workers`, the pool behind inference.py's
--workers. On a CPU-only run each pool process loads its own copy of the models and
separates whole tracks or files; on a GPU the model runs in the main process and the pool
runs museval, the writing of files and the phase methods that are slow on a CPU."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Protocol, Sequence

import torch

from formats.checkpoint import load_separator, load_vocoder
from separation.phase import PHASE_METHODS
from separation.segments import SeparationSettings


def models_in_workers(device: torch.device, workers: int) -> bool:
    """Whether the pool's processes run the model too, each separating whole tracks (files)
    with its own copy of it: on a CPU-only run with a pool, where the model's CPU time would
    otherwise run track after track in the main process while the pool waits for it. On a
    GPU the model stays in the main process, on the one device, and the pool runs museval
    and the phase methods that are slow on a CPU (pooled_phases)."""
    return device.type == "cpu" and workers > 1


def pooled_phases(settings: SeparationSettings, device: torch.device, workers: int) -> list[str]:
    """With the model in the main process (see models_in_workers), the phases of `settings`
    that a pool of `workers` > 1 processes runs as PhaseJobs (PHASE_METHODS' cpu_bound
    ones); the others take seconds and run where the model does, on `device`."""
    if workers <= 1:
        return []
    return [phase for phase in settings.phases if PHASE_METHODS[phase].cpu_bound(device, settings.phase)]

# What one pool process needs at its peak, scoring a 4-minute MUSDB18 track on the CPU with
# the mixture phase and Griffin-Lim (the default model; museval's whole-track projections
# the largest part): 4,821 MiB measured, rounded up; the main process needs about 0.3 GiB
# (docs/speed.md#inference-memory). Longer tracks need more.
WORKER_MEMORY = 5 * 2**30
MAIN_MEMORY = 0.3 * 2**30


def available_cores() -> int:
    """The cores this process may run on (a container's or taskset's share, not the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def available_memory() -> tuple[int | None, str]:
    """(bytes a new process can use, what the figure is): Linux's MemAvailable; elsewhere
    half the physical memory, a guess at what other programs leave; None where neither
    can be read."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "available"
    except OSError:
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2, "half the physical"
    except (AttributeError, ValueError, OSError):
        return None, "unknown"


def choose_workers(cores: int, memory: int | None, memory_kind: str = "available") -> tuple[int, str]:
    """inference.py's default --workers: one per core, as many as `memory` bytes hold
    (MAIN_MEMORY for the main process, WORKER_MEMORY each), at least 1; and the one line
    that says why."""
    by_memory = 1 if memory is None else max(1, int((memory - MAIN_MEMORY) // WORKER_MEMORY))
    workers = min(cores, by_memory)
    have = "free memory unknown" if memory is None else f"{memory / 2**30:.1f} GiB {memory_kind} memory"
    if memory is None:
        limit = "memory, which cannot be read on this system"
    else:
        limit = "memory" if by_memory < cores else "the cores"
    return workers, (f"--workers {workers}: {cores} core{'s' * (cores != 1)}, {have}, "
                     f"{WORKER_MEMORY / 2**30:.1f} GiB per worker on a 4-minute track; limited by {limit} "
                     "(--workers N overrides)")


def default_workers() -> tuple[int, str]:
    """choose_workers on this machine's cores and free memory."""
    return choose_workers(available_cores(), *available_memory())


def worker_threads(workers: int) -> int:
    """torch/BLAS threads of each of `workers` pool processes: the cores shared among them,
    and never more than this process uses (so OMP_NUM_THREADS or torch.set_num_threads
    here bound the pool too)."""
    return max(1, min(torch.get_num_threads(), (os.cpu_count() or 1) // workers))


def _limit_threads(threads: int) -> None:
    """`threads` torch and BLAS threads in this process: the pool's processes share the
    cores (museval's least squares gain nothing from threads on its small systems, and the
    model's and phase methods' work is split across tracks instead)."""
    torch.set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(threads)
    except ImportError:
        pass


@dataclass(frozen=True)
class ModelFiles:
    """The checkpoints a run separates with: separators by name, and the vocoder of --phase
    vocoder. The main process loads them, and so does each pool process that separates
    (models_in_workers), its own copies."""
    separators: dict[str, str]
    vocoder: str | None = None

    def load(self, device: torch.device) -> LoadedModels:
        """Every model on `device`; a file that is not such a checkpoint is a UserError."""
        separators, epochs = {}, {}
        for name, path in self.separators.items():
            separators[name], state = load_separator(path, device)
            epochs[name] = state.get("epoch")
        vocoder = None if self.vocoder is None else load_vocoder(self.vocoder, device)[0]
        return LoadedModels(self, separators, epochs, vocoder)


@dataclass(frozen=True)
class LoadedModels:
    """A run's models, loaded from `files` (ModelFiles.load): the separators by the same
    names (in eval mode), the epoch each was saved at (None if its checkpoint does not
    say), and the vocoder of --phase vocoder (None without it)."""
    files: ModelFiles
    separators: dict[str, torch.nn.Module]
    epochs: dict[str, int | None]
    vocoder: torch.nn.Module | None = None


# A pool process's own models (see Workers), loaded once by its initializer.
_worker_models: LoadedModels | None = None


def _start_worker(threads: int, models: ModelFiles | None) -> None:
    """Pool initializer: `threads` threads and, when given, the models (on the CPU)."""
    global _worker_models
    _limit_threads(threads)
    if models is not None:
        _worker_models = models.load(torch.device("cpu"))


class SeparateWork(Protocol):
    """One track or file to separate (a value that pickles: it may go to a pool process)
    under `settings`, and what to do with the result."""

    @property
    def settings(self) -> SeparationSettings: ...

    def __call__(self, pool: Workers, models: LoadedModels, device: torch.device, defer: Sequence[str]) -> None:
        """Separate with `models` on `device`, the phases in `defer` as PhaseJobs
        (segments.separate_deferring), and submit to `pool` the jobs that finish the work
        (write, score), each keyed so that pool.results() holds their results."""


def _separate_in_worker(work: SeparateWork) -> dict[Hashable, Any]:
    """A Workers job (models_in_workers): `work` in this pool process, with its own models
    on its CPU, every phase method run here (nothing deferred) and the finishing jobs run
    here, one after another; their results by key."""
    assert _worker_models is not None, "a pool process that separates loads the models first"
    with Workers(1) as here:
        work(here, _worker_models, torch.device("cpu"), ())
        return here.results()


# The key of a job that returns several keyed results (_separate_in_worker's), merged into results().
_SEVERAL = object()


class Workers:
    """Runs fn(*args) jobs (museval, phase methods that are slow on a CPU, writing files)
    in the calling process (workers 0 or 1) or in a pool of `workers` processes, so that
    --workers means one thing. submit() blocks while `max_pending` jobs are in flight
    (default 2 x workers), so the estimates, magnitudes or tracks they hold stay bounded in
    memory. Use as a context manager; results() waits for all and returns {key: fn's result}.

    separate() hands over a whole track or file. Given the run's `models` on a CPU-only run
    (models_in_workers), each pool process loads its own copy of them once and separates
    whole tracks itself; otherwise the model runs in the calling process on `device`."""

    def __init__(self, workers: int, max_pending: int | None = None, device: torch.device = torch.device("cpu"),
                 models: ModelFiles | None = None) -> None:
        self.workers = max(1, workers)
        self.max_pending = max_pending or 2 * self.workers
        self.device = device
        self.models = models if models is not None and models_in_workers(device, self.workers) else None
        self.pool = None
        if self.workers > 1:
            # spawn: the main process has torch's thread pools running, which fork does not copy safely
            self.pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_start_worker,
                                            initargs=(worker_threads(self.workers), self.models))
        self.pending: dict[Future, Hashable] = {}
        self.done: dict[Hashable, Any] = {}

    def submit(self, key: Hashable, fn: Callable[..., Any], *args) -> None:
        if self.pool is None:
            self.done[key] = fn(*args)
            return
        while len(self.pending) >= self.max_pending:
            self._collect(FIRST_COMPLETED)
        self.pending[self.pool.submit(fn, *args)] = key

    def separate(self, work: SeparateWork, models: LoadedModels) -> None:
        """One whole track or file (see SeparateWork): with the models in the pool
        processes, one job there, with the process's own copies of the models, whose
        finishing jobs' results join results(); else here with `models` on `device`, the
        phase methods that are slow on a CPU (pooled_phases) deferred to the pool as PhaseJobs."""
        if self.models is None:
            work(self, models, self.device, pooled_phases(work.settings, self.device, self.workers))
            return
        self.submit(_SEVERAL, _separate_in_worker, work)

    def _collect(self, how: str) -> None:
        finished, _ = wait(list(self.pending), return_when=how)
        for future in finished:
            key = self.pending.pop(future)
            if key is _SEVERAL:
                self.done |= future.result()
            else:
                self.done[key] = future.result()

    def results(self) -> dict[Hashable, Any]:
        if self.pending:
            self._collect("ALL_COMPLETED")
        return self.done

    def __enter__(self) -> "Workers":
        return self

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=exc[0] is None, cancel_futures=exc[0] is not None)
