"""Separate MUSDB18 tracks with trained checkpoints and score them with museval
(BSSEval v4, 1-second frames; median over frames per track, then median over tracks).

    python inference.py --root /path/to/musdb18                       # test set, best.pt
    python inference.py --root /path/to/musdb18 --phase griffinlim
    python inference.py --root R --checkpoint checkpoints/epoch_025.pt checkpoints/epoch_050.pt checkpoints/epoch_150.pt
    python inference.py --root R --subset train --split valid         # the 14 validation tracks
    python inference.py --root R --phase mixture vocoder --vocoder checkpoints/vocoder.pt
    python inference.py --root R --checkpoint complex/best.pt --phase model mixture wiener   # a --mask complex model
    python inference.py --input song.mp3 live.flac                    # any audio files -> separated/<name>/ (wiener)
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import torch

from data import check_track, open_musdb, select_tracks
from formats import summary
from model import takes_complex
from separation.audio_files import separate_files
from separation.evaluation import evaluate, format_table, median_over_tracks
from separation.phase import GL_BACKENDS, PHASE_METHODS, PhaseSettings, default_phases, resolve_gl_backend
from separation.processes import WORKER_MEMORY, ModelFiles, default_workers
from separation.segments import SeparationSettings, check_phases
from utils import OUTPUT_FORMATS, HelpFormatter, UserError, add_debug_flag, resolve_device, run_cli


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--root", default=None, help="MUSDB18 root (default: $MUSDB_PATH, else the 7-second previews)")
    g.add_argument("--is-wav", action="store_true", help="the root is MUSDB18-HQ (WAV folders)")
    g.add_argument("--subset", default="test", choices=("train", "test"), help="MUSDB18 subset to separate")
    g.add_argument("--split", default=None, choices=("train", "valid"),
                   help="with --subset train: musdb's training or validation split")
    g.add_argument("--tracks", nargs="+", default=None, help="only these tracks")
    g.add_argument("--input", nargs="+", default=None, metavar="FILE",
                   help="separate these audio files instead of MUSDB18 (any format libsndfile or ffmpeg reads, "
                        "any sample rate, mono or stereo); writes <out>/<file stem>/{vocals,accompaniment}.<format>, "
                        "scores nothing; --root, --subset, --split and --tracks are not used")
    g = p.add_argument_group("separation")
    g.add_argument("--checkpoint", nargs="+", default=["checkpoints/best.pt"],
                   help="one or more checkpoints; each gets its own row of results")
    g.add_argument("--phase", nargs="+", default=None, choices=list(PHASE_METHODS),
                   help="one or more (the model runs once per track, each gets its own row of results; default: "
                        "model when every checkpoint has complex masks, its own estimate, on which train.py "
                        "validates it; else mixture when evaluating, as Task 1 asks, and wiener with --input, the "
                        "best-scoring on the validation clips: README's results table). "
                        "mixture: copy the mixture phase; griffinlim: librosa.griffinlim on each estimate from "
                        "a random phase (Task 2's reference); griffinlim-mixinit: the same iteration from the "
                        "mixture phase; misi: Multiple Input Spectrogram Inversion, all stems jointly kept "
                        "summing to the mixture; wiener: Open-Unmix's multichannel Wiener/EM post-filter; "
                        "vocoder: the mel vocoder of --vocoder makes each estimate's waveform from its mel "
                        "spectrogram alone; model: the ISTFT of a complex-mask model's own complex estimate "
                        "(train.py --mask complex; the other methods take its magnitude)")
    g.add_argument("--gl-iters", type=int, default=PhaseSettings.gl_iters,
                   help="iterations of griffinlim, griffinlim-mixinit and misi")
    g.add_argument("--gl-momentum", type=float, default=PhaseSettings.gl_momentum,
                   help="fast Griffin-Lim momentum of griffinlim and griffinlim-mixinit (librosa's default)")
    g.add_argument("--gl-backend", default="auto", choices=list(GL_BACKENDS),
                   help="backend of griffinlim: " + "; ".join(f"{k}: {v}" for k, v in GL_BACKENDS.items())
                        + ". Both give the same signals from the same start (tested); on a GPU the torch one "
                          "runs there instead of on the CPU. summary.json records which ran. "
                          "griffinlim-mixinit and misi always run in torch")
    g.add_argument("--wiener-iters", type=int, default=PhaseSettings.wiener_iters,
                   help="EM iterations of wiener (0: its initial estimate alone; Open-Unmix: 1)")
    g.add_argument("--wiener-softmask", action=argparse.BooleanOptionalAction, default=PhaseSettings.wiener_softmask,
                   help="wiener starts from the soft mask mixture * |estimate| / sum of |estimates|; with "
                        "--no-wiener-softmask from each |estimate| under the mixture's phase, as Open-Unmix does")
    g.add_argument("--wiener-eps", type=float, default=PhaseSettings.wiener_eps,
                   help="wiener's eps, the power of the white noise it leaves out (Open-Unmix: 1e-10)")
    g.add_argument("--wiener-win-len", type=int, default=PhaseSettings.wiener_win_len, metavar="FRAMES",
                   help="wiener filters each window of this many frames alone, with covariances from that "
                        "window only (Open-Unmix: 300); 0: each whole segment of inference at once")
    g.add_argument("--vocoder", default=None, metavar="PATH",
                   help="checkpoint written by vocoder.py; needed by (and only used by) --phase vocoder")
    g.add_argument("--seed", type=int, default=PhaseSettings.seed, help="seed of griffinlim's random initial phase")
    g.add_argument("--device", default="auto", help="auto, cpu or cuda")
    g.add_argument("--workers", type=int, default=None,
                   help="processes that separate several tracks or files at once (default: one per core, as "
                        f"many as the free memory holds at {WORKER_MEMORY / 2**30:.1f} GiB each, the peak of one "
                        "on a 4-minute track; the choice and why are printed). On the CPU each one runs a "
                        "whole track (file): the model, the phase methods, museval and the writing of estimates, "
                        "samples or --input's stems, with its own copy of the models and cores / N threads. On a "
                        "GPU the model runs in the main process and they run museval, the writing and the phase "
                        "methods that are slow on a CPU (griffinlim's librosa backend) meanwhile. 0 or 1: all in "
                        "the main process, one after another")
    g = p.add_argument_group("output")
    g.add_argument("--out", default=None,
                   help="results go to <out>/<checkpoint name>-<phase>/ (default results); with --input, "
                        "stems go to <out>/<file stem>/ (default separated)")
    g.add_argument("--format", default="wav", choices=OUTPUT_FORMATS, help="with --input: format of the stems written")
    g.add_argument("--save-estimates", action="store_true",
                   help="also write full-length estimates to <out>/<checkpoint>-<phase>/estimates/<track>/")
    g.add_argument("--samples", type=int, default=3, help="tracks to write listening excerpts for")
    g.add_argument("--samples-dir", default="samples", help="excerpts go to <samples-dir>/<checkpoint>-<phase>/<track>/")
    add_debug_flag(p)
    return p


def check_flags(args: argparse.Namespace) -> None:
    """Every check of the flags' values, before any work: a UserError naming the flag."""
    if min(args.gl_iters, args.wiener_iters, args.wiener_win_len) < 0 or args.gl_momentum < 0:
        raise UserError("--gl-iters, --wiener-iters, --wiener-win-len and --gl-momentum must not be negative")
    if not args.wiener_eps > 0:
        raise UserError("--wiener-eps must be positive (it keeps wiener's divisions finite in silence)")
    if args.workers is not None and args.workers < 0:
        raise UserError("--workers must not be negative")
    if args.input and len(args.checkpoint) != 1:
        raise UserError("--input separates with one checkpoint: give a single --checkpoint")
    if not args.input and args.split and args.subset != "train":
        raise UserError("--split needs --subset train")
    if len({Path(path).stem for path in args.checkpoint}) != len(args.checkpoint):
        raise UserError("checkpoints must have distinct file names (results are named after them)")
    # No --phase: the default depends on the models' masks (default_phases), and never needs a vocoder.
    if "vocoder" in (args.phase or ()) and args.vocoder is None:
        raise UserError("--phase vocoder needs --vocoder PATH, a checkpoint written by vocoder.py")


def phase_settings(args: argparse.Namespace, device: torch.device) -> PhaseSettings:
    """The phase methods' settings from the (checked) flags, griffinlim's backend resolved for `device`."""
    return PhaseSettings(gl_iters=args.gl_iters, gl_momentum=args.gl_momentum,
                         gl_backend=resolve_gl_backend(args.gl_backend, device), wiener_iters=args.wiener_iters,
                         wiener_softmask=args.wiener_softmask, wiener_eps=args.wiener_eps,
                         wiener_win_len=args.wiener_win_len, seed=args.seed)


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    check_flags(args)
    workers = args.workers
    if workers is None:
        workers, why = default_workers()
        print(why)
    device = resolve_device(args.device)
    files = ModelFiles({Path(path).stem: str(path) for path in args.checkpoint},
                       args.vocoder if "vocoder" in (args.phase or ()) else None)
    models = files.load(device)  # once, before any other work, for every track, file and segment
    phases = args.phase or default_phases(all(map(takes_complex, models.separators.values())),
                                          scoring=not args.input)
    for path, model in zip(args.checkpoint, models.separators.values()):
        check_phases(model, phases, path)
    settings = SeparationSettings(tuple(phases), phase_settings(args, device))
    if args.input:
        written = separate_files(args.input, models, Path(args.out or "separated"), settings, args.format, device,
                                 workers)
        print("\n".join(map(str, written)))
        return
    out = Path(args.out or "results")
    tracks = select_tracks(open_musdb(args.root, args.is_wav, args.subset, args.split).tracks, args.tracks)
    tracks = sorted(tracks, key=lambda t: t.name)
    for track in tracks:  # fail before anything is written when a track cannot be decoded
        check_track(track)

    scores = evaluate(models, tracks, settings, device, workers, out, args.save_estimates, Path(args.samples_dir),
                      args.samples)
    for name, path in files.separators.items():
        for phase in settings.phases:
            run = scores[summary.run_name(path, phase)]
            record = summary.Summary(
                checkpoint=path, epoch=models.epochs[name], phase=phase, subset=args.subset,
                split=args.split, median_sdr=median_over_tracks(run.sdr), tracks=run.sdr,
                phase_seconds=run.phase_seconds, vocoder=str(args.vocoder) if phase == "vocoder" else None,
                gl_backend=settings.phase.gl_backend if phase == "griffinlim" else None)
            summary.write(out / record.run, record)
    print(format_table(scores))
    print(f"results in {out}/<checkpoint>-<phase>/{summary.FILE_NAME}")


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
