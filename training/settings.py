"""train.py's command line: the flags, their defaults and help texts (the report reads the
defaults from here to tell which flags a run changed)."""

from __future__ import annotations

import argparse
import inspect

from model import BSRNN_SIZES, MASKS, MODELS
from training.augment import augment_help
from training.losses import DEFAULT_LOSSES, LOSSES, loss_help
from training.precision import PRECISIONS
from training.schedules import LR_SCHEDULES
from utils import HelpFormatter, add_debug_flag

DEFAULT_SAVE_EPOCHS = (25, 50, 150)


def model_default(model: str, parameter: str):
    """A model constructor's default, for the help text (so it never drifts from model.py)."""
    return inspect.signature(MODELS[model]).parameters[parameter].default


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    """The parser of train.py's flags; `description` heads --help."""
    p = argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--cache", default="cache", help="cache directory written by preprocess.py")
    g.add_argument("--seq-dur", type=float, default=6.0, help="training excerpt length in seconds")
    g.add_argument("--samples-per-track", type=int, default=64, help="excerpts per training track per epoch")
    g.add_argument("--augment", default="all", help=augment_help())
    g.add_argument("--workers", type=int, default=0,
                   help="0: a background thread of this process loads the next batch while the device trains, "
                        "the fastest measured at every size (docs/speed.md); N: N DataLoader worker processes")
    g = p.add_argument_group("model")
    g.add_argument("--model", choices=list(MODELS), default="umx",
                   help="umx: Open-Unmix-style BiLSTM; bsrnn: band-split RNN (Luo & Yu 2023)")
    g.add_argument("--hidden-size", type=int, default=None,
                   help=f"umx: width of the encoder, LSTM and decoder (default {model_default('umx', 'hidden_size')}); "
                        f"bsrnn: features per band, N (default {BSRNN_SIZES['magnitude'][0]}), with --mask complex "
                        f"{BSRNN_SIZES['complex'][0]}")
    g.add_argument("--nb-layers", type=int, default=None,
                   help=f"umx: BiLSTM layers, 0 for a per-frame network (default {model_default('umx', 'nb_layers')}); "
                        f"bsrnn: pairs of time and band LSTMs (default {BSRNN_SIZES['magnitude'][1]}), with --mask "
                        f"complex {BSRNN_SIZES['complex'][1]}")
    g.add_argument("--no-mask", action="store_true", help="umx only: output magnitudes directly instead of masks")
    g.add_argument("--unidirectional", action="store_true",
                   help="causal LSTMs over time (real-time variant; bsrnn's LSTMs across bands stay bidirectional)")
    g.add_argument("--bandwidth", type=float, default=None,
                   help="umx only: highest frequency (Hz) the network sees (default 16000; bsrnn sees every bin)")
    g.add_argument("--mask", choices=list(MASKS), default="magnitude",
                   help="; ".join(f"{k}: {v}" for k, v in MASKS.items()) + ". complex needs --model bsrnn")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=150, help="total epochs (including resumed ones)")
    g.add_argument("--batch-size", type=int, default=16, help="excerpts per batch")
    g.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    g.add_argument("--weight-decay", type=float, default=1e-5, help="Adam weight decay")
    g.add_argument("--lr-schedule", choices=list(LR_SCHEDULES), default="plateau",
                   help="; ".join(f"{k}: {v}" for k, v in LR_SCHEDULES.items()).replace("%", "%%"))  # argparse
    g.add_argument("--lr-decay-patience", type=int, default=80, help="plateau: ReduceLROnPlateau patience (epochs)")
    g.add_argument("--lr-decay-gamma", type=float, default=0.3, help="plateau: ReduceLROnPlateau factor")
    g.add_argument("--loss", choices=list(LOSSES), default=None,
                   help=f"default {' or '.join(f'{loss} with --mask {mask}' for mask, loss in DEFAULT_LOSSES.items())}. "
                        + loss_help())
    g.add_argument("--seed", type=int, default=42, help="seed of excerpts, augmentations and initialisation")
    g.add_argument("--device", default="auto", help="auto, cpu or cuda")
    g.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="auto: by the card's compute capability, bf16 on 8.0 and later (A100, H100, RTX 30/40), "
                        "fp16 with a gradient scaler on 7.x (V100, T4), fp32 before 7.0 (GTX 10 series) and on "
                        "the CPU. bf16 and fp16: the linear and norm layers under autocast, the loss in float32; "
                        "the LSTMs in float32 under bf16, in fp16 (cuDNN) under fp16 on CUDA. fp32: float32 "
                        "throughout (on Ampere and later its matmuls on TF32 tensor cores)")
    g = p.add_argument_group("checkpoints")
    g.add_argument("--checkpoint-dir", default="checkpoints", help="where checkpoints and log.csv go")
    g.add_argument("--save-epochs", type=int, nargs="+", default=None,
                   help="epochs kept as epoch_NNN.pt (default: those of 25 50 150 within --epochs)")
    g.add_argument("--resume", action="store_true", help="continue from <checkpoint-dir>/last.pt")
    add_debug_flag(p)
    return p
