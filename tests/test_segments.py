"""Phase methods that make their own phase (Griffin-Lim, MISI, the vocoder) stay coherent
across the segments segments.separate cuts a long track into: on a stationary input the
crossfade at every segment boundary must not dip in level, as it does (~3 dB) when two
segments with unrelated phases are summed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from separation import segments
from separation.mel_vocoder import Vocoder
from separation.phase import PHASE_METHODS, PhaseSettings
from utils import HOP, N_FFT, SAMPLE_RATE, STEMS, stft

CPU = torch.device("cpu")
WINDOW = SAMPLE_RATE // 2  # level measured over 0.5-s windows
MAX_DIP_DB = 1.0
# (method, options): few iterations keep the test fast; the overlap frames are held from the first one.
# Under constant masks the mixture phase is already consistent with every estimate, so
# griffinlim-mixinit and misi (which start from it in every segment) never dipped here;
# test_a_segment_continues_its_lead_in checks that they too continue the previous segment.
METHODS = [
    ("griffinlim", {"gl_backend": "librosa"}),
    ("griffinlim", {"gl_backend": "torch"}),
    ("griffinlim-mixinit", {}),
    ("misi", {}),
    ("vocoder", {}),
    # The Wiener filter takes the mixture's phase; windowed (Open-Unmix's way, here 100-frame
    # windows inside 256-frame segments) its gains also change at every window boundary.
    ("wiener", {}),
    ("wiener", {"wiener_softmask": False, "wiener_eps": 1e-10, "wiener_win_len": 100}),
]
IDS = ["griffinlim-librosa", "griffinlim-torch", "griffinlim-mixinit", "misi", "vocoder", "wiener",
       "wiener-openunmix"]


class ConstantMasks(torch.nn.Module):
    """A separator whose masks are constants: on a stationary mixture every stem is stationary."""

    def forward(self, mag: torch.Tensor) -> torch.Tensor:
        """(batch, C, F, T) -> (batch, stems, C, F, T)."""
        return torch.stack([0.7 * mag, 0.3 * mag], dim=1)


def _vocoder() -> Vocoder:
    """A tiny vocoder with random phase increments: its phase drifts away from the bins'
    carriers, so each segment's running sum starts somewhere else (the untrained head's
    zero increments would be coherent by construction)."""
    torch.manual_seed(0)
    vocoder = Vocoder(n_mels=32, dim=16, hidden=32, nb_blocks=2).eval()
    with torch.no_grad():
        vocoder.head.weight[vocoder.nb_bins:].normal_(0, 0.05)
        vocoder.head.bias[vocoder.nb_bins:].uniform_(-np.pi, np.pi)
    return vocoder


def _noise(seconds: float) -> np.ndarray:
    """(samples, 2) float32 stationary white noise."""
    return (0.1 * np.random.default_rng(0).standard_normal((int(seconds * SAMPLE_RATE), 2))).astype(np.float32)


def worst_dip_db(audio: np.ndarray) -> float:
    """audio (samples, channels) -> dB by which the quietest 0.5-s window's RMS falls below
    the median window's (positive: a dip)."""
    windows = audio[:audio.shape[0] // WINDOW * WINDOW].reshape(-1, WINDOW, audio.shape[1])
    rms = np.sqrt(np.mean(windows.astype(np.float64) ** 2, axis=(1, 2)))
    return float(20 * np.log10(np.median(rms) / rms.min()))


def _dips(method: str, options: dict, seconds: float, segment: int, overlap: int) -> dict[str, float]:
    mixture = _noise(seconds)
    settings = segments.SeparationSettings((method,), PhaseSettings(gl_iters=4, seed=0, **options), segment, overlap)
    out = segments.separate(ConstantMasks(), mixture, settings, CPU, vocoder=_vocoder())[method]
    assert len(segments.segment_bounds(mixture.shape[0], segment, overlap)) >= 3
    dips = {stem: worst_dip_db(out[stem]) for stem in STEMS}
    print(f"{method} {options}: worst 0.5-s dip {dips}")
    for stem in STEMS:
        assert np.abs(out[stem]).max() > 1e-3, stem  # a non-trivial output
    return dips


@pytest.mark.parametrize("method, options", METHODS, ids=IDS)
def test_no_level_dip_at_short_segment_boundaries(method, options):
    """~6-s segments crossfaded over 1.5 s, on 15 s of noise: three boundaries, quickly."""
    dips = _dips(method, options, 15.0, segment=256 * HOP, overlap=64 * HOP)
    assert max(dips.values()) < MAX_DIP_DB, dips


@pytest.mark.slow  # 150 s of audio, three 60-s segments per method
@pytest.mark.parametrize("method, options", METHODS, ids=IDS)
def test_no_level_dip_at_real_segment_boundaries(method, options):
    """The real 60-s segments and 4-s crossfades, on 150 s of noise: two boundaries."""
    dips = _dips(method, options, 150.0, segment=segments.SEGMENT_SAMPLES, overlap=segments.SEGMENT_OVERLAP)
    assert max(dips.values()) < MAX_DIP_DB, dips


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sum(a * b) / np.sqrt(np.sum(a * a) * np.sum(b * b)))


@pytest.mark.parametrize("method, options", METHODS, ids=IDS)
def test_a_segment_continues_its_lead_in(method, options):
    """Called on a later part of a signal with the method's own output over that part's
    start as lead-in, a method reproduces the lead-in there (the frames it covers hold),
    where without one it makes an unrelated phase."""
    length, skip, lead = 3 * SAMPLE_RATE, 40 * HOP, 24 * HOP
    stems = torch.from_numpy(np.random.default_rng(1).standard_normal((2, 2, length)).astype(np.float32))
    settings, vocoder = PhaseSettings(gl_iters=4, seed=0, **options), _vocoder()
    whole = PHASE_METHODS[method](stft(stems).abs(), stft(stems.sum(0)), length, settings, vocoder=vocoder)
    later = stems[..., skip:]
    inputs = (stft(later).abs(), stft(later.sum(0)), length - skip)
    lead_in = np.ascontiguousarray(whole[..., skip:skip + lead])
    held = slice(0, lead - N_FFT)  # samples no frame beyond the lead-in reaches
    continued = PHASE_METHODS[method](*inputs, settings, lead_in, vocoder)
    assert _correlation(continued[..., held], lead_in[..., held]) > 0.95
    if method in ("griffinlim", "vocoder"):  # the others start from the mixture phase, shared by both calls
        fresh = PHASE_METHODS[method](*inputs, settings, vocoder=vocoder)
        assert abs(_correlation(fresh[..., held], lead_in[..., held])) < 0.3


def test_segmented_griffinlim_is_deterministic():
    mixture = _noise(4.0)
    runs = [segments.separate(ConstantMasks(), mixture, segments.SeparationSettings(
                ("griffinlim",), PhaseSettings(gl_iters=2, gl_backend=backend), 64 * HOP, 16 * HOP), CPU)["griffinlim"]
            for backend in ("librosa", "librosa", "torch")]
    for stem in STEMS:
        assert np.array_equal(runs[0][stem], runs[1][stem])
        # later segments run the same pinned iteration in both backends; the first differs by float rounding
        np.testing.assert_allclose(runs[2][stem], runs[0][stem], rtol=0, atol=1e-3 * np.abs(runs[0][stem]).max())
