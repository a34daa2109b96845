"""The band-split RNN (`--model bsrnn`): band layout, parameter budget, masks, config
round trip, a training step, causality, and train.py -> best.pt -> separation end to end."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from test_model import forward_random_magnitudes

import train
import utils
from formats import checkpoint
from model import BandSplitRNN, Separator, bandwidth_bins, build_model, count_parameters, layout_band_widths
from pipeline_helpers import TINY_TRAIN, assert_one_error_line
from reporting import text as report_text
from separation import segments
from training import settings
from utils import STEMS

# The smallest bsrnn: the band layout stays the paper's, only the widths shrink.
TINY = {"feature_size": 8, "nb_layers": 1}


def test_band_layout_follows_the_paper_in_hz():
    widths = layout_band_widths(2049, 44100)
    assert sum(widths) == 2049
    # 10 bands of 100 Hz to 1 kHz, 12 of 250 Hz to 4 kHz, 8 of 500 Hz to 8 kHz,
    # 8 of 1 kHz to 16 kHz, 2 of 2 kHz to 20 kHz, and the rest.
    assert len(widths) == 10 + 12 + 8 + 8 + 2 + 1
    starts = np.cumsum([0, *widths[:-1]]) * 44100 / 4096  # Hz of each band's first bin
    bin_hz = 44100 / 4096
    for lower_hz in (1000, 4000, 8000, 16000, 20000):
        assert np.min(np.abs(starts - lower_hz)) < bin_hz  # a band starts at each layout boundary
    for first, last, step in ((0, 10, 100), (10, 22, 250), (22, 30, 500), (30, 38, 1000), (38, 40, 2000)):
        hz = np.array(widths[first:last]) * bin_hz
        assert np.all(np.abs(hz - step) <= bin_hz), (step, hz)


def test_band_layout_scales_with_n_fft():
    assert sum(layout_band_widths(1025, 44100)) == 1025
    assert len(layout_band_widths(1025, 44100)) == len(layout_band_widths(2049, 44100))


def test_default_bsrnn_under_ten_million():
    model = BandSplitRNN()
    assert 1_000_000 < count_parameters(model) < 10_000_000
    assert model.config["band_widths"] == layout_band_widths(2049, 44100)


def test_size_flags_move_the_parameter_count():
    small = count_parameters(BandSplitRNN(feature_size=16, nb_layers=1))
    assert small < count_parameters(BandSplitRNN(feature_size=16, nb_layers=2))
    assert small < count_parameters(BandSplitRNN(feature_size=24, nb_layers=1))


def test_band_widths_must_cover_the_bins():
    with pytest.raises(ValueError, match="sum to nb_bins"):
        BandSplitRNN(nb_bins=100, band_widths=[50, 40])


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("training", [True, False])
def test_forward_shape_and_sign(bidirectional, training):
    torch.manual_seed(0)
    assert (forward_random_magnitudes(BandSplitRNN(**TINY, bidirectional=bidirectional).train(training)) > 0).any()


def test_mask_estimate_is_zero_where_mixture_is_zero():
    torch.manual_seed(1)
    model = BandSplitRNN(**TINY).eval()
    x = torch.rand(2, 2, 2049, 9) + 0.1
    x[:, :, 100:400] = 0.0       # silent bins, across band boundaries
    x[:, :, :, 4] = 0.0          # a silent frame: every band's norm sees zeros
    x[1, 0] = 0.0                # a silent channel
    with torch.no_grad():
        y = model(x)
    assert torch.isfinite(y).all()
    silent = (x == 0).unsqueeze(1).expand_as(y)
    assert (y[silent] == 0).all()
    assert (y[~silent] > 0).any()


def test_config_round_trip_gives_identical_outputs():
    torch.manual_seed(2)
    model = BandSplitRNN(nb_bins=300, feature_size=12, nb_layers=2, band_widths=[20] * 10 + [50] * 2,
                         bidirectional=False).eval()
    clone = build_model(model.config)
    assert type(clone) is BandSplitRNN and clone.config == model.config
    clone.load_state_dict(model.state_dict())  # strict: same names and shapes
    x = torch.rand(2, 2, 300, 7)
    with torch.no_grad():
        torch.testing.assert_close(clone.eval()(x), model(x), rtol=0, atol=0)


def test_optimisation_steps_lower_the_loss():
    torch.manual_seed(4)
    model = BandSplitRNN(**TINY)
    mixture = torch.rand(2, 2, 2049, 8) * 2
    target = torch.stack([mixture * 0.25, mixture * 0.75], dim=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        loss = torch.nn.functional.mse_loss(model(mixture), target)
        optimizer.zero_grad()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]


def test_unidirectional_is_causal_in_time():
    """With --unidirectional the output at a frame depends on no later frame (the LSTMs
    across bands work inside one frame, so they do not break this)."""
    torch.manual_seed(5)
    model = BandSplitRNN(**TINY, bidirectional=False).eval()
    x = torch.rand(1, 2, 2049, 10) + 0.1
    changed = x.clone()
    changed[..., 6:] = torch.rand(1, 2, 2049, 4) + 0.1
    with torch.no_grad():
        a, b = model(x), model(changed)
    torch.testing.assert_close(a[..., :6], b[..., :6], rtol=0, atol=0)
    assert not torch.allclose(a[..., 6:], b[..., 6:])
    with torch.no_grad():  # the bidirectional model does look ahead
        both = BandSplitRNN(**TINY).eval()
        assert not torch.allclose(both(x)[..., :6], both(changed)[..., :6])


# -------------------------------------------------------------------- train.py

@pytest.mark.parametrize("flags, mentions", [
    (["--no-mask"], "--no-mask"),
    (["--bandwidth", "8000"], "--bandwidth"),
])
def test_umx_only_flags_are_refused(flags, mentions, tmp_path, capsys):
    code = utils.run_cli(train.main, ["--model", "bsrnn", *flags, "--cache", str(tmp_path / "none"),
                                      "--checkpoint-dir", str(tmp_path / "k")])
    assert_one_error_line(capsys.readouterr().err, code, mentions=mentions)


def test_new_model_config_leaves_unset_sizes_to_the_model():
    config = settings.new_model_config("bsrnn", None, None, True, True, None)
    assert config == {"model": "bsrnn", "bidirectional": True, "mask": "magnitude"}
    assert build_model(config).config == BandSplitRNN().config
    umx = settings.new_model_config("umx", 64, None, True, False, 8000.0)
    expected = Separator(hidden_size=64, bidirectional=False, max_bin=bandwidth_bins(8000.0, 44100, 4096))
    assert build_model(umx).config == expected.config


def test_help_states_both_models_defaults():
    text = " ".join(settings.build_parser().format_help().split())
    assert "--model {umx,bsrnn}" in text
    umx, bsrnn = Separator(), BandSplitRNN()
    assert f"(default {umx.hidden_size}); bsrnn: features per band, N (default {bsrnn.feature_size})" in text
    assert f"(default {umx.nb_layers}); bsrnn: pairs of time and band LSTMs (default {bsrnn.nb_layers})" in text


@pytest.fixture(scope="module")
def bsrnn_run(tmp_path_factory, hq_cache):
    """Two epochs of --model bsrnn at the tiny budget: one, then --resume to two."""
    out = tmp_path_factory.mktemp("bsrnn_run")
    argv = ["--cache", str(hq_cache), "--checkpoint-dir", str(out), "--model", "bsrnn", *TINY_TRAIN, "--seed", "3"]
    train.main([*argv, "--epochs", "1"])
    train.main([*argv, "--epochs", "2", "--resume"])
    return out


def test_train_bsrnn_end_to_end(bsrnn_run):
    last = checkpoint.load(bsrnn_run / "last.pt")
    assert [h["epoch"] for h in last["history"]] == [1, 2]
    assert all(np.isfinite(h["train_loss"]) and np.isfinite(h["valid_loss"]) for h in last["history"])
    assert last["model_config"]["model"] == "bsrnn"
    assert last["model_config"]["feature_size"] == int(TINY_TRAIN[1])
    assert last["model_config"]["nb_layers"] == int(TINY_TRAIN[3])
    assert last["input_stats"] is None  # its per-band norms replace umx's input statistics
    assert last["parameters"] == count_parameters(build_model(last["model_config"]))


def test_best_checkpoint_loads_and_separates(bsrnn_run):
    model, state = checkpoint.load_separator(bsrnn_run / "best.pt")
    assert type(model) is BandSplitRNN and not model.training
    for key, tensor in state["model_state"].items():
        assert torch.equal(model.state_dict()[key], tensor), key
    audio = np.random.default_rng(0).uniform(-0.3, 0.3, size=(3 * 44100, 2)).astype(np.float32)
    out = segments.separate(model, audio, segments.SeparationSettings(), torch.device("cpu"))["mixture"]
    assert set(out) == set(STEMS)
    for stem in STEMS:
        assert out[stem].shape == audio.shape and np.isfinite(out[stem]).all()
    assert not np.allclose(out["vocals"], out["accompaniment"])


def test_report_describes_bsrnn(bsrnn_run):
    cfg = checkpoint.load(bsrnn_run / "best.pt")["model_config"]
    assert report_text.architecture(cfg) == f"band-split RNN ({cfg['nb_layers']} time/band LSTM pairs)"
    lines = report_text.model_lines(cfg, 44100, 4096)
    assert re.search(rf"all 2049 bins in {len(cfg['band_widths'])} bands", lines[2])
    assert report_text.architecture({k: v for k, v in Separator(nb_layers=2).config.items() if k != "model"}) \
        == "2-layer BiLSTM"
