"""Complex masks (`train.py --model bsrnn --mask complex`): the parameter budget, the model
on the complex STFT, the complex losses, `inference.py --phase model` (whole, segmented,
deferred, --input), checkpoints that record the mask kind, the report's labels, and the
flags that do not combine with it."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import soundfile as sf
import torch
from test_speed import OVERLAP, SEGMENT, _music

import experiments
import inference
import train
import utils
from formats import checkpoint, experiment_table, summary
from formats.cache import StemCache, mixture_and_targets
from model import BSRNN_SIZES, BandSplitRNN, build_model, count_parameters, takes_complex
from pipeline_helpers import TINY_TRAIN, assert_one_error_line, run_in_process, run_script
from reporting import text as report_text
from separation import segments
from separation.phase import PHASE_METHODS, PhaseSettings, default_phases
from separation.segments import SeparationSettings
from training import loop, settings
from training.losses import DEFAULT_LOSSES, LOSSES, SDR_FLOOR, SDR_WEIGHT, Targets, complex_and_sdr, complex_mse
from training.precision import resolve_precision
from utils import HOP, N_FFT, SAMPLE_RATE, STEMS, istft, stft

CPU = torch.device("cpu")
TINY = {"feature_size": 8, "nb_layers": 1}


def tiny_complex(nb_layers: int = 1, seed: int = 0) -> BandSplitRNN:
    torch.manual_seed(seed)
    return BandSplitRNN(feature_size=8, nb_layers=nb_layers, mask="complex").eval()


def constant_masks(masks: tuple[complex, complex]) -> BandSplitRNN:
    """A tiny complex-mask model whose heads output the constant masks[i] for stem i, in
    every bin and frame: zero weights, and a bias whose GLU gate is 1 (sigmoid(30) rounds
    to 1 in float32) on the value (real part, imaginary part)."""
    model = tiny_complex()
    with torch.no_grad():
        for heads, mask in zip(model.mask_heads, masks):
            for head, width in zip(heads, model.band_widths):
                out = head[3]
                out.weight.zero_()
                value = torch.tensor([mask.real, mask.imag]).repeat_interleave(width).repeat(model.nb_channels)
                out.bias.copy_(torch.cat([value, torch.full_like(value, 30.0)]))
    return model


def mixture_spec(seconds: float = 1.0, seed: int = 0) -> torch.Tensor:
    """(2, 2049, frames) complex: the STFT of stereo noise."""
    audio = np.random.default_rng(seed).standard_normal((2, int(seconds * SAMPLE_RATE))).astype(np.float32)
    return stft(torch.from_numpy(0.1 * audio))


# -------------------------------------------------------------------- model

def test_complex_default_is_under_ten_million_parameters():
    config = settings.new_model_config("bsrnn", None, None, True, True, None, mask="complex")
    model = build_model(config)
    assert (model.feature_size, model.nb_layers) == BSRNN_SIZES["complex"]
    assert count_parameters(model) < 10_000_000
    assert count_parameters(model) > 2 * count_parameters(BandSplitRNN())  # it spends the budget


@pytest.mark.parametrize("run", list(experiments.EXPERIMENT_SETS["complex"]))
def test_every_size_of_the_complex_set_is_under_ten_million_parameters(run):
    flags = settings.build_parser().parse_args(experiments.EXPERIMENT_SETS["complex"][run])
    model = build_model(settings.new_model_config(flags.model, flags.hidden_size, flags.nb_layers, True, True, None,
                                                  flags.mask))
    print(f"{run}: {count_parameters(model):,} parameters")
    assert count_parameters(model) < 10_000_000
    assert takes_complex(model) == ("complex masks" in run)


def test_the_set_compares_both_masks_and_umx():
    runs = experiments.EXPERIMENT_SETS["complex"]
    masks = [settings.build_parser().parse_args(flags).mask for flags in runs.values()]
    assert masks.count("complex") >= 2 and "umx (default)" in runs and ["--model", "bsrnn"] in runs.values()


@pytest.mark.parametrize("training", [True, False])
def test_forward_maps_the_complex_stft_to_complex_estimates(training):
    model = tiny_complex().train(training)
    spec = torch.stack([mixture_spec(0.3, seed) for seed in range(3)])  # 3, 2, 2049, frames
    with torch.no_grad():
        estimate = model(spec)
    assert estimate.dtype == torch.complex64 and estimate.shape == (3, len(STEMS), *spec.shape[1:])
    assert torch.isfinite(torch.view_as_real(estimate)).all() and estimate.abs().max() > 0


def test_bf16_autocast_still_gives_complex64():
    """Under --precision bf16 the masks' product with the mixture runs in float32."""
    model, spec = tiny_complex(), mixture_spec(0.3)[None]
    cpu = torch.device("cpu")
    exact = loop.estimate_stems(model, spec, resolve_precision("fp32", cpu))
    rounded = loop.estimate_stems(model, spec, resolve_precision("bf16", cpu))
    assert rounded.dtype == torch.complex64
    assert (rounded - exact).abs().max() < 0.05 * exact.abs().max()


def test_a_unit_mask_is_the_identity_and_a_complex_one_turns_the_phase():
    spec = mixture_spec()[None]
    with torch.no_grad():
        identity = constant_masks((1 + 0j, 0j))(spec)
        turned = constant_masks((0.3 + 0.4j, 0.7 - 0.4j))(spec)
    torch.testing.assert_close(identity[:, 0], spec, rtol=0, atol=0)
    assert identity[:, 1].abs().max() == 0
    torch.testing.assert_close(turned[:, 0], (0.3 + 0.4j) * spec, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(turned.sum(1), spec, rtol=1e-5, atol=1e-5)  # the two masks sum to 1


def test_unit_mask_separates_the_mixture_segment_by_segment():
    """The 1 + 0j mask through separate(): --phase model gives the mixture back, also over
    several segments and their crossfades; its magnitude under the mixture phase too."""
    model, mixture = constant_masks((1 + 0j, 0j)), _music(4.0)
    out = segments.separate(model, mixture, SeparationSettings(("model", "mixture"), segment=SEGMENT, overlap=OVERLAP),
                            CPU)
    assert len(segments.segment_bounds(len(mixture), SEGMENT, OVERLAP)) >= 3
    for phase in ("model", "mixture"):
        np.testing.assert_allclose(out[phase]["vocals"], mixture, rtol=0, atol=1e-5)
        np.testing.assert_allclose(out[phase]["accompaniment"], 0, rtol=0, atol=1e-6)


def test_config_round_trip_and_mask_in_the_config():
    model = tiny_complex()
    clone = build_model(model.config)
    assert clone.config == model.config and clone.config["mask"] == "complex" and takes_complex(clone)
    clone.load_state_dict(model.state_dict())
    spec = mixture_spec(0.3)[None]
    with torch.no_grad():
        torch.testing.assert_close(clone.eval()(spec), model(spec), rtol=0, atol=0)


def test_checkpoints_without_a_mask_load_as_magnitude_masks(tmp_path):
    """bsrnn checkpoints written before --mask have no "mask" in their config."""
    torch.manual_seed(0)
    model = BandSplitRNN(**TINY).eval()
    old = {k: v for k, v in model.config.items() if k != "mask"}
    checkpoint.save(tmp_path / "old.pt", {**checkpoint.separator_state(model), "model_config": old})
    loaded, _ = checkpoint.load_separator(tmp_path / "old.pt")
    assert loaded.mask == "magnitude" and not takes_complex(loaded)
    mag = mixture_spec(0.3).abs()[None]
    with torch.no_grad():
        torch.testing.assert_close(loaded(mag), model(mag), rtol=0, atol=0)


def test_model_refuses_an_unknown_mask():
    with pytest.raises(ValueError, match="unknown mask"):
        BandSplitRNN(**TINY, mask="polar")


# ------------------------------------------------------------------- losses

def batch(seed: int = 0) -> tuple[torch.Tensor, Targets]:
    """(the complex mixture STFT, Targets) of two random stereo stems, as training.loop.batch_targets makes them."""
    stems = torch.randn(2, 4, 2, 4 * HOP, generator=torch.Generator().manual_seed(seed)) * 0.1
    return loop.batch_targets(stems, CPU, complex_input=True)


def test_batch_targets_give_a_complex_model_the_stft():
    mixture, targets = batch()
    assert mixture.is_complex()
    torch.testing.assert_close(targets.spectrograms, stft(targets.audio), rtol=0, atol=0)
    torch.testing.assert_close(targets.spectrograms.sum(1), mixture, rtol=1e-5, atol=1e-4)


def test_complex_mse_is_the_mse_of_real_and_imaginary_parts():
    mixture, targets = batch()
    estimate = 0.5 * mixture[:, None].expand(-1, 2, -1, -1, -1)
    error = estimate - targets.spectrograms
    expected = (error.real.pow(2) + error.imag.pow(2)).mean() / 2
    torch.testing.assert_close(complex_mse(estimate, targets), expected, rtol=1e-5, atol=0)
    assert complex_mse(targets.spectrograms, targets) == 0


def test_complex_and_sdr_adds_the_negative_sdr_of_the_estimates_own_waveforms():
    mixture, targets = batch(1)
    estimate = (0.5 + 0.5j) * mixture[:, None].expand(-1, 2, -1, -1, -1)
    audio = istft(estimate, targets.audio.shape[-1]).double()
    truth = targets.audio.double()
    floor = SDR_FLOOR * truth.sum(1, keepdim=True).pow(2).sum(-1)
    sdr = 10 * torch.log10((truth.pow(2).sum(-1) + floor) / ((truth - audio).pow(2).sum(-1) + floor))
    expected = complex_mse(estimate, targets).double() - SDR_WEIGHT * sdr.mean()
    torch.testing.assert_close(complex_and_sdr(estimate, targets).double(), expected, rtol=1e-4, atol=1e-4)


def test_each_mask_has_a_default_loss_of_its_kind():
    assert {mask: LOSSES[loss].mask for mask, loss in DEFAULT_LOSSES.items()} == {"magnitude": "magnitude",
                                                                                 "complex": "complex"}
    assert settings.build_parser().parse_args([]).loss is None  # resolved by the mask in settings.resolve_settings


# ---------------------------------------------------------------- separation

def test_phase_model_is_the_istft_of_the_estimate_and_the_others_take_its_magnitude():
    model, mixture = tiny_complex(), _music(1.5)
    got = segments.separate(model, mixture, SeparationSettings(("model", "mixture", "wiener")), CPU)
    spec = stft(torch.from_numpy(np.ascontiguousarray(mixture.T)))
    estimate = segments.separate_estimates(model, spec)
    assert estimate.is_complex()
    expected = {"model": istft(estimate, len(mixture)).numpy(),
                "mixture": PHASE_METHODS["mixture"](estimate.abs(), spec, len(mixture)),
                "wiener": PHASE_METHODS["wiener"](estimate.abs(), spec, len(mixture))}
    for phase, signals in expected.items():
        for i, stem in enumerate(STEMS):
            assert np.array_equal(got[phase][stem], signals[i].T), (phase, stem)
    assert not np.allclose(got["model"]["vocals"], got["mixture"]["vocals"], atol=1e-4)


def _segmented_and_whole(nb_layers: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """--phase model on 7 s of music, (stems, samples, channels) in SEGMENT-long segments
    and whole, and which samples lie farther than one FFT frame from any segment edge."""
    model, mixture = tiny_complex(nb_layers), _music(7.0)
    length = len(mixture)
    chunked = segments.separate(model, mixture, SeparationSettings(("model",), segment=SEGMENT, overlap=OVERLAP),
                                CPU)["model"]
    whole = segments.separate(model, mixture, SeparationSettings(("model",), segment=length + 1, overlap=OVERLAP),
                              CPU)["model"]
    assert len(segments.segment_bounds(length, SEGMENT, OVERLAP)) >= 4
    interior = np.ones(length, bool)
    for start, stop in segments.segment_bounds(length, SEGMENT, OVERLAP):
        interior[max(0, start - N_FFT):start + N_FFT] = False
        interior[max(0, stop - N_FFT):stop + N_FFT] = False
    interior[:N_FFT] = interior[-N_FFT:] = True  # the signal's own edges are the same in both
    return np.stack([chunked[stem] for stem in STEMS]), np.stack([whole[stem] for stem in STEMS]), interior


# At the joins, the edge frames of each segment's own STFT (zero-padded where the whole
# signal's are not) get other masks, weighed down by the crossfade: measured 2.5% of the
# output's peak with no LSTM pair and 1.8% with one (untrained models on test_speed's music).
MAX_SEAM_ERROR = 0.04


def test_segmented_phase_model_matches_the_whole_signal():
    """With no LSTM pairs (a per-frame network) segmenting changes only each segment's STFT
    edge frames: away from the joins the output is the whole-signal one to float
    precision, at them within MAX_SEAM_ERROR of its peak, with no click."""
    chunked, whole, interior = _segmented_and_whole(nb_layers=0)
    error, peak = np.abs(chunked - whole), np.abs(whole).max()
    assert peak > 1e-3
    assert error[:, interior].max() < 1e-5 * peak
    assert error.max() < MAX_SEAM_ERROR * peak
    # no click: the largest sample-to-sample step stays that of the whole-signal output
    assert np.abs(np.diff(chunked, axis=1)).max() <= np.abs(np.diff(whole, axis=1)).max() * 1.02 + 1e-6


def test_segmented_phase_model_with_lstms_stays_close():
    """The LSTMs see other context in each segment: close to the whole-signal output, not equal."""
    chunked, whole, _ = _segmented_and_whole(nb_layers=1)
    assert np.abs(chunked - whole).max() < MAX_SEAM_ERROR * np.abs(whole).max()


def test_a_deferred_phase_job_takes_the_magnitude_of_complex_estimates():
    model, mixture = tiny_complex(), _music(4.0)
    separation = SeparationSettings(("griffinlim", "model"), PhaseSettings(gl_iters=2, gl_backend="torch", seed=1),
                                    SEGMENT, OVERLAP)
    serial = segments.separate(model, mixture, separation, CPU)
    separated, jobs = segments.separate_deferring(model, mixture, separation, CPU, ["griffinlim", "model"])
    assert not separated
    for phase in ("griffinlim", "model"):
        job = jobs[phase]
        assert all(estimate.is_complex() for _, _, estimate in job.segments)
        estimates, seconds = job.run()
        for stem in STEMS:
            assert np.array_equal(estimates[stem], serial[phase][stem]), (phase, stem)


def test_phase_model_needs_complex_masks():
    torch.manual_seed(0)
    magnitude = BandSplitRNN(**TINY).eval()
    with pytest.raises(utils.UserError, match="--phase model needs a model with complex masks"):
        segments.separate(magnitude, _music(0.5), SeparationSettings(("mixture", "model")), CPU)
    assert [p for p, m in PHASE_METHODS.items() if not m.applies_to(False)] == ["model"]
    assert all(m.applies_to(True) for m in PHASE_METHODS.values())


def test_default_phases_follow_the_mask():
    assert default_phases(True, scoring=True) == default_phases(True, scoring=False) == ["model"]
    assert default_phases(False, scoring=True) == ["mixture"] and default_phases(False, scoring=False) == ["wiener"]
    assert experiments.run_phases(None, True) == ["model"] and experiments.run_phases(None, False) == ["mixture"]
    assert experiments.run_phases(["model", "mixture", "wiener"], False) == ["mixture", "wiener"]
    assert experiments.run_phases(["model"], False) == ["mixture"]
    assert experiments.run_phases(["wiener", "model"], True) == ["wiener", "model"]


# ------------------------------------------------------------ command lines

@pytest.mark.parametrize("flags, mentions", [
    (["--mask", "complex"], "--model bsrnn"),  # umx
    (["--model", "bsrnn", "--mask", "complex", "--loss", "mse"], "--loss mse"),
    (["--model", "bsrnn", "--loss", "complex"], "--loss complex"),
])
def test_flags_that_do_not_combine_with_complex_masks(flags, mentions, tmp_path, hq_cache, capsys):
    code, err = run_in_process(train.main, ["--cache", hq_cache, "--checkpoint-dir", tmp_path, *TINY_TRAIN,
                                            "--epochs", "1", *flags], capsys)
    assert_one_error_line(err, code, mentions=mentions)
    assert not list(tmp_path.iterdir())


def test_phase_model_on_a_magnitude_checkpoint_is_one_error_line(tmp_path, untrained_checkpoint, capsys):
    audio = tmp_path / "song.wav"
    sf.write(audio, _music(0.5), SAMPLE_RATE)
    for argv in (["--root", tmp_path / "no_musdb", "--subset", "train", "--split", "valid"],
                 ["--input", audio, "--out", tmp_path / "out"]):
        code, err = run_in_process(inference.main, [*argv, "--checkpoint", untrained_checkpoint, "--phase", "model",
                                                    "--device", "cpu", "--workers", "0"], capsys)
        assert_one_error_line(err, code, mentions="--phase model needs a model with complex masks")
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def complex_run(tmp_path_factory, hq_cache):
    """One epoch of --model bsrnn --mask complex at the tiny budget."""
    out = tmp_path_factory.mktemp("complex_run")
    train.main(["--cache", str(hq_cache), "--checkpoint-dir", str(out), "--model", "bsrnn", "--mask", "complex",
                *TINY_TRAIN, "--epochs", "1", "--seed", "3"])
    return out


def test_training_records_the_mask_and_the_loss(complex_run):
    state = checkpoint.load(complex_run / "last.pt")
    assert state["model_config"]["mask"] == "complex"
    assert state["train_args"]["mask"] == "complex" and state["train_args"]["loss"] == DEFAULT_LOSSES["complex"]
    row = state["history"][0]
    assert all(math.isfinite(row[key]) for key in ("train_loss", "valid_loss", "valid_sdr_vocals"))
    model, _ = checkpoint.load_separator(complex_run / "best.pt")
    assert takes_complex(model) and model.feature_size == int(TINY_TRAIN[1])


def test_validation_sdr_is_that_of_the_models_own_estimate(complex_run, hq_cache):
    """training.validation.validate scores a complex-mask model's ISTFT, what --phase model outputs."""
    model, state = checkpoint.load_separator(complex_run / "last.pt")
    cache = StemCache(hq_cache)
    sdrs = []
    for name in cache.names("valid"):  # 4-s tracks: one validation chunk each
        audio = mixture_and_targets(torch.from_numpy(np.array(cache.stems(name)))[None])
        with torch.no_grad():
            waveforms = istft(model(stft(audio[:, 0])), audio.shape[-1])
        truth = audio[:, 1:].double()
        sdrs.append((10 * torch.log10(truth.pow(2).sum((0, 2, 3)) / (truth - waveforms).pow(2).sum((0, 2, 3)))).tolist())
    expected = np.median(np.array(sdrs), axis=0)
    row = state["history"][-1]
    np.testing.assert_allclose([row[f"valid_sdr_{stem}"] for stem in STEMS], expected, rtol=0, atol=1e-3)


@pytest.mark.slow
def test_inference_scores_phase_model_and_mixture(complex_run, hq_root, tmp_path, capsys):
    code, err = run_in_process(inference.main, [
        "--root", hq_root, "--is-wav", "--subset", "train", "--split", "valid", "--checkpoint",
        complex_run / "last.pt", "--phase", "model", "mixture", "--out", tmp_path, "--samples", "0",
        "--device", "cpu", "--workers", "0"], capsys)
    assert code == 0, err
    scores = {phase: summary.read(tmp_path / f"last-{phase}" / summary.FILE_NAME) for phase in ("model", "mixture")}
    for score in scores.values():
        assert score.split == "valid" and len(score.tracks) == 2
        assert all(math.isfinite(score.median_sdr[stem]) for stem in STEMS)
    assert scores["model"].median_sdr != scores["mixture"].median_sdr


def test_input_defaults_to_the_models_own_estimate(complex_run, tmp_path, capsys):
    audio = tmp_path / "song.wav"
    mixture = _music(1.0)
    sf.write(audio, mixture, SAMPLE_RATE, subtype="FLOAT")
    code, err = run_in_process(inference.main, ["--input", audio, "--checkpoint", complex_run / "last.pt",
                                                "--out", tmp_path / "out", "--device", "cpu", "--workers", "0"], capsys)
    assert code == 0, err
    model, _ = checkpoint.load_separator(complex_run / "last.pt")
    expected = segments.separate(model, mixture, SeparationSettings(("model",)), CPU)["model"]
    for stem in STEMS:
        written, rate = sf.read(tmp_path / "out" / "song" / f"{stem}.wav", dtype="float32")
        assert rate == SAMPLE_RATE and written.shape == mixture.shape
        np.testing.assert_allclose(written, expected[stem], rtol=0, atol=2 ** -15 + 1e-6)  # 16-bit output


def test_resuming_with_the_other_mask_is_refused(complex_run, hq_cache, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes((complex_run / "last.pt").read_bytes())
    code, err = run_in_process(train.main, ["--cache", hq_cache, "--checkpoint-dir", run, "--model", "bsrnn",
                                            *TINY_TRAIN, "--epochs", "2", "--resume"], capsys)
    assert_one_error_line(err, code, mentions="--mask complex")


def test_report_names_complex_masks(complex_run):
    config = checkpoint.load(complex_run / "best.pt")["model_config"]
    assert report_text.architecture(config) == f"band-split RNN ({config['nb_layers']} time/band LSTM pairs, " \
                                               "complex masks)"
    assert "complex ratio masks" in report_text.model_lines(config, SAMPLE_RATE, N_FFT)[1]


def test_experiment_rows_scored_by_different_phases_say_which(tmp_path):
    rows = [{"name": "bsrnn, magnitude masks", "phase": "mixture", "vocals": 1.0, "accompaniment": 2.0, "params": {}},
            {"name": "bsrnn, complex masks", "phase": "model", "vocals": 3.0, "accompaniment": 4.0, "params": {}}]
    mixed = experiment_table.Experiment("complex", rows)
    assert [row[0] for row in report_text.experiment_table(mixed)[1]] == [
        f"bsrnn, magnitude masks · {PHASE_METHODS['mixture'].label}",
        f"bsrnn, complex masks · {PHASE_METHODS['model'].label}"]
    one_phase = experiment_table.Experiment("models", [{**rows[0], "phase": None}])  # a table from before "phase"
    assert report_text.experiment_table(one_phase)[1][0][0] == "bsrnn, magnitude masks"


@pytest.mark.slow
def test_throughput_bench_takes_complex_masks(hq_cache):
    result = run_script("-m", "bench.train_throughput", "--cache", hq_cache, "--model", "bsrnn", "--mask", "complex",
                        "--hidden-size", "8", "--nb-layers", "1", "--steps", "1", "--warmup", "1", "--batch-size",
                        "2", "--seq-dur", "0.5", "--workers", "0", "--device", "cpu", "--no-valid")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "complex masks, loss complex+sdr" in result.stdout
    number = r"\d+\.\d+"
    assert re.search(rf"stems +{number} +{number} +{number} +{number} +{number} +\d+", result.stdout), result.stdout


@pytest.mark.slow  # two tiny trainings and their scoring as subprocesses (~1 min on 2 busy cores)
def test_complex_set_scores_each_run_with_the_phases_it_can_use(tmp_path, hq_root, hq_cache):
    """experiments.py --set complex --phases model mixture: the complex run's row is scored
    by its own estimate (and the mixture phase), the magnitude run's by the mixture phase
    alone; the report names each row's phase method."""
    runs = ["bsrnn, magnitude masks", "bsrnn, complex masks, N=32 x 2 pairs"]
    result = run_script("experiments.py", "--set", "complex", "--only", *runs, "--cache", hq_cache, "--root", hq_root,
                        "--is-wav", "--epochs", "1", "--samples-per-track", "1", "--seq-dur", "1", "--batch-size", "2",
                        "--device", "cpu", "--train-args", "--workers 0", "--phases", "model", "mixture",
                        "--out", tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    experiment = experiment_table.read(tmp_path / "complex.json")
    rows = {row["name"]: row for row in experiment.rows}
    assert [row["phase"] for row in experiment.rows] == ["mixture", "model"]
    table = json.loads((tmp_path / "complex.json").read_text())
    assert [set(row["by_phase"]) for row in table] == [{"mixture"}, {"model", "mixture"}]
    assert rows[runs[1]]["vocals"] == table[1]["by_phase"]["model"]["vocals"]
    markdown = (tmp_path / "complex.md").read_text()
    assert "| model: vocals / accompaniment SDR (dB) | mixture: vocals" in markdown
    assert f"| {runs[0]} | `--model bsrnn` |" in markdown and "| – |" in markdown
    names = [row[0] for row in report_text.experiment_table(experiment)[1]]
    assert names == [f"{runs[0]} · {PHASE_METHODS['mixture'].label}", f"{runs[1]} · {PHASE_METHODS['model'].label}"]
