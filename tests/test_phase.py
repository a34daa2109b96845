"""Phase reconstruction methods (phase.py): the SDR they keep on a real MUSDB18 clip from
its true magnitudes, Griffin-Lim's convergence, the torch backend against librosa, and
the shapes every method returns."""

from __future__ import annotations

import dataclasses

import librosa
import musdb
import numpy as np
import pytest
import torch

from inference import build_parser, phase_settings
from separation import phase, wiener
from separation.evaluation import RunScores, evaluate_track, format_table
from separation.mel_vocoder import Vocoder
from separation.phase import PHASE_METHODS, PhaseSettings, resolve_gl_backend
from separation.segments import SeparationSettings
from utils import HOP, N_FFT, SAMPLE_RATE, STEMS, istft, stft

TRACK = "Music Delta - 80s Rock"
ITERS = 3  # enough for the mixture-consistent methods to show their effect, cheap on CPU


@pytest.fixture(scope="module")
def rock(real_root):
    """The real clip with every stream decoded once and cached on the musdb objects
    (musdb decodes again on each .audio access otherwise)."""
    track = next(t for t in musdb.DB(root=real_root, subsets="train") if t.name == TRACK)
    for source in track.sources.values():
        source.audio = source.audio
    track.audio = track.audio
    return track


@pytest.fixture(scope="module")
def oracle(rock):
    """True stem magnitudes (stems, C, F, T), the mixture's STFT (C, F, T), the length."""
    stems = torch.from_numpy(np.stack([rock.targets[s].audio.T for s in STEMS]).astype(np.float32))
    mixture = torch.from_numpy(np.ascontiguousarray(rock.audio.T, dtype=np.float32))
    return stft(stems).abs(), stft(mixture), mixture.shape[-1]


def _sdr(track, signals: np.ndarray) -> dict[str, float]:
    return evaluate_track(track, {stem: signals[i].T for i, stem in enumerate(STEMS)})


@pytest.fixture(scope="module")
def mixture_sdr(rock, oracle):
    return _sdr(rock, PHASE_METHODS["mixture"](*oracle))


def _check_shape(signals: np.ndarray, mag: torch.Tensor, length: int) -> None:
    assert signals.shape == (*mag.shape[:2], length)
    assert signals.dtype == np.float32 and np.isfinite(signals).all()


# ------------------------------------------------------------- real-clip SDR

@pytest.mark.slow
@pytest.mark.parametrize("method", ["misi", "griffinlim-mixinit"])
def test_consistent_methods_keep_the_mixture_phase_sdr(rock, oracle, mixture_sdr, method):
    signals = PHASE_METHODS[method](*oracle, PhaseSettings(gl_iters=ITERS))
    _check_shape(signals, oracle[0], oracle[2])
    sdr = _sdr(rock, signals)
    for stem in STEMS:
        assert sdr[stem] >= mixture_sdr[stem] - 0.1, (stem, sdr, mixture_sdr)


@pytest.mark.slow
def test_wiener_does_not_lower_the_sdr(rock, oracle, mixture_sdr):
    signals = PHASE_METHODS["wiener"](*oracle)
    _check_shape(signals, oracle[0], oracle[2])
    sdr = _sdr(rock, signals)
    for stem in STEMS:
        assert sdr[stem] >= mixture_sdr[stem], (stem, sdr, mixture_sdr)


def _spectral_convergence(signals: np.ndarray, mag: torch.Tensor) -> float:
    """|| |STFT(x)| - S || / || S ||: how far the signals are from having the target magnitudes."""
    return float(torch.linalg.norm(stft(torch.from_numpy(signals)).abs() - mag) / torch.linalg.norm(mag))


def test_griffinlim_converges_with_iterations(oracle):
    mag, mixture_spec, length = oracle
    convergence = []
    for iters in (1, 3, 9):
        signals = PHASE_METHODS["griffinlim"](mag, mixture_spec, length, PhaseSettings(gl_iters=iters))
        _check_shape(signals, mag, length)
        convergence.append(_spectral_convergence(signals, mag))
    assert convergence[0] > convergence[1] > convergence[2], convergence


def test_mixture_phase_output(oracle):
    _check_shape(PHASE_METHODS["mixture"](*oracle), oracle[0], oracle[2])


# ---------------------------------------------------- torch against librosa

@pytest.fixture(scope="module")
def excerpt(oracle):
    """A second of the clip's magnitudes: the backends compared on real spectra, cheaply."""
    frames = SAMPLE_RATE // HOP
    mag, mixture_spec, _ = oracle
    return mag[..., :frames].contiguous(), mixture_spec[..., :frames].contiguous(), (frames - 1) * HOP


@pytest.mark.parametrize("iters, tolerance", [(0, 1e-6), (8, 1e-4)])
def test_torch_griffinlim_matches_librosa(excerpt, monkeypatch, iters, tolerance):
    # One signal per batch: drawing librosa's random phase batch by batch must still
    # reproduce its single draw for the whole array.
    monkeypatch.setattr(phase, "MAX_BATCH_BINS", excerpt[0][0, 0].numel())
    reference = PHASE_METHODS["griffinlim"](*excerpt, PhaseSettings(gl_iters=iters, seed=3, gl_backend="librosa"))
    signals = PHASE_METHODS["griffinlim"](*excerpt, PhaseSettings(gl_iters=iters, seed=3, gl_backend="torch"))
    _check_shape(signals, excerpt[0], excerpt[2])
    np.testing.assert_allclose(signals, reference, rtol=0, atol=tolerance * np.abs(reference).max())


def test_griffinlim_torch_is_librosas_iteration_from_an_explicit_start():
    # librosa's init=None starts from zero phase: the same start given explicitly.
    rng = np.random.default_rng(0)
    mag = np.abs(librosa.stft(rng.standard_normal((2, SAMPLE_RATE)).astype(np.float32), n_fft=N_FFT,
                              hop_length=HOP, pad_mode="constant"))
    reference = librosa.griffinlim(mag, n_iter=6, hop_length=HOP, n_fft=N_FFT, init=None,
                                   momentum=0.5, length=SAMPLE_RATE)
    mag = torch.from_numpy(mag)
    signals = phase.griffinlim_torch(mag, torch.ones_like(mag, dtype=torch.complex64), SAMPLE_RATE, 6, 0.5)
    np.testing.assert_allclose(signals.numpy(), reference, rtol=0, atol=1e-4 * np.abs(reference).max())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("method", ["griffinlim", "griffinlim-mixinit", "misi", "wiener"])
def test_methods_run_on_the_inputs_device(excerpt, method):
    settings = PhaseSettings(gl_iters=4, gl_backend="torch")
    on_cpu = PHASE_METHODS[method](*excerpt, settings)
    on_gpu = PHASE_METHODS[method](*(x.cuda() for x in excerpt[:2]), excerpt[2], settings)
    np.testing.assert_allclose(on_gpu, on_cpu, rtol=0, atol=1e-3 * np.abs(on_cpu).max())


# ----------------------------------------------------------- synthetic checks

def _noise_input(channels: int, length: int, seed: int = 0):
    """Noise stems: magnitudes (2, channels, F, T), the STFT of their sum, the length."""
    stems = torch.from_numpy(np.random.default_rng(seed).standard_normal((2, channels, length)).astype(np.float32))
    return stft(stems).abs(), stft(stems.sum(0)), length


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("method", list(PHASE_METHODS))
def test_every_method_keeps_length_and_channels(method, channels):
    mag, mixture_spec, length = _noise_input(channels, 5 * HOP + 17)
    # "model" takes a complex estimate: here the mixture's STFT for each stem
    estimate = mixture_spec.expand_as(mag) if PHASE_METHODS[method].complex_estimate else mag
    timings: dict[str, float] = {}
    vocoder = Vocoder(n_mels=32, dim=16, hidden=32, nb_blocks=2).eval()  # untrained: only shapes are checked
    signals = PHASE_METHODS[method](estimate, mixture_spec, length, PhaseSettings(gl_iters=2), vocoder=vocoder,
                                    timings=timings)
    _check_shape(signals, mag, length)
    assert timings[method] >= 0


@pytest.mark.parametrize("method", ["griffinlim-mixinit", "misi", "wiener"])
def test_batching_does_not_change_the_result(method, monkeypatch):
    inputs = _noise_input(2, 20 * HOP)
    settings = PhaseSettings(gl_iters=3)
    whole = PHASE_METHODS[method](*inputs, settings)
    monkeypatch.setattr(phase, "MAX_BATCH_BINS", 1)
    monkeypatch.setattr(wiener, "WIENER_BATCH_FRAMES", 4)
    np.testing.assert_allclose(PHASE_METHODS[method](*inputs, settings), whole, rtol=0, atol=1e-5)


def test_settings_are_one_checked_value():
    """Every method's options travel as one frozen PhaseSettings: a misspelt option is an
    error where the value is made, not a default silently run; the value cannot change on
    the way; the settings of separation hold it whole and check their own fields."""
    with pytest.raises(TypeError, match="gl_iter"):
        PhaseSettings(gl_iter=2)
    settings = PhaseSettings(gl_iters=2, gl_backend="torch", wiener_iters=2, seed=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.gl_iters = 3
    with pytest.raises(ValueError, match="resolve_gl_backend"):
        PhaseSettings(gl_backend="auto")  # a backend is chosen for the device before any method runs
    with pytest.raises(ValueError, match="resolve_gl_backend"):
        PhaseSettings(gl_backend="cupy")
    separation = SeparationSettings(["misi", "wiener"], settings)
    assert separation.phases == ("misi", "wiener") and separation.phase is settings
    with pytest.raises(ValueError, match="unknown phase method 'wienr'"):
        SeparationSettings(("wienr",))
    with pytest.raises(ValueError, match="overlap < segment"):
        SeparationSettings(segment=4 * HOP, overlap=4 * HOP)
    # The methods read their own fields: misi its iterations, wiener its EM iterations.
    inputs = _noise_input(2, 20 * HOP)
    for method, field in (("misi", "gl_iters"), ("wiener", "wiener_iters")):
        changed = dataclasses.replace(settings, **{field: 0})
        assert not np.array_equal(PHASE_METHODS[method](*inputs, settings), PHASE_METHODS[method](*inputs, changed))
    other_fields = dataclasses.replace(settings, gl_iters=5, gl_momentum=0.5, seed=7)
    np.testing.assert_array_equal(PHASE_METHODS["wiener"](*inputs, settings),
                                  PHASE_METHODS["wiener"](*inputs, other_fields))


def test_misi_moves_the_estimates_towards_summing_to_the_mixture():
    mag, mixture_spec, length = _noise_input(2, 40 * HOP)
    mixture = istft(mixture_spec, length).numpy()
    # Zero iterations is the mixture phase.
    errors = [np.linalg.norm(PHASE_METHODS["misi"](mag, mixture_spec, length, PhaseSettings(gl_iters=n)).sum(0)
                             - mixture)
              for n in (0, 10)]
    assert errors[1] < 0.5 * errors[0], errors


@pytest.mark.parametrize("win_len", [0, 7])
def test_wiener_estimates_sum_to_the_mixture(win_len):
    mag, mixture_spec, _ = _noise_input(2, 20 * HOP)
    for iterations in (0, 2):
        estimates = wiener.wiener(mag * torch.rand_like(mag), mixture_spec, iterations, win_len=win_len)
        residual = torch.linalg.norm(estimates.sum(0) - mixture_spec) / torch.linalg.norm(mixture_spec)
        assert residual < 1e-3, (iterations, float(residual))


# ------------------------------------------------------- Wiener against norbert

def _wiener_input(frames: int = 400, bins: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Random magnitudes of three sources (3, 2, bins, frames) float32 and a random stereo
    mixture STFT (2, bins, frames) complex64, both unrelated to each other as a poor model's
    would be, with the cases eps and the regulariser exist for: every source silent
    (frames 0-29), one source silent (30-59), a digitally silent mixture (20-39)."""
    rng = np.random.default_rng(0)
    mag = (rng.random((3, 2, bins, frames)) ** 4).astype(np.float32)  # heavy-tailed: bins one source dominates
    mix = (30 * (rng.standard_normal((2, bins, frames)) + 1j * rng.standard_normal((2, bins, frames))))
    mag[..., :30] = 0
    mag[1, ..., 30:60] = 0
    mix[..., 20:40] = 0
    return mag, mix.astype(np.complex64)


def _norbert_wiener(mag: np.ndarray, mix: np.ndarray, iterations: int, softmask: bool, eps: float,
                    win_len: int = 0) -> np.ndarray:
    """norbert.wiener from PyPI in this project's layout ((stems, C, F, T), norbert's
    (T, F, C, stems) reversed), on complex128 as norbert advises, each window of win_len
    frames alone as Open-Unmix's Separator calls it (0: all frames at once)."""
    norbert = pytest.importorskip("norbert")
    frames = mix.shape[-1]
    win_len = win_len or frames
    return np.concatenate([norbert.wiener(mag[..., t:t + win_len].T, mix[..., t:t + win_len].T.astype(np.complex128),
                                          iterations, use_softmask=softmask, eps=eps).T
                           for t in range(0, frames, win_len)], axis=-1)


@pytest.mark.parametrize("eps", [1e-10, wiener.WIENER_EPS])
@pytest.mark.parametrize("iterations", [0, 1, 2])
@pytest.mark.parametrize("softmask", [True, False])
def test_wiener_matches_norbert(softmask, iterations, eps):
    mag, mix = _wiener_input()
    reference = _norbert_wiener(mag, mix, iterations, softmask, eps)
    # 400 frames are two of the covariances' frame batches.
    estimates = wiener.wiener(torch.from_numpy(mag), torch.from_numpy(mix), iterations, softmask, eps).numpy()
    np.testing.assert_allclose(estimates, reference, rtol=0, atol=1e-4 * np.abs(reference).max())


@pytest.mark.parametrize("softmask", [True, False])
def test_windowed_wiener_is_norbert_window_by_window(softmask):
    mag, mix = _wiener_input()
    reference = _norbert_wiener(mag, mix, 2, softmask, 1e-10, win_len=150)  # windows of 150, 150, 100 frames
    estimates = wiener.wiener(torch.from_numpy(mag), torch.from_numpy(mix), 2, softmask, 1e-10, win_len=150).numpy()
    peak = np.abs(reference).max()
    np.testing.assert_allclose(estimates, reference, rtol=0, atol=1e-4 * peak)
    # The windows matter: one covariance over all frames filters differently.
    whole = wiener.wiener(torch.from_numpy(mag), torch.from_numpy(mix), 2, softmask, 1e-10).numpy()
    assert np.abs(whole - reference).max() > 1e-2 * peak


def test_phase_wiener_passes_its_options():
    mag, mixture_spec, length = _noise_input(2, 20 * HOP)
    settings = PhaseSettings(wiener_iters=2, wiener_softmask=False, wiener_eps=1e-10, wiener_win_len=7)
    signals = PHASE_METHODS["wiener"](mag, mixture_spec, length, settings)
    expected = istft(wiener.wiener(mag, mixture_spec, 2, softmask=False, eps=1e-10, win_len=7), length).numpy()
    np.testing.assert_array_equal(signals, expected)
    assert np.abs(signals - PHASE_METHODS["wiener"](mag, mixture_spec, length)).max() > 1e-3 * np.abs(signals).max()


def test_wiener_without_iterations_is_its_start():
    # docs/recipe.md splits wiener's gain into its start and its EM iteration with
    # --wiener-iters 0: without the soft mask that start is the mixture phase itself, with
    # it the estimates rescaled to sum to the mixture.
    mag, mixture_spec, length = _noise_input(2, 20 * HOP)
    mag = mag * torch.tensor([0.5, 1.5])[:, None, None, None]  # estimates whose sum is not the mixture
    mixture_phase = PHASE_METHODS["mixture"](mag, mixture_spec, length)
    start = PHASE_METHODS["wiener"](mag, mixture_spec, length, PhaseSettings(wiener_iters=0, wiener_softmask=False))
    np.testing.assert_allclose(start, mixture_phase, rtol=0, atol=1e-5 * np.abs(mixture_phase).max())
    soft = PHASE_METHODS["wiener"](mag, mixture_spec, length, PhaseSettings(wiener_iters=0))
    mixture = istft(mixture_spec, length).numpy()
    np.testing.assert_allclose(soft.sum(0), mixture, rtol=0, atol=1e-4 * np.abs(mixture).max())
    assert np.abs(mixture_phase.sum(0) - mixture).max() > 0.1 * np.abs(mixture).max()


# ------------------------------------------------------------ inference CLI

def test_inference_takes_every_method_and_its_options():
    args = build_parser().parse_args(["--phase", *PHASE_METHODS, "--gl-backend", "torch", "--gl-momentum", "0.5",
                                      "--wiener-iters", "2", "--no-wiener-softmask", "--wiener-eps", "1e-10",
                                      "--wiener-win-len", "300"])
    assert args.phase == list(PHASE_METHODS) and args.gl_backend == "torch"
    assert (args.gl_momentum, args.wiener_iters, args.gl_iters) == (0.5, 2, 32)
    assert (args.wiener_softmask, args.wiener_eps, args.wiener_win_len) == (False, 1e-10, 300)
    assert phase_settings(args, torch.device("cpu")) == PhaseSettings(
        gl_iters=32, gl_momentum=0.5, gl_backend="torch", wiener_iters=2, wiener_softmask=False, wiener_eps=1e-10,
        wiener_win_len=300)
    # The filter's defaults: the soft mask, float32 eps, whole segments; and the flags' defaults are the settings'.
    defaults = build_parser().parse_args([])
    assert (defaults.wiener_softmask, defaults.wiener_eps, defaults.wiener_win_len) == (True, wiener.WIENER_EPS, 0)
    assert phase_settings(defaults, torch.device("cpu")) == PhaseSettings()


def test_table_has_a_seconds_column():
    sdr = {"a": {"vocals": 1.0, "accompaniment": 2.0}}
    table = format_table({"best-mixture": RunScores(sdr, {"a": 0.25}), "best-misi": RunScores(sdr, {"a": 3.5})})
    assert "s/track" in table
    assert table.splitlines()[-1].split() == ["median", "|", "1.00", "2.00", "0.25", "|", "1.00", "2.00", "3.50"]


def test_gl_backend_auto_is_torch_on_cuda_and_librosa_on_the_cpu(excerpt):
    assert resolve_gl_backend("auto", torch.device("cuda")) == "torch"
    assert resolve_gl_backend("auto", torch.device("cpu")) == "librosa"
    assert resolve_gl_backend("librosa", torch.device("cuda")) == "librosa"
    with pytest.raises(ValueError):
        resolve_gl_backend("cupy", torch.device("cpu"))
    # so on a GPU auto keeps Griffin-Lim off the CPU pool, and on the CPU it is librosa's own
    cuda = torch.device("cuda")
    assert not PHASE_METHODS["griffinlim"].cpu_bound(cuda, PhaseSettings(gl_backend=resolve_gl_backend("auto", cuda)))
    assert PHASE_METHODS["griffinlim"].cpu_bound(cuda, PhaseSettings(gl_backend="librosa"))
    reference = PHASE_METHODS["griffinlim"](*excerpt, PhaseSettings(gl_iters=2, seed=3, gl_backend="librosa"))
    on_the_cpu = PhaseSettings(gl_iters=2, seed=3, gl_backend=resolve_gl_backend("auto", torch.device("cpu")))
    np.testing.assert_array_equal(PHASE_METHODS["griffinlim"](*excerpt, on_the_cpu), reference)
