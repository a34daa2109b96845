"""Helpers shared by the pipeline tests (not a test module, not a conftest).

The expensive preprocessing of the generated MUSDB18-HQ dataset is done once per test
session: `shared_hq_cache` writes it under pytest's base temp directory and every module
that needs it reuses it, whichever module asks first.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]

# The smallest training that still exercises every part of train.py.
TINY_TRAIN = ["--hidden-size", "16", "--nb-layers", "1", "--seq-dur", "1", "--samples-per-track", "2",
              "--batch-size", "2", "--workers", "0", "--device", "cpu"]


def script_env(env: dict | None = None) -> dict:
    """The subprocess environment: one BLAS/OpenMP thread, like `single_torch_thread`."""
    return {**(os.environ if env is None else env), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1"}


def run_script(script: str, *args, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run one of the project's scripts as a real subprocess from the repository root."""
    return subprocess.run([sys.executable, script, *map(str, args)], cwd=REPO_ROOT, capture_output=True,
                          text=True, env=script_env(env), timeout=timeout)


@pytest.fixture(scope="module", autouse=True)
def single_torch_thread():
    """Tiny models run far faster on one thread: with two, every small LSTM step pays
    OpenMP synchronisation, which costs ~100x on a busy machine. Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:  # numpy's BLAS too (museval's least squares): threadpoolctl comes with librosa's scikit-learn
        from threadpoolctl import threadpool_limits
        limits = threadpool_limits(1)
    except ImportError:
        limits = None
    yield
    if limits is not None:
        limits.restore_original_limits()
    torch.set_num_threads(before)


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


def shared_hq_cache(tmp_path_factory: pytest.TempPathFactory, hq_root: Path) -> tuple[Path, subprocess.CompletedProcess]:
    """preprocess.py --magnitudes on the generated MUSDB18-HQ root, run once per session as
    a subprocess; returns (cache dir, the completed process of that one run)."""
    base = tmp_path_factory.getbasetemp() / "shared_hq_cache"
    cache, record = base / "cache", base / "run.json"
    if not record.exists():
        base.mkdir(exist_ok=True)
        result = run_script("preprocess.py", "--root", hq_root, "--is-wav", "--cache", cache, "--magnitudes")
        record.write_text(json.dumps({"args": [str(a) for a in result.args], "returncode": result.returncode,
                                      "stdout": result.stdout, "stderr": result.stderr}))
    saved = json.loads(record.read_text())
    result = subprocess.CompletedProcess(saved["args"], saved["returncode"], saved["stdout"], saved["stderr"])
    assert result.returncode == 0, result.stderr[-3000:]
    return cache, result


def offline_env(home: Path) -> dict:
    """Environment without MUSDB_PATH and with an empty HOME (musdb's download target)."""
    env = {k: v for k, v in os.environ.items() if k != "MUSDB_PATH"}
    env["HOME"] = str(home)
    return env
