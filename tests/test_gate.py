import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from kd_pipeline.core.params import GateParams
from tests.conftest import ROOT
from tests.forkserver import stage_path, warm


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                   capture_output=True)


def _gate(repo: Path, summary: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": stage_path(os.environ["PATH"])}
    cmd = [warm("python"), "-m", "kd_pipeline.gate", "--base", "base", "--summary", str(summary),
           "--comment", str(summary.with_name("comment.md"))]
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=120)


def test_regressions_allow_the_seed_spread_and_watch_evaluate_variants_only() -> None:
    from kd_pipeline.gate import regressions

    diff = {"metrics/evaluate.json": {
        "variants.student.accuracy": {"old": 0.99, "new": 0.95, "diff": -0.04},
        "variants.teacher.accuracy": {"old": 0.99, "new": 0.985, "diff": -0.005},
        "variants.student.latency_ms": {"old": 1.0, "new": 9.0, "diff": 8.0},
        "distillation_gain.accuracy": {"old": 0.05, "new": -0.05, "diff": -0.1},
    }, "metrics/student/metrics.json": {"test.accuracy": {"old": 0.99, "new": 0.5}}}
    found = regressions(diff, GateParams(tolerance=0.01))
    assert len(found) == 1 and "variants.student.accuracy fell 0.0400" in found[0]
    # a spread of 0.015 allows 2 × √2 × 0.015 = 0.0424 (two single runs): the same fall is noise
    seeds = {"variants": {"student": {"accuracy": {"std": 0.015}}}}
    assert regressions(diff, GateParams(tolerance=0.01), seeds) == []


def test_the_gate_catches_a_fall_and_a_lost_variant_in_dvcs_diff() -> None:
    from kd_pipeline.gate import regressions

    diff = {"metrics/evaluate.json": {
        "variants.student.accuracy": {"old": 0.99, "new": 0.95, "diff": -0.04},
        "variants.pruned.accuracy": {"old": 0.97, "new": None},
    }}
    found = regressions(diff, GateParams(tolerance=0.01))
    assert any("student.accuracy fell 0.0400" in f for f in found) and any("pruned.accuracy disappeared" in f
                                                                            for f in found)
    assert regressions({}, GateParams(tolerance=0.01)) == []


def test_variant_changes_diff_two_evaluations_as_dvc_would() -> None:
    from kd_pipeline.gate import variant_changes

    old = {"variants": {"student": {"accuracy": 0.99, "latency_ms": 1.0, "meets": True},
                        "pruned": {"accuracy": 0.97}}}
    new = {"variants": {"student": {"accuracy": 0.95, "latency_ms": 1.0, "meets": True}}}
    assert variant_changes(new, old) == {"variants.pruned.accuracy": {"old": 0.97, "new": None},
                                         "variants.student.accuracy": {"old": 0.99, "new": 0.95}}
    assert variant_changes(new, None)["variants.student.accuracy"] == {"old": None, "new": 0.95}


def test_unknown_watch_name_is_refused() -> None:
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="unknown metric 'acuracy'"):
        GateParams(watch=["acuracy"])


def test_stale_stages_tell_missing_files_from_changes() -> None:
    from kd_pipeline.gate import stale_stages

    status = {
        "train": [{"changed deps": {"train.py": "modified", "data": "deleted"}}],
        "score": [{"changed deps": {"model.bin": "deleted"}}],
    }
    assert stale_stages(status, pulled=False) == (["train (deps train.py modified)"], ["score"])
    assert stale_stages(status, pulled=True)[0][1] == "score (deps model.bin deleted)"
    # the cpu stage re-runs by design: `dvc status` always lists it, and that is no stale lock
    assert stale_stages({"cpu": ["always changed"]}, pulled=True) == ([], [])
    both = {"cpu": ["always changed", "changed checksum"]}
    assert stale_stages(both, pulled=True) == (["cpu (changed checksum)"], [])


STAGE = """\
import json, sys
import yaml
quality = yaml.safe_load(open("toy.yaml"))["quality"]
open("model.bin", "w").write(str(quality))
drop = {"value": 0.99 - quality, "limit": 0.05, "pass": quality > 0.94}
evaluation = {"variants": {"student": {"accuracy": quality, "latency_ms": 5.0}}, "deployed": "student",
              "deployed_reason": "toy", "targets": {"accuracy_drop": drop}}
json.dump(evaluation, open("metrics/evaluate.json", "w"))
"""


def _toy_repo(tmp_path: Path) -> Path:
    """A real DVC project with one stage, its lock and metrics committed, its data pushed."""
    repo = tmp_path / "repo"
    (repo / "metrics").mkdir(parents=True)
    shutil.copy(ROOT / "params.yaml", repo / "params.yaml")
    (repo / "stage.py").write_text(STAGE)
    (repo / "toy.yaml").write_text("quality: 0.99\n")
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"score": {
        "cmd": f"{sys.executable} stage.py", "deps": ["stage.py"], "params": [{"toy.yaml": ["quality"]}],
        "outs": ["model.bin", {"metrics/evaluate.json": {"cache": False}}]}}}))  # an output, as in dvc.yaml
    _git(repo, "init", "-q")
    for args in (["init", "-q"], ["remote", "add", "-d", "local", str(tmp_path / "remote")], ["repro", "-q"],
                 ["push", "-q"]):
        _dvc(repo, *args)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "base")
    _git(repo, "tag", "base")  # the base branch; each step below is a pull-request commit on top
    return repo


def _dvc(repo: Path, *args: str) -> None:
    subprocess.run([warm("dvc"), *args], cwd=repo, check=True, capture_output=True)


def test_gate_passes_unchanged_fails_stale_lock_and_regression(tmp_path: Path) -> None:
    repo = _toy_repo(tmp_path)
    summary = tmp_path / "summary.md"
    shutil.rmtree(repo / ".dvc" / "cache")  # a fresh CI checkout: the gate pulls the data
    (repo / "model.bin").unlink()
    unchanged = _gate(repo, summary)
    assert unchanged.returncode == 0, unchanged.stdout + unchanged.stderr
    assert "dvc.lock is current" in summary.read_text() and "remote not reachable" not in unchanged.stdout

    (repo / "toy.yaml").write_text("quality: 0.5\n")  # params changed, lock and metrics not rerun
    _git(repo, "commit", "-qam", "params only")
    stale = _gate(repo, summary)
    assert stale.returncode == 1
    assert "dvc.lock is stale, rerun and commit: score (deps toy.yaml:quality modified)" in stale.stdout

    _dvc(repo, "repro", "-q")  # rerun: the lock is current, and the metric really fell
    _dvc(repo, "push", "-q")
    _git(repo, "commit", "-qam", "rerun")
    worse = _gate(repo, summary)
    assert worse.returncode == 1 and "regression: variants.student.accuracy fell 0.4900" in worse.stdout
    assert "dvc.lock is current" in worse.stdout and "target missed: accuracy_drop" in worse.stdout
    comment = summary.with_name("comment.md").read_text()  # the pull request's one comment, two commits apart
    assert comment.startswith("<!-- kd-pipeline metric gate -->\n### ❌ the metric gate fails")
    assert "variants.student.accuracy fell 0.4900" in comment and "measured on:" in comment
    assert re.search(r"Checked in \d+ s", comment)

    _dvc(repo, "remote", "modify", "local", "url", str(tmp_path / "nowhere"))
    _git(repo, "checkout", "-q", "base", "--", "toy.yaml", "dvc.lock", "metrics")
    _git(repo, "commit", "-qam", "back to the base's inputs")
    shutil.rmtree(repo / ".dvc" / "cache")
    (repo / "model.bin").unlink()
    neutral = _gate(repo, summary)
    assert neutral.returncode == 0, neutral.stdout
    assert "remote not reachable" in neutral.stdout
    assert "not checked without the remote's files: score" in neutral.stdout


def test_workflow_is_valid_and_calls_the_gate_without_retraining() -> None:
    workflow = yaml.safe_load((ROOT / ".github/workflows/metrics-gate.yml").read_text())
    assert "pull_request" in workflow[True]  # YAML 1.1 reads the key `on` as True
    steps = workflow["jobs"]["gate"]["steps"]
    commands = " ".join(step.get("run", "") for step in steps)
    assert "-r requirements-gate.lock" in commands and "make setup" not in commands and "dvc repro" not in commands
    assert "python -m kd_pipeline.gate --base" in commands and "GITHUB_STEP_SUMMARY" in commands
    assert "--comment gate-comment.md" in commands and "gh pr comment" in commands and "--edit-last" in commands
    assert workflow["permissions"]["pull-requests"] == "write"
    checkout = next(step for step in steps if step.get("uses", "").startswith("actions/checkout"))
    assert checkout["with"]["fetch-depth"] == 0


def _pins(path: Path) -> dict[str, str]:
    lines = [line.strip() for line in path.read_text().splitlines() if "==" in line and not line.startswith("#")]
    return {name.lower(): version for name, version in (line.split("==") for line in lines)}


def test_the_gate_installs_no_torch_and_the_pipelines_versions() -> None:
    gate, main = _pins(ROOT / "requirements-gate.lock"), _pins(ROOT / "requirements.lock")
    assert {"dvc", "dvc-s3", "pydantic", "pyyaml"} <= set(gate)
    assert not {"torch", "torchvision", "timm", "onnxruntime", "numpy"} & set(gate)
    assert {name: version for name, version in gate.items() if main.get(name) != version} == {}
    blocked = "import sys\nfor m in ('torch', 'timm', 'numpy', 'onnx', 'onnxruntime', 'sklearn', 'PIL', 'scipy'):" \
              "\n    sys.modules[m] = None\nimport kd_pipeline.gate"
    subprocess.run([sys.executable, "-c", blocked], check=True, cwd=ROOT)


def test_the_gate_pulls_from_the_remote_the_ci_secrets_name(tmp_path: Path, s3_endpoint: str) -> None:
    """$DVC_REMOTE_URL and $DVC_REMOTE_ENDPOINT_URL (S3 on moto) replace an unreachable committed
    remote for this checkout only: the data is pulled and checked."""
    import boto3

    from tests.conftest import S3_ENV

    repo = _toy_repo(tmp_path)
    boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                 region_name="us-east-1").create_bucket(Bucket="team")
    env = {**os.environ, **S3_ENV, "DVC_REMOTE_URL": "s3://team/cache", "DVC_REMOTE_ENDPOINT_URL": s3_endpoint}
    dvc = [warm("dvc")]
    for args in (["remote", "add", "team", "s3://team/cache"], ["remote", "modify", "team", "endpointurl", s3_endpoint],
                 ["push", "-q", "-r", "team"], ["remote", "remove", "team"]):
        subprocess.run([*dvc, *args], cwd=repo, env=env, check=True, capture_output=True)
    shutil.rmtree(repo / ".dvc" / "cache")
    (repo / "model.bin").unlink()
    shutil.rmtree(tmp_path / "remote")  # the committed remote is gone, as on a hosted runner
    summary = tmp_path / "summary.md"
    proc = subprocess.run([warm("python"), "-m", "kd_pipeline.gate", "--base", "base", "--summary", str(summary)],
                          cwd=repo, env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "pulling from $DVC_REMOTE_URL" in proc.stdout and "remote not reachable" not in proc.stdout
    assert "dvc.lock is current" in summary.read_text() and (repo / "model.bin").is_file()
    assert "ci" in (repo / ".dvc" / "config.local").read_text()  # the committed config is untouched
    assert "s3://team" not in (repo / ".dvc" / "config").read_text()


def test_speed_is_gated_only_between_evaluations_timed_on_the_same_machine() -> None:
    from kd_pipeline.gate import _timed, machines_differ

    amx = {"machine": {"model": "Intel Xeon", "isa": ["avx2", "amx_int8"], "int8_kernels": "AMX",
                       "kernel_limits": {"pytorch": "AVX512"}}}
    held = {"machine": {**amx["machine"], "kernel_limits": {"pytorch": "AVX2"}}}
    epyc = {"machine": {"model": "AMD EPYC", "isa": ["avx2"], "int8_kernels": "AVX2", "kernel_limits": {}}}
    assert machines_differ(amx, amx) == "" and machines_differ(amx, None) == ""
    assert "kernel_limits" in machines_differ(amx, held)
    assert "AMD EPYC" in machines_differ(amx, epyc) and "isa" in machines_differ(amx, epyc)
    assert _timed("speedup: 1.2000 for student_int8, needs at least 1.4000 (off by 0.2000)")
    assert not _timed("accuracy_drop: 0.0300 for student_int8, needs at most 0.0100 (off by 0.0200)")
