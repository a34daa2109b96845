"""The int16 training batches (data.StemBatch) and their loaders: audio bit-identical to the
float32 item path they replaced (bench.data_loading.FloatItems) for every augmentation
combination over a full epoch, data.BackgroundLoader against a DataLoader, and the
two-stem cache (preprocess.py --stems 2)."""

from __future__ import annotations

import itertools
import threading

import numpy as np
import pytest
import torch
from test_automix import click_stems, make_click_cache
from test_data import item_audio, locate

from bench.data_loading import float_loader
from data import BackgroundLoader, EpochSampler, StemBatch, TrainChunks
from formats.cache import SOURCE_SETS, SOURCES, StemCache, mixture_and_targets
from pipeline_helpers import run_script
from training.augment import AUGMENTATION_REGISTRY
from training.loader import make_loader
from training.loop import batch_targets
from utils import SAMPLE_RATE, UserError

CPU = torch.device("cpu")
SEQ_DUR = 1.5
EVERY_COMBINATION = [combination for size in range(len(AUGMENTATION_REGISTRY) + 1)
                     for combination in itertools.combinations(AUGMENTATION_REGISTRY, size)]


@pytest.fixture(scope="module")
def click_cache(tmp_path_factory) -> StemCache:
    """Click tracks at known tempi (test_automix's), so that automix finds partners; one
    track is silent and one shorter than an excerpt reads past its end."""
    cache = make_click_cache(tmp_path_factory.mktemp("clicks"), seconds=4.0)
    cache.add_track("short d90", "train", click_stems("d90", SAMPLE_RATE))
    return StemCache(cache.root)


@pytest.fixture(scope="module")
def two_stem_click_cache(tmp_path_factory, click_cache) -> StemCache:
    """click_cache's tracks written as vocals and accompaniment."""
    cache = StemCache.create_or_open(tmp_path_factory.mktemp("clicks2"), SOURCE_SETS[2])
    for name in click_cache.names():
        cache.add_track(name, "train", np.asarray(click_cache.stems(name)))
    return StemCache(cache.root)


def epoch_batches(loader, sampler, epoch: int) -> list:
    """An epoch's batches, all held at once: a held batch's buffer is never refilled."""
    sampler.set_epoch(epoch)
    return list(loader)


@pytest.mark.parametrize("augmentations", EVERY_COMBINATION, ids=lambda a: "+".join(a) or "none")
def test_int16_batches_are_bit_identical_to_float32_items(click_cache, two_stem_click_cache, augmentations):
    """A full epoch of training.loader.make_loader's batches (0 workers: the background thread),
    turned into audio as batch_targets does (by the thread for a CPU device, else from the
    codes on the device), equals the float32 path's batches bit for bit,
    and so do the model inputs and targets; on the four- and the two-stem cache."""
    for cache in (click_cache, two_stem_click_cache):
        new, new_sampler = make_loader(cache, SEQ_DUR, 3, augmentations, 4, 0, seed=9, device=CPU)
        old, old_sampler = float_loader(cache, SEQ_DUR, 3, augmentations, 4, 0, seed=9)
        assert len(new) == len(old) == -(-len(cache.names("train")) * 3 // 4)
        new_batches, old_batches = epoch_batches(new, new_sampler, 3), epoch_batches(old, old_sampler, 3)
        assert len(new_batches) == len(old_batches) == len(new)
        for new_batch, old_batch in zip(new_batches, old_batches):
            assert new_batch.codes.dtype == torch.int16 and len(new_batch) == len(old_batch)
            assert new_batch.audio is not None  # for a CPU device the loader's thread makes the audio
            torch.testing.assert_close(new_batch.stems(CPU), old_batch, rtol=0, atol=0)
            from_codes = StemBatch(new_batch.codes, new_batch.scales, new_batch.swaps)  # as on a GPU
            torch.testing.assert_close(from_codes.stems(CPU), old_batch, rtol=0, atol=0)
        mixture, targets = batch_targets(new_batches[0], CPU)
        old_mixture, old_targets = batch_targets(old_batches[0], CPU)
        torch.testing.assert_close(mixture, old_mixture, rtol=0, atol=0)
        torch.testing.assert_close(targets.spectrograms, old_targets.spectrograms, rtol=0, atol=0)
        torch.testing.assert_close(targets.audio, old_targets.audio, rtol=0, atol=0)


def test_every_augmentation_changes_the_audio(click_cache):
    """The bit-identity above would hold vacuously if an augmentation did nothing."""
    plain = StemBatch.collate([TrainChunks(click_cache, click_cache.names("train"), 1000, 2, (), 4)[i]
                               for i in range(8)]).stems(CPU)
    for name in AUGMENTATION_REGISTRY:
        ds = TrainChunks(click_cache, click_cache.names("train"), 1000, 2, (name,), 4)
        assert not torch.equal(StemBatch.collate([ds[i] for i in range(8)]).stems(CPU), plain), name


def test_stem_batch_audio_scales_and_swaps_per_source():
    codes = torch.tensor([[[[1, 2, 3], [-4, -5, -6]], [[7, 8, 9], [10, 11, 12]]]], dtype=torch.int16)
    batch = StemBatch(codes, torch.tensor([[0.5, 2.0]]), torch.tensor([[False, True]]))
    expected = torch.tensor([[[[0.5, 1, 1.5], [-2, -2.5, -3]], [[20, 22, 24], [14, 16, 18]]]])
    torch.testing.assert_close(batch.stems(CPU), expected, rtol=0, atol=0)
    assert len(batch) == 1 and batch.stems(CPU).dtype == torch.float32


def test_background_loader_delivers_the_dataloaders_batches(click_cache):
    """Batches of 0 workers (the thread) and of 1 worker process agree, in every epoch,
    with a short last batch (15 items in batches of 4)."""
    names = click_cache.names("train")[:5]
    ds = TrainChunks(click_cache, names, 2000, 3, ("gain", "swap", "chunk", "remix"), seed=2)
    thread_loader = BackgroundLoader(ds, EpochSampler(len(ds), 2), 4, pin=False)
    process_loader = torch.utils.data.DataLoader(ds, batch_size=4, sampler=EpochSampler(len(ds), 2), num_workers=1,
                                                 collate_fn=StemBatch.collate, multiprocessing_context="fork")
    assert len(thread_loader) == len(process_loader) == 4
    for epoch in (1, 2):
        thread_loader.sampler.set_epoch(epoch)
        process_loader.sampler.set_epoch(epoch)
        for ours, theirs in zip(thread_loader, process_loader, strict=True):
            for field in ("codes", "scales", "swaps"):
                torch.testing.assert_close(getattr(ours, field), getattr(theirs, field), rtol=0, atol=0)
    assert len(ours) == 3
    del ours, theirs
    # batches dropped as training drops them: a few buffers, reused, not one per batch
    sampler = EpochSampler(len(ds) * 4, 2)
    many = BackgroundLoader(TrainChunks(click_cache, names, 2000, 12, (), seed=2), sampler, 4, pin=False)
    buffers = {batch.codes.data_ptr() for batch in many}
    assert len(many) == 15 and len(buffers) <= 4


def loader_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "BackgroundLoader"]


def test_background_loader_stops_its_thread_and_passes_on_errors(click_cache):
    names = click_cache.names("train")
    ds = TrainChunks(click_cache, names, 2000, 4, (), seed=2)
    loader = BackgroundLoader(ds, EpochSampler(len(ds), 2), 2, pin=False, make_audio=True)
    batches = iter(loader)
    next(batches)
    assert len(loader_threads()) == 1
    del batches  # a loop that stops early
    assert not loader_threads()

    class Broken(TrainChunks):
        def read_into(self, index, codes, scales, swaps):
            if index % len(self) == 5:
                raise OSError("the disk went away")
            super().read_into(index, codes, scales, swaps)

    broken = Broken(click_cache, names, 2000, 4, (), seed=2)
    with pytest.raises(OSError, match="the disk went away"):
        list(BackgroundLoader(broken, EpochSampler(len(broken), 2), 2, pin=False))
    assert not loader_threads()


def test_two_stem_cache_holds_vocals_and_accompaniment(tmp_path, click_cache):
    """add_track folds the four sources into vocals and their accompaniment; the mixture
    and targets match the four-stem cache's to within the int16 step (coarser here than
    1/32768: the click tracks' accompaniment peaks past full scale)."""
    cache = StemCache.create_or_open(tmp_path, SOURCE_SETS[2])
    four = np.asarray(click_cache.stems("a120"))
    cache.add_track("a120", "train", four)
    two = StemCache(tmp_path)
    assert two.sources == ("vocals", "accompaniment") and two.is_cached("a120")
    stems = np.asarray(two.stems("a120"))
    assert stems.shape == (2,) + four.shape[1:]
    step = two.index["tracks"]["a120"]["scale"]
    np.testing.assert_allclose(stems[0], four[0], rtol=0, atol=step)
    np.testing.assert_allclose(stems[1], four[1:].sum(0), rtol=0, atol=step)
    torch.testing.assert_close(mixture_and_targets(torch.from_numpy(stems)),
                               mixture_and_targets(torch.from_numpy(four)), rtol=0, atol=2 * step)
    with pytest.raises(UserError, match="holds 2 stems"):
        StemCache.create_or_open(tmp_path, SOURCES)


def test_two_stem_remix_draws_whole_accompaniments(two_stem_click_cache):
    """With two stems an item is two excerpts: remix takes the whole accompaniment (drums,
    bass and other of one place) from one track, often not the vocals' track."""
    names = [n for n in two_stem_click_cache.names("train") if n not in ("silent", "short d90")]
    ds = TrainChunks(two_stem_click_cache, names, 2000, 4, ("remix",), seed=3)
    other_track = 0
    for index in range(len(ds)):
        item = item_audio(ds, index)
        assert item.shape == (2, 2, 2000)
        (vocals, _), = locate(two_stem_click_cache, names, 0, item[0])
        (accompaniment, _), = locate(two_stem_click_cache, names, 1, item[1])
        other_track += vocals != accompaniment
    assert other_track > len(ds) // 2


@pytest.mark.slow
def test_preprocess_stems_2_against_the_four_stem_cache(hq_root, hq_cache, tmp_path):
    """preprocess.py --stems 2 caches each track's vocals and the other three sources
    summed, to within the int16 step of the four-stem cache; rerun with another --stems it
    refuses the cache."""
    result = run_script("preprocess.py", "--root", hq_root, "--is-wav", "--cache", tmp_path / "two", "--stems", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    two, four = StemCache(tmp_path / "two"), StemCache(hq_cache)
    assert two.names("train") == four.names("train") and two.names("valid") == four.names("valid")
    for name in two.names():
        two_stems, four_stems = np.asarray(two.stems(name)), np.asarray(four.stems(name))
        step = two.index["tracks"][name]["scale"] + four.index["tracks"][name]["scale"]
        np.testing.assert_allclose(two_stems[0], four_stems[0], rtol=0, atol=step)
        np.testing.assert_allclose(two_stems[1], four_stems[1:].sum(0), rtol=0, atol=2 * step)
    again = run_script("preprocess.py", "--root", hq_root, "--is-wav", "--cache", tmp_path / "two")
    assert again.returncode != 0 and "use --stems 2" in again.stderr
