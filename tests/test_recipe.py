"""The recipe flags of train.py: learning-rate schedules and losses (docs/recipe.md compares
them), and the model options measured and dropped."""

from __future__ import annotations

import math

import pytest
import torch

import train
import utils
from formats import checkpoint
from model import Separator, build_model
from pipeline_helpers import TINY_TRAIN, assert_one_error_line, run_in_process
from training import schedules
from training.loop import batch_targets
from training.losses import LOSSES, Targets, soft_floor_sdr


def _optimizer() -> torch.optim.Optimizer:
    return torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)


def _lrs(scheduler, optimizer, steps: int) -> list[float]:
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def test_cosine_warms_up_then_decays_to_zero():
    optimizer = _optimizer()
    lrs = _lrs(schedules.make_scheduler("cosine", optimizer, 200, 80, 0.3), optimizer, 200)
    warmup = round(schedules.WARMUP_FRACTION * 200)
    assert lrs[:warmup] == sorted(lrs[:warmup]) and lrs[0] < 1e-3 / 2
    assert max(lrs) == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[warmup:], lrs[warmup + 1:]))  # never rises after the warm-up
    assert lrs[100] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * (100 - warmup) / (200 - warmup))))
    assert lrs[-1] < 1e-3 * 1e-3


def test_cosine_resumes_on_the_same_curve():
    optimizer = _optimizer()
    straight = _lrs(schedules.make_scheduler("cosine", optimizer, 100, 80, 0.3), optimizer, 100)
    optimizer = _optimizer()
    scheduler = schedules.make_scheduler("cosine", optimizer, 100, 80, 0.3)
    first = _lrs(scheduler, optimizer, 40)
    saved = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
    optimizer = _optimizer()  # train.py's order: a new scheduler, then both states
    scheduler = schedules.make_scheduler("cosine", optimizer, 100, 80, 0.3)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    assert first + _lrs(scheduler, optimizer, 60) == pytest.approx(straight)


def test_soft_floor_sdr():
    signal = torch.randn(3, 1000)
    exact = soft_floor_sdr(signal, signal, torch.full((3,), 1e-3 * 1000))
    half = soft_floor_sdr(0.5 * signal, signal, torch.zeros(3))
    torch.testing.assert_close(half, torch.full((3,), 10 * math.log10(4.0)), atol=1e-4, rtol=0)
    assert (exact > 29).all()
    silent = soft_floor_sdr(signal, torch.zeros(3, 1000), torch.ones(3))  # silent target: finite, bounded
    assert torch.isfinite(silent).all()


def _batch_for(loss_name: str, seed: int) -> tuple[torch.Tensor, Targets]:
    """(the model's input, Targets) of random stems, as training.loop.batch_targets builds them for a
    model whose estimates `loss_name` compares: the mixture magnitude, or for a complex loss
    the complex mixture STFT."""
    stems = torch.randn(2, 4, 2, 4 * utils.HOP, generator=torch.Generator().manual_seed(seed)) * 0.1
    return batch_targets(stems, torch.device("cpu"), complex_input=LOSSES[loss_name].mask == "complex")


@pytest.mark.parametrize("name", list(LOSSES))
def test_losses_are_lowest_at_the_truth_and_give_gradients(name):
    """Every loss, on the estimates of its mask kind: magnitudes, or a complex-mask model's
    complex STFTs (the model's input is then the complex mixture STFT)."""
    complex_masks = LOSSES[name].mask == "complex"
    mixture, targets = _batch_for(name, seed=0)
    truth = LOSSES[name].function(targets.spectrograms if complex_masks else targets.magnitudes, targets)
    estimate = (0.5 * mixture[:, None].expand(-1, 2, -1, -1, -1)).clone().requires_grad_()
    worse = LOSSES[name].function(estimate, targets)
    assert worse > truth
    worse.backward()
    grad = torch.view_as_real(estimate.grad) if complex_masks else estimate.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_configs_with_the_dropped_model_options_load_at_their_one_value():
    """A checkpoint's config may hold mask_activation and input_transform: at "relu" and
    "linear" (what every model computes) it loads; at a dropped value it is refused."""
    config = Separator(nb_bins=65, hidden_size=8, nb_layers=1, max_bin=30).config
    assert build_model({**config, "mask_activation": "relu", "input_transform": "linear"}).config == config
    for key, value in (("mask_activation", "sigmoid"), ("input_transform", "log")):
        with pytest.raises(ValueError, match=key):
            build_model({**config, key: value})


class Interrupted(Exception):
    pass


def test_cosine_run_resumes_exactly_and_keeps_its_schedule(tmp_path, hq_cache, capsys, monkeypatch):
    """--lr-schedule cosine through train.py: a 2-epoch run interrupted after epoch 1 and
    resumed equals the uninterrupted one, the learning rate falls over the run, and
    resuming with another schedule is refused."""
    flags = [*map(str, ["--cache", hq_cache, *TINY_TRAIN]), "--lr-schedule", "cosine", "--seed", "3", "--epochs", "2"]
    train.main([*flags, "--checkpoint-dir", str(tmp_path / "a")])

    real_validation = train.validate
    calls = []

    def interrupted_in_epoch_two(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise Interrupted
        return real_validation(*args, **kwargs)
    monkeypatch.setattr(train, "validate", interrupted_in_epoch_two)
    with pytest.raises(Interrupted):
        train.main([*flags, "--checkpoint-dir", str(tmp_path / "b")])
    monkeypatch.setattr(train, "validate", real_validation)

    code, err = run_in_process(train.main, [*flags, "--checkpoint-dir", tmp_path / "b", "--resume",
                                            "--lr-schedule", "plateau"], capsys)
    assert_one_error_line(err, code, mentions="--lr-schedule cosine")
    train.main([*flags, "--checkpoint-dir", str(tmp_path / "b"), "--resume"])
    straight = checkpoint.load(tmp_path / "a" / "last.pt")
    resumed = checkpoint.load(tmp_path / "b" / "last.pt")
    assert [h["lr"] for h in resumed["history"]] == pytest.approx([h["lr"] for h in straight["history"]])
    assert straight["history"][1]["lr"] < straight["history"][0]["lr"] < 1e-3
    assert [h["valid_loss"] for h in resumed["history"]] == pytest.approx(
        [h["valid_loss"] for h in straight["history"]], rel=1e-5)
