"""Peak memory of segments.separate on a 1-minute and a 10-minute input, each case in a
fresh subprocess (peak RSS = the child's VmHWM / ru_maxrss), with the default-size model
(random weights: memory does not depend on them).

    python -m bench.separation_memory                       # 1 and 10 minutes, segmented and whole
    python -m bench.separation_memory --minutes 1 10 --phase griffinlim --gl-backend torch

'segmented' is segments.separate as it runs (60-second segments); 'whole' passes one
segment as long as the track, i.e. the separation before segmenting. The input (float32)
and the output arrays necessarily grow with the track; the table shows their size and the
peak above the process's RSS once the input exists."""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from utils import SAMPLE_RATE, HelpFormatter


def vm_hwm_mb() -> float:
    """Peak resident set of this process in MB (VmHWM; ru_maxrss where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(minutes: float, whole: bool, phase: str, gl_backend: str, threads: int | None) -> None:
    """One case, run in its own process; prints a JSON line."""
    import numpy as np
    import torch

    from model import Separator
    from separation import segments
    from separation.phase import PhaseSettings

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = Separator().eval()  # hidden 448, 3 BiLSTM layers: the default size
    samples = int(minutes * 60 * SAMPLE_RATE)
    mixture = (0.1 * np.random.default_rng(0).standard_normal((samples, 2))).astype(np.float32)
    before = rss_mb()
    started = time.perf_counter()
    # 'whole': one segment holding the track; at least SEGMENT_SAMPLES, as segments must
    # be longer than their overlap, which an input of a few seconds is not.
    segment = max(samples + 1, segments.SEGMENT_SAMPLES) if whole else segments.SEGMENT_SAMPLES
    settings = segments.SeparationSettings((phase,), PhaseSettings(gl_iters=8, gl_backend=gl_backend), segment)
    out = segments.separate(model, mixture, settings, torch.device("cpu"))
    seconds = time.perf_counter() - started
    output_mb = sum(a.nbytes for a in out[phase].values()) / 2**20
    print(json.dumps({"peak_mb": vm_hwm_mb(), "before_mb": before, "input_mb": mixture.nbytes / 2**20,
                      "output_mb": output_mb, "seconds": seconds}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--minutes", type=float, nargs="+", default=[1.0, 10.0], help="input lengths")
    p.add_argument("--phase", default="mixture", help="phase method (see inference.py --phase)")
    p.add_argument("--gl-backend", default="torch", help="Griffin-Lim backend, for --phase griffinlim")
    p.add_argument("--no-whole", action="store_true", help="skip the unsegmented cases")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    p.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(float(args.child[0]), args.child[1] == "whole", args.phase, args.gl_backend, args.threads)
        return
    cases = [(m, mode) for mode in (("segmented",) if args.no_whole else ("segmented", "whole")) for m in args.minutes]
    print(f"phase {args.phase}, default-size model (random weights), CPU; each case in a fresh process")
    print(f"{'case':<22} {'peak RSS MB':>12} {'RSS before':>11} {'peak - before':>14} {'in+out MB':>10} {'seconds':>8}")
    rows = {}
    for minutes, mode in cases:
        command = [sys.executable, "-m", __spec__.name, "--child", str(minutes), mode, "--phase", args.phase,
                   "--gl-backend", args.gl_backend] + (["--threads", str(args.threads)] if args.threads else [])
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode:
            print(f"{minutes:g} min {mode}: failed\n{result.stderr[-2000:]}")
            continue
        row = rows[(minutes, mode)] = json.loads(result.stdout.strip().splitlines()[-1])
        print(f"{f'{minutes:g} min {mode}':<22} {row['peak_mb']:12.0f} {row['before_mb']:11.0f} "
              f"{row['peak_mb'] - row['before_mb']:14.0f} {row['input_mb'] + row['output_mb']:10.0f} "
              f"{row['seconds']:8.1f}", flush=True)
    lo, hi = min(args.minutes), max(args.minutes)
    for mode in ("segmented", "whole"):
        if (lo, mode) in rows and (hi, mode) in rows and lo != hi:
            a, b = rows[(lo, mode)], rows[(hi, mode)]
            print(f"{mode}: peak RSS {hi:g} min / {lo:g} min = {b['peak_mb'] / a['peak_mb']:.2f}x "
                  f"(input {hi / lo:g}x longer); peak above the input, less the output arrays: "
                  f"{(a['peak_mb'] - a['before_mb'] - a['output_mb']):.0f} -> "
                  f"{(b['peak_mb'] - b['before_mb'] - b['output_mb']):.0f} MB")


if __name__ == "__main__":
    main()
