"""The beat analysis behind automix, and its file <cache>/rhythm.json, which this module
alone writes, reads and version-checks: each track's tempo and beat positions, and which
tracks have tempi compatible enough to be mixed."""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Sequence

import numpy as np

from formats.cache import ScaledStems, StemCache
from utils import SAMPLE_RATE, write_text

RHYTHM_FILE = "rhythm.json"  # in the cache directory, written by the first automix run
RHYTHM_VERSION = 1
RHYTHM_RATE = 11025  # the beat tracker reads a mono mix at this rate ...
RHYTHM_HOP = 128  # ... with onset frames 11.6 ms apart
MIN_BEATS = 4  # a track with fewer tracked beats has no usable tempo
TEMPO_TOLERANCE = 0.03  # automix partners: tempo ratio within 3% of 1, 2 or 1/2


def rhythm_mono(stems: np.ndarray | ScaledStems) -> np.ndarray:
    """(sources, channels, samples) at SAMPLE_RATE -> the mono mixture at RHYTHM_RATE,
    summed in one-minute pieces so that of a memory-mapped track only the mono mix is held."""
    import librosa

    piece = 60 * SAMPLE_RATE
    mono = np.concatenate([np.asarray(stems[:, :, start:start + piece]).sum(axis=(0, 1))
                           for start in range(0, stems.shape[-1], piece)])
    return librosa.resample(mono, orig_sr=SAMPLE_RATE, target_sr=RHYTHM_RATE)


def beat_grid(mono: np.ndarray) -> tuple[float | None, np.ndarray]:
    """mono (samples,) at RHYTHM_RATE -> (tempo in BPM, beat positions in samples at SAMPLE_RATE).

    Beat tracking (librosa.beat.beat_track on the onset envelope) rather than onset-strength
    cross-correlation, because a beat list is a per-track summary: it is computed once,
    is a few hundred integers, gives the tempo that picks partners, and aligning two tracks
    is then arithmetic on two lists in the DataLoader. Cross-correlation gives a lag but no
    tempo, and is a per-pair, per-excerpt computation: it would run for every item, on
    onset envelopes of every track held in every worker.

    The tempo is the slope of a least-squares line through the beat positions, not
    beat_track's own estimate: that one comes from a tempogram lag grid (about 2% steps
    near 120 BPM at this hop), as coarse as the tolerance it would be compared with.
    With fewer than MIN_BEATS beats (silence, no pulse) there is no tempo: (None, no beats)."""
    import librosa

    # n_fft 1024: the 93 ms window librosa's default has at 22.05 kHz
    envelope = librosa.onset.onset_strength(y=mono, sr=RHYTHM_RATE, hop_length=RHYTHM_HOP, n_fft=1024)
    _, frames = librosa.beat.beat_track(onset_envelope=envelope, sr=RHYTHM_RATE, hop_length=RHYTHM_HOP)
    beats = np.round(np.asarray(frames) * RHYTHM_HOP * SAMPLE_RATE / RHYTHM_RATE).astype(np.int64)
    if len(beats) < MIN_BEATS:
        return None, np.empty(0, dtype=np.int64)
    period = np.polyfit(np.arange(len(beats)), beats, 1)[0]  # samples per beat
    return float(60 * SAMPLE_RATE / period), beats


def track_rhythms(cache: StemCache, names: Sequence[str], progress=lambda x, **_: x) -> dict[str, dict]:
    """{name: {"length", "tempo" (BPM or None), "beats" (sample positions)}} for `names`.

    Read from <cache>/RHYTHM_FILE; tracks missing there, or whose length changed since
    (re-preprocessed), are analysed and the file rewritten atomically. A cache that cannot
    be written to still works: the analysis is then repeated on the next run."""
    path = cache.root / RHYTHM_FILE
    header = {"format_version": RHYTHM_VERSION, "rate": RHYTHM_RATE, "hop": RHYTHM_HOP, "min_beats": MIN_BEATS}
    stored: dict[str, dict] = {}
    if path.is_file():
        with contextlib.suppress(json.JSONDecodeError):
            content = json.loads(path.read_text())
            if all(content.get(key) == value for key, value in header.items()):
                stored = content.get("tracks", {})
    stale = [n for n in names if stored.get(n, {}).get("length") != cache.length(n)]
    if stale:
        for name in progress(stale, desc="beat tracking"):
            tempo, beats = beat_grid(rhythm_mono(cache.stems(name)))
            stored[name] = {"length": cache.length(name), "tempo": tempo, "beats": beats.tolist()}
        try:
            write_text(path, json.dumps({**header, "tracks": stored}))
        except OSError as err:
            print(f"warning: cannot save the beat analysis to {path} ({err.strerror}); "
                  "it is repeated on the next run", file=sys.stderr)
    return {n: stored[n] for n in names}


def tempo_compatible(tempo: float, other: float, tolerance: float = TEMPO_TOLERANCE) -> bool:
    """Tempi within `tolerance` of equal, or of double / half (a half-time partner puts a
    beat on every other beat; beat trackers also often report the other octave)."""
    octaves = np.log2(other / tempo)
    return any(abs(octaves - shift) <= np.log2(1 + tolerance) for shift in (-1, 0, 1))


def automix_partners(tempi: dict[str, float | None]) -> dict[str, list[str]]:
    """For each track, the other tracks with a tempo compatible with its own (none without a tempo)."""
    return {name: [other for other, other_tempo in tempi.items()
                   if other != name and tempo and other_tempo and tempo_compatible(tempo, other_tempo)]
            for name, tempo in tempi.items()}
