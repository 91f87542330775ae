"""The metric gate for pull requests: `python -m kd_pipeline.gate --base origin/main`.

It compares like with like: the pull request carries the `dvc.lock` and metrics its author
produced, and the gate checks that they are the product of the committed code, params and data
(`dvc status` finds nothing to rerun) instead of retraining on a different machine. Then it diffs
evaluate's per-variant metrics (metrics/evaluate.json, an output rather than a DVC metric so that
`dvc exp show` fits a terminal) against the base branch's, and shows `dvc metrics diff` of the
headline. A fall fails the gate when it exceeds
max(`gate.tolerance`, `gate.seed_sds` × √2 × the seed-to-seed standard deviation in
`metrics/seeds.json`): √2 because both sides are single runs. A speed target (a latency ratio)
fails the gate only when both sides were timed on the same CPU with the same kernel limits
(evaluate.json's `machine`). The Markdown report goes to stdout
and `--summary` ($GITHUB_STEP_SUMMARY); `--comment FILE` writes the pull request's comment (the
workflow posts it, editing its earlier one); `--plots DIR` writes `dvc plots diff` as HTML. It needs
DVC, pydantic and PyYAML only (requirements-gate.lock), not the training stack.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from kd_pipeline.core import paths
from kd_pipeline.core.errors import PipelineError, exit_on_pipeline_error
from kd_pipeline.core.params import GateParams, load_params
from kd_pipeline.evaluate import report as report_files
from kd_pipeline.evaluate.targets import failures

EVALUATION = str(paths.EVALUATION)
HEADLINE = str(report_files.HEADLINE)
SEEDS = str(paths.SEEDS_METRICS)


def _dvc(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise PipelineError(f"dvc {' '.join(args)} failed: {_last_line(proc.stderr)}")
    return proc


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


REMOTE_ENV = ("DVC_REMOTE_URL", "DVC_REMOTE_ENDPOINT_URL")  # CI secrets; empty when a fork's PR has none


def remote_from_env(env: dict[str, str] | None = None) -> str | None:
    """Make $DVC_REMOTE_URL (with $DVC_REMOTE_ENDPOINT_URL for S3-compatible stores) the default
    remote of this checkout only (.dvc/config.local), so CI pulls from the team's storage rather
    than the committed one, which may be a path on the author's machine. Credentials stay in the
    store's own variables (AWS_ACCESS_KEY_ID, ...). Returns the URL, or None when unset."""
    url, endpoint = ((env if env is not None else os.environ).get(name, "").strip() for name in REMOTE_ENV)
    if not url:
        return None
    _dvc("remote", "add", "--local", "--force", "--default", "ci", url)
    if endpoint:
        _dvc("remote", "modify", "--local", "ci", "endpointurl", endpoint)
    return url


def pull() -> str | None:
    """`dvc pull` from the default remote; None on success, else why it failed (one line)."""
    proc = _dvc("pull", check=False)
    return None if proc.returncode == 0 else _last_line(proc.stderr or proc.stdout)


def stale_stages(status: dict[str, Any], pulled: bool) -> tuple[list[str], list[str]]:
    """(stages whose lock is stale, stages that could not be checked) from `dvc status --json`;
    an always-changed stage (cpu) is neither.

    Without the remote's data, missing files read as "deleted" or "not in cache": they say nothing about
    staleness, so those stages are only listed as unchecked unless something else changed.
    """
    stale, unchecked = [], []
    for stage, entries in status.items():
        changes: list[str] = []
        missing = False
        for entry in entries:
            if isinstance(entry, str):  # "changed checksum"; or "always changed" (the cpu stage),
                if entry != "always changed":  # which re-runs by design and says nothing of the lock
                    changes.append(entry)
                continue
            for kind, files in entry.items():
                for path, state in _flatten(files):
                    if state in ("deleted", "not in cache") and not pulled:
                        missing = True
                    else:
                        changes.append(f"{kind.removeprefix('changed ')} {path} {state}")
        if changes:
            stale.append(f"{stage.split(':')[-1]} ({'; '.join(changes)})")
        elif missing:
            unchecked.append(stage.split(":")[-1])
    return stale, unchecked


def _flatten(files: dict[str, Any]) -> list[tuple[str, str]]:
    """(path, state) pairs; params come nested as {file: {key: state}}."""
    pairs = []
    for path, state in files.items():
        if isinstance(state, dict):
            pairs += [(f"{path}:{key}", value) for key, value in state.items()]
        else:
            pairs.append((path, state))
    return pairs


def allowance(name: str, cfg: GateParams, seeds: dict[str, Any] | None) -> float:
    """The largest fall of `variants.<variant>.<metric>` that is noise, not a regression."""
    parts = name.split(".")
    spread = 0.0
    if seeds and len(parts) == 3:
        spread = seeds.get("variants", {}).get(parts[1], {}).get(parts[2], {}).get("std") or 0.0
    return max(cfg.tolerance, cfg.seed_sds * math.sqrt(2.0) * spread)


def variant_changes(new: dict[str, Any] | None, old: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """`variants.<variant>.<metric>` → {old, new} for every number that differs between two
    evaluations, in `dvc metrics diff --json`'s form (None where a side lacks it)."""
    def flat(evaluation: dict[str, Any] | None) -> dict[str, Any]:
        variants = (evaluation or {}).get("variants") or {}
        return {f"variants.{name}.{key}": value for name, numbers in variants.items()
                for key, value in numbers.items() if isinstance(value, int | float) and not isinstance(value, bool)}

    after, before = flat(new), flat(old)
    return {name: {"old": before.get(name), "new": after.get(name)} for name in sorted(before.keys() | after.keys())
            if before.get(name) != after.get(name)}


def regressions(diff: dict[str, dict[str, Any]], cfg: GateParams, seeds: dict[str, Any] | None = None) -> list[str]:
    """Watched variant metrics of the evaluation that fell by more than their allowance."""
    found = []
    for name, change in diff.get(EVALUATION, {}).items():
        parts = name.split(".")
        if len(parts) != 3 or parts[0] != "variants" or parts[2] not in cfg.watch:
            continue
        old, new = change.get("old"), change.get("new")
        if not isinstance(old, int | float):
            continue
        limit = allowance(name, cfg, seeds)
        if not isinstance(new, int | float):
            found.append(f"{name} disappeared (was {old:.4f})")
        elif old - new > limit:
            found.append(f"{name} fell {old - new:.4f} ({old:.4f} → {new:.4f}), allowed {limit:.4f}")
    return found


MACHINE_KEYS = ("model", "isa", "int8_kernels", "kernel_limits")  # what a timing depends on
TIMED_TARGETS = ("speedup",)  # targets whose value is a latency ratio


def machines_differ(evaluation: dict[str, Any] | None, base: dict[str, Any] | None) -> str:
    """Why two evaluations' timings cannot be compared ('' when they can): different CPUs, or
    different kernel limits on one CPU. Accuracy is compared either way."""
    if not evaluation or not base:
        return ""
    ours, theirs = evaluation.get("machine") or {}, base.get("machine") or {}
    differ = [key for key in MACHINE_KEYS if ours.get(key) != theirs.get(key)]
    if not differ:
        return ""
    return (f"measured on another machine than the base ({', '.join(differ)} differ: {ours.get('model')} against"
            f" {theirs.get('model')})")


def _timed(miss: str) -> bool:
    return miss.split(":", 1)[0] in TIMED_TARGETS


def _read_at(base: str, path: str) -> dict[str, Any] | None:
    proc = subprocess.run(["git", "show", f"{base}:{path}"], capture_output=True, text=True)
    return json.loads(proc.stdout) if proc.returncode == 0 and proc.stdout.strip() else None


def _read(path: str) -> dict[str, Any] | None:
    file = Path(path)
    return json.loads(file.read_text()) if file.is_file() else None


def _deployed(evaluation: dict[str, Any] | None) -> str:
    if not evaluation:
        return "none"
    return f"`{evaluation.get('deployed')}` ({evaluation.get('deployed_reason', '')})"


def _machine(evaluation: dict[str, Any] | None) -> str:
    machine = (evaluation or {}).get("machine") or {}
    if not machine:
        return "unknown"
    limits = machine.get("kernel_limits") or {}
    held = f", kernels held to {limits['pytorch']}" if limits.get("pytorch") else ""
    return f"{machine.get('model', 'unknown CPU')} (int8 path {machine.get('int8_kernels', 'unknown')}{held})"


COMMENT_MARKER = "<!-- kd-pipeline metric gate -->"  # the workflow edits the comment that carries it


def comment_body(text: str, failed: bool, seconds: float) -> str:
    """The pull request's one gate comment: verdict first, the report, and what the check cost."""
    verdict = "❌ the metric gate fails" if failed else "✅ the metric gate passes"
    return (f"{COMMENT_MARKER}\n### {verdict}\n\n{text}\n"
            f"_Checked in {seconds:.0f} s by `python -m kd_pipeline.gate` (no retraining, no torch)._\n")


def _diff_table(diff: dict[str, dict[str, Any]], base: str) -> list[str]:
    """`dvc metrics/params diff --json` as a Markdown table (one dvc call serves check and report)."""
    rows = [f"| {path} | {name} | {change.get('old')} | {change.get('new')} | {change.get('diff', '')} |"
            for path, changes in diff.items() for name, change in changes.items()]
    if not rows:
        return ["No change."]
    return [f"| path | name | {base} | workspace | change |", "|---|---|---|---|---|", *rows]


def _lock_lines(pull_error: str | None, stale: list[str], unchecked: list[str]) -> list[str]:
    lines = [f"- ❌ dvc.lock is stale, rerun and commit: {s}" for s in stale]
    if pull_error is not None:
        lines.append(f"- ⚠️ remote not reachable ({pull_error}): data and models not checked, code and params were")
    if unchecked:
        lines.append(f"- ⚠️ not checked without the remote's files: {', '.join(unchecked)}")
    if not stale:
        lines.append("- ✅ dvc.lock is current: the committed metrics come from the committed inputs")
    return lines


def report(base: str, cfg: GateParams, pull_error: str | None, plots: str | None) -> tuple[str, bool]:
    """The Markdown report and whether the gate fails."""
    stale, unchecked = stale_stages(json.loads(_dvc("status", "--json").stdout or "{}"), pull_error is None)
    diff = json.loads(_dvc("metrics", "diff", "--json", "--", base).stdout or "{}")
    headline = {path: changes for path, changes in diff.items() if path == HEADLINE}
    params = json.loads(_dvc("params", "diff", "--json", base).stdout or "{}")
    evaluation, base_evaluation = _read(EVALUATION), _read_at(base, EVALUATION)
    fell = regressions({EVALUATION: variant_changes(evaluation, base_evaluation)}, cfg, _read(SEEDS))
    missed = failures(evaluation) if evaluation else [f"{EVALUATION} not found: run the pipeline and commit it"]
    already = set(failures(base_evaluation)) if base_evaluation else set()
    other_machine = machines_differ(evaluation, base_evaluation)
    new_misses = [m for m in missed if m not in already and not (other_machine and _timed(m))]

    lines = [f"## Against `{base}`", "", f"- deployed: {_deployed(evaluation)}",
             f"- base deployed: {_deployed(base_evaluation)}",
             f"- measured on: {_machine(evaluation)}; base on: {_machine(base_evaluation)}", ""]
    lines += ["### Gate", "", *_lock_lines(pull_error, stale, unchecked)]
    lines += [f"- ❌ target missed: {m}" for m in new_misses]
    lines += [f"- ⚠️ target missed on the base too: {m}" for m in missed if m in already]
    if other_machine:
        lines.append(f"- ⚠️ timings {other_machine}: speed targets are reported, not gated"
                     + "".join(f"; missed here: {m}" for m in missed if m not in already and _timed(m)))
    lines += [f"- ❌ regression: {r}" for r in fell]
    if not fell:
        lines.append(f"- ✅ no watched metric ({', '.join(cfg.watch)}) fell by more than its allowance")
    lines += ["", "### Headline metrics", "", *_diff_table(headline, base), "", "### Params", "",
              *_diff_table(params, base)]
    if plots:
        shown = _dvc("plots", "diff", base, "--out", plots, check=False)
        lines += ["", f"Plots diff: {plots}/index.html" if shown.returncode == 0
                  else f"Plots diff not written: {_last_line(shown.stderr)}"]
    return "\n".join(lines) + "\n", bool(stale or new_misses or fell)


@exit_on_pipeline_error
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fail a pull request whose lock is stale or whose metrics regress.")
    parser.add_argument("--base", required=True, help="git revision to compare with, e.g. origin/main")
    parser.add_argument("--summary", help="file to append the Markdown report to ($GITHUB_STEP_SUMMARY)")
    parser.add_argument("--no-pull", action="store_true", help="do not `dvc pull` first (check code and params only)")
    parser.add_argument("--plots", help="folder for the `dvc plots diff` HTML page")
    parser.add_argument("--comment", help="file to write the pull request comment to (the workflow posts it)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    cfg = load_params().gate
    if not args.no_pull and remote_from_env():
        print("metric gate: pulling from $DVC_REMOTE_URL (the remote set by the CI secrets)")
    pull_error = "--no-pull given" if args.no_pull else pull()
    text, failed = report(args.base, cfg, pull_error, args.plots)
    print(text)
    if pull_error is not None:
        print(f"::warning::metric gate: remote not reachable ({pull_error}); data and models not checked")
    if args.summary:
        with open(args.summary, "a") as handle:
            handle.write(text)
    if args.comment:
        Path(args.comment).write_text(comment_body(text, failed, time.perf_counter() - started))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
