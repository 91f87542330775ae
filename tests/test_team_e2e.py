"""Sweeps shared across machines, the DVC way: two clones play two machines, a bare git
repository is `origin`, and moto's S3 server on loopback is the DVC remote.

A toy stage stands in for training (what is under test is DVC's experiment sharing with this
project's remote set-up, not the models): machine A runs a queued sweep with two workers and
pushes it; machine B pulls it and sees its metrics, plots and outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import S3_ENV
from tests.e2e import run, run_queue

STAGE = """import json, pathlib, yaml
quality = yaml.safe_load(open("params.yaml"))["quality"]
pathlib.Path("model.bin").write_bytes(bytes([quality]) * 1024)
json.dump({"score": quality / 10}, open("metrics.json", "w"))
pathlib.Path("curve.csv").write_text("step,loss\\n" + "".join(f"{s},{quality / (s + 1)}\\n" for s in range(3)))
"""
DVC_YAML = {"stages": {"score": {
    "cmd": "python score.py", "deps": ["score.py"], "params": ["quality"], "outs": ["model.bin"],
    "metrics": [{"metrics.json": {"cache": False}}], "plots": [{"curve.csv": {"cache": False, "x": "step"}}],
}}}


def _commit(repo: Path, message: str) -> None:
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.name=a", "-c", "user.email=a@a", "commit", "-q", "-m", message], repo)


def _experiments(repo: Path) -> dict[str, float]:
    """name → score of every finished experiment `dvc exp show` lists."""
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    found = {}
    for commit in shown:
        for experiment in commit.get("experiments") or []:
            for rev in experiment.get("revs") or []:
                metrics = (rev.get("data") or {}).get("metrics", {}).get("metrics.json", {}).get("data")
                if metrics:
                    found[rev["name"]] = metrics["score"]
    return found


def test_a_sweep_run_on_one_machine_is_pulled_and_compared_on_another(
    tmp_path: Path, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    for key, value in S3_ENV.items():
        monkeypatch.setenv(key, value)
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket="team")
    origin = tmp_path / "origin.git"
    run(["git", "init", "-q", "--bare", str(origin)], tmp_path)

    a = tmp_path / "machine-a"
    a.mkdir()
    run(["git", "init", "-q", "-b", "main"], a)
    run(["dvc", "init", "-q"], a)
    (a / "score.py").write_text(STAGE)
    (a / "params.yaml").write_text("quality: 2\n")
    (a / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML, sort_keys=False))
    run(["dvc", "remote", "add", "-d", "team", "s3://team/cache"], a)
    run(["dvc", "remote", "modify", "team", "endpointurl", s3_endpoint], a)
    run(["dvc", "repro"], a)
    _commit(a, "baseline")
    run(["git", "remote", "add", "origin", str(origin)], a)
    run(["git", "push", "-q", "origin", "main"], a)
    run(["dvc", "push"], a)

    run(["dvc", "exp", "run", "--queue", "-S", "quality=3,4"], a)
    run_queue(a, queued=2, jobs=2)
    swept = _experiments(a)
    assert sorted(swept.values()) == [0.3, 0.4], run(["dvc", "queue", "status"], a).stdout
    run(["dvc", "exp", "push", "origin", *swept], a)

    b = tmp_path / "machine-b"
    run(["git", "clone", "-q", "-b", "main", str(origin), str(b)], tmp_path)
    assert _experiments(b) == {}
    run(["dvc", "exp", "pull", "origin", *swept], b)
    assert _experiments(b) == swept
    names = sorted(swept, key=swept.get)
    diff = json.loads(run(["dvc", "plots", "diff", "--json", *names], b).stdout)
    revisions = {r for plot in diff["data"].values() for d in plot for r in d.get("revisions") or []}
    assert set(names) <= revisions and not diff.get("errors"), diff
    run(["dvc", "exp", "apply", names[1]], b)  # its output comes from the S3 remote: B's cache was empty
    assert (b / "model.bin").read_bytes() == bytes([4]) * 1024
