"""The real `dvc repro` with the teacher-assistant paper's networks by name (teacher CIFAR ResNet-14,
assistant ResNet-8, student the 2-layer plain CNN) on the digits at 32 px, through export; and a
chain whose student outgrows its teacher is warned about before any training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kd_pipeline.core.params import DataParams
from kd_pipeline.prepare.sources import load_source
from tests.e2e import ALWAYS_CHANGED, new_repo, run, write_params

MODELS = {"teacher": {"model": "cifar_resnet14"}, "assistant": {"model": "cifar_resnet8"},
          "student": {"model": "cifar_plain2"}}
PER_CLASS = 30  # of the 1,797 digits: what the stages need, at a sixth of the training


def write_digits(folder: Path) -> None:
    """The first PER_CLASS digits of each class as an image folder, as prepare reads the digits."""
    images, labels = load_source(DataParams(name="digits")).pool
    for label in range(10):
        (folder / str(label)).mkdir(parents=True)
        for k, index in enumerate(np.flatnonzero(labels == label)[:PER_CLASS]):
            Image.fromarray(images[index, ..., 0]).save(folder / str(label) / f"{k}.png")


def chain(repo: Path, **models: dict) -> dict:
    """The params of this file: the paper's chain (or `models` instead) on the digit folder at 32 px."""
    return {**MODELS, **models, "data": {"name": "imagefolder", "root": str(repo / "digits"), "image_size": 32}}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    made = new_repo(tmp_path_factory, "kd-e2e-small")
    write_digits(made / "digits")
    write_params(made, **chain(made))
    return made


def test_the_papers_student_runs_every_stage_through_export(repo: Path) -> None:
    run(["dvc", "repro"], repo)
    student = json.loads((repo / "models/student/model.json").read_text())
    assert (student["timm_name"], student["num_parameters"]) == ("cifar_plain2", 13_082)
    pruned = json.loads((repo / "models/pruned/model.json").read_text())
    assert pruned["timm_name"] in ("cifar_plain2", "cifar_resnet8", "cifar_resnet14")
    evaluation = json.loads((repo / "metrics/evaluate.json").read_text())
    assert {"student", "pruned", "pruned_int8"} <= set(evaluation["variants"])
    exported = json.loads((repo / "metrics/export.json").read_text())
    assert exported["variant"] == evaluation["deployed"]
    assert (repo / "export/model.onnx").is_file() and (repo / "export/MODEL_CARD.md").is_file()
    assert json.loads(run(["dvc", "status", "--json"], repo).stdout or "{}") == ALWAYS_CHANGED


def test_a_student_larger_than_its_teacher_is_warned_about_before_training(repo: Path) -> None:
    write_params(repo, **chain(repo, student={"model": "cifar_resnet20"}))
    proc = run(["dvc", "repro", "train_baseline"], repo)
    text = proc.stdout + proc.stderr
    assert "warning: student cifar_resnet20 (0.272 M parameters) is larger than its teacher cifar_resnet14" in text
    write_params(repo, **chain(repo))
