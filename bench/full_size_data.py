"""The full-size synthetic MUSDB18-HQ root that bench.full_scale measures on: tracks of real
lengths tiled from the shared 7-second clips, written once and reused, and its stem cache."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile as sf
from tqdm import tqdm

from bench.train_throughput import FULL_TRAIN_TRACKS, FULL_VALID_TRACKS, MEAN_TRACK_SECONDS
from data import check_track, decode_stems, open_musdb
from formats.cache import SOURCES, StemCache
from utils import SAMPLE_RATE, UserError, atomic_path, remove_stale_parts

FULL_TEST_TRACKS = 50
# Real MUSDB18 tracks average ~240 s; lengths are drawn uniformly within +-LENGTH_SPREAD of
# that from a fixed seed, per split, so a smaller --tracks builds a prefix of the full root.
LENGTH_SPREAD, LENGTH_SEED = 60.0, 18
WAV_FILES = ("mixture",) + tuple(SOURCES)  # musdb's MUSDB18-HQ file names, without .wav
WAV_BYTES_PER_SAMPLE = 2 * 2  # 16-bit stereo
# int16 stems (cache.StemCache, format 2): 4 sources x 2 channels x 2 bytes per sample.
CACHE_BYTES_PER_SAMPLE = len(SOURCES) * 2 * 2
DISK_MARGIN = 1 << 30  # room for everything else that writes to the disk meanwhile


# -------------------------------------------------------------------- build

def clips_root(clips: str) -> Path:
    """--clips may name the root or its train/ folder: musdb wants the root."""
    path = Path(clips)
    root = path.parent if path.name == "train" else path
    if not (root / "train").is_dir():
        raise UserError(f"--clips {clips}: no MUSDB18 train/ folder there")
    return root


def track_lengths(split: str, count: int, minutes: float | None) -> list[int]:
    """Samples of the first `count` tracks of `split`: all `minutes` long, or the fixed draw."""
    if minutes is not None:
        return [round(minutes * 60 * SAMPLE_RATE)] * count
    rng = np.random.default_rng([LENGTH_SEED, ("train", "valid", "test").index(split)])
    seconds = rng.uniform(MEAN_TRACK_SECONDS - LENGTH_SPREAD, MEAN_TRACK_SECONDS + LENGTH_SPREAD, size=count)
    return [round(s * SAMPLE_RATE) for s in seconds]


def build_plan(clips: Path, tracks: int | None, minutes: float | None) -> list[dict]:
    """[{subset, split, name, clip, length}] of the root to build. The valid tracks keep their clips'
    names, which musdb's split='valid' looks for; train and test tracks cycle through the
    clips (train through the train split's), renamed where a clip is used again."""
    if (tracks is not None and tracks < 1) or (minutes is not None and minutes <= 0):
        raise UserError("--tracks and --minutes must be positive")
    clip_tracks = {split: sorted(open_musdb(str(clips), False, "train", split).tracks, key=lambda t: t.name)
                   for split in ("train", "valid")}
    if len(clip_tracks["valid"]) < min(tracks or FULL_VALID_TRACKS, FULL_VALID_TRACKS):
        raise UserError(f"{clips} holds {len(clip_tracks['valid'])} of musdb's {FULL_VALID_TRACKS} validation tracks")
    every_clip = clip_tracks["train"] + clip_tracks["valid"]
    plan = []
    for split, full, pool in (("train", FULL_TRAIN_TRACKS, clip_tracks["train"]),
                              ("valid", FULL_VALID_TRACKS, clip_tracks["valid"]),
                              ("test", FULL_TEST_TRACKS, every_clip)):
        count = min(tracks or full, full)
        for i, length in enumerate(track_lengths(split, count, minutes)):
            clip = pool[i % len(pool)]
            if split == "test":
                name = f"Full Scale {i + 1:02d} - {clip.name}"
            else:
                name = clip.name if i < len(pool) else f"{clip.name} (copy {i // len(pool) + 1})"
            plan.append({"subset": "test" if split == "test" else "train", "split": split, "name": name,
                         "clip": clip, "length": length})
    return plan


def track_folder(out: Path, entry: dict) -> Path:
    return out / entry["subset"] / entry["name"]


def is_built(out: Path, entry: dict) -> bool:
    """All five WAV files there at the planned length (headers only)."""
    try:
        return all(sf.info(str(track_folder(out, entry) / f"{f}.wav")).frames == entry["length"] for f in WAV_FILES)
    except (sf.LibsndfileError, RuntimeError):  # missing or unreadable: rebuild it
        return False


def directory_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


def check_disk(out: Path, todo: list[dict], plan: list[dict]) -> None:
    """Fail before writing anything when the WAV files still to build and the cache still
    to fill do not fit on the disk of `out`."""
    wav = sum(e["length"] for e in todo) * WAV_BYTES_PER_SAMPLE * len(WAV_FILES)
    cache = max(0, sum(e["length"] for e in plan if e["split"] != "test") * CACHE_BYTES_PER_SAMPLE
                - directory_bytes(out / "cache"))
    free = shutil.disk_usage(out).free
    if wav + cache + DISK_MARGIN > free:
        raise UserError(f"{out} needs {(wav + cache + DISK_MARGIN) / 1e9:.1f} GB free ({wav / 1e9:.1f} GB of WAV to "
                        f"write, {cache / 1e9:.1f} GB of cache, {DISK_MARGIN / 1e9:.1f} GB margin) but has "
                        f"{free / 1e9:.1f} GB: free space, or shrink it with --tracks / --minutes")


def write_tiled(path: Path, clip: np.ndarray, length: int) -> None:
    """clip (samples, 2) int16 repeated to `length` samples as a 16-bit WAV, block by block
    so a 4-minute track never sits in memory whole; atomic, so a killed build leaves no
    half file."""
    with atomic_path(path) as tmp, sf.SoundFile(str(tmp), "w", SAMPLE_RATE, 2, "PCM_16", format="WAV") as f:
        for start in range(0, length, len(clip)):
            f.write(clip[:length - start])


def to_int16(audio: np.ndarray) -> np.ndarray:
    return np.round(np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16)


def check_no_strangers(out: Path, plan: list[dict]) -> None:
    """musdb would list, and the cache take in, any other track folder under `out`: one
    left by a larger earlier build, or a real dataset's. Refuse rather than delete it."""
    planned = {(e["subset"], e["name"]) for e in plan}
    strangers = sorted(f"{d.parent.name}/{d.name}" for subset in ("train", "test") if (out / subset).is_dir()
                       for d in (out / subset).iterdir() if d.is_dir() and (subset, d.name) not in planned)
    if strangers:
        raise UserError(f"{out} holds {len(strangers)} track folder(s) this build does not plan (e.g. "
                        f"{strangers[0]}): use another --out, or remove them")


def build(out: Path, plan: list[dict]) -> dict:
    """Write the tracks of `plan` not yet complete; each clip is decoded once."""
    check_no_strangers(out, plan)
    remove_stale_parts(out)  # a killed build's temporary files; nothing else writes here
    todo = [e for e in plan if not is_built(out, e)]
    check_disk(out, todo, plan)
    started = time.perf_counter()
    decoded: dict[str, dict[str, np.ndarray]] = {}
    for entry in tqdm(todo, desc="building tracks"):
        clip = entry["clip"]
        if clip.name not in decoded:
            check_track(clip)
            stems = clip.stems  # (streams by stem id, samples, channels), one decode
            decoded[clip.name] = {f: to_int16(stems[clip.stem_id if f == "mixture" else clip.sources[f].stem_id])
                                  for f in WAV_FILES}
        for f in WAV_FILES:
            write_tiled(track_folder(out, entry) / f"{f}.wav", decoded[clip.name][f], entry["length"])
    seconds = time.perf_counter() - started
    wav_bytes = sum(directory_bytes(out / subset) for subset in ("train", "test"))
    counts = {split: sum(e["split"] == split for e in plan) for split in ("train", "valid", "test")}
    audio_hours = sum(e["length"] for e in plan) / SAMPLE_RATE / 3600
    print(f"root {out}: {counts['train']} train, {counts['valid']} valid, {counts['test']} test tracks, "
          f"{audio_hours:.2f} h of audio, {wav_bytes / 1e9:.2f} GB of WAV ({len(todo)} written in {seconds:.0f} s)",
          flush=True)
    return {"tracks": counts, "audio_hours": audio_hours, "wav_bytes": wav_bytes, "build_s": seconds,
            "build_tracks_written": len(todo)}


def full_size_cache(cache_dir: Path, clips: str, sources: Sequence[str] = SOURCES) -> StemCache:
    """A full-size cache of `sources` for loader measurements, without the WAV root: the
    train and valid tracks of build_plan (the same names and lengths), each clip decoded and
    tiled to its track's length, written through StemCache.add_track as preprocess.py
    writes it. Tracks already cached are kept, so a second call only opens it."""
    plan = [e for e in build_plan(clips_root(clips), None, None) if e["split"] != "test"]
    cache_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_parts(cache_dir)
    cache = StemCache.create_or_open(cache_dir, sources)
    todo = [e for e in plan if not cache.is_cached(e["name"])]
    needed = sum(e["length"] for e in todo) * len(sources) * 2 * 2 + DISK_MARGIN
    if needed > shutil.disk_usage(cache_dir).free:
        raise UserError(f"{cache_dir} needs {needed / 1e9:.1f} GB free for the full-size cache, has "
                        f"{shutil.disk_usage(cache_dir).free / 1e9:.1f} GB")
    for entry in tqdm(todo, desc="building the full-size cache"):
        stems = decode_stems(entry["clip"])  # 4, channels, samples
        tiled = np.tile(stems, (1, 1, -(-entry["length"] // stems.shape[-1])))[..., :entry["length"]]
        cache.add_track(entry["name"], entry["split"], tiled)
    return StemCache(cache_dir)


