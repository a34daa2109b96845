"""What every script shares: the one STFT/ISTFT pair, audio I/O, atomic writes,
checkpoints, device choice and the one-line error convention of the command line."""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import platform
import re
import shutil
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
STEMS = ("vocals", "accompaniment")  # what the separators estimate, in this order


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


# The vocoder's input: log mel spectrogram of the separator's |STFT| (see log_mel).
N_MELS = 128
MEL_FMAX = SAMPLE_RATE / 2
MEL_FLOOR = 1e-5


@functools.lru_cache(maxsize=8)
def _mel_filterbank(n_fft: int, n_mels: int, fmax: float) -> torch.Tensor:
    import librosa

    return torch.from_numpy(librosa.filters.mel(sr=SAMPLE_RATE, n_fft=n_fft, n_mels=n_mels, fmax=fmax))


def log_mel(mag: torch.Tensor, n_mels: int = N_MELS, fmax: float = MEL_FMAX) -> torch.Tensor:
    """mag (..., bins, frames) |STFT| -> (..., n_mels, frames) log(max(mel, MEL_FLOOR)).

    The filterbank is librosa's (Slaney mel, area-normalised) at SAMPLE_RATE for the
    n_fft the bins imply, so one function serves the vocoder's input (this project's
    STFT) and the training loss's other resolutions; the floor keeps silence finite."""
    n_fft = 2 * (mag.shape[-2] - 1)
    filters = _mel_filterbank(n_fft, n_mels, float(fmax)).to(mag.device, mag.dtype)
    return torch.log(torch.clamp(torch.matmul(filters, mag), min=MEL_FLOOR))


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


def remove_stale_parts(directory: str | os.PathLike, name: str | None = None) -> int:
    """Delete the temporary files (atomic_path's) that a killed process left behind: all
    of them in `directory` and below, a folder no other writer uses, or with `name` only
    those of directory/name, the one file this process writes in a shared folder.
    Returns how many were removed."""
    pattern = ".*.part" if name is None else f".{name}.*.part"
    folder = Path(directory)
    stale = [] if not folder.is_dir() else list(folder.rglob(pattern) if name is None else folder.glob(pattern))
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
    """Write (samples, channels) float audio as 16-bit WAV (or FLAC, or MP3, by suffix).

    MP3 goes through libsndfile where it has MP3 (>= 1.1), else through ffmpeg."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").upper() or "WAV"
    audio = np.clip(audio, -1.0, 1.0)
    with atomic_path(path) as tmp:
        if fmt != "MP3":
            sf.write(str(tmp), audio, rate, subtype="PCM_16", format=fmt)
        elif "MP3" in sf.available_formats():
            sf.write(str(tmp), audio, rate, format="MP3", subtype="MPEG_LAYER_III")
        else:
            _ffmpeg_encode(tmp, audio, rate, "mp3")


# Formats the --input path can write: libsndfile writes WAV and FLAC, MP3 where it has it.
OUTPUT_FORMATS = ("wav", "flac", "mp3")


def _ffmpeg_encode(path: Path, audio: np.ndarray, rate: int, fmt: str) -> None:
    import subprocess

    if shutil.which("ffmpeg") is None:
        raise UserError(f"writing {fmt} needs ffmpeg (this libsndfile cannot): install ffmpeg or use --format wav")
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "f32le", "-ar", str(rate), "-ac", str(audio.shape[1]),
           "-i", "pipe:0", "-f", fmt, str(path)]
    result = subprocess.run(cmd, input=np.ascontiguousarray(audio, dtype="<f4").tobytes(), capture_output=True)
    if result.returncode != 0:
        raise UserError(f"ffmpeg could not write {path}: {result.stderr.decode(errors='replace').strip()}"
                        .splitlines()[0])


def _ffprobe_audio(path: Path) -> tuple[int, int]:
    """(sample rate, channels) of the first audio stream of `path`, by ffprobe."""
    import json
    import subprocess

    if shutil.which("ffprobe") is None:
        raise UserError(f"cannot read {path}: not a format libsndfile reads (wav, flac, ogg, mp3), and ffmpeg "
                        "(ffprobe) is not installed to decode it; install ffmpeg, e.g. apt-get install ffmpeg")
    result = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries",
                             "stream=sample_rate,channels", "-of", "json", str(path)], capture_output=True, text=True)
    streams = json.loads(result.stdout or "{}").get("streams") if result.returncode == 0 else None
    if not streams:
        raise UserError(f"cannot read {path}: not an audio file (neither libsndfile nor ffmpeg can decode it)")
    return int(streams[0]["sample_rate"]), int(streams[0]["channels"])


def audio_info(path: str | os.PathLike) -> tuple[int, int]:
    """(sample rate, channels) of any audio file libsndfile or ffmpeg reads, without
    decoding it; a missing file or one that is not audio is a UserError naming it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"input {path} does not exist" if not path.exists() else f"input {path} is not a file")
    try:
        info = sf.info(str(path))
        return info.samplerate, info.channels
    except (sf.LibsndfileError, RuntimeError):
        return _ffprobe_audio(path)


def read_audio_any(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read any audio file as float32 (samples, channels) and its sample rate: libsndfile
    first (wav, flac, ogg, mp3, ...), then ffmpeg (m4a/aac, opus in mp4, wma, ...)."""
    path = Path(path)
    rate, channels = audio_info(path)
    try:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError):
        audio = _ffmpeg_decode(path, rate, channels)
    if audio.shape[0] == 0:
        raise UserError(f"input {path} holds no audio samples")
    if not np.all(np.isfinite(audio)):
        raise UserError(f"input {path} holds NaN or infinite samples")
    return audio, rate


def _ffmpeg_decode(path: Path, rate: int, channels: int) -> np.ndarray:
    import subprocess

    if shutil.which("ffmpeg") is None:
        raise UserError(f"cannot read {path}: decoding it needs ffmpeg, which is not installed; "
                        "install it, e.g. apt-get install ffmpeg")
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-map", "0:a:0", "-f", "f32le",
           "-acodec", "pcm_f32le", "-ar", str(rate), "-ac", str(channels), "pipe:1"]
    result = subprocess.run(cmd, capture_output=True)
    if result.returncode != 0:
        raise UserError(f"cannot decode {path} with ffmpeg: {result.stderr.decode(errors='replace').strip()}"
                        .splitlines()[0])
    return np.frombuffer(result.stdout, dtype="<f4").reshape(-1, channels).astype(np.float32)


def resample(audio: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """(samples, channels) float audio from `from_rate` to `to_rate` Hz with soxr (VHQ);
    the result has round(samples * to_rate / from_rate) samples."""
    if from_rate == to_rate:
        return audio
    import soxr

    return soxr.resample(np.ascontiguousarray(audio, dtype=np.float32), from_rate, to_rate, quality="VHQ")


# ---------------------------------------------------------------------- device

def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present; asking for CUDA without it is a UserError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA device is available; use --device cpu")
    return torch.device(name)


def machine_description(device: torch.device | None = None, gpus: int = 1) -> str:
    """The machine, for checkpoints and the report: system, CPU model and cores, and the GPU
    (`gpus` of them) when `device` is CUDA, or the first visible one when `device` is None."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = re.findall(r"model name\s*:\s*(.+)", cpuinfo.read_text())
        cpu = names[0].strip() if names else cpu
    description = f"{platform.system()} {platform.release()}, {cpu}, {os.cpu_count()} cores"
    if device is None and torch.cuda.is_available():
        device = torch.device("cuda", 0)
    if device is not None and device.type == "cuda":
        return description + f", {torch.cuda.get_device_name(device)} x{gpus}"
    return description + ", no CUDA GPU"


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
