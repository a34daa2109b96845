"""cache.py: the stem cache that preprocess.py writes (checked against what musdb itself
decodes), its int16 stems and its format version."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import musdb
import numpy as np
import pytest
import soundfile as sf

import preprocess
import train
import utils
from conftest import SYNTH_TRACKS, VALID_TRACKS
from formats.cache import CACHE_VERSION, SOURCES, ScaledStems, StemCache
from pipeline_helpers import TINY_TRAIN, assert_one_error_line
from utils import UserError

TRAIN_NAMES = sorted(n for n, _ in SYNTH_TRACKS["train"])
TEST_NAMES = sorted(n for n, _ in SYNTH_TRACKS["test"])


def test_scaled_stems_codes_into_copies_codes_and_pads():
    """The training items' read: the slice's int16 codes into the destination, zeros past
    the codes' end, and the scale that turns them into the audio np.asarray gives."""
    codes = np.random.default_rng(3).integers(-32768, 32767, size=(2, 50), dtype=np.int16)
    stems = ScaledStems(codes, 1 / 32768)
    out = np.full((2, 60), 7, dtype=np.int16)
    stems[:, 10:].codes_into(out)
    np.testing.assert_array_equal(out[:, :40], codes[:, 10:])
    assert np.all(out[:, 40:] == 0)
    assert stems.scale == np.float32(1 / 32768)
    np.testing.assert_array_equal(np.asarray(stems[:, 10:]), out[:, :40] * stems.scale)


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
    assert index["format_version"] == CACHE_VERSION
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


def test_a_cache_holding_magnitudes_reads_as_before(tmp_path):
    """A version-2 cache written with magnitudes (a magnitudes/ folder, an "stft" entry, a
    "magnitudes" flag per track) reads as any other: the same stems, its tracks cached,
    and a track added keeps what the index held."""
    stems = np.random.default_rng(8).uniform(-0.5, 0.5, (len(SOURCES), 2, 5000)).astype(np.float32)
    StemCache.create_or_open(tmp_path).add_track("t", "train", stems)
    index = json.loads((tmp_path / "index.json").read_text())
    index["stft"] = {"n_fft": utils.N_FFT, "hop": utils.HOP}
    index["tracks"]["t"]["magnitudes"] = True
    utils.write_text(tmp_path / "index.json", json.dumps(index))
    (tmp_path / "magnitudes").mkdir()
    np.save(tmp_path / "magnitudes" / "t.npy", np.zeros((3, utils.nb_frames(5000), 2, 2049), dtype=np.float32))
    cache = StemCache.create_or_open(tmp_path)
    assert cache.is_cached("t") and cache.names("train") == ["t"]
    assert np.abs(np.asarray(cache.stems("t")) - stems).max() <= 1 / 65536
    cache.add_track("u", "valid", stems)
    index = json.loads((tmp_path / "index.json").read_text())
    assert index["stft"] == {"n_fft": utils.N_FFT, "hop": utils.HOP} and index["tracks"]["t"]["magnitudes"] is True
    assert StemCache(tmp_path).names() == ["t", "u"]


def _mtimes(cache_dir: Path) -> dict[str, int]:
    return {str(p.relative_to(cache_dir)): p.stat().st_mtime_ns for p in cache_dir.rglob("*") if p.is_file()}


def test_preprocess_rerun_skips_and_repairs(hq_cache, hq_root, tmp_path, capsys):
    cache_dir = tmp_path / "cache"
    shutil.copytree(hq_cache, cache_dir)
    original = {n: np.array(StemCache(cache_dir).stems(n)) for n in TRAIN_NAMES}
    argv = ["--root", str(hq_root), "--is-wav", "--cache", str(cache_dir)]

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
        assert cache.is_cached(name)
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
    (tmp_path / "index.json").write_text(json.dumps({"format_version": CACHE_VERSION + 1, "tracks": {}}))
    with pytest.raises(UserError):
        StemCache(tmp_path)
    (tmp_path / "index.json").write_text("{not json")
    with pytest.raises(UserError):
        StemCache(tmp_path)


def test_cached_stems_are_int16_within_half_a_step(tmp_path):
    """Decoded AAC lies off the 16-bit grid: cached as int16 codes of 1/32768 it comes back
    within half a step; 16-bit PCM values (MUSDB18-HQ), -1.0 included, come back exactly."""
    rng = np.random.default_rng(5)
    decoded = rng.uniform(-1.0, 32767 / 32768, (len(SOURCES), 2, 5000)).astype(np.float32)
    pcm = (rng.integers(-32768, 32768, decoded.shape) / 32768).astype(np.float32)
    pcm[0, 0, 0], pcm[0, 0, 1] = -1.0, 32767 / 32768
    writer = StemCache.create_or_open(tmp_path)
    writer.add_track("decoded", "train", decoded)
    writer.add_track("pcm", "train", pcm)
    cache = StemCache(tmp_path)
    for name in ("decoded", "pcm"):
        assert {k: cache.index["tracks"][name][k] for k in ("dtype", "scale")} == {"dtype": "int16", "scale": 1 / 32768}
        assert np.load(tmp_path / "stems" / f"{name}.npy").dtype == np.int16
        assert cache.is_cached(name)
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
    StemCache.create_or_open(tmp_path).add_track("loud", "train", stems)
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
