"""Decode the MUSDB18 training tracks once into a memory-mapped cache for train.py.

    python preprocess.py --root /path/to/musdb18            # .stem.mp4
    python preprocess.py --root /path/to/musdb18hq --is-wav # MUSDB18-HQ WAV folders
    python preprocess.py --root /path/to/musdb18 --stems 2  # vocals + accompaniment: half the size

Caches musdb's 'train' split (training) and 'valid' split (the 14 validation tracks).
The test set is never read. Re-running skips the tracks already cached. musdb reads both
layouts through ffmpeg, which must be installed."""

from __future__ import annotations

import argparse
from typing import Sequence

from tqdm import tqdm

from data import open_musdb, preprocess
from formats.cache import SOURCE_SETS, StemCache
from utils import HelpFormatter, UserError, add_debug_flag, remove_stale_parts, run_cli


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--root", default=None,
                   help="MUSDB18 root (default: $MUSDB_PATH, else musdb's download of the 7-second previews)")
    p.add_argument("--is-wav", action="store_true", help="the root is MUSDB18-HQ (WAV folders)")
    p.add_argument("--cache", default="cache", help="cache directory")
    p.add_argument("--stems", type=int, choices=sorted(SOURCE_SETS, reverse=True), default=4,
                   help="4: the four sources (vocals, drums, bass, other); 2: vocals and accompaniment (the other "
                        "three summed), half the size on disk and in memory, with remix drawing each item's whole "
                        "accompaniment from one track (chunk and remix cannot mix drums, bass and other of "
                        "different places)")
    p.add_argument("--tracks", nargs="+", default=None, help="only these tracks (names as musdb lists them)")
    add_debug_flag(p)
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    splits = {split: open_musdb(args.root, args.is_wav, "train", split) for split in ("train", "valid")}
    remove_stale_parts(args.cache)
    cache = StemCache.create_or_open(args.cache, SOURCE_SETS[args.stems])
    broken = []
    for split, db in splits.items():
        tracks = [t for t in db.tracks if t.name in args.tracks] if args.tracks else db.tracks
        broken += preprocess(tracks, split, cache, progress=tqdm)
    if args.tracks:
        unknown = set(args.tracks) - set(cache.names()) - set(broken)
        if unknown:
            raise UserError(f"track(s) not found in the training set: {', '.join(sorted(unknown))}")
    counts = {split: len(cache.names(split)) for split in ("train", "valid")}
    print(f"cache {cache.root}: {counts['train']} train and {counts['valid']} valid tracks"
          + (f"; skipped {len(broken)} unreadable: {', '.join(broken)}" if broken else ""))


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
