from pathlib import Path

import pytest

from kd_pipeline.core.errors import PipelineError
from kd_pipeline.core.files import write_json
from kd_pipeline.core.paths import Layout
from kd_pipeline.train.finetune import check_teacher
from kd_pipeline.train.teachers import teacher_warnings, weaker_than_baseline


def _card(role: str, accuracy: float, auc: float = 0.9, task: str = "multiclass") -> dict:
    return {"role": role, "timm_name": {"baseline": "resnet18"}.get(role, "resnet50"), "task": task,
            "val_metrics": {"accuracy": accuracy, "roc_auc": auc}}


def test_a_teacher_below_the_baseline_is_named_with_what_to_do() -> None:
    line = weaker_than_baseline("teacher", _card("teacher", 0.727), _card("baseline", 0.904))
    assert line is not None and "\n" not in line
    assert "teacher (resnet50, val accuracy 0.7270) is less accurate than the student trained alone" in line
    assert "teacher.train.epochs" in line and "teacher.pretrained_file" in line
    assistant = weaker_than_baseline("assistant", _card("assistant", 0.8), _card("baseline", 0.9))
    assert "assistant.train.epochs" in assistant
    assert weaker_than_baseline("teacher", _card("teacher", 0.91), _card("baseline", 0.904)) is None
    assert weaker_than_baseline("teacher", _card("teacher", 0.904), _card("baseline", 0.904)) is None


def test_multilabel_teachers_are_ranked_by_auc() -> None:
    teacher = _card("teacher", accuracy=0.95, auc=0.70, task="multilabel")
    baseline = _card("baseline", accuracy=0.90, auc=0.75, task="multilabel")
    assert "val roc_auc 0.7000" in weaker_than_baseline("teacher", teacher, baseline)


def test_guard_warns_or_stops_before_distilling(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    layout = Layout(models=tmp_path / "models")
    check_teacher("teacher", _card("teacher", 0.7), layout, required=True)  # no baseline yet: noted
    assert "not checked" in capsys.readouterr().out
    assert teacher_warnings(layout.models) is None  # not checked, which is not "no warnings"
    for role, accuracy in (("teacher", 0.7), ("assistant", 0.95), ("baseline", 0.9)):
        write_json(layout.model_dir(role) / "model.json", _card(role, accuracy))
    check_teacher("teacher", _card("teacher", 0.7), layout, required=False)
    assert capsys.readouterr().out.startswith("warning: the teacher (resnet50, val accuracy 0.7000)")
    with pytest.raises(PipelineError, match="kd.require_better_teacher: true stops here"):
        check_teacher("teacher", _card("teacher", 0.7), layout, required=True)
    check_teacher("assistant", _card("assistant", 0.95), layout, required=True)  # a good one passes
    assert [line.split(" (")[0] for line in teacher_warnings(layout.models)] == ["the teacher"]
