"""summary.py owns summary.json: what it writes it reads back, it reads the unversioned
files of older inference.py, and it refuses newer and malformed files with a UserError."""

from __future__ import annotations

import json

import pytest

from formats import summary
from utils import UserError

SCORES = {"a": {"vocals": 1.5, "accompaniment": 7.25}, "b": {"vocals": float("nan"), "accompaniment": 6.0}}


def _summary(**changes) -> summary.Summary:
    fields = dict(checkpoint="checkpoints/epoch_025.pt", epoch=25, phase="griffinlim", subset="train", split="valid",
                  median_sdr={"vocals": 1.5, "accompaniment": 6.625}, tracks=SCORES,
                  phase_seconds={"a": 2.0, "b": 3.5})
    return summary.Summary(**{**fields, **changes})


def test_round_trip(tmp_path):
    written = _summary(phase="vocoder", vocoder="checkpoints/vocoder.pt")
    path = summary.write(tmp_path / written.run, written)
    assert path == tmp_path / "epoch_025-vocoder" / summary.FILE_NAME
    record = json.loads(path.read_text())
    assert record["version"] == summary.SUMMARY_VERSION and record["n_tracks"] == 2
    back = summary.read(path.parent)  # a run folder reads as its summary.json
    assert back.tracks["a"] == SCORES["a"] and back.tracks["b"]["vocals"] != back.tracks["b"]["vocals"]  # NaN kept
    assert (back.checkpoint, back.epoch, back.phase, back.split) == ("checkpoints/epoch_025.pt", 25, "vocoder", "valid")
    assert back.median_sdr == written.median_sdr and back.phase_seconds == written.phase_seconds
    assert back.vocoder == "checkpoints/vocoder.pt"
    assert "vocoder" not in json.loads(summary.write(tmp_path, _summary()).read_text())
    griffinlim = summary.read(summary.write(tmp_path / "gl", _summary(gl_backend="librosa")))
    assert griffinlim.gl_backend == "librosa" and back.gl_backend is None


def test_reads_unversioned_summaries_of_older_inference(tmp_path):
    path = summary.write(tmp_path, _summary())
    record = json.loads(path.read_text())
    del record["version"], record["phase_seconds"]  # the oldest files have neither
    path.write_text(json.dumps(record))
    old = summary.read(path)
    assert old.phase_seconds == {} and old.tracks["a"] == SCORES["a"]


@pytest.mark.parametrize("damage, message", [
    (lambda r: r.update(version=summary.SUMMARY_VERSION + 1), "newer than this code"),
    (lambda r: r.pop("tracks"), "is not a summary written by inference.py"),
    (lambda r: r["median_sdr"].pop("vocals"), "is not a summary written by inference.py"),
])
def test_refuses_newer_and_malformed_files(tmp_path, damage, message):
    path = summary.write(tmp_path, _summary())
    record = json.loads(path.read_text())
    damage(record)
    path.write_text(json.dumps(record))
    with pytest.raises(UserError, match=message):
        summary.read(path)


def test_unreadable_files_are_user_errors(tmp_path):
    (tmp_path / summary.FILE_NAME).write_text("{not json")
    with pytest.raises(UserError, match="is not a summary"):
        summary.read(tmp_path)
    with pytest.raises(UserError, match="cannot read"):
        summary.read(tmp_path / "missing" / summary.FILE_NAME)
