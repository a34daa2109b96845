"""utils.py: the STFT/ISTFT pair, atomic writes, audio I/O, checkpoints, devices, run_cli."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import torch

import utils
from formats import checkpoint
from model import Separator
from utils import HOP, N_FFT, UserError


def _noise(shape, seed=0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).uniform(-1, 1, size=shape).astype(np.float32))


# ------------------------------------------------------------------ STFT

@pytest.mark.parametrize("shape", [(44101,), (2, 12345), (3, 2, 7777), (2, 1001), (1, 2, 4096 * 3 + 17)])
def test_stft_istft_round_trip(shape):
    audio = _noise(shape, seed=sum(shape))
    spec = utils.stft(audio)
    assert spec.is_complex()
    assert spec.shape == (*shape[:-1], N_FFT // 2 + 1, utils.nb_frames(shape[-1]))
    back = utils.istft(spec, shape[-1])
    assert back.shape == audio.shape
    assert torch.max(torch.abs(back - audio)).item() < 1e-5


def test_stft_batches_are_independent():
    """A batched STFT equals the STFT of each signal on its own (no mixing across the batch)."""
    audio = _noise((3, 2, 9000), seed=1)
    batched = utils.stft(audio)
    for i in range(3):
        for c in range(2):
            torch.testing.assert_close(batched[i, c], utils.stft(audio[i, c]), rtol=0, atol=1e-5)


@pytest.mark.parametrize("length", [44100, 30001])
def test_stft_magnitude_matches_librosa(length):
    audio = _noise((2, length), seed=length).numpy()
    ours = utils.stft(torch.from_numpy(audio)).abs().numpy()
    ref = np.abs(librosa.stft(audio, n_fft=4096, hop_length=1024, window="hann", center=True, pad_mode="constant"))
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5 * ref.max())


def test_istft_inverts_librosa_stft():
    """The inverse agrees with librosa too: utils.istft(librosa.stft(x)) == x."""
    audio = _noise((2, 20000), seed=5).numpy()
    spec = librosa.stft(audio, n_fft=N_FFT, hop_length=HOP, window="hann", center=True, pad_mode="constant")
    back = utils.istft(torch.from_numpy(spec.astype(np.complex64)), audio.shape[-1]).numpy()
    np.testing.assert_allclose(back, audio, atol=1e-5)


# ----------------------------------------------------------------- files

def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "sub" / "file.txt"
    with pytest.raises(RuntimeError):
        with utils.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert not target.exists()
    assert list((tmp_path / "sub").iterdir()) == []  # no *.part left behind either
    utils.write_text(target, "complete")
    assert target.read_text() == "complete"
    assert [p.name for p in target.parent.iterdir()] == ["file.txt"]


def test_atomic_path_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "file.txt"
    utils.write_text(target, "old")
    with pytest.raises(RuntimeError):
        with utils.atomic_path(target) as tmp:
            tmp.write_text("new")
            raise RuntimeError("crash")
    assert target.read_text() == "old"


def test_save_load_audio_round_trip(tmp_path):
    audio = _noise((1000, 2), seed=3).numpy() * 0.9
    utils.save_audio(tmp_path / "a.wav", audio)
    back, rate = utils.load_audio(tmp_path / "a.wav")
    assert rate == utils.SAMPLE_RATE and back.dtype == np.float32 and back.shape == (1000, 2)
    np.testing.assert_allclose(back, audio, atol=1.0 / 32768 + 1e-7)


def test_load_audio_error_is_user_error(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    with pytest.raises(UserError):
        utils.load_audio(bad)


# ----------------------------------------------------------- checkpoints

def test_checkpoint_round_trip_and_load_separator(tmp_path):
    torch.manual_seed(0)
    model = Separator(hidden_size=16, nb_layers=1, max_bin=100).eval()
    path = tmp_path / "ck.pt"
    checkpoint.save(path, checkpoint.separator_state(model, epoch=3))
    state = checkpoint.load(path)
    assert state["epoch"] == 3 and state["checkpoint_version"] == checkpoint.CHECKPOINT_VERSION
    rebuilt, _ = checkpoint.load_separator(path)
    assert not rebuilt.training
    x = torch.rand(1, 2, 2049, 5)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize("content", [
    lambda p: p.write_bytes(np.random.default_rng(0).bytes(4096)),  # random bytes
    lambda p: torch.save({"weights": torch.zeros(3)}, p),  # a torch file, not our checkpoint
    lambda p: torch.save([1, 2, 3], p),
    None,  # missing file
])
def test_load_checkpoint_rejects_non_checkpoints(tmp_path, content):
    path = tmp_path / "x.pt"
    if content is not None:
        content(path)
    with pytest.raises(UserError):
        checkpoint.load(path)


def test_load_separator_rejects_mismatched_weights(tmp_path):
    model = Separator(hidden_size=16, nb_layers=1, max_bin=100)
    config = {**model.config, "hidden_size": 32}
    checkpoint.save(tmp_path / "ck.pt", {**checkpoint.separator_state(model), "model_config": config})
    with pytest.raises(UserError):
        checkpoint.load_separator(tmp_path / "ck.pt")


# ------------------------------------------------------------- device/CLI

@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
def test_resolve_device_cuda_without_cuda():
    with pytest.raises(UserError):
        utils.resolve_device("cuda")
    assert utils.resolve_device("auto").type == "cpu"
    assert utils.resolve_device("cpu").type == "cpu"


def test_run_cli_convention(capsys):
    def failing(argv):
        raise UserError("something the user can fix")

    assert utils.run_cli(failing, ["--x"]) == 2
    assert capsys.readouterr().err == "error: something the user can fix\n"
    with pytest.raises(UserError):
        utils.run_cli(failing, ["--debug"])
    assert utils.run_cli(lambda argv: None, []) == 0
