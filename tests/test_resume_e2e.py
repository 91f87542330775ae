"""A real `dvc repro` killed with SIGKILL mid-stage resumes to the same output hashes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.e2e import new_repo, run, write_params

EPOCHS = 12  # enough that the kill lands between the first saved epoch and the last


def _out_hash(repo: Path, stage: str, path: str) -> str:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return next(out["md5"] for out in lock["stages"][stage]["outs"] if out["path"] == path)


def _kill_after_first_epoch(repo: Path, stage: str, state: Path) -> None:
    """`dvc repro` up to a stage, SIGKILLed (its whole process group) once the stage saved an epoch."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(repo), "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.Popen(["dvc", "repro", stage], cwd=repo, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while not state.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, f"{stage} finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert state.is_file()


@pytest.mark.parametrize("stage, role, out", [("distill_student", "student", "models/student"),
                                               ("prune", "pruned", "models/pruned")])
def test_a_killed_stage_resumes_to_the_same_hashes(
    tmp_path_factory: pytest.TempPathFactory, stage: str, role: str, out: str
) -> None:
    repo = new_repo(tmp_path_factory, f"kd-e2e-kill-{role}")
    write_params(repo, student={"train": {"epochs": EPOCHS}}, prune={"epochs": EPOCHS},
                 train={"augment": {"hflip": True}})  # augmentation: the teacher runs per batch, RNG in use
    _kill_after_first_epoch(repo, stage, repo / ".resume" / role / "state.pt")
    resumed = run(["dvc", "repro", stage], repo)
    assert f"{role}: resuming after epoch" in resumed.stdout + resumed.stderr
    assert not (repo / ".resume" / role / "state.pt").exists()
    after_kill = _out_hash(repo, stage, out)

    run(["dvc", "repro", "--force", "--no-run-cache", "--single-item", stage], repo)  # uninterrupted
    assert _out_hash(repo, stage, out) == after_kill
