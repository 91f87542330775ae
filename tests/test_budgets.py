"""The first look and the switch back to full budgets (`make repro-full`): the -S lines must name
real params, validate, and lengthen every budget the first look cuts; the Makefile, the re-run
tools, the report and the docs must all use them."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from kd_pipeline import budgets
from kd_pipeline.core.params import load_params
from kd_pipeline.evaluate.report import _teachers
from kd_pipeline.records.rerun import recipe

ROOT = Path(__file__).resolve().parents[1]


def default_params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_the_full_budget_names_real_params_validates_and_lengthens_every_budget(tmp_path: Path) -> None:
    written = tmp_path / "params.yaml"
    written.write_text(yaml.safe_dump(budgets.apply(default_params(), "full")))
    first, full = load_params(ROOT / "params.yaml"), load_params(written)
    assert full.data.image_size > first.data.image_size
    for role in ("teacher", "assistant", "student", "direct", "baseline"):
        assert full.train_for(role).epochs > first.train_for(role).epochs, role
    assert full.prune.epochs > first.prune.epochs
    for key, value in budgets.FULL.items():  # every line changes something: a switch, not a no-op
        single = copy.deepcopy(default_params())
        node = single
        for part in key.split(".")[:-1]:
            node = node[part]
        assert node[key.split(".")[-1]] != value, f"{key} is already {value} in params.yaml"


def test_a_key_params_yaml_lacks_is_refused() -> None:
    budgets.BUDGETS["broken"] = {"train.epoch": 3}
    try:
        with pytest.raises(KeyError, match="train.epoch"):
            budgets.apply(default_params(), "broken")
    finally:
        del budgets.BUDGETS["broken"]


def test_make_docs_and_rerun_use_the_same_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    budgets.main(["full"])
    assert capsys.readouterr().out.split() == budgets.set_lines("full")
    assert "python -m kd_pipeline.budgets full" in (ROOT / "Makefile").read_text()
    assert "make repro-full" in (ROOT / "params.yaml").read_text()
    for doc in ("README.md", "docs/workflow.md"):
        assert "make repro-full" in (ROOT / doc).read_text(), doc
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "params.yaml").write_text(yaml.safe_dump({"data": {"name": "digits", "image_size": 24}}))
    today = recipe("old", tmp_path, ROOT, today_defaults=True).params
    assert today["train"]["epochs"] == budgets.FULL["train.epochs"]
    assert today["data"]["image_size"] == 24, "the record's own data group wins"


def test_weak_teacher_advice_points_to_the_full_budget() -> None:
    lines = _teachers({"teacher_warnings": ["the teacher is weaker than the baseline"]})
    assert any("make repro-full" in line for line in lines)
    assert not any("make repro-full" in line for line in _teachers({"teacher_warnings": []}))
