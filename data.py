"""MUSDB18 access and the train/valid/test splits, decoding tracks into the stem cache,
the input statistics, the training datasets, their int16 batches (StemBatch), the
background-thread loader and the sampler. The cache's format is
cache.py's, the augmentations augment.py's, automix's beat analysis rhythm.py's."""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import sys
import threading
import weakref
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, default_collate
from tqdm import tqdm

from formats.cache import SOURCES, ScaledStems, StemCache
from training.augment import AUGMENTATIONS, Excerpt, TrackPool, augment_item, random_gain
from utils import SAMPLE_RATE, UserError, stft

# ------------------------------------------------------------------ MUSDB18

def open_musdb(root: str | None, is_wav: bool, subset: str, split: str | None = None):
    """Open MUSDB18 (or -HQ with is_wav) as a musdb.DB with at least one track.

    `root` falls back to $MUSDB_PATH, then to musdb's download of the 7-second previews.
    split is musdb's: 'train' (the 86 training tracks), 'valid' (the 14 validation
    tracks, both from subset 'train') or None (the whole subset)."""
    if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:  # before stempeg's import fails on it
        raise UserError("ffmpeg is not installed (musdb decodes MUSDB18, .stem.mp4 and WAV alike, through it); "
                        "install it, e.g. apt-get install ffmpeg")
    import musdb

    root = root or os.environ.get("MUSDB_PATH")
    if root is None:
        try:
            return musdb.DB(download=True, subsets=subset, split=split)
        except Exception as err:  # urllib, zipfile and OS errors all mean the same here
            raise UserError(
                "no --root given, MUSDB_PATH is not set and the MUSDB18 7-second previews could "
                f"not be downloaded ({type(err).__name__}); pass --root /path/to/musdb18") from err
    if not Path(root).is_dir():
        raise UserError(f"--root {root} is not a directory")
    with _tolerant_probe() as unreadable:
        db = musdb.DB(root=root, is_wav=is_wav, subsets=subset, split=split)
    for track in db.tracks:  # check_track names these instead of musdb failing on the whole root
        bad = [path for path in [track.path, *(s.path for s in track.sources.values())] if path in unreadable]
        track.unreadable = f"{bad[0]}: {unreadable[bad[0]]}" if bad else None
    if not db.tracks and split is not None and musdb.DB(root=root, is_wav=is_wav, subsets=subset).tracks:
        raise UserError(f"{Path(root) / subset} holds tracks, but none in musdb's '{split}' split"
                        + (" (musdb's 14 validation track names)" if split == "valid" else ""))
    if not db.tracks:
        layout = "track folders of WAV files" if is_wav else ".stem.mp4 files (add --is-wav for MUSDB18-HQ)"
        raise UserError(f"no MUSDB18 tracks found in {Path(root) / subset}: expected {layout}")
    return db


class _UnreadableInfo:
    """Stands in for stempeg.Info of a file ffprobe cannot open, so that musdb can list
    the other tracks; check_track reports the file."""
    audio_streams: list = []

    def samples(self, _):
        return 0

    def duration(self, _):
        return 0.0

    def rate(self, _):
        return SAMPLE_RATE


@contextlib.contextmanager
def _tolerant_probe() -> Iterator[dict[str, str]]:
    """musdb probes every file with stempeg.Info (ffprobe) while listing a root, so one
    corrupt file would fail the whole listing: record it (path -> reason) instead."""
    import stempeg

    unreadable: dict[str, str] = {}
    real = stempeg.Info

    def probe(path):
        try:
            return real(path)
        except Exception as err:  # ffmpeg.Error, KeyError, ...: the file is not readable audio
            detail = getattr(err, "stderr", None)  # ffmpeg.Error carries ffprobe's own message
            lines = (detail.decode(errors="replace") if isinstance(detail, bytes) else str(err)).strip().splitlines()
            unreadable[path] = lines[-1].replace(f"{path}: ", "") if lines else type(err).__name__
            return _UnreadableInfo()

    stempeg.Info = probe
    try:
        yield unreadable
    finally:
        stempeg.Info = real


def check_track(track) -> None:
    """A UserError naming the track and the file when it cannot be decoded as it stands:
    a file ffprobe cannot open, a WAV folder missing a file, a .stem.mp4 lacking streams."""
    if getattr(track, "unreadable", None):
        raise UserError(f"track '{track.name}': cannot read {track.unreadable}")
    if track.is_wav:  # musdb leaves a missing source WAV out of track.sources
        missing = [Path(track.path).name] if not os.path.isfile(track.path) else []
        missing += [f"{name}.wav" for name in SOURCES if name not in track.sources]
        if missing:
            raise UserError(f"track '{track.name}' has no {', '.join(missing)} (in {Path(track.path).parent})")
        import soundfile

        lengths = {}
        for path in [track.path, *(track.sources[name].path for name in SOURCES)]:
            try:  # the header only: a file cut short shows as a different length
                lengths[Path(path).name] = soundfile.info(path).frames
            except Exception as err:  # LibsndfileError, RuntimeError
                raise UserError(f"track '{track.name}': cannot read {path} "
                                f"({str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__})") from err
        if len(set(lengths.values())) > 1:
            raise UserError(f"track '{track.name}': its WAV files differ in length "
                            f"({', '.join(f'{k} {v}' for k, v in lengths.items())} samples): is one cut short?")
    else:
        streams = len(getattr(track.info, "audio_streams", []))
        if streams < 1 + len(SOURCES):
            raise UserError(f"track '{track.name}': {track.path} has {streams} audio streams, "
                            f"expected {1 + len(SOURCES)} (mixture and four stems)")


def select_tracks(tracks: list, names: Sequence[str] | None) -> list:
    """Keep the tracks named in `names` (all when None); unknown names are an error."""
    if not names:
        return tracks
    by_name = {t.name: t for t in tracks}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise UserError(f"track(s) not found: {', '.join(missing)}")
    return [by_name[n] for n in names]


def decode_stems(track) -> np.ndarray:
    """A musdb track's four sources as float32 (sources, channels, samples), SOURCES order."""
    check_track(track)
    try:
        stems = track.stems  # one decode: (mixture + sources by stem id, samples, channels)
    except Exception as err:  # ffmpeg/soundfile failures surface as many types
        raise UserError(f"cannot decode track '{track.name}': {type(err).__name__}: {err}".splitlines()[0]) from err
    order = [track.sources[name].stem_id for name in SOURCES]
    return np.ascontiguousarray(stems[order].transpose(0, 2, 1), dtype=np.float32)


def preprocess(tracks: list, split: str, cache: StemCache, progress) -> list[str]:
    """Decode and cache `tracks` into `cache` under `split`, skipping tracks already
    cached; a track that cannot be decoded is skipped with a warning. Returns the names
    of the skipped-as-broken tracks. (Here rather than in cache.py: it reads MUSDB18,
    and it writes only through StemCache.add_track, which owns the format.)"""
    broken = []
    for track in progress(tracks, desc=f"caching {split}"):
        if cache.is_cached(track.name):
            continue
        try:
            stems = decode_stems(track)
        except UserError as err:
            tqdm.write(f"warning: skipping: {err}", file=sys.stderr)  # on its own line, under the progress bar
            broken.append(track.name)
            continue
        cache.add_track(track.name, split, stems)
    return broken


def source_chunks(cache: StemCache, names: Sequence[str], progress=lambda x, **_: x,
                  desc: str = "tracks") -> Iterator[np.ndarray]:
    """The given tracks' cached sources, each track in 60-s pieces (sources, channels,
    samples) of float32, so that statistics over whole tracks need bounded memory."""
    chunk = 60 * SAMPLE_RATE
    for name in progress(names, desc=desc):
        stems = cache.stems(name)
        for start in range(0, stems.shape[-1], chunk):
            yield np.asarray(stems[:, :, start:start + chunk])


def input_statistics(cache: StemCache, names: Sequence[str],
                     progress=lambda x, **_: x) -> tuple[np.ndarray, np.ndarray]:
    """Per-bin mean and standard deviation of the mixture magnitude (both channels)
    over the whole of the given tracks, as Open-Unmix initialises its input scaler. (A
    statistic of the training data, read through StemCache like the datasets read it.)"""
    total = total_sq = 0.0
    count = 0
    for sources in source_chunks(cache, names, progress, desc="input statistics"):
        mag = stft(torch.from_numpy(sources.sum(0))).abs().double()  # channels, bins, frames
        total = total + mag.sum(dim=(0, 2))
        total_sq = total_sq + (mag ** 2).sum(dim=(0, 2))
        count += mag.shape[0] * mag.shape[2]
    if count == 0:
        raise UserError("no training audio in the cache to compute input statistics from")
    mean = total / count
    std = torch.sqrt(torch.clamp(total_sq / count - mean ** 2, min=0.0))
    std = torch.clamp(std, min=1e-4 * float(std.max()))
    return mean.float().numpy(), std.float().numpy()


# ------------------------------------------------------------------ datasets

def crop(array: np.ndarray | ScaledStems, start: int, length: int) -> np.ndarray:
    """array[..., start:start+length] as float32, read from a memmap (or the cached stems'
    view, which converts just this window), zero-padded past the end."""
    piece = np.asarray(array[..., start:start + length])
    out = np.zeros((*array.shape[:-1], length), dtype=np.float32)
    out[..., :piece.shape[-1]] = piece
    return out


class TrainChunks(Dataset):
    """Random training excerpts from the stem cache, `samples_per_track` per track per epoch.

    Item `index` is drawn from an RNG seeded by (seed, index), so an item is the same
    in any worker and after --resume; the sampler adds epoch * len(self) to the index so
    each epoch draws new excerpts.

    The dataset chooses the item's track and one start for all its sources; the
    augmentations (augment.augment_item) then move, scale and swap each source's excerpt.
    With automix the beat analysis runs here, once (augment.TrackPool.of).

    An item is what StemBatch.collate batches: the int16 codes of each source's excerpt,
    (sources, channels, samples), its scale (the track's code scale times its gain) and
    its swap. Turning them into audio is left to the training device (StemBatch.stems):
    the loader moves half the bytes of float32 audio and does no arithmetic on them."""

    def __init__(self, cache: StemCache, names: Sequence[str], seq_len: int, samples_per_track: int,
                 augmentations: Sequence[str] = AUGMENTATIONS, seed: int = 42, progress=lambda x, **_: x) -> None:
        if not names:
            raise UserError("the cache holds no training tracks: run preprocess.py first")
        self.cache, self.seq_len, self.samples_per_track, self.seed = cache, seq_len, samples_per_track, seed
        self.pool = TrackPool.of(cache, names, seq_len, augmentations, progress)

    def __len__(self) -> int:
        return len(self.pool.names) * self.samples_per_track

    def excerpts(self, index: int) -> list[Excerpt]:
        """Item `index`'s excerpts, one per cached source: all its random draws."""
        rng = np.random.default_rng([self.seed, index])
        track = self.pool.names[(index % len(self)) // self.samples_per_track]
        start = self.pool.random_start(track, rng)
        return augment_item([Excerpt(track, start) for _ in self.cache.sources], self.pool, rng)

    def read_into(self, index: int, codes: np.ndarray, scales: np.ndarray, swaps: np.ndarray) -> None:
        """Item `index` into codes (sources, channels, samples) int16, scales (sources,)
        float32 and swaps (sources,) bool: a copy of codes per source, the only work in
        proportion to the excerpt's length."""
        for k, excerpt in enumerate(self.excerpts(index)):
            stem = self.cache.stems(excerpt.track)[k, :, excerpt.start:excerpt.start + self.seq_len]
            stem.codes_into(codes[k])
            scales[k] = stem.scale * excerpt.gain  # float32, as the audio is codes times it
            swaps[k] = excerpt.swap

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        sources = len(self.cache.sources)
        codes = np.empty((sources, 2, self.seq_len), dtype=np.int16)
        scales, swaps = np.empty(sources, dtype=np.float32), np.empty(sources, dtype=bool)
        self.read_into(index, codes, scales, swaps)
        return torch.from_numpy(codes), torch.from_numpy(scales), torch.from_numpy(swaps)


@dataclass(frozen=True)
class StemBatch:
    """A batch of TrainChunks items as the loader delivers it: codes (B, sources, channels,
    samples) int16, scales (B, sources) float32 and swaps (B, sources) bool. stems() turns
    it into audio on the training device; len() is the batch size. `audio`: that audio,
    already made on the CPU by a loader for a CPU device (BackgroundLoader), else None."""
    codes: torch.Tensor
    scales: torch.Tensor
    swaps: torch.Tensor
    audio: torch.Tensor | None = None

    @staticmethod
    def collate(items: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> "StemBatch":
        """The DataLoader's collate_fn for TrainChunks items (default_collate stacks each
        part, in a worker straight into shared memory)."""
        return StemBatch(*default_collate(items))

    @staticmethod
    def empty(batch_size: int, sources: int, seq_len: int, pin: bool) -> "StemBatch":
        """A batch's worth of uninitialised buffers, in page-locked memory if `pin`."""
        return StemBatch(torch.empty((batch_size, sources, 2, seq_len), dtype=torch.int16, pin_memory=pin),
                         torch.empty((batch_size, sources), dtype=torch.float32, pin_memory=pin),
                         torch.empty((batch_size, sources), dtype=torch.bool, pin_memory=pin))

    def __len__(self) -> int:
        return self.codes.shape[0]

    def __getitem__(self, rows: slice) -> "StemBatch":
        return StemBatch(self.codes[rows], self.scales[rows], self.swaps[rows],
                         None if self.audio is None else self.audio[rows])

    def pin_memory(self) -> "StemBatch":
        """Page-locked copies (DataLoader's pin_memory=True calls this)."""
        return StemBatch(self.codes.pin_memory(), self.scales.pin_memory(), self.swaps.pin_memory())

    def stems(self, device: torch.device) -> torch.Tensor:
        """(B, sources, channels, samples) float32 audio on `device`: each source's codes
        times its scale, its channels reversed where swapped: one float32 product per
        sample, as a CPU makes it, so the audio is bit-identical on any device that
        rounds float32 multiplication as IEEE 754 does (CPUs and GPUs alike)."""
        if self.audio is not None and self.audio.device == torch.device(device):
            return self.audio
        codes = self.codes.to(device, non_blocking=True)
        scales = self.scales.to(device, non_blocking=True)
        swaps = self.swaps.to(device, non_blocking=True)
        # Each output channel reads channel [1, 0] of a swapped source, [0, 1] of the others:
        # one gather of the int16 codes, then int16 x float32 gives float32 in one pass, with
        # nothing read back to the host (a boolean mask would wait for the device).
        channels = torch.stack([swaps, ~swaps], dim=-1).long()[..., None].expand(-1, -1, -1, codes.shape[-1])
        return codes.gather(-2, channels) * scales[:, :, None, None]


class BackgroundLoader:
    """--workers 0's loader for TrainChunks: a background thread of this process draws
    each batch's items and copies their codes into a StemBatch buffer (page-locked with
    `pin`, for a GPU), up to `depth` batches ahead, while the training thread works on the
    batch before. No worker processes, no pickling, no memory allocated per batch in the
    steady state: the copies are the only work in proportion to the data, and numpy runs
    them without the GIL. With `make_audio` (for a CPU device) the thread also makes each
    batch's audio (StemBatch.audio), so that a CPU step does not wait for it.

    A buffer is reused once the batch that holds it is no longer referenced (and, on a
    GPU, the work queued there by then, its copy there included, has finished); a view of
    its tensors kept beyond the batch itself would see it refilled. Batches are those a
    DataLoader with the same sampler and batch size delivers."""

    def __init__(self, dataset: TrainChunks, sampler: Sampler[int], batch_size: int, pin: bool,
                 make_audio: bool = False, depth: int = 2) -> None:
        self.dataset, self.sampler, self.batch_size, self.depth = dataset, sampler, batch_size, depth
        self.pin, self.make_audio = pin, make_audio
        self._free: queue.SimpleQueue = queue.SimpleQueue()  # (buffer, CUDA event to wait for or None)

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.batch_size)

    def _buffer(self) -> StemBatch:
        """A free buffer, or a new one while every buffer is in use."""
        try:
            buffer, in_use = self._free.get_nowait()
        except queue.Empty:
            return StemBatch.empty(self.batch_size, len(self.dataset.cache.sources), self.dataset.seq_len, self.pin)
        if in_use is not None:
            in_use.synchronize()
        return buffer

    def _release(self, buffer: StemBatch) -> None:
        event = None
        if self.pin:  # after all the work queued on the current CUDA stream so far
            event = torch.cuda.Event()
            event.record()
        self._free.put((buffer, event))

    def _fill(self, indices: Sequence[int]) -> StemBatch:
        buffer = self._buffer()
        codes, scales, swaps = buffer.codes.numpy(), buffer.scales.numpy(), buffer.swaps.numpy()
        for row, index in enumerate(indices):
            self.dataset.read_into(index, codes[row], scales[row], swaps[row])
        batch = buffer[:len(indices)]
        if self.make_audio:
            batch = replace(batch, audio=batch.stems(torch.device("cpu")))
        weakref.finalize(batch, self._release, buffer)
        return batch

    def __iter__(self) -> Iterator[StemBatch]:
        indices = list(self.sampler)
        batches = [indices[i:i + self.batch_size] for i in range(0, len(indices), self.batch_size)]
        ready: queue.Queue = queue.Queue(maxsize=self.depth)  # batches, an exception, or None at the end
        stop = threading.Event()

        def put(entry) -> bool:
            while not stop.is_set():
                try:
                    ready.put(entry, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            try:
                for batch_indices in batches:
                    if not put(self._fill(batch_indices)):
                        return
                put(None)
            except BaseException as err:  # re-raised in the training thread
                put(err)

        thread = threading.Thread(target=produce, name="BackgroundLoader", daemon=True)
        thread.start()
        try:
            while (entry := ready.get()) is not None:
                if isinstance(entry, BaseException):
                    raise entry
                yield entry
        finally:  # also when the training loop stops early: the thread ends after at most the batch it is on
            stop.set()
            thread.join()


class VocoderChunks(Dataset):
    """Mono excerpts of the vocals and the accompaniment (drums + bass + other) of the
    given tracks, for training the mel vocoder: item `index` is one channel of one of the
    two stems of a random track, from an RNG seeded by (seed, index), so a run resumed at
    step k draws the items an uninterrupted run draws (index = step * batch + i).

    An excerpt quieter than `min_rms` is redrawn (up to `tries` times): vocals are silent
    for long stretches, and silence teaches the vocoder nothing about phase. A random
    gain from augment.GAIN_RANGE follows, so the vocoder sees the separator's range of levels.
    __len__ is `nb_items`; any index is valid. Returns (samples,) float32."""

    def __init__(self, cache: StemCache, names: Sequence[str], seq_len: int, nb_items: int, seed: int = 42,
                 min_rms: float = 1e-3, tries: int = 10) -> None:
        if not names:
            raise UserError("the cache holds no training tracks: run preprocess.py first")
        self.cache, self.names, self.seq_len, self.nb_items = cache, list(names), seq_len, nb_items
        self.seed, self.min_rms, self.tries = seed, min_rms, tries

    def __len__(self) -> int:
        return self.nb_items

    def _draw(self, rng: np.random.Generator) -> np.ndarray:
        name = self.names[rng.integers(len(self.names))]
        stems = self.cache.stems(name)  # sources, channels, samples
        start = int(rng.integers(0, max(1, stems.shape[-1] - self.seq_len + 1)))
        channel = int(rng.integers(stems.shape[1]))
        sources = slice(0, 1) if rng.random() < 0.5 else slice(1, None)  # vocals or accompaniment
        return crop(stems[sources, channel], start, self.seq_len).sum(0)

    def __getitem__(self, index: int) -> torch.Tensor:
        rng = np.random.default_rng([self.seed, index])
        for _ in range(self.tries):
            audio = self._draw(rng)
            if np.sqrt(np.mean(audio ** 2)) >= self.min_rms:
                break
        return torch.from_numpy(random_gain(audio, rng))


class EpochSampler(Sampler[int]):
    """Shuffled indices offset by epoch * n, so TrainChunks draws new excerpts each epoch
    while persistent workers keep their copy of the dataset. With several processes
    (torchrun) each takes every world-th index of the same permutation, all the same
    count, so no process waits on another's extra batch."""

    def __init__(self, n: int, seed: int, rank: int = 0, world: int = 1) -> None:
        self.n, self.seed, self.rank, self.world, self.epoch = n, seed, rank, world, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n // self.world

    def __iter__(self) -> Iterator[int]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        order = order[: len(self) * self.world][self.rank::self.world]
        return iter((self.epoch * self.n + order).tolist())
