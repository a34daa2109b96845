"""The CUDA code paths, on a machine without a GPU: training steps of every model kind
under every precision, validation, and separation with every phase method, on fake CUDA
tensors (tests/fake_cuda), each checking that its tensors stay on the device with the
intended dtypes, and controls showing that a CPU tensor put in on purpose is caught.

The scenarios run in subprocesses, which must load the stand-in CUDA runtime before
torch; each is one test here. Where the runtime cannot be built (no C++ compiler, no torch
headers) the tests skip with the reason."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from fake_cuda import harness, scenarios
from pipeline_helpers import REPO_ROOT, run_script, script_env

PROCESSES = 2  # the scenarios run one thread each: one process per core of a 2-core machine


@pytest.fixture(scope="module")
def fake_cuda_library():
    try:
        return harness.build_shim()
    except harness.ShimUnavailable as reason:
        pytest.skip(f"fake CUDA runtime unavailable: {reason}")


@pytest.fixture(scope="module")
def results(fake_cuda_library, hq_cache, tmp_path_factory) -> dict[str, dict]:
    """Every scenario's result, from PROCESSES subprocesses that each run a share of them at once."""
    folder = tmp_path_factory.mktemp("fake_cuda")
    path = os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "tests"), os.environ.get("PYTHONPATH", "")])
    names = sorted(scenarios.scenarios())
    outs = [folder / f"results{i}.json" for i in range(PROCESSES)]
    running = [subprocess.Popen([sys.executable, "-m", "fake_cuda.scenarios", "--library", str(fake_cuda_library),
                                 "--cache", str(hq_cache), "--out", str(out), *names[i::PROCESSES]],
                                cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                env={**script_env(), "PYTHONPATH": path})
               for i, out in enumerate(outs)]
    merged = {}
    for process, out in zip(running, outs):
        _, stderr = process.communicate(timeout=900)
        assert out.is_file(), f"the scenarios did not finish (exit status {process.returncode}):\n{stderr[-3000:]}"
        merged |= json.loads(out.read_text())
    return merged


@pytest.mark.slow  # ~50 scenarios of ~1 s each: the full run's tier, not the quick one's
@pytest.mark.parametrize("name", sorted(scenarios.scenarios()))
def test_on_fake_cuda(name, results):
    result = results[name]
    assert result["ok"], f"{result['error']}\nseen: {json.dumps(result['seen'], indent=1)}"


def test_every_model_precision_and_phase_method_has_a_scenario():
    from separation.phase import PHASE_METHODS
    from training.precision import PRECISIONS

    names = scenarios.scenarios()
    for kind in scenarios.MODEL_KINDS:
        for precision in set(PRECISIONS) - {"auto"}:
            assert f"train {kind} {precision}" in names
        assert f"validate {kind}" in names
    assert {name.split()[2] for name in names if name.startswith("separate ")} == set(PHASE_METHODS)


def test_no_compiler_is_one_line_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("CXX", "no-such-compiler")
    with pytest.raises(harness.ShimUnavailable, match=r"^no C\+\+ compiler \(no-such-compiler\) on PATH$"):
        harness.build_shim(tmp_path)


def test_failed_build_is_one_line_reason_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("CXX", "false")  # a "compiler" that fails
    with pytest.raises(harness.ShimUnavailable) as failure:
        harness.build_shim(tmp_path)
    assert "\n" not in str(failure.value) and "could not build" in str(failure.value)
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_gpu_memory_bench_measures_full_size_umx(fake_cuda_library, tmp_path):
    out = tmp_path / "gpu_memory.json"
    result = run_script("-m", "bench.gpu_memory", "--models", "umx", "--precisions", "fp16", "--batch", "2",
                        "--line-batch", "1", "--seconds", "1", "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"umx +fp16 +[\d,]+ +[\d,]+ +[\d,]+ +[\d,.]+ \|", result.stdout), result.stdout
    figures = json.loads(out.read_text())
    one, two = sorted(figures["measurements"], key=lambda row: row["batch"])
    assert two["total_mib"] > one["total_mib"] > one["weights_mib"] + one["adam_mib"] > 0
    assert two["saved_mib"] > one["saved_mib"] > 0
    (row,) = figures["table"]
    largest = [row["largest_batch"][card] for card in sorted(figures["cards_mib"], key=figures["cards_mib"].get)]
    assert largest == sorted(largest) and largest[0] > 0
