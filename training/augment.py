"""The training augmentations, in one registry, AUGMENTATION_REGISTRY: name -> what it does
(the description that --augment's help and the report's methodology page show) and the
function that does it. parse_augmentations reads --augment against it.

A TrainChunks item is one Excerpt per source: where it is cut (track, start) and how it is
changed (gain, left/right swap). The dataset picks the item's track and one start for all
its sources, and `augment_item` runs the enabled augmentations on those excerpts in
APPLY_ORDER: first those that place every source of the item at once (automix), then,
source by source, those that change one excerpt (remix, chunk, gain, swap). Each draws from
the item's RNG, so APPLY_ORDER is the order of the draws: changing it changes every
training item of a seed, and with them the data the documented runs were trained on."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Sequence

import numpy as np

from formats.cache import StemCache
from training.rhythm import automix_partners, track_rhythms
from utils import UserError

GAIN_RANGE = (0.25, 1.25)


@dataclass(frozen=True)
class Excerpt:
    """One source of a training item: cut from `track` at sample `start`, scaled by `gain`,
    its left and right channels exchanged if `swap`. placed: automix or remix chose where
    it is cut, so chunk leaves it there (remix and chunk together draw one start, not two)."""
    track: str
    start: int
    gain: float = 1.0
    swap: bool = False
    placed: bool = False


@dataclass(frozen=True)
class TrackPool:
    """What an item's augmentations draw from: the training tracks and their lengths, the
    excerpt length, the enabled augmentations and, with automix, each track's beat
    positions and tempo-compatible partners (rhythm.py)."""
    names: list[str]
    lengths: dict[str, int]
    seq_len: int
    enabled: frozenset[str]
    beats: dict[str, np.ndarray] | None = None
    partners: dict[str, list[str]] | None = None

    @classmethod
    def of(cls, cache: StemCache, names: Sequence[str], seq_len: int, augmentations: Sequence[str],
           progress=lambda x, **_: x) -> TrackPool:
        """The pool of `names` in `cache`. With automix the beat analysis runs here, once
        (track_rhythms): DataLoader workers only read its result."""
        names, beats, partners = list(names), None, None
        if "automix" in augmentations:
            rhythms = track_rhythms(cache, names, progress)
            beats = {name: np.asarray(r["beats"], dtype=np.int64) for name, r in rhythms.items()}
            partners = automix_partners({name: r["tempo"] for name, r in rhythms.items()})
        return cls(names, {name: cache.length(name) for name in names}, seq_len, frozenset(augmentations),
                   beats, partners)

    def random_start(self, name: str, rng: np.random.Generator) -> int:
        """A uniformly random excerpt start in track `name` (0 when the track is shorter)."""
        return int(rng.integers(0, max(1, self.lengths[name] - self.seq_len + 1)))


def draw_gain(rng: np.random.Generator) -> float:
    """One gain drawn uniformly from GAIN_RANGE."""
    return float(rng.uniform(*GAIN_RANGE))


def draw_swap(rng: np.random.Generator) -> bool:
    """Whether to swap left and right: with probability 1/2."""
    return bool(rng.random() < 0.5)


def random_gain(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Scale (channels, samples) by one gain from draw_gain."""
    return audio * np.float32(draw_gain(rng))


# ------------------------------------------------------- the augmentations

def gain(excerpt: Excerpt, pool: TrackPool, rng: np.random.Generator) -> Excerpt:
    """A random gain for this source."""
    return replace(excerpt, gain=draw_gain(rng))


def swap(excerpt: Excerpt, pool: TrackPool, rng: np.random.Generator) -> Excerpt:
    """Left and right exchanged in this source, half the time."""
    return replace(excerpt, swap=draw_swap(rng))


def chunk(excerpt: Excerpt, pool: TrackPool, rng: np.random.Generator) -> Excerpt:
    """This source from a random position of its track, independent of the other sources'."""
    if excerpt.placed:
        return excerpt
    return replace(excerpt, start=pool.random_start(excerpt.track, rng), placed=True)


def remix(excerpt: Excerpt, pool: TrackPool, rng: np.random.Generator) -> Excerpt:
    """This source from a random training track (the item's own included), at a random start."""
    if excerpt.placed:
        return excerpt
    track = pool.names[rng.integers(len(pool.names))]
    return replace(excerpt, track=track, start=pool.random_start(track, rng), placed=True)


def automix(excerpts: list[Excerpt], pool: TrackPool, rng: np.random.Generator) -> list[Excerpt]:
    """The vocals stay where the dataset cut them; the accompaniment stems come from a track
    of compatible tempo (rhythm.automix_partners), placed so that a partner beat falls on
    the vocals track's beat nearest the excerpt's centre, where drift is least.

    It takes over remix's and chunk's choices: with remix each accompaniment stem has its
    own partner, with chunk its own beat-aligned position, otherwise the three come from one
    partner at one position. A track without beats or without a compatible partner gets
    random partners at random positions, as remix does."""
    vocals = excerpts[0]
    beats, partners, anchor_offset = pool.beats[vocals.track], pool.partners[vocals.track], None
    if partners:
        anchor_offset = int(beats[np.argmin(np.abs(beats - (vocals.start + pool.seq_len // 2)))] - vocals.start)
    candidates = partners or [name for name in pool.names if name != vocals.track] or [vocals.track]
    placed = [replace(vocals, placed=True)]
    partner = start = None
    for excerpt in excerpts[1:]:
        if partner is None or "remix" in pool.enabled:
            partner, start = candidates[rng.integers(len(candidates))], None
        if start is None or "chunk" in pool.enabled:
            start = (pool.random_start(partner, rng) if anchor_offset is None
                     else _beat_aligned_start(pool, partner, anchor_offset, rng))
        placed.append(replace(excerpt, track=partner, start=start, placed=True))
    return placed


def _beat_aligned_start(pool: TrackPool, name: str, anchor_offset: int, rng: np.random.Generator) -> int:
    """A start in `name` that puts one of its beats `anchor_offset` samples into the
    excerpt, preferring excerpts that end inside the track; random if none can."""
    starts = pool.beats[name] - anchor_offset
    length = pool.lengths[name]
    usable = starts[(starts >= 0) & (starts <= length - pool.seq_len)]
    if not len(usable):
        usable = starts[(starts >= 0) & (starts < length)]
    return int(usable[rng.integers(len(usable))]) if len(usable) else pool.random_start(name, rng)


# ---------------------------------------------------------- the registry

@dataclass(frozen=True)
class Augmentation:
    """An --augment name's `description` (what it does to a training item) and `apply`,
    which does it. per_item: apply(excerpts, pool, rng) -> excerpts places every source of
    the item; otherwise apply(excerpt, pool, rng) -> excerpt changes one source's excerpt.
    opt_in: only when named, not part of 'all'."""
    description: str
    apply: Callable
    per_item: bool = False
    opt_in: bool = False


# In the order --augment's help and the report list them.
AUGMENTATION_REGISTRY: dict[str, Augmentation] = {
    "gain": Augmentation(f"random gain {GAIN_RANGE[0]:g}–{GAIN_RANGE[1]:g} per source", gain),
    "swap": Augmentation("random left/right swap per source", swap),
    "chunk": Augmentation("sources from independent positions of the track", chunk),
    "remix": Augmentation("sources drawn from different tracks", remix),
    "automix": Augmentation("accompaniment from a track of compatible tempo, placed on the vocals track's beats",
                            automix, per_item=True, opt_in=True),
}
# The order in which they run, and so draw from the item's RNG (see the module docstring).
APPLY_ORDER = ("automix", "remix", "chunk", "gain", "swap")
# What --augment all means.
AUGMENTATIONS = tuple(name for name, augmentation in AUGMENTATION_REGISTRY.items() if not augmentation.opt_in)


def augment_item(excerpts: list[Excerpt], pool: TrackPool, rng: np.random.Generator) -> list[Excerpt]:
    """The item's excerpts (one per source, SOURCES order) after the pool's enabled
    augmentations, in APPLY_ORDER: those per item on all the excerpts, then those per
    source on each excerpt in turn."""
    enabled = [AUGMENTATION_REGISTRY[name] for name in APPLY_ORDER if name in pool.enabled]
    for augmentation in enabled:
        if augmentation.per_item:
            excerpts = augmentation.apply(excerpts, pool, rng)
    per_source = [augmentation for augmentation in enabled if not augmentation.per_item]
    out = []
    for excerpt in excerpts:
        for augmentation in per_source:
            excerpt = augmentation.apply(excerpt, pool, rng)
        out.append(excerpt)
    return out


def parse_augmentations(spec: str) -> tuple[str, ...]:
    """'all' (AUGMENTATIONS), 'none' or a comma list of AUGMENTATION_REGISTRY's names."""
    if spec == "all":
        return AUGMENTATIONS
    if spec == "none":
        return ()
    names = tuple(s.strip() for s in spec.split(",") if s.strip())
    unknown = [n for n in names if n not in AUGMENTATION_REGISTRY]
    if unknown:
        raise UserError(f"unknown augmentation(s) {', '.join(unknown)}; "
                        f"choose from {', '.join(AUGMENTATION_REGISTRY)}, all, none")
    return names


def augment_help() -> str:
    """train.py's --augment help: every name and what it does."""
    described = "; ".join(f"{name}: {a.description}" for name, a in AUGMENTATION_REGISTRY.items())
    opt_in = [name for name, a in AUGMENTATION_REGISTRY.items() if a.opt_in]
    return (f"'all' ({','.join(AUGMENTATIONS)}), 'none' or a comma list of {','.join(AUGMENTATION_REGISTRY)} "
            f"({described}; {', '.join(opt_in)} only with --data stems)")
