"""The whole size–speed–accuracy trade-off, not one point: every variant of every finished
experiment, with the Pareto fronts (accuracy against latency, and against file size) marked.

    dvc exp run --queue -S prune.ratio=0.3,0.5,0.7,0.85 && dvc queue start -j 1   # wait for it
    python -m kd_pipeline.records.pareto    # plots/pareto/points.json, plots/pareto/pareto.png, reports/pareto.md

Ratios are against each run's own `teacher_onnx` (the teacher in ONNX Runtime, measured in the
same run, one thread, batch 1), so every ratio compares like with like. A model that several
runs share (same variant, accuracy and size: the float models of a compression sweep) is one
point, measured in the first run that has it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from kd_pipeline.core import paths
from kd_pipeline.core.errors import PipelineError, exit_on_pipeline_error
from kd_pipeline.core.files import atomic_file, write_json
from kd_pipeline.core.params import load_params
from kd_pipeline.records.experiments import Run, finished_runs, show

REFERENCE = "teacher_onnx"
COSTS = {"latency_ms": "batch-1 CPU latency (ms)", "size_mb": "file size (MB)"}


def _flat(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def swept(runs: list[Run]) -> list[str]:
    """The params that differ between runs: what names a run in the chart and the table."""
    flats = [_flat(run.params) for run in runs]
    keys = sorted({key for flat in flats for key in flat})
    return [key for key in keys if len({repr(flat.get(key)) for flat in flats}) > 1]


def points(runs: list[Run]) -> list[dict[str, Any]]:
    """One row per distinct model: its run, swept params, accuracy, costs and ratios."""
    keys = swept(runs)
    rows: list[dict[str, Any]] = []
    seen: set[tuple[str, float, float]] = set()
    for run in runs:
        variants = run.evaluation["variants"]
        reference = variants.get(REFERENCE)
        if not reference:
            continue  # a run from before teacher_onnx existed has no same-runtime reference
        flat = _flat(run.params)
        for name, metrics in variants.items():
            if not {"accuracy", "latency_ms", "size_mb"} <= set(metrics):
                continue
            identity = (name, round(metrics["accuracy"], 9), round(metrics["size_mb"], 6))
            if identity in seen:
                continue
            seen.add(identity)
            rows.append({
                "run": run.name,
                "params": ", ".join(f"{k}={flat.get(k)}" for k in keys),
                "variant": name,
                "accuracy": metrics["accuracy"],
                "accuracy_drop_vs_reference": metrics.get("accuracy_drop_vs_reference"),
                "val_drop_vs_reference": metrics.get("val_drop_vs_reference"),  # what a pick reads
                "deployable": name not in run.evaluation.get("not_deployable", {}),
                "latency_ms": metrics["latency_ms"],
                "size_mb": metrics["size_mb"],
                "x_faster": reference["latency_ms"] / metrics["latency_ms"],
                "x_smaller": reference["size_mb"] / metrics["size_mb"],
                "integer_mac_share": metrics.get("integer_mac_share"),
            })
    if not rows:
        raise PipelineError("no finished run with metrics/evaluate.json and a teacher_onnx row; run the sweep first")
    return rows


def front(rows: list[dict[str, Any]], cost: str) -> list[dict[str, Any]]:
    """The rows no other row beats on both accuracy and `cost` (cheapest first)."""
    ordered = sorted(rows, key=lambda r: (r[cost], -r["accuracy"]))
    kept, best = [], float("-inf")
    for row in ordered:
        if row["accuracy"] > best:
            kept.append(row)
            best = row["accuracy"]
    return kept


def recommend(rows: list[dict[str, Any]], max_drop: float) -> dict[str, dict[str, Any] | None]:
    """Per cost, the cheapest deployable variant whose validation score (the run's decision
    metric) is within `max_drop` of its run's selection reference: picked on validation, as
    evaluate picks, never on the test accuracy the table reports."""
    picks: dict[str, dict[str, Any] | None] = {}
    for cost in COSTS:
        within = [r for r in sorted(rows, key=lambda r: r[cost]) if r.get("deployable", True)
                  and r.get("val_drop_vs_reference") is not None and r["val_drop_vs_reference"] <= max_drop + 1e-12]
        picks[cost] = within[0] if within else None
    return picks


def render(rows: list[dict[str, Any]], max_drop: float) -> str:
    lines = ["# Size, speed and accuracy across experiments", "",
             f"{len(rows)} distinct models. Ratios against each run's `{REFERENCE}` (same runtime, one thread,"
             " batch 1); drops from each run's selection reference (`targets.reference`).", ""]
    for cost, pick in recommend(rows, max_drop).items():
        what = "fastest" if cost == "latency_ms" else "smallest"
        if pick is None:
            lines.append(f"- **{what}** deployable within {max_drop:.3f} of the reference on validation: none")
        else:
            lines.append(f"- **{what}** deployable within {max_drop:.3f} of the reference on validation:"
                         f" `{pick['variant']}` of {pick['run']} ({pick['params'] or 'workspace params'}): validation"
                         f" drop {pick['val_drop_vs_reference']:+.4f}, test accuracy {pick['accuracy']:.4f} (reported),"
                         f" {pick['x_faster']:.1f}× faster, {pick['x_smaller']:.1f}× smaller")
    for cost, label in COSTS.items():
        lines += ["", f"## Front: accuracy against {label}", "",
                  "| run | params | variant | accuracy | drop vs reference | latency ms | × faster | size MB"
                  " | × smaller | integer MAC share |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in front(rows, cost):
            drop = "–" if r["accuracy_drop_vs_reference"] is None else f"{r['accuracy_drop_vs_reference']:+.4f}"
            share = "–" if r["integer_mac_share"] is None else f"{r['integer_mac_share']:.3f}"
            lines.append(f"| {r['run']} | {r['params']} | {r['variant']} | {r['accuracy']:.4f} | {drop}"
                         f" | {r['latency_ms']:.3f} | {r['x_faster']:.1f} | {r['size_mb']:.2f} | {r['x_smaller']:.1f}"
                         f" | {share} |")
    return "\n".join(lines) + "\n"


def _png(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 5), constrained_layout=True)
    for ax, (cost, label) in zip(axes, COSTS.items(), strict=True):
        ax.scatter([r[cost] for r in rows], [r["accuracy"] for r in rows], s=25, color="0.7", label="all models")
        best = front(rows, cost)
        ax.plot([r[cost] for r in best], [r["accuracy"] for r in best], "o-", color="C3", label="Pareto front")
        for r in best:
            ax.annotate(f"{r['variant']} {r['params']}", (r[cost], r["accuracy"]), fontsize=7,
                        textcoords="offset points", xytext=(4, -10))
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower right")
    fig.suptitle("Every variant of every experiment; the front is what no other model beats")
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


@exit_on_pipeline_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Collect every experiment's variants into Pareto fronts.")
    parser.add_argument("--plots", type=Path, default=paths.PARETO_PLOTS)
    parser.add_argument("--report", type=Path, default=paths.PARETO_REPORT)
    args = parser.parse_args(argv)
    max_drop = load_params().targets.max_accuracy_drop
    rows = points(finished_runs(show()))
    fronts = {cost: {id(r) for r in front(rows, cost)} for cost in COSTS}
    table = [{**r, **{f"front_{cost}": id(r) in ids for cost, ids in fronts.items()}} for r in rows]
    write_json(args.plots / "points.json", table)
    _png(rows, args.plots / "pareto.png")
    with atomic_file(args.report) as tmp:
        tmp.write_text(render(rows, max_drop))
    print(render(rows, max_drop).split("\n## ")[0].strip())
    print(f"wrote {args.plots / 'points.json'}, {args.plots / 'pareto.png'} and {args.report}")


if __name__ == "__main__":
    main()
