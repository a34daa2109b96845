"""Faults and bad input: a killed run (SIGKILL mid-epoch, mid-checkpoint-write, mid-track
in preprocess) resumes to the same result as an uninterrupted one and never leaves a
truncated file; a non-finite loss stops training naming epoch and batch; a corrupt,
truncated or incomplete track, a missing ffmpeg, a cache or checkpoint of other settings
each give one `error:` line (exit status 2) or, in preprocess, a named warning.

Cases test_cli.py already covers (missing/empty --root, random-bytes untrained_checkpoint, --save-epochs
past --epochs, --device cuda without CUDA, --resume without last.pt) are not repeated."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import inference
import preprocess
import train
import utils
from conftest import VALID_TRACKS, write_hq_dataset
from formats import checkpoint
from formats.cache import CACHE_VERSION, SOURCES, StemCache
from model import Separator
from pipeline_helpers import REPO_ROOT, TINY_TRAIN, assert_one_error_line, run_in_process, script_env

# Runs a project script after patching it so that it SIGKILLs itself at a chosen moment.
# argv: <mode> <at> <script> <script args...>
KILLER = r'''
import inspect, io, os, signal, sys
from pathlib import Path
import numpy as np
import torch
mode, at, script = sys.argv[1], int(sys.argv[2]), sys.argv[3]
sys.argv = [script, *sys.argv[4:]]
import preprocess, train, utils
from formats import cache
from training import loop, validation

def die():
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)

def write_half(path, payload):
    with open(path, "wb") as f:  # a real partial write, on disk, then the kill
        f.write(payload[: len(payload) // 2])
        f.flush()
        os.fsync(f.fileno())
    die()

def on_second_training_batch(act):
    """Patch train so that epoch `at`'s second training batch's loss becomes act(loss)."""
    seen = {}
    real_epoch, real_loss = train.train_epoch, loop.separation_loss
    def train_epoch(*args, **kwargs):
        seen["epoch"], seen["batch"] = inspect.signature(real_epoch).bind(*args, **kwargs).arguments["epoch"], 0
        return real_epoch(*args, **kwargs)
    def separation_loss(model, *args):
        loss = real_loss(model, *args)
        if model.training and seen.get("epoch") == at:
            seen["batch"] += 1
            if seen["batch"] == 2:
                return act(loss)
        return loss
    train.train_epoch, loop.separation_loss = train_epoch, separation_loss

if mode == "mid-epoch":  # at: epoch; killed in its second training batch, before its optimizer step
    on_second_training_batch(lambda loss: die())
elif mode == "mid-checkpoint":  # at: epoch; killed halfway through writing that epoch's last.pt
    real_save = torch.save
    def save(obj, f, *args, **kwargs):
        if Path(str(f)).name.startswith(".last.pt.") and obj.get("epoch") == at:
            buffer = io.BytesIO()
            real_save(obj, buffer)
            write_half(f, buffer.getvalue())
        return real_save(obj, f, *args, **kwargs)
    torch.save = save
elif mode == "nan":  # at: epoch; its second training batch's loss becomes NaN
    on_second_training_batch(lambda loss: loss * float("nan"))
elif mode == "nan-valid":  # at: epoch; its validation loss becomes NaN
    real_epoch, real_valid = train.train_epoch, train.validate
    seen = {}
    def train_epoch(*args, **kwargs):
        seen["epoch"] = inspect.signature(real_epoch).bind(*args, **kwargs).arguments["epoch"]
        return real_epoch(*args, **kwargs)
    def validate(*args, **kwargs):
        result = real_valid(*args, **kwargs)
        return validation.Validation(float("nan"), result.sdr) if seen.get("epoch") == at else result
    train.train_epoch, train.validate = train_epoch, validate
elif mode == "preprocess":  # at: the at-th array file preprocess writes is cut off halfway
    real_npy = cache._save_npy
    count = {"n": 0}
    def save_npy(path, array):
        count["n"] += 1
        if count["n"] == at:
            buffer = io.BytesIO()
            np.save(buffer, array)
            with utils.atomic_path(path) as tmp:
                write_half(tmp, buffer.getvalue())
        return real_npy(path, array)
    cache._save_npy = save_npy
module = {"train.py": train, "preprocess.py": preprocess}[script]
raise SystemExit(utils.run_cli(module.main))
'''

FAULT_TRAIN = [*TINY_TRAIN, "--seed", "3", "--save-epochs", "2", "3"]  # 3 training batches per epoch


def run_killer(mode: str, at: int, script: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", KILLER, mode, str(at), script, *map(str, args)], cwd=REPO_ROOT,
                          capture_output=True, text=True, env=script_env(), timeout=300)


def load(path: Path) -> dict:
    return checkpoint.load(path)


def history(state: dict) -> list[tuple[int, float, float]]:
    return [(h["epoch"], h["train_loss"], h["valid_loss"]) for h in state["history"]]


def assert_every_checkpoint_loads(directory: Path) -> None:
    for path in directory.glob("*.pt"):
        state = checkpoint.load(path)  # raises on a truncated file
        assert all(torch.isfinite(v).all() for v in state["model_state"].values() if v.is_floating_point()), path
        checkpoint.load_separator(path)


def assert_error_after_progress(result_or_stderr, returncode: int | None = None, mentions: str = "") -> str:
    """A user error raised mid-run: exit status 2, no traceback, and the one `error:` line
    comes last, after the progress bars tqdm drew on stderr (each redraw starts with \r, so
    on a terminal the error starts its own line)."""
    if isinstance(result_or_stderr, subprocess.CompletedProcess):
        stderr, returncode = result_or_stderr.stderr, result_or_stderr.returncode
    else:
        stderr = result_or_stderr
    assert returncode == 2 and "Traceback" not in stderr, stderr[-3000:]
    segments = [part for part in re.split(r"[\r\n]", stderr) if part.strip()]
    assert segments[-1].startswith("error: ") and stderr.count("error:") == 1, stderr[-3000:]
    assert mentions in segments[-1], segments[-1]
    return segments[-1]


@pytest.fixture(scope="module")
def uninterrupted(hq_cache, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("uninterrupted")
    train.main(["--cache", str(hq_cache), "--checkpoint-dir", str(out), *FAULT_TRAIN, "--epochs", "3"])
    return load(out / "last.pt")


# ------------------------------------------------------------ killed training

@pytest.mark.slow  # two training subprocesses
@pytest.mark.parametrize("mode", ["mid-epoch", "mid-checkpoint"])
def test_sigkill_then_resume_equals_uninterrupted(mode, hq_cache, uninterrupted, tmp_path):
    ckpt = tmp_path / "k"
    killed = run_killer(mode, 2, "train.py", "--cache", hq_cache, "--checkpoint-dir", ckpt, *FAULT_TRAIN,
                        "--epochs", "3")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    parts = list(ckpt.glob(".*.part"))
    if mode == "mid-checkpoint":
        assert len(parts) == 1 and parts[0].name.startswith(".last.pt."), parts  # it died mid-write
    assert_every_checkpoint_loads(ckpt)  # the .part is not a *.pt: no checkpoint is truncated
    assert load(ckpt / "last.pt")["epoch"] == 1
    assert [int(r.split(",")[0]) for r in (ckpt / "log.csv").read_text().splitlines()[1:]] == [1]

    resumed = subprocess.run([sys.executable, "train.py", "--cache", str(hq_cache), "--checkpoint-dir", str(ckpt),
                              *FAULT_TRAIN, "--epochs", "3", "--resume"], cwd=REPO_ROOT, capture_output=True,
                             text=True, env=script_env(), timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming" in resumed.stdout and "at epoch 2" in resumed.stdout
    assert not list(ckpt.glob(".*.part")), "the stale temp file was not removed"
    assert_every_checkpoint_loads(ckpt)
    state = load(ckpt / "last.pt")
    assert [h[0] for h in history(state)] == [1, 2, 3]  # no gap, no duplicate
    np.testing.assert_allclose(np.array(history(state)), np.array(history(uninterrupted)), rtol=1e-5)
    assert [int(r.split(",")[0]) for r in (ckpt / "log.csv").read_text().splitlines()[1:]] == [1, 2, 3]
    assert load(ckpt / "epoch_002.pt")["epoch"] == 2


@pytest.mark.parametrize("mode", ["nan", "nan-valid"])
def test_nan_loss_names_epoch_and_batch_and_keeps_last_good_checkpoint(mode, hq_cache, tmp_path):
    ckpt = tmp_path / "k"
    result = run_killer(mode, 2, "train.py", "--cache", hq_cache, "--checkpoint-dir", ckpt, *FAULT_TRAIN,
                        "--epochs", "3")
    line = assert_error_after_progress(result, mentions="epoch 2, batch 1" if mode == "nan" else "epoch 2")
    assert "--lr" in line and "nan" in line
    assert load(ckpt / "last.pt")["epoch"] == 1
    assert_every_checkpoint_loads(ckpt)


def test_absurd_learning_rate_stops_without_saving_broken_weights(hq_cache, tmp_path, capsys):
    """--lr 1e30: after the first step the weights are useless; whether the training or the
    validation loss goes non-finite first, training stops with one line suggesting a lower
    --lr, and no checkpoint with non-finite weights or loss is written."""
    code, err = run_in_process(train.main, ["--cache", hq_cache, "--checkpoint-dir", tmp_path, *FAULT_TRAIN,
                                            "--epochs", "3", "--lr", "1e30"], capsys)
    line = assert_error_after_progress(err, code, mentions="--lr")
    assert "epoch 1" in line
    assert_every_checkpoint_loads(tmp_path)
    for path in tmp_path.glob("*.pt"):
        assert all(math.isfinite(h["valid_loss"]) for h in load(path)["history"])


# ------------------------------------------------------------ killed preprocess

@pytest.mark.slow  # preprocess twice, once in a subprocess
def test_preprocess_killed_mid_track_rerun_equals_clean_run(hq_root, hq_cache, tmp_path, capsys):
    cache = tmp_path / "cache"
    # each track writes one array: the 3rd is the third track's stems
    killed = run_killer("preprocess", 3, "preprocess.py", "--root", hq_root, "--is-wav", "--cache", cache)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert len(list(cache.rglob(".*.part"))) == 1
    assert len(json.loads((cache / "index.json").read_text())["tracks"]) == 2

    preprocess.main(["--root", str(hq_root), "--is-wav", "--cache", str(cache)])
    assert not list(cache.rglob("*.part"))
    assert json.loads((cache / "index.json").read_text()) == json.loads((hq_cache / "index.json").read_text())
    clean, rerun = StemCache(hq_cache), StemCache(cache)
    files = sorted(p.relative_to(hq_cache) for p in hq_cache.rglob("*.npy"))
    assert files == sorted(p.relative_to(cache) for p in cache.rglob("*.npy")) and len(files) == 5
    for name in clean.index["tracks"]:
        np.testing.assert_array_equal(np.asarray(rerun.stems(name)), np.asarray(clean.stems(name)))


# ------------------------------------------------------- broken or missing tracks

@pytest.fixture
def small_root(tmp_path) -> Path:
    """1-second MUSDB18-HQ tracks: both validation names and one training track, plus two
    test tracks."""
    return write_hq_dataset(tmp_path / "root", {"train": [(VALID_TRACKS[0], 1), (VALID_TRACKS[1], 2),
                                                          ("Synth A - One", 3)],
                                                "test": [("Synth D - Four", 6), ("Synth E - Five", 7)]}, seconds=1.0)


def test_preprocess_skips_corrupt_and_incomplete_tracks_by_name(small_root, tmp_path, capsys):
    (small_root / "train" / "Synth A - One" / "vocals.wav").write_bytes(b"RIFF\x00\x00garbage" * 10)
    (small_root / "train" / VALID_TRACKS[1] / "bass.wav").unlink()
    capsys.readouterr()
    code = utils.run_cli(preprocess.main, ["--root", str(small_root), "--is-wav", "--cache", str(tmp_path / "c")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    warnings = [line for line in captured.err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2 and "Traceback" not in captured.err
    assert any("Synth A - One" in w for w in warnings)
    assert any(VALID_TRACKS[1] in w and "bass.wav" in w for w in warnings)
    assert "0 train and 1 valid" in captured.out and "skipped 2 unreadable" in captured.out
    assert sorted(json.loads((tmp_path / "c" / "index.json").read_text())["tracks"]) == [VALID_TRACKS[0]]


@pytest.mark.parametrize("case", ["missing_stem", "missing_mixture", "corrupt_mixture", "truncated_stem", "half_stem"])
def test_inference_names_a_broken_test_track(case, small_root, untrained_checkpoint, tmp_path, capsys):
    folder = small_root / "test" / "Synth E - Five"
    if case == "missing_stem":
        (folder / "vocals.wav").unlink()
    elif case == "missing_mixture":
        (folder / "mixture.wav").unlink()
    elif case == "corrupt_mixture":
        (folder / "mixture.wav").write_bytes(np.random.default_rng(0).bytes(5000))
    else:  # cut off inside the header, or halfway through the samples
        raw = (folder / "drums.wav").read_bytes()
        (folder / "drums.wav").write_bytes(raw[:30] if case == "truncated_stem" else raw[: len(raw) // 2])
    out, samples = tmp_path / "results", tmp_path / "samples"
    code, err = run_in_process(inference.main, ["--root", small_root, "--is-wav", "--checkpoint", untrained_checkpoint,
                                                "--device", "cpu", "--out", out, "--samples-dir", samples,
                                                "--workers", "0"], capsys)
    line = assert_one_error_line(err, code, mentions="Synth E - Five")
    assert {"missing_stem": "vocals.wav", "missing_mixture": "mixture.wav", "corrupt_mixture": "mixture.wav",
            "truncated_stem": "drums.wav", "half_stem": "drums.wav"}[case] in line
    assert not out.exists() and not samples.exists(), "something was written before the error"


def test_garbage_stem_mp4_is_named(tmp_path, untrained_checkpoint, capsys):
    """A .stem.mp4 that ffprobe cannot open: preprocess skips it by name, inference stops
    on it by name (musdb itself would fail on listing the whole root)."""
    root = tmp_path / "root"
    for subset, name in [("train", "Synth A - One"), ("train", VALID_TRACKS[0]), ("test", "Synth D - Four")]:
        (root / subset).mkdir(parents=True, exist_ok=True)
        (root / subset / f"{name}.stem.mp4").write_bytes(np.random.default_rng(1).bytes(3000))
    capsys.readouterr()
    code = utils.run_cli(preprocess.main, ["--root", str(root), "--cache", str(tmp_path / "c"),
                                           "--tracks", "Synth A - One"])
    err = capsys.readouterr().err
    assert code == 0 and "Traceback" not in err
    assert [line for line in err.splitlines() if line.startswith("warning:")] == [
        line for line in err.splitlines() if "Synth A - One" in line and "skipping" in line]
    code, err = run_in_process(inference.main, ["--root", root, "--checkpoint", untrained_checkpoint, "--device", "cpu",
                                                "--out", tmp_path / "o", "--workers", "0"], capsys)
    assert_one_error_line(err, code, mentions="Synth D - Four")


@pytest.mark.slow  # decodes real AAC stems
def test_truncated_stem_mp4(stem_root, tmp_path, untrained_checkpoint, capsys):
    root = tmp_path / "root"
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    for name in ["Synth A - One", VALID_TRACKS[0]]:
        shutil.copy(stem_root / "train" / f"{name}.stem.mp4", root / "train")
    raw = (stem_root / "test" / "Synth D - Four.stem.mp4").read_bytes()
    (root / "test" / "Synth D - Four.stem.mp4").write_bytes(raw[: len(raw) // 2])
    (root / "train" / "Synth B - Two.stem.mp4").write_bytes(raw[: len(raw) // 2])
    capsys.readouterr()
    code = utils.run_cli(preprocess.main, ["--root", str(root), "--cache", str(tmp_path / "c")])
    captured = capsys.readouterr()
    assert code == 0 and "Traceback" not in captured.err, captured.err
    assert "skipped 1 unreadable: Synth B - Two" in captured.out
    assert "1 train and 1 valid" in captured.out
    code, err = run_in_process(inference.main, ["--root", root, "--checkpoint", untrained_checkpoint, "--device", "cpu",
                                                "--out", tmp_path / "o", "--workers", "0"], capsys)
    assert_one_error_line(err, code, mentions="Synth D - Four")
    assert not (tmp_path / "o").exists()


# -------------------------------------------------------------------- ffmpeg

@pytest.mark.parametrize("script", ["preprocess", "inference"])
def test_missing_ffmpeg(script, small_root, untrained_checkpoint, tmp_path):
    """ffmpeg is simulated missing by a PATH that holds only an empty folder. musdb decodes
    MUSDB18-HQ's WAVs through ffmpeg too, so --is-wav needs it as well."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    env = {**os.environ, "PATH": str(bin_dir)}
    args = (["--cache", tmp_path / "c"] if script == "preprocess"
            else ["--checkpoint", untrained_checkpoint, "--device", "cpu", "--out", tmp_path / "o"])
    result = subprocess.run([sys.executable, f"{script}.py", "--root", str(small_root), "--is-wav",
                             *map(str, args)], cwd=REPO_ROOT, capture_output=True, text=True, env=script_env(env),
                            timeout=300)
    assert_one_error_line(result, mentions="ffmpeg")
    assert not (tmp_path / "c").exists() and not (tmp_path / "o").exists()


# -------------------------------------------------------------- cache, checkpoint

def tiny_cache(directory: Path) -> Path:
    cache = StemCache.create_or_open(directory)
    rng = np.random.default_rng(0)
    for name, split in [("t", "train"), ("v", "valid")]:
        cache.add_track(name, split, rng.uniform(-0.1, 0.1, (len(SOURCES), 2, 44100)).astype(np.float32))
    return directory


@pytest.mark.parametrize("change", ["format_version", "sample_rate", "sources"])
def test_train_refuses_a_cache_of_other_settings(change, tmp_path, capsys):
    cache = tiny_cache(tmp_path / "cache")
    index = json.loads((cache / "index.json").read_text())
    index.update({"format_version": {"format_version": CACHE_VERSION + 1}, "sample_rate": {"sample_rate": 48000},
                  "sources": {"sources": ["vocals", "drums", "bass"]}}[change])
    (cache / "index.json").write_text(json.dumps(index))
    code, err = run_in_process(train.main, ["--cache", cache, "--checkpoint-dir", tmp_path / "k", *TINY_TRAIN,
                                            "--epochs", "1"], capsys)
    line = assert_one_error_line(err, code, mentions="preprocess.py")
    assert str(cache) in line
    assert not (tmp_path / "k" / "last.pt").exists()


@pytest.mark.parametrize("case", ["random_bytes", "other_config", "no_optimizer", "already_done"])
def test_train_resume_from_a_bad_last_checkpoint(case, tmp_path, capsys):
    cache = tiny_cache(tmp_path / "cache")
    ckpt = tmp_path / "k"
    ckpt.mkdir()
    model = Separator(hidden_size=16, nb_layers=1)
    good = {"model_state": model.state_dict(), "model_config": model.config, "epoch": 2,
            "input_stats": {"mean": [0.0], "std": [1.0]}, "history": [],
            "optimizer_state": torch.optim.Adam(model.parameters()).state_dict(),
            "scheduler_state": torch.optim.lr_scheduler.ReduceLROnPlateau(
                torch.optim.Adam(model.parameters())).state_dict()}
    if case == "random_bytes":
        (ckpt / "last.pt").write_bytes(np.random.default_rng(0).bytes(2000))
    elif case == "other_config":
        checkpoint.save(ckpt / "last.pt", {**good, "model_config": {**model.config, "hidden_size": 32}})
    elif case == "no_optimizer":  # e.g. best.pt copied over last.pt
        checkpoint.save(ckpt / "last.pt", {k: v for k, v in good.items() if k != "optimizer_state"})
    else:
        checkpoint.save(ckpt / "last.pt", good)
    before = (ckpt / "last.pt").read_bytes()
    code, err = run_in_process(train.main, ["--cache", cache, "--checkpoint-dir", ckpt, *TINY_TRAIN,
                                            "--epochs", "2", "--resume"], capsys)
    line = assert_one_error_line(err, code, mentions="last.pt")
    if case == "already_done":
        assert "epoch 2" in line and "--epochs" in line
    assert (ckpt / "last.pt").read_bytes() == before
