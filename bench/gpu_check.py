"""The first thing to run on a GPU: checks that training, torchrun and separation work on
it, and measures it, in under 8 minutes, printing as it goes and writing everything to
one JSON file (--out).

    python -m bench.gpu_check                                # -> gpu_check.json
    python -m bench.gpu_check --out t4.json --budget 300     # a shorter run
    python -m bench.gpu_check --sections precision torchrun  # only these sections
    python -m bench.gpu_check --root ../shared/musdb18-7     # the 7-second clips instead of generated tracks

Sections, in this order:
  data        a stem cache in a temporary folder: generated tracks (a harmonic line with
              pauses, noise bursts on a beat grid, a bass line and chords), or --root's
              first clips, preprocessed as preprocess.py does
  precision   for umx, bsrnn and bsrnn --mask complex, and each precision the card runs in
              hardware (fp32 always, fp16 from compute capability 7.0, bf16 from 8.0):
              optimizer steps from the same initial weights on the same batches (LSTM
              dropout off, so the runs differ by their arithmetic alone); checks every loss
              is finite and each precision's losses agree with fp32's (TOLERANCES); a
              model the card cannot hold at batch 4 is recorded as skipped
  train       train.py, a few epochs of umx at each of those precisions: finite training
              and validation losses in log.csv, and the checkpoint records the precision
  torchrun    torchrun --nproc_per_node 1 of this script's own DDP worker: an NCCL process
              group (gloo on a CPU), DistributedDataParallel, training.loop.train_epoch,
              training.validation.validate and an all_reduce (train.py itself starts no process group
              for a single process)
  separate    separation.segments.separate with every phase method on the device (umx for the
              magnitude methods, the complex-mask model for "model"; the vocoder an
              untrained mel_vocoder.Vocoder), Griffin-Lim with both backends
  throughput  per model and --batch-sizes at --precision auto: steps/s, excerpts/s and peak
              GPU memory (torch's allocated and reserved) of a training step on a batch
              already loaded (out of memory recorded, not an error); then at the default
              batch with the loader feeding it, and the GPU's busy fraction meanwhile

Every section, and every item within one, runs in its own try: a failure is recorded in
the JSON with its error and the run goes on. None starts after --budget seconds (recorded
as skipped; an item already started finishes, but torchrun is stopped at the budget's
end, or after a minute where less was left when it started): the default leaves that
last item and the start-up room within 8 minutes, and a slow card's skipped sections can
be run on their own with --sections. The JSON is rewritten after every section, so an
interrupted run leaves what it measured.

Exit status: 0 when every check passed (skipped ones aside); 2, with one `error:` line,
when a check failed or a section raised (the JSON written first), or when there is no
CUDA device (unless --device cpu).

--device cpu --quick runs every section with tiny sizes on the CPU: it checks this
script (tests/test_gpu_check.py), and its figures mean nothing. There every precision
runs (CPU autocast has bf16 and fp16), torchrun uses gloo, and the GPU memory and busy
fraction are recorded as skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Iterator, Sequence

import torch

from bench.gpu_records import FULL, QUICK, SECTIONS, Run, Sizes, data_section, describe_device
from bench.gpu_sections import (ddp_worker, precision_section, separate_section, throughput_section, torchrun_section,
                                train_section)
from formats.cache import StemCache
from training.precision import set_up_precision
from utils import HelpFormatter, UserError, add_debug_flag, resolve_device, run_cli


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--out", default="gpu_check.json", help="the JSON file written (atomically, after every section)")
    p.add_argument("--budget", type=float, default=400.0,
                   help="seconds after which no further section or item starts (recorded as skipped)")
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                   help="the sections to run (data always runs when another needs it)")
    p.add_argument("--root", default=None,
                   help="a MUSDB18 root (.stem.mp4, e.g. the 7-second clips) whose first tracks are cached instead "
                        "of generated ones (needs ffmpeg)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=None,
                   help=f"the throughput section's batch sizes (default {' '.join(map(str, FULL.batch_sizes))})")
    p.add_argument("--workdir", default=None,
                   help="where the cache and checkpoints go, kept afterwards (default: a temporary folder, deleted)")
    p.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu (with --quick: the tests' check)")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes everywhere: checks this script, e.g. on a CPU; its figures mean nothing")
    p.add_argument("--ddp-worker", nargs=2, metavar=("RESULT", "CACHE"), default=None, help=argparse.SUPPRESS)
    add_debug_flag(p)
    return p




# ----------------------------------------------------------------------- main

def summarise(run: Run) -> tuple[list[str], list[str]]:
    """(the failed checks, the sections or items that raised)."""
    failed = [c["check"] for c in run.results["checks"] if not c["passed"]]

    def errors(name: str, node) -> Iterator[str]:
        if isinstance(node, dict):
            if node.get("status") == "error":
                yield name
            for key, value in node.items():
                yield from errors(f"{name} {key}", value)
    raised = [e for name, record in run.results["sections"].items() for e in errors(name, record)]
    return failed, raised


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.batch_sizes:
        if min(args.batch_sizes) < 1:
            raise UserError("--batch-sizes must be positive")
        sizes = Sizes(**{**asdict(sizes), "batch_sizes": tuple(args.batch_sizes)})
    if args.root is not None and not Path(args.root).is_dir():
        raise UserError(f"--root {args.root} is not a directory")
    if args.ddp_worker:
        ddp_worker(Path(args.ddp_worker[0]), args.ddp_worker[1], args.device, sizes)
        return
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("no CUDA device here: bench.gpu_check checks and measures a GPU, so run it where one is "
                        "(--device cpu --quick only checks the script itself)")
    device = resolve_device(args.device)
    if device.type != "cuda" and not args.quick:
        raise UserError(f"--device {args.device} without --quick: bench.gpu_check measures a GPU (--device cpu "
                        "--quick only checks the script itself)")
    set_up_precision("auto", device)  # TF32 matmuls on CUDA for the fp32 runs, as train.py
    run = Run(Path(args.out), args.budget, argv)
    run.results["device"] = describe_device(device)
    run.results["sizes"] = asdict(sizes)
    facts = run.results["device"]
    card = (f"{facts['name']}: compute capability {facts['capability']}, {facts['memory_gib']} GiB; CUDA "
            f"{facts['cuda']}, " if device.type == "cuda" else f"{device}: ")
    print(f"{card}torch {facts['torch']}; auto precision {facts['auto_precision']} ({facts['auto_reason']}); "
          f"checking {', '.join(facts['precisions_checked'])}; budget {args.budget:g} s", flush=True)
    needs_data = ("precision", "train", "torchrun", "throughput")
    with contextlib.ExitStack() as stack:
        workdir = Path(args.workdir) if args.workdir else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        made: dict[str, StemCache] = {}
        wanted = set(args.sections)
        run.section("data", None if wanted & {"data", *needs_data} else "not in --sections",
                    lambda r: made.setdefault("cache", data_section(r, run, workdir / "cache", sizes, args.root)))
        cache = made.get("cache")

        def skip(name: str) -> str | None:
            if name not in wanted:
                return "not in --sections"
            if name in needs_data and cache is None and run.time_left() > 0:
                return "no data: the data section did not finish"
            return None
        run.section("precision", skip("precision"), lambda r: precision_section(r, run, cache, sizes, device))
        run.section("train", skip("train"), lambda r: train_section(r, run, cache, sizes, device, workdir))
        run.section("torchrun", skip("torchrun"),
                    lambda r: torchrun_section(r, run, cache, device, args.quick, workdir))
        run.section("separate", skip("separate"), lambda r: separate_section(r, run, sizes, device))
        run.section("throughput", skip("throughput"), lambda r: throughput_section(r, run, cache, sizes, device))
    failed, raised = summarise(run)
    checks = run.results["checks"]
    run.results["summary"] = {"checks": len(checks), "failed": failed, "errors": raised,
                              "skipped": [name for name, record in run.results["sections"].items()
                                          if record["status"].startswith("skipped")]}
    run.write()
    print(f"{len(checks) - len(failed)} of {len(checks)} checks passed in {run.results['seconds']} s; "
          f"wrote {args.out}", flush=True)
    if failed or raised:
        raise UserError(f"{len(failed)} check(s) failed, {len(raised)} error(s): "
                        f"{'; '.join((failed + raised)[:3])}{' ...' if len(failed + raised) > 3 else ''} "
                        f"(details in {args.out})")


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
