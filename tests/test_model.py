"""model.py: parameter budget, output shapes, non-negative masks."""

from __future__ import annotations

import pytest
import torch

from formats import checkpoint
from model import Separator, bandwidth_bins, build_model, count_parameters
from utils import STEMS


@pytest.fixture(scope="module")
def default_count() -> int:
    return count_parameters(Separator())


def test_default_model_under_ten_million(default_count):
    assert 1_000_000 < default_count < 10_000_000


def test_parameter_count_moves_with_size(default_count):
    no_lstm = count_parameters(Separator(nb_layers=0))
    one_layer = count_parameters(Separator(nb_layers=1))
    assert no_lstm < one_layer < default_count
    smaller = count_parameters(Separator(hidden_size=256))
    larger = count_parameters(Separator(hidden_size=512))
    assert smaller < default_count < larger
    assert count_parameters(Separator(max_bin=500)) < default_count


def test_count_parameters_counts_only_trainable():
    model = Separator(hidden_size=16, nb_layers=1, max_bin=64)
    total = sum(p.numel() for p in model.parameters())
    assert count_parameters(model) == total
    model.input_mean.requires_grad_(False)
    assert count_parameters(model) == total - 64


@pytest.mark.parametrize("kwargs", [
    {},
    {"nb_layers": 0},
    {"bidirectional": False},
    {"nb_layers": 2, "use_mask": False},
])
@pytest.mark.parametrize("training", [True, False])
def test_forward_shape_and_sign(kwargs, training):
    torch.manual_seed(0)
    forward_random_magnitudes(Separator(hidden_size=16, max_bin=300, **{"nb_layers": 1, **kwargs}).train(training))


def forward_random_magnitudes(model: torch.nn.Module) -> torch.Tensor:
    """The model on random magnitudes (3 mixtures, stereo, 2049 bins, 11 frames): the
    shape every separator returns, finite and non-negative."""
    x = torch.rand(3, 2, 2049, 11) * 10
    with torch.no_grad():
        y = model(x)
    assert y.shape == (3, len(STEMS), 2, 2049, 11)
    assert torch.isfinite(y).all()
    assert (y >= 0).all()
    return y


def test_mask_estimate_is_zero_where_mixture_is_zero():
    torch.manual_seed(1)
    model = Separator(hidden_size=16, nb_layers=1, max_bin=300)
    x = torch.rand(2, 2, 2049, 9) + 0.1
    x[:, :, 100:400] = 0.0       # silent bins, inside and beyond max_bin
    x[:, :, :, 4] = 0.0          # a silent frame
    x[1, 0] = 0.0                # a silent channel
    for training in (True, False):
        with torch.no_grad():
            y = model.train(training)(x)
        silent = (x == 0).unsqueeze(1).expand_as(y)
        assert (y[silent] == 0).all()
        assert (y[~silent] > 0).any()


def test_no_mask_variant_is_not_a_mask():
    torch.manual_seed(2)
    model = Separator(hidden_size=16, nb_layers=1, max_bin=300, use_mask=False).eval()
    x = torch.zeros(1, 2, 2049, 5)
    with torch.no_grad():
        y = model(x)
    assert (y >= 0).all()
    # Direct magnitudes: a silent mixture does not force a silent output.
    assert (y > 0).any()


def test_config_rebuilds_same_architecture():
    model = Separator(hidden_size=24, nb_layers=2, max_bin=123, use_mask=False, bidirectional=False)
    clone = build_model(model.config)
    assert type(clone) is Separator
    assert clone.config == model.config
    clone.load_state_dict(model.state_dict())  # strict: same parameter names and shapes


def test_bandwidth_bins():
    assert bandwidth_bins(16000.0, 44100, 4096) == 1487
    assert bandwidth_bins(1e9, 44100, 4096) == 2049
    assert Separator().max_bin == bandwidth_bins(16000.0, 44100, 4096)


# ------------------------------------------------------------------ registry

def test_config_names_the_model():
    assert Separator(hidden_size=16, nb_layers=1, max_bin=64).config["model"] == "umx"


def test_build_model_rejects_unknown_name():
    with pytest.raises(ValueError, match="unknown model 'demucs'"):
        build_model({"model": "demucs"})


def test_checkpoint_without_model_key_loads_as_umx(tmp_path):
    """Checkpoints written before the model choice have no "model" in model_config."""
    torch.manual_seed(3)
    model = Separator(hidden_size=16, nb_layers=1, max_bin=100).eval()
    old_config = {k: v for k, v in model.config.items() if k != "model"}
    assert build_model(old_config).config == model.config
    checkpoint.save(tmp_path / "old.pt", {"model_state": model.state_dict(), "model_config": old_config,
                                                "epoch": 1})
    loaded, state = checkpoint.load_separator(tmp_path / "old.pt")
    assert type(loaded) is Separator and "model" not in state["model_config"]
    x = torch.rand(1, 2, 2049, 6)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
