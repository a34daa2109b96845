"""Helpers shared by the benchmarks (run from the repository root as python -m bench.<name>)."""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
from pathlib import Path
from typing import Iterator

import torch
from torch.utils.data import DataLoader

from data import EpochSampler
from utils import UserError


def batches_forever(loader: DataLoader, sampler: EpochSampler, first_epoch: int = 1) -> Iterator[torch.Tensor]:
    """training.loader.make_loader's batches epoch after epoch, each epoch drawing its own excerpts as
    in training, so that a timing may ask for more batches than one epoch of a small cache
    holds (4 tracks x 64 excerpts are 16 batches of 16)."""
    if len(loader) == 0:  # would otherwise loop forever without yielding
        raise UserError("the training loader holds no batches: the cache needs a training track and "
                        "--samples-per-track at least 1")

    def batches() -> Iterator[torch.Tensor]:
        for epoch in itertools.count(first_epoch):
            sampler.set_epoch(epoch)
            yield from loader

    return batches()


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """One torch and BLAS thread meanwhile, as in a process of inference.py's pool
    (separation.processes._limit_threads); the counts are restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits
        limits = threadpool_limits(1)
    except ImportError:
        limits = None
    try:
        yield
    finally:
        if limits is not None:
            limits.restore_original_limits()
        torch.set_num_threads(before)


def memory_kind() -> str | None:
    """'PSS' where /proc/<pid>/smaps_rollup is readable (shared pages, e.g. the memory-mapped
    cache, split between the processes that map them, so a tree's sum counts them once),
    else 'RSS' (shared pages counted in every process), else None (no /proc)."""
    if os.access("/proc/self/smaps_rollup", os.R_OK):
        return "PSS"
    return "RSS" if os.access("/proc/self/status", os.R_OK) else None


def process_tree(root: int) -> list[int]:
    """`root` and all its descendants, from the parent ids in /proc/<pid>/stat."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])  # after the (command name), state, ppid
        except (OSError, IndexError, ValueError):  # the process ended meanwhile
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    tree, frontier = [], [root]
    while frontier:
        pid = frontier.pop()
        tree.append(pid)
        frontier += children.get(pid, [])
    return tree


def process_bytes(pid: int, kind: str) -> int:
    path, field = (f"/proc/{pid}/smaps_rollup", "Pss:") if kind == "PSS" else (f"/proc/{pid}/status", "VmRSS:")
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    except OSError:  # the process ended meanwhile
        pass
    return 0


def tree_read_bytes() -> int:
    """Bytes this process and its descendants have read from storage so far (Linux's
    /proc/<pid>/io read_bytes: the reads the page cache did not serve); 0 without /proc."""
    total = 0
    for pid in process_tree(os.getpid()):
        try:
            for line in Path(f"/proc/{pid}/io").read_text().splitlines():
                if line.startswith("read_bytes:"):
                    total += int(line.split()[1])
        except OSError:  # the process ended meanwhile, or no /proc
            pass
    return total


class PeakTreeMemory:
    """Peak of the summed memory of this process and its descendants, sampled every
    `interval` seconds by a background thread while the context is open."""

    def __init__(self, interval: float = 0.25) -> None:  # a /proc scan costs a few ms of a shared core
        self.kind, self.interval, self.peak = memory_kind(), interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        self.peak = max(self.peak, sum(process_bytes(pid, self.kind) for pid in process_tree(os.getpid())))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> "PeakTreeMemory":
        if self.kind:
            self.sample()
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.kind:
            self._stop.set()
            self._thread.join()
            self.sample()
