"""report.py's listening page: index.html (from the template listening.html) and
audio/<track>/, copies of every listening excerpt beside its spectrogram. It opens from
disk: every link is relative."""

from __future__ import annotations

import html
import math
import shutil
from datetime import date
from pathlib import Path
from string import Template
from urllib.parse import quote

from reporting.figures import mel_db, spectrogram_png
from reporting.runs import Run, Sample, checkpoint_order, phase_order
from reporting.text import db, phase_label
from utils import STEMS, load_audio, write_text

TEMPLATE = Path(__file__).resolve().with_name("listening.html")


def write_listening_page(out: Path, samples: list[Sample], runs: dict[str, Run]) -> None:
    """index.html plus audio/<track>/...: copies of the excerpts and their spectrograms."""
    audio_dir = out / "audio"
    shutil.rmtree(audio_dir, ignore_errors=True)  # holds only copies this function makes
    by_track: dict[str, list[Sample]] = {}
    for sample in samples:
        by_track.setdefault(sample.track, []).append(sample)
    sections = []
    for track, track_samples in sorted(by_track.items()):
        track_samples.sort(key=lambda s: sample_order(s, runs))
        first, folder = track_samples[0].folder, audio_dir / track
        ref = mel_db(*load_audio(first / "mixture.wav"))[1]
        # Mixture and references are the same for every run: one copy per track.
        cells = ['<div class="label">Mixture</div>', audio_card(first / "mixture.wav", folder, out, ref), "<div></div>",
                 '<div></div><div class="head">Vocals</div><div class="head">Accompaniment</div>',
                 '<div class="label">Reference</div>']
        cells += [audio_card(first / f"reference_{stem}.wav", folder, out, ref) for stem in STEMS]
        for sample in track_samples:
            run = runs.get(sample.run)
            label = (f"{html.escape(run.checkpoint)} (epoch {run.epoch})<br>{html.escape(phase_label(run.phase))}"
                     if run else html.escape(sample.run))
            cells.append(f'<div class="label">{label}</div>')
            cells += [audio_card(sample.folder / f"{stem}.wav", folder / sample.run, out, ref,
                                 run.tracks.get(track, {}).get(stem, math.nan) if run else math.nan)
                      for stem in STEMS]
        sections.append(f'<section><h2>{html.escape(track)}</h2><div class="grid">{"".join(cells)}</div></section>')
    page = Template(TEMPLATE.read_text()).substitute(date=date.today().isoformat(), sections="\n".join(sections))
    write_text(out / "index.html", page)


def sample_order(sample: Sample, runs: dict[str, Run]) -> tuple:
    run = runs.get(sample.run)
    return (checkpoint_order(run.checkpoint), phase_order(run.phase)) if run else ((9, 0, sample.run), (True, ""))


def audio_card(source: Path, folder: Path, out: Path, ref: float, sdr: float | None = None) -> str:
    """Copy one excerpt into the report, draw its spectrogram beside it, return its HTML."""
    target = folder / source.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    audio, rate = load_audio(target)
    spectrogram_png(target.with_suffix(".png"), audio, rate, ref)
    url, image = (quote(p.relative_to(out).as_posix()) for p in (target, target.with_suffix(".png")))
    score = f'<div class="sdr">SDR {db(sdr)} dB</div>' if sdr is not None else ""
    return (f'<figure>{score}<audio controls preload="metadata" src="{url}"></audio>'
            f'<img src="{image}" alt="spectrogram of {html.escape(source.stem)}" width="380" height="120"></figure>')
