"""Every benchmark in bench/ runs to its figures on the tests' small data: a cache of three
4-second training tracks holds fewer batches than the timings ask for, so the loaders
must go round again (bench/common.batches_forever) instead of ending in StopIteration."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from test_vocoder import TINY_VOCODER

from pipeline_helpers import REPO_ROOT, run_script

# A batch of 64 half-second excerpts: the 3 training tracks x 64 excerpts per epoch are 3
# batches, fewer than any of these timings takes.
SMALL_BATCHES = ["--batch-size", "64", "--seq-dur", "0.5", "--workers", "0"]
NUMBER = r"\d+\.\d+"


@pytest.fixture(scope="module")
def data(tmp_path_factory, hq_root, hq_cache) -> dict[str, Path]:
    vocoder = tmp_path_factory.mktemp("bench") / "vocoder.pt"
    result = run_script("vocoder.py", "--cache", hq_cache, "--out", vocoder, "--steps", "1", *TINY_VOCODER)
    assert result.returncode == 0, result.stderr[-3000:]
    return {"cache": hq_cache, "root": hq_root, "vocoder": vocoder}


# script -> (its arguments from `data`, patterns its output must hold: its figures)
BENCHMARKS = {
    "data_loading.py": (
        lambda d: ["--cache", d["cache"], "--batches", "3", "--steps", "1", *SMALL_BATCHES],
        [rf"{path} +0 +{NUMBER} +{NUMBER} +{NUMBER}" for path in ("float32", "int16")]
        + [rf"loader excerpts/s int16 / float32, 0 workers: {NUMBER}x", rf"int16 / float32 {NUMBER}$"]),
    "train_throughput.py": (
        lambda d: ["--cache", d["cache"], "--steps", "2", "--warmup", "1", "--hidden-size", "16", "--device", "cpu",
                   "--precision", "bf16", *SMALL_BATCHES],
        [r"device cpu, bf16", rf"stems +{NUMBER} +{NUMBER} +{NUMBER} +{NUMBER}", r"\(d\) validation: 2 tracks",
         r"150 epochs = "]),
    "inference_speed.py": (
        lambda d: ["--root", d["root"], "--is-wav", "--max-tracks", "1", "--seconds", "1", "--workers", "1",
                   "--gl-seconds", "0.5", "--gl-iters", "2", "--files", "2", "--file-seconds", "1"],
        [rf"cpu +{NUMBER} x real time", r"scores identical: True", rf"griffinlim \(torch\) .*{NUMBER}x",
         rf"--workers 2 +{NUMBER} s +{NUMBER}x faster", r"stems identical: True"]),
    "phase_speed.py": (
        lambda d: ["--seconds", "0.5", "--gl-iters", "2", "--device", "cpu", "--vocoder", d["vocoder"]],
        [rf"{name} +{NUMBER}" for name in ("griffinlim \\(librosa\\)", "misi", "wiener", "mixture", "vocoder")]),
    "separation_memory.py": (
        lambda d: ["--minutes", "0.02", "0.04", "--threads", "1"],
        [rf"0.04 min {mode} +\d+" for mode in ("segmented", "whole")] + [r"segmented: peak RSS 0.04 min / 0.02 min"]),
    "vocoder_oracle.py": (
        lambda d: ["--cache", d["cache"], "--vocoder", d["vocoder"], "--tracks", "1", "--gl-iters", "2"],
        [r"true magnitudes of 1 validation tracks", rf"griffinlim +-?{NUMBER}/"]),
}


def test_every_benchmark_is_covered():
    # full_scale.py builds its own data from the shared clips: tests/test_full_scale.py runs it.
    # gpu_memory.py needs the fake CUDA runtime built: tests/test_fake_cuda.py runs it, or skips.
    # gpu_check.py (with its gpu_records.py and gpu_sections.py) needs a GPU or --device cpu --quick:
    # tests/test_gpu_check.py runs it.
    scripts = {path.name for path in (REPO_ROOT / "bench").glob("*.py")} - {
        "__init__.py", "common.py", "full_scale.py", "full_size_data.py", "gpu_memory.py", "gpu_check.py", "gpu_records.py",
        "gpu_sections.py"}
    assert scripts == set(BENCHMARKS), "add the new benchmark's small-data run to BENCHMARKS"


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(BENCHMARKS))
def test_benchmark_runs_on_small_data(script, data):
    arguments, figures = BENCHMARKS[script]
    result = run_script("-m", f"bench.{Path(script).stem}", *arguments(data))
    assert result.returncode == 0, result.stderr[-3000:]
    for pattern in figures:
        assert re.search(pattern, result.stdout), f"{pattern!r} not in:\n{result.stdout}"
