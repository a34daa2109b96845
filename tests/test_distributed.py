"""Multi-process training: torchrun with the gloo backend on CPU, two processes."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest

from data import EpochSampler
from formats import checkpoint
from pipeline_helpers import REPO_ROOT, TINY_TRAIN, script_env


def test_epoch_sampler_shards_are_disjoint_and_equal():
    n, world = 23, 2
    shards = [list(EpochSampler(n, seed=3, rank=rank, world=world)) for rank in range(world)]
    single = list(EpochSampler(n, seed=3))
    assert len(shards[0]) == len(shards[1]) == n // world  # no process waits on an extra batch
    assert not set(shards[0]) & set(shards[1])
    assert set(shards[0]) | set(shards[1]) == set(single[: n // world * world])


@pytest.mark.slow
def test_torchrun_two_processes_train(hq_cache, tmp_path):
    ckpt = tmp_path / "ckpt"
    args = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
            "train.py", "--cache", str(hq_cache), "--checkpoint-dir", str(ckpt), "--epochs", "2",
            "--save-epochs", "2", *TINY_TRAIN]
    args[args.index("--batch-size") + 1] = "4"  # global batch: 2 per process
    result = subprocess.run(args, cwd=REPO_ROOT, capture_output=True, text=True, env=script_env(), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("model:") == 1  # only rank 0 prints
    state = checkpoint.load(ckpt / "epoch_002.pt")
    assert [h["epoch"] for h in state["history"]] == [1, 2]
    assert not any(k.startswith("module.") for k in state["model_state"])  # saved unwrapped
    with open(ckpt / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(float(r["valid_loss"]) > 0 for r in rows)
