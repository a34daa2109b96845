"""train.py --precision: under bf16 the linear layers run in bfloat16 autocast (on the CPU
as on CUDA) while every LSTM runs in float32 and the loss is float32; fp32 is float32
throughout. Also --resume of a last.pt written before the flag existed."""

from __future__ import annotations

import pytest
import torch

import checkpoint
import train
from pipeline_helpers import TINY_TRAIN


def watch_dtypes(monkeypatch) -> dict[str, list]:
    """Hooks on every nn.LSTM and nn.Linear of the model train.py builds, and on the
    estimates its losses are computed from: what dtypes each saw, per phase ("train" or "valid")."""
    seen: dict[str, list] = {"lstm_in": [], "lstm_out": [], "lstm_autocast": [], "linear_out": [], "estimate": []}
    real_build, real_estimate = train.build_model, train.estimate_stems

    def lstm_pre_hook(module, inputs):
        seen["lstm_in"].append(inputs[0].dtype)
        seen["lstm_autocast"].append(torch.is_autocast_enabled(inputs[0].device.type))

    def build_model(config):
        model = real_build(config)
        for module in model.modules():
            if isinstance(module, torch.nn.LSTM):
                module.register_forward_pre_hook(lstm_pre_hook)
                module.register_forward_hook(lambda m, i, out: seen["lstm_out"].append(out[0].dtype))
            elif isinstance(module, torch.nn.Linear):
                module.register_forward_hook(lambda m, i, out: seen["linear_out"].append(out.dtype))
        return model

    def estimate_stems(model, *args):
        estimate = real_estimate(model, *args)
        seen["estimate"].append(("train" if model.training else "valid", estimate.dtype))
        return estimate

    monkeypatch.setattr(train, "build_model", build_model)
    monkeypatch.setattr(train, "estimate_stems", estimate_stems)
    return seen


@pytest.mark.parametrize("model", [["umx"], ["bsrnn"], ["bsrnn", "--mask", "complex"]], ids=["umx", "bsrnn", "complex"])
@pytest.mark.parametrize("flags, recorded, linear_dtype", [
    ([], "fp32", torch.float32),  # auto on the CPU
    (["--precision", "bf16"], "bf16", torch.bfloat16),
])
def test_lstms_run_in_float32_under_bf16(model, flags, recorded, linear_dtype, hq_cache, tmp_path, monkeypatch):
    seen = watch_dtypes(monkeypatch)
    train.main(["--cache", str(hq_cache), "--checkpoint-dir", str(tmp_path), "--model", *model, *TINY_TRAIN,
                "--epochs", "1", *flags])
    assert seen["lstm_in"] and set(seen["lstm_in"]) == {torch.float32}
    assert set(seen["lstm_out"]) == {torch.float32}
    assert not any(seen["lstm_autocast"])  # float32 weights too: autocast off inside the LSTM
    # The control: the linear layers around the LSTMs did run in bf16 under --precision bf16
    # (CPU autocast would run the LSTMs in bf16 too, were float32_lstm not there).
    assert seen["linear_out"] and set(seen["linear_out"]) == {linear_dtype}
    assert {phase for phase, _ in seen["estimate"]} == {"train", "valid"}
    # so the losses are float32: complex masks multiply the mixture STFT in float32 (complex64)
    assert {dtype for _, dtype in seen["estimate"]} == {torch.complex64 if "complex" in model else torch.float32}
    state = checkpoint.load(tmp_path / "last.pt")
    assert state["train_args"]["precision"] == recorded
    assert all(torch.isfinite(torch.tensor(h["train_loss"])) for h in state["history"])


def test_resume_a_last_pt_from_before_the_flag(hq_cache, tmp_path):
    argv = ["--cache", str(hq_cache), "--checkpoint-dir", str(tmp_path), *TINY_TRAIN, "--precision", "bf16"]
    train.main([*argv, "--epochs", "1"])
    state = checkpoint.load(tmp_path / "last.pt")
    del state["train_args"]["precision"]
    checkpoint.save(tmp_path / "last.pt", state)
    train.main([*argv, "--epochs", "2", "--resume"])
    resumed = checkpoint.load(tmp_path / "last.pt")
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]
    assert resumed["train_args"]["precision"] == "bf16"


def test_auto_precision_is_bf16_only_on_cuda():
    assert train.resolve_precision("auto", torch.device("cuda")) == "bf16"
    assert train.resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert train.resolve_precision("bf16", torch.device("cpu")) == "bf16"
    assert train.resolve_precision("fp32", torch.device("cuda")) == "fp32"


def test_help_states_the_precision_default():
    text = " ".join(train.build_parser().format_help().split())
    assert "--precision {auto,fp32,bf16}" in text
    assert "auto: bf16 on CUDA, fp32 on CPU" in text and "(default: auto)" in text
