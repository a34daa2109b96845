"""The pipeline on real MUSDB18 data: the shared 7-second clips (read in place from
real_root, never copied into the repository; skipped where they are absent)."""

from __future__ import annotations

import json
import math

import musdb
import numpy as np
import pytest

import inference
import preprocess
import train
from formats import checkpoint
from formats.cache import SOURCES, StemCache
from pipeline_helpers import TINY_TRAIN
from utils import STEMS

TRAIN_CLIPS = ["A Classic Education - NightOwl", "ANiMAL - Clinic A"]
VALID_CLIP = "ANiMAL - Rockshow"


@pytest.fixture(scope="module")
def real_cache(real_root, tmp_path_factory):
    cache_dir = tmp_path_factory.mktemp("real_cache")
    preprocess.main(["--root", str(real_root), "--cache", str(cache_dir), "--tracks", *TRAIN_CLIPS, VALID_CLIP])
    return cache_dir


@pytest.mark.slow  # musdb probes all 94 clips of the root
def test_real_clips_cache_equals_musdb(real_cache, real_root, tmp_path):
    index = json.loads((real_cache / "index.json").read_text())
    assert {n: t["split"] for n, t in index["tracks"].items()} == {
        TRAIN_CLIPS[0]: "train", TRAIN_CLIPS[1]: "train", VALID_CLIP: "valid"}
    cache = StemCache(real_cache)
    # musdb probes every file of a root it opens; a root of symlinks to just these three
    # clips (links in a temp dir, not copies) lets musdb decode the very same files faster.
    (tmp_path / "train").mkdir()
    for name in index["tracks"]:
        (tmp_path / "train" / f"{name}.stem.mp4").symlink_to(real_root / "train" / f"{name}.stem.mp4")
    tracks = {t.name: t for t in musdb.DB(root=str(tmp_path), subsets="train")}
    assert len(tracks) == 3
    for name, track in tracks.items():
        stems = cache.stems(name)
        assert stems.dtype == np.float32
        step = index["tracks"][name]["scale"]  # int16 codes: decoded AAC comes back within half a step
        for k, source in enumerate(SOURCES):  # each stream decoded by musdb on its own
            expected = np.asarray(track.sources[source].audio, dtype=np.float32).T
            assert stems[k].shape == expected.shape and expected.shape[1] > 6 * 44100
            np.testing.assert_allclose(np.asarray(stems[k]), expected, rtol=0, atol=step / 2 + 2 ** -23,
                                       err_msg=f"{name} {source}")
        assert index["tracks"][name]["length"] == stems.shape[-1]


@pytest.mark.slow
def test_real_data_smoke(real_cache, real_root, tmp_path):
    """preprocess -> one tiny epoch -> inference on the validation clip: finite SDRs."""
    ckpt = tmp_path / "ck"
    train.main(["--cache", str(real_cache), "--checkpoint-dir", str(ckpt), *TINY_TRAIN, "--epochs", "1"])
    history = checkpoint.load(ckpt / "last.pt")["history"]
    assert len(history) == 1 and math.isfinite(history[0]["train_loss"]) and math.isfinite(history[0]["valid_loss"])
    inference.main(["--root", str(real_root), "--subset", "train", "--split", "valid", "--tracks", VALID_CLIP,
                    "--checkpoint", str(ckpt / "best.pt"), "--phase", "mixture", "--samples", "0",
                    "--out", str(tmp_path / "out"), "--samples-dir", str(tmp_path / "samples"), "--device", "cpu"])
    summary = json.loads((tmp_path / "out" / "best-mixture" / "summary.json").read_text())
    assert list(summary["tracks"]) == [VALID_CLIP]
    for stem in STEMS:
        assert math.isfinite(summary["tracks"][VALID_CLIP][stem])
        assert math.isfinite(summary["median_sdr"][stem])
