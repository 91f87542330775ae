"""A real `dvc repro` killed with SIGKILL mid-stage resumes to the same output hashes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.e2e import kill_once_saved, new_repo, run, write_params

EPOCHS = 4  # the kill lands within 50 ms of the first saved epoch, so epochs 2 to 4 are left to resume
STAGES = (("distill_student", "models/student"), ("prune", "models/pruned"))


def _out_hash(repo: Path, stage: str, path: str) -> str:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return next(out["md5"] for out in lock["stages"][stage]["outs"] if out["path"] == path)


def test_a_killed_repro_resumes_training_and_pruning_to_the_same_hashes(tmp_path_factory: pytest.TempPathFactory,
                                                                          tmp_path: Path) -> None:
    repo = new_repo(tmp_path_factory, "kd-e2e-kill")
    write_params(repo, student={"train": {"epochs": EPOCHS}}, prune={"epochs": EPOCHS},
                 train={"augment": {"hflip": True}})  # augmentation: the teacher runs per batch
    student_state, pruned_state = repo / ".resume/student/state.pt", repo / ".resume/pruned/state.pt"
    kill_once_saved(repo, "prune", student_state, tmp_path / "first.log")  # during distill_student
    kill_once_saved(repo, "prune", pruned_state, tmp_path / "second.log")  # resumes the student, killed in prune
    assert "student: resuming after epoch" in (tmp_path / "second.log").read_text()
    resumed = run(["dvc", "repro", "prune"], repo)
    assert "pruned: resuming after epoch" in resumed.stdout + resumed.stderr
    assert not student_state.exists() and not pruned_state.exists()
    after_kills = {stage: _out_hash(repo, stage, out) for stage, out in STAGES}

    for stage, _ in STAGES:  # the same stages uninterrupted, the run cache not used
        run(["dvc", "repro", "--force", "--no-run-cache", "--single-item", stage], repo)
    assert {stage: _out_hash(repo, stage, out) for stage, out in STAGES} == after_kills
