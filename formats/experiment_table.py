"""An experiment table: one comparison of runs, as report.py draws it (a slide and a
Markdown table). experiments.py writes one per set to experiments/<set>.json; a table
written by hand goes to results/experiments.json. This module writes and reads the format,
a JSON list of rows kept simple enough to write by hand:

    [{"name": "bsrnn", "vocals": 4.1, "accompaniment": 9.9,      # median SDR (dB) ...
      "phase": "mixture",                                         # ... with this phase method (optional)
      "params": {"flags": "--model bsrnn", ...},                  # shown as key=value
      "by_phase": {"wiener": {"vocals": ..., "accompaniment": ...}}},   # optional
     ...]
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from utils import UserError, write_text


@dataclass
class Experiment:
    title: str  # from the file name: "augmentation", "hidden size"
    rows: list[dict]  # {name, vocals, accompaniment, params, phase (None where the table does not say)}


def write(path: str | Path, rows: list[dict]) -> None:
    """The rows ({name, vocals, accompaniment, params[, phase, by_phase]}) to path, atomically."""
    write_text(Path(path), json.dumps(rows, indent=1))


def read(path: str | Path) -> Experiment:
    """The table at path, titled after its file name, or a UserError naming the file."""
    path = Path(path)
    try:
        rows = json.loads(path.read_text())
        if not isinstance(rows, list) or not rows:
            raise ValueError("expected a non-empty list of rows")
        rows = [{"name": str(r["name"]), "vocals": float(r["vocals"]), "accompaniment": float(r["accompaniment"]),
                 "params": dict(r.get("params") or {}), "phase": r.get("phase")} for r in rows]
    except OSError as err:
        raise UserError(f"cannot read {path}: {err.strerror or err}") from err
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise UserError(f"{path}: not an experiment table, a list of "
                        f"{{name, vocals, accompaniment, params}} ({type(err).__name__}: {err})") from err
    return Experiment(path.stem.replace("_", " "), rows)
