"""augment.py: the draws, the registry behind --augment, and the order in which an item's
augmentations place and change its excerpts (items from a cache: test_data.py, test_automix.py)."""

from __future__ import annotations

import numpy as np
import pytest

from training import augment
from training.augment import APPLY_ORDER, AUGMENTATION_REGISTRY, Excerpt, TrackPool, augment_item
from utils import UserError


def test_random_gain_range_and_coverage():
    rng = np.random.default_rng(0)
    audio = np.ones((2, 8), dtype=np.float32)
    gains = []
    for _ in range(3000):
        out = augment.random_gain(audio, rng)
        assert out.dtype == np.float32 and out.shape == audio.shape
        assert np.all(out == out[0, 0])  # one gain for the whole excerpt
        gains.append(float(out[0, 0]))
    gains = np.array(gains)
    low, high = augment.GAIN_RANGE
    assert (low, high) == (0.25, 1.25)
    assert gains.min() >= low and gains.max() <= high
    assert gains.min() < low + 0.01 and gains.max() > high - 0.01
    assert abs(gains.mean() - (low + high) / 2) < 0.03  # uniform, not clustered at one end
    assert np.all(audio == 1)  # input untouched


def test_draw_swap_swaps_half_the_time():
    rng = np.random.default_rng(1)
    n = 4000
    assert 0.45 < sum(augment.draw_swap(rng) for _ in range(n)) / n < 0.55


@pytest.mark.parametrize("spec, expected", [
    ("all", set(augment.AUGMENTATIONS)),
    ("none", set()),
    ("gain", {"gain"}),
    ("gain,swap", {"gain", "swap"}),
    (" remix , chunk ", {"remix", "chunk"}),
])
def test_parse_augmentations_accepts(spec, expected):
    assert set(augment.parse_augmentations(spec)) == expected


def test_parse_augmentations_all_is_every_augmentation():
    assert set(augment.parse_augmentations("all")) == {"gain", "swap", "chunk", "remix"}


@pytest.mark.parametrize("spec", ["bogus", "gain,bogus", "all,gain", "Gain"])
def test_parse_augmentations_rejects_unknown(spec):
    with pytest.raises(UserError):
        augment.parse_augmentations(spec)


def test_every_registered_augmentation_runs():
    assert sorted(APPLY_ORDER) == sorted(AUGMENTATION_REGISTRY)


def pool(enabled) -> TrackPool:
    return TrackPool(["a", "b", "c"], {"a": 10_000, "b": 20_000, "c": 500}, 1000, frozenset(enabled))


def test_chunk_leaves_an_excerpt_that_remix_placed():
    """remix and chunk together draw one track and one start per source, as remix alone
    does; chunk alone keeps each source's track and draws it its own start."""
    excerpts = [Excerpt("a", 0) for _ in range(4)]
    remixed = augment_item(excerpts, pool({"remix"}), np.random.default_rng(5))
    assert len({e.track for e in remixed}) > 1 and all(e.placed for e in remixed)
    assert augment_item(excerpts, pool({"remix", "chunk"}), np.random.default_rng(5)) == remixed
    chunked = augment_item(excerpts, pool({"chunk"}), np.random.default_rng(5))
    assert {e.track for e in chunked} == {"a"} and len({e.start for e in chunked}) > 1
