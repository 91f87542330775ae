import sys
from pathlib import Path

import pytest
import yaml

from kd_pipeline.core import stage_times


def test_a_stage_records_its_wall_time_outside_its_outputs(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["stages/train.py", "teacher"])
    calls = []

    @stage_times.timed("stages.train")
    def main() -> str:
        calls.append(1)
        return "done"

    assert main() == "done" and calls == [1]
    times = stage_times.load()
    assert list(times) == ["python -m stages.train teacher"] and times["python -m stages.train teacher"] >= 0
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {
        "train_teacher": {"cmd": "python -m stages.train teacher"}, "export": {"cmd": "python -m stages.export"}}}))
    found = stage_times.per_stage()
    assert found["export"] is None and found["train_teacher"] == times["python -m stages.train teacher"]


def test_a_failed_stage_records_nothing(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)

    @stage_times.timed("stages.prune")
    def main() -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        main()
    assert stage_times.load() == {}
