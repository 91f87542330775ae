"""Did distillation help? A grid of settings × training seeds, each student paired with the
baseline of its own seed: `python -m kd_pipeline.records.sweep NAME --record RECORD --seeds 3 --set KEY=A,B`.

In a temporary clone of HEAD (as `record --rerun` does), today's params.yaml with the record's
`data` group (plus `--fixed KEY=VALUE` lines) is the base; every grid point × seed runs as a
queued DVC experiment of the training stages only (`--stages`), so what a setting cannot change
(prepare, the teacher, the assistant, the baseline of a seed) is trained once and restored from
DVC's run cache. With `--fixed-upstream` the teacher and the assistant are trained once, at the
first seed and the base params, and every experiment runs only the small arms (`dvc exp run
--single-item`), as the teacher-assistant paper trains its teachers once; `--seed-key
student.train.seed` then varies only the arms' seed, so the upstream's own lock stays valid. Each
distilled role's gain over the baseline is the mean of the per-seed paired
differences with its 95% t-interval (kd_pipeline.records.seeds.paired), and the student (through the
assistant) is paired with `direct` (from the teacher alone): what the assistant adds. The teacher's
lead over the baseline on validation says whether the row tests distillation at all (the field
finds gains only across a gap: at least `MIN_TEACHER_LEAD`). The best setting is the one with
the highest mean validation gain in `--metric`: the test split only reports. The result is a
record in `results/NAME/`: sweep.json, sweep.md, params.yaml, run.json (command, commit, machine)
and one experiment's dvc.lock (so `record --check` knows when its code is stale). Where the base
record's stages held PyTorch's and oneDNN's kernels (`rerun.held_kernels`), the sweep re-starts
itself under the same limits, as `record --rerun` does, and its command says so.
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
from kd_pipeline.core.roles import BASELINE, DIRECT, DISTILLED, STUDENT, TEACHERS
from kd_pipeline.evaluate.report import MIN_TEACHER_LEAD
from kd_pipeline.records.experiments import ROLE_METRICS, show
from kd_pipeline.records.provenance import provenance, run_json
from kd_pipeline.records.rerun import (
    apply_settings,
    kept_on_failure,
    kernel_prefix,
    nested_set,
    recipe,
    restart_under_kernels,
    run_in,
    run_queue,
)
from kd_pipeline.records.seeds import holm_adjusted, holm_column, measurable, paired

ROLE_OF_STAGE = {"distill_student": STUDENT, "distill_direct": DIRECT}  # the distilled roles
STAGES = ("train_baseline", "distill_student", "distill_direct")
UPSTREAM = TEACHERS  # trained once per row with --fixed-upstream
TRAINING_STAGES = ("prepare", "train_teacher", "distill_assistant", *STAGES)  # what a sweep can run
BASELINE_KEYS = ("student.", "train.", "data.")  # grid keys that change the baseline itself
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


def collect(shown: list[dict[str, Any]], keys: list[str], roles: list[str],
            seed_key: str = "train.seed") -> list[dict[str, Any]]:
    """One row per finished experiment: its grid point, seed (`seed_key`'s value) and each role's
    val/test metrics, the teacher's and the assistant's too where the experiment has them."""
    rows = []
    for commit in shown:
        for experiment in commit.get("experiments") or []:
            if (experiment.get("executor") or {}).get("state") not in (None, "success"):
                continue
            for rev in experiment.get("revs") or []:
                data = rev.get("data") or {}
                params = (data.get("params") or {}).get("params.yaml", {}).get("data") or {}
                metrics = data.get("metrics") or {}
                found = {role: (metrics.get(ROLE_METRICS[role]) or {}).get("data") for role in (BASELINE, *roles)}
                if rev.get("error") or not params or not all(found.values()):
                    continue
                found |= {role: (metrics.get(ROLE_METRICS[role]) or {}).get("data") for role in UPSTREAM}
                seed = lookup(params, seed_key)
                rows.append({"name": rev.get("name"), "rev": rev.get("rev"),
                             "seed": int(seed if seed is not None else lookup(params, "train.seed")),
                             "point": {key: lookup(params, key) for key in keys},
                             "roles": {role: data for role, data in found.items() if data}})
    return rows


def _score(role: dict[str, Any], split: str, metric: str) -> float:
    return float(role[split][metric])


def baseline_point(point: dict[str, Any]) -> str:
    """The part of a grid point the baseline reads (the student's architecture and budget, the data):
    points that differ only in distillation settings share one baseline per seed."""
    return json.dumps({k: v for k, v in point.items() if k.startswith(BASELINE_KEYS)}, sort_keys=True)


def summarize(rows: list[dict[str, Any]], metric: str, roles: list[str]) -> dict[str, Any]:
    """Per grid point and distilled role: paired gains over the same seed's baseline (of the same
    student, when the grid changes it), on test (reported) and on validation in `metric` (what
    picks the best point)."""
    baselines: dict[tuple[str, int], dict[str, Any]] = {}
    for row in rows:
        seen = baselines.setdefault((baseline_point(row["point"]), row["seed"]), row["roles"]["baseline"])
        if seen["test"] != row["roles"]["baseline"]["test"]:
            raise PipelineError(f"seed {row['seed']}: two different baselines for one student (a grid key"
                                " the baseline reads, outside student.*, train.* and data.*?)")
    points: dict[str, dict[str, Any]] = {}
    for row in rows:
        points.setdefault(json.dumps(row["point"], sort_keys=True), {})[row["seed"]] = row
    summary = []
    for point, by_seed in points.items():
        seeds = sorted(by_seed)
        entry: dict[str, Any] = {"point": json.loads(point), "seeds": seeds,
                                 "runs": [by_seed[s]["name"] for s in seeds]}
        own = [baselines[(baseline_point(entry["point"]), s)] for s in seeds]
        entry["baseline_test_accuracy_mean"] = sum(_score(b, "test", "accuracy") for b in own) / len(own)
        for role in roles:
            entry[role] = _gains([by_seed[s]["roles"][role] for s in seeds], own, metric)
        lead = upstream(list(by_seed.values()), own, metric).get("teacher_lead")
        if lead:
            entry["teacher_lead"] = lead
        if set(DISTILLED) <= set(roles):  # what the assistant adds: through it against without it
            entry["student_vs_direct"] = _gains([by_seed[s]["roles"][STUDENT] for s in seeds],
                                                [by_seed[s]["roles"][DIRECT] for s in seeds], metric)
        summary.append(entry)
    best = max(summary, key=lambda e: max(e[r]["val"]["mean"] for r in roles))
    baseline_mean = sum(_score(b, "test", "accuracy") for b in baselines.values()) / len(baselines)
    return {"metric": metric, "roles": roles, "seeds": sorted({seed for _, seed in baselines}),
            "baseline_test_accuracy_mean": baseline_mean,
            "upstream": upstream(rows, list(baselines.values()), metric),
            "points": summary, "best_on_validation": best["point"]}


def student_costs(models: list[str], image_size: int, num_classes: int, threads: int = 1) -> dict[str, Any]:
    """What each student size costs to deploy, measured in one run on this CPU so the sizes compare:
    parameters, MACs, fp32 ONNX bytes and ONNX Runtime batch-1 latency (`threads` threads, median of
    50 after 10 warm-up runs, the evaluate stage's defaults). Untrained weights: cost does not
    depend on their values."""
    import numpy as np
    import torch

    from kd_pipeline.core.models import count_macs, count_parameters, create_model
    from kd_pipeline.evaluate.costs import file_size_mb, time_model
    from kd_pipeline.evaluate.runtime import onnx_runner
    from kd_pipeline.quantize.onnx_export import export_onnx

    size = [3, image_size, image_size]
    sample = np.random.default_rng(0).integers(0, 256, (8, image_size, image_size, 3), dtype=np.uint8)
    found = {}
    with tempfile.TemporaryDirectory(prefix="kd-sweep-costs-") as tmp:
        for name in models:
            torch.manual_seed(0)
            model = create_model(name, num_classes).eval()
            path = Path(tmp) / f"{name}.onnx"
            export_onnx(model, size, path)
            timing = time_model(onnx_runner(path, [0.5] * 3, [0.25] * 3, threads), sample, 8, 10, 50)
            found[name] = {"parameters": count_parameters(model), "macs": count_macs(model, size),
                           "onnx_mb": file_size_mb(path), "latency_ms": timing.latency_ms, "threads": threads}
    return found


def _gains(arm: list[dict[str, Any]], control: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """Paired differences arm − control, seed by seed: test accuracy and balanced accuracy (reported),
    validation `metric` (what picks), and the arm's mean test accuracy."""
    gains: dict[str, Any] = {f"test_{m}": paired([_score(a, "test", m) - _score(c, "test", m)
                                                  for a, c in zip(arm, control, strict=True)]) for m in METRICS}
    gains["val"] = paired([_score(a, "val", metric) - _score(c, "val", metric)
                           for a, c in zip(arm, control, strict=True)])
    gains["test_accuracy_mean"] = sum(_score(a, "test", "accuracy") for a in arm) / len(arm)
    return gains


def upstream(rows: list[dict[str, Any]], baselines: list[dict[str, Any]], metric: str = "accuracy") -> dict[str, Any]:
    """The teacher's and the assistant's scores (mean over the experiments, one value when they were
    trained once) and the teacher's lead over the mean baseline, in accuracy and in `metric` (the
    set's decision metric): on validation in `metric` it decides whether the row tests distillation
    (>= MIN_TEACHER_LEAD), the rest is reported."""
    found: dict[str, Any] = {}
    metrics = sorted({"accuracy", metric})
    for role in UPSTREAM:
        runs = [row["roles"][role] for row in rows if role in row["roles"]]
        if not runs:
            continue
        found[role] = {f"{split}_{m}": sum(_score(r, split, m) for r in runs) / len(runs)
                       for split in ("val", "test") for m in metrics}
        found[role]["distinct_runs"] = len({json.dumps(r, sort_keys=True) for r in runs})
    if "teacher" in found:
        lead = {f"{split}_{m}" if m != "accuracy" else split: found["teacher"][f"{split}_{m}"]
                - sum(_score(b, split, m) for b in baselines) / len(baselines)
                for split in ("val", "test") for m in metrics}
        decides = lead["val" if metric == "accuracy" else f"val_{metric}"]
        found["teacher_lead"] = {**lead, "metric": metric, "minimum": MIN_TEACHER_LEAD,
                                 "tests_distillation": decides >= MIN_TEACHER_LEAD}
    return found


def table(summary: dict[str, Any]) -> str:
    """Each grid point's paired gains over the baseline, per distilled role (the README's block).
    Each column's cells are one family of comparisons: "measurable" after Holm's correction."""
    keys = list(summary["points"][0]["point"]) if summary["points"] else []
    lines = ["| " + " | ".join(keys) + " | role | test accuracy | − baseline, test accuracy"
             f" | − baseline, test balanced accuracy | − baseline, val {summary['metric']} |",
             "|" + "---|" * (len(keys) + 5)]
    rows = [(entry, role) for entry in summary["points"] for role in ROLE_OF_STAGE.values() if role in entry]
    columns = [holm_column([entry[role][key] for entry, role in rows])
               for key in ("test_accuracy", "test_balanced_accuracy", "val")]
    for (entry, role), cells in zip(rows, zip(*columns, strict=True), strict=True):
        lines.append("| " + " | ".join(str(v) for v in entry["point"].values())
                     + f" | {role} | {entry[role]['test_accuracy_mean']:.4f} | " + " | ".join(cells) + " |")
    added = [entry for entry in summary["points"] if "student_vs_direct" in entry]
    if added:
        lines += ["", "What the assistant adds (student through the assistant − direct from the teacher, by seed):",
                  "", "| " + " | ".join(keys) + " | test accuracy | test balanced accuracy"
                  f" | val {summary['metric']} |", "|" + "---|" * (len(keys) + 3)]
        columns = [holm_column([entry["student_vs_direct"][key] for entry in added])
                   for key in ("test_accuracy", "test_balanced_accuracy", "val")]
        for entry, cells in zip(added, zip(*columns, strict=True), strict=True):
            lines.append("| " + " | ".join(str(v) for v in entry["point"].values()) + " | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def sizes_table(summary: dict[str, Any]) -> list[str]:
    """Per student size: what it costs, how the baseline scores, the teacher's lead over it, and
    what distillation adds in test accuracy and balanced accuracy, from the sweep's own runs (each
    column one family: Holm's correction over the sizes)."""
    costs = summary.get("students") or {}
    entries = [e for e in summary["points"] if "student.model" in e["point"]]
    if not costs or not entries:
        return []
    entries.sort(key=lambda e: -costs.get(e["point"]["student.model"], {}).get("parameters", 0))
    arms = [(role, key) for role in DISTILLED if all(role in e for e in entries)
            for key in ("test_accuracy", "test_balanced_accuracy")]
    columns = [holm_column([entry[role][key] for entry in entries]) for role, key in arms]
    header = "".join(f" | {role} − baseline, {key.replace('_', ' ')}" for role, key in arms)
    lines = ["", "Student sizes (costs: fp32 ONNX, ONNX Runtime batch 1, one run on this CPU):", "",
             "| student | parameters | MACs | fp32 MB | latency ms | baseline test accuracy"
             f" | teacher − baseline, val decision metric{header} |", "|" + "---|" * (7 + len(arms))]
    for k, entry in enumerate(entries):
        name = entry["point"]["student.model"]
        cost = costs.get(name, {})
        cells = [name, f"{cost.get('parameters', 0):,}", f"{cost.get('macs', 0) / 1e6:.1f} M",
                 f"{cost.get('onnx_mb', 0):.2f}", f"{cost.get('latency_ms', 0):.3f}",
                 f"{entry['baseline_test_accuracy_mean']:.4f}", _lead_cell(entry.get("teacher_lead", {})),
                 *(column[k] for column in columns)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + ["", *size_verdict(summary, entries)]


def _paying(entries: list[dict[str, Any]], role: str, key: str) -> list[bool]:
    """Per size: whether `role`'s gain in `key` is measurable and positive, Holm over the sizes."""
    cells = [entry[role][key] for entry in entries]
    adjusted = holm_adjusted(cells)
    return [stats["n"] >= 2 and stats["mean"] > 0 and measurable(stats, adjusted.get(i))
            for i, stats in enumerate(cells)]


def size_verdict(summary: dict[str, Any], entries: list[dict[str, Any]]) -> list[str]:
    """The answer a user sweeps student sizes for: the largest size (sizes ordered largest first) at
    which a distilled arm's test gain in the set's decision metric is measurable after Holm's
    correction over the sizes, and what deploying it costs against the teacher; or, when none is,
    why (where the teacher led by too little, and where it led but the gain is not measurably above 0)."""
    metric = summary["metric"] if summary["metric"] in METRICS else "accuracy"
    key = f"test_{metric}"
    roles = [role for role in DISTILLED if all(role in e for e in entries)]
    pays = {role: _paying(entries, role, key) for role in roles}
    names = [entry["point"]["student.model"] for entry in entries]
    costs = summary.get("students") or {}
    teacher = (summary.get("upstream") or {}).get("teacher")
    head = (f"**Where distillation pays** (test {metric.replace('_', ' ')}, the set's decision metric;"
            f" Holm over the {len(entries)} sizes):")
    paying = [k for k in range(len(entries)) if any(pays[role][k] for role in roles)]
    if not paying:
        led = [names[k] for k, e in enumerate(entries) if e.get("teacher_lead", {}).get("tests_distillation")]
        why = ("the teacher led the baseline by the minimum on validation at no size: it knows too little more than"
               " any of these students" if not led else
               f"the teacher led by the minimum only at {', '.join(led)}, and there the gain is not measurably"
               " above 0")
        return [f"{head} at none of these sizes; {why}."]
    k = paying[0]
    entry, name = entries[k], names[k]
    role = max((r for r in roles if pays[r][k]), key=lambda r: entry[r]["val"]["mean"])  # validation picks the arm
    cost = costs.get(name, {})
    line = (f"{head} it starts at **{name}** ({cost.get('parameters', 0):,} parameters, {cost.get('onnx_mb', 0):.2f} MB"
            f" fp32, {cost.get('latency_ms', 0):.3f} ms): {role} − baseline {entry[role][key]['mean']:+.4f}"
            f" [{entry[role][key]['low']:+.4f}, {entry[role][key]['high']:+.4f}]; paying sizes:"
            f" {', '.join(names[i] for i in paying)}.")
    if teacher:
        deployed = entry[role]["test_accuracy_mean"]
        line += (f" Deploying {name} ({role}): test accuracy {deployed:.4f}; teacher − it"
                 f" {teacher['test_accuracy'] - deployed:+.4f} (teacher {teacher['test_accuracy']:.4f}).")
    return [line]


def _lead_cell(lead: dict[str, Any]) -> str:
    """The teacher's validation lead in the metric that decides it, and whether that is enough."""
    if not lead:
        return "—"
    metric = lead.get("metric", "accuracy")
    value = lead["val" if metric == "accuracy" else f"val_{metric}"]
    return f"{value:+.4f}{'' if lead['tests_distillation'] else ' (under the minimum)'}"


def upstream_lines(summary: dict[str, Any]) -> list[str]:
    """The teacher and the assistant, and whether the teacher leads by enough to test distillation."""
    found = summary.get("upstream") or {}
    lines = []
    for role in (r for r in UPSTREAM if r in found):
        runs = found[role]["distinct_runs"]
        once = "trained once" if runs == 1 else f"{runs} distinct runs"
        lines.append(f"- {role}: validation accuracy {found[role]['val_accuracy']:.4f}, test"
                     f" {found[role]['test_accuracy']:.4f} ({once})")
    lead = found.get("teacher_lead")
    if lead:
        verdict = ("so this row tests distillation" if lead["tests_distillation"] else
                   "so this row does not test distillation: the teacher knows too little more than the student")
        metric = lead.get("metric", "accuracy")
        other = "" if metric == "accuracy" else (f"; validation {metric} {lead[f'val_{metric}']:+.4f}, test"
                                                 f" {lead[f'test_{metric}']:+.4f}")
        lines.append(f"- teacher − baseline (mean): validation accuracy {lead['val']:+.4f}, test {lead['test']:+.4f}"
                     f"{other}; the minimum lead is {lead['minimum']:+.2f} in validation {metric}, {verdict}")
    return lines


def render(summary: dict[str, Any], title: str) -> str:
    """sweep.md: what was compared, how, which setting validation picked, and the table."""
    return "\n".join([f"# {title}", "", f"Seeds {summary['seeds']}; baseline (no KD) test accuracy"
                      f" {summary['baseline_test_accuracy_mean']:.4f} (mean). Each cell: mean of the per-seed"
                      " paired differences against the same seed's baseline, with its 95% t-interval and p-value;"
                      " \"measurable\" only when the interval excludes 0 and, where a column holds several"
                      " comparisons, Holm's adjusted p-value is below 0.05. Where it is not, \"80% power needs N"
                      " seeds\" is how many seeds a paired t-test at 0.05 (one comparison) would need to detect a true"
                      " difference of the observed mean at the observed spread.", "The best setting is chosen on"
                      f" validation ({summary['metric']}): {summary['best_on_validation']}.", "",
                      *upstream_lines(summary), "", table(summary), *sizes_table(summary)]) + "\n"


def sweep_table(folder: Path) -> str:
    """The README block `<!-- table: sweep NAME -->`: the statistics recomputed from the per-seed
    rows the record's sweep.json keeps, so every table reads the same, current tests."""
    saved = json.loads((folder / "sweep.json").read_text())
    current = {**saved, "points": summarize(saved["rows"], saved["metric"], saved["roles"])["points"]}
    return "\n".join([table(current), *sizes_table(current)])


def _dvc(args: list[str], cwd: Path) -> str:
    return run_in([sys.executable, "-m", "dvc", *args], cwd)


def run_grid(clone: Path, seeds: list[int], points: list[dict[str, str]], stages: list[str],
             seed_key: str = "train.seed", single_item: bool = False) -> None:
    """Queue every grid point × seed (seed-major, so a seed's shared stages train once) and run
    the queue to its end; `single_item`: each experiment runs only `stages`, in that order."""
    for seed in seeds:
        for point in points:
            settings = {seed_key: str(seed), **point}
            sets = [arg for key, value in settings.items() for arg in ("-S", f"{key}={value}")]
            _dvc(["exp", "run", "--queue", *(["--single-item"] if single_item else []), *sets, *stages], clone)
    run_queue(clone)


def train_upstream(clone: Path) -> None:
    """Train everything the arms learn from once, at the base params, and commit it as the base of
    every experiment (--fixed-upstream): prepare, the teacher, the first seed's baseline (the
    assistant's weak-teacher check reads it) and the assistant."""
    _dvc(["repro", "distill_assistant"], clone)
    subprocess.run(["git", "add", "-A"], cwd=clone, check=True)
    subprocess.run(["git", "commit", "-qm", "sweep: the upstream, trained once"], cwd=clone, check=True)


def trained_lock(lock: str) -> str:
    """The experiment's dvc.lock less the stages no sweep runs (prune to export): their entries are
    the base commit's, from whatever code made it, and would make `record --check` call the record
    stale for code it never ran."""
    spec = yaml.safe_load(lock)
    spec["stages"] = {name: entry for name, entry in spec.get("stages", {}).items() if name in TRAINING_STAGES}
    return yaml.safe_dump(spec, sort_keys=False)


def recorded_command(argv: list[str], seconds: float) -> str:
    """The command line as run.json keeps it: quoted so that it pastes back into a shell (a
    `--point` holds spaces), then the wall time."""
    return f"{kernel_prefix()}python -m kd_pipeline.records.sweep {shlex.join(argv)} ({seconds:.0f} s wall in all)"


def sweep(name: str, args: argparse.Namespace, repo: Path = Path(".")) -> Path:
    """Run the grid in a clone of HEAD and write the record `results/name/`."""
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
    with kept_on_failure(f"kd-sweep-{name}-", repo.resolve()) as clone:
        _dvc(["cache", "dir", "--local", str(repo.resolve() / ".dvc" / "cache")], clone)
        nested_set(params, args.seed_key, str(seeds[0]))  # the base is the first seed's run
        (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        subprocess.run(["git", "commit", "-qam", f"sweep {name}: base params"], cwd=clone, check=True)
        if args.fixed_upstream:
            train_upstream(clone)
        run_grid(clone, seeds, points, args.stages, args.seed_key, args.fixed_upstream)
        rows = collect(show(clone), list(points[0]), roles, args.seed_key)
        if len(rows) != len(seeds) * len(points):
            raise PipelineError(f"found {len(rows)} finished experiments of {len(seeds) * len(points)} in {clone}")
        summary = summarize(rows, args.metric, roles)
        if "student.model" in points[0]:  # a sweep over student sizes: what each size costs
            models = sorted({str(row["point"]["student.model"]) for row in rows})
            if not (clone / paths.PREPARED / "meta.json").is_file():
                _dvc(["repro", "prepare"], clone)  # from the run cache: the class count
            meta = json.loads((clone / paths.PREPARED / "meta.json").read_text())
            summary["students"] = student_costs(models, int(meta["image_size"]), len(meta["class_names"]))
        lock = subprocess.run(["git", "show", f"{rows[0]['rev']}:dvc.lock"], cwd=clone, capture_output=True,
                              text=True, check=True).stdout
    command = recorded_command(sys.argv[1:] if args.argv is None else args.argv, time.time() - started)
    target = repo / paths.RESULTS / name
    with atomic_dir(target) as out:
        (out / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        (out / "dvc.lock").write_text(trained_lock(lock))
        write_json(out / "sweep.json", {**summary, "rows": rows})
        (out / "sweep.md").write_text(render(summary, f"Distillation sweep: {name}"))
        write_json(out / "run.json", run_json(command, made, started))
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
    parser.add_argument("--seed-key", default="train.seed",
                        help="the param each seed sets: student.train.seed leaves the teacher's and assistant's alone")
    parser.add_argument("--fixed-upstream", action="store_true",
                        help="train the teacher and the assistant once, at the first seed and the base params;"
                             " each experiment then runs only --stages (as the teacher-assistant paper does)")
    args = parser.parse_args(argv)
    args.argv = argv
    if args.seeds < 2:
        raise PipelineError(f"--seeds {args.seeds}: at least 2 to state an interval")
    # the base record's kernels: on one CPU, other kernels round otherwise (held_kernels)
    given = sys.argv[1:] if argv is None else argv
    restart_under_kernels(paths.RESULTS / args.record, "kd_pipeline.records.sweep", given)
    target = sweep(args.name, args)
    print((target / "sweep.md").read_text())
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
