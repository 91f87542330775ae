import json
from pathlib import Path

import pytest

from kd_pipeline.core.errors import PipelineError
from kd_pipeline.records import pareto
from kd_pipeline.records.experiments import Run


def _variant(accuracy: float, latency: float, size: float, drop: float | None = 0.0) -> dict:
    """`drop` is the test drop the table reports; the validation drop a pick reads is set apart."""
    return {"accuracy": accuracy, "latency_ms": latency, "size_mb": size, "accuracy_drop_vs_reference": drop,
            "val_drop_vs_reference": drop}


def _run(name: str, ratio: float, pruned: tuple[float, float, float]) -> Run:
    variants = {
        "teacher_onnx": _variant(0.98, 5.0, 90.0, 0.0),
        "student_int8": _variant(0.97, 0.5, 3.0, 0.01),
        "pruned_int8": _variant(*pruned, drop=0.98 - pruned[0]),
    }
    return Run(name, {"prune": {"ratio": ratio}, "train": {"seed": 0}}, {"variants": variants})


RUNS = [_run("workspace", 0.5, (0.975, 0.3, 1.5)), _run("exp-a", 0.85, (0.90, 0.1, 0.3)),
        _run("exp-b", 0.7, (0.96, 0.35, 1.6))]  # exp-b's pruned model is beaten by the workspace's


def test_shared_models_are_one_point_and_ratios_use_the_same_runs_teacher_onnx() -> None:
    rows = pareto.points(RUNS)
    assert [(r["run"], r["variant"]) for r in rows] == [
        ("workspace", "teacher_onnx"), ("workspace", "student_int8"), ("workspace", "pruned_int8"),
        ("exp-a", "pruned_int8"), ("exp-b", "pruned_int8")]
    assert rows[3]["params"] == "prune.ratio=0.85"  # only what differs names a run
    assert rows[3]["x_faster"] == pytest.approx(50.0) and rows[3]["x_smaller"] == pytest.approx(300.0)


def test_the_front_keeps_exactly_the_models_nothing_beats() -> None:
    rows = pareto.points(RUNS)
    by_latency = [(r["run"], r["variant"]) for r in pareto.front(rows, "latency_ms")]
    assert by_latency == [("exp-a", "pruned_int8"), ("workspace", "pruned_int8"), ("workspace", "teacher_onnx")]
    assert ("exp-b", "pruned_int8") not in [(r["run"], r["variant"]) for r in pareto.front(rows, "size_mb")]


def test_the_recommendation_is_the_cheapest_deployable_variant_within_the_drop_on_validation() -> None:
    rows = pareto.points(RUNS)
    picks = pareto.recommend(rows, max_drop=0.05)
    assert picks["latency_ms"]["run"] == "workspace" and picks["size_mb"]["run"] == "workspace"
    assert pareto.recommend(rows, max_drop=0.1)["latency_ms"]["run"] == "exp-a"
    report = pareto.render(rows, 0.05)
    assert "**fastest** deployable within 0.050 of the reference on validation: `pruned_int8` of workspace" in report
    assert "| exp-a | prune.ratio=0.85 | pruned_int8 | 0.9000 | +0.0800 | 0.100 | 50.0 | 0.30 | 300.0 | – |" in report
    # exp-a's test drop is 0.08, but on validation it is within 0.05: validation decides
    for row in rows:
        if row["run"] == "exp-a":
            row["val_drop_vs_reference"] = 0.04
    assert pareto.recommend(rows, max_drop=0.05)["latency_ms"]["run"] == "exp-a"
    # ... unless evaluate refused it (an int8 file that loses on AVX2, say)
    refused = _run("exp-a", 0.85, (0.90, 0.1, 0.3))
    refused.evaluation["not_deployable"] = {"pruned_int8": "int8 loses 0.03 on CPUs without VNNI"}
    assert all(not r["deployable"] for r in pareto.points([refused]) if r["variant"] == "pruned_int8")


def test_no_finished_run_is_one_clear_error() -> None:
    with pytest.raises(PipelineError, match="no finished run"):
        pareto.points([Run("old", {}, {"variants": {"student": _variant(0.9, 1.0, 1.0)}})])


def test_main_writes_points_chart_and_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pareto, "finished_runs", lambda shown: RUNS)
    monkeypatch.setattr(pareto, "show", lambda: [])
    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # the project's params.yaml
    pareto.main(["--plots", str(tmp_path / "plots"), "--report", str(tmp_path / "pareto.md")])
    table = json.loads((tmp_path / "plots/points.json").read_text())
    assert sum(r["front_latency_ms"] for r in table) == 3
    assert (tmp_path / "plots/pareto.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "pareto.md").read_text().startswith("# Size, speed and accuracy")
