"""data.py: the training datasets and their augmented items, the sampler and the input
statistics (the cache: test_cache.py; the augmentations by themselves: test_augment.py)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import data
import utils
from data import EpochSampler, StemBatch, TrainChunks, VocoderChunks
from formats.cache import SOURCES, StemCache
from utils import UserError

# ------------------------------------------------------------ datasets

NOISE_LEN = 20000
SEQ = 1500


@pytest.fixture(scope="module")
def noise_cache(tmp_path_factory) -> StemCache:
    """A cache of 4 tracks of distinct white noise (every excerpt identifies its track and
    offset uniquely), written through the cache's own API."""
    cache = StemCache.create_or_open(tmp_path_factory.mktemp("noise_cache"))
    for i in range(4):
        stems = np.random.default_rng(100 + i).standard_normal((len(SOURCES), 2, NOISE_LEN + 500 * i))
        cache.add_track(f"track{i}", "train", stems.astype(np.float32))
    cache.add_track("valid0", "valid", np.random.default_rng(99).standard_normal(
        (len(SOURCES), 2, NOISE_LEN)).astype(np.float32))
    return StemCache(cache.root)


def item_audio(ds: TrainChunks, index: int) -> np.ndarray:
    """Item `index` as float32 audio (sources, channels, samples), as the training device
    makes it from the item's codes."""
    return StemBatch.collate([ds[index]]).stems(torch.device("cpu"))[0].numpy()


def locate(cache: StemCache, names, source: int, excerpt: np.ndarray) -> list[tuple[str, int]]:
    """Every (track, start) whose cached stem `source` equals `excerpt` (channels, samples)."""
    length = excerpt.shape[-1]
    hits = []
    for name in names:
        stem = np.asarray(cache.stems(name)[source])
        # The starts whose first 16 samples match, then the whole excerpt at those: int16 stems
        # repeat values often, and a whole-excerpt comparison at every start whose first sample
        # matched took minutes.
        starts = np.arange(max(0, stem.shape[-1] - length + 1))
        for j in range(min(16, length)):
            starts = starts[stem[0, starts + j] == excerpt[0, j]]
        hits += [(name, int(start)) for start in starts if np.array_equal(stem[:, start:start + length], excerpt)]
    return hits


def test_remix_draws_stems_from_different_tracks(noise_cache):
    names = noise_cache.names("train")
    ds = TrainChunks(noise_cache, names, SEQ, samples_per_track=5, augmentations=("remix",), seed=3)
    mixed_items, aligned_items = 0, 0
    for index in range(len(ds)):
        item = item_audio(ds, index)
        assert item.shape == (len(SOURCES), 2, SEQ) and item.dtype == np.float32
        origins = []
        for k in range(len(SOURCES)):
            hits = locate(noise_cache, names, k, item[k])
            assert len(hits) == 1, f"item {index} stem {k}: {hits}"
            origins.append(hits[0])
        mixed_items += len({name for name, _ in origins}) > 1
        aligned_items += len(set(origins)) == 1
    assert mixed_items > len(ds) // 2
    assert aligned_items < len(ds) // 4


def test_without_remix_or_chunk_stems_are_aligned(noise_cache):
    names = noise_cache.names("train")
    ds = TrainChunks(noise_cache, names, SEQ, samples_per_track=3, augmentations=(), seed=4)
    starts = set()
    for index in range(len(ds)):
        item = item_audio(ds, index)
        expected_track = names[index // 3]
        first = locate(noise_cache, names, 0, item[0])
        assert len(first) == 1 and first[0][0] == expected_track
        track, start = first[0]
        starts.add(start)
        stems = np.asarray(noise_cache.stems(track))
        np.testing.assert_array_equal(item, stems[:, :, start:start + SEQ])
    assert len(starts) > 1  # a random offset, not always 0


def test_chunk_without_remix_keeps_track_but_not_offset(noise_cache):
    names = noise_cache.names("train")
    ds = TrainChunks(noise_cache, names, SEQ, samples_per_track=3, augmentations=("chunk",), seed=5)
    unaligned = 0
    for index in range(len(ds)):
        item = item_audio(ds, index)
        origins = [locate(noise_cache, names, k, item[k]) for k in range(len(SOURCES))]
        assert all(len(o) == 1 and o[0][0] == names[index // 3] for o in origins)
        unaligned += len({o[0][1] for o in origins}) > 1
    assert unaligned > len(ds) // 2


def test_items_are_deterministic_in_seed_and_index(noise_cache):
    names = noise_cache.names("train")
    a = TrainChunks(noise_cache, names, SEQ, 2, seed=7)
    b = TrainChunks(StemCache(noise_cache.root), names, SEQ, 2, seed=7)
    c = TrainChunks(noise_cache, names, SEQ, 2, seed=8)
    for index in (0, 5, 123):  # indices past len() are later epochs of the same items
        np.testing.assert_array_equal(item_audio(a, index), item_audio(b, index))
        assert not np.array_equal(item_audio(a, index), item_audio(c, index))
    assert not np.array_equal(item_audio(a, 1), item_audio(a, 1 + len(a)))  # same track, next epoch: another excerpt


def test_short_track_is_zero_padded(tmp_path):
    cache = StemCache.create_or_open(tmp_path)
    stems = np.ones((len(SOURCES), 2, 100), dtype=np.float32)
    cache.add_track("short", "train", stems)
    item = item_audio(TrainChunks(cache, ["short"], 300, 1, augmentations=()), 0)
    assert np.all(item[..., :100] == 1) and np.all(item[..., 100:] == 0)


def test_epoch_sampler(noise_cache):
    n = 12
    sampler = EpochSampler(n, seed=1)
    epochs = {}
    for epoch in (1, 2, 3):
        sampler.set_epoch(epoch)
        epochs[epoch] = list(sampler)
        assert len(epochs[epoch]) == len(sampler) == n
        # a shuffled permutation of this epoch's block of item indices
        assert sorted(epochs[epoch]) == list(range(epoch * n, (epoch + 1) * n))
    assert epochs[1] != [i for i in range(n, 2 * n)]
    # same seed and epoch -> the same order, even from a fresh sampler
    again = EpochSampler(n, seed=1)
    again.set_epoch(2)
    assert list(again) == epochs[2]
    other = EpochSampler(n, seed=2)
    other.set_epoch(2)
    assert list(other) != epochs[2]
    # ... and so different excerpts per epoch, the same excerpts for the same epoch
    names = noise_cache.names("train")
    ds = TrainChunks(noise_cache, names, SEQ, samples_per_track=3, seed=1)
    first_track_items = {e: [item_audio(ds, i) for i in idx if (i % n) // 3 == 0] for e, idx in epochs.items()}
    assert not any(np.array_equal(x, y) for x in first_track_items[1] for y in first_track_items[2])
    assert all(np.array_equal(x, y)
               for x, y in zip(first_track_items[2], [item_audio(ds, i) for i in again if (i % n) // 3 == 0]))


def test_spawned_workers_receive_a_small_dataset(noise_cache):
    """spawn (macOS's default) and forkserver (Linux's from Python 3.14) pickle the dataset
    into every worker; a pickled np.memmap carries its whole array. After the parent has
    read every track (as input_statistics does before training), the datasets must still
    pickle to the cache's path and index, and a worker must deliver the parent's items
    (one spawned worker: the training dataset's)."""
    cache = StemCache(noise_cache.root)
    names = cache.names("train")
    data.input_statistics(cache, names)  # opens every track's stems here
    assert len(cache._open) == len(names)
    arrays = sum(cache._memmap(n).nbytes for n in names)
    assert arrays > 1_000_000  # what a pickle of the open arrays would carry
    train, vocoder = TrainChunks(cache, names, SEQ, 2, seed=11), VocoderChunks(cache, names, SEQ, 8, seed=11)
    assert len(pickle.dumps(train)) < 20_000 and len(pickle.dumps(vocoder)) < 20_000
    expected = StemBatch.collate([train[i] for i in range(len(train))]).codes
    loader = DataLoader(train, batch_size=4, num_workers=1, multiprocessing_context="spawn",
                        collate_fn=StemBatch.collate)
    torch.testing.assert_close(torch.cat([batch.codes for batch in loader]), expected, rtol=0, atol=0)


def test_dataset_without_tracks_is_a_user_error(noise_cache):
    with pytest.raises(UserError):
        TrainChunks(noise_cache, [], SEQ, 2)
    with pytest.raises(UserError):
        VocoderChunks(noise_cache, [], SEQ, 2)


def test_input_statistics(noise_cache):
    names = noise_cache.names("train")
    mean, std = data.input_statistics(noise_cache, names)
    mags = np.concatenate([utils.stft(torch.from_numpy(np.asarray(noise_cache.stems(n)).sum(0))).abs().numpy()
                           .transpose(1, 0, 2).reshape(2049, -1) for n in names], axis=1)
    np.testing.assert_allclose(mean, mags.mean(1), rtol=1e-4)
    np.testing.assert_allclose(std, mags.std(1), rtol=1e-3)
