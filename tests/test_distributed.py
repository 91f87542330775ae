"""Data-parallel training: two gloo processes on this CPU train like one process with the same
global batch, and a run killed after an epoch resumes to bitwise the same weights."""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from kd_pipeline.core.data import Normalizer, load_meta, load_split
from kd_pipeline.core.params import TrainParams
from kd_pipeline.train.distributed import Ranks, processes, torchrun_command
from kd_pipeline.train.training import ResumeFile, fit, seed_everything
from tests.conftest import tiny_params

EPOCHS = 2


class Killed(Exception):
    pass


def _model(dropout: float) -> nn.Module:
    """No BatchNorm: on CPU each process normalises its own rows (SyncBatchNorm has no CPU
    kernel), which would make one and two processes differ by more than float order."""
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 48), nn.ReLU(), nn.Dropout(dropout), nn.Linear(48, 10))


def _fit(prepared: Path, ranks: Ranks, dropout: float, state: Path | None = None, kill_after: int = 0) -> dict:
    params = tiny_params(train={"epochs": EPOCHS, "batch_size": 63})  # uneven shares
    meta = load_meta(prepared)
    train, val = load_split(prepared, "train"), load_split(prepared, "val")
    seed_everything(0, 1)
    model = _model(dropout)
    teacher = _model(0.0).eval()

    def kill(epoch: int) -> None:
        if epoch == kill_after:
            raise Killed

    result = fit(model, train, val, params.train, Normalizer(meta.mean, meta.std, torch.device("cpu"), False), 10,
                 teacher=teacher, kd=params.kd, resume=ResumeFile(state, "fp") if state else None,
                 on_epoch_end=kill, ranks=ranks)
    return {"weights": model.state_dict(), "val": [row["val/accuracy"] for row in result.history]}


def _worker(rank: int, port: int, prepared: Path, out: Path) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    ranks = Ranks(rank, 2)
    try:
        results = {"plain": _fit(prepared, ranks, 0.0), "full": _fit(prepared, ranks, 0.3)}
        state = out / "state.pt"
        with contextlib.suppress(Killed):
            _fit(prepared, ranks, 0.3, state, kill_after=1)
        results["resumed"] = _fit(prepared, ranks, 0.3, state)
        torch.save(results, out / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_gloo_processes_train_like_one_and_resume_bitwise(prepared_dir: Path, tmp_path: Path) -> None:
    mp.spawn(_worker, args=(_free_port(), prepared_dir, tmp_path), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    single = _fit(prepared_dir, Ranks(), 0.0)

    for key, value in ranks[0]["plain"]["weights"].items():
        assert torch.equal(value, ranks[1]["plain"]["weights"][key]), f"processes disagree on {key}"
        # same global batch, gradients averaged: equal up to the order of float additions
        torch.testing.assert_close(value, single["weights"][key], rtol=0, atol=1e-4)
    assert ranks[0]["plain"]["val"] == pytest.approx(single["val"], abs=0.01)
    for key, value in ranks[0]["full"]["weights"].items():
        assert torch.equal(value, ranks[0]["resumed"]["weights"][key]), f"resumed run differs at {key}"
        assert torch.equal(ranks[1]["full"]["weights"][key], ranks[1]["resumed"]["weights"][key])


def test_each_process_reads_its_share_of_a_batch() -> None:
    shares = [Ranks(r, 3).rows(10) for r in range(3)]
    assert [(s.start, s.stop) for s in shares] == [(0, 4), (4, 7), (7, 10)]
    assert Ranks().rows(5) == slice(0, 5)


def test_torchrun_command_for_one_machine_and_for_several() -> None:
    one = TrainParams(nproc_per_node=8)
    assert processes(one) == 8
    assert torchrun_command(one, ["-m", "stages.train", "teacher"], "train-teacher")[3:] == [
        "--nproc-per-node=8", "--standalone", "-m", "stages.train", "teacher"]
    two = TrainParams(nproc_per_node=8, nnodes=2, rdzv_endpoint="10.0.0.1:29500")
    command = torchrun_command(two, ["-m", "stages.prune"], "prune")
    assert "--nnodes=2" in command and "--rdzv-endpoint=10.0.0.1:29500" in command and "--rdzv-id=prune" in command
    assert "--standalone" not in command and processes(two) == 16


def test_launch_is_skipped_inside_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    from kd_pipeline.train.distributed import relaunch

    assert relaunch(TrainParams(), ["x.py"], "x") is False  # one process: nothing to launch
    monkeypatch.setitem(os.environ, "TORCHELASTIC_RUN_ID", "1")
    monkeypatch.setitem(os.environ, "LOCAL_RANK", "0")
    assert relaunch(TrainParams(nproc_per_node=2), ["x.py"], "x") is False  # already a worker
