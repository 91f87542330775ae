"""Gains stated with their noise: one experiment per training seed, aggregated.

    dvc exp run --queue -S train.seed=0,1,2 && dvc queue start -j 1   # wait for the queue
    python -m kd_pipeline.records.seeds                                        # metrics/seeds.json, reports/seeds.md

It takes the experiments (and the workspace) whose params equal the workspace's except
`train.seed`, one per seed, and writes for every variant's accuracy, balanced accuracy and
macro F1 the mean, sample standard deviation, min and max across seeds. Each gain (distillation:
student − baseline; assistant: student − direct; and every variant against the baseline) is the
mean of the per-seed paired differences with its 95% t-interval and two-sided p-value
(scipy.stats): measurable only when the interval excludes 0. The data split (`data.seed`) is the
same in every run: the spread is that of training alone.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats as scipy_stats

from kd_pipeline.core import paths, roles
from kd_pipeline.core.errors import PipelineError, exit_on_pipeline_error
from kd_pipeline.core.files import atomic_file, write_json
from kd_pipeline.core.params import read_yaml
from kd_pipeline.core.roles import BASELINE
from kd_pipeline.records.experiments import finished_runs, show

METRICS = ("accuracy", "balanced_accuracy", "f1")
GAINS = {gain: f"{arm} − {control}" for gain, (arm, control) in roles.GAINS.items()}
SHIPPED_TOLERANCE = 0.01  # issue 23's target: the shipped model within a point of the best small float model


def spread(values: list[float]) -> dict[str, float]:
    """Mean, sample standard deviation (n − 1), min and max."""
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def paired(differences: list[float], level: float = 0.95) -> dict[str, float]:
    """Mean of per-seed paired differences, its two-sided t-interval and p-value against 0,
    beside the mean ± sd of `spread`.

    Identical differences (one test image on every seed) give the t-interval no width, so they
    get the exact sign test instead: its p-value is 2 × 0.5^n, and until that is below 1 − level
    (6 seeds at 95%) the interval reaches 0, because the seeds cannot exclude it."""
    summary = spread(differences)
    n, mean, sd = len(differences), summary["mean"], summary["std"]
    # "identical" up to float rounding: 357/360 - 356/360 differs from 1/360 in the last bits, and a
    # t-test on that noise (sd ~ 1e-17) would call one image on 3 seeds p ~ 1e-28
    if sd <= 1e-9 * max(abs(mean), 1e-9):
        p_value = 1.0 if mean == 0 else float(scipy_stats.binomtest(n, n, 0.5).pvalue)
        low, high = (mean, mean) if p_value < 1 - level else (min(mean, 0.0), max(mean, 0.0))
        return {**summary, "low": low, "high": high, "p_value": p_value, "level": level, "test": "sign"}
    half = float(scipy_stats.t.ppf(0.5 + level / 2, n - 1)) * sd / n**0.5
    p_value = float(scipy_stats.ttest_1samp(differences, 0.0).pvalue)
    return {**summary, "low": mean - half, "high": mean + half, "p_value": p_value, "level": level,
            "sign_flip_p": sign_flip_p(differences)}


def sign_flip_p(differences: list[float]) -> float:
    """Exact two-sided paired permutation test: the share of the 2^n sign assignments whose mean
    is at least as far from 0 as the observed one. Assumes nothing about the spread's shape, but
    its smallest possible value is 2 / 2^n: 0.0625 with 5 seeds, so 5 seeds can never reach 0.05."""
    values = np.asarray(differences, dtype=float)
    observed = abs(values.mean()) - 1e-12
    means = [abs((values * signs).mean()) for signs in itertools.product((1.0, -1.0), repeat=len(values))]
    return float(np.mean([m >= observed for m in means]))


def seeds_for_power(mean: float, sd: float, level: float = 0.95, power: float = 0.8, most: int = 200) -> int | None:
    """How many seeds a paired t-test needs to detect a true difference of `mean` with this spread
    (`sd`, over seeds) at two-sided `1 - level`, `power` of the time (noncentral t): what a
    non-measurable gain would cost to resolve. None: more than `most`, or no difference to find."""
    if sd <= 0 or mean == 0:
        return None
    effect = abs(mean) / sd
    for n in range(2, most + 1):
        critical = float(scipy_stats.t.ppf(0.5 + level / 2, n - 1))
        shift = effect * n**0.5
        achieved = float(scipy_stats.nct.sf(critical, n - 1, shift) + scipy_stats.nct.cdf(-critical, n - 1, shift))
        if achieved >= power:
            return n
    return None


def measurable(interval: dict[str, float], adjusted_p: float | None = None) -> bool:
    """A gain is measurable only when its interval excludes 0 and, when it is one of several
    comparisons in a table, its multiplicity-adjusted p-value (holm) is below 1 − level too."""
    excludes = interval["low"] > 0 or interval["high"] < 0
    return excludes and (adjusted_p is None or adjusted_p < 1 - interval.get("level", 0.95))


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment (family-wise error, any dependence between the tests): the
    k-th smallest of m p-values is multiplied by m − k + 1, kept monotone, capped at 1."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted, running = [1.0] * len(p_values), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def interval_text(stats: dict[str, float], adjusted_p: float | None = None) -> str:
    """`mean [low, high] p=…`, Holm's adjusted p when the cell is one of several in its column,
    and "measurable" when the interval excludes 0 and the adjusted p is below 0.05."""
    if stats["n"] < 2:
        return f"{stats['mean']:+.4f}"
    p_value = "p<0.001" if stats["p_value"] < 0.001 else f"p={stats['p_value']:.3f}"
    extra = [] if adjusted_p is None else [f"Holm {adjusted_p:.3f}"]
    extra += [f"sign-flip {stats['sign_flip_p']:.3f}"] if "sign_flip_p" in stats else []
    if extra:
        p_value += f" ({'; '.join(extra)})"
    return (f"{stats['mean']:+.4f} [{stats['low']:+.4f}, {stats['high']:+.4f}] {p_value}"
            f"{' measurable' if measurable(stats, adjusted_p) else power_note(stats)}")


def holm_adjusted(cells: list[dict[str, float]]) -> dict[int, float]:
    """Holm's adjusted p-value of each cell with an interval (2+ seeds), the cells being one family;
    empty when fewer than two are tested (one comparison needs no correction)."""
    tested = [i for i, stats in enumerate(cells) if stats["n"] >= 2]
    return dict(zip(tested, holm([cells[i]["p_value"] for i in tested]), strict=True)) if len(tested) > 1 else {}


def holm_column(cells: list[dict[str, float]]) -> list[str]:
    """One table column's cells: its comparisons are one family, corrected by Holm's method."""
    adjusted = holm_adjusted(cells)
    return [interval_text(stats, adjusted.get(i)) for i, stats in enumerate(cells)]


def aggregate(runs: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Across-seed statistics from each seed's metrics/evaluate.json."""
    if len(runs) < 2:
        raise PipelineError(f"need at least 2 seeds to measure a spread, found {len(runs)}: {sorted(runs)}")
    evaluations = [runs[seed] for seed in sorted(runs)]
    names = [n for n in evaluations[0]["variants"] if all(n in e["variants"] for e in evaluations)]
    variants = {
        name: {m: spread([e["variants"][name][m] for e in evaluations]) for m in METRICS
               if all(m in e["variants"][name] for e in evaluations)}
        for name in names
    }
    gains = {
        gain: {m: paired([e[gain][m] for e in evaluations]) for m in METRICS}
        for gain in GAINS if all(gain in e for e in evaluations)
    }
    vs_baseline = {
        name: {m: paired([e["variants"][name][m] - e["variants"][BASELINE][m] for e in evaluations])
               for m in METRICS if m in variants[name] and m in variants[BASELINE]}
        for name in names if name != BASELINE and BASELINE in names
    }
    verdicts = {gain: verdict(f"{gain} ({GAINS[gain]})", stats["accuracy"]) for gain, stats in gains.items()}
    shipped = {str(seed): s for seed in sorted(runs) if (s := shipped_against_best_small(runs[seed])) is not None}
    return {"seeds": sorted(runs), "variants": variants, "gains": gains, "vs_baseline": vs_baseline,
            "verdicts": verdicts, "shipped": shipped,
            "per_seed": {str(seed): per_seed(runs[seed]) for seed in sorted(runs)}}


def per_seed(evaluation: dict[str, Any]) -> dict[str, Any]:
    """One seed's own numbers (test metrics, the validation score that decided, what shipped): the
    spread alone cannot be re-read per seed, nor matched to the run a record copies."""
    metric = evaluation.get("decision_metric")
    return {"deployed": evaluation.get("deployed"), "decision_metric": metric, "variants": {
        name: {m: v[m] for m in METRICS if m in v} | ({"val": v["val"][metric]} if metric in v.get("val", {}) else {})
        for name, v in evaluation["variants"].items()}}


def shipped_against_best_small(evaluation: dict[str, Any]) -> dict[str, Any] | None:
    """What a seed shipped against the best small float model chosen on validation (the source
    prune chose, `compressed_from`), in test accuracy and in the run's decision metric: a run
    should never ship much less than the simplest model it already trained."""
    variants, metric = evaluation["variants"], evaluation.get("decision_metric")
    deployed, best = evaluation.get("deployed"), (evaluation.get("compressed_from") or {}).get("source")
    if deployed not in variants or best not in variants:
        return None
    difference = variants[deployed]["accuracy"] - variants[best]["accuracy"]
    return {"deployed": deployed, "deployed_accuracy": variants[deployed]["accuracy"], "best_small_float": best,
            "best_small_float_accuracy": variants[best]["accuracy"], "difference": difference,
            "within_one_point": difference >= -SHIPPED_TOLERANCE - 1e-9, "decision_metric": metric,
            "decision_metric_difference": variants[deployed].get(metric, float("nan"))
            - variants[best].get(metric, float("nan"))} | int8_on_avx2(variants, deployed)


def int8_on_avx2(variants: dict[str, Any], deployed: str) -> dict[str, Any]:
    """A shipped int8 file's test accuracy under AVX2's saturating arithmetic (evaluate's exact
    emulation) against its fp32 twin (`X_int8` against `X_onnx`, the same graph in float): what a
    user on a CPU without VNNI gets, and whether it stays within a point of its float source."""
    avx2, twin = variants[deployed].get("avx2") or {}, deployed.removesuffix("_int8") + "_onnx"
    if not deployed.endswith("_int8") or "test_accuracy" not in avx2 or twin not in variants:
        return {}
    difference = avx2["test_accuracy"] - variants[twin]["accuracy"]
    return {"avx2_accuracy": avx2["test_accuracy"], "float_twin": twin,
            "float_twin_accuracy": variants[twin]["accuracy"], "avx2_difference": difference,
            "avx2_within_one_point": difference >= -SHIPPED_TOLERANCE - 1e-9}


def power_note(stats: dict[str, float]) -> str:
    """For a gain the seeds did not resolve: how many seeds would, at the spread observed."""
    if stats.get("test") == "sign" or stats["n"] < 2:
        return ""
    needed = seeds_for_power(stats["mean"], stats["std"], stats.get("level", 0.95))
    return f"; 80% power needs {needed} seeds" if needed else "; 80% power needs > 200 seeds"


_SIGN = {"sign": " (sign test: the same difference on every seed)"}


def verdict(name: str, stats: dict[str, float]) -> str:
    """One line: the paired gain with its 95% interval and p-value, and whether it is measurable."""
    mean = stats["mean"]
    judged = (f"{'a gain' if mean > 0 else 'a loss'}: the interval excludes 0" if measurable(stats)
              else f"no measurable effect: the interval includes 0{power_note(stats)}")
    return (f"{name} in accuracy: {mean:+.4f}, 95% CI [{stats['low']:+.4f}, {stats['high']:+.4f}],"
            f" p = {stats['p_value']:.3f}{_SIGN.get(stats.get('test'), '')}"
            f" (mean ± sd {mean:+.4f} ± {stats['std']:.4f} over {stats['n']} seeds),"
            f" {judged}")


def _without_seed(params: dict[str, Any]) -> str:
    plain = json.loads(json.dumps(params))
    plain.get("train", {}).pop("seed", None)
    return json.dumps(plain, sort_keys=True)


def collect_runs(shown: list[dict[str, Any]], workspace_params: dict[str, Any]) -> dict[int, tuple[str, dict]]:
    """seed → (experiment name, evaluation) from `dvc exp show --json`, for the workspace's params."""
    wanted = _without_seed(workspace_params)
    found: dict[int, tuple[str, dict]] = {}
    for run in finished_runs(shown):
        if _without_seed(run.params) == wanted:
            found.setdefault(run.params["train"]["seed"], (run.name, run.evaluation))
    return found


def render(summary: dict[str, Any], names: dict[int, str]) -> str:
    lines = ["# Across seeds", "", f"Seeds {summary['seeds']} (train.seed; runs: "
             + ", ".join(f"{seed}: {names[seed]}" for seed in summary["seeds"]) + ").",
             "Mean ± sample standard deviation [min, max] on the test split.", ""]
    lines += [f"- {line}" for line in summary["verdicts"].values()]
    if summary.get("vs_baseline"):
        lines += ["", "Every variant against the baseline (per-seed paired differences in test accuracy):", "",
                  "| variant − baseline | mean | 95% CI | p | measurable |", "|---|---|---|---|---|"]
        for name, by_metric in summary["vs_baseline"].items():
            if (s := by_metric.get("accuracy")) is not None:
                lines.append(f"| {name} | {s['mean']:+.4f} | [{s['low']:+.4f}, {s['high']:+.4f}] | {s['p_value']:.3f}"
                             f"{_SIGN.get(s.get('test'), '')}"
                             f" | {'yes' if measurable(s) else 'no'} |")
    lines += _shipped_lines(summary.get("shipped", {}))
    lines += ["", "| variant | " + " | ".join(METRICS) + " |", "|---|" + "---|" * len(METRICS)]
    rows = {**summary["variants"], **{f"{g} ({GAINS[g]})": s for g, s in summary["gains"].items()}}
    for name, stats in rows.items():
        cells = [f"{s['mean']:.4f} ± {s['std']:.4f} [{s['min']:.4f}, {s['max']:.4f}]"
                 if (s := stats.get(m)) else "–" for m in METRICS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _shipped_lines(shipped: dict[str, dict[str, Any]]) -> list[str]:
    if not shipped:
        return []
    lines = ["", "What each seed shipped against the best small float model chosen on validation (test accuracy;"
             f" the target: at most {SHIPPED_TOLERANCE:.2f} below it):", "",
             "| seed | deployed | accuracy | best small float (val) | accuracy | difference | within a point"
             " | difference in the decision metric |", "|---|---|---|---|---|---|---|---|"]
    for seed, s in shipped.items():
        lines.append(f"| {seed} | {s['deployed']} | {s['deployed_accuracy']:.4f} | {s['best_small_float']}"
                     f" | {s['best_small_float_accuracy']:.4f} | {s['difference']:+.4f}"
                     f" | {'yes' if s['within_one_point'] else 'no'}"
                     f" | {s['decision_metric_difference']:+.4f} ({s['decision_metric']}) |")
    on_avx2 = {seed: s for seed, s in shipped.items() if "avx2_accuracy" in s}
    if on_avx2:
        lines += ["", "Where an int8 file shipped: its test accuracy under AVX2's saturating u8s8 arithmetic (CPUs"
                  " without VNNI, evaluate's exact emulation) against its fp32 twin:", "",
                  "| seed | deployed | on AVX2 | fp32 twin | accuracy | difference | within a point |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {seed} | {s['deployed']} | {s['avx2_accuracy']:.4f} | {s['float_twin']}"
                  f" | {s['float_twin_accuracy']:.4f} | {s['avx2_difference']:+.4f}"
                  f" | {'yes' if s['avx2_within_one_point'] else 'no'} |" for seed, s in on_avx2.items()]
    return lines


@exit_on_pipeline_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Aggregate seed experiments: mean, spread, and the gains' verdict.")
    parser.add_argument("--metrics", type=Path, default=paths.SEEDS_METRICS)
    parser.add_argument("--report", type=Path, default=paths.SEEDS_REPORT)
    args = parser.parse_args(argv)
    workspace = read_yaml(Path("params.yaml").read_text())
    runs = collect_runs(show(), workspace)
    summary = aggregate({seed: evaluation for seed, (_, evaluation) in runs.items()})
    names = {seed: name for seed, (name, _) in runs.items()}
    write_json(args.metrics, {**summary, "runs": {str(s): n for s, n in names.items()}})
    with atomic_file(args.report) as tmp:
        tmp.write_text(render(summary, names))
    for line in summary["verdicts"].values():
        print(line)
    print(f"wrote {args.metrics} and {args.report}")


if __name__ == "__main__":
    main()
