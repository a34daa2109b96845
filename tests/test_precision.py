"""train.py --precision: what auto picks on each card class (torch's device queries patched),
the dtypes each precision runs (under bf16 the linear layers in bfloat16 autocast, on the CPU
as on CUDA, while every LSTM runs in float32 and the loss is float32; fp32 float32 throughout),
fp16 with a GradScaler end to end on the CPU, and --resume of a last.pt written before the flag
existed. The CUDA side of the LSTM policy runs in the fake-CUDA tier."""

from __future__ import annotations

import pytest
import torch

import train
from formats import checkpoint
from model import lstm_forward
from pipeline_helpers import TINY_TRAIN
from separation import segments
from training import loop, precision
from training.settings import build_parser


def watch_dtypes(monkeypatch) -> dict[str, list]:
    """Hooks on every nn.LSTM and nn.Linear of the model train.py builds, and on the
    estimates its losses are computed from: what dtypes each saw, per phase ("train" or "valid");
    the linear layers' within training's estimates (validation runs inference's float32 path)."""
    seen: dict[str, list] = {"lstm_in": [], "lstm_out": [], "lstm_autocast": [], "linear_out": [], "estimate": []}
    real_build, real_estimate = train.build_model, loop.estimate_stems
    real_separate_estimates = segments.separate_estimates
    in_loss = []

    def lstm_pre_hook(module, inputs):
        seen["lstm_in"].append(inputs[0].dtype)
        seen["lstm_autocast"].append(torch.is_autocast_enabled(inputs[0].device.type))

    def linear_hook(module, inputs, output):
        if in_loss:
            seen["linear_out"].append(output.dtype)

    def build_model(config):
        model = real_build(config)
        for module in model.modules():
            if isinstance(module, torch.nn.LSTM):
                module.register_forward_pre_hook(lstm_pre_hook)
                module.register_forward_hook(lambda m, i, out: seen["lstm_out"].append(out[0].dtype))
            elif isinstance(module, torch.nn.Linear):
                module.register_forward_hook(linear_hook)
        return model

    def estimate_stems(model, *args):
        in_loss.append(True)
        estimate = real_estimate(model, *args)
        in_loss.clear()
        seen["estimate"].append(("train", estimate.dtype))
        return estimate

    def separate_estimates(model, *args):
        estimate = real_separate_estimates(model, *args)
        seen["estimate"].append(("valid", estimate.dtype))
        return estimate

    monkeypatch.setattr(train, "build_model", build_model)
    monkeypatch.setattr(loop, "estimate_stems", estimate_stems)
    monkeypatch.setattr(segments, "separate_estimates", separate_estimates)
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


# Compute capabilities of the card classes students train on, and what auto picks on each.
CARDS = {
    "GTX 1080 Ti": ((6, 1), "fp32"),
    "V100": ((7, 0), "fp16"),
    "T4": ((7, 5), "fp16"),
    "A100": ((8, 0), "bf16"),
    "RTX 3090": ((8, 6), "bf16"),
    "RTX 4090": ((8, 9), "bf16"),
    "H100": ((9, 0), "bf16"),
}


def as_card(monkeypatch, capability: tuple[int, int]) -> None:
    """torch's device queries answer as a card of `capability` would; is_bf16_supported says
    True on every one, as torch's does through emulation, so the choice must not rest on it."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)


@pytest.mark.parametrize("card", CARDS)
def test_auto_precision_by_card(card, monkeypatch):
    capability, expected = CARDS[card]
    as_card(monkeypatch, capability)
    chosen = precision.resolve_precision("auto", torch.device("cuda"))
    assert chosen.name == expected
    assert f"{capability[0]}.{capability[1]}" in chosen.reason
    assert chosen.scales_gradients == (expected == "fp16")


def test_auto_precision_on_the_cpu_is_fp32_and_explicit_choices_stay(monkeypatch):
    assert precision.resolve_precision("auto", torch.device("cpu")).name == "fp32"
    assert precision.resolve_precision("fp16", torch.device("cpu")).name == "fp16"
    as_card(monkeypatch, (6, 1))
    emulated = precision.resolve_precision("bf16", torch.device("cuda"))
    assert emulated.name == "bf16" and "emulates bf16" in emulated.reason
    slow = precision.resolve_precision("fp16", torch.device("cuda"))
    assert slow.name == "fp16" and "no tensor cores" in slow.reason
    as_card(monkeypatch, (9, 0))
    assert precision.resolve_precision("fp32", torch.device("cuda")).name == "fp32"
    with pytest.raises(ValueError):
        precision.resolve_precision("fp8", torch.device("cpu"))


def test_train_logs_and_records_the_choice_and_why(hq_cache, tmp_path, capsys):
    train.main(["--cache", str(hq_cache), "--checkpoint-dir", str(tmp_path), *TINY_TRAIN, "--epochs", "1"])
    assert "precision: fp32 (auto on cpu: float32)" in capsys.readouterr().out
    args = checkpoint.load(tmp_path / "best.pt")["train_args"]
    assert args["precision"] == "fp32" and args["precision_reason"] == "auto on cpu: float32"


def test_fp16_with_grad_scaler_trains_end_to_end_on_the_cpu(hq_cache, tmp_path, monkeypatch):
    """--precision fp16 on the CPU: the linear layers run in float16 under CPU autocast, the
    LSTMs in float32 (the policy off CUDA), and the GradScaler("cpu") scales every backward
    pass and steps the optimizer. Its state goes into last.pt, and --resume repeats an
    unbroken run."""
    seen = watch_dtypes(monkeypatch)
    scaled = []
    real_scale = torch.amp.GradScaler.scale

    def scale(self, outputs):
        scaled.append(self.is_enabled())
        return real_scale(self, outputs)

    monkeypatch.setattr(torch.amp.GradScaler, "scale", scale)
    argv = ["--cache", str(hq_cache), *TINY_TRAIN, "--precision", "fp16"]
    train.main([*argv, "--checkpoint-dir", str(tmp_path / "straight"), "--epochs", "2"])
    assert scaled and all(scaled)
    assert set(seen["lstm_in"]) == {torch.float32} and not any(seen["lstm_autocast"])
    assert set(seen["linear_out"]) == {torch.float16}
    assert {dtype for _, dtype in seen["estimate"]} == {torch.float32}
    straight = checkpoint.load(tmp_path / "straight" / "last.pt")
    assert straight["train_args"]["precision"] == "fp16"
    assert straight["scaler_state"]["scale"] > 0  # a live scaler's state, not an empty dict
    assert all(torch.isfinite(torch.tensor([h["train_loss"], h["valid_loss"]])).all() for h in straight["history"])

    train.main([*argv, "--checkpoint-dir", str(tmp_path / "resumed"), "--epochs", "1"])
    train.main([*argv, "--checkpoint-dir", str(tmp_path / "resumed"), "--epochs", "2", "--resume"])
    resumed = checkpoint.load(tmp_path / "resumed" / "last.pt")
    assert resumed["scaler_state"] == straight["scaler_state"]
    for key, tensor in straight["model_state"].items():
        torch.testing.assert_close(resumed["model_state"][key], tensor, rtol=1e-5, atol=1e-6, msg=key)


def test_grad_scaler_skips_a_step_whose_gradients_overflow():
    """What fp16 training rests on: an inf gradient skips the optimizer step and halves the
    scale, instead of writing inf into the weights."""
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    scaler = precision.Precision("fp16", "test").grad_scaler("cpu")
    start = scaler.get_scale()
    scaler.scale((weight * torch.tensor([1.0, float("inf"), 1.0])).sum()).backward()
    scaler.step(optimizer)
    scaler.update()
    assert torch.equal(weight.detach(), torch.ones(3)) and scaler.get_scale() == start / 2


def test_lstm_policy_off_cuda_is_float32_under_every_autocast():
    lstm = torch.nn.LSTM(4, 3, batch_first=True)
    x = torch.randn(2, 5, 4)
    for dtype in (torch.bfloat16, torch.float16):
        with torch.autocast("cpu", dtype=dtype):
            out, _ = lstm_forward(lstm, x.to(dtype))
        assert out.dtype == torch.float32
    torch.testing.assert_close(lstm_forward(lstm, x)[0], lstm(x)[0], rtol=0, atol=0)


def test_help_states_the_precision_default():
    text = " ".join(build_parser().format_help().split())
    assert "--precision {auto,fp32,bf16,fp16}" in text
    assert "auto: by the card's compute capability" in text and "(default: auto)" in text
