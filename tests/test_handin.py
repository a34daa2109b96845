"""The hand-in as the TA receives it (docs/handin.md): the repository's committed files and
one checkpoint, run with the TA's command on MUSDB18-format data by a Python that has only
what `pip install -r requirements.txt` installs.

What the test proves: a clone of the committed HEAD (nothing uncommitted, no cache, no
data, no other checkpoint) with best.pt copied in runs the command docs/handin.md gives
the TA, prints the test-set table and writes summary.json and listening samples; and every
module that any of its processes imports is the standard library's, the repository's, or
from a distribution in the dependency closure of requirements.txt (its lines and what they
require, as installed here). The report's and the tests' extras (requirements-report.txt,
requirements-test.txt: matplotlib, pytest, norbert) are refused outright, so a code path that
reaches for one fails here as it would on the TA's machine. What it does not prove: that
pip resolves the same versions on the TA's machine, or the download itself (the test runs
offline, in the environment the tests run in)."""

from __future__ import annotations

import importlib.metadata as metadata
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import train
from pipeline_helpers import REPO_ROOT, TINY_TRAIN, script_env

# Installs the refusal and records each process's imported modules at exit: a sitecustomize
# on PYTHONPATH runs in the command's process and in every pool process it spawns.
GUARD = '''
import atexit, json, os, sys

REFUSED = set(os.environ["HANDIN_REFUSED"].split(","))


class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in REFUSED:
            raise ModuleNotFoundError(f"No module named {name!r} (not in requirements.txt)")
        return None


sys.meta_path.insert(0, Refuse())


@atexit.register
def record():
    modules = {}
    for name, module in list(sys.modules.items()):
        if "." not in name:
            modules[name] = getattr(module, "__file__", None)
    out = os.path.join(os.environ["HANDIN_RECORD"], f"{os.getpid()}.json")
    with open(out, "w") as f:
        json.dump(modules, f)
'''


def requirement_names(path: Path) -> set[str]:
    """The distributions a requirements file names (its -r includes followed)."""
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("-r"):
            names |= requirement_names(path.parent / line[2:].strip())
        elif line:
            names.add(normalise(Requirement(line).name))
    return names


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def dependency_closure(names: set[str]) -> set[str]:
    """`names` and everything they require (no extras), as installed here."""
    closure, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name in closure:
            continue
        closure.add(name)
        for line in metadata.requires(name) or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(normalise(requirement.name))
    return closure


def import_names(distributions: set[str]) -> set[str]:
    """The top-level modules those installed distributions provide."""
    return {module for module, dists in metadata.packages_distributions().items()
            if any(normalise(d) in distributions for d in dists)}


def installed_files(distributions: set[str]) -> set[Path]:
    """Every file those installed distributions put on disk (their RECORD)."""
    return {Path(metadata.distribution(name).locate_file(f)).resolve()
            for name in distributions for f in metadata.distribution(name).files or []}


def ta_command(handin: Path) -> str:
    """The one command docs/handin.md gives the TA: the `python inference.py` line of the
    first code block under its TA heading."""
    section = re.search(r"^## For the TA\b(.*?)(?=^## |\Z)", handin.read_text(), re.S | re.M)
    assert section, f"{handin} has no '## For the TA' section"
    block = re.search(r"```bash\n(.*?)```", section.group(1), re.S)
    lines = [line for line in block.group(1).splitlines() if line.startswith("python inference.py")]
    assert len(lines) == 1, lines
    return lines[0].split("#")[0].strip()


@pytest.mark.slow
def test_ta_runs_the_handin_with_requirements_txt_alone(tmp_path: Path, hq_cache: Path, stem_root: Path) -> None:
    if shutil.which("git") is None or not (REPO_ROOT / ".git").exists():
        pytest.skip("needs git and the repository's history")
    clone = tmp_path / "handin"
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(REPO_ROOT), str(clone)], check=True)
    train.main(["--cache", str(hq_cache), "--checkpoint-dir", str(tmp_path / "trained"), *TINY_TRAIN, "--epochs", "1"])
    (clone / "checkpoints").mkdir(exist_ok=True)
    shutil.copy(tmp_path / "trained" / "best.pt", clone / "checkpoints" / "best.pt")

    extras = (requirement_names(REPO_ROOT / "requirements-report.txt")
              | requirement_names(REPO_ROOT / "requirements-test.txt")) - requirement_names(REPO_ROOT / "requirements.txt")
    assert {"matplotlib", "pytest", "norbert"} <= extras
    refused = import_names(extras)
    guard, record = tmp_path / "guard", tmp_path / "imports"
    guard.mkdir()
    record.mkdir()
    (guard / "sitecustomize.py").write_text(GUARD)
    env = script_env({**os.environ, "PYTHONPATH": str(guard), "HANDIN_REFUSED": ",".join(sorted(refused)),
                      "HANDIN_RECORD": str(record)})

    # The guard is in force: an extra cannot be imported. What the interpreter imports at
    # start-up (site, .pth files) is not the command's doing: recorded apart, left out.
    control = subprocess.run([sys.executable, "-c", "import matplotlib"], env=env, capture_output=True, text=True)
    assert control.returncode != 0 and "not in requirements.txt" in control.stderr
    for path in record.iterdir():
        path.unlink()
    subprocess.run([sys.executable, "-c", "pass"], env=env, check=True)
    startup = set().union(*(json.loads(p.read_text()) for p in record.iterdir()))
    for path in record.iterdir():
        path.unlink()

    command = ta_command(clone / "docs" / "handin.md").replace("$MUSDB", str(stem_root))
    result = subprocess.run([sys.executable, *command.split()[1:]], cwd=clone, env=env, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"^median\s+\|", result.stdout, re.M), result.stdout
    tracks = sorted(p.name.removesuffix(".stem.mp4") for p in (stem_root / "test").glob("*.stem.mp4"))
    phases = re.findall(r"--phase ((?:\w+ ?)+)", command)[0].split()
    for phase in phases:
        summary = json.loads((clone / "results" / f"best-{phase}" / "summary.json").read_text())
        assert summary["subset"] == "test" and sorted(summary["tracks"]) == tracks
        assert len(list((clone / "samples" / f"best-{phase}").glob("*/vocals.wav"))) >= 1

    # A module is told by its file: the standard library's folder, the clone, or a file of a
    # distribution that requirements.txt installs. Modules without a file (built in, or made
    # at run time, as Cython's and multiprocessing's are) need nothing installed.
    allowed = installed_files(dependency_closure(requirement_names(REPO_ROOT / "requirements.txt")))
    stdlib = [Path(sysconfig.get_paths()[key]).resolve() for key in ("stdlib", "platstdlib")]
    recorded = [json.loads(p.read_text()) for p in record.iterdir()]
    assert len(recorded) >= 2, "the command and its pool processes should each have recorded their imports"
    outside = set()
    for modules in recorded:
        for name, file in modules.items():
            if file is None or name in startup:
                continue
            path = Path(file).resolve()
            if not (path in allowed or path.is_relative_to(clone.resolve())
                    or any(path.is_relative_to(folder) and "site-packages" not in path.parts for folder in stdlib)):
                outside.add(f"{name} ({file})")
    assert not outside, f"imported from outside requirements.txt: {sorted(outside)}"
    assert not refused & {name for modules in recorded for name in modules}
