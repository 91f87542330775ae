"""Which variant to deploy, and whether it meets the targets; `python -m kd_pipeline.evaluate.targets` for CI.

Every choice reads the validation split, scored by the metric the run monitors (`train.monitor`,
kd_pipeline.core.ranking: balanced accuracy on imbalanced data); test numbers are only reported.
Definitions, on the same CPU:
- reference         = targets.reference: the best small float model on validation (best_small:
                      student, direct, baseline: the architecture that ships, and the one
                      compression starts from), the best float model (best_float: teacher and
                      assistant too) or the teacher
- accuracy drop     = reference score − variant score, on validation    (≤ max_accuracy_drop);
                      the test drop is reported beside it
- speedup           = teacher batch-1 latency / variant latency − 1     (≥ min_speedup), in the
                      same runtime: an ONNX variant against the teacher in ONNX Runtime
                      (teacher_onnx), a PyTorch variant against the eager teacher
- size reduction    = 1 − variant file size / teacher file size         (≥ min_size_reduction)

A from-scratch teacher on small data can be the weakest model of all; "within the drop of
the teacher" would then allow anything. With the best float model as reference a big model
that wins on a noisy validation split is the only one within the budget, and the run ships the
assistant. The default measures what compression costs: drops from the best small model.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kd_pipeline.core import paths
from kd_pipeline.core.errors import PipelineError, exit_on_pipeline_error
from kd_pipeline.core.params import ExportParams, TargetsParams, load_params
from kd_pipeline.core.roles import FLOAT_MODELS, REFERENCES, SMALL_MODELS, TEACHER

SELECT_KEY = {"smallest": ("size_mb", min), "fastest": ("latency_ms", min), "most_accurate": ("accuracy", max)}
# Within this relative margin of the best value two variants tie on size or latency: a PyTorch
# checkpoint and its fp32 ONNX twin hold the same weights and differ in size by format overhead
# (10.71 against 10.75 MB), and latencies move by a few percent run to run. Accuracy ties are exact.
TIE_MARGIN = {"size_mb": 0.02, "latency_ms": 0.02, "accuracy": 0.0}
# Ties are broken by the other two criteria in this order.
TIE_BREAK = {"size_mb": ("latency_ms", "size_mb", "accuracy"), "latency_ms": ("size_mb", "latency_ms", "accuracy"),
             "accuracy": ("latency_ms", "size_mb", "accuracy")}


def ratios_vs_teacher(variant: dict[str, float], teacher: dict[str, float]) -> dict[str, float]:
    return {
        "accuracy_drop": teacher["accuracy"] - variant["accuracy"],
        "speedup": teacher["latency_ms"] / variant["latency_ms"] - 1.0,
        "size_reduction": 1.0 - variant["size_mb"] / teacher["size_mb"],
        "latency_ratio": teacher["latency_ms"] / variant["latency_ms"],
        "size_ratio": teacher["size_mb"] / variant["size_mb"],
    }


def val_score(measured: dict[str, Any], metric: str) -> float:
    """A variant's validation score: the only number any decision reads."""
    return measured["val"][metric]


def reference_variant(variants: dict[str, dict[str, Any]], targets: TargetsParams, metric: str = "accuracy") -> str:
    """The model drops are measured from, best on validation (ties go to the earlier model)."""
    if targets.reference == "teacher":
        return TEACHER
    pool = SMALL_MODELS if targets.reference == "best_small" else FLOAT_MODELS
    measured = [name for name in pool if name in variants] or [name for name in FLOAT_MODELS if name in variants]
    return max(measured, key=lambda name: val_score(variants[name], metric))


@dataclass(frozen=True)
class Selection:
    variant: str | None
    reason: str
    within_budget: bool  # False: nothing met max_accuracy_drop, the most accurate one was taken


def select_variant(
    variants: dict[str, dict[str, Any]],
    targets: TargetsParams,
    rule: ExportParams,
    unfaithful: dict[str, str] | None = None,
    metric: str = "accuracy",
) -> Selection:
    """The variant the rule picks among those within the budget of the reference, on validation.

    Never the teacher, never a variant in `unfaithful` (name → why it may not ship). With
    `select: fastest`, an int8 variant slower than its fp32 twin on this CPU is not a candidate
    for fastest. When none is within the budget, the rule picks among those within the budget
    of the best candidate on validation and the selection says so, so a run always ends with
    the model it would have shipped had the reference been that candidate.
    """
    unfaithful = dict(unfaithful or {})
    if rule.select == "fastest":
        unfaithful.update({n: "slower than its fp32 twin here" for n, m in variants.items()
                           if m.get("slower_than_fp32_twin") and n not in unfaithful})
    # Decisions see validation scores under the name "accuracy", sizes and latencies as measured.
    view = {name: {"accuracy": val_score(m, metric), "size_mb": m["size_mb"], "latency_ms": m["latency_ms"]}
            for name, m in variants.items()}
    candidates = {name: m for name, m in view.items() if name not in REFERENCES and name not in unfaithful}
    if not candidates:
        return Selection(None, "no variant besides the teacher can be deployed", False)
    reference = reference_variant(variants, targets, metric)
    best = view[reference]["accuracy"]
    allowed = _within(candidates, best, targets.max_accuracy_drop)
    key, pick = SELECT_KEY[rule.select]
    if not allowed:
        # Nothing keeps the reference's score: measure the same budget from the best deployable
        # variant instead, so the rule still applies (a 4x smaller int8 twin with the float
        # model's validation score ships instead of the float model), and the targets say missed.
        top = max(candidates, key=lambda n: candidates[n]["accuracy"])
        allowed = _within(candidates, candidates[top]["accuracy"], targets.max_accuracy_drop)
        chosen = _pick(allowed, key, pick)
        return Selection(
            chosen,
            f"no variant is within targets.max_accuracy_drop = {targets.max_accuracy_drop:g} of the reference"
            f" ({reference}) in validation {metric}; deploying the {rule.select} variant within it of the best"
            f" deployable one on validation, {top}: {chosen} (drop from the reference"
            f" {best - candidates[chosen]['accuracy']:.4f})",
            False,
        )
    chosen = _pick(allowed, key, pick)
    return Selection(
        chosen,
        f"{rule.select} variant within {targets.max_accuracy_drop:g} validation {metric} of the reference,"
        f" {reference} ({'validation ' + metric if key == 'accuracy' else key} {allowed[chosen][key]:.4g})",
        True,
    )


def _within(candidates: dict[str, dict[str, float]], best: float, budget: float) -> dict[str, dict[str, float]]:
    return {n: m for n, m in candidates.items() if best - m["accuracy"] <= budget + 1e-12}


def _pick(allowed: dict[str, dict[str, float]], key: str, pick: Any) -> str:
    """The best variant by `key`; among those tied with it (TIE_MARGIN), the first by the
    criteria of TIE_BREAK[key], so a PyTorch checkpoint never ships over its 9× faster ONNX twin
    for a few kilobytes."""
    best = pick(m[key] for m in allowed.values())
    tied = [n for n, m in allowed.items() if abs(m[key] - best) <= TIE_MARGIN[key] * abs(best)]
    return min(tied, key=lambda n: tuple(-allowed[n][k] if k == "accuracy" else allowed[n][k] for k in TIE_BREAK[key]))


def check_targets(ratios: dict[str, float], targets: TargetsParams) -> dict[str, dict[str, Any]]:
    """Each target's value, limit and pass/fail."""
    return {
        "accuracy_drop": {
            "value": ratios["accuracy_drop"],
            "limit": targets.max_accuracy_drop,
            "pass": ratios["accuracy_drop"] <= targets.max_accuracy_drop + 1e-12,
        },
        "speedup": {
            "value": ratios["speedup"],
            "limit": targets.min_speedup,
            "pass": ratios["speedup"] >= targets.min_speedup,
        },
        "size_reduction": {
            "value": ratios["size_reduction"],
            "limit": targets.min_size_reduction,
            "pass": ratios["size_reduction"] >= targets.min_size_reduction,
        },
    }


def failures(evaluation: dict[str, Any]) -> list[str]:
    """One line per missed target (by how much), from metrics/evaluate.json."""
    deployed = evaluation.get("deployed")
    if not deployed:
        return [f"no variant deployed: {evaluation.get('deployed_reason', 'unknown reason')}"]
    lines = []
    for name, result in evaluation["targets"].items():
        if not result["pass"]:
            bound = "at most" if name == "accuracy_drop" else "at least"
            lines.append(
                f"{name}: {result['value']:.4f} for {deployed}, needs {bound} {result['limit']:.4f}"
                f" (off by {abs(result['value'] - result['limit']):.4f})"
            )
    return lines


@exit_on_pipeline_error
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Exit non-zero when the deployed variant misses a target.")
    parser.add_argument("--metrics", default=str(paths.EVALUATION))
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    load_params(args.params)  # a broken params file is reported before anything else
    path = Path(args.metrics)
    if not path.is_file():
        raise PipelineError(f"{path}: not found; run `dvc repro evaluate` first")
    evaluation = json.loads(path.read_text())
    missed = failures(evaluation)
    for name, result in evaluation.get("targets", {}).items():
        print(f"{'PASS' if result['pass'] else 'FAIL'} {name}: {result['value']:.4f} (limit {result['limit']:.4f})")
    if missed:
        for line in missed:
            print(f"target missed: {line}", file=sys.stderr)
        return 1
    print(f"all targets met by {evaluation['deployed']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
