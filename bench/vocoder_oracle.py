"""How good a trained vocoder's phase is, apart from the separator: vocode the TRUE
vocals and accompaniment magnitudes of the cache's validation tracks and compare the
waveforms with the references, next to Griffin-Lim (torch backend, librosa's seeded
random start) on the same magnitudes.

Per track, stem and channel over the whole clip, then the median over tracks:

- SDR 10 log10(|s|^2 / |s - y|^2): what museval's BSSEval v4 SDR reduces to for one
  source; silence (y = 0) scores 0 dB and a random phase at the right magnitude -3 dB
- SI-SDR (scale-invariant): the same after the best gain on the reference, so a quiet
  output gains nothing
- energy |y|^2 / |s|^2, and the log-mel L1 distance and spectral convergence
  | |STFT y| - |STFT s| | / |STFT s| of the output against the reference

    python -m bench.vocoder_oracle --cache cache --vocoder checkpoints/vocoder.pt
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from formats import checkpoint
from formats.cache import StemCache, mixture_and_targets
from separation.phase import PHASE_METHODS, PhaseSettings
from utils import HelpFormatter, UserError, log_mel, run_cli, stft

MEASURES = ("SDR", "SI-SDR", "energy", "log-mel L1", "spec. conv.")


def scores(reference: np.ndarray, estimate: np.ndarray) -> np.ndarray:
    """(stems, C, samples) each -> (len(MEASURES), stems): each measure's mean over channels."""
    ref_energy = (reference ** 2).sum(-1)  # 0 for a silent stem: its scores are NaN, left out of the median
    gain = (reference * estimate).sum(-1, keepdims=True) / ref_energy[..., None]
    scaled = gain * reference
    ref_mag, est_mag = stft(torch.from_numpy(reference)).abs(), stft(torch.from_numpy(estimate)).abs()
    rows = [
        10 * np.log10(ref_energy / ((reference - estimate) ** 2).sum(-1)),
        10 * np.log10((scaled ** 2).sum(-1) / ((scaled - estimate) ** 2).sum(-1)),
        (estimate ** 2).sum(-1) / ref_energy,
        (log_mel(est_mag) - log_mel(ref_mag)).abs().mean(dim=(-2, -1)).numpy(),
        (torch.linalg.norm(est_mag - ref_mag, dim=(-2, -1)) / torch.linalg.norm(ref_mag, dim=(-2, -1))).numpy(),
    ]
    return np.stack(rows).mean(-1)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--cache", default="cache", help="cache written by preprocess.py (its valid split is used)")
    p.add_argument("--vocoder", nargs="+", required=True, metavar="PATH", help="vocoder.py checkpoint(s)")
    p.add_argument("--tracks", type=int, default=None, help="only the first N validation tracks")
    p.add_argument("--gl-iters", type=int, default=32, help="Griffin-Lim iterations")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    cache = StemCache(args.cache)
    names = cache.names("valid")[:args.tracks]
    if not names:
        raise UserError(f"the cache {args.cache} holds no validation tracks")
    vocoders = {path: checkpoint.load_vocoder(path)[0] for path in args.vocoder}
    results: dict[str, list[np.ndarray]] = {}
    for name in names:
        targets = mixture_and_targets(torch.from_numpy(np.array(cache.stems(name))))[1:]  # vocals, accompaniment
        mag, mixture_spec, length = stft(targets).abs(), stft(targets.sum(0)), targets.shape[-1]
        reference = targets.numpy()
        estimates = {"griffinlim": PHASE_METHODS["griffinlim"](
            mag, mixture_spec, length, PhaseSettings(gl_iters=args.gl_iters, gl_backend="torch"))}
        for path, vocoder in vocoders.items():
            estimates[path] = PHASE_METHODS["vocoder"](mag, mixture_spec, length, vocoder=vocoder)
        for label, estimate in estimates.items():
            results.setdefault(label, []).append(scores(reference, estimate))
    print(f"true magnitudes of {len(names)} validation tracks, median over tracks (vocals / accompaniment)")
    width = max(len(label) for label in results)
    print(f"{'method':<{width}} " + " ".join(f"{m:>15}" for m in MEASURES))
    for label, rows in results.items():
        median = np.nanmedian(np.stack(rows), axis=0)  # NaN: a silent reference
        cells = (f"{median[i, 0]:7.2f}/{median[i, 1]:<7.2f}" for i in range(len(MEASURES)))
        print(f"{label:<{width}} " + " ".join(cells))


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
