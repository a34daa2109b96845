"""Separate MUSDB18 tracks with trained checkpoints and score them with museval
(BSSEval v4, 1-second frames; median over frames per track, then median over tracks).

    python inference.py --root /path/to/musdb18                       # test set, best.pt
    python inference.py --root /path/to/musdb18 --phase griffinlim
    python inference.py --root R --checkpoint checkpoints/epoch_025.pt checkpoints/epoch_050.pt checkpoints/epoch_150.pt
    python inference.py --root R --subset train --split valid         # the 14 validation tracks
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from data import open_musdb, select_tracks
from model import STEMS
from phase import PHASE_METHODS
from utils import (SAMPLE_RATE, HelpFormatter, UserError, add_debug_flag, load_separator, resolve_device, run_cli,
                   save_audio, stft, write_text)

SAMPLE_SECONDS = 30.0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--root", default=None, help="MUSDB18 root (default: $MUSDB_PATH, else the 7-second previews)")
    g.add_argument("--is-wav", action="store_true", help="the root is MUSDB18-HQ (WAV folders)")
    g.add_argument("--subset", default="test", choices=("train", "test"))
    g.add_argument("--split", default=None, choices=("train", "valid"),
                   help="with --subset train: musdb's training or validation split")
    g.add_argument("--tracks", nargs="+", default=None, help="only these tracks")
    g = p.add_argument_group("separation")
    g.add_argument("--checkpoint", nargs="+", default=["checkpoints/best.pt"],
                   help="one or more checkpoints; each gets its own row of results")
    g.add_argument("--phase", nargs="+", default=["mixture"], choices=sorted(PHASE_METHODS),
                   help="mixture: copy the mixture phase; griffinlim: librosa.griffinlim on each estimate")
    g.add_argument("--gl-iters", type=int, default=32, help="Griffin-Lim iterations")
    g.add_argument("--seed", type=int, default=0, help="seed of Griffin-Lim's random initial phase")
    g.add_argument("--device", default="auto", help="auto, cpu or cuda")
    g = p.add_argument_group("output")
    g.add_argument("--out", default="results", help="results go to <out>/<checkpoint name>-<phase>/")
    g.add_argument("--save-estimates", action="store_true",
                   help="also write full-length estimates to <out>/<checkpoint>-<phase>/estimates/<track>/")
    g.add_argument("--samples", type=int, default=3, help="tracks to write listening excerpts for")
    g.add_argument("--samples-dir", default="samples", help="excerpts go to <samples-dir>/<checkpoint>-<phase>/<track>/")
    add_debug_flag(p)
    return p


# ------------------------------------------------------------------ separation

@torch.no_grad()
def separate_magnitudes(model: torch.nn.Module, mixture_spec: torch.Tensor,
                        chunk_frames: int = 2048, context_frames: int = 128) -> torch.Tensor:
    """mixture_spec (channels, bins, frames) complex -> magnitudes (stems, channels, bins, frames).

    Long tracks go through the model in chunks with `context_frames` of overlap on each
    side that are computed and dropped, so the LSTM sees context at chunk edges while
    memory stays bounded."""
    mixture_mag = mixture_spec.abs()
    frames = mixture_mag.shape[-1]
    out = []
    for start in range(0, frames, chunk_frames):
        lo, hi = max(0, start - context_frames), min(frames, start + chunk_frames + context_frames)
        estimate = model(mixture_mag[None, ..., lo:hi])[0].float()
        out.append(estimate[..., start - lo: start - lo + min(chunk_frames, frames - start)])
    return torch.cat(out, dim=-1)


def separate(model: torch.nn.Module, mixture: np.ndarray, phases: Sequence[str], device: torch.device,
             **phase_options) -> dict[str, dict[str, np.ndarray]]:
    """mixture (samples, channels) -> {phase: {stem: (samples, channels)}}; the model runs once."""
    audio = torch.from_numpy(np.ascontiguousarray(mixture.T, dtype=np.float32)).to(device)
    mixture_spec = stft(audio)
    estimate_mag = separate_magnitudes(model, mixture_spec)
    out = {}
    for phase in phases:
        signals = PHASE_METHODS[phase](estimate_mag, mixture_spec, audio.shape[-1], **phase_options)
        out[phase] = {stem: signals[i].T for i, stem in enumerate(STEMS)}
    return out


# ------------------------------------------------------------------ evaluation

def evaluate_track(track, estimates: dict[str, np.ndarray], output_dir: str | Path | None = None) -> dict[str, float]:
    """museval BSSEval v4 on 1-second frames; returns each stem's median SDR over frames
    (NaN frames, i.e. silent references, skipped as museval's own aggregation does).
    Writes museval's per-track JSON under output_dir when given."""
    import museval

    scores = museval.eval_mus_track(track, estimates, output_dir=str(output_dir) if output_dir else None)
    frame_scores = scores.df
    sdr = frame_scores[frame_scores["metric"] == "SDR"].groupby("target")["score"].median()
    return {stem: float(sdr[stem]) for stem in STEMS}


def median_over_tracks(per_track: dict[str, dict[str, float]]) -> dict[str, float]:
    """Median over tracks of the per-track medians (tracks with no valid frame skipped)."""
    return {stem: float(np.nanmedian([t[stem] for t in per_track.values()])) if per_track else float("nan")
            for stem in STEMS}


def excerpt_bounds(length: int, seconds: float = SAMPLE_SECONDS) -> tuple[int, int]:
    """A `seconds` window from the middle of the track (the whole track if shorter)."""
    size = min(length, int(seconds * SAMPLE_RATE))
    start = (length - size) // 2
    return start, start + size


def write_sample(directory: Path, track, estimates: dict[str, np.ndarray]) -> None:
    """Listening excerpt: mixture, both estimates and both references."""
    lo, hi = excerpt_bounds(track.audio.shape[0])
    save_audio(directory / "mixture.wav", track.audio[lo:hi])
    for stem in STEMS:
        save_audio(directory / f"{stem}.wav", estimates[stem][lo:hi])
        save_audio(directory / f"reference_{stem}.wav", track.targets[stem].audio[lo:hi])


def format_table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    """results {run name: {track: {stem: sdr}}} -> a plain-text table with a median row."""
    runs = list(results)
    tracks = sorted({t for r in results.values() for t in r})
    width = max([len("median") + 2] + [len(t) for t in tracks])
    head = f"{'track':<{width}}" + "".join(f" | {run[:27]:^27}" for run in runs)
    sub = " " * width + "".join(f" | {'vocals':>13} {'accomp.':>13}" for _ in runs)
    lines = [head, sub, "-" * len(sub)]
    for track in tracks:
        row = f"{track:<{width}}"
        for run in runs:
            s = results[run].get(track, {})
            row += " | " + " ".join(f"{s.get(stem, float('nan')):13.2f}" for stem in STEMS)
        lines.append(row)
    lines.append("-" * len(sub))
    row = f"{'median':<{width}}"
    for run in runs:
        median = median_over_tracks(results[run])
        row += " | " + " ".join(f"{median[stem]:13.2f}" for stem in STEMS)
    lines.append(row)
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.split and args.subset != "train":
        raise UserError("--split needs --subset train")
    device = resolve_device(args.device)
    models = {}
    for path in args.checkpoint:
        model, state = load_separator(path, device)
        models[Path(path).stem] = (path, model, state)
    if len(models) != len(args.checkpoint):
        raise UserError("checkpoints must have distinct file names (results are named after them)")
    tracks = select_tracks(open_musdb(args.root, args.is_wav, args.subset, args.split).tracks, args.tracks)
    tracks = sorted(tracks, key=lambda t: t.name)

    results: dict[str, dict[str, dict[str, float]]] = {}
    for index, track in enumerate(tqdm(tracks, desc="tracks")):
        mixture = track.audio
        for name, (path, model, state) in models.items():
            separated = separate(model, mixture, args.phase, device, gl_iters=args.gl_iters, seed=args.seed)
            for phase, estimates in separated.items():
                run = f"{name}-{phase}"
                out_dir = Path(args.out) / run
                results.setdefault(run, {})[track.name] = evaluate_track(track, estimates, out_dir)
                if args.save_estimates:
                    for stem, audio in estimates.items():
                        save_audio(out_dir / "estimates" / track.name / f"{stem}.wav", audio)
                if index < args.samples:
                    write_sample(Path(args.samples_dir) / run / track.name, track, estimates)

    for name, (path, model, state) in models.items():
        for phase in args.phase:
            run = f"{name}-{phase}"
            summary = {
                "checkpoint": str(path), "epoch": state.get("epoch"), "phase": phase,
                "subset": args.subset, "split": args.split, "n_tracks": len(results[run]),
                "median_sdr": median_over_tracks(results[run]), "tracks": results[run],
            }
            write_text(Path(args.out) / run / "summary.json", json.dumps(summary, indent=1))
    print(format_table(results))
    print(f"results in {Path(args.out)}/<checkpoint>-<phase>/summary.json")


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
