"""Helpers shared by the tests (not a test module; the fixtures are in conftest.py):
running the project's scripts as subprocesses or in-process, and checking their errors."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Sequence

import pytest

import utils

REPO_ROOT = Path(__file__).resolve().parents[1]

# The smallest training that still exercises every part of train.py.
TINY_TRAIN = ["--hidden-size", "16", "--nb-layers", "1", "--seq-dur", "1", "--samples-per-track", "2",
              "--batch-size", "2", "--workers", "0", "--device", "cpu"]


def script_env(env: dict | None = None) -> dict:
    """The subprocess environment: one BLAS/OpenMP thread, like conftest's `single_torch_thread`."""
    return {**(os.environ if env is None else env), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1"}


def run_script(script: str, *args, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run one of the project's scripts as a real subprocess from the repository root."""
    return subprocess.run([sys.executable, script, *map(str, args)], cwd=REPO_ROOT, capture_output=True,
                          text=True, env=script_env(env), timeout=timeout)


def error_lines(stderr: str) -> list[str]:
    """Non-empty stderr lines (tqdm's carriage-return redraws count as part of their line)."""
    return [line for line in stderr.split("\n") if line.strip()]


def assert_one_error_line(result_or_stderr, returncode: int | None = None, mentions: str | None = None) -> str:
    """The CLI convention (README): exit status 2 and exactly one stderr line `error: ...`, no traceback."""
    if isinstance(result_or_stderr, subprocess.CompletedProcess):
        stderr, returncode = result_or_stderr.stderr, result_or_stderr.returncode
    else:
        stderr = result_or_stderr
    assert returncode == 2, f"expected exit status 2 (a user error), got {returncode}; stderr={stderr!r}"
    lines = error_lines(stderr)
    assert len(lines) == 1, f"expected exactly one stderr line, got {len(lines)}:\n{stderr}"
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in stderr
    if mentions is not None:
        assert mentions in lines[0], lines[0]
    return lines[0]


def run_in_process(main: Callable[[Sequence[str]], None], argv: Sequence,
                   capsys: pytest.CaptureFixture) -> tuple[int, str]:
    """A script's main run as its command line runs it (utils.run_cli): (exit status, stderr)."""
    capsys.readouterr()
    code = utils.run_cli(main, [str(a) for a in argv])
    return code, capsys.readouterr().err


def offline_env(home: Path) -> dict:
    """Environment without MUSDB_PATH and with an empty HOME (musdb's download target)."""
    env = {k: v for k, v in os.environ.items() if k != "MUSDB_PATH"}
    env["HOME"] = str(home)
    return env


def repository_imports(module: str) -> set[str]:
    """The repository's modules that `module` (dotted) imports anywhere in its source."""
    names = set()
    for node in ast.walk(ast.parse((REPO_ROOT / f"{module.replace('.', '/')}.py").read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return {n for n in names if (REPO_ROOT / f"{n.replace('.', '/')}.py").is_file()}
