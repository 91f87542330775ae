"""The metric gate for pull requests: `python -m kd_pipeline.gate --base origin/main`.

Posts `dvc metrics diff` and `dvc params diff` against the base revision as Markdown (to
`--summary`, e.g. $GITHUB_STEP_SUMMARY, and stdout) and exits 1 when the evaluation's target
check fails or a watched metric fell by more than `gate.tolerance`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from kd_pipeline.errors import PipelineError, exit_on_pipeline_error
from kd_pipeline.params import GateParams, load_params
from kd_pipeline.targets import failures


def _dvc(*args: str) -> str:
    proc = subprocess.run(["dvc", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise PipelineError(f"dvc {' '.join(args)} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return proc.stdout


def regressions(diff: dict[str, dict[str, Any]], cfg: GateParams) -> list[str]:
    """Watched metrics that fell by more than the tolerance, from `dvc metrics diff --json`."""
    found = []
    for path, metrics in diff.items():
        for name, change in metrics.items():
            old, new = change.get("old"), change.get("new")
            if name.rsplit(".", 1)[-1] not in cfg.watch or not isinstance(old, int | float):
                continue
            if not isinstance(new, int | float):
                found.append(f"{path}: {name} disappeared (was {old:.4f})")
            elif old - new > cfg.tolerance:
                fall = f"fell {old - new:.4f} ({old:.4f} → {new:.4f})"
                found.append(f"{path}: {name} {fall}, tolerance {cfg.tolerance:g}")
    return found


@exit_on_pipeline_error
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fail a pull request whose metrics regress.")
    parser.add_argument("--base", required=True, help="git revision to compare with, e.g. origin/main")
    parser.add_argument("--summary", help="file to append the Markdown report to ($GITHUB_STEP_SUMMARY)")
    parser.add_argument("--evaluation", default="metrics/evaluate.json")
    args = parser.parse_args(argv)
    cfg = load_params().gate
    diff = json.loads(_dvc("metrics", "diff", "--json", args.base) or "{}")
    fell = regressions(diff, cfg)
    evaluation_path = Path(args.evaluation)
    missed = failures(json.loads(evaluation_path.read_text())) if evaluation_path.is_file() else [
        f"{evaluation_path} not found: run the pipeline first"
    ]
    lines = [f"## Metrics against `{args.base}`", "", _dvc("metrics", "diff", "--md", args.base) or "No change.", ""]
    lines += ["## Params against the base", "", _dvc("params", "diff", "--md", args.base) or "No change.", ""]
    lines += ["## Gate", ""]
    lines += [f"- ❌ target missed: {m}" for m in missed] + [f"- ❌ regression: {r}" for r in fell]
    if not missed and not fell:
        lines.append(f"- ✅ targets met, no watched metric fell by more than {cfg.tolerance:g}")
    report = "\n".join(lines) + "\n"
    print(report)
    if args.summary:
        with open(args.summary, "a") as handle:
            handle.write(report)
    return 1 if missed or fell else 0


if __name__ == "__main__":
    sys.exit(main())
