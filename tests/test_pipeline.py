"""train.py and inference.py end to end on the generated dataset: the loss goes down,
runs are reproducible and resumable, checkpoints rebuild the model, and inference
writes the documented results."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import data
import inference
import train
import utils
from conftest import SYNTH_TRACKS, TRACK_SECONDS, VALID_TRACKS
from formats import checkpoint
from formats.cache import StemCache, mixture_and_targets
from model import Separator, build_model, count_parameters
from pipeline_helpers import TINY_TRAIN, run_script
from separation import evaluation, segments
from training.validation import track_sdr, validate
from utils import STEMS

TEST_NAMES = sorted(n for n, _ in SYNTH_TRACKS["test"])
CHECKPOINT_KEYS = {"model_state", "model_config", "input_stats", "epoch", "history", "train_args"}


def load(path: Path) -> dict:
    return checkpoint.load(path)


def losses(history: list[dict]) -> list[tuple[int, float, float]]:
    return [(h["epoch"], h["train_loss"], h["valid_loss"]) for h in history]


@pytest.fixture(scope="module")
def loss_run(hq_cache, tmp_path_factory) -> Path:
    """4 epochs in which every epoch sees the same data (whole tracks, no augmentation),
    so the training loss is comparable across epochs."""
    out = tmp_path_factory.mktemp("loss_run")
    train.main(["--cache", str(hq_cache), "--checkpoint-dir", str(out), "--hidden-size", "16", "--nb-layers", "1",
                "--seq-dur", str(TRACK_SECONDS), "--augment", "none", "--samples-per-track", "1", "--batch-size", "3",
                "--lr", "0.003", "--workers", "0", "--device", "cpu", "--epochs", "4", "--seed", "0",
                "--save-epochs", "2", "4"])
    return out


RESUME_ARGS = [*TINY_TRAIN[:2], "--nb-layers", "2", *TINY_TRAIN[4:], "--augment", "all", "--seed", "7"]  # 2 layers: dropout


@pytest.fixture(scope="module")
def resume_runs(hq_cache, tmp_path_factory) -> dict:
    """A: 4 epochs straight (in-process). B: 2 epochs as a subprocess, then resumed to 4."""
    a = tmp_path_factory.mktemp("run_a")
    b = tmp_path_factory.mktemp("run_b")
    train.main(["--cache", str(hq_cache), "--checkpoint-dir", str(a), *RESUME_ARGS, "--epochs", "4"])
    first = run_script("train.py", "--cache", hq_cache, "--checkpoint-dir", b, *RESUME_ARGS, "--epochs", "2")
    assert first.returncode == 0, first.stderr[-3000:]
    b_after_two = load(b / "last.pt")
    train.main(["--cache", str(hq_cache), "--checkpoint-dir", str(b), *RESUME_ARGS, "--epochs", "4", "--resume"])
    return {"a": a, "b": b, "b_stdout": first.stdout, "b_after_two": b_after_two}


# ------------------------------------------------------------------ training

def test_short_training_lowers_the_loss(loss_run):
    history = load(loss_run / "last.pt")["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert all(math.isfinite(h["train_loss"]) and math.isfinite(h["valid_loss"]) for h in history)
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_log_csv_has_one_row_per_epoch(loss_run):
    with open(loss_run / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    history = load(loss_run / "last.pt")["history"]
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    for row, h in zip(rows, history):
        assert float(row["train_loss"]) == pytest.approx(h["train_loss"], rel=1e-9)
        assert float(row["valid_loss"]) == pytest.approx(h["valid_loss"], rel=1e-9)


def test_train_prints_parameter_count(resume_runs):
    model, state = checkpoint.load_separator(resume_runs["b"] / "last.pt")
    count = count_parameters(model)
    match = re.search(r"([\d,]+) parameters", resume_runs["b_stdout"])
    assert match, resume_runs["b_stdout"]
    assert int(match.group(1).replace(",", "")) == count
    assert count == count_parameters(build_model(state["model_config"]))
    assert len(re.findall(r"^epoch\s+\d+", resume_runs["b_stdout"], flags=re.M)) == 2


def test_seed_makes_runs_identical(resume_runs, hq_cache, tmp_path):
    a = losses(load(resume_runs["a"] / "last.pt")["history"])
    b = losses(resume_runs["b_after_two"]["history"])
    # a subprocess and an in-process run with one seed (bit-identical here; 1e-6 leaves room
    # for a BLAS that picks its kernels per process)
    assert [e for e, _, _ in b] == [1, 2]
    flat = lambda rows: [x for _, *values in rows for x in values]  # noqa: E731
    assert flat(b) == pytest.approx(flat(a[:2]), rel=1e-6, abs=1e-9)
    # ... and the seed matters: another seed gives another first epoch.
    train.main(["--cache", str(hq_cache), "--checkpoint-dir", str(tmp_path), *RESUME_ARGS[:-1], "8", "--epochs", "1"])
    assert losses(load(tmp_path / "last.pt")["history"])[0][1] != a[0][1]


def test_resume_equals_uninterrupted_run(resume_runs):
    straight = load(resume_runs["a"] / "last.pt")
    resumed = load(resume_runs["b"] / "last.pt")
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3, 4]  # no gap, no duplicate
    for (e1, t1, v1), (e2, t2, v2) in zip(losses(straight["history"]), losses(resumed["history"])):
        assert e1 == e2
        assert t1 == pytest.approx(t2, abs=1e-6, rel=1e-6)
        assert v1 == pytest.approx(v2, abs=1e-6, rel=1e-6)
    for key, tensor in straight["model_state"].items():
        torch.testing.assert_close(resumed["model_state"][key], tensor, rtol=1e-5, atol=1e-6, msg=key)
    with open(resume_runs["b"] / "log.csv", newline="") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1, 2, 3, 4]


def test_validation_sdr_is_that_of_inference_with_the_mixture_phase(loss_run, hq_cache, tmp_path):
    """train.py's validation SDR of a track equals the same formula (training.validation's
    track_sdr) applied to what inference.py --phase mixture --save-estimates writes for a
    MUSDB18-HQ track whose audio is the cache's stems: one separation path for both."""
    model, _ = checkpoint.load_separator(loss_run / "last.pt")
    cache = StemCache(hq_cache)
    name = cache.names("valid")[0]
    validated = validate(model, cache, [name], torch.device("cpu"))
    stems = np.array(cache.stems(name))  # sources, channels, samples
    audio = mixture_and_targets(torch.from_numpy(stems)).numpy()  # mixture, vocals, accompaniment
    folder = tmp_path / "root" / "train" / name
    folder.mkdir(parents=True)
    for source, signal in [("mixture", audio[0]), *zip(cache.sources, stems)]:
        sf.write(folder / f"{source}.wav", signal.T, utils.SAMPLE_RATE, subtype="FLOAT")
    inference.main(["--root", str(tmp_path / "root"), "--is-wav", "--subset", "train", "--split", "valid",
                    "--checkpoint", str(loss_run / "last.pt"), "--phase", "mixture", "--save-estimates",
                    "--workers", "0", "--device", "cpu", "--samples", "0", "--out", str(tmp_path / "results")])
    [written] = (tmp_path / "results").glob(f"*/estimates/{name}")
    estimates = {stem: sf.read(written / f"{stem}.wav", dtype="float32")[0] for stem in STEMS}
    np.testing.assert_allclose(track_sdr(estimates, audio[1:]), [validated.sdr[stem] for stem in STEMS],
                               rtol=0, atol=1e-4)


# --------------------------------------------------------------- checkpoints

def test_checkpoint_files(loss_run, resume_runs):
    assert sorted(p.name for p in loss_run.glob("*.pt")) == ["best.pt", "epoch_002.pt", "epoch_004.pt", "last.pt"]
    # default save epochs (25, 50, 150) shrink to those within --epochs: none for 4 epochs
    assert sorted(p.name for p in resume_runs["b"].glob("*.pt")) == ["best.pt", "last.pt"]
    assert not list(loss_run.glob("*.part"))


def test_checkpoint_contents(loss_run, hq_cache):
    last = load(loss_run / "last.pt")
    for name in ("best.pt", "epoch_002.pt", "epoch_004.pt", "last.pt"):
        state = load(loss_run / name)
        assert CHECKPOINT_KEYS <= set(state), name
        assert state["model_config"] == last["model_config"]
        assert state["train_args"]["hidden_size"] == 16 and state["train_args"]["seed"] == 0
        assert len(state["history"]) == state["epoch"]
    assert {"optimizer_state", "scheduler_state"} <= set(last)
    assert load(loss_run / "epoch_002.pt")["epoch"] == 2 and last["epoch"] == 4
    mean_sdr = lambda h: (h["valid_sdr_vocals"] + h["valid_sdr_accompaniment"]) / 2  # noqa: E731
    best_epoch = max(last["history"], key=mean_sdr)["epoch"]
    assert load(loss_run / "best.pt")["epoch"] == best_epoch == last["best_epoch"]
    # the input statistics are those of the training split of the cache
    cache = StemCache(hq_cache)
    mean, std = data.input_statistics(cache, cache.names("train"))
    np.testing.assert_allclose(last["input_stats"]["mean"], mean, rtol=1e-6)
    np.testing.assert_allclose(last["input_stats"]["std"], std, rtol=1e-6)


def test_load_separator_rebuilds_trained_model(loss_run):
    model, state = checkpoint.load_separator(loss_run / "last.pt")
    assert not model.training
    for key, tensor in state["model_state"].items():
        assert torch.equal(model.state_dict()[key], tensor), key
    reference = build_model(state["model_config"])
    reference.load_state_dict(load(loss_run / "epoch_004.pt")["model_state"])
    reference.eval()
    x = torch.rand(2, 2, 2049, 13) * 5
    with torch.no_grad():
        out = model(x)
        torch.testing.assert_close(out, reference(x), rtol=0, atol=0)
        earlier, _ = checkpoint.load_separator(loss_run / "epoch_002.pt")
        assert not torch.allclose(out, earlier(x))  # training did change the weights


# ---------------------------------------------------------------- inference

@pytest.fixture(scope="module")
def inference_run(loss_run, hq_root, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("results")
    samples = tmp_path_factory.mktemp("samples")
    ckpt = loss_run / "best.pt"
    result = run_script("inference.py", "--root", hq_root, "--is-wav", "--subset", "test", "--checkpoint", ckpt,
                        "--phase", "mixture", "griffinlim", "--gl-iters", "2", "--samples", "1", "--out", out,
                        "--samples-dir", samples, "--save-estimates", "--device", "cpu")
    return {"result": result, "out": out, "samples": samples, "ckpt": ckpt}


def _summary(out: Path, run: str) -> dict:
    return json.loads((out / run / "summary.json").read_text())


@pytest.mark.slow  # shares the inference subprocess fixture (~15-40 s)
def test_inference_exits_and_prints_table(inference_run):
    result = inference_run["result"]
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    median_rows = [line for line in lines if line.startswith("median")]
    assert len(median_rows) == 1
    # one cell per run: vocals and accompaniment SDR first (further columns, e.g. timings, ignored)
    cells = median_rows[0].split("|")[1:]
    assert len(cells) == 2
    numbers = [float(x) for cell in cells for x in cell.split()[:2]]
    expected = [_summary(inference_run["out"], f"best-{phase}")["median_sdr"][stem]
                for phase in ("mixture", "griffinlim") for stem in STEMS]
    assert numbers == pytest.approx([round(x, 2) for x in expected], abs=0.006)
    for name in TEST_NAMES:
        assert any(line.startswith(name) for line in lines), name
    # the Griffin-Lim backend that ran is recorded: auto on the CPU is librosa.griffinlim
    assert _summary(inference_run["out"], "best-griffinlim")["gl_backend"] == "librosa"
    assert "gl_backend" not in _summary(inference_run["out"], "best-mixture")


@pytest.mark.slow
@pytest.mark.parametrize("phase", ["mixture", "griffinlim"])
def test_inference_summary(inference_run, phase):
    out = inference_run["out"]
    summary = _summary(out, f"best-{phase}")
    assert {"checkpoint", "phase", "n_tracks", "median_sdr", "tracks"} <= set(summary)
    assert summary["checkpoint"] == str(inference_run["ckpt"])
    assert summary["phase"] == phase
    assert summary["n_tracks"] == len(TEST_NAMES)
    assert sorted(summary["tracks"]) == TEST_NAMES
    for stem in STEMS:
        values = [summary["tracks"][t][stem] for t in TEST_NAMES]
        assert all(math.isfinite(v) for v in values)
        assert summary["median_sdr"][stem] == pytest.approx(float(np.median(values)), abs=1e-9)
    # museval's per-track JSON is there and the summary's value is its median over frames
    for name in TEST_NAMES:
        scores = json.loads((out / f"best-{phase}" / "test" / f"{name}.json").read_text())
        frames = {t["name"]: [f["metrics"]["SDR"] for f in t["frames"]] for t in scores["targets"]}
        assert set(frames) == set(STEMS)
        for stem in STEMS:
            sdr = np.array([np.nan if v is None else float(v) for v in frames[stem]])
            assert len(sdr) == math.ceil(TRACK_SECONDS) or len(sdr) == int(TRACK_SECONDS)
            assert summary["tracks"][name][stem] == pytest.approx(float(np.nanmedian(sdr)), abs=1e-6)


@pytest.mark.slow  # shares the inference subprocess fixture (~15-40 s)
def test_phase_methods_give_different_estimates(inference_run):
    est = inference_run["out"] / "best-{}" / "estimates" / TEST_NAMES[0] / "vocals.wav"
    a, _ = sf.read(str(est).format("mixture"))
    b, _ = sf.read(str(est).format("griffinlim"))
    assert a.shape == b.shape and not np.allclose(a, b)


@pytest.mark.slow  # shares the inference subprocess fixture (~15-40 s)
def test_inference_listening_samples(inference_run, hq_root):
    import musdb

    samples = inference_run["samples"]
    first = TEST_NAMES[0]  # --samples 1: only the first track (sorted by name)
    for phase in ("mixture", "griffinlim"):
        run_dir = samples / f"best-{phase}"
        assert [p.name for p in run_dir.iterdir()] == [first]
        files = sorted(p.name for p in (run_dir / first).iterdir())
        assert files == sorted(["mixture.wav", "reference_accompaniment.wav", "reference_vocals.wav",
                                *(f"{s}.wav" for s in STEMS)])
    track = next(t for t in musdb.DB(root=str(hq_root), is_wav=True, subsets="test") if t.name == first)
    length = min(int(30 * 44100), track.samples)
    for path in samples.glob(f"best-*/{first}/*.wav"):
        info = sf.info(str(path))
        assert (info.samplerate, info.channels, info.frames) == (44100, 2, length), path
    mix, _ = sf.read(str(samples / "best-mixture" / first / "mixture.wav"), dtype="float32")
    np.testing.assert_allclose(mix, track.audio[:length], atol=2.0 / 32768)


def test_excerpt_bounds_caps_at_thirty_seconds():
    assert evaluation.excerpt_bounds(1000) == (0, 1000)
    lo, hi = evaluation.excerpt_bounds(100 * 44100)
    assert hi - lo == 30 * 44100 and lo == (100 * 44100 - 30 * 44100) // 2


@pytest.mark.slow  # shares the inference subprocess fixture (~15-40 s)
def test_inference_saves_full_estimates(inference_run, hq_root):
    import musdb

    lengths = {t.name: t.samples for t in musdb.DB(root=str(hq_root), is_wav=True, subsets="test")}
    for phase in ("mixture", "griffinlim"):
        folder = inference_run["out"] / f"best-{phase}" / "estimates"
        assert sorted(p.name for p in folder.iterdir()) == TEST_NAMES
        for name in TEST_NAMES:
            for stem in STEMS:
                info = sf.info(str(folder / name / f"{stem}.wav"))
                assert (info.samplerate, info.channels, info.frames) == (44100, 2, lengths[name])


def test_inference_valid_split(loss_run, hq_root, tmp_path, capsys):
    inference.main(["--root", str(hq_root), "--is-wav", "--subset", "train", "--split", "valid",
                    "--checkpoint", str(loss_run / "epoch_002.pt"), "--phase", "mixture", "--samples", "0",
                    "--out", str(tmp_path / "out"), "--samples-dir", str(tmp_path / "samples"), "--device", "cpu"])
    printed = capsys.readouterr().out
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["epoch_002-mixture"]
    summary = _summary(tmp_path / "out", "epoch_002-mixture")
    assert sorted(summary["tracks"]) == sorted(VALID_TRACKS)  # only the validation split of 'train'
    assert summary["n_tracks"] == len(VALID_TRACKS)
    assert summary["checkpoint"] == str(loss_run / "epoch_002.pt")
    for name in VALID_TRACKS:
        assert any(line.startswith(name) for line in printed.splitlines())
    assert not any((tmp_path / "samples").rglob("*.wav"))  # --samples 0


class _Oracle(torch.nn.Module):
    """A stand-in separator: all of the mixture is 'vocals', nothing is accompaniment."""

    def forward(self, mixture_mag):
        return torch.stack([mixture_mag, torch.zeros_like(mixture_mag)], dim=1)


def test_separate_with_mixture_phase_reconstructs_mixture():
    audio = np.random.default_rng(0).uniform(-0.5, 0.5, size=(30001, 2)).astype(np.float32)
    out = segments.separate(_Oracle(), audio, segments.SeparationSettings(), torch.device("cpu"))
    assert set(out["mixture"]) == set(STEMS)
    assert out["mixture"]["vocals"].shape == audio.shape
    np.testing.assert_allclose(out["mixture"]["vocals"], audio, atol=1e-5)
    np.testing.assert_allclose(out["mixture"]["accompaniment"], 0, atol=1e-6)


def test_separate_estimates_chunks_stitch_exactly():
    """A per-frame network (no LSTM) gives the same output whatever the chunking."""
    torch.manual_seed(0)
    model = Separator(hidden_size=16, nb_layers=0, max_bin=200).eval()
    spec = utils.stft(torch.rand(2, 50 * 1024) - 0.5)
    whole = segments.separate_estimates(model, spec)
    with torch.no_grad():
        torch.testing.assert_close(whole, model(spec.abs()[None])[0], rtol=1e-5, atol=1e-5)
    for chunk, context in ((7, 3), (16, 0), (20, 40)):
        torch.testing.assert_close(segments.separate_estimates(model, spec, chunk, context), whole,
                                   rtol=1e-5, atol=1e-5)
