"""train.py's command line: the flags, their defaults and help texts (the report reads the
defaults from here to tell which flags a run changed), and `TrainSettings`, the one frozen
value the flags resolve to, every check of them made on the way (resolve_settings)."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
from dataclasses import dataclass
from pathlib import Path

import torch

from model import BSRNN_SIZES, MASKS, MODELS, bandwidth_bins, config_mask
from training.augment import augment_help, parse_augmentations
from training.losses import DEFAULT_LOSSES, LOSSES, loss_help
from training.precision import PRECISIONS, Precision, set_up_precision
from training.schedules import LR_SCHEDULES
from utils import N_FFT, SAMPLE_RATE, HelpFormatter, UserError, add_debug_flag

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


@dataclass(frozen=True)
class TrainSettings:
    """train.py's flags as one run uses them: each flag's value (--precision resolved for
    the device, --loss for the mask), then what is derived from them. train_args() is what
    checkpoints record."""
    cache: str
    seq_dur: float
    samples_per_track: int
    augment: str
    workers: int
    model: str
    hidden_size: int | None
    nb_layers: int | None
    no_mask: bool
    unidirectional: bool
    bandwidth: float | None
    mask: str
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    lr_schedule: str
    lr_decay_patience: int
    lr_decay_gamma: float
    loss: str
    seed: int
    device: str
    precision: Precision
    checkpoint_dir: str
    save_epochs: tuple[int, ...] | None
    resume: bool
    # Derived from the flags above:
    augmentations: tuple[str, ...]  # parsed --augment
    kept_epochs: frozenset[int]  # the epochs saved as epoch_NNN.pt
    model_config: dict  # build_model's config of a new model (umx's input statistics come later)

    def train_args(self) -> dict:
        """The flags as checkpoints record them (train_args): each flag but --resume, with
        --precision resolved and the reason for it (precision_reason)."""
        derived = ("resume", "augmentations", "kept_epochs", "model_config")
        args = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in derived}
        args["precision"] = self.precision.name
        args["save_epochs"] = None if self.save_epochs is None else list(self.save_epochs)
        return {**args, "precision_reason": self.precision.reason}


def resolve_settings(args: argparse.Namespace, device: torch.device, world: int = 1) -> TrainSettings:
    """build_parser()'s arguments -> the run's TrainSettings on `device` with `world`
    torchrun processes; a UserError for flags that do not combine."""
    precision = set_up_precision(args.precision, device)
    saved = kept_epochs(args.save_epochs, args.epochs)
    model_config = new_model_config(args.model, args.hidden_size, args.nb_layers, not args.no_mask,
                                    not args.unidirectional, args.bandwidth, args.mask)
    loss = args.loss or DEFAULT_LOSSES[args.mask]
    check_loss(loss, args.mask)
    augmentations = parse_augmentations(args.augment)
    if args.batch_size % world:
        raise UserError(f"--batch-size {args.batch_size} must be divisible by the {world} torchrun processes")
    flags = {k: v for k, v in vars(args).items() if k != "debug"}
    return TrainSettings(**{**flags, "loss": loss, "precision": precision,
                            "save_epochs": None if args.save_epochs is None else tuple(args.save_epochs)},
                         augmentations=augmentations, kept_epochs=saved, model_config=model_config)


def check_loss(loss: str, mask: str) -> None:
    """A UserError unless --loss `loss` compares the estimates a model with `mask` masks makes.

    A magnitude loss on a complex-mask model would leave the phase its masks set untrained
    (and --phase model, its default output, with it); a complex loss needs complex estimates."""
    if LOSSES[loss].mask != mask:
        raise UserError(f"--loss {loss} compares {LOSSES[loss].mask} estimates: with --mask {mask} use one of "
                        f"{', '.join(name for name, entry in LOSSES.items() if entry.mask == mask)}")


def new_model_config(model: str, hidden_size: int | None, nb_layers: int | None, use_mask: bool,
                     bidirectional: bool, bandwidth: float | None, mask: str = "magnitude") -> dict:
    """The build_model config of a new model from the model flags (without umx's input
    statistics); a size flag left out takes the model's own default."""
    if model == "umx":
        if mask != "magnitude":
            raise UserError(f"--mask {mask} applies only to --model bsrnn: umx estimates magnitude masks")
        config = {"hidden_size": hidden_size, "nb_layers": nb_layers, "use_mask": use_mask,
                  "bidirectional": bidirectional,
                  "max_bin": None if bandwidth is None else bandwidth_bins(bandwidth, SAMPLE_RATE, N_FFT)}
    else:
        if not use_mask:
            raise UserError("--no-mask applies only to --model umx: bsrnn's per-band norms discard the input level, "
                            "so it always estimates masks")
        if bandwidth is not None:
            raise UserError("--bandwidth applies only to --model umx: bsrnn covers every bin with its bands")
        config = {"feature_size": hidden_size, "nb_layers": nb_layers, "bidirectional": bidirectional, "mask": mask}
    return {"model": model, **{k: v for k, v in config.items() if v is not None}}


def kept_epochs(requested: list[int] | None, epochs: int) -> frozenset[int]:
    """The epochs saved as epoch_NNN.pt: explicit --save-epochs past --epochs are a
    mistake; the defaults just shrink."""
    if requested is None:
        return frozenset(e for e in DEFAULT_SAVE_EPOCHS if e <= epochs)
    late = [e for e in requested if e > epochs or e < 1]
    if late:
        raise UserError(f"--save-epochs {' '.join(map(str, late))} outside 1..--epochs {epochs}")
    return frozenset(requested)


def check_resumable(settings: TrainSettings, state: dict, path: Path) -> None:
    """A UserError unless the run of `settings` can continue the checkpoint `state` read
    from `path`: the same --lr-schedule and masks, and epochs left to train."""
    schedule = state.get("train_args", {}).get("lr_schedule", "plateau")
    if schedule != settings.lr_schedule:
        raise UserError(f"{path} was trained with --lr-schedule {schedule}: resume it with the same schedule")
    mask = config_mask(state["model_config"])
    if mask != settings.mask:
        raise UserError(f"{path} has {mask} masks: resume it with --mask {mask}")
    if state["epoch"] >= settings.epochs:
        raise UserError(f"{path} is already at epoch {state['epoch']}: ask for more --epochs than that to continue")
