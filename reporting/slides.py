"""report.py's slides: the report PDF, 16:9 pages drawn with matplotlib in the order of the
homework's template (cover with the author's name, student ID and code link; novelty;
methodology; results; findings; details of the approach, the papers used; result analysis:
loss curves, per-track SDR, BSSEval metrics, spectrograms, experiment tables; discussion,
left to the student; references)."""

from __future__ import annotations

import math
import re
import textwrap
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Iterable

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.ticker import MaxNLocator

from formats.experiment_table import Experiment
from reporting.figures import draw_spectrogram, mel_db  # also selects matplotlib's file-only backend
from reporting.metadata import commit, repository_url
from reporting.references import cited, repository_reference
from reporting.runs import Run, Sample, Training, groups, phase_order
from reporting.text import (architecture, db, discussion_prompts, duration, evaluation_label, experiment_table,
                            findings, methodology, metrics_table, novelty, phase_label, plural, results_table)
from utils import STEMS, atomic_path, load_audio, machine_description

PAGE_SIZE = (40 / 3, 7.5)  # inches: 960 x 540 pt, 16:9
ACCENT = "#1f4e79"
EXPERIMENT_ROWS_PER_PAGE = 14
TEXT_TOP, TEXT_BOTTOM = 0.77, 0.07  # where text pages' columns start and must end


@dataclass(frozen=True)
class Author:
    """The cover's author lines (report.py --name, --student-id, --link); None: not given."""
    name: str | None = None
    student_id: str | None = None
    link: str | None = None  # the code's address; without it, the git remote's


# -------------------------------------------------------------------- pages

class Deck:
    """The PDF: every page one 16:9 figure with a title and a page number."""

    def __init__(self, pdf: PdfPages) -> None:
        self.pdf, self.pages = pdf, 0
        self.titles: set[str] = set()

    def page(self, title: str, subtitle: str = "") -> plt.Figure:
        self.titles.add(title)
        fig = plt.figure(figsize=PAGE_SIZE)
        fig.text(0.05, 0.9, title, fontsize=24, weight="bold", color=ACCENT)
        if subtitle:
            fig.text(0.05, 0.855, subtitle, fontsize=12, color="0.35")
        fig.add_artist(plt.Line2D([0.05, 0.95], [0.835, 0.835], color=ACCENT, linewidth=1.5))
        return fig

    def add(self, fig: plt.Figure) -> None:
        self.pages += 1
        fig.text(0.95, 0.03, str(self.pages), fontsize=10, color="0.5", ha="right")
        self.pdf.savefig(fig)
        plt.close(fig)


def line_step(size: float) -> float:
    """One text line of `size` points in figure coordinates."""
    return size * 1.45 / 72 / PAGE_SIZE[1]


def bullets_height(items: list[str], width: int, size: float, heading: str | None) -> float:
    """The height bullets() takes for the same arguments."""
    lines = sum(len(textwrap.wrap(item, width) or [""]) + 0.45 for item in items)
    return line_step(size) * (lines + 0.5 + 1.5 * bool(heading))


def bullets(fig: plt.Figure, x: float, y: float, items: Iterable[str], width: int, size: float = 13,
            heading: str | None = None, marker: str = "•") -> float:
    """Wrapped bullet list from (x, y) downwards in figure coordinates; returns the y below it."""
    step = line_step(size)
    if heading:
        fig.text(x, y, heading, fontsize=size + 2, weight="bold", color=ACCENT, va="top")
        y -= step * 1.5
    for item in items:
        lines = textwrap.wrap(item, width) or [""]
        fig.text(x, y, marker, fontsize=size, va="top", color=ACCENT)
        fig.text(x + 0.015 + 0.007 * (len(marker) - 1), y, "\n".join(lines), fontsize=size, va="top", linespacing=1.3)
        y -= step * (len(lines) + 0.45)
    return y - step * 0.5


def text_pages(deck: Deck, title: str, subtitle: str, blocks: list[tuple[str | None, list[str]]],
               size: float = 12, columns: int = 2, numbered: bool = False) -> None:
    """Headed bullet lists flowed item by item down `columns` columns, onto as many pages
    as they need (a heading stays with its first item); with `numbered` the items are
    numbered [1], [2], ... across the blocks."""
    width = (62 if columns == 2 else 150) - 3 * numbered
    xs = [0.05, 0.53][:columns]
    units = [(heading if k == 0 else None, item) for heading, items in blocks for k, item in enumerate(items)]
    fig, column, y = None, 0, TEXT_TOP
    for number, (heading, item) in enumerate(units, start=1):
        if fig is not None and y - bullets_height([item], width, size, heading) < TEXT_BOTTOM and y < TEXT_TOP:
            column, y = column + 1, TEXT_TOP
            if column == columns:
                deck.add(fig)
                fig, column = None, 0
        if fig is None:
            fig = deck.page(f"{title} (continued)" if title in deck.titles else title, subtitle)
        y = bullets(fig, xs[column], y, [item], width, size, heading=heading,
                    marker=f"[{number}]" if numbered else "•")
    if fig is not None:
        deck.add(fig)


def draw_table(fig: plt.Figure, top: float, header: list[str], rows: list[list[str]],
               bold: Iterable[tuple[int, int]] = (), size: float = 12, row_height: float = 0.045) -> float:
    """A table across the page from `top` down, columns as wide as their text; returns its bottom."""
    header = [h.replace(" (", "\n(") for h in header]  # two-line headers keep the columns narrow
    header_lines = max(h.count("\n") + 1 for h in header)
    height = min(0.72, row_height * (len(rows) + header_lines))
    chars = [max([len(line) for line in h.split("\n")] + [len(r[i]) for r in rows]) + 3 for i, h in enumerate(header)]
    ax = fig.add_axes([0.05, top - height, 0.9, height])
    ax.axis("off")
    # bbox: the table fills the axes; cell heights keep their ratios.
    table = ax.table(cellText=rows, colLabels=header, colWidths=[c / sum(chars) for c in chars],
                     cellLoc="center", bbox=[0, 0, 1, 1])
    table.auto_set_font_size(False)
    table.set_fontsize(min(size, 0.55 * height * PAGE_SIZE[1] * 72 / (len(rows) + header_lines)))  # fit many rows
    bold = set(bold)
    for (row, col), cell in table.get_celld().items():
        cell.set_edgecolor("0.8")
        if row == 0:
            cell.set_facecolor(ACCENT)
            cell.set_text_props(color="white", weight="bold")
            cell.set_height(cell.get_height() * header_lines)
        elif (row - 1, col) in bold:
            cell.set_text_props(weight="bold")
        if row > 0 and row % 2 == 0:
            cell.set_facecolor("#f2f5f9")
    return top - height


def column_maxima(rows: list[list[str]], columns: Iterable[int]) -> set[tuple[int, int]]:
    """(row, column) of the highest number (and its ties) in each of `columns`."""
    out = set()
    for col in columns:
        values = [float(r[col]) if r[col] != "–" else -math.inf for r in rows]
        out |= {(i, col) for i, v in enumerate(values) if v == max(values) > -math.inf}
    return out


def code_link(author: Author) -> str | None:
    """The code's address: --link, else the git remote's."""
    return author.link or repository_url()


def cover_page(deck: Deck, training: Training, runs: list[Run], author: Author) -> None:
    fig = plt.figure(figsize=PAGE_SIZE)
    fig.patches.append(plt.Rectangle((0, 0.62), 1, 0.38, transform=fig.transFigure, color=ACCENT))
    fig.text(0.06, 0.8, "Vocals / accompaniment separation", fontsize=34, weight="bold", color="white")
    fig.text(0.06, 0.7, f"{architecture(training.model_config)} separator, "
             f"{plural(training.history[-1]['epoch'], 'epoch')}, scored on the {evaluation_label(groups(runs)[0][0])}",
             fontsize=16, color="white")
    link = code_link(author)
    # A missing author line shows the flag that fills it, so it is not handed in empty.
    lines = [("Name", author.name, "report.py --name"), ("Student ID", author.student_id, "report.py --student-id"),
             ("Code", link, "report.py --link"), ("Date", date.today().isoformat(), None), ("Commit", commit(), None),
             ("Report built on", machine_description(), None), ("Model", f"{training.parameters:,} parameters", None),
             ("Training", f"{plural(len(training.history), 'epoch')}, "
                          f"{duration(sum(h['seconds'] for h in training.history))}", None)]
    y = 0.54
    for key, value, flag in lines:
        if value or flag:
            fig.text(0.06, y, key, fontsize=14, weight="bold", color=ACCENT)
            style = ({"color": "#1a5fb4", "url": value} if key == "Code" and value and re.match(r"https?://", value)
                     else {})
            fig.text(0.22, y, value or f"(not given: {flag})", fontsize=14, **(style if value else {"color": "0.5"}))
            y -= 0.058
    deck.add(fig)


def novelty_page(deck: Deck, training: Training, runs: list[Run], experiments: list[Experiment]) -> None:
    *left, (flags_heading, flags) = novelty(training, runs, experiments).items()
    fig = deck.page("Novelty", "What this run did beyond the required tasks")
    y = 0.77
    for heading, items in left:
        y = bullets(fig, 0.05, y, items, 62, heading=heading)
    bullets(fig, 0.53, 0.77, flags, 62, heading=flags_heading)
    deck.add(fig)


def methodology_page(deck: Deck, training: Training, runs: list[Run]) -> None:
    sections = list(methodology(training, runs).items())
    fig = deck.page("Methodology", f"Settings read from {training.source.name}")
    left, right = [sections[i] for i in (0, 1, 3)], [sections[i] for i in (2, 4)]
    for column, x in ((left, 0.05), (right, 0.53)):
        y = 0.77
        for heading, items in column:
            y = bullets(fig, x, y, items, 64, size=11.5, heading=heading)
    deck.add(fig)


def results_page(deck: Deck, runs: list[Run]) -> None:
    header, rows = results_table(runs)
    fig = deck.page(f"Results on the {evaluation_label(runs[0])}",
                    "Median over tracks of the per-track median SDR (dB, higher is better); the highest in bold")
    bottom = draw_table(fig, 0.79, header, rows, column_maxima(rows, (3, 4)), size=13)
    if bottom - 0.18 >= 0.15:
        sdr_bars(fig, runs, bottom - 0.08)
    deck.add(fig)


def sdr_bars(fig: plt.Figure, runs: list[Run], top: float) -> None:
    """Grouped bars: checkpoints along x, one bar per phase method, one panel per stem."""
    checkpoints = list(dict.fromkeys(r.checkpoint for r in runs))
    phases = sorted({r.phase for r in runs}, key=phase_order)
    by_key = {(r.checkpoint, r.phase): r for r in runs}
    width = 0.8 / len(phases)
    for i, stem in enumerate(STEMS):
        ax = fig.add_axes([0.07 + i * 0.47, 0.08, 0.41, top - 0.08])
        for k, phase in enumerate(phases):
            xs = [j for j, c in enumerate(checkpoints) if (c, phase) in by_key]
            values = [by_key[(checkpoints[j], phase)].median[stem] for j in xs]
            bars = ax.bar([x + (k - (len(phases) - 1) / 2) * width for x in xs], values, width,
                          label=phase_label(phase), color=plt.cm.tab10(k))
            ax.bar_label(bars, fmt="%.2f", fontsize=8, padding=2)
        ax.set_xticks(range(len(checkpoints)), checkpoints, fontsize=9)
        ax.axhline(0, color="0.3", linewidth=0.8)
        ax.set_ylabel(f"{stem} SDR (dB)")
        ax.margins(y=0.2)
        ax.grid(axis="y", alpha=0.3)
        if i == 0:
            ax.legend(fontsize=9)


def findings_page(deck: Deck, training: Training, runs: list[Run]) -> None:
    fig = deck.page("Findings", "Computed from the loss history and the results")
    bullets(fig, 0.05, 0.77, findings(training, runs), 115, size=13)
    deck.add(fig)


def approach_pages(deck: Deck, training: Training, runs: list[Run]) -> None:
    """Details of the approach: each paper the run used, what it does and why it works."""
    blocks = [(work.name, [f"{work.summary} Here: {work.used_here}."])
              for work in cited(training, runs) if work.summary]
    text_pages(deck, "Details of the approach", "The published methods this run used, and why they work; "
               "full references on the last page", blocks, size=11.5)


def discussion_page(deck: Deck, training: Training, runs: list[Run]) -> None:
    """The discussion is the student's: a marked page with questions, no generated text."""
    fig = deck.page("Discussion", "To be written by the student: this page is not generated from the runs")
    fig.patches.append(plt.Rectangle((0.05, 0.08), 0.9, 0.7, transform=fig.transFigure, fill=False,
                                     edgecolor="#c0392b", linestyle="--", linewidth=1.5))
    fig.text(0.5, 0.72, "TO BE WRITTEN BY THE STUDENT", fontsize=20, weight="bold", color="#c0392b", ha="center",
             va="top")
    bullets(fig, 0.08, 0.64, discussion_prompts(training, runs), 120, size=13,
            heading="Questions your discussion could answer")
    deck.add(fig)


def references_pages(deck: Deck, training: Training, runs: list[Run], author: Author) -> None:
    works = [work.reference + "." for work in cited(training, runs)]
    text_pages(deck, "References", "Every published work and software this run used",
               [(None, works + [repository_reference(code_link(author), commit())])], size=11.5, columns=1,
               numbered=True)


def loss_page(deck: Deck, training: Training) -> None:
    h = training.history
    epochs = [e["epoch"] for e in h]
    marker = "." if len(h) < 30 else None
    fig = deck.page("Result analysis: training and validation loss",
                    "Dashed: saved epoch checkpoints; star: best epoch (best.pt)")
    ax = fig.add_axes([0.07, 0.12, 0.6, 0.66])
    ax.plot(epochs, [e["train_loss"] for e in h], label="training", color=ACCENT, marker=marker)
    ax.plot(epochs, [e["valid_loss"] for e in h], label="validation", color="#c0392b", marker=marker)
    for epoch in training.saved_epochs:
        ax.axvline(epoch, color="0.5", linestyle="--", linewidth=1)
        ax.text(epoch, 1.01, f"epoch {epoch}", transform=ax.get_xaxis_transform(), ha="center", fontsize=9, color="0.4")
    best = next(e for e in h if e["epoch"] == training.best_epoch)
    ax.plot(best["epoch"], best["valid_loss"], marker="*", markersize=18, color="#f1c40f", markeredgecolor="k",
            linestyle="none", label=f"best: epoch {best['epoch']}")
    ax.set(xlabel="epoch", ylabel="MSE loss")
    ax.legend()
    lr, secs = fig.add_axes([0.74, 0.47, 0.22, 0.31]), fig.add_axes([0.74, 0.12, 0.22, 0.22])
    lr.step(epochs, [e["lr"] for e in h], where="post", color=ACCENT)
    lr.set(title="learning rate", yscale="log")
    secs.bar(epochs, [e["seconds"] for e in h], color="0.6")
    secs.set(title="seconds per epoch", xlabel="epoch")
    for axis in (ax, lr, secs):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
    deck.add(fig)


def boxplot_page(deck: Deck, runs: list[Run]) -> None:
    fig = deck.page(f"Result analysis: per-track SDR on the {evaluation_label(runs[0])}",
                    "One box per checkpoint and phase method; dots are tracks")
    labels = [f"{r.checkpoint}\n{phase_label(r.phase)}" for r in runs]
    rng = np.random.default_rng(0)  # fixed jitter: the same report for the same inputs
    for i, stem in enumerate(STEMS):
        ax = fig.add_axes([0.07 + i * 0.47, 0.2, 0.42, 0.58])
        values = [[v[stem] for v in r.tracks.values() if not math.isnan(v[stem])] for r in runs]
        ax.boxplot(values, showfliers=False, medianprops={"color": "#c0392b"})
        for k, vals in enumerate(values, start=1):
            ax.plot(k + rng.uniform(-0.12, 0.12, len(vals)), vals, ".", color=ACCENT, alpha=0.6)
        ax.set_xticks(range(1, len(runs) + 1), labels, fontsize=8 if len(runs) > 6 else 10,
                      rotation=30 if len(runs) > 4 else 0, ha="right" if len(runs) > 4 else "center")
        ax.set(title=stem, ylabel="SDR (dB)")
        ax.grid(axis="y", alpha=0.3)
    deck.add(fig)


def metrics_page(deck: Deck, runs: list[Run]) -> None:
    header, rows = metrics_table(runs)
    fig = deck.page(f"Result analysis: BSSEval metrics on the {evaluation_label(runs[0])}",
                    "Median over tracks of the per-track median (dB), from museval's per-track results")
    draw_table(fig, 0.79, header, rows, size=11)
    deck.add(fig)


def experiment_pages(deck: Deck, experiment: Experiment) -> None:
    header, rows = experiment_table(experiment)
    for start in range(0, len(rows), EXPERIMENT_ROWS_PER_PAGE):
        chunk = rows[start:start + EXPERIMENT_ROWS_PER_PAGE]
        fig = deck.page(f"Result analysis: experiment {experiment.title}", "Median SDR (dB)")
        draw_table(fig, 0.79, header, chunk, column_maxima(chunk, (1, 2)), size=11)
        deck.add(fig)


# ------------------------------------------------------------- spectrograms

def spectrogram_page(deck: Deck, samples: list[Sample], runs: dict[str, Run]) -> None:
    """Mixture, references and each phase method's estimates of one excerpt."""
    first = next((s for s in samples if s.run in runs and runs[s.run].checkpoint == "best"), samples[0])
    checkpoint = runs[first.run].checkpoint if first.run in runs else None
    same = [s for s in samples if s.track == first.track and
            (s.run == first.run or (checkpoint and s.run in runs and runs[s.run].checkpoint == checkpoint))]
    same.sort(key=lambda s: phase_order(runs[s.run].phase) if s.run in runs else (True, s.run))
    audio, rate = load_audio(first.folder / "mixture.wav")
    mix, ref = mel_db(audio, rate)
    fig = deck.page(f"Result analysis: spectrograms of {first.track}",
                    f"{len(audio) / rate:.0f} s listening excerpt; estimates of {checkpoint or first.run}")
    columns = 2 + len(same)
    width = 0.9 / columns
    ax = fig.add_axes([0.05, 0.08, width - 0.015, 0.7])
    draw_spectrogram(ax, mix, rate, "mixture")
    for row, stem in enumerate(STEMS):
        panels = [(f"reference {stem}", first.folder / f"reference_{stem}.wav")]
        panels += [(f"{stem}, {phase_label(runs[s.run].phase) if s.run in runs else s.run}"
                    f" ({db(runs[s.run].tracks.get(s.track, {}).get(stem, math.nan)) if s.run in runs else '–'} dB)",
                    s.folder / f"{stem}.wav") for s in same]
        for col, (title, path) in enumerate(panels, start=1):
            ax = fig.add_axes([0.05 + col * width, 0.47 - row * 0.39, width - 0.015, 0.31])
            draw_spectrogram(ax, mel_db(load_audio(path)[0], rate, ref)[0], rate, title)
            ax.tick_params(labelleft=col == 1)  # the estimates share the references' frequency axis
    deck.add(fig)


# -------------------------------------------------------------- the PDF

def write_pdf(path: Path, training: Training, runs: list[Run], samples: list[Sample],
              experiments: list[Experiment], author: Author = Author()) -> int:
    """Write the slides; returns the number of pages."""
    metadata = {"Title": "Source separation report", **({"Author": author.name} if author.name else {})}
    with atomic_path(path) as tmp, PdfPages(tmp, metadata=metadata) as pdf:
        deck = Deck(pdf)
        cover_page(deck, training, runs, author)
        novelty_page(deck, training, runs, experiments)
        methodology_page(deck, training, runs)
        for group in groups(runs):
            results_page(deck, group)
        findings_page(deck, training, runs)
        approach_pages(deck, training, runs)
        loss_page(deck, training)
        for group in groups(runs):
            boxplot_page(deck, group)
            if any(r.metrics for r in group):
                metrics_page(deck, group)
        if samples:
            spectrogram_page(deck, samples, {r.name: r for r in runs})
        for experiment in experiments:
            experiment_pages(deck, experiment)
        discussion_page(deck, training, runs)
        references_pages(deck, training, runs, author)
        return deck.pages
