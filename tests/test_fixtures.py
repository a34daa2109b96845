"""Checks that the generated datasets in conftest.py read back through musdb as expected."""

from __future__ import annotations

from pathlib import Path

import musdb
import numpy as np

from conftest import RATE, SOURCES, SYNTH_TRACKS, TRACK_SECONDS, VALID_TRACKS, make_track_audio

N_SAMPLES = int(round(TRACK_SECONDS * RATE))
_SEEDS = {name: seed for entries in SYNTH_TRACKS.values() for name, seed in entries}
_TRAIN_NAMES = sorted(name for name, _ in SYNTH_TRACKS["train"])
_TEST_NAMES = sorted(name for name, _ in SYNTH_TRACKS["test"])


def _names(db: musdb.DB) -> list[str]:
    return sorted(track.name for track in db)


def _assert_splits(root: Path, is_wav: bool) -> None:
    assert _names(musdb.DB(root=root, is_wav=is_wav, subsets="train")) == _TRAIN_NAMES
    assert _names(musdb.DB(root=root, is_wav=is_wav, subsets="test")) == _TEST_NAMES
    valid = _names(musdb.DB(root=root, is_wav=is_wav, subsets="train", split="valid"))
    train = _names(musdb.DB(root=root, is_wav=is_wav, subsets="train", split="train"))
    assert valid == sorted(VALID_TRACKS)
    assert train == sorted(set(_TRAIN_NAMES) - set(VALID_TRACKS))


def test_make_track_audio_properties() -> None:
    stems = make_track_audio(seed=3, seconds=1.0)
    assert set(stems) == set(SOURCES)
    for audio in stems.values():
        assert audio.shape == (RATE, 2) and audio.dtype == np.float32
        assert not np.allclose(audio[:, 0], audio[:, 1])  # panned, not dual-mono
    assert np.abs(sum(stems.values())).max() < 0.9
    # Deterministic per seed, different across seeds.
    again = make_track_audio(seed=3, seconds=1.0)
    other = make_track_audio(seed=4, seconds=1.0)
    assert all(np.array_equal(stems[k], again[k]) for k in SOURCES)
    assert not np.allclose(stems["vocals"], other["vocals"])
    # Vocals have real silences between syllables.
    assert (np.abs(stems["vocals"][:, 0]) < 1e-6).mean() > 0.1


def test_hq_root_reads_back(hq_root: Path) -> None:
    _assert_splits(hq_root, is_wav=True)
    track = musdb.DB(root=hq_root, is_wav=True, subsets="train", split="valid")[0]
    expected = make_track_audio(_SEEDS[track.name], TRACK_SECONDS)
    assert track.rate == RATE
    assert track.audio.shape == (N_SAMPLES, 2)
    # PCM_16 round trip: within one quantisation step or so.
    for source in SOURCES:
        np.testing.assert_allclose(track.targets[source].audio, expected[source], atol=1e-4)
    np.testing.assert_allclose(track.audio, sum(expected.values()), atol=1e-4)


def test_stem_root_reads_back(stem_root: Path) -> None:
    _assert_splits(stem_root, is_wav=False)
    track = musdb.DB(root=stem_root, subsets="train", split="valid")[0]
    expected = make_track_audio(_SEEDS[track.name], TRACK_SECONDS)
    assert track.rate == RATE
    # AAC decoding pads the tail to whole 1024-sample frames (same quirk as real MUSDB18).
    n_read = track.audio.shape[0]
    assert track.audio.shape[1] == 2
    assert N_SAMPLES <= n_read < N_SAMPLES + 2048
    vocals = track.targets["vocals"].audio
    assert vocals.shape == (n_read, 2)
    for ch in range(2):
        corr = np.corrcoef(vocals[:N_SAMPLES, ch], expected["vocals"][:, ch])[0, 1]
        assert corr > 0.9
    assert np.abs(vocals[N_SAMPLES:]).max() < 0.05


def test_real_root_lists_tracks(real_root: Path) -> None:
    # Listing only (no decoding) keeps this cheap; skipped where the clips are absent.
    valid = musdb.DB(root=real_root, subsets="train", split="valid")
    assert len(valid) > 0
    assert {t.name for t in valid} <= set(valid.setup["validation_tracks"])
