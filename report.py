"""Turn finished runs into the material to hand in, all written under --out:

    <ID>_report.pdf   16:9 slides in the homework template's order: cover (--name,
                 --student-id, --link), novelty, methodology, results, findings, details of
                 the approach (the papers used and why they work), result analysis (loss
                 curves, per-track SDR, BSSEval metrics, spectrograms, optional experiments),
                 discussion (marked for you to write) and references. Named report.pdf
                 without --student-id. Pages whose inputs are missing are left out.
    results.md   the same tables in Markdown, ready to paste
    index.html   listening page: every excerpt with a player, its spectrogram and its SDR;
                 works opened from disk (audio/ holds copies of the excerpts)

    python report.py --name "Ada Lovelace" --student-id r12345678 --link https://github.com/ada/separation
    python report.py --checkpoint-dir checkpoints --results-dir results --out report

Inputs: the checkpoints of train.py, the results/<checkpoint>-<phase>/ folders of inference.py
(summary.json and museval's per-track JSON) and its listening excerpts in samples/.
Optional experiment tables: every <experiments-dir>/*.json and <results-dir>/experiments.json
holding a list of {"name": str, "vocals": dB, "accompaniment": dB, "params": {...}}
(params optional) gets a table page named after the file.

The wing, one job a module in reporting/, which this script composes: runs.py reads the
inputs, text.py words them (labels, tables, findings, discussion questions; results.md),
references.py holds the works cited and their summaries, figures.py draws the spectrograms,
metadata.py finds the commit and the code's address, slides.py lays out the PDF and
listening.py fills listening.html into index.html.
"""

from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path
from typing import Sequence

from reporting.listening import write_listening_page
from reporting.runs import load_experiments, load_runs, load_samples, load_training
from reporting.slides import Author, write_pdf
from reporting.text import write_markdown
from utils import HelpFormatter, UserError, add_debug_flag, run_cli


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--checkpoint-dir", default="checkpoints", help="train.py's checkpoints (loss history, settings)")
    p.add_argument("--results-dir", default="results", help="inference.py's --out: <checkpoint>-<phase>/summary.json")
    p.add_argument("--samples-dir", default="samples", help="inference.py's listening excerpts")
    p.add_argument("--experiments-dir", default="experiments", help="optional experiment tables (*.json)")
    p.add_argument("--out", default="report", help="output directory")
    g = p.add_argument_group("cover")
    g.add_argument("--name", default=None, help="your name, on the cover")
    g.add_argument("--student-id", default=None,
                   help="your student ID, on the cover; the PDF is then <out>/<ID>_report.pdf (else report.pdf)")
    g.add_argument("--link", default=None,
                   help="address of your code, on the cover and the references page (default: the git remote "
                        "'origin', if any)")
    add_debug_flag(p)
    return p


def pdf_name(student_id: str | None) -> str:
    """<ID>_report.pdf, as the homework asks; report.pdf without an ID."""
    if student_id is None:
        return "report.pdf"
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", student_id):
        raise UserError(f"--student-id {student_id!r} cannot name a file: use letters, digits, '.', '_' and '-'")
    return f"{student_id}_report.pdf"


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    pdf = pdf_name(args.student_id)
    training = load_training(Path(args.checkpoint_dir))
    runs = load_runs(Path(args.results_dir))
    samples = load_samples(Path(args.samples_dir))
    experiments = load_experiments(Path(args.experiments_dir), Path(args.results_dir))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pages = write_pdf(out / pdf, training, runs, samples, experiments, Author(args.name, args.student_id, args.link))
    write_markdown(out / "results.md", training, runs, experiments)
    if samples:
        write_listening_page(out, samples, {r.name: r for r in runs})
        listening = f", {out / 'index.html'} ({len(samples)} excerpt sets)"
    else:
        # An old page would show excerpts of another run.
        (out / "index.html").unlink(missing_ok=True)
        shutil.rmtree(out / "audio", ignore_errors=True)
        listening = f"; no listening samples in {args.samples_dir}, so no index.html"
    print(f"wrote {out / pdf} ({pages} pages), {out / 'results.md'}{listening}")


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
