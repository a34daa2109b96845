"""automix: rhythm.py's beat analysis of click tracks at known tempi and tempo-compatible
partners; partner beats on the vocals track's grid, determinism, the rhythm file."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_data import item_audio, locate

from data import TrainChunks
from formats.cache import SOURCES, StemCache
from training import rhythm
from training.augment import parse_augmentations
from utils import SAMPLE_RATE

SECONDS = 8.0
SEQ = int(1.5 * SAMPLE_RATE)
TOLERANCE_MS = 40  # a tenth of a beat at 150 BPM
# name -> (tempo in BPM, time of the first click in s); None: silent
CLICK_TRACKS = {"a120": (120.0, 0.11), "b123": (123.0, 0.29), "c61": (61.0, 0.43), "d90": (90.0, 0.05),
                "e92": (92.0, 0.37), "f75": (75.0, 0.2), "silent": None}
# ratios 1.025 (a/b), 1.967 and 2.016 (a/c, b/c: half tempo), 1.022 (e/d); 75 BPM has no
# partner within 3% of 1, 2 or 1/2 (nearest: 75/61 = 1.23, 90/75 = 1.2)
COMPATIBLE = {"a120": {"b123", "c61"}, "b123": {"a120", "c61"}, "c61": {"a120", "b123"},
              "d90": {"e92"}, "e92": {"d90"}, "f75": set(), "silent": set()}


def true_beats(name: str) -> np.ndarray:
    """Click positions in samples, extended far beyond the track (a grid, for alignment)."""
    tempo, first = CLICK_TRACKS[name]
    period = 60 / tempo * SAMPLE_RATE
    return first * SAMPLE_RATE + period * np.arange(-40, 40)


def click_stems(name: str, length: int) -> np.ndarray:
    """(sources, channels, samples): every source clicks on the track's beats (its own pitch);
    a faint noise floor, different in every track and source, lets `locate` find excerpts."""
    stems = np.zeros((len(SOURCES), 2, length))
    if CLICK_TRACKS[name] is None:
        return stems.astype(np.float32)
    t = np.arange(int(0.03 * SAMPLE_RATE)) / SAMPLE_RATE
    noise = np.random.default_rng(sum(map(ord, name))).standard_normal(stems.shape)
    for k, pitch in enumerate((1500.0, 200.0, 400.0, 3000.0)):
        burst = np.sin(2 * np.pi * pitch * t) * np.exp(-t / 0.008)
        for beat in true_beats(name).round().astype(int):
            if 0 <= beat < length:
                piece = burst[: length - beat]
                stems[k, :, beat:beat + len(piece)] += piece
    return (stems + 1e-3 * noise).astype(np.float32)


def make_click_cache(directory, seconds: float = SECONDS, names=tuple(CLICK_TRACKS)) -> StemCache:
    cache = StemCache.create_or_open(directory)
    for name in names:
        cache.add_track(name, "train", click_stems(name, int(seconds * SAMPLE_RATE)))
    return StemCache(directory)


@pytest.fixture(scope="module")
def click_cache(tmp_path_factory) -> StemCache:
    return make_click_cache(tmp_path_factory.mktemp("click_cache"))


def origin(cache: StemCache, item: np.ndarray, source: int) -> tuple[str, int | None]:
    """Which track, at which start, the item's stem `source` was cut from ('silent', None for zeros)."""
    if not np.any(item[source]):
        return "silent", None
    hits = locate(cache, cache.names("train"), source, item[source])
    assert len(hits) == 1, hits
    return hits[0]


def grid_errors_ms(main: str, vocals_start: int, partner: str, partner_start: int) -> np.ndarray:
    """For each partner click inside the excerpt, its distance in ms to the vocals track's beat
    grid, halved when the partner is at double tempo."""
    step = 60 / CLICK_TRACKS[main][0] * SAMPLE_RATE
    if CLICK_TRACKS[partner][0] > 1.5 * CLICK_TRACKS[main][0]:
        step /= 2
    clicks = true_beats(partner) - partner_start
    clicks = clicks[(clicks >= 0) & (clicks < SEQ)] + vocals_start  # in the vocals track's time
    phase = (clicks - true_beats(main)[0]) % step
    return np.minimum(phase, step - phase) / SAMPLE_RATE * 1000


# ------------------------------------------------------------ analysis

def test_beat_analysis_of_click_tracks(click_cache):
    rhythms = rhythm.track_rhythms(click_cache, click_cache.names("train"))
    for name, truth in CLICK_TRACKS.items():
        if truth is None:
            assert rhythms[name]["tempo"] is None and rhythms[name]["beats"] == []
            continue
        assert rhythms[name]["tempo"] == pytest.approx(truth[0], rel=0.005), name
        beats = np.asarray(rhythms[name]["beats"])
        clicks = true_beats(name)
        clicks = clicks[(clicks >= 0) & (clicks < click_cache.length(name))]
        assert len(beats) >= len(clicks) - 2, name  # the tracker may trim a beat at either end
        errors = np.abs(beats[:, None] - clicks[None, :]).min(1) / SAMPLE_RATE * 1000
        assert errors.max() < 30, (name, errors)


@pytest.mark.parametrize("tempo, other, compatible", [
    (120, 123, True), (123, 120, True), (120, 124.5, False), (120, 90, False),
    (120, 61, True), (61, 120, True), (120, 240, True), (120, 250, False), (100, 100, True),
])
def test_tempo_compatible(tempo, other, compatible):
    assert rhythm.tempo_compatible(tempo, other) is compatible


# ------------------------------------------------------------ items

def test_automix_pairs_tempo_compatible_songs(click_cache):
    names = click_cache.names("train")
    per_track = 8
    ds = TrainChunks(click_cache, names, SEQ, per_track, augmentations=("automix",), seed=1)
    fallback_partners = set()
    for index in range(len(ds)):
        item = item_audio(ds, index)
        main = names[index // per_track]
        if main != "silent":
            assert origin(click_cache, item, 0)[0] == main
        accompaniment = {origin(click_cache, item, k) for k in range(1, len(SOURCES))}
        assert len(accompaniment) == 1, accompaniment  # one partner at one position without remix/chunk
        partner = accompaniment.pop()[0]
        assert partner != main
        if COMPATIBLE[main]:
            assert partner in COMPATIBLE[main], (main, partner)
        else:
            fallback_partners.add(partner)
    assert len(fallback_partners) >= 3  # no beat, or no compatible tempo: random partners


@pytest.mark.parametrize("augmentations", [("automix",), ("automix", "remix", "chunk")])
def test_automix_partner_beats_fall_on_the_vocals_grid(click_cache, augmentations):
    names = [n for n in click_cache.names("train") if COMPATIBLE[n]]
    ds = TrainChunks(click_cache, names, SEQ, 6, augmentations=augmentations, seed=2)
    checked, partners = 0, set()
    for index in range(len(ds)):
        item = item_audio(ds, index)
        main, vocals_start = origin(click_cache, item, 0)
        for k in range(1, len(SOURCES)):
            partner, start = origin(click_cache, item, k)
            errors = grid_errors_ms(main, vocals_start, partner, start)
            assert len(errors) and errors.max() < TOLERANCE_MS, (main, partner, errors)
            checked += 1
            partners.add((main, partner))
    assert checked == 3 * len(ds)
    assert {("a120", "b123"), ("a120", "c61"), ("c61", "a120"), ("d90", "e92")} <= partners


def test_plain_remix_is_not_beat_aligned(click_cache):
    names = [n for n in click_cache.names("train") if COMPATIBLE[n]]
    ds = TrainChunks(click_cache, names, SEQ, 6, augmentations=("remix",), seed=2)
    off_grid = cross_song = 0
    for index in range(len(ds)):
        item = item_audio(ds, index)
        main, vocals_start = origin(click_cache, item, 0)
        for k in range(1, len(SOURCES)):
            partner, start = origin(click_cache, item, k)
            if partner != main:
                cross_song += 1
                off_grid += grid_errors_ms(main, vocals_start, partner, start).max() >= TOLERANCE_MS
    assert cross_song > 20 and off_grid > cross_song / 2


def test_automix_items_are_deterministic(click_cache):
    names = click_cache.names("train")
    augmentations = ("automix", "gain", "swap", "chunk")
    a = TrainChunks(click_cache, names, SEQ, 3, augmentations, seed=5)
    b = TrainChunks(StemCache(click_cache.root), names, SEQ, 3, augmentations, seed=5)
    c = TrainChunks(click_cache, names, SEQ, 3, augmentations, seed=6)
    for index in (0, 4, 11, 100):
        np.testing.assert_array_equal(item_audio(a, index), item_audio(b, index))
        assert not np.array_equal(item_audio(a, index), item_audio(c, index))


# ------------------------------------------------------------ the rhythm file

def test_rhythm_file_is_reused_and_refreshed(tmp_path, monkeypatch):
    names = ("a120", "d90", "silent")
    cache = make_click_cache(tmp_path, seconds=4.0, names=names)
    path = tmp_path / rhythm.RHYTHM_FILE
    TrainChunks(cache, list(names), SEQ, 1, ("automix",))
    stored = json.loads(path.read_text())["tracks"]
    assert {n: stored[n]["length"] for n in names} == {n: cache.length(n) for n in names}

    analysed = []
    real_beat_grid = rhythm.beat_grid

    def counting_beat_grid(mono):
        analysed.append(len(mono))
        return real_beat_grid(mono)

    monkeypatch.setattr(rhythm, "beat_grid", counting_beat_grid)
    before = path.stat().st_mtime_ns
    again = TrainChunks(StemCache(tmp_path), list(names), SEQ, 1, ("automix",))
    assert analysed == [] and path.stat().st_mtime_ns == before
    np.testing.assert_array_equal(again.pool.beats["a120"], stored["a120"]["beats"])

    cache.add_track("d90", "train", click_stems("d90", 3 * SAMPLE_RATE))  # re-preprocessed
    TrainChunks(StemCache(tmp_path), list(names), SEQ, 1, ("automix",))
    assert analysed == [3 * rhythm.RHYTHM_RATE]
    assert json.loads(path.read_text())["tracks"]["d90"]["length"] == 3 * SAMPLE_RATE

    monkeypatch.setattr(rhythm, "RHYTHM_VERSION", rhythm.RHYTHM_VERSION + 1)  # other analysis settings
    TrainChunks(StemCache(tmp_path), list(names), SEQ, 1, ("automix",))
    assert len(analysed) == 1 + len(names)


def test_unwritable_cache_still_gives_rhythms(tmp_path, monkeypatch, capsys):
    cache = make_click_cache(tmp_path, seconds=4.0, names=("a120",))

    def refuse(path, text):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(rhythm, "write_text", refuse)
    rhythms = rhythm.track_rhythms(cache, ["a120"])
    assert rhythms["a120"]["tempo"] == pytest.approx(120, rel=0.005)
    assert not (tmp_path / rhythm.RHYTHM_FILE).exists()
    warning = capsys.readouterr().err.strip().splitlines()
    assert len(warning) == 1 and "Permission denied" in warning[0] and rhythm.RHYTHM_FILE in warning[0]


# ------------------------------------------------------------ flags

def test_automix_is_opt_in():
    assert "automix" not in parse_augmentations("all")
    assert parse_augmentations("gain,automix") == ("gain", "automix")
