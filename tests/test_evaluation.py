"""evaluation.evaluate_track / median_over_tracks agree with museval used directly.

Ideal-ratio-mask estimates (good, but not perfect, separations) of a real MUSDB18 clip
and of a generated track go through evaluation.evaluate_track and through museval's
official aggregation (eval_mus_track -> EvalStore: median over frames, then over
tracks), and through museval.evaluate's frame SDRs with np.nanmedian."""

from __future__ import annotations

import json
import math

import musdb
import museval
import numpy as np
import pytest
import torch

import utils
from separation import evaluation
from utils import STEMS

REAL_TRACK = "Music Delta - 80s Rock"
GENERATED_TRACK = "Synth D - Four"
TOL_DB = 1e-3


def cached_track(track):
    """Decode the track's mixture and sources once and keep them on the musdb objects, so
    every evaluation path below reads the same references without decoding again."""
    track.audio = track.audio
    for source in track.sources.values():
        source.audio = source.audio
    return track


def irm_estimates(track) -> dict[str, np.ndarray]:
    """|S_v| / (|S_v| + |S_a|) masks on the mixture STFT, with the mixture phase."""
    def spec(audio):
        return utils.stft(torch.from_numpy(np.ascontiguousarray(audio.T, dtype=np.float32)))

    mixture = spec(track.audio)
    vocals, accompaniment = spec(track.targets["vocals"].audio).abs(), spec(track.targets["accompaniment"].audio).abs()
    mask = vocals / (vocals + accompaniment + 1e-8)
    length = track.audio.shape[0]
    return {"vocals": utils.istft(mixture * mask, length).numpy().T,
            "accompaniment": utils.istft(mixture * (1 - mask), length).numpy().T}


@pytest.fixture(scope="module")
def tracks(real_root, hq_root):
    real = next(t for t in musdb.DB(root=str(real_root), subsets="train") if t.name == REAL_TRACK)
    generated = next(t for t in musdb.DB(root=str(hq_root), is_wav=True, subsets="test") if t.name == GENERATED_TRACK)
    return {t.name: cached_track(t) for t in (real, generated)}


@pytest.fixture(scope="module")
def scored(tracks, tmp_path_factory):
    """For each track: (evaluate_track's result, museval's TrackStore, output dir)."""
    out = {}
    for name, track in tracks.items():
        estimates = irm_estimates(track)
        directory = tmp_path_factory.mktemp("eval")
        ours = evaluation.evaluate_track(track, estimates, directory)
        official = museval.eval_mus_track(track, estimates)
        out[name] = (ours, official, estimates, directory)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", [REAL_TRACK, GENERATED_TRACK])
def test_evaluate_track_matches_museval(name, tracks, scored):
    track = tracks[name]
    ours, official, estimates, directory = scored[name]
    assert set(ours) == set(STEMS)
    store = museval.EvalStore()
    store.add_track(official)
    frames_median = store.agg_frames_scores()
    # independently: the frame SDRs of museval.evaluate, median over frames ignoring NaN
    sdr = museval.evaluate([track.targets[s].audio for s in STEMS], [estimates[s] for s in STEMS],
                           win=44100, hop=44100)[0]
    assert sdr.shape[1] == math.ceil(track.audio.shape[0] / 44100) or sdr.shape[1] == track.audio.shape[0] // 44100
    for i, stem in enumerate(STEMS):
        assert math.isfinite(ours[stem])
        assert ours[stem] > 3.0  # an ideal mask separates well: the numbers are meaningful
        assert ours[stem] == pytest.approx(frames_median[(name, stem, "SDR")], abs=TOL_DB)
        assert ours[stem] == pytest.approx(float(np.nanmedian(sdr[i])), abs=TOL_DB)
    # the per-track JSON it writes is museval's
    written = json.loads((directory / track.subset / f"{name}.json").read_text())
    assert {t["name"] for t in written["targets"]} == set(STEMS)


@pytest.mark.slow
def test_median_over_tracks_is_museval_median_of_medians(scored):
    store = museval.EvalStore()
    for _, official, _, _ in scored.values():
        store.add_track(official)
    official = store.agg_frames_tracks_scores()
    ours = evaluation.median_over_tracks({name: s[0] for name, s in scored.items()})
    for stem in STEMS:
        assert ours[stem] == pytest.approx(official[(stem, "SDR")], abs=TOL_DB)


def test_median_over_tracks_values():
    per_track = {"a": {"vocals": 1.0, "accompaniment": 9.0}, "b": {"vocals": 5.0, "accompaniment": float("nan")},
                 "c": {"vocals": 2.0, "accompaniment": 3.0}, "d": {"vocals": 10.0, "accompaniment": 4.0}}
    result = evaluation.median_over_tracks(per_track)
    assert result["vocals"] == pytest.approx(3.5)  # median of 1, 2, 5, 10
    assert result["accompaniment"] == pytest.approx(4.0)  # NaN track skipped: median of 3, 4, 9
    assert all(math.isnan(v) for v in evaluation.median_over_tracks({}).values())
