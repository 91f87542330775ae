"""Finished runs as `dvc exp show --json` lists them: the workspace, its commits and their
experiments, each with its params and `metrics/evaluate.json`. Shared by the across-run reports
(seeds, sweeps, Pareto front), so all read experiments the same way.

The per-variant and per-role detail files are stage outputs, not DVC metrics (so that `dvc exp
show` fits a terminal), and `dvc exp show` does not list them: `show` reads each at its rev
through DVC's file system (git for evaluate.json, DVC's cache for the cached per-role files), or
from disk for the workspace."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kd_pipeline.core import paths
from kd_pipeline.core.errors import PipelineError
from kd_pipeline.core.roles import TORCH_MODELS

EVALUATION = str(paths.EVALUATION)
# Each trained role's dvclive summary; `complete: false` while (or because) its stage did not end.
ROLE_METRICS = {role: str(paths.METRICS / role / "metrics.json") for role in TORCH_MODELS}
DETAIL_FILES = (EVALUATION, *ROLE_METRICS.values())


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


def read_at(rev: str, files: tuple[str, ...], cwd: Path | None = None) -> dict[str, dict[str, Any]]:
    """path → parsed JSON of each of `files` that `rev` holds ("workspace": the files on disk), as
    DVC sees the rev: a git-tracked file from git, a cached output from DVC's cache. A stage's
    metrics written while it trains (`complete: false`: still running, or killed) count as absent."""
    root = cwd or Path(".")
    if rev == "workspace":
        found = {path: json.loads((root / path).read_text()) for path in files if (root / path).is_file()}
    else:
        from dvc.api import DVCFileSystem

        fs = DVCFileSystem(str(root), rev=rev)
        found = {}
        for path in files:
            try:
                found[path] = json.loads(fs.read_text(path))
            except (OSError, ValueError):  # not in this rev, or its cache object is gone
                continue
    return {path: data for path, data in found.items()
            if not (isinstance(data, dict) and data.get("complete") is False)}


def with_files(shown: list[dict[str, Any]], files: tuple[str, ...], cwd: Path | None = None) -> list[dict[str, Any]]:
    """`shown` with each finished rev's `files` added under its metrics, as `dvc exp show` would
    list them were they metrics; a file a rev lacks stays absent."""
    for commit in shown:
        revs = [commit, *(rev for experiment in commit.get("experiments") or []
                          for rev in experiment.get("revs") or [])]
        for rev in revs:
            data = rev.get("data")
            if not data or rev.get("error") or not rev.get("rev"):
                continue
            metrics = data.get("metrics") or {}
            missing = tuple(path for path in files if path not in metrics)
            metrics |= {path: {"data": value} for path, value in read_at(rev["rev"], missing, cwd).items()}
            data["metrics"] = metrics
    return shown


def show(cwd: Path | None = None) -> list[dict[str, Any]]:
    """`dvc exp show --json` of the project in `cwd` (default: here): all experiments of the
    workspace's commit, with the detail files (`DETAIL_FILES`) of each."""
    proc = subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json"], capture_output=True, text=True,
                          cwd=cwd)
    if proc.returncode != 0:
        raise PipelineError(f"dvc exp show failed: {proc.stderr.strip().splitlines()[-1:]}")
    return with_files(json.loads(proc.stdout), DETAIL_FILES, cwd)
