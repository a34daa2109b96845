"""The command-line convention: a problem the user can fix exits non-zero with exactly one
stderr line `error: ...` and no traceback; --debug shows the traceback instead.

The cases that define the convention run as real subprocesses (concurrently, in one
module fixture, since each pays Python + torch start-up); the remaining variations call
the scripts' `run_cli(main, argv)` in-process, which is exactly what their __main__ runs."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

import inference
import preprocess
import train
import utils
from pipeline_helpers import (REPO_ROOT, TINY_TRAIN, assert_one_error_line, offline_env, run_in_process, run_script,
                              script_env)

# preprocess.py without --root and MUSDB_PATH tries musdb's download of the 7-second
# previews. Offline that fails at once here (URLError in ~3 s), but with network it would
# download ~150 MB, so the download itself is replaced by an immediate URLError.
OFFLINE_PREPROCESS = """
import sys, urllib.error, musdb
def offline_download(self, *args, **kwargs):
    raise urllib.error.URLError("network disabled by the test")
musdb.DB.download = offline_download
import preprocess, utils
sys.argv = ["preprocess.py", *sys.argv[1:]]
raise SystemExit(utils.run_cli(preprocess.main))
"""


@pytest.fixture(scope="module")
def cli(tmp_path_factory, stem_root, hq_root, hq_cache, untrained_checkpoint):
    tmp = tmp_path_factory.mktemp("cli")
    (tmp / "home").mkdir()
    random_bytes = tmp / "random.pt"
    random_bytes.write_bytes(np.random.default_rng(0).bytes(10_000))
    missing = tmp / "no_such_dir"
    jobs = {
        "pre_missing_root": lambda: run_script("preprocess.py", "--root", missing, "--cache", tmp / "c1"),
        "pre_missing_root_debug": lambda: run_script("preprocess.py", "--root", missing, "--cache", tmp / "c2",
                                                     "--debug"),
        "pre_stem_root_as_wav": lambda: run_script("preprocess.py", "--root", stem_root, "--is-wav",
                                                   "--cache", tmp / "c3"),
        "pre_no_root": lambda: subprocess.run(
            [sys.executable, "-c", OFFLINE_PREPROCESS, "--cache", str(tmp / "c4")], cwd=REPO_ROOT,
            capture_output=True, text=True, env=script_env(offline_env(tmp / "home")), timeout=300),
        "inf_random_checkpoint": lambda: run_script("inference.py", "--root", hq_root, "--is-wav",
                                                    "--checkpoint", random_bytes, "--device", "cpu",
                                                    "--out", tmp / "o1"),
        "inf_stem_root_as_wav": lambda: run_script("inference.py", "--root", stem_root, "--is-wav",
                                                   "--checkpoint", untrained_checkpoint, "--device", "cpu",
                                                   "--out", tmp / "o2"),
        "train_save_epochs": lambda: run_script("train.py", "--cache", hq_cache, "--checkpoint-dir", tmp / "k1",
                                                *TINY_TRAIN[:-2], "--save-epochs", "5", "--epochs", "3"),
    }
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {name: pool.submit(job) for name, job in jobs.items()}
        return {name: future.result() for name, future in futures.items()}, tmp


# ------------------------------------------------------------- subprocesses

def test_preprocess_missing_root(cli):
    assert_one_error_line(cli[0]["pre_missing_root"], mentions="no_such_dir")


def test_preprocess_debug_shows_traceback(cli):
    result = cli[0]["pre_missing_root_debug"]
    assert result.returncode != 0
    assert "Traceback (most recent call last)" in result.stderr
    assert "UserError" in result.stderr


def test_preprocess_stem_root_with_is_wav(cli):
    assert_one_error_line(cli[0]["pre_stem_root_as_wav"])


def test_preprocess_without_root_says_pass_root(cli):
    line = assert_one_error_line(cli[0]["pre_no_root"], mentions="--root")
    assert "MUSDB_PATH" in line


def test_inference_random_bytes_checkpoint(cli):
    assert_one_error_line(cli[0]["inf_random_checkpoint"], mentions="random.pt")


def test_inference_stem_root_with_is_wav(cli):
    assert_one_error_line(cli[0]["inf_stem_root_as_wav"])


def test_train_save_epochs_beyond_epochs(cli):
    result = cli[0]["train_save_epochs"]
    assert_one_error_line(result, mentions="--save-epochs")
    assert not (cli[1] / "k1" / "last.pt").exists()


# ---------------------------------------------------------------- in-process

@pytest.mark.parametrize("script", ["preprocess", "inference"])
@pytest.mark.parametrize("case", ["missing", "empty", "hq_without_is_wav"])
def test_bad_roots(script, case, tmp_path, hq_root, untrained_checkpoint, capsys):
    root = {"missing": tmp_path / "missing", "empty": tmp_path / "empty", "hq_without_is_wav": hq_root}[case]
    (tmp_path / "empty").mkdir()
    extra = (["--cache", tmp_path / "cache"] if script == "preprocess"
             else ["--checkpoint", untrained_checkpoint, "--device", "cpu", "--out", tmp_path / "out"])
    main = preprocess.main if script == "preprocess" else inference.main
    code, err = run_in_process(main, ["--root", root, *extra], capsys)
    assert_one_error_line(err, code)
    with pytest.raises(utils.UserError):  # --debug lets the exception through
        utils.run_cli(main, [str(a) for a in ["--root", root, *extra, "--debug"]])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
@pytest.mark.parametrize("script", ["train", "inference"])
def test_device_cuda_without_cuda(script, tmp_path, hq_root, hq_cache, untrained_checkpoint, capsys):
    if script == "train":
        argv = ["--cache", hq_cache, "--checkpoint-dir", tmp_path / "k", *TINY_TRAIN[:-2], "--epochs", "1",
                "--device", "cuda"]
        main = train.main
    else:
        argv = ["--root", hq_root, "--is-wav", "--checkpoint", untrained_checkpoint, "--device", "cuda",
                "--out", tmp_path]
        main = inference.main
    code, err = run_in_process(main, argv, capsys)
    assert_one_error_line(err, code, mentions="cuda")


def test_train_resume_without_checkpoint(tmp_path, hq_cache, capsys):
    code, err = run_in_process(train.main, ["--cache", hq_cache, "--checkpoint-dir", tmp_path, *TINY_TRAIN,
                                            "--epochs", "1", "--resume"], capsys)
    assert_one_error_line(err, code, mentions="last.pt")


def test_train_cache_without_validation_tracks(tmp_path, capsys):
    from formats.cache import SOURCES, StemCache

    cache = StemCache.create_or_open(tmp_path / "cache")
    cache.add_track("only", "train", np.zeros((len(SOURCES), 2, 44100), dtype=np.float32))
    code, err = run_in_process(train.main, ["--cache", tmp_path / "cache", "--checkpoint-dir", tmp_path / "k",
                                            *TINY_TRAIN, "--epochs", "1"], capsys)
    assert_one_error_line(err, code, mentions="valid")


def test_train_missing_cache(tmp_path, capsys):
    code, err = run_in_process(train.main, ["--cache", tmp_path / "nope", "--checkpoint-dir", tmp_path / "k",
                                            *TINY_TRAIN, "--epochs", "1"], capsys)
    assert_one_error_line(err, code, mentions="preprocess.py")


def test_inference_split_needs_train_subset(tmp_path, untrained_checkpoint, capsys):
    code, err = run_in_process(inference.main, ["--subset", "test", "--split", "valid",
                                                "--checkpoint", untrained_checkpoint, "--out", tmp_path], capsys)
    assert_one_error_line(err, code, mentions="--split")


def test_inference_unknown_track(tmp_path, hq_root, untrained_checkpoint, capsys):
    code, err = run_in_process(inference.main, ["--root", hq_root, "--is-wav", "--checkpoint", untrained_checkpoint,
                                                "--device", "cpu", "--tracks", "No Such - Track", "--out", tmp_path],
                               capsys)
    assert_one_error_line(err, code, mentions="No Such - Track")


def test_preprocess_root_without_validation_tracks(tmp_path, capsys):
    """A root whose train subset holds none of musdb's validation-split names: either cache
    the training split, or say that the validation split is what is missing; not that the
    folder holds no tracks at all."""
    from conftest import write_hq_dataset

    root = write_hq_dataset(tmp_path / "root", {"train": [("Synth A - One", 3)]}, seconds=1.0)
    code, err = run_in_process(preprocess.main, ["--root", root, "--is-wav", "--cache", tmp_path / "cache"], capsys)
    if code == 0:
        assert json.loads((tmp_path / "cache" / "index.json").read_text())["tracks"]["Synth A - One"]["split"] == "train"
    else:
        # (the training split's progress bar may come first: only the error line is checked)
        errors = [line for line in err.split("\n") if line.startswith("error:")]
        assert len(errors) == 1 and "Traceback" not in err, err
        assert "valid" in errors[0], errors[0]
