"""The stem cache on disk, which preprocess.py writes and training memory-maps: the one
module that defines, writes, reads and version-checks its format (index.json and int16
stems with a per-track scale). A cache holds the four MUSDB18 sources or, half the size,
two: the vocals and the accompaniment (the other three summed); index.json names which.
What this module does not name, in index.json or in the folder (a magnitudes/ folder,
an "stft" entry, a track's "magnitudes" flag), is left alone and never read."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from utils import SAMPLE_RATE, UserError, atomic_path, write_text

SOURCES = ("vocals", "drums", "bass", "other")  # MUSDB18's, in cache order; vocals first, the rest is accompaniment
# What a cache can hold, by --stems: vocals first in each, the other sources summing to the accompaniment.
SOURCE_SETS = {4: SOURCES, 2: ("vocals", "accompaniment")}
CACHE_VERSION = 2  # 1: float32 stems; 2: int16 stems with a per-track scale, index.json naming the sources
STEM_DTYPE = "int16"


class StemCache:
    """The cache written by preprocess.py: stems/<track>.npy (sources, channels, samples)
    int16, the sources those of `self.sources` (one of SOURCE_SETS), read as float32
    times the track's scale (see `stem_scale`), described by index.json.
    Arrays are memory-mapped, opened lazily per process: a pickled cache (a DataLoader
    worker's copy) carries the path and the index, never the arrays."""

    def __init__(self, cache_dir: str | os.PathLike) -> None:
        self.root = Path(cache_dir)
        index_path = self.root / "index.json"
        if not index_path.is_file():
            raise UserError(f"no cache at {self.root} (index.json missing): run preprocess.py --cache {self.root} first")
        try:
            self.index = json.loads(index_path.read_text())
        except json.JSONDecodeError as err:
            raise UserError(f"{index_path} is not valid JSON ({err})") from err
        version = self.index.get("format_version")
        if version == 1:  # its float32 stems would be read as int16 codes: refuse rather than misread
            raise UserError(f"cache {self.root} has format version 1 (float32 stems), this code reads version "
                            f"{CACHE_VERSION} (int16 stems, half the size): rerun preprocess.py into a new --cache "
                            "directory")
        if version != CACHE_VERSION:
            raise UserError(f"cache {self.root} has format version {version}, this code reads "
                            f"{CACHE_VERSION}: rerun preprocess.py into a new --cache directory")
        readable = [list(sources) for sources in SOURCE_SETS.values()]
        if self.index.get("sample_rate") != SAMPLE_RATE or self.index.get("sources") not in readable:
            raise UserError(f"cache {self.root} holds {self.index.get('sources')} at {self.index.get('sample_rate')} Hz, "
                            f"this code reads {' or '.join(map(str, readable))} at {SAMPLE_RATE} Hz: rerun "
                            "preprocess.py into a new --cache directory")
        self.sources: tuple[str, ...] = tuple(self.index["sources"])
        self._open: dict[str, np.ndarray] = {}

    def __getstate__(self) -> dict:
        # A pickled np.memmap carries its whole contents: a DataLoader worker started by
        # spawn or forkserver would receive every track read so far. Workers reopen by path.
        return {**self.__dict__, "_open": {}}

    @staticmethod
    def create_or_open(cache_dir: str | os.PathLike, sources: Sequence[str] = SOURCES) -> "StemCache":
        """The cache at `cache_dir`, created empty to hold `sources` (one of SOURCE_SETS)
        if it does not exist; an existing cache must hold the same sources."""
        index_path = Path(cache_dir) / "index.json"
        if not index_path.exists():
            write_text(index_path, json.dumps(
                {"format_version": CACHE_VERSION, "sample_rate": SAMPLE_RATE,
                 "sources": list(sources), "tracks": {}}, indent=1))
        cache = StemCache(cache_dir)
        if cache.sources != tuple(sources):
            raise UserError(f"cache {cache.root} holds {len(cache.sources)} stems ({', '.join(cache.sources)}), "
                            f"not {len(sources)}: use --stems {len(cache.sources)} or a new --cache directory")
        return cache

    def names(self, split: str | None = None) -> list[str]:
        """The cached tracks of `split`, or of every split when None."""
        return sorted(n for n, t in self.index["tracks"].items() if split is None or t["split"] == split)

    def length(self, name: str) -> int:
        return self.index["tracks"][name]["length"]

    def _memmap(self, name: str) -> np.ndarray:
        if name not in self._open:
            self._open[name] = np.load(self.root / "stems" / f"{name}.npy", mmap_mode="r")
        return self._open[name]

    def stems(self, name: str) -> "ScaledStems":
        """The track's stems (sources, channels, samples): slice it, then np.asarray the
        slice to get float32 audio; only the slice is read and converted."""
        entry = self.index["tracks"][name]
        codes = self._memmap(name)
        if entry.get("dtype") != STEM_DTYPE or codes.dtype != np.dtype(STEM_DTYPE):
            raise UserError(f"cache {self.root}: track '{name}' is stored as {codes.dtype} (index: "
                            f"{entry.get('dtype')}), expected {STEM_DTYPE}: rerun preprocess.py into a new --cache directory")
        return ScaledStems(codes, entry["scale"])

    def is_cached(self, name: str) -> bool:
        """True when the track's files exist with the shapes and dtype the index records."""
        entry = self.index["tracks"].get(name)
        if entry is None:
            return False
        try:
            codes = np.load(self.root / "stems" / f"{name}.npy", mmap_mode="r")
        except (OSError, ValueError):
            return False
        return codes.shape == (len(self.sources), 2, entry["length"]) and codes.dtype == np.dtype(STEM_DTYPE)

    def add_track(self, name: str, split: str, stems: np.ndarray) -> None:
        """Write one track's arrays, stems (4, channels, samples) float32 in SOURCES order,
        as the sources this cache holds, then record it in the index (files first, so the
        index never names a file that is not complete)."""
        if len(self.sources) == 2:  # summed in float32 before quantizing: one rounding, not three
            stems = np.stack([stems[0], stems[1:].sum(0)])
        scale = stem_scale(stems)
        codes = quantize(stems, scale)
        _save_npy(self.root / "stems" / f"{name}.npy", codes)
        self.index["tracks"][name] = {"split": split, "length": stems.shape[-1], "dtype": STEM_DTYPE, "scale": scale}
        write_text(self.root / "index.json", json.dumps(self.index, indent=1))


class ScaledStems:
    """A lazy float32 view of int16 stem codes: indexing slices the memory map (nothing is
    read), np.asarray of the result reads the slice and scales it to float32. It has no
    arithmetic of its own, so code that forgets np.asarray fails instead of using codes."""

    def __init__(self, codes: np.ndarray, scale: float) -> None:
        self._codes, self._scale = codes, np.float32(scale)

    @property
    def shape(self) -> tuple[int, ...]:
        return self._codes.shape

    @property
    def ndim(self) -> int:
        return self._codes.ndim

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32)  # what np.asarray delivers

    def __len__(self) -> int:
        return len(self._codes)

    def __getitem__(self, index) -> "ScaledStems":
        return ScaledStems(self._codes[index], self._scale)

    @property
    def codes(self) -> np.ndarray:
        """The int16 codes of this slice (a view of the memory map: nothing read yet)."""
        return self._codes

    @property
    def scale(self) -> np.float32:
        """What one code is worth: the audio is codes × scale, in float32."""
        return self._scale

    def codes_into(self, out: np.ndarray) -> None:
        """out (..., samples) int16 <- these stems' codes, zero where out runs past their
        end (an excerpt at a track's end), for a reader that scales them itself, later
        and elsewhere (the training device)."""
        n = min(out.shape[-1], self._codes.shape[-1])
        out[..., :n] = self._codes[..., :n]
        out[..., n:] = 0

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        audio = np.multiply(self._codes, self._scale, dtype=np.float32)
        return audio if dtype is None else audio.astype(dtype, copy=False)


def stem_scale(stems: np.ndarray) -> float:
    """The step between int16 codes for these float stems: 1/32768, as 16-bit PCM (so
    MUSDB18-HQ is stored losslessly, and decoded AAC loses only what lies below -96 dBFS),
    unless a sample lies outside [-1, 32767/32768] (decoded AAC overshoots full scale a
    little): then the peak maps to code 32767, so that no sample clips."""
    if stems.size == 0 or (stems.max() <= 32767 / 32768 and stems.min() >= -1.0):
        return 1 / 32768
    return float(np.abs(stems).max()) / 32767


def quantize(stems: np.ndarray, scale: float) -> np.ndarray:
    """float stems -> int16 codes, rounded to the nearest step of `scale` (see stem_scale)."""
    # float32 arithmetic: exact for the power-of-two 1/32768; the clip only absorbs a
    # rounding of the peak past 32767 for a peak-derived scale
    codes = np.rint(np.asarray(stems, dtype=np.float32) * np.float32(1 / scale))
    return np.clip(codes, -32768, 32767).astype(np.int16)


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def mixture_and_targets(stems: torch.Tensor) -> torch.Tensor:
    """stems (..., sources, channels, samples) in SOURCES order -> (..., 3, channels, samples):
    the mixture (sum of the sources), vocals and accompaniment (the other sources)."""
    return torch.stack([stems.sum(-3), stems[..., 0, :, :], stems[..., 1:, :, :].sum(-3)], dim=-3)

