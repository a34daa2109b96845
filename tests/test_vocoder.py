"""The mel vocoder: its input (utils.log_mel), the network's output length, that training
lowers the loss, vocoder.py end to end with --resume, and inference.py --phase vocoder
with the checkpoint it writes (and its errors)."""

from __future__ import annotations

import json

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch
from test_input import save_like_train, tones

import inference
import utils
import vocoder as vocoder_script
from conftest import VALID_TRACKS
from formats import checkpoint
from model import Separator, count_parameters
from pipeline_helpers import assert_one_error_line, run_script
from separation import processes
from separation.mel_vocoder import Vocoder
from separation.phase import PHASE_METHODS, vocode
from utils import STEMS

# The smallest vocoder.py run that exercises all of it: a 2-block, 16-wide network.
TINY_VOCODER = ["--n-mels", "32", "--dim", "16", "--hidden", "32", "--blocks", "2", "--seq-dur", "0.25",
                "--batch-size", "2", "--complex-weight", "0.5", "--workers", "0", "--device", "cpu", "--seed", "3"]


def tiny_vocoder(seed: int = 0) -> Vocoder:
    torch.manual_seed(seed)
    return Vocoder(n_mels=32, dim=16, hidden=32, nb_blocks=2)


# ------------------------------------------------------------------- log mel

def test_log_mel_is_librosas_filterbank_on_the_projects_stft():
    audio = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 3, 20000)).astype(np.float32))
    mag = utils.stft(audio).abs()  # (2, 3, 2049, frames)
    mel = utils.log_mel(mag)
    assert mel.shape == (2, 3, utils.N_MELS, utils.nb_frames(20000))
    filters = librosa.filters.mel(sr=utils.SAMPLE_RATE, n_fft=utils.N_FFT, n_mels=utils.N_MELS, fmax=utils.MEL_FMAX)
    expected = np.log(np.maximum(np.einsum("mf,abft->abmt", filters, mag.numpy()), utils.MEL_FLOOR))
    np.testing.assert_allclose(mel.numpy(), expected, rtol=1e-4, atol=1e-4)


def test_log_mel_other_resolution_and_silence():
    # the bins say which n_fft the filterbank is for: the loss's shorter windows use it too
    mag = utils.stft(torch.randn(1, 5000), n_fft=512, hop=128).abs()
    assert utils.log_mel(mag, n_mels=32).shape == (1, 32, utils.nb_frames(5000, 128))
    silent = utils.log_mel(torch.zeros(utils.N_FFT // 2 + 1, 4))
    torch.testing.assert_close(silent, torch.full((utils.N_MELS, 4), float(np.log(utils.MEL_FLOOR))))


# ------------------------------------------------------------------- network

def test_default_vocoder_is_small():
    assert 1_000_000 < count_parameters(Vocoder()) < 5_000_000


@pytest.mark.parametrize("length", [1, utils.HOP - 1, utils.HOP, 5 * utils.HOP + 17, utils.SAMPLE_RATE])
def test_vocoder_returns_audio_of_the_requested_length(length):
    model = tiny_vocoder().eval()
    mag = utils.stft(torch.randn(3, length)).abs()
    with torch.no_grad():
        audio = vocode(model, mag, length)
    assert audio.shape == (3, length) and torch.isfinite(audio).all()


@pytest.mark.parametrize("bin_index", [100, 101, 102, 103])
def test_a_steady_input_gives_a_steady_tone_at_any_bin(bin_index):
    """Zero phase increments on a constant input: the carrier phase alone makes a steady
    tone at the bin's centre frequency, whose own STFT is that of a pure sine (a constant
    absolute phase, as in Vocos, would cancel itself at bins that are not multiples of 4)."""
    model = tiny_vocoder().eval()
    length = 39 * utils.HOP
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()  # zero increments ...
        model.head.bias[:model.nb_bins] = -30.0  # ... silence ...
        model.head.bias[bin_index] = 0.0  # ... but magnitude 1 at one bin
        audio = utils.istft(model(torch.zeros(1, model.n_mels, utils.nb_frames(length))), length)[0]
    # one bin of magnitude 1 overlap-added with a Hann window (hop n_fft / 4): amplitude 8 / (3 n_fft)
    sine = 8 / (3 * utils.N_FFT) * torch.cos(2 * np.pi * bin_index * torch.arange(length) / utils.N_FFT)
    middle = slice(8, -8)  # away from the edges
    torch.testing.assert_close(utils.stft(audio).abs()[:, middle], utils.stft(sine).abs()[:, middle],
                               rtol=0, atol=1e-4)


def test_vocoder_phase_method_shape_and_batching(monkeypatch):
    from separation import phase

    model = tiny_vocoder().eval()
    mag = utils.stft(torch.randn(2, 2, 7000)).abs()
    whole = PHASE_METHODS["vocoder"](mag, None, 7000, vocoder=model)
    assert whole.shape == (2, 2, 7000) and whole.dtype == np.float32
    monkeypatch.setattr(phase, "MAX_BATCH_BINS", 1)  # one signal at a time: the same audio
    np.testing.assert_allclose(PHASE_METHODS["vocoder"](mag, None, 7000, vocoder=model), whole, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="vocoder"):
        PHASE_METHODS["vocoder"](mag, None, 7000)


def test_a_few_training_steps_lower_the_loss():
    t = np.arange(utils.SAMPLE_RATE // 2) / utils.SAMPLE_RATE
    audio = torch.from_numpy(np.stack([0.3 * np.sin(2 * np.pi * 220 * t), 0.2 * np.sin(2 * np.pi * 330 * t)])
                             .astype(np.float32))
    model = tiny_vocoder()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss, parts = vocoder_script.vocoder_loss(model, audio, complex_weight=1.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        assert loss.item() == pytest.approx(parts["mel"] + parts["complex"], rel=1e-5)
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses


# ------------------------------------------------------ vocoder.py end to end

@pytest.fixture(scope="module")
def trained(hq_cache, tmp_path_factory):
    """vocoder.py as a subprocess, 6 steps saved every 3."""
    out = tmp_path_factory.mktemp("vocoder") / "vocoder.pt"
    result = run_script("vocoder.py", "--cache", hq_cache, "--out", out, "--steps", "6", "--save-every", "3",
                        *TINY_VOCODER)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result.stdout


def test_vocoder_script_writes_a_checkpoint(trained):
    out, stdout = trained
    model, state = checkpoint.load_vocoder(out)
    assert state["step"] == 6 and [h["step"] for h in state["history"]] == list(range(1, 7))
    assert all(np.isfinite(h["loss"]) for h in state["history"])
    assert state["stft"] == {"n_fft": utils.N_FFT, "hop": utils.HOP, "sample_rate": utils.SAMPLE_RATE}
    assert state["mel"]["n_mels"] == model.n_mels == 32 and state["mel"]["fmax"] == utils.MEL_FMAX
    assert state["train_args"]["dim"] == 16 and state["parameters"] == count_parameters(model)
    assert f"{count_parameters(model):,} parameters" in stdout
    assert not list(out.parent.glob("*.part"))


def _best_matches(excerpts: list[torch.Tensor], signals: list[torch.Tensor]) -> list[float]:
    """For each excerpt, the max over signals and positions of its cosine similarity with a
    window of the signal (1 where it is a scaled copy of that window), by FFT correlation."""
    size = excerpts[0].shape[-1]
    n = 1 << (max(s.shape[-1] for s in signals) + size).bit_length()  # a power of two: a fast FFT size
    spectra, window_norms = [], []
    for signal in signals:
        spectra.append(torch.fft.rfft(signal, n))
        energy = torch.cat([torch.zeros(1, dtype=torch.float64), signal.double().square().cumsum(0)])
        norms = (energy[size:] - energy[:-size]).clamp_min(0).sqrt().float()
        # near-silent windows would turn FFT round-off into spurious matches: left out
        window_norms.append(torch.where(norms > 1e-3 * norms.max(), norms, torch.inf))
    best = []
    for excerpt in excerpts:
        conj = torch.fft.rfft(excerpt, n).conj()
        best.append(max(float((torch.fft.irfft(spectrum * conj, n)[: norms.shape[0]] / norms).max())
                        for spectrum, norms in zip(spectra, window_norms)) / float(excerpt.double().norm()))
    return best


def test_vocoder_excerpts_are_stems_of_the_given_tracks(hq_cache):
    from data import VocoderChunks
    from formats.cache import StemCache

    cache = StemCache(hq_cache)
    names = cache.names("train")  # what vocoder.py passes: the validation tracks are never read
    assert not set(VALID_TRACKS) & set(names)
    dataset = VocoderChunks(cache, names, 2000, nb_items=6, seed=1)
    excerpts = [dataset[i] for i in range(len(dataset))]
    assert all(e.shape == (2000,) and e.dtype == torch.float32 and e.norm() > 0 for e in excerpts)  # silence redrawn
    torch.testing.assert_close(dataset[4], excerpts[4])  # an item is a function of (seed, index)
    signals = []  # one channel of the vocals or of drums + bass + other, of a given track
    for name in names:
        stems = torch.from_numpy(np.array(cache.stems(name)))
        signals += [stems[0, c] for c in range(2)] + [stems[1:, c].sum(0) for c in range(2)]
    assert all(0.999 < match < 1.001 for match in _best_matches(excerpts, signals))


def test_resume_after_an_interruption_equals_an_uninterrupted_run(trained, hq_cache, tmp_path, monkeypatch):
    straight, _ = trained
    resumed = tmp_path / "vocoder.pt"
    argv = [str(a) for a in ["--cache", hq_cache, "--out", resumed, "--steps", "6", "--save-every", "3",
                             *TINY_VOCODER]]
    calls = []
    real_loss = vocoder_script.vocoder_loss

    def interrupted_at_step_5(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(vocoder_script, "vocoder_loss", interrupted_at_step_5)
    assert utils.run_cli(vocoder_script.main, argv) == 130
    assert checkpoint.load(resumed)["step"] == 3  # the last save before the interruption
    monkeypatch.setattr(vocoder_script, "vocoder_loss", real_loss)
    assert utils.run_cli(vocoder_script.main, argv + ["--resume"]) == 0
    a, b = (checkpoint.load(p) for p in (straight, resumed))
    assert [h["step"] for h in b["history"]] == list(range(1, 7))  # steps 4-5 of the interrupted run are gone
    np.testing.assert_allclose([h["loss"] for h in b["history"]], [h["loss"] for h in a["history"]], rtol=1e-5)
    for key, tensor in a["model_state"].items():
        torch.testing.assert_close(b["model_state"][key], tensor, rtol=1e-4, atol=1e-6, msg=key)


def test_resume_past_the_end_is_one_error_line(trained, hq_cache, capsys):
    out, _ = trained
    code = utils.run_cli(vocoder_script.main, ["--cache", str(hq_cache), "--out", str(out), "--steps", "6",
                                               "--resume"])
    assert_one_error_line(capsys.readouterr().err, code, mentions="already at step 6")


def test_resume_of_another_checkpoint_is_one_error_line_after_removing_only_its_own_parts(
        separator_checkpoint, hq_cache, tmp_path, capsys):
    out = tmp_path / "vocoder.pt"
    out.write_bytes(separator_checkpoint.read_bytes())
    own, others = tmp_path / ".vocoder.pt.k1ll3d.part", tmp_path / ".last.pt.wr1t1ng.part"  # a killed save; a live one
    own.touch()
    others.touch()
    code = utils.run_cli(vocoder_script.main, ["--cache", str(hq_cache), "--out", str(out), "--steps", "2",
                                               "--resume"])
    assert_one_error_line(capsys.readouterr().err, code, mentions="cannot be resumed")
    assert not own.exists() and others.exists()


# ------------------------------------------------------ inference --phase vocoder

@pytest.fixture(scope="module")
def separator_checkpoint(tmp_path_factory):
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("separator") / "tiny.pt"
    save_like_train(path, Separator(hidden_size=16, nb_layers=1))
    return path


def test_inference_input_with_the_trained_vocoder(trained, separator_checkpoint, tmp_path, capsys, monkeypatch):
    songs = [tmp_path / "song.flac", tmp_path / "other.wav"]
    sf.write(songs[0], tones(48000, 1.5, 2), 48000)
    sf.write(songs[1], tones(44100, 0.7, 1), 44100)
    loads = []
    monkeypatch.setattr(processes, "load_vocoder", lambda *a: loads.append(a) or checkpoint.load_vocoder(*a))
    code = utils.run_cli(inference.main, [str(a) for a in [
        "--input", *songs, "--checkpoint", separator_checkpoint, "--phase", "mixture", "vocoder",
        "--vocoder", trained[0], "--out", tmp_path / "out", "--device", "cpu"]])
    assert code == 0, capsys.readouterr().err
    assert len(loads) == 1  # once per run, not per file or segment
    for song, rate, shape in ((songs[0], 48000, (int(1.5 * 48000), 2)), (songs[1], 44100, (int(0.7 * 44100), 1))):
        written = {}
        for phase in ("mixture", "vocoder"):
            for stem in STEMS:
                audio, file_rate = sf.read(tmp_path / "out" / song.stem / phase / f"{stem}.wav", always_2d=True)
                assert file_rate == rate and audio.shape == shape and np.isfinite(audio).all()
                written[phase, stem] = audio
        assert not np.allclose(written["vocoder", "vocals"], written["mixture", "vocals"])


@pytest.mark.slow  # museval on one 4-second track
def test_inference_musdb_with_the_trained_vocoder(trained, separator_checkpoint, hq_root, tmp_path):
    result = run_script("inference.py", "--root", hq_root, "--is-wav", "--subset", "train", "--split", "valid",
                        "--tracks", VALID_TRACKS[0], "--checkpoint", separator_checkpoint, "--phase", "vocoder",
                        "--vocoder", trained[0], "--samples", "0", "--workers", "0", "--save-estimates",
                        "--out", tmp_path / "results", "--device", "cpu")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "results" / "tiny-vocoder" / "summary.json").read_text())
    assert summary["phase"] == "vocoder" and summary["vocoder"] == str(trained[0])
    assert all(np.isfinite(summary["tracks"][VALID_TRACKS[0]][stem]) for stem in STEMS)
    info = sf.info(str(tmp_path / "results" / "tiny-vocoder" / "estimates" / VALID_TRACKS[0] / "vocals.wav"))
    assert (info.samplerate, info.channels, info.frames) == (44100, 2, int(4.0 * 44100))


@pytest.mark.parametrize("case", ["missing_flag", "missing_file", "separator", "not_a_checkpoint"])
def test_bad_vocoder_is_one_error_line_before_any_work(case, separator_checkpoint, tmp_path, capsys):
    song = tmp_path / "song.wav"
    sf.write(song, tones(44100, 0.5, 2), 44100)
    path = {"missing_flag": None, "missing_file": tmp_path / "nope.pt", "separator": separator_checkpoint,
            "not_a_checkpoint": song}[case]
    argv = ["--input", song, "--checkpoint", separator_checkpoint, "--phase", "vocoder", "--out", tmp_path / "out",
            "--device", "cpu"] + ([] if path is None else ["--vocoder", path])
    code = utils.run_cli(inference.main, [str(a) for a in argv])
    line = assert_one_error_line(capsys.readouterr().err, code)
    assert {"missing_flag": "--vocoder", "missing_file": "nope.pt", "separator": "not a vocoder checkpoint",
            "not_a_checkpoint": "song.wav"}[case] in line
    assert not (tmp_path / "out").exists()
