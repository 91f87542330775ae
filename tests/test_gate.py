import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from kd_pipeline.params import GateParams
from tests.conftest import ROOT


def _evaluation(student_accuracy: float, drop_ok: bool = True) -> dict:
    return {
        "variants": {"student": {"accuracy": student_accuracy, "latency_ms": 5.0}},
        "deployed": "student",
        "targets": {"accuracy_drop": {"value": 0.0 if drop_ok else 0.2, "limit": 0.05, "pass": drop_ok}},
    }


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                   capture_output=True)


def _gate(repo: Path, summary: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    cmd = [sys.executable, "-m", "kd_pipeline.gate", "--base", "HEAD", "--summary", str(summary)]
    return subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=120)


def test_regressions_respect_tolerance_and_watch_list() -> None:
    from kd_pipeline.gate import regressions

    diff = {"metrics/evaluate.json": {
        "variants.student.accuracy": {"old": 0.99, "new": 0.95, "diff": -0.04},
        "variants.teacher.accuracy": {"old": 0.99, "new": 0.985, "diff": -0.005},
        "variants.student.latency_ms": {"old": 1.0, "new": 9.0, "diff": 8.0},
    }}
    found = regressions(diff, GateParams(tolerance=0.01))
    assert len(found) == 1 and "variants.student.accuracy fell 0.0400" in found[0]


def test_gate_on_a_real_dvc_metrics_diff(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "metrics").mkdir(parents=True)
    shutil.copy(ROOT / "params.yaml", repo / "params.yaml")
    (repo / "dvc.yaml").write_text("metrics:\n  - metrics/evaluate.json\n")
    metrics = repo / "metrics" / "evaluate.json"
    metrics.write_text(json.dumps(_evaluation(0.99)))
    _git(repo, "init", "-q")
    subprocess.run([Path(sys.executable).parent / "dvc", "init", "-q"], cwd=repo, check=True)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "base")

    summary = tmp_path / "summary.md"
    metrics.write_text(json.dumps(_evaluation(0.985)))
    ok = _gate(repo, summary)
    assert ok.returncode == 0, ok.stderr
    assert "targets met" in summary.read_text() and "0.985" in summary.read_text()

    metrics.write_text(json.dumps(_evaluation(0.95)))
    worse = _gate(repo, summary)
    assert worse.returncode == 1
    assert "regression: metrics/evaluate.json: variants.student.accuracy fell 0.0400" in worse.stdout

    metrics.write_text(json.dumps(_evaluation(0.99, drop_ok=False)))
    missed = _gate(repo, summary)
    assert missed.returncode == 1 and "target missed: accuracy_drop" in missed.stdout


def test_workflow_is_valid_and_calls_the_gate() -> None:
    workflow = yaml.safe_load((ROOT / ".github/workflows/metrics-gate.yml").read_text())
    assert "pull_request" in workflow[True]  # YAML 1.1 reads the key `on` as True
    steps = workflow["jobs"]["gate"]["steps"]
    commands = " ".join(step.get("run", "") for step in steps)
    assert "make setup" in commands and "dvc repro" in commands
    assert "python -m kd_pipeline.gate --base" in commands and "GITHUB_STEP_SUMMARY" in commands
    checkout = next(step for step in steps if step.get("uses", "").startswith("actions/checkout"))
    assert checkout["with"]["fetch-depth"] == 0
