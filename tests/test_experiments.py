"""experiments.py on the generated dataset with a tiny budget: it trains each run once,
scores the final epoch on the valid split, writes tables report.py reads, and reuses
finished runs."""

from __future__ import annotations

import json
import math

import pytest
import torch

import experiments
from formats import checkpoint, experiment_table
from formats.checkpoint import load_separator
from model import build_model, count_parameters, takes_complex
from pipeline_helpers import assert_one_error_line, run_in_process, run_script
from training.loop import batch_targets, separation_loss
from training.precision import resolve_precision
from training.settings import build_parser, resolve_settings

TINY_BUDGET = ["--epochs", "1", "--samples-per-track", "1", "--seq-dur", "1", "--batch-size", "2", "--device", "cpu",
               "--train-args", "--hidden-size 16 --workers 0"]
RUNS = ["no LSTM", "3 BiLSTM layers (default)", "all (default)"]


def tiny_budget_arguments(argv: list) -> list[str]:
    return experiments.budget_arguments(str(argv[argv.index("--cache") + 1]), 1, 1, 1.0, 2, 42, "cpu",
                                        "--hidden-size 16 --workers 0")


@pytest.fixture(scope="module")
def tiny_experiments(tmp_path_factory, hq_root, hq_cache):
    out = tmp_path_factory.mktemp("experiments")
    argv = ["--set", "structure", "augmentation", "--only", *RUNS, "--cache", hq_cache, "--root", hq_root, "--is-wav",
            *TINY_BUDGET, "--out", out]
    first = run_script("experiments.py", *argv)
    assert first.returncode == 0, first.stderr[-3000:]
    return out, argv


@pytest.mark.slow
def test_tables_hold_every_run_scored_from_its_final_checkpoint(tiny_experiments) -> None:
    out, argv = tiny_experiments
    structure = experiment_table.read(out / "structure.json")
    augmentation = experiment_table.read(out / "augmentation.json")
    assert [r["name"] for r in structure.rows] == ["3 BiLSTM layers (default)", "no LSTM"]  # the set's order
    assert [r["name"] for r in augmentation.rows] == ["all (default)"]
    all_runs = {**experiments.EXPERIMENT_SETS["structure"], **experiments.EXPERIMENT_SETS["augmentation"]}
    for row in structure.rows + augmentation.rows:
        flags = all_runs[row["name"]]
        run = experiments.run_directory(out, flags, [*tiny_budget_arguments(argv), *flags])
        final = run / "epoch_001.pt"
        model, state = load_separator(final)
        assert row["params"]["parameters"] == count_parameters(model)
        assert state["model_config"]["nb_layers"] == (0 if flags == ["--nb-layers", "0"] else 3)
        summary = json.loads((run / "eval" / "epoch_001-mixture" / "summary.json").read_text())
        assert summary["split"] == "valid" and summary["n_tracks"] == 2
        assert (row["vocals"], row["accompaniment"]) == (summary["median_sdr"]["vocals"],
                                                        summary["median_sdr"]["accompaniment"])
        assert math.isfinite(row["vocals"]) and math.isfinite(row["accompaniment"])
    markdown = (out / "structure.md").read_text()
    assert "1 epochs x 1 excerpts of 1 s" in markdown and "| no LSTM | `--nb-layers 0` |" in markdown


@pytest.mark.slow
def test_a_run_shared_by_two_sets_is_trained_once(tiny_experiments) -> None:
    out, _ = tiny_experiments
    assert sorted(d.name.split("-")[0] for d in (out / "runs").iterdir()) == ["defaults", "nb"]


@pytest.mark.slow
def test_rerun_reuses_finished_runs(tiny_experiments, capsys) -> None:
    out, argv = tiny_experiments
    before = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*.pt")}
    tables = (out / "structure.json").read_text()
    code, err = run_in_process(experiments.main, argv, capsys)  # in this process: no interpreter to start
    assert code == 0, err[-3000:]
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*.pt")} == before
    assert (out / "structure.json").read_text() == tables


@pytest.mark.slow
def test_interrupted_run_resumes_to_the_budget(tiny_experiments, tmp_path, capsys) -> None:
    """A run whose last.pt stops short of the budget is resumed, not restarted."""
    out, argv = tiny_experiments
    one_epoch = next(d for d in (out / "runs").iterdir() if d.name.startswith("nb"))
    two_epochs = [a if a != "1" or argv[i - 1] != "--epochs" else "2" for i, a in enumerate(argv)]
    two_epochs[two_epochs.index("--out") + 1] = tmp_path
    two_epochs[two_epochs.index("--only") + 1: two_epochs.index("--cache")] = ["no LSTM"]
    cache = argv[argv.index("--cache") + 1]
    run = experiments.run_directory(tmp_path, ["--nb-layers", "0"], [
        *experiments.budget_arguments(str(cache), 2, 1, 1.0, 2, 42, "cpu", "--hidden-size 16 --workers 0"),
        "--nb-layers", "0"])
    run.mkdir(parents=True)
    (run / "last.pt").write_bytes((one_epoch / "last.pt").read_bytes())
    code, err = run_in_process(experiments.main, two_epochs, capsys)
    assert code == 0, err[-3000:]
    assert "resuming from" in (run / "log.txt").read_text()
    history = checkpoint.load(run / "epoch_002.pt")["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    assert history[0] == checkpoint.load(one_epoch / "last.pt")["history"][0]


def test_bad_requests_are_one_line_errors(tmp_path, hq_cache, capsys) -> None:
    """As run_cli runs experiments.main for the command line, in this process (the one
    script started is the failing run's train.py)."""
    def error(*argv) -> str:
        code, err = run_in_process(experiments.main, [*argv, "--out", tmp_path / "o"], capsys)
        return assert_one_error_line(err, code)

    assert "does not exist" in error("--cache", tmp_path / "none")
    (tmp_path / "empty").mkdir()
    assert "no cache" in error("--cache", tmp_path / "empty")
    assert "'nope'" in error("--cache", hq_cache, "--only", "nope")
    failed = error("--set", "structure", "--only", "no mask", "--cache", hq_cache, "--epochs", "1",
                   "--train-args", "--hidden-size 15")
    assert "log.txt" in failed and "hidden" in failed  # the last line of the failed run's log
    assert not list((tmp_path / "o").glob("*.json"))


@pytest.mark.parametrize("run", [(s, r) for s, runs in experiments.EXPERIMENT_SETS.items() for r in runs], ids=str)
def test_every_variant_builds_under_10m_parameters_and_trains_a_step(run) -> None:
    """Each run's model, built from its flags at full size exactly as train.py builds it,
    is a < 10M-parameter two-stem system and takes one optimisation step."""
    flags = build_parser().parse_args(experiments.EXPERIMENT_SETS[run[0]][run[1]])
    settings = resolve_settings(flags, torch.device("cpu"))
    loss_name = settings.loss
    torch.manual_seed(0)
    model = build_model(settings.model_config)
    assert count_parameters(model) < 10_000_000
    stems = 0.1 * torch.randn(2, 4, 2, 5 * 1024)  # batch, sources, channels, samples: 6 frames
    mixture, targets = batch_targets(stems, torch.device("cpu"), takes_complex(model))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    fp32 = resolve_precision("fp32", torch.device("cpu"))
    loss = separation_loss(model, mixture, targets, fp32, loss_name)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert separation_loss(model, mixture, targets, fp32, loss_name).item() != loss.item()
