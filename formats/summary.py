"""summary.json, the record of one run: a checkpoint's model with one phase method, scored
on a set of MUSDB18 tracks. inference.py writes one per run to <out>/<checkpoint>-<phase>/;
report.py and experiments.py read them. This module defines, writes, reads and
version-checks the format; museval's per-track JSON beside it is museval's own.

    {"version": 1, "checkpoint": "checkpoints/best.pt", "epoch": 150, "phase": "mixture",
     "subset": "test", "split": null, "n_tracks": 50,
     "median_sdr": {"vocals": ..., "accompaniment": ...},        # median over tracks
     "tracks": {track: {"vocals": ..., "accompaniment": ...}},   # median over 1-s frames
     "phase_seconds": {track: seconds the phase method took},
     "vocoder": "checkpoints/vocoder.pt",                         # --phase vocoder only
     "gl_backend": "librosa"}                                     # --phase griffinlim only: which ran
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from utils import STEMS, UserError, write_text

FILE_NAME = "summary.json"
# A file without a version key is read as version 1, whose fields it has (phase_seconds
# may be missing: read as empty).
SUMMARY_VERSION = 1


@dataclass
class Summary:
    checkpoint: str
    epoch: int | None
    phase: str
    subset: str
    split: str | None
    median_sdr: dict[str, float]  # {stem: median over tracks of the per-track medians}
    tracks: dict[str, dict[str, float]]  # {track: {stem: median SDR over 1-second frames}}
    phase_seconds: dict[str, float] = field(default_factory=dict)  # {track: seconds}
    vocoder: str | None = None  # the vocoder checkpoint of --phase vocoder
    gl_backend: str | None = None  # --phase griffinlim's backend, librosa or torch (None: not recorded)

    @property
    def run(self) -> str:
        """The run's name and folder: run_name(checkpoint, phase)."""
        return run_name(self.checkpoint, self.phase)


def run_name(checkpoint: str | Path, phase: str) -> str:
    """A run's name and folder: <checkpoint file stem>-<phase>."""
    return f"{Path(checkpoint).stem}-{phase}"


def write(folder: str | Path, summary: Summary) -> Path:
    """folder/summary.json, written atomically; returns its path."""
    record = {"version": SUMMARY_VERSION, "checkpoint": summary.checkpoint, "epoch": summary.epoch,
              "phase": summary.phase, "subset": summary.subset, "split": summary.split,
              "n_tracks": len(summary.tracks), "median_sdr": summary.median_sdr, "tracks": summary.tracks,
              "phase_seconds": summary.phase_seconds}
    if summary.vocoder is not None:
        record["vocoder"] = summary.vocoder
    if summary.gl_backend is not None:
        record["gl_backend"] = summary.gl_backend
    path = Path(folder) / FILE_NAME
    write_text(path, json.dumps(record, indent=1))
    return path


def read(path: str | Path) -> Summary:
    """A summary.json (or the run folder holding one), or a UserError that names the file
    and what is wrong with it."""
    path = Path(path)
    if path.is_dir():
        path = path / FILE_NAME
    try:
        record = json.loads(path.read_text())
        version = record.get("version", SUMMARY_VERSION)
        if version > SUMMARY_VERSION:
            raise UserError(f"{path} is summary format {version}, newer than this code's {SUMMARY_VERSION}: "
                            "update the repository")
        return Summary(
            checkpoint=str(record["checkpoint"]), epoch=record["epoch"], phase=str(record["phase"]),
            subset=str(record["subset"]), split=record["split"],
            median_sdr={stem: float(record["median_sdr"][stem]) for stem in STEMS},
            tracks={t: {stem: float(v[stem]) for stem in STEMS} for t, v in record["tracks"].items()},
            phase_seconds={t: float(s) for t, s in record.get("phase_seconds", {}).items()},
            vocoder=record.get("vocoder"), gl_backend=record.get("gl_backend"))
    except OSError as err:
        raise UserError(f"cannot read {path}: {err.strerror or err}") from err
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as err:
        raise UserError(f"{path} is not a summary written by inference.py ({type(err).__name__}: {err})") from err
