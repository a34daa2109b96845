"""What every script shares: the one STFT/ISTFT pair, audio I/O, atomic writes,
checkpoints, device choice and the one-line error convention of the command line."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import soundfile as sf
import torch

SAMPLE_RATE = 44100
N_FFT = 4096
HOP = 1024
CHECKPOINT_VERSION = 1


class UserError(Exception):
    """A problem the user can fix (bad path, bad file, bad flag): printed as one line."""


# ---------------------------------------------------------------------------- STFT

def _window(n_fft: int, device: torch.device) -> torch.Tensor:
    # Periodic Hann, the same window librosa's "hann" builds, so magnitudes can be
    # handed to librosa.griffinlim unchanged.
    return torch.hann_window(n_fft, periodic=True, device=device)


def stft(audio: torch.Tensor, n_fft: int = N_FFT, hop: int = HOP) -> torch.Tensor:
    """audio (..., samples) real -> (..., n_fft // 2 + 1, frames) complex.

    Centred with zero padding, as librosa.stft does by default."""
    shape = audio.shape
    spec = torch.stft(
        audio.reshape(-1, shape[-1]).float(), n_fft=n_fft, hop_length=hop,
        window=_window(n_fft, audio.device), center=True, pad_mode="constant",
        return_complex=True,
    )
    return spec.reshape(*shape[:-1], *spec.shape[-2:])


def istft(spec: torch.Tensor, length: int, n_fft: int = N_FFT, hop: int = HOP) -> torch.Tensor:
    """spec (..., bins, frames) complex -> (..., length) real; inverse of `stft`."""
    shape = spec.shape
    audio = torch.istft(
        spec.reshape(-1, *shape[-2:]), n_fft=n_fft, hop_length=hop,
        window=_window(n_fft, spec.device), center=True, length=length,
    )
    return audio.reshape(*shape[:-2], length)


def nb_frames(length: int, hop: int = HOP) -> int:
    """Number of STFT frames `stft` gives for `length` samples."""
    return length // hop + 1


# ----------------------------------------------------------------------- files

@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success fsync it and rename it over
    `path`, so a reader never sees a half-written file, even after a crash."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o666 & ~umask)  # mkstemp makes 0600; the final file gets ordinary permissions
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def remove_stale_parts(directory: str | os.PathLike) -> int:
    """Delete temporary files that a killed process left behind in `directory` (and
    below); run only where no other writer is active. Returns how many were removed."""
    stale = list(Path(directory).rglob(".*.part")) if Path(directory).is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def load_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read an audio file as float32 (samples, channels) and its sample rate."""
    try:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise UserError(f"cannot read audio file {path}: {err}") from err
    return audio, rate


def save_audio(path: str | os.PathLike, audio: np.ndarray, rate: int = SAMPLE_RATE) -> None:
    """Write (samples, channels) float audio as 16-bit WAV (or FLAC by suffix)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        sf.write(str(tmp), np.clip(audio, -1.0, 1.0), rate, subtype="PCM_16",
                 format=path.suffix.lstrip(".").upper() or "WAV")


# ----------------------------------------------------------------- checkpoints

def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """torch.save through `atomic_path`: a checkpoint file is complete or absent."""
    with atomic_path(path) as tmp:
        torch.save({"checkpoint_version": CHECKPOINT_VERSION, **state}, tmp)


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict:
    """Load a checkpoint written by `save_checkpoint`, or raise a UserError saying why not."""
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


def load_separator(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """Rebuild the trained separator from a checkpoint alone; returns (model, checkpoint)."""
    from model import Separator  # model.py holds only modules, so it never imports utils

    state = load_checkpoint(path, device)
    try:
        model = Separator(**state["model_config"])
        model.load_state_dict(state["model_state"])
    except (KeyError, TypeError, RuntimeError) as err:
        raise UserError(f"{path} does not match this project's model: {err}".splitlines()[0]) from err
    return model.to(device).eval(), state


# ---------------------------------------------------------------------- device

def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present; asking for CUDA without it is a UserError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA device is available; use --device cpu")
    return torch.device(name)


# ------------------------------------------------------------------------- CLI

class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """--help shows defaults (where there is one to show) and keeps the description's line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False):
            return action.help or ""
        return super()._get_help_string(action)


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")


def run_cli(main: Callable[[Sequence[str] | None], None], argv: Sequence[str] | None = None) -> int:
    """Run a script's main: a UserError becomes one 'error: ...' line on stderr and
    exit status 2; --debug lets the traceback through instead."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        main(argv)
    except UserError as err:
        if "--debug" in argv:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0
