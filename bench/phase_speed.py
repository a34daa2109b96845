"""Seconds each phase method takes on one long stereo two-stem input, both Griffin-Lim
backends side by side, with the speed-up over librosa.griffinlim (Task 2's reference).

The input is fixed-seed noise stems (their STFT magnitudes, and the STFT of their sum
as the mixture), or with --root/--track a real clip's true vocals/accompaniment tiled
to --seconds. With --sdr (needs --root/--track) every method is also scored with
museval on the untiled clip from its true magnitudes (oracle SDR), or with --irm from
its ideal ratio masks (the best a masking model such as this project's can output).

    python -m bench.phase_speed                                   # 180 s of noise stems
    python -m bench.phase_speed --seconds 30 --device cuda
    python -m bench.phase_speed --root /path/to/musdb18-7 --track 'Music Delta - 80s Rock' --sdr
    python -m bench.phase_speed ... --vocoder checkpoints/vocoder.pt      # adds the mel vocoder's row
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace

import numpy as np
import torch

from formats import checkpoint
from separation.phase import PHASE_METHODS, PhaseSettings
from utils import SAMPLE_RATE, STEMS, HelpFormatter, UserError, resolve_device, run_cli, stft

# (row label, method, options beyond the shared ones); the first row is the reference.
RUNS = (
    ("griffinlim (librosa)", "griffinlim", {"gl_backend": "librosa"}),
    ("griffinlim (torch)", "griffinlim", {"gl_backend": "torch"}),
    ("griffinlim-mixinit", "griffinlim-mixinit", {}),
    ("misi", "misi", {}),
    ("wiener", "wiener", {}),
    # Open-Unmix's settings (its Separator: softmask=False, eps=1e-10, wiener_win_len=300).
    ("wiener (Open-Unmix)", "wiener", {"wiener_softmask": False, "wiener_eps": 1e-10, "wiener_win_len": 300}),
    ("mixture", "mixture", {}),
)


def noise_audio(seconds: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Fixed-seed white-noise stems (stems, 2, samples) float32 and their sum (2, samples)."""
    rng = np.random.default_rng(seed)
    stems = (0.1 * rng.standard_normal((len(STEMS), 2, int(seconds * SAMPLE_RATE)))).astype(np.float32)
    return stems, stems.sum(0)


def load_track(root: str, name: str):
    import musdb

    db = musdb.DB(root=root, subsets="train")
    tracks = [t for t in db.tracks if t.name == name]
    if not tracks:
        raise UserError(f"track '{name}' not found in {root} (subset train)")
    return tracks[0]


def track_audio(track) -> tuple[np.ndarray, np.ndarray]:
    """A musdb track's targets in STEMS order (stems, C, samples) and its mixture (C, samples),
    float32; the decoded mixture is not exactly the stems' sum (AAC)."""
    stems = np.stack([track.targets[stem].audio.T for stem in STEMS])
    return stems.astype(np.float32), track.audio.T.astype(np.float32)


def tile(audio: np.ndarray, seconds: float) -> np.ndarray:
    """audio (..., samples) repeated end to end to `seconds`."""
    samples = int(seconds * SAMPLE_RATE)
    reps = -(-samples // audio.shape[-1])
    return np.tile(audio, (1,) * (audio.ndim - 1) + (reps,))[..., :samples]


def oracle_inputs(stems: np.ndarray, mixture: np.ndarray, device: torch.device,
                  irm: bool = False) -> tuple[torch.Tensor, torch.Tensor, int]:
    """stems (stems, C, samples), mixture (C, samples) -> the stems' true magnitudes
    (stems, C, F, T), the mixture's STFT (C, F, T) and the length, on `device`.

    irm: the ideal ratio masks' magnitudes |X| |S_j| / sum_k |S_k| instead, what a
    perfect masking model (as this project's) would output."""
    magnitudes = stft(torch.from_numpy(stems).to(device)).abs()
    mixture_spec = stft(torch.from_numpy(mixture).to(device))
    if irm:
        magnitudes = mixture_spec.abs() * magnitudes / magnitudes.sum(0).clamp_min(1e-12)
    return magnitudes, mixture_spec, stems.shape[-1]


def run_all(estimate_mag: torch.Tensor, mixture_spec: torch.Tensor, length: int, settings: PhaseSettings,
            quiet: bool = False, runs: tuple = RUNS,
            vocoder: torch.nn.Module | None = None) -> dict[str, tuple[float, float, np.ndarray]]:
    """Every row of `runs` on the same input: {label: (wall seconds, CPU seconds, signals)}.

    CPU seconds (user + system, all threads) show the work done even where other jobs
    share the cores and stretch the wall clock."""
    out = {}
    for label, method, extra in runs:
        timings: dict[str, float] = {}
        cpu = time.process_time()
        signals = PHASE_METHODS[method](estimate_mag, mixture_spec, length, replace(settings, **extra),
                                        vocoder=vocoder, timings=timings)
        out[label] = (timings[method], time.process_time() - cpu, signals)
        if not quiet:
            print(f"  {label}: {timings[method]:.2f} s", file=sys.stderr, flush=True)
    return out


def speed_table(runs: dict[str, tuple[float, float, np.ndarray]]) -> str:
    wall_ref, cpu_ref, _ = runs[RUNS[0][0]]
    lines = [f"{'method':<22} {'seconds':>9} {'x librosa GL':>13} {'CPU s':>9} {'x (CPU)':>8}", "-" * 65]
    lines += [f"{label:<22} {wall:9.2f} {wall_ref / wall:12.1f}x {cpu:9.2f} {cpu_ref / cpu:7.1f}x"
              for label, (wall, cpu, _) in runs.items()]
    return "\n".join(lines)


def sdr_table(track, runs: dict[str, tuple[float, float, np.ndarray]]) -> str:
    from separation.evaluation import evaluate_track

    lines = [f"{'method':<22} {'vocals':>8} {'accomp.':>8} {'seconds':>8}", "-" * 49]
    for label, (seconds, _, signals) in runs.items():
        sdr = evaluate_track(track, {stem: signals[i].T for i, stem in enumerate(STEMS)})
        lines.append(f"{label:<22} {sdr['vocals']:8.2f} {sdr['accompaniment']:8.2f} {seconds:8.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--seconds", type=float, default=180.0, help="length of the timed input")
    p.add_argument("--root", default=None, help="MUSDB18 root holding --track (subset train)")
    p.add_argument("--track", default=None, help="real clip whose true magnitudes are tiled to --seconds")
    p.add_argument("--sdr", action="store_true", help="also score every method on the untiled --track")
    p.add_argument("--irm", action="store_true",
                   help="ideal-ratio-mask magnitudes |X| |S_j| / sum |S_k| instead of the true ones")
    p.add_argument("--gl-iters", type=int, default=32, help="iterations of both GL backends, mixinit and misi")
    p.add_argument("--gl-momentum", type=float, default=0.99, help="fast Griffin-Lim momentum")
    p.add_argument("--wiener-iters", type=int, default=1, help="EM iterations of wiener")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (the torch methods' device)")
    p.add_argument("--vocoder", default=None, metavar="PATH", help="also time and score this vocoder.py checkpoint")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    args = p.parse_args(argv)
    if (args.root is None) != (args.track is None) or (args.sdr and args.track is None):
        raise UserError("--root and --track go together, and --sdr needs them")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    settings = PhaseSettings(gl_iters=args.gl_iters, gl_momentum=args.gl_momentum, wiener_iters=args.wiener_iters)
    runs, vocoder = RUNS, None
    if args.vocoder:
        vocoder = checkpoint.load_vocoder(args.vocoder, device)[0]
        runs = RUNS + (("vocoder", "vocoder", {}),)

    track = load_track(args.root, args.track) if args.track else None
    audio = [tile(a, args.seconds) for a in track_audio(track)] if track else noise_audio(args.seconds)
    source = f"'{args.track}' tiled" if track else "noise stems"
    kind = "ideal-ratio-mask" if args.irm else "true"
    print(f"{source}, {kind} magnitudes, {args.seconds:g} s stereo, {len(STEMS)} stems, {args.gl_iters} iterations, "
          f"device {device}, {torch.get_num_threads()} CPU threads", flush=True)
    # A second of noise through every method first, so imports and first-call set-up go untimed.
    run_all(*oracle_inputs(*noise_audio(1.0), device), replace(settings, gl_iters=1), quiet=True, runs=runs,
            vocoder=vocoder)
    started = time.perf_counter()
    print(speed_table(run_all(*oracle_inputs(*audio, device, args.irm), settings, runs=runs, vocoder=vocoder)),
          flush=True)
    if args.sdr:
        print(f"\n{kind} magnitudes on '{args.track}' itself (museval median SDR, dB):")
        print(sdr_table(track, run_all(*oracle_inputs(*track_audio(track), device, args.irm), settings, runs=runs,
                                       vocoder=vocoder)))
    print(f"\n(total {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
