"""Train the mel vocoder that `inference.py --phase vocoder --vocoder PATH` uses to turn
the separator's magnitude estimates into waveforms.

    python vocoder.py --steps 2000                  # -> checkpoints/vocoder.pt
    python vocoder.py --steps 4000 --resume         # continue the same file to 4000 steps

It learns, from the training split of the stem cache only (vocals and accompaniment,
each channel as its own mono signal), to rebuild a waveform from the log mel spectrogram
of its |STFT| (utils.log_mel of utils.stft: the separator's n_fft, hop and window). The
network (mel_vocoder.Vocoder) is Vocos-style: ConvNeXt blocks at the frame rate and an inverse
STFT head, which trains in minutes on a CPU where a HiFi-GAN upsampling stack would take
days. The loss has no adversarial term: Vocos adds one for perceptual quality, but this
project scores SDR and the reconstruction losses alone train fast. It is

    mean over LOSS_RESOLUTIONS of L1(log mel of the output, log mel of the target)
    + --complex-weight * L1(STFT of the output - STFT of the target) / mean |target STFT|

The mel terms fix the magnitudes at several time/frequency resolutions and leave the
phase free. The complex term, at the separator's resolution, would tie the phase to the
target's, but a mel spectrogram does not determine that phase: in 600-step runs it did
not fall below the level of a random phase, and only made the output quieter (1/10 of
the reference's energy at weight 1), which moves SDR towards the 0 dB of silence without
making the audio any closer to the reference. Hence its default weight 0.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from data import VocoderChunks
from formats import checkpoint
from formats.cache import StemCache
from model import count_parameters
from separation.mel_vocoder import Vocoder
from separation.phase import vocode
from training.schedules import cosine_factor
from utils import (HOP, MEL_FLOOR, MEL_FMAX, N_FFT, N_MELS, SAMPLE_RATE, HelpFormatter, UserError, add_debug_flag,
                   log_mel, remove_stale_parts, resolve_device, run_cli, stft)

# (n_fft, hop, mel bands) of the mel loss terms: the separator's own resolution and three
# shorter windows that see the onsets a 93 ms window smears. Fewer bands at the short
# windows, so that no mel filter falls between two STFT bins (librosa warns of empty ones).
LOSS_RESOLUTIONS = ((N_FFT, HOP, 128), (2048, 512, 128), (1024, 256, 64), (512, 128, 32))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--cache", default="cache", help="cache directory written by preprocess.py (its train split is used)")
    g.add_argument("--seq-dur", type=float, default=1.0, help="training excerpt length in seconds")
    g.add_argument("--workers", type=int, default=1, help="DataLoader worker processes (0: load in this process)")
    g = p.add_argument_group("model")
    g.add_argument("--n-mels", type=int, default=N_MELS, help="mel bands of the input (0 Hz to Nyquist)")
    g.add_argument("--dim", type=int, default=256, help="channels of the ConvNeXt blocks")
    g.add_argument("--hidden", type=int, default=768, help="width of each block's pointwise MLP")
    g.add_argument("--blocks", type=int, default=6, help="ConvNeXt blocks")
    g = p.add_argument_group("optimisation")
    g.add_argument("--steps", type=int, default=2000, help="total optimizer steps (including resumed ones)")
    g.add_argument("--batch-size", type=int, default=8, help="mono excerpts per step")
    g.add_argument("--lr", type=float, default=1e-3, help="AdamW peak learning rate (cosine decay to 0 over --steps)")
    g.add_argument("--complex-weight", type=float, default=0.0,
                   help="weight of a complex STFT L1 term that pulls the phase towards the target's (default 0: "
                        "mel losses only; see above for why)")
    g.add_argument("--seed", type=int, default=42, help="seed of initialisation and excerpts")
    g.add_argument("--device", default="auto", help="auto, cpu or cuda")
    g = p.add_argument_group("output")
    g.add_argument("--out", default="checkpoints/vocoder.pt", help="checkpoint written (atomically)")
    g.add_argument("--save-every", type=int, default=500, help="also save every this many steps")
    g.add_argument("--resume", action="store_true", help="continue --out (weights, optimizer, history) to --steps")
    add_debug_flag(p)
    return p


# ------------------------------------------------------------------- loss

def vocoder_loss(vocoder: Vocoder, audio: torch.Tensor, complex_weight: float) -> tuple[torch.Tensor, dict[str, float]]:
    """audio (batch, samples) mono targets -> (loss, {"mel", "complex"} parts).

    The vocoder hears what it hears at inference: the log mel of the target's |STFT|."""
    target_spec = stft(audio)
    estimate = vocode(vocoder, target_spec.abs(), audio.shape[-1])
    mel = sum(torch.nn.functional.l1_loss(log_mel(stft(estimate, n_fft, hop).abs(), n_mels),
                                          log_mel(stft(audio, n_fft, hop).abs(), n_mels))
              for n_fft, hop, n_mels in LOSS_RESOLUTIONS) / len(LOSS_RESOLUTIONS)
    # Relative to the batch's mean magnitude, so that quiet and loud excerpts weigh alike
    # against the (level-free) log mel terms. Computed at weight 0 too: the history keeps it
    # as the distance of the phase from the target's (about 4 / pi, 1.27, for a random one).
    complex_l1 = (stft(estimate) - target_spec).abs().mean() / target_spec.abs().mean().clamp_min(MEL_FLOOR)
    return mel + complex_weight * complex_l1, {"mel": mel.item(), "complex": complex_l1.item()}


# -------------------------------------------------------------------- run

def train_steps(vocoder: Vocoder, loader: DataLoader, optimizer: torch.optim.Optimizer, device: torch.device,
                start_step: int, steps: int, lr: float, complex_weight: float, history: list[dict],
                save: Callable[[int], None], save_every: int) -> None:
    """Optimizer steps start_step+1 .. steps, one loader batch each; appends one history
    entry per step and calls save(step) every `save_every` steps and at the end."""
    vocoder.train()
    bar = tqdm(loader, desc="vocoder", total=steps - start_step)
    for step, audio in enumerate(bar, start=start_step + 1):
        for group in optimizer.param_groups:
            group["lr"] = lr * cosine_factor(step - 1, steps)
        loss, parts = vocoder_loss(vocoder, audio.to(device, non_blocking=True), complex_weight)
        if not torch.isfinite(loss):
            raise UserError(f"loss became {loss.item()} at step {step}; the last saved checkpoint is kept; "
                            "try a lower --lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        history.append({"step": step, "loss": loss.item(), **parts, "lr": optimizer.param_groups[0]["lr"]})
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if step % save_every == 0 or step == steps:
            save(step)


def mean_loss(history: list[dict], first: bool, count: int = 50) -> float:
    """Mean loss of the first or last `count` steps of the history."""
    part = history[:count] if first else history[-count:]
    return float(np.mean([h["loss"] for h in part]))


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if min(args.steps, args.batch_size, args.save_every, args.n_mels, args.dim, args.hidden, args.blocks) < 1:
        raise UserError("--steps, --batch-size, --save-every, --n-mels, --dim, --hidden and --blocks must be positive")
    if args.seq_dur * SAMPLE_RATE < HOP or args.workers < 0 or args.complex_weight < 0:
        raise UserError(f"--seq-dur must be at least one hop ({HOP / SAMPLE_RATE:.3f} s); "
                        "--workers and --complex-weight must not be negative")
    device = resolve_device(args.device)
    cache = StemCache(args.cache)
    out = Path(args.out)
    remove_stale_parts(out.parent, out.name)  # of this file only: the folder may hold other runs' files
    torch.manual_seed(args.seed)

    state = None
    if args.resume:
        vocoder, state = checkpoint.load_for_resume(out, "vocoder")
        start_step, history, optimizer_state = state["step"], state["history"], state["optimizer_state"]
        if start_step >= args.steps:
            raise UserError(f"{out} is already at step {start_step}: ask for more --steps than that to continue")
    else:
        vocoder = Vocoder(n_mels=args.n_mels, dim=args.dim, hidden=args.hidden, nb_blocks=args.blocks)
        start_step, history, optimizer_state = 0, [], None
    vocoder.to(device)
    print(f"vocoder: {count_parameters(vocoder):,} parameters ({vocoder.config})")
    optimizer = torch.optim.AdamW(vocoder.parameters(), lr=args.lr)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
        print(f"resuming from {out} at step {start_step}")

    dataset = VocoderChunks(cache, cache.names("train"), int(args.seq_dur * SAMPLE_RATE), args.steps * args.batch_size,
                            args.seed)
    # Item i of step s is index s * batch + i whatever the start, so a resumed run sees the same excerpts.
    loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers,
                        sampler=range(start_step * args.batch_size, args.steps * args.batch_size),
                        pin_memory=device.type == "cuda")
    train_args = {k: v for k, v in vars(args).items() if k not in ("resume", "debug")}
    started = time.perf_counter()
    seconds_before = state.get("seconds", 0.0) if state is not None else 0.0

    def save(step: int) -> None:
        checkpoint.save(out, checkpoint.vocoder_state(
            vocoder, mel={"n_mels": vocoder.n_mels, "fmax": MEL_FMAX, "floor": MEL_FLOOR},
            loss_resolutions=LOSS_RESOLUTIONS, step=step, history=history, train_args=train_args,
            optimizer_state=optimizer.state_dict(), seconds=seconds_before + time.perf_counter() - started))

    train_steps(vocoder, loader, optimizer, device, start_step, args.steps, args.lr, args.complex_weight,
                history, save, args.save_every)
    print(f"steps {start_step + 1}-{args.steps} in {time.perf_counter() - started:.0f} s; loss (mean of 50 steps) "
          f"{mean_loss(history, True):.4f} at the start, {mean_loss(history, False):.4f} at the end")
    print(f"wrote {out}")


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
