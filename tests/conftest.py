"""Shared pytest fixtures: small synthetic MUSDB18 datasets generated on the fly, the
cache preprocess.py makes of one, an untrained checkpoint, and one torch thread per test
module.

Nothing here copies real data: every track is synthesised from a seed, so the
datasets are tiny, deterministic and free of licensing concerns. (pytest.ini puts the
repository root on sys.path, so tests import the project's modules directly.)
"""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import stempeg
import torch

from formats import checkpoint
from model import Separator
from pipeline_helpers import REPO_ROOT, run_script

RATE = 44100
TRACK_SECONDS = 4.0
SOURCES = ("drums", "bass", "other", "vocals")
# MUSDB18 stream order inside a .stem.mp4: stream id == index here.
STEM_ORDER = ("mixture",) + SOURCES

# Names musdb's bundled config lists as validation tracks, so split='valid' is non-empty.
VALID_TRACKS = ("ANiMAL - Rockshow", "Actions - One Minute Smile")
# subset -> [(track name, seed)]; seeds are fixed so tests can regenerate the stems.
SYNTH_TRACKS: dict[str, list[tuple[str, int]]] = {
    "train": [
        (VALID_TRACKS[0], 1),
        (VALID_TRACKS[1], 2),
        ("Synth A - One", 3),
        ("Synth B - Two", 4),
        ("Synth C - Three", 5),
    ],
    "test": [
        ("Synth D - Four", 6),
        ("Synth E - Five", 7),
    ],
}

# Keep the summed mixture safely below full scale: 16-bit WAV and the AAC path clip at 1.0.
_MIX_PEAK = 0.8


def _pan(mono: np.ndarray, pan: float) -> np.ndarray:
    """Constant-power pan of a mono signal; pan in [-1, 1] (left..right)."""
    angle = (pan + 1.0) * np.pi / 4.0
    return np.stack([np.cos(angle) * mono, np.sin(angle) * mono], axis=1)


def _random_pan(rng: np.random.Generator, width: float = 0.6) -> float:
    # Avoid dead centre so left and right channels always differ.
    return float(rng.choice([-1.0, 1.0]) * rng.uniform(0.1, width))


def _fade(n: int, rate: int, seconds: float = 0.01) -> np.ndarray:
    """Envelope with short raised-cosine edges (avoids clicks at note boundaries)."""
    env = np.ones(n)
    k = min(int(seconds * rate), n // 2)
    if k > 0:
        ramp = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, k))
        env[:k] = ramp
        env[n - k :] = ramp[::-1]
    return env


def _vocals(rng: np.random.Generator, t: np.ndarray, rate: int) -> np.ndarray:
    """Harmonic voice: melody around 200-400 Hz, vibrato, syllables separated by gaps."""
    n = len(t)
    base = rng.uniform(200.0, 400.0)
    f0 = np.full(n, base)
    env = np.zeros(n)
    pos = int(rng.uniform(0.05, 0.3) * rate)  # start with a short silence
    while pos < n:
        length = min(int(rng.uniform(0.15, 0.45) * rate), n - pos)
        f0[pos : pos + length] = base * 2.0 ** (rng.integers(-5, 8) / 12.0)
        # Hann-shaped syllable: pitch jumps happen where the envelope is ~0.
        env[pos : pos + length] = np.hanning(length) ** 0.5 * rng.uniform(0.6, 1.0)
        pos += length
        # Gaps, occasionally long ones (breaths / rests), so vocals have true silence.
        gap = rng.uniform(0.4, 0.8) if rng.random() < 0.2 else rng.uniform(0.05, 0.25)
        pos += int(gap * rate)
    vibrato = 1.0 + 0.015 * np.sin(2 * np.pi * rng.uniform(4.5, 6.5) * t + rng.uniform(0, 2 * np.pi))
    phase = 2 * np.pi * np.cumsum(f0 * vibrato) / rate
    amps = rng.uniform(0.3, 1.0, size=5) / np.arange(1, 6)
    tone = sum(a * np.sin(k * phase) for k, a in enumerate(amps, start=1))
    return _pan(tone * env, _random_pan(rng, 0.3))


def _drums(rng: np.random.Generator, t: np.ndarray, rate: int, bpm: float) -> np.ndarray:
    """Decaying noise bursts on a beat grid: kick (low thump), snare, hi-hat."""
    n = len(t)
    out = np.zeros((n, 2))
    eighth = 60.0 / bpm / 2.0
    hits = int(t[-1] / eighth) + 1
    hat_pan, snare_pan = _random_pan(rng), _random_pan(rng, 0.3)
    for i in range(hits):
        start = int(i * eighth * rate)
        if i % 4 == 0 or (i % 4 == 3 and rng.random() < 0.3):
            length, decay = int(0.25 * rate), 0.06
            tt = np.arange(length) / rate
            sweep = 2 * np.pi * (45.0 * tt + 60.0 * 0.03 * (1 - np.exp(-tt / 0.03)))
            burst = np.sin(sweep) + 0.3 * np.convolve(rng.standard_normal(length), np.ones(8) / 8, "same")
            burst, pan = burst * np.exp(-tt / decay), 0.1
        elif i % 4 == 2:
            length, decay = int(0.2 * rate), 0.05
            burst = rng.standard_normal(length) * np.exp(-np.arange(length) / rate / decay) * 0.6
            pan = snare_pan
        else:
            length, decay = int(0.06 * rate), 0.012
            # First difference tilts white noise towards the highs (hi-hat-like).
            burst = np.diff(rng.standard_normal(length + 1)) * np.exp(-np.arange(length) / rate / decay) * 0.3
            pan = hat_pan
        end = min(start + length, n)
        out[start:end] += _pan(burst[: end - start], pan)
    return out


def _bass(rng: np.random.Generator, t: np.ndarray, rate: int, bpm: float) -> np.ndarray:
    """Low sine line (50-100 Hz) changing note every one or two beats."""
    n = len(t)
    freq = np.empty(n)
    env = np.zeros(n)
    pos = 0
    while pos < n:
        length = min(int(60.0 / bpm * rng.choice([1, 2]) * rate), n - pos)
        freq[pos : pos + length] = rng.uniform(50.0, 100.0)
        env[pos : pos + length] = _fade(length, rate, 0.02)
        pos += length
    phase = 2 * np.pi * np.cumsum(freq) / rate
    tone = np.sin(phase) + 0.25 * np.sin(2 * phase)
    return _pan(tone * env, _random_pan(rng, 0.2))


def _other(rng: np.random.Generator, t: np.ndarray, rate: int) -> np.ndarray:
    """A few sustained chords of sines between 300 and 2000 Hz."""
    n = len(t)
    out = np.zeros((n, 2))
    n_chords = int(rng.integers(2, 5))
    bounds = np.linspace(0, n, n_chords + 1).astype(int)
    for start, end in zip(bounds[:-1], bounds[1:]):
        root = rng.uniform(300.0, 600.0)
        third = rng.choice([3, 4])
        ratios = 2.0 ** (np.array([0, third, 7, 12]) / 12.0)
        tt = t[start:end]
        chord = sum(np.sin(2 * np.pi * root * r * tt + rng.uniform(0, 2 * np.pi)) for r in ratios)
        out[start:end] += _pan(chord * _fade(end - start, rate, 0.05), _random_pan(rng))
    return out


def make_track_audio(seed: int, seconds: float, rate: int = RATE) -> dict[str, np.ndarray]:
    """Synthesise one track's four stems as float32 arrays of shape (samples, 2).

    Deterministic in `seed`; the stems' sum peaks at 0.8 (< 0.9).
    """
    rng = np.random.default_rng(seed)
    n = int(round(seconds * rate))
    t = np.arange(n) / rate
    bpm = rng.uniform(90.0, 140.0)  # shared so drums and bass lock to one grid
    stems = {
        "drums": _drums(rng, t, rate, bpm),
        "bass": _bass(rng, t, rate, bpm),
        "other": _other(rng, t, rate),
        "vocals": _vocals(rng, t, rate),
    }
    # Balance by RMS (drums are peaky), then one common gain so the mixture stays linear.
    level = {"drums": 1.0, "bass": 0.8, "other": 0.5, "vocals": 1.0}
    for name, audio in stems.items():
        stems[name] = audio * (level[name] / max(np.sqrt(np.mean(audio**2)), 1e-9))
    gain = _MIX_PEAK / max(np.abs(sum(stems.values())).max(), 1e-9)
    return {name: (audio * gain).astype(np.float32) for name, audio in stems.items()}


def _iter_tracks(tracks: dict[str, list[tuple[str, int]]]):
    for subset, entries in tracks.items():
        for name, seed in entries:
            yield subset, name, seed


def write_hq_dataset(
    root: Path,
    tracks: dict[str, list[tuple[str, int]]] = SYNTH_TRACKS,
    seconds: float = TRACK_SECONDS,
    rate: int = RATE,
) -> Path:
    """Write a MUSDB18-HQ tree: <root>/<subset>/<name>/{mixture,<sources>}.wav (PCM_16)."""
    for subset, name, seed in _iter_tracks(tracks):
        stems = make_track_audio(seed, seconds, rate)
        folder = root / subset / name
        folder.mkdir(parents=True, exist_ok=True)
        # Like real HQ, mixture is quantised separately, so it is not the exact sum of the WAV stems.
        sf.write(folder / "mixture.wav", sum(stems.values()), rate, subtype="PCM_16")
        for source, audio in stems.items():
            sf.write(folder / f"{source}.wav", audio, rate, subtype="PCM_16")
    return root


def _write_stem_file(path: Path, stems: dict[str, np.ndarray], rate: int) -> None:
    data = np.stack([sum(stems.values())] + [stems[s] for s in SOURCES])
    # A fresh writer per call: write_stems' default StreamsWriter instance is shared and
    # mutates its own stem_names / output_sample_rate.
    writer = stempeg.StreamsWriter(codec="aac", bitrate=256000, stem_names=list(STEM_ORDER))
    stempeg.write_stems(str(path), data, sample_rate=rate, writer=writer)


def write_stem_dataset(
    root: Path,
    tracks: dict[str, list[tuple[str, int]]] = SYNTH_TRACKS,
    seconds: float = TRACK_SECONDS,
    rate: int = RATE,
) -> Path:
    """Write a MUSDB18 tree: <root>/<subset>/<name>.stem.mp4, 5 AAC streams in STEM_ORDER."""
    jobs = []
    for subset, name, seed in _iter_tracks(tracks):
        (root / subset).mkdir(parents=True, exist_ok=True)
        jobs.append((root / subset / f"{name}.stem.mp4", make_track_audio(seed, seconds, rate)))
    # Encoding runs in ffmpeg subprocesses, so threads give real parallelism.
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda job: _write_stem_file(job[0], job[1], rate), jobs))
    return root


@pytest.fixture(scope="session")
def hq_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic MUSDB18-HQ (WAV) dataset; use with musdb.DB(root=..., is_wav=True)."""
    return write_hq_dataset(tmp_path_factory.mktemp("musdb18hq"))


@pytest.fixture(scope="session")
def stem_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic MUSDB18 (.stem.mp4, AAC) dataset; use with musdb.DB(root=...)."""
    return write_stem_dataset(tmp_path_factory.mktemp("musdb18"))


@pytest.fixture(scope="session")
def real_root() -> Path:
    """The shared MUSDB18 7-second train previews, if present next to the repo."""
    root = REPO_ROOT.parent / "shared" / "musdb18-7"
    if not root.is_dir():
        pytest.skip(f"real MUSDB18 clips not found at {root}")
    return root


@pytest.fixture(scope="session")
def hq_cache_run(tmp_path_factory: pytest.TempPathFactory, hq_root: Path) -> tuple[Path, subprocess.CompletedProcess]:
    """preprocess.py on hq_root, run once per session as a subprocess:
    (the cache directory, the completed process)."""
    cache = tmp_path_factory.mktemp("hq_cache") / "cache"
    result = run_script("preprocess.py", "--root", hq_root, "--is-wav", "--cache", cache)
    assert result.returncode == 0, result.stderr[-3000:]
    return cache, result


@pytest.fixture(scope="session")
def hq_cache(hq_cache_run: tuple[Path, subprocess.CompletedProcess]) -> Path:
    """The cache of the generated MUSDB18-HQ dataset, shared by every test that reads it:
    a test that changes a cache copies it first."""
    return hq_cache_run[0]


@pytest.fixture(scope="session")
def untrained_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid checkpoint of an untrained tiny separator, for the errors that come after loading one."""
    path = tmp_path_factory.mktemp("untrained") / "tiny.pt"
    model = Separator(hidden_size=16, nb_layers=1)
    checkpoint.save(path, checkpoint.separator_state(model))
    return path


@pytest.fixture(scope="module", autouse=True)
def single_torch_thread():
    """Tiny models run far faster on one thread: with two, every small LSTM step pays
    OpenMP synchronisation, which costs ~100x on a busy machine. Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:  # numpy's BLAS too (museval's least squares): threadpoolctl comes with librosa's scikit-learn
        from threadpoolctl import threadpool_limits
        limits = threadpool_limits(1)
    except ImportError:
        limits = None
    yield
    if limits is not None:
        limits.restore_original_limits()
    torch.set_num_threads(before)
