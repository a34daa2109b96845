"""batch_fit: a batch that would not fit the card stops the run before training, naming the
largest that fits; the probe steps leave the model and the random streams as they were. CUDA's
memory queries are stood in for: the measured peak is a linear model of the batch."""

from __future__ import annotations

import pytest
import torch

from model import build_model
from training import batch_fit, loop
from training.losses import DEFAULT_LOSSES
from training.precision import resolve_precision
from utils import UserError

GIB = 2 ** 30


def as_card(monkeypatch, total_gib: float, fixed_gib: float, per_excerpt_gib: float) -> list[int]:
    """CUDA's memory queries answer as a card of total_gib would, for a step that needs
    fixed_gib + per_excerpt_gib * batch; returns the batch sizes probed."""
    probed: list[int] = []

    class Properties:
        total_memory = int(total_gib * GIB)

    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated",
                        lambda device=None: int((fixed_gib + per_excerpt_gib * probed[-1]) * GIB))
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: Properties())
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    return probed


def test_a_batch_too_big_for_the_card_names_the_largest_that_fits(monkeypatch):
    probed = as_card(monkeypatch, total_gib=16, fixed_gib=0.5, per_excerpt_gib=1.5)
    with pytest.raises(UserError) as error:
        batch_fit.check_batch_fits(torch.device("cuda"), 16, probed.append, optimizer_bytes=0)
    assert probed == [1, 2]
    # 90% of 16 GiB is 14.4 GiB: (14.4 - 0.5) / 1.5 = 9.27 excerpts
    assert "--batch-size 9 fits" in str(error.value) and "Tesla T4" in str(error.value)
    assert "24.5 GiB" in str(error.value)  # 0.5 + 16 * 1.5


def test_a_batch_that_fits_passes_and_reports_its_memory(monkeypatch):
    probed = as_card(monkeypatch, total_gib=80, fixed_gib=0.5, per_excerpt_gib=1.5)
    memory = batch_fit.check_batch_fits(torch.device("cuda"), 16, probed.append, optimizer_bytes=GIB)
    assert memory.per_excerpt == int(1.5 * GIB) and memory.at(16) == pytest.approx(25.5 * GIB, rel=1e-6)


def test_not_even_one_excerpt(monkeypatch):
    probed = as_card(monkeypatch, total_gib=4, fixed_gib=3, per_excerpt_gib=2)
    with pytest.raises(UserError, match="not even one excerpt fits"):
        batch_fit.check_batch_fits(torch.device("cuda"), 2, probed.append, optimizer_bytes=0)


def test_off_cuda_nothing_is_measured():
    assert batch_fit.check_batch_fits(torch.device("cpu"), 16, lambda b: pytest.fail("probed"), 0) is None


@pytest.mark.parametrize("config", [{"model": "umx", "hidden_size": 16, "nb_layers": 1},
                                    {"model": "bsrnn", "feature_size": 8, "nb_layers": 1, "mask": "complex"}])
def test_the_probe_step_leaves_model_and_random_streams_as_they_were(config):
    cpu = torch.device("cpu")
    model = build_model(config)
    model.train()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    loss = DEFAULT_LOSSES[config.get("mask", "magnitude")]
    run_step = loop.probe_step(model, 2, 0.5, resolve_precision("fp32", cpu), loss, cpu)
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    run_step(2)
    assert torch.equal(torch.rand(3), expected)
    assert all(p.grad is None for p in model.parameters())
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
