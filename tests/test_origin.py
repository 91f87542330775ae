"""Compression starts from the best small model on validation, taught only by teachers that beat it."""

import json
from pathlib import Path

import numpy as np
import pytest

from kd_pipeline.core.errors import CheckpointError
from kd_pipeline.core.ranking import decision_metric, imbalance_ratio, resolve_monitor
from kd_pipeline.prune.origin import choose_origin


def _cards(tmp_path: Path, scores: dict[str, dict[str, float]]) -> dict[str, Path]:
    dirs = {}
    for role, val in scores.items():
        (tmp_path / role).mkdir()
        (tmp_path / role / "model.json").write_text(json.dumps({"role": role, "val_metrics": val}))
        dirs[role] = tmp_path / role
    for role in ("student", "direct", "baseline", "assistant", "teacher"):
        dirs.setdefault(role, tmp_path / role)  # not trained: skipped
    return dirs


def test_a_weak_chain_compresses_the_baseline_on_the_labels_alone(tmp_path: Path) -> None:
    """The unseen imbalanced folder: the teacher weakest, the baseline best (test numbers of the
    issue, used here as validation scores)."""
    val = {"teacher": 0.765, "assistant": 0.80, "student": 0.858, "direct": 0.811, "baseline": 0.910}
    dirs = _cards(tmp_path, {role: {"accuracy": score} for role, score in val.items()})
    origin = choose_origin(dirs, "accuracy", "nearest")
    assert origin.source == "baseline" and origin.teachers == []
    assert "labels alone" in origin.reason and "baseline 0.9100" in origin.reason


def test_the_fine_tune_learns_from_the_best_teacher_that_beats_the_source(tmp_path: Path) -> None:
    val = {"teacher": 0.95, "assistant": 0.93, "student": 0.92, "direct": 0.90, "baseline": 0.91}
    dirs = _cards(tmp_path, {role: {"balanced_accuracy": score} for role, score in val.items()})
    nearest = choose_origin(dirs, "balanced_accuracy", "nearest")
    assert nearest.source == "student" and nearest.teachers == ["teacher"]
    assert choose_origin(dirs, "balanced_accuracy", "all_above").teachers == ["assistant", "teacher"]


def test_ties_go_to_the_distilled_student_and_missing_models_are_skipped(tmp_path: Path) -> None:
    dirs = _cards(tmp_path, {"student": {"accuracy": 0.9}, "baseline": {"accuracy": 0.9}})
    origin = choose_origin(dirs, "accuracy", "nearest")
    assert origin.source == "student" and origin.teachers == [] and "direct" not in origin.scores


def test_a_card_without_the_metric_or_no_small_model_is_one_clear_error(tmp_path: Path) -> None:
    dirs = _cards(tmp_path, {"student": {"accuracy": 0.9}})
    with pytest.raises(CheckpointError, match="no validation balanced_accuracy; run `dvc repro`"):
        choose_origin(dirs, "balanced_accuracy", "nearest")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="none of student, direct, baseline is trained"):
        choose_origin(_cards(empty, {}), "accuracy", "nearest")


def test_auto_monitor_follows_the_data() -> None:
    balanced = np.repeat(np.arange(10), 18)
    imbalanced = np.array([0] * 1200 + [1] * 5)
    assert imbalance_ratio(balanced) == 1.0 and imbalance_ratio(imbalanced) == 240.0
    assert resolve_monitor("auto", balanced) == "accuracy"
    assert resolve_monitor("auto", imbalanced) == "balanced_accuracy"
    assert resolve_monitor("auto", np.zeros((4, 3), int)) == "roc_auc"
    assert resolve_monitor("f1", imbalanced) == "f1"
    assert decision_metric("loss", imbalanced) == "balanced_accuracy"
