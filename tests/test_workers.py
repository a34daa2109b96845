"""inference.py's default --workers: as many as the cores and the free memory allow
(processes.choose_workers), said in one line; --workers N overrides it."""

from __future__ import annotations

from pathlib import Path

import pytest

import inference
from separation import processes
from separation.processes import MAIN_MEMORY, WORKER_MEMORY, choose_workers

GIB = 2**30


@pytest.mark.parametrize("cores, memory_gib, expected, limit", [
    (12, 16, 3, "memory"),        # a 12-core, 16 GB laptop: memory, not the cores, decides
    (2, 22, 2, "the cores"),
    (16, 64, 12, "memory"),
    (4, 3, 1, "memory"),          # less than one worker's need: still one, in the main process
    (1, 64, 1, "the cores"),
])
def test_workers_fit_cores_and_memory(cores: int, memory_gib: float, expected: int, limit: str) -> None:
    workers, why = choose_workers(cores, int(memory_gib * GIB))
    assert workers == expected
    assert workers <= cores and (workers == 1 or MAIN_MEMORY + workers * WORKER_MEMORY <= memory_gib * GIB)
    assert why.startswith(f"--workers {expected}: {cores} core") and f"limited by {limit}" in why
    assert f"{memory_gib:.1f} GiB available memory" in why and "\n" not in why


def test_unreadable_memory_means_one_worker() -> None:
    workers, why = choose_workers(8, None)
    assert workers == 1 and "free memory unknown" in why and "cannot be read" in why


def test_memory_reading_is_a_plausible_size() -> None:
    memory, kind = processes.available_memory()
    assert kind in ("available", "half the physical") and 2**26 < memory < 2**50
    assert processes.available_cores() >= 1


def test_inference_prints_its_choice_and_an_override_wins(monkeypatch, capsys, hq_root: Path,
                                                          untrained_checkpoint: Path, tmp_path: Path) -> None:
    """With patched readings (64 cores, 5 GiB free: memory allows one worker) inference.py
    says so in one line and runs; with --workers 0 it prints no choice."""
    monkeypatch.setattr(processes, "available_cores", lambda: 64)
    monkeypatch.setattr(processes, "available_memory", lambda: (5 * GIB, "available"))
    argv = ["--root", str(hq_root), "--is-wav", "--tracks", "Synth D - Four", "--checkpoint", str(untrained_checkpoint),
            "--device", "cpu", "--samples", "0", "--out", str(tmp_path / "results")]
    inference.main(argv)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("--workers")]
    assert lines == ["--workers 1: 64 cores, 5.0 GiB available memory, 5.0 GiB per worker on a 4-minute track; "
                     "limited by memory (--workers N overrides)"]
    inference.main([*argv, "--workers", "0", "--out", str(tmp_path / "serial")])
    assert not [line for line in capsys.readouterr().out.splitlines() if line.startswith("--workers")]
    assert (tmp_path / "serial" / "tiny-mixture" / "summary.json").is_file()
