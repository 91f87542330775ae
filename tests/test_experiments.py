"""The across-run tools (seeds, sweeps, the Pareto front) read each experiment's detail files,
which are stage outputs rather than DVC metrics: a real DVC project, a real `dvc exp run`."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from kd_pipeline.records.experiments import finished_runs, show
from tests.e2e import run

STAGE = """import json, pathlib, yaml
quality = yaml.safe_load(open("params.yaml"))["quality"]
pathlib.Path("metrics").mkdir(exist_ok=True)
json.dump({"deployed": "student", "variants": {"student": {"accuracy": quality}}}, open("metrics/evaluate.json", "w"))
json.dump({"deployed_test_accuracy": quality}, open("metrics/headline.json", "w"))
pathlib.Path("metrics/student").mkdir(exist_ok=True)
json.dump({"test": {"accuracy": quality}}, open("metrics/student/metrics.json", "w"))
"""
# As in dvc.yaml: evaluate.json an uncached output (git holds it), a role's metrics a cached one
# (DVC's cache holds it), the headline the only metric.
DVC_YAML = {"stages": {"evaluate": {
    "cmd": "python evaluate.py", "deps": ["evaluate.py"], "params": ["quality"],
    "outs": [{"metrics/evaluate.json": {"cache": False}}, "metrics/student/metrics.json"],
    "metrics": [{"metrics/headline.json": {"cache": False}}],
}}}


def _commit(repo: Path, message: str) -> None:
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.name=a", "-c", "user.email=a@a", "commit", "-q", "-m", message], repo)


def test_show_reads_each_runs_evaluation_from_its_commit_though_it_is_no_metric(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "evaluate.py").write_text(STAGE)
    (repo / "params.yaml").write_text("quality: 0.5\n")
    (repo / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML, sort_keys=False))
    run(["git", "init", "-q"], repo)
    run(["dvc", "init", "-q"], repo)
    run(["dvc", "repro", "-q"], repo)
    _commit(repo, "base")
    run(["dvc", "exp", "run", "-q", "-S", "quality=0.7", "-n", "better"], repo)

    raw = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    assert all(set((rev.get("data") or {}).get("metrics", {})) <= {"metrics/headline.json"} for rev in raw)
    shown = show(repo)
    runs = {r.name: r.evaluation["variants"]["student"]["accuracy"] for r in finished_runs(shown)}
    # the workspace (its files on disk), the commit, and the experiment (its own commit)
    assert sorted(runs.values()) == [0.5, 0.7, 0.7] and runs["workspace"] == runs["better"] == 0.7, runs
    experiment = shown[1]["experiments"][0]["revs"][0]["data"]["metrics"]
    assert experiment["metrics/student/metrics.json"]["data"] == {"test": {"accuracy": 0.7}}
    assert shown[1]["data"]["metrics"]["metrics/student/metrics.json"]["data"] == {"test": {"accuracy": 0.5}}
