"""report.py on a tiny run trained, scored and sampled here from generated tracks: the
PDF's pages in the homework template's order (cover with name, student ID and link, the
references), the Markdown tables, the listening page in a real browser, the CLI errors."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import shutil
import subprocess
import sys
from graphlib import TopologicalSorter
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from typing import Sequence
from urllib.parse import unquote

import matplotlib.image
import pytest

import inference
import preprocess
import report
import train
from conftest import SYNTH_TRACKS, VALID_TRACKS, write_hq_dataset
from pipeline_helpers import REPO_ROOT, TINY_TRAIN, repository_imports
from reporting import references as report_references
from reporting import text as report_text
from reporting.runs import load_runs, load_training
from separation.phase import PHASE_METHODS
from training.augment import AUGMENTATION_REGISTRY
from utils import STEMS, run_cli

CHROMIUM = shutil.which("chromium")
AUTHOR = {"--name": "Ada Lovelace", "--student-id": "r12345678", "--link": "https://example.org/ada/separation"}
# The homework template's headings, in its order; every page's title starts with one.
TEMPLATE = ("Vocals / accompaniment separation", "Novelty", "Methodology", "Results on the", "Findings",
            "Details of the approach", "Result analysis", "Discussion", "References")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
SCRIPTS = ("train", "inference", "preprocess", "report", "experiments", "vocoder")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, hq_root: Path, hq_cache: Path) -> SimpleNamespace:
    """Three epochs of a tiny model; epochs 1 and 3 scored on a test track with both phase
    methods. Scored in this process (--workers 0): worker processes would each import the
    libraries again."""
    root = tmp_path_factory.mktemp("tiny_run")
    run = SimpleNamespace(checkpoints=root / "checkpoints", results=root / "results", samples=root / "samples")
    train.main(["--cache", str(hq_cache), "--checkpoint-dir", str(run.checkpoints), "--epochs", "3",
                "--save-epochs", "1", "2", "3", *TINY_TRAIN])
    inference.main(["--root", str(hq_root), "--is-wav", "--subset", "test", "--tracks", SYNTH_TRACKS["test"][0][0],
                    "--checkpoint", str(run.checkpoints / "epoch_001.pt"), str(run.checkpoints / "epoch_003.pt"),
                    "--phase", "mixture", "griffinlim", "--gl-iters", "2", "--samples", "1", "--device", "cpu",
                    "--workers", "0", "--out", str(run.results), "--samples-dir", str(run.samples)])
    run.summaries = [json.loads(p.read_text()) for p in sorted(run.results.glob("*/summary.json"))]
    return run


def make_report(run: SimpleNamespace, out: Path, samples: Path | None = None, experiments: Path | None = None,
                author: Sequence[str] = ()) -> Path:
    report.main(["--checkpoint-dir", str(run.checkpoints), "--results-dir", str(run.results),
                 "--samples-dir", str(samples or run.samples), "--experiments-dir", str(experiments or out / "none"),
                 "--out", str(out), *author])
    return out


@pytest.fixture(scope="module")
def built(tiny_run: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_report(tiny_run, tmp_path_factory.mktemp("report"), author=[a for kv in AUTHOR.items() for a in kv])


def built_pdf(out: Path) -> Path:
    return out / f"{AUTHOR['--student-id']}_report.pdf"


def page_texts(pdf: Path) -> list[str]:
    """Each page's text, as pdftotext reads it (titles first: they are the topmost text)."""
    if not shutil.which("pdftotext"):
        pytest.skip("pdftotext (poppler-utils) is not installed")
    text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    return text.split("\f")[:-1]  # pdftotext ends every page with a form feed


def titled(texts: list[str], title: str) -> int:
    """How many pages' titles start with `title` (a flowing text page and its continuations)."""
    return sum(t.lstrip().startswith(title) for t in texts)


def expected_pages(run: SimpleNamespace, pdf: Path, with_samples: bool, experiment_rows: Sequence[int] = ()) -> int:
    """Counted from the inputs: cover, novelty, methodology, a results page per evaluation
    set, findings, the details of the approach, loss curves, per set a box-plot page and a
    BSSEval page (museval wrote its JSON), a spectrogram page if there are samples,
    experiment tables of up to 14 rows a page, discussion, references. The approach and
    references pages flow onto as many pages as their text needs: read from the PDF, at
    least one each."""
    sets = len({(s["subset"], s["split"], tuple(sorted(s["tracks"]))) for s in run.summaries})
    texts = page_texts(pdf)
    approach, references = titled(texts, "Details of the approach"), titled(texts, "References")
    assert approach >= 1 and references >= 1
    return (3 + sets + 1 + approach + 1 + 2 * sets + with_samples + sum(math.ceil(n / 14) for n in experiment_rows)
            + 1 + references)


def pdf_page_boxes(path: Path) -> list[tuple[float, ...]]:
    """The MediaBox of every page object; matplotlib writes page dictionaries uncompressed."""
    data = path.read_bytes()
    boxes = re.findall(rb"/Type\s*/Page\b.*?/MediaBox\s*\[([^\]]*)\]", data, re.S)
    count = re.search(rb"/Type\s*/Pages\b.*?/Count\s+(\d+)", data, re.S)
    assert count and int(count.group(1)) == len(boxes)
    return [tuple(float(v) for v in box.split()) for box in boxes]


def markdown_tables(text: str) -> dict[str, list[dict[str, str]]]:
    """## heading -> rows of the Markdown table under it, as {column: cell}."""
    tables = {}
    for section in re.split(r"^## ", text, flags=re.M)[1:]:
        heading, *lines = section.splitlines()
        rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines if line.startswith("|")]
        if rows:
            tables[heading] = [dict(zip(rows[0], r)) for r in rows[2:]]
    return tables


class Sources(HTMLParser):
    """Every src of <audio> and <img> in a page."""

    def __init__(self) -> None:
        super().__init__()
        self.audio, self.images = [], []

    def handle_starttag(self, tag, attrs):
        src = dict(attrs).get("src")
        if tag == "audio":
            self.audio.append(src)
        elif tag == "img":
            self.images.append(src)


def page_sources(path: Path) -> Sources:
    parser = Sources()
    parser.feed(path.read_text())
    return parser


# ------------------------------------------------------------------- the outputs

def test_pdf_pages_are_16_9_and_match_the_inputs(built: Path, tiny_run: SimpleNamespace) -> None:
    boxes = pdf_page_boxes(built_pdf(built))
    assert len(boxes) == expected_pages(tiny_run, built_pdf(built), with_samples=True)
    for x0, y0, x1, y1 in boxes:
        assert (x1 - x0) / (y1 - y0) == pytest.approx(16 / 9, rel=1e-3)


def test_markdown_holds_the_summaries_numbers(built: Path, tiny_run: SimpleNamespace) -> None:
    tables = markdown_tables((built / "results.md").read_text())
    results = [rows for heading, rows in tables.items() if heading.startswith("Results on the test set")]
    assert len(results) == 1 and len(tiny_run.summaries) == 4
    rows = {(row["Checkpoint"], row["Phase"]): row for row in results[0]}
    assert len(rows) == len(tiny_run.summaries)
    for summary in tiny_run.summaries:
        row = rows[(Path(summary["checkpoint"]).stem, report_text.phase_label(summary["phase"]))]
        assert row["Epoch"] == str(summary["epoch"])
        for stem in STEMS:
            expected = round(summary["median_sdr"][stem], 2)
            assert float(row[f"{stem.capitalize()} SDR"]) == pytest.approx(expected, abs=1e-9)


def test_listening_page_references_copied_files(built: Path, tiny_run: SimpleNamespace) -> None:
    sources = page_sources(built / "index.html")
    # --samples 1: one track per run; its mixture and two references once, two estimates per run.
    assert len(sources.audio) == 3 + 2 * len(tiny_run.summaries)
    assert len(sources.images) == len(sources.audio)
    for src in sources.audio + sources.images:
        assert not re.match(r"[a-z]+:|/", src), src  # relative: report/ works when moved
        assert (built / unquote(src)).is_file(), src
    assert {Path(unquote(s)).suffix for s in sources.audio} == {".wav"}


def test_without_samples_and_with_experiments(tiny_run: SimpleNamespace, tmp_path: Path) -> None:
    (tmp_path / "no_samples").mkdir()
    experiments = tmp_path / "experiments"
    experiments.mkdir()
    rows = [{"name": f"hidden {16 * k}", "vocals": k / 3, "accompaniment": k / 7, "params": {"hidden_size": 16 * k}}
            for k in range(1, 16)]
    (experiments / "hidden_size.json").write_text(json.dumps(rows))
    out = make_report(tiny_run, tmp_path / "report", tmp_path / "no_samples", experiments)
    assert len(pdf_page_boxes(out / "report.pdf")) == expected_pages(tiny_run, out / "report.pdf", with_samples=False,
                                                                     experiment_rows=[len(rows)])
    assert not (out / "index.html").exists()
    table = markdown_tables((out / "results.md").read_text())["Experiment: hidden size"]
    assert [(r["Experiment"], float(r["Vocals"])) for r in table] == [(r["name"], round(r["vocals"], 2)) for r in rows]


def test_pdf_pages_render_with_content(built: Path, tmp_path: Path) -> None:
    if not shutil.which("pdftoppm"):
        pytest.skip("pdftoppm (poppler-utils) is not installed")
    subprocess.run(["pdftoppm", "-r", "24", "-png", "-f", "1", "-l", "6", str(built_pdf(built)),
                    str(tmp_path / "page")], check=True)
    pages = sorted(tmp_path.glob("page-*.png"))
    assert len(pages) == 6
    for page in pages:
        pixels = matplotlib.image.imread(page)[..., :3].mean(axis=-1)
        assert pixels.shape[1] / pixels.shape[0] == pytest.approx(16 / 9, rel=0.02)
        assert (pixels < 0.9).mean() > 0.01, f"{page.name} is blank"
        assert pixels.std() > 0.05, f"{page.name} is flat"


def test_pages_follow_the_template(built: Path) -> None:
    """Every page's title is one of the template's headings, in the template's order, all
    of them present; the cover holds the name, ID and link; the discussion is marked as the
    student's to write."""
    texts = page_texts(built_pdf(built))
    order = [next(i for i, heading in enumerate(TEMPLATE) if text.lstrip().startswith(heading)) for text in texts]
    assert order == sorted(order) and set(order) == set(range(len(TEMPLATE))), [t.split("\n")[0] for t in texts]
    cover = texts[0]
    for value in AUTHOR.values():
        assert value in cover
    assert "3 epochs" in cover
    methodology = " ".join(next(t for t in texts if t.lstrip().startswith("Methodology")).split())
    assert "Griffin-Lim ran as librosa.griffinlim" in methodology  # --gl-backend auto on the CPU
    discussion = next(t for t in texts if t.lstrip().startswith("Discussion"))
    assert "TO BE WRITTEN BY THE STUDENT" in discussion


def test_references_cite_what_the_run_used(built: Path, tiny_run: SimpleNamespace) -> None:
    """The tiny run used the Open-Unmix model, MUSDB18, museval and Griffin-Lim: those are
    cited in full, with this repository's link; the Wiener filter and the band-split RNN,
    which it did not use, are not."""
    text = " ".join(" ".join(t.split()) for t in page_texts(built_pdf(built)) if t.lstrip().startswith("References"))
    for words in ["Journal of Open Source Software, vol. 4, no. 41, p. 1667, 2019",
                  "The MUSDB18 corpus for music separation", "doi:10.5281/zenodo.1117372",
                  "The 2018 Signal Separation Evaluation Campaign", "Signal estimation from modified short-time Fourier",
                  "A fast Griffin-Lim algorithm", AUTHOR["--link"]]:
        assert words in text, words
    assert "norbert" not in text and "Band-split" not in text
    training, runs = load_training(tiny_run.checkpoints), load_runs(tiny_run.results)
    wiener = [SimpleNamespace(phase="wiener")]
    bsrnn = SimpleNamespace(model_config={"model": "bsrnn"})
    keys = {w.key for w in report_references.cited(bsrnn, runs + wiener)}
    assert {"bsrnn", "norbert", "griffin-lim", "fast-griffin-lim"} <= keys
    assert not {"bsrnn", "norbert"} & {w.key for w in report_references.cited(training, runs)}


def test_griffinlim_on_the_best_of_the_required_epochs_counts(tiny_run: SimpleNamespace) -> None:
    """Task 2 may be scored on best.pt's epoch or on the best of epochs 25, 50 and 150 by
    validation SDR; on any other epoch it is still missing."""
    training, runs = load_training(tiny_run.checkpoints), load_runs(tiny_run.results)
    history = [{**h, "epoch": e, "valid_sdr_vocals": sdr} for h, e, sdr in zip(training.history, (25, 50, 150),
                                                                              (1.0, 3.0, 2.0))]
    training = dataclasses.replace(training, history=history, best_epoch=25)
    template = next(r for r in runs if r.subset == "test")

    def missing(gl_epoch: int) -> list[str]:
        scored = [dataclasses.replace(template, epoch=e, phase="mixture") for e in (25, 50, 150)]
        scored.append(dataclasses.replace(template, epoch=gl_epoch, phase="griffinlim"))
        return report_text.novelty(training, scored, []).get("Required results not found", [])

    assert report_text.best_epochs(training) == {25, 50}
    assert missing(25) == [] and missing(50) == []
    assert missing(150) == ["Griffin-Lim on the best epoch (25 or 50) on the test set."]


def test_bad_student_id_is_a_one_line_error(tiny_run: SimpleNamespace, tmp_path: Path, capsys) -> None:
    argv = ["--checkpoint-dir", str(tiny_run.checkpoints), "--results-dir", str(tiny_run.results),
            "--student-id", "../r1", "--out", str(tmp_path)]
    assert run_cli(report.main, argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --student-id") and err.count("\n") == 1
    assert not list(tmp_path.iterdir())


def test_flags_train_py_does_not_define_are_not_listed(tiny_run: SimpleNamespace) -> None:
    """A checkpoint's train_args may hold flags that training/settings.py's parser does not
    define (another version's): they are left out of the changed flags, and a value no
    registry lists (a loss) is shown as recorded, so such a checkpoint still reports."""
    training, runs = load_training(tiny_run.checkpoints), load_runs(tiny_run.results)
    changed = report_text.novelty(training, runs, [])["Training flags changed from the defaults"]
    foreign = {"mask_init": "statistics", "mask_activation": "sigmoid", "input_transform": "log",
               "stem_weights": [2.0, 1.0], "data": "magnitudes"}
    training = dataclasses.replace(training, train_args={**training.train_args, **foreign, "loss": "compressed"})
    assert sorted(report_text.novelty(training, runs, [])["Training flags changed from the defaults"]) == sorted(
        changed + ["--loss compressed (default mse)"])
    methodology = report_text.methodology(training, runs)
    assert "loss: compressed; best.pt" in " ".join(methodology["Training"])
    assert "from cached magnitudes" in methodology["Data and augmentation"][0]


def test_the_report_wing_is_siblings_that_import_no_script() -> None:
    """report.py composes the reporting/ modules: nothing they import, directly or through
    the library, is an entry point; the slides and the listening page share the figures,
    not each other; the wing's imports have no cycle."""
    wing = {f"reporting.{p.stem}" for p in (REPO_ROOT / "reporting").glob("*.py") if p.stem != "__init__"}
    graph, todo = {}, list(wing)
    while todo:
        module = todo.pop()
        if module not in graph:
            graph[module] = repository_imports(module)
            todo += graph[module]
    assert not set(graph) & set(SCRIPTS), sorted(set(graph) & set(SCRIPTS))
    assert {"reporting.figures", "reporting.metadata"} <= wing
    assert "reporting.figures" in graph["reporting.listening"] and "reporting.figures" in graph["reporting.slides"]
    assert "reporting.slides" not in graph["reporting.listening"]
    assert "reporting.listening" not in graph["reporting.slides"]
    list(TopologicalSorter({m: graph[m] & wing for m in wing}).static_order())  # CycleError on a cycle


@pytest.mark.slow
def test_a_run_with_default_flags_lists_none_as_changed(tmp_path: Path) -> None:
    """train.py with no recipe or model flag (only where its files go, the device and
    --epochs 1): the novelty page lists --epochs alone as changed, and never a flag that
    train.py resolves (--loss by the mask); the cover says 1 epoch."""
    root = write_hq_dataset(tmp_path / "hq", {"train": [(VALID_TRACKS[0], 1), (VALID_TRACKS[1], 2),
                                                        ("Synth A - One", 3)], "test": [("Synth D - Four", 6)]},
                            seconds=7.0)  # the default 6-s excerpts need tracks longer than 6 s
    preprocess.main(["--root", str(root), "--is-wav", "--cache", str(tmp_path / "cache")])
    checkpoints = tmp_path / "checkpoints"
    train.main(["--cache", str(tmp_path / "cache"), "--checkpoint-dir", str(checkpoints), "--workers", "0",
                "--device", "cpu", "--epochs", "1"])
    inference.main(["--root", str(root), "--is-wav", "--checkpoint", str(checkpoints / "best.pt"), "--device", "cpu",
                    "--samples", "0", "--workers", "0", "--out", str(tmp_path / "results")])
    training = load_training(checkpoints)
    assert training.train_args["loss"] == "mse"  # recorded resolved: the case that read as changed
    flags = report_text.novelty(training, load_runs(tmp_path / "results"), [])["Training flags changed from the defaults"]
    assert flags == ["--epochs 1 (default 150)"]
    report.main(["--checkpoint-dir", str(checkpoints), "--results-dir", str(tmp_path / "results"),
                 "--samples-dir", str(tmp_path / "results"), "--out", str(tmp_path / "report")])
    texts = page_texts(tmp_path / "report" / "report.pdf")
    novelty = " ".join(next(t for t in texts if t.lstrip().startswith("Novelty")).split())
    assert "--epochs 1 (default 150)" in novelty and "--loss" not in novelty
    assert "1 epoch," in texts[0] and "1 epochs" not in " ".join(texts)


def test_listening_page_plays_in_chromium(built: Path, tmp_path: Path) -> None:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed")
    url = (built / "index.html").resolve().as_uri()
    common = [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=20000"]
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True).stdout
    match = re.search(r'data-durations="([^"]*)"', dom)
    assert match, "the page never saw every <audio> element load"
    durations = json.loads(match.group(1).replace("&quot;", '"'))
    assert len(durations) == len(page_sources(built / "index.html").audio)
    assert all(d > 0 for d in durations), durations
    shot = tmp_path / "listening.png"
    subprocess.run([*common, f"--screenshot={shot}", "--window-size=1280,1600", url],
                   capture_output=True, timeout=120, check=True)
    pixels = matplotlib.image.imread(shot)[..., :3].mean(axis=-1)
    assert pixels.shape == (1600, 1280) and (pixels < 0.9).mean() > 0.05


def test_labels_come_from_the_registries() -> None:
    """Phase methods and augmentations are labelled where they are defined (phase.py,
    augment.py); the report and train.py's --augment help show those labels."""
    labels = [report_text.phase_label(name) for name in PHASE_METHODS]
    assert labels == [method.label for method in PHASE_METHODS.values()] and len(set(labels)) == len(labels)
    assert report_text.phase_label("retired-method") == "retired-method"  # a name the registry does not list
    augment = next(a for a in train.build_parser()._actions if "--augment" in a.option_strings)
    for name, augmentation in AUGMENTATION_REGISTRY.items():
        assert f"{name}: {augmentation.description}" in augment.help


# ----------------------------------------------------------------------- the CLI

def test_missing_inputs_are_one_line_errors(tiny_run: SimpleNamespace, tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    cases = [
        (["--checkpoint-dir", str(tmp_path / "nowhere")], "--checkpoint-dir"),
        (["--checkpoint-dir", str(tmp_path / "empty")], "no checkpoints"),
        (["--checkpoint-dir", str(tiny_run.checkpoints), "--results-dir", str(tmp_path / "empty")], "no results"),
        (["--checkpoint-dir", str(tiny_run.checkpoints), "--results-dir", str(tiny_run.results),
          "--samples-dir", str(tmp_path / "nowhere")], "--samples-dir"),
    ]
    for argv, words in cases:
        assert run_cli(report.main, [*argv, "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and words in err, err
    assert not (tmp_path / "out" / "report.pdf").exists()


def test_help_shows_defaults() -> None:
    out = subprocess.run([sys.executable, str(REPO_ROOT / "report.py"), "--help"], capture_output=True, text=True,
                         check=True).stdout
    assert "--student-id" in out and "--link" in out and "--name" in out
    for flag, default in [("--checkpoint-dir", "checkpoints"), ("--results-dir", "results"),
                          ("--samples-dir", "samples"), ("--out", "report")]:
        assert re.search(rf"{flag} \S+\s+.*?\(default: {default}\)", out, re.S), flag
