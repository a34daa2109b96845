"""Speed features that must not change results: segment-wise separation of long tracks
(segments.separate), and museval and the phase methods that are slow on a CPU in a
process pool (inference.py --workers).

The pool's results are compared bit for bit: here the main process runs one torch thread
(single_torch_thread, script_env) as the workers do, so both do the same arithmetic. With
another thread count torch splits its element-wise kernels differently, and the elements
at the split go through the scalar rather than the vectorised code: transcendental
functions (the mixture phase's angle and polar, the torch backends' rsqrt) then move by
float32 rounding (measured: 3e-8 on the mixture phase's output, 1.5e-7 on the torch
Griffin-Lim's, signals of peak ~0.5). The model's magnitudes and librosa's numpy
Griffin-Lim were measured not to depend on it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import inference
import utils
from conftest import SYNTH_TRACKS
from formats import checkpoint
from model import Separator
from pipeline_helpers import assert_one_error_line, run_script
from separation import processes, segments
from separation.mel_vocoder import Vocoder
from separation.phase import PHASE_METHODS, PhaseSettings
from separation.segments import SeparationSettings
from utils import HOP, N_FFT, SAMPLE_RATE, STEMS

CPU = torch.device("cpu")
# Small segments so that a few seconds of audio span several of them.
SEGMENT, OVERLAP = 64 * HOP, 16 * HOP


def _model(nb_layers: int) -> Separator:
    torch.manual_seed(0)
    model = Separator(hidden_size=16, nb_layers=nb_layers).eval()
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d)):  # non-trivial masks
        bn.running_mean.uniform_(-0.5, 0.5)
    return model


def _music(seconds: float, seed: int = 0) -> np.ndarray:
    """(samples, 2) float32: a few decaying tones plus noise, so that every frame differs."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    tones = sum(np.sin(2 * np.pi * f * t + p) * np.exp(-((t * 3 + p) % 1)) for f, p in
                zip(rng.uniform(100, 3000, 6), rng.uniform(0, 6, 6)))
    audio = 0.1 * tones[:, None] + 0.02 * rng.standard_normal((len(t), 2))
    return audio.astype(np.float32)


def test_segment_bounds_cover_the_track_and_weights_sum_to_one():
    for length in (1, SEGMENT - 1, SEGMENT, SEGMENT + 1, SEGMENT + OVERLAP, 5 * SEGMENT + 12345):
        bounds = segments.segment_bounds(length, SEGMENT, OVERLAP)
        assert bounds[0][0] == 0 and bounds[-1][1] == length
        assert all(start % HOP == 0 for start, _ in bounds)  # on the whole track's frame grid
        assert all(stop - start > OVERLAP for start, stop in bounds[1:])
        total = np.zeros(length)
        for start, stop in bounds:
            total[start:stop] += segments.crossfade_weights(start, stop, length, OVERLAP)
        np.testing.assert_allclose(total, 1.0, atol=1e-6)
    assert segments.segment_bounds(segments.SEGMENT_SAMPLES) == [(0, segments.SEGMENT_SAMPLES)]


@pytest.mark.parametrize("phase", [name for name, method in PHASE_METHODS.items() if not method.complex_estimate])
def test_short_track_is_separated_whole_exactly(phase):
    """A track within one segment goes through the model and the phase method exactly as
    the whole track would without segments: one STFT of the whole track, no lead-in
    (librosa.griffinlim itself for griffinlim). (--phase model, for complex-mask models:
    test_complex_mask.py.)"""
    model, mixture = _model(1), _music(1.5)
    settings = PhaseSettings(gl_iters=2, seed=1)
    vocoder = Vocoder(n_mels=32, dim=16, hidden=32, nb_blocks=2).eval()
    got = segments.separate(model, mixture, SeparationSettings((phase,), settings), CPU, vocoder)[phase]
    spec = utils.stft(torch.from_numpy(np.ascontiguousarray(mixture.T)))
    mag = segments.separate_estimates(model, spec)
    expected = PHASE_METHODS[phase](mag, spec, mixture.shape[0], settings, vocoder=vocoder)
    for i, stem in enumerate(STEMS):
        assert np.array_equal(got[stem], expected[i].T)


def test_segmented_separation_matches_whole_track():
    """With a per-frame network (no LSTM) segmenting changes nothing but the STFT edge frames
    of each segment, which the crossfade weighs down: away from the overlaps the output equals
    the whole-track separation to float precision, and in them it stays within a small error
    (a missing or doubled crossfade, a misaligned segment or a click at a seam breaks this)."""
    model, mixture = _model(0), _music(7.0)
    length = mixture.shape[0]
    timings: dict[str, float] = {}
    chunked = segments.separate(model, mixture, SeparationSettings(segment=SEGMENT, overlap=OVERLAP), CPU,
                                 timings=timings)["mixture"]
    whole = segments.separate(model, mixture, SeparationSettings(segment=length + 1, overlap=OVERLAP), CPU)["mixture"]
    bounds = segments.segment_bounds(length, SEGMENT, OVERLAP)
    assert len(bounds) >= 4 and timings["mixture"] > 0
    interior = np.ones(length, bool)  # farther than one FFT frame from any segment edge
    for start, stop in bounds:
        interior[max(0, start - N_FFT):start + N_FFT] = False
        interior[max(0, stop - N_FFT):stop + N_FFT] = False
    interior[:N_FFT] = interior[-N_FFT:] = True  # the track's own edges are the same in both
    for stem in STEMS:
        assert chunked[stem].shape == whole[stem].shape == (length, 2)
        error = np.abs(chunked[stem] - whole[stem])
        peak = np.abs(whole[stem]).max()
        assert peak > 1e-3
        assert error[interior].max() < 1e-5 * peak, stem
        assert error.max() < 0.02 * peak, stem  # seams: only the weighed-down STFT edge effect
        # no click: the sample-to-sample step at every seam stays that of the whole-track output
        steps = np.abs(np.diff(chunked[stem], axis=0)).max()
        assert steps <= np.abs(np.diff(whole[stem], axis=0)).max() * 1.02 + 1e-6


def test_segmented_lstm_separation_has_no_seams():
    """The BiLSTM sees different context per segment, so equality is not expected; the output
    must still have the right shape and stay close to the whole-track one everywhere."""
    model, mixture = _model(1), _music(5.0, seed=1)
    length = mixture.shape[0]
    chunked = segments.separate(model, mixture, SeparationSettings(segment=SEGMENT, overlap=OVERLAP), CPU)["mixture"]
    whole = segments.separate(model, mixture, SeparationSettings(segment=length + 1, overlap=OVERLAP), CPU)["mixture"]
    for stem in STEMS:
        assert chunked[stem].shape == (length, 2)
        peak = np.abs(whole[stem]).max()
        assert np.abs(chunked[stem] - whole[stem]).max() < 0.03 * peak, stem


@pytest.mark.parametrize("phase, backend", [
    ("griffinlim", "torch"),
    *(pytest.param(*case, marks=pytest.mark.slow)
      for case in [("griffinlim", "librosa"), ("griffinlim-mixinit", "torch"), ("misi", "torch")]),
])
def test_phase_jobs_in_the_pool_equal_the_serial_run(phase, backend):
    """A deferred phase method (separate_deferring) run by PhaseJob.run in a pool process
    gives separate()'s own estimates, segments, lead-ins and all; two copies of the job at
    once give the same (the random start depends on the seed alone); the phases not
    deferred are separate()'s own."""
    model, mixture = _model(1), _music(4.0)
    settings = SeparationSettings((phase, "mixture"), PhaseSettings(gl_iters=2, seed=3, gl_backend=backend,
                                                                    gl_momentum=0.99), SEGMENT, OVERLAP)
    serial = segments.separate(model, mixture, settings, CPU)
    separated, jobs = segments.separate_deferring(model, mixture, settings, CPU, [phase])
    assert list(separated) == ["mixture"] and list(jobs) == [phase] and len(jobs[phase].segments) >= 4
    with processes.Workers(2) as pool:
        for key in range(2):
            pool.submit(key, segments.PhaseJob.run, jobs[phase])
        results = pool.results()
    for estimates, seconds in results.values():
        assert seconds > 0
        for stem in STEMS:
            assert np.array_equal(estimates[stem], serial[phase][stem]), stem
            assert np.array_equal(separated["mixture"][stem], serial["mixture"][stem]), stem


def test_pooled_phases_follow_the_registry():
    cuda, settings = torch.device("cuda"), SeparationSettings(tuple(PHASE_METHODS), PhaseSettings(gl_iters=2))
    assert settings.phase.gl_backend == "librosa"
    assert processes.pooled_phases(settings, CPU, 2) == ["griffinlim", "griffinlim-mixinit", "misi"]
    assert processes.pooled_phases(settings, CPU, 1) == []  # no pool: nothing deferred
    # on a GPU only librosa's Griffin-Lim stays on the CPU; the torch backend is the fast path there
    assert processes.pooled_phases(settings, cuda, 2) == ["griffinlim"]
    on_the_device = SeparationSettings(settings.phases, PhaseSettings(gl_iters=2, gl_backend="torch"))
    assert processes.pooled_phases(on_the_device, cuda, 2) == []


def test_models_run_in_the_pool_on_a_cpu_only():
    """On the CPU every pool process separates whole tracks with its own models; on a GPU
    the model stays in the main process and the pool gets the phase jobs (pooled_phases)."""
    cuda, files = torch.device("cuda"), processes.ModelFiles({"best": "best.pt"})
    assert processes.models_in_workers(CPU, 2) and not processes.models_in_workers(CPU, 1)
    assert not processes.models_in_workers(cuda, 2)
    for workers, device, models in ((0, CPU, None), (2, CPU, files), (2, cuda, None)):
        with processes.Workers(workers, device=device, models=files) as pool:  # no job: no process starts
            assert pool.models == models and (pool.pool is None) == (workers == 0)


@pytest.mark.slow  # two inference.py subprocesses on two tracks (~40 s; ~80 s on 2 busy cores)
def test_parallel_evaluation_equals_serial(tmp_path, hq_root):
    """Serial and pooled evaluation agree to the last digit, Griffin-Lim included: on the
    CPU each pool process separates whole tracks (the model, both phase methods, museval,
    the estimates and samples written). tests/test_input.py also runs the pool with the
    model kept in the main process, as on a GPU."""
    ckpt = tmp_path / "tiny.pt"
    model = _model(1)
    checkpoint.save(ckpt, checkpoint.separator_state(model))
    names = sorted(n for n, _ in SYNTH_TRACKS["test"])[:2]
    summaries = {}
    for workers in (0, 2):
        out = tmp_path / f"out{workers}"
        result = run_script("inference.py", "--root", hq_root, "--is-wav", "--subset", "test", "--checkpoint", ckpt,
                            "--samples", "1", "--samples-dir", tmp_path / f"samples{workers}", "--out", out,
                            "--device", "cpu", "--workers", workers, "--tracks", *names,
                            "--phase", "mixture", "griffinlim", "--gl-iters", "2", "--save-estimates")
        assert result.returncode == 0, result.stderr[-3000:]
        for run in ("tiny-mixture", "tiny-griffinlim"):
            summary = json.loads((out / run / "summary.json").read_text())
            assert summary["n_tracks"] == 2 and all(s > 0 for s in summary.pop("phase_seconds").values())
            summaries[workers, run] = summary
    for run in ("tiny-mixture", "tiny-griffinlim"):
        assert summaries[0, run] == summaries[2, run]
    for folder in ("out{}/tiny-mixture/test", "out{}/tiny-griffinlim/test", "out{}/tiny-griffinlim/estimates",
                   "samples{}/tiny-griffinlim"):
        serial = sorted(p for p in (tmp_path / folder.format(0)).rglob("*") if p.is_file())
        parallel = sorted(p for p in (tmp_path / folder.format(2)).rglob("*") if p.is_file())
        assert serial and [p.name for p in serial] == [p.name for p in parallel]
        for a, b in zip(serial, parallel):
            assert a.read_bytes() == b.read_bytes(), a


def test_workers_must_not_be_negative(capsys):
    code = utils.run_cli(inference.main, ["--workers", "-1", "--checkpoint", "none.pt"])
    assert_one_error_line(capsys.readouterr().err, code, mentions="--workers")
