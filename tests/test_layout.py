"""The house rules of the source tree: the scripts at the root with the library in folders
beside them, no module importing an entry point, no import cycle, no source file over 500
lines, and imports sorted as .isort.cfg says."""

from __future__ import annotations

from graphlib import TopologicalSorter

import isort

from pipeline_helpers import REPO_ROOT, repository_imports

ENTRY_POINTS = {"preprocess", "train", "inference", "report", "experiments", "vocoder"}
LIBRARY_FOLDERS = ("formats", "training", "separation", "reporting", "bench")
MAX_ROOT_MODULES, MAX_LINES = 12, 500


def source_modules() -> dict[str, str]:
    """{dotted name: path relative to the root} of every Python module but the tests."""
    paths = [*REPO_ROOT.glob("*.py"), *(p for folder in LIBRARY_FOLDERS for p in (REPO_ROOT / folder).glob("*.py"))]
    return {".".join(p.relative_to(REPO_ROOT).with_suffix("").parts): str(p.relative_to(REPO_ROOT)) for p in paths}


def python_files() -> list[str]:
    """Every Python file of the project, tests included, relative to the root."""
    return [*source_modules().values(), *(str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / "tests").rglob("*.py"))]


def test_the_root_holds_the_scripts_and_the_core_modules() -> None:
    root = {p.stem for p in REPO_ROOT.glob("*.py")}
    assert ENTRY_POINTS <= root and {"model", "data", "utils"} <= root
    assert len(root) <= MAX_ROOT_MODULES, sorted(root)


def test_no_module_imports_an_entry_point_and_there_is_no_cycle() -> None:
    graph = {name: repository_imports(name) for name in source_modules()}
    importers = {name: sorted(graph[name] & ENTRY_POINTS) for name in graph if graph[name] & ENTRY_POINTS}
    assert not importers, importers
    list(TopologicalSorter(graph).static_order())  # CycleError on a cycle


def test_no_source_file_is_over_500_lines() -> None:
    long = {path: n for path in python_files() if (n := len((REPO_ROOT / path).read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_imports_are_sorted() -> None:
    config = isort.Config(settings_path=str(REPO_ROOT))
    unsorted = [path for path in python_files() if not isort.check_file(REPO_ROOT / path, config=config, show_diff=False)]
    assert not unsorted, f"run: isort {' '.join(unsorted)}"
