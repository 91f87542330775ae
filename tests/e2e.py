"""Helpers of the end-to-end tests: a temporary git + DVC repository with this project's
stages, tiny params, and commands run as a user would run them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, TINY_MODEL
from tests.forkserver import stage_path

ROLES = ("teacher", "assistant", "student")
STAGES = {
    "prepare", "train_teacher", "distill_assistant", "distill_student", "distill_direct", "train_baseline",
    "prune", "quantize", "cpu", "evaluate", "visualize", "export",
}
ALWAYS_CHANGED = {"cpu": ["always changed"]}  # what `dvc status` says of the cpu stage after any run


def variants_of(repo: Path) -> set[str]:
    """The variants evaluate measures: every float model, the teacher in ONNX Runtime, and fp32 and
    int8 ONNX of the pruned model and of the small model it was pruned from (its card's origin)."""
    source = json.loads((repo / "models/pruned/model.json").read_text())["origin"]["source"]
    return {*ROLES, "direct", "baseline", "pruned", "teacher_onnx", "pruned_onnx", "pruned_int8",
            f"{source}_onnx", f"{source}_int8"}


def _env(cwd: Path) -> dict[str, str]:
    """A user's shell in `cwd`: the warm stage shims first, the project importable, no analytics."""
    env = dict(os.environ)
    env["PATH"] = stage_path(env.get("PATH", ""))
    env["PYTHONPATH"] = str(cwd)
    env["DVC_NO_ANALYTICS"] = "1"
    return env


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, env=_env(cwd), capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def run_queue(repo: Path, queued: int, jobs: int = 1, limit_s: float = 600) -> str:
    """`dvc queue start -j jobs`, wait for the `queued` experiments, `dvc queue stop`, wait for the
    workers to exit; the final `dvc queue status`.

    Not `run`: the workers keep `dvc queue start`'s output open, so a captured start returns only
    when they exit, 10 to 15 s after the queue empties (their idle timeout). This waits on the task
    results the workers write, then stops them as a user would, and lets nothing outlive the test."""
    celery = repo / ".dvc/tmp/exps/celery"
    log = repo / ".dvc/tmp/queue-start.log"
    with log.open("w") as out:
        started = subprocess.run(["dvc", "queue", "start", "-j", str(jobs)], cwd=repo, env=_env(repo), stdout=out,
                                 stderr=subprocess.STDOUT, timeout=120)
    if started.returncode != 0:
        raise AssertionError(f"dvc queue start failed ({started.returncode}):\n{log.read_text()}")
    deadline = time.monotonic() + limit_s
    status = ""
    while time.monotonic() < deadline:
        if sum(_task_done(path) for path in (celery / "result").glob("celery-task-meta-*")) >= queued:
            status = run(["dvc", "queue", "status"], repo).stdout
            if "Queued" not in status and "Running" not in status:
                break
        time.sleep(0.5)
    else:
        raise AssertionError(f"queue still busy after {limit_s} s:\n{status}")
    run(["dvc", "queue", "stop"], repo)
    for worker in celery.glob("dvc-exp-worker-*.json"):  # DVC writes the worker's exit code here
        while json.loads(worker.read_text() or "{}").get("returncode") is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"{worker.name}: the queue worker did not exit after `dvc queue stop`")
            time.sleep(0.2)
    return status


def _task_done(path: Path) -> bool:
    """Whether a celery result file says its experiment's task finished (it may be mid-write)."""
    try:
        return json.loads(path.read_text()).get("status") in ("SUCCESS", "FAILURE")
    except ValueError:
        return False


def write_params(repo: Path, **changes: dict) -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["image_size"] = 16
    for role in ROLES:
        params[role]["model"] = TINY_MODEL
        params[role]["train"] = {}  # every role at the tiny budget below (the defaults give teachers 10 epochs)
    params["train"].update({"epochs": 1, "batch_size": 128, "num_threads": 1, "device": "cpu"})
    params["evaluate"].update({"warmup": 1, "repeats": 3, "throughput_batch": 8})
    params["prune"].update({"epochs": 1})
    params["quantize"].update({"calibration_batches": 2})
    params["visualize"].update({"images": 4, "agreement_images": 100})
    for group, values in changes.items():
        params[group].update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def new_repo(tmp_path_factory: pytest.TempPathFactory, name: str = "kd-e2e") -> Path:
    """A git repository holding dvc.yaml, the stages and the library, with tiny params."""
    repo = tmp_path_factory.mktemp(name)
    for file in ("dvc.yaml", ".gitignore"):
        shutil.copy(ROOT / file, repo / file)
    for folder in ("stages", "kd_pipeline", "data/raw"):
        shutil.copytree(ROOT / folder, repo / folder, ignore=shutil.ignore_patterns("__pycache__"))
    write_params(repo)
    run(["git", "init", "-q"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "x"], repo)
    run(["dvc", "init", "-q"], repo)
    return repo




def kill_once_saved(repo: Path, stage: str, state: Path, log: Path, flags: tuple[str, ...] = ()) -> str:
    """`dvc repro [FLAGS] STAGE`, SIGKILLed (its whole process group) once `state` holds a saved
    epoch; returns what it printed."""
    with log.open("w") as out:
        proc = subprocess.Popen(["dvc", "repro", *flags, stage], cwd=repo, env=_env(repo), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 300
        while not state.is_file() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, f"finished before {state} was written: {log.read_text()[-500:]}"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return log.read_text()
