"""The checkpoint format: the one module that defines, writes, reads and version-checks the
files train.py and vocoder.py save. Everything else (inference, report, experiments, the
benchmarks and the tests) reads and builds checkpoints through these functions.

A separator checkpoint (train.py: epoch_NNN.pt, best.pt, last.pt) holds:
    checkpoint_version  CHECKPOINT_VERSION
    model_state, model_config   the weights and model.build_model's config (bsrnn's records its
                        mask kind, "mask"; a config without one is a magnitude model: model.config_mask)
    input_stats         umx: the training set's input mean and std (None for bsrnn)
    stft                {"n_fft", "hop", "sample_rate"} the model was trained on
    epoch, history, best_epoch  the training so far (history: one dict per epoch)
    train_args          train.py's arguments
    parameters, machine how big, and what trained it
    optimizer_state, scheduler_state, scaler_state  last.pt only: what --resume needs (scaler_state:
                        the GradScaler's loss scale under --precision fp16, empty otherwise)
A vocoder checkpoint (vocoder.py) holds vocoder_config instead of model_config, "mel"
beside "stft", and "step" instead of "epoch".
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from model import build_model, count_parameters
from separation.mel_vocoder import Vocoder
from utils import HOP, MEL_FMAX, N_FFT, SAMPLE_RATE, UserError, atomic_path

CHECKPOINT_VERSION = 1
# By kind of checkpoint: what --resume reads besides the model (input_stats is None for
# bsrnn, but always present).
RESUME_KEYS = {"separator": ("optimizer_state", "scheduler_state", "history", "epoch", "input_stats"),
               "vocoder": ("optimizer_state", "history", "step")}


def stft_settings() -> dict:
    """The STFT this code runs, recorded in every checkpoint and checked on loading."""
    return {"n_fft": N_FFT, "hop": HOP, "sample_rate": SAMPLE_RATE}


def separator_state(model: torch.nn.Module, *, input_stats: dict | None = None, epoch: int = 0,
                    history: list[dict] | None = None, best_epoch: int | None = None,
                    train_args: dict | None = None, machine: str = "", **resume: Any) -> dict:
    """A separator checkpoint's contents for `model` (`resume`: optimizer_state,
    scheduler_state and scaler_state, for last.pt)."""
    unknown = set(resume) - {"optimizer_state", "scheduler_state", "scaler_state"}
    if unknown:
        raise TypeError(f"not part of a separator checkpoint: {', '.join(sorted(unknown))}")
    return {
        "model_state": model.state_dict(), "model_config": model.config, "input_stats": input_stats,
        "stft": stft_settings(), "epoch": epoch, "history": history or [],
        "best_epoch": epoch if best_epoch is None else best_epoch, "train_args": train_args or {},
        "parameters": count_parameters(model), "machine": machine, **resume,
    }


def save(path: str | os.PathLike, state: dict) -> None:
    """torch.save through `atomic_path`: a checkpoint file is complete or absent."""
    with atomic_path(path) as tmp:
        torch.save({"checkpoint_version": CHECKPOINT_VERSION, **state}, tmp)


def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict:
    """Load a checkpoint written by `save`, or raise a UserError saying why not."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=device, weights_only=False)
    except Exception as err:  # torch raises many types for a file that is not a checkpoint
        raise UserError(f"{path} is not a readable checkpoint ({type(err).__name__})") from err
    if not isinstance(state, dict) or state.get("checkpoint_version") != CHECKPOINT_VERSION:
        raise UserError(f"{path} is not a checkpoint of this project (or of another version)")
    return state


def _check_stft(path: Path, state: dict) -> None:
    stft_config = state.get("stft") or {}
    trained = (stft_config.get("n_fft", N_FFT), stft_config.get("hop", HOP), stft_config.get("sample_rate", SAMPLE_RATE))
    if trained != (N_FFT, HOP, SAMPLE_RATE):
        raise UserError(f"{path} was trained with n_fft={trained[0]} hop={trained[1]} at {trained[2]} Hz; this code "
                        f"uses n_fft={N_FFT} hop={HOP} at {SAMPLE_RATE} Hz")


def load_separator(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """Rebuild the trained separator from a checkpoint alone; returns (model in eval mode, checkpoint)."""
    state = load(path, device)
    _check_stft(Path(path), state)
    try:
        model = build_model(state["model_config"])
        model.load_state_dict(state["model_state"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise UserError(f"{path} does not match this project's model: {err}".splitlines()[0]) from err
    return model.to(device).eval(), state


def load_for_resume(path: str | os.PathLike, kind: str = "separator") -> tuple[torch.nn.Module, dict]:
    """A checkpoint to continue training from, train.py's last.pt (kind "separator") or
    vocoder.py's file ("vocoder"): (model on the CPU, checkpoint), or a UserError saying
    why it cannot be resumed."""
    path = Path(path)
    state = load(path)
    try:
        if kind == "separator":
            model = build_model(state["model_config"])
        else:
            model = Vocoder(**state["vocoder_config"])
        model.load_state_dict(state["model_state"])
        missing = [k for k in RESUME_KEYS[kind] if k not in state]
        if missing:
            raise KeyError(", ".join(missing))
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        written_by = "train.py's last.pt" if kind == "separator" else "vocoder.py's checkpoint"
        raise UserError(f"{path} cannot be resumed (not {written_by} for this project's model: "
                        f"{type(err).__name__}: {err})".splitlines()[0]) from err
    return model, state


def vocoder_state(vocoder: torch.nn.Module, *, mel: dict, loss_resolutions, step: int, history: list,
                  train_args: dict, optimizer_state: dict, seconds: float) -> dict:
    """A vocoder checkpoint's contents (vocoder.py writes one file and resumes from it)."""
    return {
        "model_state": vocoder.state_dict(), "vocoder_config": vocoder.config, "mel": mel, "stft": stft_settings(),
        "loss_resolutions": loss_resolutions, "step": step, "history": history, "train_args": train_args,
        "parameters": count_parameters(vocoder),
        "optimizer_state": optimizer_state, "seconds": seconds,
    }


def load_vocoder(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """Rebuild the mel vocoder vocoder.py trained from its checkpoint; returns (model,
    checkpoint). Any other file, a separator checkpoint included, is a UserError."""
    state = load(path, device)
    if "vocoder_config" not in state:
        raise UserError(f"{path} is not a vocoder checkpoint (vocoder.py writes them; this one holds "
                        f"{'a separator' if 'model_config' in state else 'no vocoder'})")
    stft_config, mel_config = state.get("stft") or {}, state.get("mel") or {}
    trained = (stft_config.get("n_fft"), stft_config.get("hop"), stft_config.get("sample_rate"), mel_config.get("fmax"))
    if trained != (N_FFT, HOP, SAMPLE_RATE, MEL_FMAX):
        raise UserError(f"{path} was trained on mels of n_fft={trained[0]} hop={trained[1]} at {trained[2]} Hz "
                        f"up to {trained[3]} Hz; this code uses n_fft={N_FFT} hop={HOP} at {SAMPLE_RATE} Hz "
                        f"up to {MEL_FMAX} Hz")
    try:
        model = Vocoder(**state["vocoder_config"])
        model.load_state_dict(state["model_state"])
    except (KeyError, TypeError, RuntimeError) as err:
        raise UserError(f"{path} does not match this project's vocoder: {err}".splitlines()[0]) from err
    return model.to(device).eval(), state
