"""Did distillation help? A grid of settings × training seeds, each student paired with the
baseline of its own seed: `python -m kd_pipeline.sweep NAME --record RECORD --seeds 3 --set KEY=A,B`.

In a temporary clone of HEAD (as `record --rerun` does), today's params.yaml with the record's
`data` group (plus `--fixed KEY=VALUE` lines) is the base; every grid point × seed runs as a
queued DVC experiment of the training stages only (`--stages`), so what a setting cannot change
(prepare, the teacher, the assistant, the baseline of a seed) is trained once and restored from
DVC's run cache. Each distilled role's gain over the baseline is the mean of the per-seed paired
differences with its 95% t-interval (kd_pipeline.seeds.paired). The best setting is the one with
the highest mean validation gain in `--metric`: the test split only reports. The result is a
record in `results/NAME/`: sweep.json, sweep.md, params.yaml, run.json (command, commit, machine)
and one experiment's dvc.lock (so `record --check` knows when its code is stale).
"""

from __future__ import annotations

import argparse
import itertools
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from kd_pipeline.core import paths
from kd_pipeline.core.errors import PipelineError, exit_on_pipeline_error
from kd_pipeline.core.files import atomic_dir, write_json
from kd_pipeline.core.params import parse_params
from kd_pipeline.experiments import show
from kd_pipeline.rerun import apply_settings, nested_set, recipe, run_in, run_queue
from kd_pipeline.seeds import measurable, paired

ROLE_OF_STAGE = {"distill_student": "student", "distill_direct": "direct"}  # the distilled roles
STAGES = ("train_baseline", "distill_student", "distill_direct")
METRICS = ("accuracy", "balanced_accuracy")


def grid(settings: list[str]) -> list[dict[str, str]]:
    """Every combination of `KEY=A,B` lines, as {key: value} (values as DVC's -S takes them)."""
    axes = []
    for line in settings:
        key, sep, values = line.partition("=")
        if not sep or not values:
            raise PipelineError(f"--set {line}: expected KEY=VALUE[,VALUE...]")
        axes.append([(key, value) for value in values.split(",")])
    return [dict(point) for point in itertools.product(*axes)] or [{}]


def listed(points: list[str]) -> list[dict[str, str]]:
    """Grid points named one by one (`--point "kd.method=dkd kd.logit_standardization=true"`),
    where a full product would spend CPU on settings nobody needs."""
    found = []
    for point in points:
        pairs = [item.partition("=") for item in point.split()]
        if not pairs or any(not sep or not value for _, sep, value in pairs):
            raise PipelineError(f"--point {point!r}: expected KEY=VALUE [KEY=VALUE ...]")
        found.append({key: value for key, _, value in pairs})
    if len({tuple(sorted(p)) for p in found}) > 1:
        raise PipelineError("--point: every point must set the same keys")
    return found


def base_params(record: str, fixed: list[str], repo: Path) -> dict[str, Any]:
    """Today's params.yaml with the record's data group and the fixed settings, checked by today's
    code before any work; each grid point is then checked the same way."""
    params = recipe(record, repo / paths.RESULTS, repo, today_defaults=True).params
    apply_settings(params, fixed, "--fixed")
    return params


def check_points(params: dict[str, Any], points: list[dict[str, str]]) -> None:
    """Refuse a grid point today's params schema refuses, before the queue starts."""
    for point in points:
        trial = json.loads(json.dumps(params))
        for key, value in point.items():
            nested_set(trial, key, value)
        parse_params(trial, source=f"grid point {point}")


def lookup(params: dict[str, Any], key: str) -> Any:
    node: Any = params
    for part in key.split("."):
        node = (node or {}).get(part)
    return node


def roles_of(stages: list[str]) -> list[str]:
    """The distilled roles the stages train: only their metrics are this experiment's own (the
    others are the base commit's files)."""
    roles = [ROLE_OF_STAGE[stage] for stage in stages if stage in ROLE_OF_STAGE]
    if "train_baseline" not in stages or not roles:
        raise PipelineError(f"--stages {' '.join(stages)}: need train_baseline and at least one of"
                            f" {', '.join(ROLE_OF_STAGE)}")
    return roles


def collect(shown: list[dict[str, Any]], keys: list[str], roles: list[str]) -> list[dict[str, Any]]:
    """One row per finished experiment: its grid point, seed and each role's val/test metrics."""
    rows = []
    for commit in shown:
        for experiment in commit.get("experiments") or []:
            if (experiment.get("executor") or {}).get("state") not in (None, "success"):
                continue
            for rev in experiment.get("revs") or []:
                data = rev.get("data") or {}
                params = (data.get("params") or {}).get("params.yaml", {}).get("data") or {}
                metrics = data.get("metrics") or {}
                found = {role: (metrics.get(f"metrics/{role}/metrics.json") or {}).get("data")
                         for role in ("baseline", *roles)}
                if rev.get("error") or not params or not all(found.values()):
                    continue
                rows.append({"name": rev.get("name"), "rev": rev.get("rev"), "seed": params["train"]["seed"],
                             "point": {key: lookup(params, key) for key in keys}, "roles": found})
    return rows


def _score(role: dict[str, Any], split: str, metric: str) -> float:
    return float(role[split][metric])


def summarize(rows: list[dict[str, Any]], metric: str, roles: list[str]) -> dict[str, Any]:
    """Per grid point and distilled role: paired gains over the same seed's baseline, on test
    (reported) and on validation in `metric` (what picks the best point)."""
    baselines: dict[int, dict[str, Any]] = {}
    for row in rows:
        seen = baselines.setdefault(row["seed"], row["roles"]["baseline"])
        if seen["test"] != row["roles"]["baseline"]["test"]:
            raise PipelineError(f"seed {row['seed']}: two different baselines (a grid key changes the baseline?)")
    points: dict[str, dict[str, Any]] = {}
    for row in rows:
        points.setdefault(json.dumps(row["point"], sort_keys=True), {})[row["seed"]] = row
    summary = []
    for point, by_seed in points.items():
        seeds = sorted(by_seed)
        entry: dict[str, Any] = {"point": json.loads(point), "seeds": seeds,
                                 "runs": [by_seed[s]["name"] for s in seeds]}
        for role in roles:
            entry[role] = {f"test_{m}": paired([_score(by_seed[s]["roles"][role], "test", m)
                                                - _score(baselines[s], "test", m) for s in seeds]) for m in METRICS}
            entry[role]["val"] = paired([_score(by_seed[s]["roles"][role], "val", metric)
                                         - _score(baselines[s], "val", metric) for s in seeds])
            entry[role]["test_accuracy_mean"] = sum(_score(by_seed[s]["roles"][role], "test", "accuracy")
                                                    for s in seeds) / len(seeds)
        summary.append(entry)
    best = max(summary, key=lambda e: max(e[r]["val"]["mean"] for r in roles))
    baseline_mean = sum(_score(b, "test", "accuracy") for b in baselines.values()) / len(baselines)
    return {"metric": metric, "roles": roles, "seeds": sorted(baselines), "baseline_test_accuracy_mean": baseline_mean,
            "points": summary, "best_on_validation": best["point"]}


def _interval(stats: dict[str, float]) -> str:
    """`mean [low, high] p=…`, and "measurable" when the interval excludes 0."""
    if stats["n"] < 2:
        return f"{stats['mean']:+.4f}"
    p_value = "p<0.001" if stats["p_value"] < 0.001 else f"p={stats['p_value']:.3f}"
    return (f"{stats['mean']:+.4f} [{stats['low']:+.4f}, {stats['high']:+.4f}] {p_value}"
            f"{' measurable' if measurable(stats) else ''}")


def table(summary: dict[str, Any]) -> str:
    """Each grid point's paired gains over the baseline, per distilled role (the README's block)."""
    keys = list(summary["points"][0]["point"]) if summary["points"] else []
    lines = ["| " + " | ".join(keys) + " | role | test accuracy | − baseline, test accuracy"
             f" | − baseline, test balanced accuracy | − baseline, val {summary['metric']} |",
             "|" + "---|" * (len(keys) + 5)]
    for entry in summary["points"]:
        for role in (r for r in ROLE_OF_STAGE.values() if r in entry):  # the roles this sweep trained
            stats = entry[role]
            lines.append("| " + " | ".join(str(v) for v in entry["point"].values())
                         + f" | {role} | {stats['test_accuracy_mean']:.4f} | {_interval(stats['test_accuracy'])}"
                         f" | {_interval(stats['test_balanced_accuracy'])} | {_interval(stats['val'])} |")
    return "\n".join(lines)


def render(summary: dict[str, Any], title: str) -> str:
    """sweep.md: what was compared, how, which setting validation picked, and the table."""
    return "\n".join([f"# {title}", "", f"Seeds {summary['seeds']}; baseline (no KD) test accuracy"
                      f" {summary['baseline_test_accuracy_mean']:.4f} (mean). Each cell: mean of the per-seed"
                      " paired differences against the same seed's baseline, with its 95% t-interval and p-value;"
                      " \"measurable\" only when the interval excludes 0.", "The best setting is chosen on"
                      f" validation ({summary['metric']}): {summary['best_on_validation']}.", "",
                      table(summary)]) + "\n"


def sweep_table(folder: Path) -> str:
    """The README block `<!-- table: sweep NAME -->`, from the record's sweep.json."""
    return table(json.loads((folder / "sweep.json").read_text()))


def _dvc(args: list[str], cwd: Path) -> str:
    return run_in([sys.executable, "-m", "dvc", *args], cwd)


def run_grid(clone: Path, seeds: list[int], points: list[dict[str, str]], stages: list[str]) -> None:
    """Queue every grid point × seed (seed-major, so a seed's shared stages train once) and run
    the queue to its end."""
    for seed in seeds:
        for point in points:
            settings = {"train.seed": str(seed), **point}
            sets = [arg for key, value in settings.items() for arg in ("-S", f"{key}={value}")]
            _dvc(["exp", "run", "--queue", *sets, *stages], clone)
    run_queue(clone)


def recorded_command(argv: list[str], seconds: float) -> str:
    """The command line as run.json keeps it: quoted so that it pastes back into a shell (a
    `--point` holds spaces), then the wall time."""
    return f"python -m kd_pipeline.sweep {shlex.join(argv)} ({seconds:.0f} s wall in all)"


def sweep(name: str, args: argparse.Namespace, repo: Path = Path(".")) -> Path:
    """Run the grid in a clone of HEAD and write the record `results/name/`."""
    from kd_pipeline.record import machine, provenance, versions

    roles = roles_of(args.stages)
    params = base_params(args.record, args.fixed, repo)
    if bool(args.set) == bool(args.point):
        raise PipelineError("give the grid as --set KEY=A,B lines or as --point lines, one of the two")
    points = grid(args.set) if args.set else listed(args.point)
    check_points(params, points)
    made = provenance(repo)
    if made["dirty"]:
        raise PipelineError("uncommitted code changes: commit them first (the sweep runs HEAD)")
    seeds = list(range(args.seeds))
    started = time.time()
    with tempfile.TemporaryDirectory(prefix=f"kd-sweep-{name}-", ignore_cleanup_errors=True) as tmp:
        clone = Path(tmp) / "clone"
        subprocess.run(["git", "clone", "-q", str(repo.resolve()), str(clone)], check=True)
        _dvc(["cache", "dir", "--local", str(repo.resolve() / ".dvc" / "cache")], clone)
        (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        subprocess.run(["git", "commit", "-qam", f"sweep {name}: base params"], cwd=clone, check=True)
        run_grid(clone, seeds, points, args.stages)
        rows = collect(show(clone), list(points[0]), roles)
        if len(rows) != len(seeds) * len(points):
            raise PipelineError(f"found {len(rows)} finished experiments of {len(seeds) * len(points)} in {clone}")
        summary = summarize(rows, args.metric, roles)
        lock = subprocess.run(["git", "show", f"{rows[0]['rev']}:dvc.lock"], cwd=clone, capture_output=True,
                              text=True, check=True).stdout
    command = recorded_command(sys.argv[1:] if args.argv is None else args.argv, time.time() - started)
    target = repo / paths.RESULTS / name
    with atomic_dir(target) as out:
        (out / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        (out / "dvc.lock").write_text(lock)
        write_json(out / "sweep.json", {**summary, "rows": rows})
        (out / "sweep.md").write_text(render(summary, f"Distillation sweep: {name}"))
        write_json(out / "run.json", {"command": command, **made, "machine": machine(), "versions": versions()})
    return target


@exit_on_pipeline_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A grid of settings × seeds, each student against its seed's"
                                     " baseline.")
    parser.add_argument("name", help="the record to write: results/NAME/")
    parser.add_argument("--record", required=True, help="the record whose data group is the base (results/RECORD/)")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds 0..N-1")
    parser.add_argument("--set", action="append", default=[], help="KEY=A,B: a grid axis (repeatable)")
    parser.add_argument("--point", action="append", default=[],
                        help="\"KEY=V KEY=V\": one grid point (repeatable), instead of --set")
    parser.add_argument("--fixed", action="append", default=[], help="KEY=VALUE for every run (repeatable)")
    parser.add_argument("--stages", nargs="+", default=list(STAGES), help="the stages each experiment runs")
    parser.add_argument("--metric", default="balanced_accuracy", help="the validation score that picks the best")
    args = parser.parse_args(argv)
    args.argv = argv
    if args.seeds < 2:
        raise PipelineError(f"--seeds {args.seeds}: at least 2 to state an interval")
    target = sweep(args.name, args)
    print((target / "sweep.md").read_text())
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
