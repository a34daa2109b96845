"""report.py's spectrogram drawings, shared by the slides and the listening page: the mel
spectrogram in dB, one panel of it on an axis, and the small image beside each excerpt."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # the report writes files only; it must not need a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from utils import atomic_path  # noqa: E402

SPECTROGRAM_HOP = 512  # the drawings' own hop, coarser than the models' STFT


def mel_db(audio: np.ndarray, rate: int, ref: float | None = None) -> tuple[np.ndarray, float]:
    """Mel power spectrogram in dB of the channel mean of `audio` (samples, channels) and the
    reference power used.

    Panels of one track share the mixture's peak as reference, so colours compare."""
    import librosa

    mel = librosa.feature.melspectrogram(y=audio.mean(axis=1), sr=rate, n_fft=2048, hop_length=SPECTROGRAM_HOP,
                                         n_mels=128)
    ref = ref if ref is not None else float(mel.max()) or 1.0
    return librosa.power_to_db(mel, ref=ref, top_db=None).clip(-80, 0), ref


def draw_spectrogram(ax: plt.Axes, spec: np.ndarray, rate: int, title: str) -> None:
    """One mel_db spectrogram (mels, frames) on `ax`, on the fixed -80..0 dB colour scale."""
    import librosa.display

    librosa.display.specshow(spec, sr=rate, hop_length=SPECTROGRAM_HOP, x_axis="s", y_axis="mel", ax=ax,
                             cmap="magma", vmin=-80, vmax=0, rasterized=True)
    ax.set_title(title, fontsize=10)
    ax.tick_params(labelsize=8)
    ax.set_xlabel("")
    ax.set_ylabel("")


def spectrogram_png(path: Path, audio: np.ndarray, rate: int, ref: float) -> None:
    """A 380 x 120 pixel spectrogram of `audio` (samples, channels) without axes, for the listening page."""
    fig = plt.figure(figsize=(3.8, 1.2), dpi=100)
    ax = fig.add_axes([0, 0, 1, 1])
    draw_spectrogram(ax, mel_db(audio, rate, ref)[0], rate, "")
    ax.set_axis_off()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
