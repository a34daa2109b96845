"""Inference speed, side by side in one run:

1. separation real-time factor of segments.separate (default-size model, random weights,
   mixture phase) on the CPU, and on CUDA when available;
2. museval (evaluation.evaluate_track) over the same tracks and the same estimates, serial
   and in inference.py's process pool (--workers), checking that the scores are equal;
3. Griffin-Lim: librosa.griffinlim against the torch backend (bench/phase_speed.py's rows);
4. inference.py --input on several files (default-size model, random weights) with one
   phase method, in one process and with --workers, checking that the files written are
   the same bytes.

    python -m bench.inference_speed --root /path/to/musdb18 --subset train --split valid
    python -m bench.inference_speed --root R --seconds 60 --workers 2 --gl-seconds 30
    python -m bench.inference_speed --skip separation museval griffinlim --files 4 --file-seconds 40
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from bench import phase_speed
from data import open_musdb
from formats import checkpoint
from model import Separator
from separation import audio_files, evaluation, processes, segments
from separation.phase import PHASE_METHODS, PhaseSettings
from utils import SAMPLE_RATE, STEMS, HelpFormatter, run_cli, save_audio


def separation_speed(seconds: float, device: torch.device, repeats: int = 1) -> float:
    """Seconds of audio separated per second of wall clock (x real time) on `device`."""
    torch.manual_seed(0)
    model = Separator().to(device).eval()
    mixture = (0.1 * np.random.default_rng(0).standard_normal((int(seconds * SAMPLE_RATE), 2))).astype(np.float32)
    segments.separate(model, mixture[:SAMPLE_RATE], segments.SeparationSettings(), device)  # warm-up
    started = time.perf_counter()
    for _ in range(repeats):
        segments.separate(model, mixture, segments.SeparationSettings(), device)
    return repeats * seconds / (time.perf_counter() - started)


def museval_speed(tracks, workers: int) -> tuple[float, dict]:
    """Wall seconds of evaluate_track over `tracks` with fixed estimates (a half of the
    mixture per stem) through processes.Workers(workers); also the scores."""
    started = time.perf_counter()
    with processes.Workers(workers) as pool:
        for track in tracks:
            half = (track.audio * 0.5).astype(np.float32)
            pool.submit(track.name, evaluation.evaluate_track, track, {stem: half for stem in STEMS})
        scores = pool.results()
    return time.perf_counter() - started, scores


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and of its children that have ended."""
    return sum(r.ru_utime + r.ru_stime for r in map(resource.getrusage, (resource.RUSAGE_SELF,
                                                                           resource.RUSAGE_CHILDREN)))


def input_speed(folder: Path, files: int, seconds: float, phase: str, workers: list[int],
                gl_iters: int) -> dict[int, tuple[float, float]]:
    """(wall seconds, CPU seconds of this process and the pool's) of audio_files.separate_files
    on `files` stereo WAVs of `seconds` (noise under a slow tremolo) with a default-size
    random Separator, per worker count; raises if the stems written differ from the first
    count's. On a machine others load, the CPU seconds show whether the pool added work."""
    torch.manual_seed(0)
    model = Separator()
    checkpoint_path = folder / "random.pt"
    checkpoint.save(checkpoint_path, checkpoint.separator_state(model))
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    inputs = []
    for i in range(files):
        audio = 0.1 * rng.standard_normal((len(t), 2)) * (1 + np.sin(2 * np.pi * (0.5 + i) * t))[:, None]
        inputs.append(folder / f"input{i}.wav")
        save_audio(inputs[-1], audio.astype(np.float32))
    wall, written = {}, {}
    for count in workers:
        out = folder / f"workers{count}"
        started, cpu = time.perf_counter(), cpu_seconds()
        settings = segments.SeparationSettings((phase,), PhaseSettings(gl_iters=gl_iters))  # librosa's Griffin-Lim
        models = processes.ModelFiles({checkpoint_path.stem: str(checkpoint_path)}).load(torch.device("cpu"))
        audio_files.separate_files(inputs, models, out, settings, "wav", torch.device("cpu"), count)
        wall[count] = time.perf_counter() - started, cpu_seconds() - cpu  # the pool has ended: its CPU counts
        written[count] = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*.wav"))}
        if written[count] != written[workers[0]]:
            raise RuntimeError(f"--workers {count} wrote other stems than --workers {workers[0]}")
    return wall


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--root", default=None, help="MUSDB18 root for the museval comparison ($MUSDB_PATH if unset)")
    p.add_argument("--is-wav", action="store_true", help="the root is MUSDB18-HQ")
    p.add_argument("--subset", default="train", help="MUSDB18 subset")
    p.add_argument("--split", default="valid", help="musdb split of --subset train ('none': the whole subset)")
    p.add_argument("--max-tracks", type=int, default=None, help="evaluate only the first N tracks")
    p.add_argument("--seconds", type=float, default=60.0, help="input length of the separation timing")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="evaluation processes of the parallel run")
    p.add_argument("--gl-seconds", type=float, default=30.0, help="input length of the Griffin-Lim timing")
    p.add_argument("--gl-iters", type=int, default=32, help="Griffin-Lim iterations")
    p.add_argument("--files", type=int, default=4, help="inputs of the --input timing")
    p.add_argument("--file-seconds", type=float, default=40.0, help="length of each input of the --input timing")
    p.add_argument("--file-phase", default="griffinlim", choices=list(PHASE_METHODS),
                   help="phase method of the --input timing (librosa backend for griffinlim)")
    p.add_argument("--skip", nargs="*", default=[], choices=("separation", "museval", "griffinlim", "input"),
                   help="parts to leave out")
    args = p.parse_args(argv)
    print(f"{os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads, load average {load_average()}",
          flush=True)

    if "separation" not in args.skip:
        devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
        print(f"\n1. separation, default model, mixture phase, {args.seconds:g} s stereo input")
        for device in devices:
            rate = separation_speed(args.seconds, device)
            print(f"   {str(device):<5} {rate:8.2f} x real time  ({args.seconds / rate:.1f} s per "
                  f"{args.seconds:g} s; a 3.5-minute track: {210 / rate:.1f} s)", flush=True)

    if "museval" not in args.skip:
        split = None if args.split == "none" else args.split
        tracks = sorted(open_musdb(args.root, args.is_wav, args.subset, split).tracks, key=lambda t: t.name)
        tracks = tracks[:args.max_tracks]
        audio_s = sum(t.audio.shape[0] for t in tracks) / SAMPLE_RATE
        print(f"\n2. museval on {len(tracks)} tracks ({audio_s:.0f} s of audio), same estimates", flush=True)
        serial, serial_scores = museval_speed(tracks, 0)
        parallel, parallel_scores = museval_speed(tracks, args.workers)
        print(f"   serial (--workers 0)       {serial:7.1f} s")
        print(f"   parallel (--workers {args.workers:<2})    {parallel:7.1f} s   {serial / parallel:.2f}x faster "
              f"(includes starting the pool)")
        print(f"   scores identical: {serial_scores == parallel_scores}", flush=True)

    if "griffinlim" not in args.skip:
        print(f"\n3. Griffin-Lim, {args.gl_iters} iterations, {args.gl_seconds:g} s stereo, 2 stems (noise stems)")
        settings = PhaseSettings(gl_iters=args.gl_iters, gl_momentum=0.99, seed=0)
        cpu = torch.device("cpu")
        phase_speed.RUNS = phase_speed.RUNS[:2]  # librosa and torch backends
        phase_speed.run_all(*phase_speed.oracle_inputs(*phase_speed.noise_audio(1.0), cpu),
                            replace(settings, gl_iters=1), quiet=True)
        runs = phase_speed.run_all(*phase_speed.oracle_inputs(*phase_speed.noise_audio(args.gl_seconds), cpu),
                                   settings, quiet=True)
        print("\n".join("   " + line for line in phase_speed.speed_table(runs).splitlines()))

    if "input" not in args.skip:
        print(f"\n4. inference.py --input, {args.files} files of {args.file_seconds:g} s, --phase {args.file_phase} "
              f"({args.gl_iters} iterations), default model", flush=True)
        counts = [1, max(2, args.workers)]
        with tempfile.TemporaryDirectory() as folder:
            wall = input_speed(Path(folder), args.files, args.file_seconds, args.file_phase, counts, args.gl_iters)
        for count in counts:
            print(f"   --workers {count:<2} {wall[count][0]:7.1f} s   {wall[counts[0]][0] / wall[count][0]:.2f}x faster"
                  f"   ({wall[count][1]:.1f} CPU s, {wall[count][1] / wall[count][0]:.2f} cores busy)")
        print(f"   stems identical: True; load average after {load_average()}", flush=True)


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
