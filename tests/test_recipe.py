"""The recipe flags of train.py: learning-rate schedules, losses, mask activations, mask
starts and input transforms (docs/recipe.md compares them)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from formats import checkpoint
import data
from training import schedules
import train
import utils
from training.losses import LOSSES, Targets, compressed_mse, mixture_phase_audio, mse_and_sdr, soft_floor_sdr, stem_mean
from formats.cache import StemCache
from model import BandSplitRNN, Separator, build_model
from pipeline_helpers import TINY_TRAIN, assert_one_error_line, run_in_process


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
    optimizer = _optimizer()  # train.run's order: a new scheduler, then both states
    scheduler = schedules.make_scheduler("cosine", optimizer, 100, 80, 0.3)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    assert first + _lrs(scheduler, optimizer, 60) == pytest.approx(straight)


def _batch(seed: int = 0, samples: int = 4 * utils.HOP) -> tuple[torch.Tensor, Targets]:
    """(mixture_mag, Targets) of two random stereo stems, as train.batch_targets builds them."""
    stems = torch.randn(2, 2, 2, samples, generator=torch.Generator().manual_seed(seed)) * 0.1
    mixture = stems.sum(1)
    spec = utils.stft(torch.cat([mixture[:, None], stems], dim=1))
    return spec[:, 0].abs(), Targets(spec[:, 1:].abs(), mixture_spec=spec[:, 0], audio=stems)


def test_mixture_phase_audio_of_the_mixture_magnitude_is_the_mixture():
    mixture_mag, targets = _batch()
    audio = mixture_phase_audio(mixture_mag[:, None].expand(-1, 2, -1, -1, -1), targets.mixture_spec,
                                targets.audio.shape[-1])
    torch.testing.assert_close(audio[:, 0], targets.audio.sum(1), atol=1e-5, rtol=0)


def test_soft_floor_sdr():
    signal = torch.randn(3, 1000)
    exact = soft_floor_sdr(signal, signal, torch.full((3,), 1e-3 * 1000))
    half = soft_floor_sdr(0.5 * signal, signal, torch.zeros(3))
    torch.testing.assert_close(half, torch.full((3,), 10 * math.log10(4.0)), atol=1e-4, rtol=0)
    assert (exact > 29).all()
    silent = soft_floor_sdr(signal, torch.zeros(3, 1000), torch.ones(3))  # silent target: finite, bounded
    assert torch.isfinite(silent).all()


def _batch_for(loss_name: str, seed: int) -> tuple[torch.Tensor, Targets]:
    """(the model's input, Targets) of random stems, as train.batch_targets builds them for a
    model whose estimates `loss_name` compares: the mixture magnitude, or for a complex loss
    the complex mixture STFT."""
    stems = torch.randn(2, 4, 2, 4 * utils.HOP, generator=torch.Generator().manual_seed(seed)) * 0.1
    return train.batch_targets(stems, True, torch.device("cpu"), complex_input=LOSSES[loss_name].mask == "complex")


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


def test_stem_mean_weighs_each_stem_relative_to_the_mean_weight():
    values = torch.stack([torch.full((3, 2, 5), 4.0), torch.full((3, 2, 5), 1.0)], dim=1)  # vocals 4, accompaniment 1
    assert stem_mean(values, None) == 2.5
    assert stem_mean(values, torch.tensor([7.0, 7.0])) == 2.5
    assert stem_mean(values, torch.tensor([2.0, 1.0])) == pytest.approx((2 * 4 + 1) / 3)


@pytest.mark.parametrize("name", list(LOSSES))
def test_every_loss_weighs_the_stems(name):
    """Equal --stem-weights give the unweighted loss; weighting the stem whose estimate is
    wrong raises the loss, and weighting the other lowers it."""
    _, targets = _batch_for(name, seed=1)
    truth = targets.spectrograms if LOSSES[name].mask == "complex" else targets.magnitudes
    estimate = truth.clone()
    estimate[:, 0] *= 0.3  # only the vocals are wrong

    def loss(weights):
        return LOSSES[name].function(estimate, dataclasses.replace(targets, stem_weights=weights))
    torch.testing.assert_close(loss(torch.tensor([1.0, 1.0])), loss(None))
    assert loss(torch.tensor([3.0, 1.0])) > loss(None) > loss(torch.tensor([1.0, 3.0]))


def test_mse_and_sdr_adds_the_negative_sdr_to_the_mse():
    """Half the mixture magnitude with the mixture phase is half the mixture waveform: the
    loss is the MSE minus SDR_WEIGHT x the floored SDR of that waveform, computed here directly."""
    from training.losses import SDR_FLOOR, SDR_WEIGHT
    mixture_mag, targets = _batch()
    estimate = 0.5 * mixture_mag[:, None].expand(-1, 2, -1, -1, -1)
    mixture = targets.audio.sum(1, keepdim=True)
    floor = SDR_FLOOR * mixture.pow(2).sum(-1)
    sdr = 10 * torch.log10((targets.audio.pow(2).sum(-1) + floor)
                           / ((targets.audio - 0.5 * mixture).pow(2).sum(-1) + floor))
    expected = LOSSES["mse"].function(estimate, targets) - SDR_WEIGHT * sdr.mean()
    torch.testing.assert_close(mse_and_sdr(estimate, targets), expected, atol=1e-4, rtol=1e-5)
    with pytest.raises(ValueError, match="stems"):
        mse_and_sdr(estimate, Targets(targets.magnitudes))


def test_compressed_mse_weighs_quiet_bins_more():
    quiet, loud = torch.full((1, 10), 0.01), torch.full((1, 10), 10.0)
    assert compressed_mse(2 * quiet, Targets(quiet)) / compressed_mse(2 * loud, Targets(loud)) > \
        torch.nn.functional.mse_loss(2 * quiet, quiet) / torch.nn.functional.mse_loss(2 * loud, loud)


@pytest.mark.parametrize("model_class", [Separator, BandSplitRNN])
def test_sigmoid_mask_keeps_each_stem_below_the_mixture(model_class):
    size = {"hidden_size": 8, "nb_layers": 1, "max_bin": 30} if model_class is Separator else {"feature_size": 8,
                                                                                             "nb_layers": 1}
    model = model_class(nb_bins=65, mask_activation="sigmoid", **size).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))  # large weights: an unbounded mask would exceed 1 somewhere
        mixture_mag = torch.rand(2, 2, 65, 9)
        estimate = model(mixture_mag)
    assert (estimate <= mixture_mag[:, None] + 1e-6).all()
    assert build_model(model.config).config == model.config


def test_log_input_transform_is_in_the_config_and_changes_the_estimate():
    torch.manual_seed(0)
    linear = Separator(nb_bins=65, hidden_size=8, nb_layers=1, max_bin=30).eval()
    log = build_model({**linear.config, "input_transform": "log"}).eval()
    log.load_state_dict(linear.state_dict())
    mixture_mag = 10 * torch.rand(2, 2, 65, 9)
    with torch.no_grad():
        assert not torch.allclose(linear(mixture_mag), log(mixture_mag))
    assert log.config["input_transform"] == "log"
    with pytest.raises(ValueError, match="input transform"):
        Separator(nb_bins=65, hidden_size=8, nb_layers=1, max_bin=30, input_transform="cube")


def test_output_mean_and_scale_are_the_masks_mean_and_spread_over_a_training_batch():
    """In training mode the last BatchNorm gives each output unit zero mean and unit spread
    over the batch's frames, so a ReLU mask whose pre-activation stays positive has, per stem
    and bin, exactly output_mean's mean and output_scale's spread, whatever the trunk does:
    the start that --mask-init sets and that only those parameters can move."""
    torch.manual_seed(0)
    mean = 3.0 + torch.rand(2, 65)
    spread = 0.1 + 0.2 * torch.rand(2, 65)
    model = Separator(nb_bins=65, hidden_size=8, nb_layers=1, max_bin=30, output_mean=mean.tolist(),
                      output_scale=spread.tolist()).train()
    mixture_mag = 0.5 + torch.rand(4, 2, 65, 50)
    with torch.no_grad():
        mask = model(mixture_mag) / mixture_mag[:, None]  # batch, stems, channels, bins, frames
    for channel in range(2):
        per_bin = mask[:, :, channel].permute(1, 0, 3, 2).reshape(2, -1, 65)  # stems, batch x frames, bins
        torch.testing.assert_close(per_bin.mean(1), mean, rtol=0, atol=1e-4)
        torch.testing.assert_close(per_bin.std(1, unbiased=False), spread, rtol=1e-3, atol=1e-4)
    assert torch.equal(Separator(nb_bins=65, hidden_size=8, nb_layers=1, max_bin=30).output_mean,
                       torch.ones(2, 1, 65))  # Open-Unmix's start without them


def test_mask_init_statistics_starts_the_masks_at_the_training_sets(tmp_path, hq_cache):
    """train.py --mask-init statistics: after 2 steps of lr 1e-3 the masks' per-bin mean and
    spread are still within Adam's few-lr reach of the training set's statistics, which lie
    far from Open-Unmix's start at 1; train_args records the flag."""
    train.main([*map(str, ["--cache", hq_cache, *TINY_TRAIN]), "--samples-per-track", "1", "--epochs", "1",
                "--mask-init", "statistics", "--checkpoint-dir", str(tmp_path)])
    state = checkpoint.load(tmp_path / "last.pt")
    cache = StemCache(hq_cache)
    mean, spread = data.mask_statistics(cache, cache.names("train"))
    steps = len(state["history"]) * math.ceil(len(cache.names("train")) / 2)
    assert (abs(mean - 1) > 20 * steps * 1e-3).any() and (abs(spread - 1) > 20 * steps * 1e-3).any()
    np.testing.assert_allclose(state["model_state"]["output_mean"][:, 0].numpy(), mean, rtol=0, atol=5 * steps * 1e-3)
    np.testing.assert_allclose(state["model_state"]["output_scale"][:, 0].numpy(), spread, rtol=0,
                               atol=5 * steps * 1e-3)
    assert state["train_args"]["mask_init"] == "statistics"


def test_mask_init_is_open_unmix_s_for_umx_by_default_and_none_for_bsrnn():
    assert train.resolve_mask_init(None, "umx", True, "relu") == "ones"
    assert train.resolve_mask_init(None, "umx", False, "relu") == "ones"
    assert train.resolve_mask_init(None, "bsrnn", True, "relu") is None
    assert train.resolve_mask_init("statistics", "umx", True, "relu") == "statistics"


def test_configs_without_the_recipe_keys_load_as_before():
    config = Separator(nb_bins=65, hidden_size=8, nb_layers=1, max_bin=30).config
    old = {k: v for k, v in config.items() if k not in ("mask_activation", "input_transform")}
    assert build_model(old).config == config


@pytest.mark.parametrize("flags, mentions", [
    (["--loss", "mse+sdr", "--data", "magnitudes"], "--data stems"),
    (["--mask-activation", "sigmoid", "--no-mask"], "--no-mask"),
    (["--model", "bsrnn", "--input-transform", "log"], "umx"),
    (["--stem-weights", "0", "1"], "positive"),
    (["--mask-init", "ones", "--model", "bsrnn"], "--mask-init"),
    (["--mask-init", "statistics", "--mask-activation", "sigmoid"], "--mask-init"),
    (["--mask-init", "statistics", "--no-mask"], "--mask-init"),
])
def test_recipe_flags_that_do_not_combine(flags, mentions, tmp_path, hq_cache, capsys):
    code, err = run_in_process(train.main, ["--cache", hq_cache, "--checkpoint-dir", tmp_path, *TINY_TRAIN,
                                            "--epochs", "1", *flags], capsys)
    assert_one_error_line(err, code, mentions=mentions)


class Interrupted(Exception):
    pass


def test_cosine_sdr_run_resumes_exactly_and_keeps_its_schedule(tmp_path, hq_cache, capsys, monkeypatch):
    """Every recipe flag at once through train.py: a 2-epoch run interrupted after epoch 1
    and resumed equals the uninterrupted one, the learning rate falls over the run, and
    resuming with another schedule is refused."""
    flags = [*map(str, ["--cache", hq_cache, *TINY_TRAIN]), "--lr-schedule", "cosine", "--loss", "mse+sdr",
             "--mask-activation", "sigmoid", "--input-transform", "log", "--stem-weights", "2", "1", "--seed", "3",
             "--epochs", "2"]
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
    assert straight["model_config"]["mask_activation"] == "sigmoid"
    assert straight["model_config"]["input_transform"] == "log"
    assert straight["train_args"]["stem_weights"] == [2.0, 1.0]
