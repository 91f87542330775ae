"""Finished runs as `dvc exp show --json` lists them: the workspace, its commits and their
experiments, each with its params and `metrics/evaluate.json`. Shared by the across-run reports
(seeds, Pareto front), so both read experiments the same way."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kd_pipeline.core import paths
from kd_pipeline.core.errors import PipelineError

EVALUATION = str(paths.EVALUATION)


@dataclass(frozen=True)
class Run:
    name: str
    params: dict[str, Any]
    evaluation: dict[str, Any]


def finished_runs(shown: list[dict[str, Any]]) -> list[Run]:
    """Every rev with params and an evaluation, in `dvc exp show` order; failed, queued and
    running experiments are left out (a queued one shows the files it was copied from)."""
    revs = []
    for commit in shown:
        revs.append(commit)
        for experiment in commit.get("experiments") or []:
            if (experiment.get("executor") or {}).get("state") not in (None, "success"):
                continue
            revs.extend(experiment.get("revs") or [])
    runs = []
    for rev in revs:
        data = rev.get("data") or {}
        params = (data.get("params") or {}).get("params.yaml", {}).get("data")
        evaluation = (data.get("metrics") or {}).get(EVALUATION, {}).get("data")
        if rev.get("error") or not params or not evaluation:
            continue
        runs.append(Run(rev.get("name") or rev.get("rev", "?"), params, evaluation))
    return runs


def show(cwd: Path | None = None) -> list[dict[str, Any]]:
    """`dvc exp show --json` of the project in `cwd` (default: here): all experiments of the
    workspace's commit."""
    proc = subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json"], capture_output=True, text=True,
                          cwd=cwd)
    if proc.returncode != 0:
        raise PipelineError(f"dvc exp show failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout)
