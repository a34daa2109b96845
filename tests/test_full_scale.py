"""bench/full_scale.py at a tiny size on the shared 7-second clips: the built root has the
requested tracks and lengths, and full_scale.json every figure, finite and positive."""

from __future__ import annotations

import json
import math

import pytest
import soundfile as sf

from bench import full_scale, full_size_data
from pipeline_helpers import assert_one_error_line, run_script

TRACKS, MINUTES = 3, 0.2
# The smallest measurements that still run every phase: tiny model, batches and excerpts.
TINY = ["--workers", "0", "2", "--contexts", "fork", "--batches", "2", "--steps", "1", "--batch-size", "2",
        "--seq-dur", "1", "--hidden-size", "16", "--device", "cpu"]
FIGURES = ("cache_bytes", "preprocess_s", "loader_excerpts_per_s", "valid_s_per_epoch", "step_s",
           "separate_s_per_audio_minute", "museval_s_per_audio_minute", "projected_epoch_s", "projected_150_epochs_h",
           "projected_test_eval_h")


@pytest.mark.slow
def test_tiny_full_scale_run(real_root, tmp_path):
    out = tmp_path / "fs"
    result = run_script("-m", "bench.full_scale", "--clips", real_root / "train", "--out", out,
                        "--tracks", TRACKS, "--minutes", MINUTES, *TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads((out / "full_scale.json").read_text())
    for key in FIGURES:
        assert math.isfinite(figures[key]) and figures[key] > 0, (key, figures[key])
    assert [(r["path"], r["workers"], r["context"]) for r in figures["loader"]] == [
        ("float32", 0, "-"), ("int16", 0, "-"), ("float32", 2, "fork"), ("int16", 2, "fork")]
    assert figures["machine"]["description"] and figures["config"]["tracks"] == TRACKS
    phase_s = figures["phase_s_per_audio_minute"]
    assert list(phase_s) == ["mixture", "griffinlim"] and all(math.isfinite(s) and s > 0 for s in phase_s.values())
    # on the CPU everything runs in the pool processes (whole tracks), so all is timed on one thread
    assert figures["phase_pooled"] == [] and figures["separation_threads"] == 1
    projection = figures["test_eval_projection"]
    assert projection["cores"] == 16 and projection["phases"] == ["mixture", "griffinlim"]
    assert projection["whole_tracks"]
    track_s = figures["separate_s_per_audio_minute"] + phase_s["griffinlim"] + 2 * figures["museval_s_per_audio_minute"]
    assert math.isclose(projection["process_s_per_audio_minute"], track_s)
    evenly = projection["audio_minutes"] * track_s / 16 / 3600
    assert math.isclose(projection["evenly_spread_h"], evenly)
    # whole tracks do not spread evenly: the last one ends later, by less than the longest track takes
    assert evenly <= figures["projected_test_eval_h"] < evenly + 5 * track_s / 3600

    length = round(MINUTES * 60 * 44100)
    folders = {subset: sorted(p for p in (out / subset).iterdir() if p.is_dir()) for subset in ("train", "test")}
    assert len(folders["train"]) == 2 * TRACKS and len(folders["test"]) == TRACKS  # train holds train + valid
    for folder in folders["train"] + folders["test"]:
        wavs = sorted(p.name for p in folder.iterdir())
        assert wavs == ["bass.wav", "drums.wav", "mixture.wav", "other.wav", "vocals.wav"], folder
        assert {sf.info(str(folder / w)).frames for w in wavs} == {length}, folder
    assert sum(f.name == "ANiMAL - Rockshow" for f in folders["train"]) == 1  # a valid name musdb knows

    # A rerun reuses the build and the cache, and keeps the skipped phases' figures.
    again = run_script("-m", "bench.full_scale", "--clips", real_root / "train", "--out", out, "--tracks", TRACKS,
                       "--minutes", MINUTES, *TINY, "--skip", "loader", "step", "validation", "separation")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 written" in again.stdout and "cache complete" in again.stdout
    rerun = json.loads((out / "full_scale.json").read_text())
    assert all(rerun[key] == figures[key] for key in FIGURES if key != "cache_bytes")
    assert rerun["phase_s_per_audio_minute"] == figures["phase_s_per_audio_minute"]


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_test_set_projection(device):
    """The test set's evaluation on 16 cores from per-process figures: on a CPU 16 pool
    processes separate whole tracks, each track going to the first free one; on a GPU the
    model runs in the main process beside a pool of Griffin-Lim and museval (their sum)."""
    figures = {"machine": {"device": device}, "separate_s_per_audio_minute": 3.0, "museval_s_per_audio_minute": 15.0,
               "phase_s_per_audio_minute": {"mixture": 1.0, "griffinlim": 35.0}, "phase_pooled": ["griffinlim"]}
    got = full_scale.project_test_evaluation(figures, 16)
    projection = got["test_eval_projection"]
    lengths = [n / 44100 / 60 for n in full_size_data.track_lengths("test", 50, None)]
    assert len(lengths) == 50 and all(3 <= m <= 5 for m in lengths)
    assert math.isclose(projection["audio_minutes"], sum(lengths))
    if device == "cpu":
        track_s = 3.0 + 35.0 + 2 * 15.0
        finish = [0.0] * 16
        for minutes in lengths:  # each track to the process that is free first
            finish[finish.index(min(finish))] += minutes * track_s
        assert math.isclose(got["projected_test_eval_h"], max(finish) / 3600)
        assert math.isclose(projection["evenly_spread_h"], sum(lengths) * track_s / 16 / 3600)
    else:
        main, pool = 3.0, (35.0 + 2 * 15.0) / 16
        assert math.isclose(projection["main_h"], sum(lengths) * main / 3600)
        assert math.isclose(projection["pool_h"], sum(lengths) * pool / 3600)
        assert math.isclose(got["projected_test_eval_h"], projection["main_h"] + projection["pool_h"])


@pytest.mark.slow  # opens musdb on the 94 clips before it can refuse
def test_other_build_refused(real_root, tmp_path):
    """Folders the plan does not hold (a larger earlier build) would leak into training: one error line."""
    (tmp_path / "train" / "Someone Else - Song").mkdir(parents=True)
    result = run_script("-m", "bench.full_scale", "--clips", real_root / "train", "--out", tmp_path,
                        "--tracks", 1, "--minutes", 0.1, *TINY)
    assert_one_error_line(result, mentions="does not plan")
