"""bench.gpu_check, the check to run first on a GPU, exercised on the CPU: its --quick mode
runs every section tiny (torchrun over gloo, the GPU memory and busy fraction skipped), a
failing item or an out-of-memory batch is recorded and the run goes on, the time budget
skips what would start after it, the precisions it checks follow the card's compute
capability, and without a GPU it stops with one error line."""

from __future__ import annotations

import json

import pytest
import torch

from bench import gpu_check, gpu_records, gpu_sections
from pipeline_helpers import assert_one_error_line, run_in_process, run_script
from separation.phase import PHASE_METHODS

QUICK_CPU = ["--device", "cpu", "--quick"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_without_a_gpu_it_stops_with_one_error_line(capsys, tmp_path):
    code, stderr = run_in_process(gpu_check.main, ["--out", tmp_path / "out.json"], capsys)
    assert_one_error_line(stderr, code, mentions="no CUDA device")
    assert not (tmp_path / "out.json").exists()


def test_cpu_without_quick_is_refused(capsys, tmp_path):
    code, stderr = run_in_process(gpu_check.main, ["--device", "cpu", "--out", tmp_path / "out.json"], capsys)
    assert_one_error_line(stderr, code, mentions="--quick")


@pytest.mark.parametrize("capability, expected", [
    ((6, 1), ["fp32"]),                   # GTX 1080 Ti: no tensor cores
    ((7, 5), ["fp32", "fp16"]),           # T4: fp16 tensor cores, bf16 only emulated
    ((8, 6), ["fp32", "fp16", "bf16"]),   # RTX 30
    ((9, 0), ["fp32", "fp16", "bf16"]),   # H100
])
def test_precisions_checked_follow_the_compute_capability(capability, expected, monkeypatch):
    monkeypatch.setattr(gpu_records, "cuda_capability", lambda device: capability)
    assert gpu_records.precisions_to_check(torch.device("cuda")) == expected


def test_every_precision_runs_on_the_cpu():
    assert gpu_records.precisions_to_check(torch.device("cpu")) == ["fp32", "bf16", "fp16"]


def test_agreement_is_zero_for_the_same_run_and_one_for_a_run_that_does_not_learn():
    losses = [10.0, 9.0, 6.0, 5.0, 2.0, 1.0]  # rounds of two batches: means 9.5, 5.5, 1.5
    reference = {"losses": losses, "first_round_mean": 9.5, "last_round_mean": 1.5}
    assert gpu_sections.agreement(reference, reference) == {"first_step": 0.0, "last_round": 0.0}
    stuck = {"losses": [10.0, 9.0] * 3, "first_round_mean": 9.5, "last_round_mean": 9.5}
    assert gpu_sections.agreement(stuck, reference) == {"first_step": 0.0, "last_round": 1.0}
    assert 1.0 > max(last for _, last in gpu_records.TOLERANCES.values())
    # The complex model's loss crosses 0: the last round is measured against fp32's fall, not its value.
    crossing = {"losses": [4.0, 2.0, -1.0, -2.0, -3.0, -3.0], "first_round_mean": 3.0, "last_round_mean": -3.0}
    off = {**crossing, "last_round_mean": -2.4}
    assert gpu_sections.agreement(off, crossing)["last_round"] == pytest.approx(0.1)


def test_a_spent_budget_skips_every_section(capsys, tmp_path):
    out = tmp_path / "out.json"
    code, stderr = run_in_process(gpu_check.main, [*QUICK_CPU, "--budget", "0", "--out", out], capsys)
    assert code == 0, stderr
    result = json.loads(out.read_text())
    assert {name: record["status"] for name, record in result["sections"].items()} == {
        name: "skipped: time budget spent" for name in gpu_records.SECTIONS}
    assert result["checks"] == [] and result["summary"]["skipped"] == list(gpu_records.SECTIONS)


def test_a_failing_phase_method_is_recorded_and_the_others_run(capsys, tmp_path, monkeypatch):
    real_separate = gpu_sections.separate

    def separate(model, mixture, settings, device, *args, **kwargs):
        if settings.phases == ("misi",):
            raise RuntimeError("planted failure")
        return real_separate(model, mixture, settings, device, *args, **kwargs)

    monkeypatch.setattr(gpu_sections, "separate", separate)
    out = tmp_path / "out.json"
    code, stderr = run_in_process(gpu_check.main, [*QUICK_CPU, "--sections", "separate", "--out", out], capsys)
    assert_one_error_line(stderr, code, mentions="separate umx misi")
    result = json.loads(out.read_text())
    section = result["sections"]["separate"]
    assert section["status"] == "ok"  # the section went on past its failed item
    assert section["umx"]["misi"]["status"] == "error"
    assert section["umx"]["misi"]["error"].startswith("RuntimeError: planted failure")
    assert "in separate" in section["umx"]["misi"]["traceback"]  # the whole story, for a run on a lent GPU
    ran = set(section["umx"]) | set(section["bsrnn-complex"])
    assert set(PHASE_METHODS) - {"misi"} <= ran
    assert all(check["passed"] for check in result["checks"]) and len(result["checks"]) >= len(PHASE_METHODS)
    assert result["sections"]["data"]["status"] == "skipped: not in --sections"  # separation needs no cache


def test_out_of_memory_is_recorded_and_larger_batches_skipped(capsys, tmp_path, monkeypatch):
    real_rate = gpu_sections.fixed_batch_rate

    def fixed_batch_rate(model_name, batch_size, *args):
        if batch_size >= 4:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_rate(model_name, batch_size, *args)

    real_fed_rate = gpu_sections.fed_rate

    def fed_rate(model_name, *args):
        if model_name == "bsrnn-complex":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 4.00 GiB")
        return real_fed_rate(model_name, *args)

    monkeypatch.setattr(gpu_sections, "fixed_batch_rate", fixed_batch_rate)
    monkeypatch.setattr(gpu_sections, "fed_rate", fed_rate)
    out = tmp_path / "out.json"
    code, stderr = run_in_process(gpu_check.main, [*QUICK_CPU, "--sections", "throughput", "--batch-sizes", "2", "4",
                                                   "8", "--out", out], capsys)
    assert code == 0, stderr  # running out of memory is a measurement, not a failure
    section = json.loads(out.read_text())["sections"]["throughput"]
    for model in gpu_records.MODELS:
        rows = section[model]
        assert rows["batch 2"]["steps_per_s"] > 0 and rows["batch 2"]["memory"] == "skipped: needs CUDA"
        assert rows["batch 4"]["out_of_memory"] is True and "CUDA out of memory" in rows["batch 4"]["error"]
        assert rows["batch 8"] == {"status": "skipped: batch 4 ran out of memory"}
        assert section["by_model"][model]["largest_batch_run"] == 2
    for model in ("umx", "bsrnn"):
        fed = section[model]["loader_fed"]
        assert fed["excerpts_per_s"] > 0 and fed["busy_fraction"] == "skipped: needs CUDA"
    assert section["bsrnn-complex"]["loader_fed"]["status"] == "skipped: out of memory"
    assert section["by_model"]["bsrnn-complex"]["epoch_minutes_projected"] is None


def test_a_model_that_does_not_fit_for_the_precision_check_is_skipped_not_failed(capsys, tmp_path, monkeypatch):
    real_steps = gpu_sections.train_steps

    def train_steps(model, *args, **kwargs):
        if gpu_sections.takes_complex(model):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 6.00 GiB")
        return real_steps(model, *args, **kwargs)

    monkeypatch.setattr(gpu_sections, "train_steps", train_steps)
    # the two band-split kinds only: one that fits and one that does not
    monkeypatch.setattr(gpu_sections, "MODELS", {name: gpu_records.MODELS[name] for name in ("bsrnn", "bsrnn-complex")})
    out = tmp_path / "out.json"
    code, stderr = run_in_process(gpu_check.main, [*QUICK_CPU, "--sections", "precision", "--out", out], capsys)
    assert code == 0, stderr  # a card too small for a model is not a failed check
    runs = json.loads(out.read_text())["sections"]["precision"]
    assert {name: run["status"] for name, run in runs["bsrnn-complex"].items()} == {
        name: "skipped: out of memory" for name in ("fp32", "bf16", "fp16")}
    assert set(runs["bsrnn"]["bf16"]["vs_fp32"]) == {"reference", "first_step", "last_round"}
    assert "umx" not in runs


@pytest.mark.slow
def test_quick_run_on_the_cpu_passes_every_check(tmp_path):
    out = tmp_path / "gpu_check.json"
    result = run_script("-m", "bench.gpu_check", *QUICK_CPU, "--out", out)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert {name: record["status"] for name, record in report["sections"].items()} == {
        name: "ok" for name in gpu_records.SECTIONS}
    assert report["checks"] and all(check["passed"] for check in report["checks"])
    assert report["summary"] == {"checks": len(report["checks"]), "failed": [], "errors": [], "skipped": []}
    sections = report["sections"]
    for model in gpu_records.MODELS:
        runs = sections["precision"][model]
        for name in ("bf16", "fp16"):
            assert set(runs[name]["vs_fp32"]) == {"reference", "first_step", "last_round"}
        assert len(runs["fp32"]["losses"]) == report["sizes"]["agreement_steps"]
    # The tiny umx's fp16 gradients overflow at the scaler's first scales: the skipped steps are
    # found, and fp16 is compared with an fp32 run that skips the same updates.
    umx = sections["precision"]["umx"]
    assert umx["fp16"]["skipped_steps"] and umx["fp16"]["vs_fp32"]["reference"] == "fp32 with fp16's skips"
    assert umx["fp32 with fp16's skips"]["skipped_steps"] == umx["fp16"]["skipped_steps"]
    assert {name: sections["train"][name]["recorded_precision"] for name in ("fp32", "bf16", "fp16")} == {
        "fp32": "fp32", "bf16": "bf16", "fp16": "fp16"}
    assert sections["torchrun"]["backend"] == "gloo" and sections["torchrun"]["world_size"] == 1
    assert set(sections["separate"]["umx"]) | set(sections["separate"]["bsrnn-complex"]) >= set(PHASE_METHODS)
