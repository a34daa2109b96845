"""inference.py --input: separating audio files that are not in MUSDB18 (any format
libsndfile or ffmpeg reads, any sample rate, mono or stereo), and its input errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

import inference
import utils
from formats import checkpoint
from model import Separator
from pipeline_helpers import REPO_ROOT, assert_one_error_line, script_env
from separation import processes, segments

VOCALS_GAIN = 0.3  # the complementary model's constant masks: 0.3 and 0.7
# The Wiener filter (--input's default phase) gives each stem its share of the power
# estimates, v_j R_j (sum_k v_k R_k)^-1: with masks g_j that is g_j^2 / sum_k g_k^2.
WIENER_VOCALS_GAIN = VOCALS_GAIN ** 2 / (VOCALS_GAIN ** 2 + (1 - VOCALS_GAIN) ** 2)
# The gains sum to the identity only up to the regulariser sqrt(eps) I added to the mixture
# covariance (on norbert's scale, the loudest bin ~10): a bin loses reg / (power + reg) of
# itself, noticeable only in bins ~55 dB below the loudest, where the MP3 and AAC inputs
# hold their coding noise. Measured: the stems' sum misses the input by 49 (MP3), 51 (AAC)
# and 61 dB (FLAC) below its level, the vocals their share by as much; 40 dB are required.
WIENER_MIN_SNR_DB = 40.0
# 16-bit quantisation of each stem (2 x 2**-16) and soxr's round trip to 44.1 kHz and back.
WRITE_ERROR = 2e-4


def save_like_train(path, model: Separator, **extra) -> None:
    """A checkpoint with the keys train.py writes (inference needs only some of them)."""
    checkpoint.save(path, {**checkpoint.separator_state(
        model, input_stats={"mean": [0.0] * model.nb_bins, "std": [1.0] * model.nb_bins}, epoch=1, machine="test"),
        **extra})


def complementary_model() -> Separator:
    """A Separator whose two masks are the constants 0.3 and 0.7 (output_scale 0), so they
    sum to 1 by construction: with the mixture phase, vocals + accompaniment = mixture;
    with the Wiener filter, too, up to its regulariser."""
    torch.manual_seed(0)
    model = Separator(hidden_size=16, nb_layers=1).eval()
    with torch.no_grad():
        model.output_scale.zero_()
        model.output_mean[0].fill_(VOCALS_GAIN)
        model.output_mean[1].fill_(1.0 - VOCALS_GAIN)
    return model


def tones(rate: int, seconds: float, channels: int) -> np.ndarray:
    """Faded sines well below every Nyquist frequency involved (resampling is then exact
    up to soxr's stopband), peak < 0.5."""
    t = np.arange(int(rate * seconds)) / rate
    cols = [0.3 * np.sin(2 * np.pi * f * t) + 0.1 * np.sin(2 * np.pi * 3 * f * t) for f in (440.0, 310.0)[:channels]]
    return (np.stack(cols, 1) * np.hanning(len(t))[:, None]).astype(np.float32)


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Level of reference over that of estimate - reference, in dB."""
    return float(10 * np.log10(np.sum(reference.astype(np.float64) ** 2) / np.sum((estimate - reference) ** 2)))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("input")
    paths = {"mono_mp3": tmp / "mono song.mp3", "stereo_flac": tmp / "stereo.flac"}
    if "MP3" in sf.available_formats():
        sf.write(paths["mono_mp3"], tones(22050, 2.0, 1), 22050, format="MP3")
    else:  # an older libsndfile: let ffmpeg encode it
        wav = tmp / "mono.wav"
        sf.write(wav, tones(22050, 2.0, 1), 22050)
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", wav, paths["mono_mp3"]], check=True)
    sf.write(paths["stereo_flac"], tones(48000, 1.5, 2), 48000)
    # AAC in MP4 is read through ffmpeg only (libsndfile cannot)
    paths["stereo_m4a"] = tmp / "clip.m4a"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", paths["stereo_flac"], "-ar", "32000", paths["stereo_m4a"]],
                   check=True)
    paths["complementary"] = tmp / "complementary.pt"
    save_like_train(paths["complementary"], complementary_model())
    torch.manual_seed(1)
    paths["random"] = tmp / "random.pt"
    save_like_train(paths["random"], Separator(hidden_size=16, nb_layers=1))
    return paths


def run(argv, capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    code = utils.run_cli(inference.main, [str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def separated(files, tmp_path_factory):
    """The three files through the complementary model, --input's default phase (wiener),
    WAV output, two workers (the stems are written in the pool)."""
    out = tmp_path_factory.mktemp("separated")
    inputs = [files["mono_mp3"], files["stereo_flac"], files["stereo_m4a"]]
    import contextlib
    import io
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = utils.run_cli(inference.main, ["--input", *map(str, inputs), "--checkpoint", str(files["complementary"]),
                                              "--out", str(out), "--device", "cpu", "--workers", "2"])
    assert code == 0
    return out, inputs, stdout.getvalue()


def test_input_writes_only_the_stem_paths(separated):
    out, inputs, stdout = separated
    expected = [str(out / p.stem / f"{stem}.wav") for p in inputs for stem in ("vocals", "accompaniment")]
    assert stdout.splitlines() == expected  # no SDR or table: there is no reference
    assert not list(out.rglob("*.part"))


@pytest.mark.parametrize("key", ["mono_mp3", "stereo_flac", "stereo_m4a"])
def test_input_outputs_keep_rate_length_channels_and_sum_to_input(separated, files, key):
    out, _, _ = separated
    source, rate = utils.read_audio_any(files[key])  # decoded as the separation read it
    stems = {}
    for stem in ("vocals", "accompaniment"):
        info = sf.info(str(out / files[key].stem / f"{stem}.wav"))
        assert (info.samplerate, info.channels, info.frames) == (rate, source.shape[1], source.shape[0])
        stems[stem] = sf.read(out / files[key].stem / f"{stem}.wav", dtype="float32", always_2d=True)[0]
    # Complementary masks + Wiener filter: the stems add up to the input (see WIENER_MIN_SNR_DB),
    # the vocals taking their power share of it.
    assert snr_db(source, stems["vocals"] + stems["accompaniment"]) > WIENER_MIN_SNR_DB
    assert snr_db(WIENER_VOCALS_GAIN * source, stems["vocals"]) > WIENER_MIN_SNR_DB


def test_input_several_phases_and_flac(files, tmp_path, capsys):
    code, out, err = run(["--input", files["stereo_flac"], "--checkpoint", files["complementary"], "--out", tmp_path,
                          "--device", "cpu", "--phase", "mixture", "misi", "--gl-iters", "2", "--format", "flac"],
                         capsys)
    assert code == 0, err
    source, rate = utils.read_audio_any(files["stereo_flac"])
    for phase in ("mixture", "misi"):
        parts = [sf.read(tmp_path / "stereo" / phase / f"{s}.flac", always_2d=True) for s in ("vocals", "accompaniment")]
        assert all(r == rate and a.shape == source.shape for a, r in parts)
        if phase == "mixture":  # complementary masks + mixture phase: the stems add up to the input
            np.testing.assert_allclose(parts[0][0] + parts[1][0], source, rtol=0, atol=WRITE_ERROR)
            np.testing.assert_allclose(parts[0][0], VOCALS_GAIN * source, rtol=0, atol=WRITE_ERROR)
    # the --workers line, then the four files written
    assert out.splitlines()[0].startswith("--workers") and len(out.splitlines()) == 5


def _model_must_not_run_here(*_, **__):
    raise AssertionError("the model ran in the main process")


@pytest.mark.slow
def test_input_in_parallel_equals_serial(files, tmp_path, capsys, monkeypatch):
    """--workers 2 on the CPU separates whole files in the pool, the model included (here it
    is made to fail in this process); with the model kept here, as on a GPU, the pool runs
    Griffin-Lim and writes the stems. Both write the serial run's files, byte for byte, and
    its lines, in input order."""
    inputs = [files["stereo_flac"], files["mono_mp3"]]
    lines = {}
    for mode, workers in (("serial", 0), ("pool", 2), ("model here", 2)):
        with monkeypatch.context() as patch:
            if mode == "pool":
                patch.setattr(segments, "separate_estimates", _model_must_not_run_here)
            if mode == "model here":
                patch.setattr(processes, "models_in_workers", lambda device, workers: False)
            code, out, err = run(["--input", *inputs, "--checkpoint", files["random"], "--out", tmp_path / mode,
                                  "--device", "cpu", "--phase", "griffinlim", "--gl-iters", "2",
                                  "--workers", workers], capsys)
        assert code == 0, err
        lines[mode] = [line.replace(str(tmp_path / mode), "OUT") for line in out.splitlines()]
    assert lines["serial"] == lines["pool"] == lines["model here"] and len(lines["serial"]) == 4
    for line in lines["serial"]:
        expected = (tmp_path / "serial" / line[4:]).read_bytes()
        for mode in ("pool", "model here"):
            assert (tmp_path / mode / line[4:]).read_bytes() == expected, (mode, line)


def test_phase_default_depends_on_the_mode(capsys):
    """--help says which phase each mode uses when --phase is not given."""
    with pytest.raises(SystemExit):
        inference.build_parser().parse_args(["--help"])
    assert "wiener with --input" in " ".join(capsys.readouterr().out.split())


def test_input_mp3_output(files, tmp_path, capsys):
    # --root is not used with --input: no MUSDB18 is opened, so a missing one does not matter
    code, out, err = run(["--input", files["mono_mp3"], "--checkpoint", files["random"], "--out", tmp_path,
                          "--device", "cpu", "--format", "mp3", "--root", tmp_path / "no_musdb_here"], capsys)
    assert code == 0, err
    for stem in ("vocals", "accompaniment"):
        info = sf.info(str(tmp_path / "mono song" / f"{stem}.mp3"))
        assert (info.samplerate, info.channels) == (22050, 1)
        assert info.frames >= 2.0 * 22050 * 0.95  # MP3 frames pad the end a little


def test_resample_round_trip_and_lengths():
    audio = tones(22050, 1.0, 2)
    up = utils.resample(audio, 22050, 44100)
    assert up.shape == (44100, 2)
    np.testing.assert_allclose(utils.resample(up, 44100, 22050), audio, atol=1e-4)
    assert utils.resample(audio, 22050, 22050) is audio


# ------------------------------------------------------------------- errors

def assert_nothing_written(path):
    assert not path.exists() or not any(path.rglob("*")), list(path.rglob("*"))


@pytest.mark.parametrize("case", ["missing", "not_audio", "directory", "empty", "four_channels"])
def test_input_bad_file_errors_before_writing(case, files, tmp_path, capsys):
    bad = {"missing": tmp_path / "nope.wav", "not_audio": tmp_path / "notes.mp3",
           "directory": tmp_path / "folder.wav", "empty": tmp_path / "empty.flac",
           "four_channels": tmp_path / "quad.wav"}[case]
    if case == "not_audio":
        bad.write_text("these are not the samples you are looking for\n" * 50)
    elif case == "directory":
        bad.mkdir()
    elif case == "empty":
        bad.write_bytes(b"")
    elif case == "four_channels":
        sf.write(bad, np.zeros((1000, 4), dtype=np.float32), 44100)
    out = tmp_path / "out"
    # a good file first: it must not be written either, since every input is checked first
    code, _, err = run(["--input", files["stereo_flac"], bad, "--checkpoint", files["random"], "--out", out,
                        "--device", "cpu"], capsys)
    assert_one_error_line(err, code, mentions=bad.name)
    assert_nothing_written(out)
    with pytest.raises(utils.UserError):  # --debug lets the exception (and its traceback) through
        utils.run_cli(inference.main, [str(a) for a in ["--input", bad, "--checkpoint", files["random"], "--out", out,
                                                        "--device", "cpu", "--debug"]])


@pytest.mark.parametrize("case", ["several", "not_a_checkpoint", "other_config", "other_stft", "cuda"])
def test_input_checkpoint_and_device_errors(case, files, tmp_path, capsys):
    checkpoints = [files["random"]]
    device = "cpu"
    if case == "several":
        checkpoints = [files["random"], files["complementary"]]
    elif case == "not_a_checkpoint":
        checkpoints = [tmp_path / "weights.pt"]
        torch.save({"weights": torch.zeros(3)}, checkpoints[0])
    elif case == "other_config":
        checkpoints = [tmp_path / "other.pt"]
        model = Separator(hidden_size=16, nb_layers=1)
        checkpoint.save(checkpoints[0], {**checkpoint.separator_state(model),
                                          "model_config": {**model.config, "hidden_size": 32}})
    elif case == "other_stft":
        checkpoints = [tmp_path / "stft.pt"]
        save_like_train(checkpoints[0], Separator(hidden_size=16, nb_layers=1),
                        stft={"n_fft": 2048, "hop": 512, "sample_rate": 44100})
    elif case == "cuda":
        if torch.cuda.is_available():
            pytest.skip("checks a machine without CUDA")
        device = "cuda"
    out = tmp_path / "out"
    code, _, err = run(["--input", files["stereo_flac"], "--checkpoint", *checkpoints, "--out", out,
                        "--device", device], capsys)
    line = assert_one_error_line(err, code)
    assert {"several": "--checkpoint", "not_a_checkpoint": "weights.pt", "other_config": "other.pt",
            "other_stft": "n_fft=2048", "cuda": "cuda"}[case] in line
    assert_nothing_written(out)


def test_input_without_ffmpeg(files, tmp_path):
    """An m4a needs ffmpeg: without it on PATH, one line says so (a subprocess, with a
    PATH that holds only a folder without ffmpeg)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    env = {**os.environ, "PATH": str(bin_dir)}
    assert shutil.which("ffmpeg", path=env["PATH"]) is None
    result = subprocess.run([sys.executable, "inference.py", "--input", str(files["stereo_m4a"]), "--checkpoint",
                             str(files["random"]), "--out", str(tmp_path / "out"), "--device", "cpu"],
                            cwd=REPO_ROOT, capture_output=True, text=True, env=script_env(env), timeout=300)
    assert_one_error_line(result, mentions="ffmpeg")
    assert "clip.m4a" in result.stderr
    assert_nothing_written(tmp_path / "out")
