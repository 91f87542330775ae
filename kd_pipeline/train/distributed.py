"""Data-parallel training under torchrun: the launch, the process group, and the few collectives
the training loop needs (this process's rows of a batch, gathered predictions, shared state).

One process is the default and needs none of it: `Ranks()` is a world of one whose collectives
return their input, so the single-process path runs the same code with no process group.
Several processes (`train.nproc_per_node` × `train.nnodes` > 1) make a stage script start itself
again under torchrun, the launcher PyTorch ships from one GPU to many nodes; each copy then joins
the group here: NCCL on CUDA, gloo on CPU.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from kd_pipeline.core.params import TrainParams


def processes(cfg: TrainParams) -> int:
    return cfg.nproc_per_node * cfg.nnodes


def under_torchrun() -> bool:
    """True inside a process torchrun started (it sets these for every worker)."""
    return "TORCHELASTIC_RUN_ID" in os.environ and "LOCAL_RANK" in os.environ


def torchrun_command(cfg: TrainParams, script: list[str], run_id: str) -> list[str]:
    """`torchrun` for this machine: standalone on one node; with a c10d rendezvous at
    `train.rdzv_endpoint` (node 0's host:port) across several, where every node runs the same.
    `script` is `["-m", "stages.train", ROLE]`: as a module, so every worker imports this
    checkout's library, as the stage itself does."""
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={cfg.nproc_per_node}"]
    if cfg.nnodes == 1:
        command.append("--standalone")
    else:
        command += [f"--nnodes={cfg.nnodes}", "--rdzv-backend=c10d",
                    f"--rdzv-endpoint={cfg.rdzv_endpoint}", f"--rdzv-id={run_id}"]
    return command + script


def relaunch(cfg: TrainParams, script: list[str], run_id: str) -> bool:
    """Run `script` under torchrun when several processes are asked for and this is not one of
    them. True when it ran (the caller's work is done); exits with the workers' status on failure."""
    if processes(cfg) == 1 or under_torchrun():
        return False
    print(f"{run_id}: {cfg.nproc_per_node} process(es) per node × {cfg.nnodes} node(s) with torchrun", flush=True)
    code = subprocess.call(torchrun_command(cfg, script, run_id))
    if code != 0:
        print(f"error: {run_id} failed under torchrun (exit {code}); the failing worker's message is above",
              file=sys.stderr)
        sys.exit(code)
    return True


@dataclass(frozen=True)
class Ranks:
    """This process's place among the training processes; a world of one by default."""

    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        """Only the first process writes outputs, dvclive files and the resume state."""
        return self.rank == 0

    def rows(self, count: int) -> slice:
        """This process's contiguous share of `count` rows (shares differ by at most one)."""
        base, extra = divmod(count, self.world)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (1 if self.rank < extra else 0))

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every process's rows, concatenated in rank order, on the CPU."""
        if self.world == 1:
            return tensor
        return torch.cat(self.collect(tensor.cpu()))

    def collect(self, value: Any) -> list[Any]:
        """One picklable value from each process, in rank order."""
        if self.world == 1:
            return [value]
        values: list[Any] = [None] * self.world
        dist.all_gather_object(values, value)
        return values

    def share(self, value: Any) -> Any:
        """The first process's value, on every process (the resume state it read)."""
        if self.world == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def sync_buffers(self, model: torch.nn.Module) -> None:
        """Give every process the first one's buffers (BatchNorm running statistics, which each
        process updates from its own rows), so all evaluate, and keep, the same model."""
        if self.world == 1:
            return
        for buffer in model.buffers():
            dist.broadcast(buffer.data, src=0)


ONE_PROCESS = Ranks()


def _die_with_launcher() -> None:
    """torchrun starts each worker in a session of its own, so a SIGKILL to the stage's process
    group (a killed `dvc repro`) would leave the workers training and writing outputs DVC no
    longer expects. On Linux, ask the kernel to kill this worker when its launcher dies."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    launcher = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != launcher:  # the launcher died before the request took effect
        os._exit(1)


@contextmanager
def session(device: torch.device) -> Iterator[tuple[Ranks, torch.device]]:
    """Join the process group when torchrun started this process; else a world of one.

    Yields the ranks and this process's device (its own GPU on CUDA). Other processes' standard
    output is silenced so that each line appears once; their errors still reach stderr.
    """
    if not under_torchrun():
        yield ONE_PROCESS, device
        return
    _die_with_launcher()
    rank, world, local_rank = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                            device_id=device if device.type == "cuda" else None)
    stdout = sys.stdout
    if rank != 0:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - restored below
    try:
        yield Ranks(rank, world), device
    finally:
        if sys.stdout is not stdout:
            sys.stdout.close()
            sys.stdout = stdout
        dist.destroy_process_group()


def wrap(model: torch.nn.Module, ranks: Ranks, device: torch.device) -> torch.nn.Module:
    """The model as each training step should call it: itself for one process; for several, in
    DistributedDataParallel (gradients averaged across processes), with BatchNorm statistics
    synchronised across processes on CUDA (SyncBatchNorm has no CPU kernel)."""
    if ranks.world == 1:
        return model
    if device.type == "cuda":
        torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
