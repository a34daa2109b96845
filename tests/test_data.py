"""data.py: augmentations, training datasets, the sampler, and the stem cache that
preprocess.py writes (checked against what musdb itself decodes)."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import musdb
import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

import data
import preprocess
import train
import utils
from conftest import SYNTH_TRACKS, VALID_TRACKS
from data import SOURCES, EpochSampler, MagnitudeChunks, StemCache, TrainChunks
from pipeline_helpers import TINY_TRAIN, assert_one_error_line
from utils import UserError

TRAIN_NAMES = sorted(n for n, _ in SYNTH_TRACKS["train"])
TEST_NAMES = sorted(n for n, _ in SYNTH_TRACKS["test"])


# ------------------------------------------------------------ augmentations

def test_random_gain_range_and_coverage():
    rng = np.random.default_rng(0)
    audio = np.ones((2, 8), dtype=np.float32)
    gains = []
    for _ in range(3000):
        out = data.random_gain(audio, rng)
        assert out.dtype == np.float32 and out.shape == audio.shape
        assert np.all(out == out[0, 0])  # one gain for the whole excerpt
        gains.append(float(out[0, 0]))
    gains = np.array(gains)
    low, high = data.GAIN_RANGE
    assert (low, high) == (0.25, 1.25)
    assert gains.min() >= low and gains.max() <= high
    assert gains.min() < low + 0.01 and gains.max() > high - 0.01
    assert abs(gains.mean() - (low + high) / 2) < 0.03  # uniform, not clustered at one end
    assert np.all(audio == 1)  # input untouched


def test_draw_swap_swaps_half_the_time():
    rng = np.random.default_rng(1)
    n = 4000
    assert 0.45 < sum(data.draw_swap(rng) for _ in range(n)) / n < 0.55


def test_scaled_stems_read_into_converts_gains_swaps_and_pads():
    """The training items' one-pass read: codes x scale x gain into the destination as given
    (a reversed-channel view for a swap), zeros past the codes' end."""
    codes = np.random.default_rng(3).integers(-32768, 32767, size=(2, 50), dtype=np.int16)
    stems = data.ScaledStems(codes, 1 / 32768)
    out = np.full((2, 60), np.nan, dtype=np.float32)
    stems[:, 10:].read_into(out[::-1], gain=0.5)
    expected = codes[::-1, 10:].astype(np.float64) / 32768 * 0.5
    np.testing.assert_allclose(out[:, :40], expected, rtol=1e-6)
    assert np.all(out[:, 40:] == 0)


@pytest.mark.parametrize("spec, expected", [
    ("all", set(data.AUGMENTATIONS)),
    ("none", set()),
    ("gain", {"gain"}),
    ("gain,swap", {"gain", "swap"}),
    (" remix , chunk ", {"remix", "chunk"}),
])
def test_parse_augmentations_accepts(spec, expected):
    assert set(data.parse_augmentations(spec)) == expected


def test_parse_augmentations_all_is_every_augmentation():
    assert set(data.parse_augmentations("all")) == {"gain", "swap", "chunk", "remix"}


@pytest.mark.parametrize("spec", ["bogus", "gain,bogus", "all,gain", "Gain"])
def test_parse_augmentations_rejects_unknown(spec):
    with pytest.raises(UserError):
        data.parse_augmentations(spec)


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
        cache.add_track(f"track{i}", "train", stems.astype(np.float32), magnitudes=True)
    cache.add_track("valid0", "valid", np.random.default_rng(99).standard_normal(
        (len(SOURCES), 2, NOISE_LEN)).astype(np.float32), magnitudes=False)
    return StemCache(cache.root)


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
        item = ds[index].numpy()
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
        item = ds[index].numpy()
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
        item = ds[index].numpy()
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
        torch.testing.assert_close(a[index], b[index], rtol=0, atol=0)
        assert not torch.equal(a[index], c[index])
    assert not torch.equal(a[1], a[1 + len(a)])  # same track, next epoch: another excerpt


def test_short_track_is_zero_padded(tmp_path):
    cache = StemCache.create_or_open(tmp_path)
    stems = np.ones((len(SOURCES), 2, 100), dtype=np.float32)
    cache.add_track("short", "train", stems, magnitudes=False)
    item = TrainChunks(cache, ["short"], 300, 1, augmentations=())[0].numpy()
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
    first_track_items = {e: [ds[i] for i in idx if (i % n) // 3 == 0] for e, idx in epochs.items()}
    assert not any(torch.equal(x, y) for x in first_track_items[1] for y in first_track_items[2])
    assert all(torch.equal(x, y) for x, y in zip(first_track_items[2], [ds[i] for i in again if (i % n) // 3 == 0]))


def test_magnitude_chunks_are_cache_slices(noise_cache):
    names = noise_cache.names("train")
    frames = 7
    ds = MagnitudeChunks(noise_cache, names, frames, samples_per_track=2, augmentations=())
    for index in range(len(ds)):
        item = ds[index].numpy()
        assert item.shape == (3, frames, 2, 2049)
        mags = np.asarray(noise_cache.magnitudes(names[index // 2]))  # 3, frames, channels, bins
        matches = [s for s in range(mags.shape[1] - frames + 1) if np.array_equal(mags[:, s:s + frames], item)]
        assert len(matches) == 1


def test_spawned_workers_receive_a_small_dataset(noise_cache):
    """spawn (macOS's default) and forkserver (Linux's from Python 3.14) pickle the dataset
    into every worker; a pickled np.memmap carries its whole array. After the parent has
    read every track (as input_statistics does before training), the datasets must still
    pickle to the cache's path and index, and workers must deliver the parent's items."""
    cache = StemCache(noise_cache.root)
    names = cache.names("train")
    data.input_statistics(cache, names)  # opens every track's stems here
    datasets = {"stems": TrainChunks(cache, names, SEQ, 2, seed=11),
                "magnitudes": MagnitudeChunks(cache, names, 7, 2, augmentations=(), seed=11)}
    expected = {kind: torch.stack([ds[i] for i in range(len(ds))]) for kind, ds in datasets.items()}
    assert len(cache._open) == 2 * len(names)  # stems and magnitudes of every track are open
    arrays = sum(cache._array(kind, n).nbytes for kind in ("stems", "magnitudes") for n in names)
    assert arrays > 4_000_000  # what a pickle of the open arrays would carry
    for kind, ds in datasets.items():
        assert len(pickle.dumps(ds)) < 20_000, kind
        loader = DataLoader(ds, batch_size=4, num_workers=1, multiprocessing_context="spawn")
        torch.testing.assert_close(torch.cat(list(loader)), expected[kind], rtol=0, atol=0, msg=kind)


def test_dataset_without_tracks_is_a_user_error(noise_cache):
    with pytest.raises(UserError):
        TrainChunks(noise_cache, [], SEQ, 2)
    with pytest.raises(UserError):  # valid0 was cached without magnitudes
        MagnitudeChunks(noise_cache, ["valid0"], 5, 2)


# ------------------------------------------------------------ the cache

def musdb_sources(track) -> np.ndarray:
    """The track's sources decoded by musdb one by one (independent of data.decode_stems),
    as (sources, channels, samples) float32 in the cache's SOURCES order."""
    return np.stack([np.asarray(track.sources[s].audio, dtype=np.float32).T for s in SOURCES])


def assert_cache_matches_musdb(cache: StemCache, tracks, exact: bool) -> None:
    """exact: 16-bit WAV is stored losslessly; decoded AAC within half an int16 step."""
    for track in tracks:
        stems = cache.stems(track.name)
        expected = musdb_sources(track)
        assert stems.dtype == np.float32 and np.asarray(stems).dtype == np.float32
        assert stems.shape == expected.shape == (len(SOURCES), 2, cache.length(track.name))
        step = cache.index["tracks"][track.name]["scale"]
        assert step <= 1 / 32768 or np.abs(expected).max() > 1.0  # a coarser step only for a peak past full scale
        np.testing.assert_allclose(np.asarray(stems), expected, rtol=0, atol=0 if exact else step / 2 + 2 ** -23,
                                   err_msg=track.name)


def assert_index_splits(cache_dir: Path, train: list[str], valid: list[str]) -> dict:
    index = json.loads((cache_dir / "index.json").read_text())
    assert index["format_version"] == data.CACHE_VERSION
    assert index["sample_rate"] == utils.SAMPLE_RATE
    assert set(index["tracks"]) == set(train) | set(valid)
    for name, entry in index["tracks"].items():
        assert entry["split"] == ("valid" if name in valid else "train"), name
        assert isinstance(entry["length"], int) and entry["length"] > 0
    return index


def test_preprocess_hq_index(hq_cache_run, hq_root):
    cache_dir, result = hq_cache_run
    index = assert_index_splits(cache_dir, [n for n in TRAIN_NAMES if n not in VALID_TRACKS], list(VALID_TRACKS))
    assert not set(TEST_NAMES) & set(index["tracks"])  # the test set is never read
    assert "3 train and 2 valid" in result.stdout
    db = musdb.DB(root=str(hq_root), is_wav=True, subsets="train")
    for track in db:
        assert index["tracks"][track.name]["length"] == track.samples


def test_preprocess_hq_stems_equal_musdb(hq_cache, hq_root):
    cache = StemCache(hq_cache)
    # Every cached track against the WAV files read directly...
    for name in TRAIN_NAMES:
        for k, source in enumerate(SOURCES):
            audio, rate = sf.read(hq_root / "train" / name / f"{source}.wav", dtype="float32")
            assert rate == cache.index["sample_rate"]
            np.testing.assert_array_equal(np.asarray(cache.stems(name)[k]), audio.T, err_msg=f"{name} {source}")
    # ... and one train-split and one valid-split track against musdb's own decoding.
    tracks = musdb.DB(root=str(hq_root), is_wav=True, subsets="train").tracks
    assert_cache_matches_musdb(cache, [t for t in tracks if t.name in ("Synth A - One", VALID_TRACKS[0])], exact=True)


def test_preprocess_magnitudes(hq_cache):
    cache = StemCache(hq_cache)
    names = cache.names("train") + cache.names("valid")
    assert cache.has_magnitudes(names)
    for name in names[:2]:
        stems = np.asarray(cache.stems(name), dtype=np.float64)
        sums = np.stack([stems.sum(0), stems[0], stems[1:].sum(0)]).astype(np.float32)
        expected = utils.stft(torch.from_numpy(sums)).abs().numpy()  # 3, channels, bins, frames
        mags = np.asarray(cache.magnitudes(name))
        assert mags.shape == (3, utils.nb_frames(cache.length(name)), 2, 2049) and mags.dtype == np.float32
        np.testing.assert_allclose(mags.transpose(0, 2, 3, 1), expected, rtol=1e-4, atol=1e-5 * expected.max())


def _mtimes(cache_dir: Path) -> dict[str, int]:
    return {str(p.relative_to(cache_dir)): p.stat().st_mtime_ns for p in cache_dir.rglob("*") if p.is_file()}


def test_preprocess_rerun_skips_and_repairs(hq_cache, hq_root, tmp_path, capsys):
    cache_dir = tmp_path / "cache"
    shutil.copytree(hq_cache, cache_dir)
    original = {n: np.array(StemCache(cache_dir).stems(n)) for n in TRAIN_NAMES}
    argv = ["--root", str(hq_root), "--is-wav", "--cache", str(cache_dir), "--magnitudes"]

    before = _mtimes(cache_dir)
    preprocess.main(argv)
    assert _mtimes(cache_dir) == before, "a re-run rewrote cached tracks"

    a, b, c = "Synth A - One", "Synth B - Two", VALID_TRACKS[0]
    stems_dir = cache_dir / "stems"
    # a: killed while writing: only a temp file, and no index entry
    (stems_dir / f"{a}.npy").unlink()
    part = stems_dir / f".{a}.npy.k1ll3d.part"
    part.write_bytes(b"\x93NUMPY partial")
    index = json.loads((cache_dir / "index.json").read_text())
    del index["tracks"][a]
    utils.write_text(cache_dir / "index.json", json.dumps(index))
    # b: a complete .npy of the wrong shape; c: a .npy cut short
    np.save(stems_dir / f"{b}.npy", original[b][:, :, :1000])
    raw = (stems_dir / f"{c}.npy").read_bytes()
    (stems_dir / f"{c}.npy").write_bytes(raw[: len(raw) // 2])
    touched = {f"stems/{n}.npy" for n in (a, b, c)}
    before = _mtimes(cache_dir)

    preprocess.main(argv)
    assert "3 train and 2 valid" in capsys.readouterr().out
    after = _mtimes(cache_dir)
    assert not part.exists(), "the stale temp file was left behind"
    assert not list(cache_dir.rglob("*.part"))
    for path, mtime in before.items():
        if path.startswith("stems/") and path not in touched and path in after:
            assert after[path] == mtime, f"{path} was re-done although it was intact"
    cache = StemCache(cache_dir)
    for name in (a, b, c):
        assert cache.is_cached(name, magnitudes=True)
        np.testing.assert_array_equal(np.asarray(cache.stems(name)), original[name])
    assert_index_splits(cache_dir, [n for n in TRAIN_NAMES if n not in VALID_TRACKS], list(VALID_TRACKS))


@pytest.mark.slow  # generating and decoding AAC stems
def test_preprocess_stem_mp4(stem_root, tmp_path, capsys):
    cache_dir = tmp_path / "cache"
    # One train-split and one valid-split track (decoding AAC is the slow part).
    names = ["Synth C - Three", VALID_TRACKS[1]]
    preprocess.main(["--root", str(stem_root), "--cache", str(cache_dir), "--tracks", *names])
    assert "1 train and 1 valid" in capsys.readouterr().out
    assert_index_splits(cache_dir, names[:1], names[1:])
    cache = StemCache(cache_dir)
    assert not cache.has_magnitudes(names)
    # Each source decoded by musdb on its own, independently of data.decode_stems.
    picked = [t for t in musdb.DB(root=str(stem_root), subsets="train").tracks if t.name in names]
    assert len(picked) == 2
    assert_cache_matches_musdb(cache, picked, exact=False)


def test_preprocess_tracks_option(hq_root, tmp_path, capsys):
    cache_dir = tmp_path / "cache"
    preprocess.main(["--root", str(hq_root), "--is-wav", "--cache", str(cache_dir), "--tracks", "Synth B - Two",
                     VALID_TRACKS[1]])
    assert_index_splits(cache_dir, ["Synth B - Two"], [VALID_TRACKS[1]])
    with pytest.raises(UserError):  # a test track is not in the training set
        preprocess.main(["--root", str(hq_root), "--is-wav", "--cache", str(cache_dir), "--tracks", TEST_NAMES[0]])


def test_stem_cache_errors(tmp_path):
    with pytest.raises(UserError):
        StemCache(tmp_path / "missing")
    (tmp_path / "index.json").write_text(json.dumps({"format_version": data.CACHE_VERSION + 1, "tracks": {}}))
    with pytest.raises(UserError):
        StemCache(tmp_path)
    (tmp_path / "index.json").write_text("{not json")
    with pytest.raises(UserError):
        StemCache(tmp_path)


def test_input_statistics(noise_cache):
    names = noise_cache.names("train")
    mean, std = data.input_statistics(noise_cache, names)
    mags = np.concatenate([utils.stft(torch.from_numpy(np.asarray(noise_cache.stems(n)).sum(0))).abs().numpy()
                           .transpose(1, 0, 2).reshape(2049, -1) for n in names], axis=1)
    np.testing.assert_allclose(mean, mags.mean(1), rtol=1e-4)
    np.testing.assert_allclose(std, mags.std(1), rtol=1e-3)


def test_cached_stems_are_int16_within_half_a_step(tmp_path):
    """Decoded AAC lies off the 16-bit grid: cached as int16 codes of 1/32768 it comes back
    within half a step; 16-bit PCM values (MUSDB18-HQ), -1.0 included, come back exactly."""
    rng = np.random.default_rng(5)
    decoded = rng.uniform(-1.0, 32767 / 32768, (len(SOURCES), 2, 5000)).astype(np.float32)
    pcm = (rng.integers(-32768, 32768, decoded.shape) / 32768).astype(np.float32)
    pcm[0, 0, 0], pcm[0, 0, 1] = -1.0, 32767 / 32768
    writer = StemCache.create_or_open(tmp_path)
    writer.add_track("decoded", "train", decoded, magnitudes=False)
    writer.add_track("pcm", "train", pcm, magnitudes=False)
    cache = StemCache(tmp_path)
    for name in ("decoded", "pcm"):
        assert {k: cache.index["tracks"][name][k] for k in ("dtype", "scale")} == {"dtype": "int16", "scale": 1 / 32768}
        assert np.load(tmp_path / "stems" / f"{name}.npy").dtype == np.int16
        assert cache.is_cached(name, magnitudes=False)
    back = np.asarray(cache.stems("decoded"))
    assert back.dtype == np.float32 and back.shape == decoded.shape
    assert np.abs(back - decoded).max() <= 1 / 65536
    np.testing.assert_array_equal(np.asarray(cache.stems("pcm")), pcm)
    # a slice reads the same values as the whole
    np.testing.assert_array_equal(np.asarray(cache.stems("decoded")[1, :, 100:200]), back[1, :, 100:200])


def test_a_track_peaking_above_full_scale_does_not_clip(tmp_path):
    """Decoded AAC can overshoot 1.0: the track's step then grows so that its peak is code
    32767, recorded in the index, and every sample still comes back within half a step."""
    rng = np.random.default_rng(6)
    stems = rng.uniform(-0.5, 0.5, (len(SOURCES), 2, 5000)).astype(np.float32)
    stems[2, 1, 1234], stems[0, 0, 10] = 1.7, -1.3
    StemCache.create_or_open(tmp_path).add_track("loud", "train", stems, magnitudes=True)
    cache = StemCache(tmp_path)
    step = cache.index["tracks"]["loud"]["scale"]
    assert step == pytest.approx(1.7 / 32767) and step < 2 / 32768
    back = np.asarray(cache.stems("loud"))
    assert back[2, 1, 1234] == pytest.approx(1.7, abs=step / 2) and back[0, 0, 10] == pytest.approx(-1.3, abs=step / 2)
    assert np.abs(back - stems).max() <= step / 2 + 2 ** -23  # (+ float32 rounding) within 1/32768: nothing clipped
    assert np.abs(back).max() > 1.69


def test_a_float32_cache_of_format_version_1_is_refused(tmp_path, capsys):
    """A version-1 cache, written here as preprocess.py wrote it (float32 stems, no scale),
    is refused in one line that says to rerun preprocess.py, never read as int16 codes."""
    stems = np.random.default_rng(7).uniform(-0.5, 0.5, (len(SOURCES), 2, utils.SAMPLE_RATE)).astype(np.float32)
    (tmp_path / "cache" / "stems").mkdir(parents=True)
    for name in ("old", "old_valid"):
        np.save(tmp_path / "cache" / "stems" / f"{name}.npy", stems)
    (tmp_path / "cache" / "index.json").write_text(json.dumps({
        "format_version": 1, "sample_rate": utils.SAMPLE_RATE, "sources": list(SOURCES),
        "stft": {"n_fft": utils.N_FFT, "hop": utils.HOP},
        "tracks": {"old": {"split": "train", "length": utils.SAMPLE_RATE, "magnitudes": False},
                   "old_valid": {"split": "valid", "length": utils.SAMPLE_RATE, "magnitudes": False}}}))
    for open_cache in (StemCache, StemCache.create_or_open):  # training, and preprocess.py into it
        with pytest.raises(UserError, match="format version 1.*rerun preprocess.py"):
            open_cache(tmp_path / "cache")
    code = utils.run_cli(train.main, ["--cache", str(tmp_path / "cache"), "--checkpoint-dir", str(tmp_path / "k"),
                                      *TINY_TRAIN, "--epochs", "1"])
    assert_one_error_line(capsys.readouterr().err, code, mentions="rerun preprocess.py")
    assert not (tmp_path / "k").exists()
