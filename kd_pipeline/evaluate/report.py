"""Stage evaluate's outputs for people and for DVC: metrics file, plot data, a picture and a Markdown report.

Everything here renders measured numbers only; nothing is typed in by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kd_pipeline.core import paths
from kd_pipeline.core.files import atomic_dir, atomic_file, write_json
from kd_pipeline.core.params import Params
from kd_pipeline.core.roles import REFERENCES, TEACHERS
from kd_pipeline.evaluate.machine import describe

# evaluate's two headline files, the ones dvc.yaml declares as its metrics and default plot. Kept
# here, beside paths.METRICS, not in core/paths.py: every stage imports that, and a path only
# evaluate writes should re-run only evaluate.
HEADLINE = paths.METRICS / "headline.json"
DEPLOYED_CONFUSION = paths.PLOTS / "deployed_confusion.json"

# The teacher's validation lead over the student trained alone below which distillation has
# little to transfer (the field finds KD pays across a capacity gap); the size sweep reads it too.
MIN_TEACHER_LEAD = 0.05

COLUMNS = (
    ("val_score", "val score (decides)", "{:.4f}"),
    ("accuracy", "accuracy", "{:.4f}"),
    ("balanced_accuracy", "bal. acc.", "{:.4f}"),
    ("f1", "macro F1", "{:.4f}"),
    ("roc_auc", "ROC AUC", "{:.4f}"),
    ("parameters", "params (M)", "{:.2f}", 1e-6),
    ("macs", "MMACs", "{:.1f}", 1e-6),
    ("size_mb", "size (MB)", "{:.2f}"),
    ("latency_ms", "latency b1 (ms)", "{:.2f}"),
    ("throughput", "img/s b64", "{:.0f}"),
    ("latency_ratio_same_runtime", "× faster (same runtime)", "{:.2f}"),
    ("latency_ratio_vs_teacher", "× faster (vs eager)", "{:.2f}"),
    ("size_ratio_vs_teacher", "× smaller", "{:.2f}"),
    ("accuracy_drop_vs_reference", "drop vs ref.", "{:+.4f}"),
    ("accuracy_drop_vs_teacher", "drop vs teacher", "{:+.4f}"),
    ("int8_val_drop", "int8 val drop vs source", "{:+.4f}"),
    ("int8_agreement", "int8 agreement", "{:.2%}"),
    ("slower_than_fp32_twin", "int8 slower than fp32 here", "{}"),
    ("integer_mac_share", "MACs in integer kernels", "{:.1%}"),
)
GAINS = (
    ("distillation_gain", "Distillation over none", "student (distilled) minus baseline (same architecture,"
     " no teacher, same data and budget)"),
    ("assistant_gain", "Assistant over direct distillation", "student (taught by the assistant) minus direct"
     " (the same architecture distilled from the teacher itself)"),
)


def _cell(measured: dict[str, float], column: tuple) -> str:
    key, _, fmt, *scale = column
    if key not in measured:
        return "–"
    return fmt.format(measured[key] * (scale[0] if scale else 1))


def write_plot_data(result: dict[str, Any], class_names: list[str], test_labels: list[int], plots_dir: Path) -> None:
    """Confusion rows and per-class F1 per variant, the trade-off table, and a PNG of it."""
    evaluation, details = result["evaluation"], result["details"]
    for folder in ("confusion", "per_class_f1"):
        with atomic_dir(plots_dir / folder) as tmp:
            for name, detail in details.items():
                if folder == "confusion":
                    rows = confusion_rows(test_labels, detail["predictions"], class_names)
                else:
                    rows = [{"class": c, "f1": v["f1"]} for c, v in detail["per_class"].items()]
                write_json(tmp / f"{name}.json", rows)
    tradeoff = [
        {"variant": name, "accuracy": m["accuracy"], "latency_ms": m["latency_ms"], "size_mb": m["size_mb"]}
        for name, m in evaluation["variants"].items()
    ]
    write_json(plots_dir / "tradeoff.json", tradeoff)
    _tradeoff_png(tradeoff, evaluation.get("deployed"), plots_dir / "tradeoff.png")
    deployed = evaluation.get("deployed")
    if deployed in details:  # the one confusion matrix `dvc plots show` draws by default
        write_json(plots_dir / DEPLOYED_CONFUSION.name,
                   confusion_rows(test_labels, details[deployed]["predictions"], class_names))


def confusion_rows(actual: list, predicted: list, class_names: list[str]) -> list[dict[str, str]]:
    """Rows for DVC's confusion template: one per test image (actual class, predicted class).

    Multi-label: one row per image and label where the label is present or predicted
    ("Effusion: yes" → "Effusion: no" is a miss), so each label is a 2×2 block on the
    diagonal; true negatives, the bulk of a rare label's rows, are left out of the plot
    (their counts are in reports/summary.md).
    """
    if actual and isinstance(actual[0], list):
        answer = ("no", "yes")
        return [
            {"actual": f"{class_names[k]}: {answer[a]}", "predicted": f"{class_names[k]}: {answer[p]}"}
            for truth, guess in zip(actual, predicted, strict=True)
            for k, (a, p) in enumerate(zip(truth, guess, strict=True))
            if a or p
        ]
    return [{"actual": class_names[a], "predicted": class_names[p]} for a, p in zip(actual, predicted, strict=True)]


def _tradeoff_png(rows: list[dict[str, Any]], deployed: str | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for ax, key, label in ((axes[0], "latency_ms", "batch-1 CPU latency (ms)"), (axes[1], "size_mb", "file size (MB)")):
        for row in rows:
            marker = "*" if row["variant"] == deployed else "o"
            ax.scatter(row[key], row["accuracy"], s=160 if marker == "*" else 50, marker=marker)
            ax.annotate(row["variant"], (row[key], row["accuracy"]), textcoords="offset points", xytext=(5, 5))
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy")
        ax.grid(True, alpha=0.3)
    fig.suptitle("Accuracy against cost (★ deployed)")
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def render_summary(result: dict[str, Any], params: Params) -> str:
    """The Markdown report: comparison table, gains, targets, recommendations, per-class detail."""
    evaluation = result["evaluation"]
    lines = _table(result, params) + _gains(evaluation) + _student_size(evaluation, params) + _teachers(evaluation)
    lines += _origin(evaluation)
    lines += _targets(evaluation, params) + _recommendation(evaluation, params) + _detail(result)
    if evaluation["warnings"]:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in evaluation["warnings"]]
    return "\n".join(lines) + "\n"


def _table(result: dict[str, Any], params: Params) -> list[str]:
    evaluation = result["evaluation"]
    variants = evaluation["variants"]
    metric = evaluation["decision_metric"]
    lines = ["# Evaluation summary", ""]
    lines.append(
        f"Every choice below (reference, int8 deployability, the deployed variant, the accuracy target) reads"
        f" the **validation** split, scored by **{metric}** (train.monitor = {params.train.monitor}); the"
        " other quality columns are the held-out **test** split, reported only."
        f" CPU: {describe(evaluation['machine'])}, {params.evaluate.num_threads} thread(s), median of"
        f" {params.evaluate.repeats} timed runs after {params.evaluate.warmup} warm-up runs."
    )
    multilabel = evaluation.get("task") == "multilabel"
    if multilabel:
        lines.append(
            "Multi-label data: accuracy is the mean per-label accuracy at probability 0.5, ROC AUC the mean"
            " of the per-label AUCs (MedMNIST's ACC and AUC), F1 the macro mean over labels."
        )
    lines += ["", "| variant | kind | " + " | ".join(c[1] for c in COLUMNS) + " |"]
    lines.append("|---|---|" + "---|" * len(COLUMNS))
    for name, measured in variants.items():
        kind = result["details"][name]["kind"]
        row = {**measured, "val_score": measured["val"][metric]}
        lines.append(f"| {name} | {kind} | " + " | ".join(_cell(row, c) for c in COLUMNS) + " |")
    if evaluation["missing"]:
        lines += ["", "Missing variants:"] + [f"- **{n}**: {r}" for n, r in evaluation["missing"].items()]

    return lines


def _targets(evaluation: dict[str, Any], params: Params) -> list[str]:
    variants = evaluation["variants"]
    metric = evaluation["decision_metric"]
    lines: list[str] = []
    lines += ["", "## Targets", ""]
    deployed = evaluation["deployed"]
    reference = evaluation["reference"]
    lines.append(
        f"Reference for drops: **{reference}** (validation {metric} {variants[reference]['val'][metric]:.4f},"
        f" test accuracy {variants[reference]['accuracy']:.4f}; targets.reference = {params.targets.reference});"
        f" the teacher scores {variants['teacher']['val'][metric]:.4f} on validation. Speed and size are compared"
        " with the teacher."
    )
    floats = [n for n in TEACHERS if n in variants]
    bigger = max(floats, key=lambda n: variants[n]["val"][metric], default=None)
    margin = variants[reference]["val"][metric] + params.targets.max_accuracy_drop
    if params.targets.reference == "best_small" and bigger and variants[bigger]["val"][metric] > margin:
        lines.append(
            f"The {bigger} beats every small model on validation ({variants[bigger]['val'][metric]:.4f}) by more"
            " than the budget: the small architecture costs that much here, before any compression."
        )
    lines.append(f"Deployed variant: **{deployed or 'none'}** ({evaluation['deployed_reason']}).")
    if evaluation["targets"]:
        lines += ["", "| target | value | limit | result |", "|---|---|---|---|"]
        for name, t in evaluation["targets"].items():
            bound = "≤" if name == "accuracy_drop" else "≥"
            label = f"{name} (validation {t['metric']}; test accuracy drop {t['test_accuracy_drop']:+.4f})" \
                if "metric" in t else name
            lines.append(
                f"| {label} | {t['value']:.4f} | {bound} {t['limit']:.4f} | {'pass' if t['pass'] else '**FAIL**'} |"
            )
    if evaluation.get("not_deployable"):
        lines += ["", "Not deployable (they do not keep what their float source does, on validation):"]
        lines += [f"- **{name}**: {why}" for name, why in evaluation["not_deployable"].items()]

    return lines


def _recommendation(evaluation: dict[str, Any], params: Params) -> list[str]:
    variants = evaluation["variants"]
    metric = evaluation["decision_metric"]
    reference = evaluation["reference"]
    lines = ["", "## Recommendation", ""]
    budget = params.targets.max_accuracy_drop
    ok = {n: m for n, m in variants.items() if n not in REFERENCES
          and m["val_drop_vs_reference"] <= budget + 1e-12 and n not in evaluation.get("not_deployable", {})}
    if ok:
        smallest = min(ok, key=lambda n: ok[n]["size_mb"])
        fastest = min(ok, key=lambda n: ok[n]["latency_ms"])
        lines.append(f"Within {budget:g} validation {metric} of the reference ({reference}):")
        lines.append(f"- smallest on disk: **{smallest}** ({ok[smallest]['size_mb']:.2f} MB)")
        lines.append(f"- fastest at batch 1 on this CPU: **{fastest}** ({ok[fastest]['latency_ms']:.2f} ms)")
    best = max(variants, key=lambda n: variants[n]["val"][metric])
    lines.append(f"- best on validation overall: **{best}** ({variants[best]['val'][metric]:.4f})")
    slow = [n for n, m in variants.items() if m.get("slower_than_fp32_twin")]
    if slow:
        lines.append(f"- ⚠ slower in int8 than in fp32 on this CPU ({evaluation['machine']['int8_kernels']}):"
                     f" {', '.join(slow)}; `export.select: fastest` passes them over")
    return lines


def _detail(result: dict[str, Any]) -> list[str]:
    """Per-label (multi-label) or per-class metrics of the deployed variant."""
    evaluation = result["evaluation"]
    deployed = evaluation["deployed"]
    multilabel = evaluation.get("task") == "multilabel"
    lines: list[str] = []
    if deployed and multilabel:
        detail = result["details"][deployed]
        lines += ["", f"### Per-label metrics of {deployed}", "",
                  "| label | AUC | precision | recall | F1 | positives | TP | FP | FN | TN |", "|---|" + "---|" * 9]
        for (cls, m), ((tn, fp), (fn, tp)) in zip(detail["per_class"].items(), detail["confusion"], strict=True):
            auc = f"{m['roc_auc']:.3f}" if "roc_auc" in m else "–"
            lines.append(f"| {cls} | {auc} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f}"
                         f" | {m['support']} | {tp} | {fp} | {fn} | {tn} |")
    elif deployed:
        lines += ["", f"### Per-class F1 of {deployed}", "", "| class | precision | recall | F1 | support |"]
        lines.append("|---|---|---|---|---|")
        for cls, m in result["details"][deployed]["per_class"].items():
            lines.append(f"| {cls} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['support']} |")
    return lines


def _gains(evaluation: dict[str, Any]) -> list[str]:
    """What distillation and the assistant each added, on this run's test split."""
    lines = ["", "## Gains", ""]
    for key, title, definition in GAINS:
        gain = evaluation.get(key)
        if gain:
            lines.append(
                f"- **{title}**: {definition}: accuracy {gain['accuracy']:+.4f}, balanced accuracy"
                f" {gain['balanced_accuracy']:+.4f}, macro F1 {gain['f1']:+.4f}."
            )
        else:
            lines.append(f"- **{title}**: not measured (a variant is missing).")
    lines.append("- One seed's numbers: `python -m kd_pipeline.records.seeds` gives their seed-to-seed spread"
                 " (reports/seeds.md).")
    return lines


def _student_size(evaluation: dict[str, Any], params: Params) -> list[str]:
    """Whether this run's student size leaves the teacher anything to teach, and where the question
    "at which size does distillation start to pay?" is answered: one run has one size, a sweep many."""
    variants, metric = evaluation["variants"], evaluation["decision_metric"]
    student = variants.get("student")
    if not student:
        return []
    line = f"- **Student size**: {params.student.model}" + "".join(
        text.format(student[key]) for key, text in (("parameters", ", {:,} parameters"), ("size_mb", ", {:.2f} MB"))
        if key in student)
    if "teacher" in variants and "baseline" in variants:
        lead = variants["teacher"]["val"][metric] - variants["baseline"]["val"][metric]
        enough = (f"at least the {MIN_TEACHER_LEAD:.2f} across which distillation is known to pay" if
                  lead >= MIN_TEACHER_LEAD else f"under the {MIN_TEACHER_LEAD:.2f} across which distillation is"
                  " known to pay: a smaller student or a stronger teacher opens the gap")
        line += f"; teacher − student trained alone (baseline), validation {metric}: {lead:+.4f}, {enough}"
    return [line + ". At which size distillation starts to pay on this data, and what that size keeps"
            " against the teacher: a sweep over `student.model`, each size paired with its own baseline over"
            " seeds (docs/workflow.md)."]


def _origin(evaluation: dict[str, Any]) -> list[str]:
    origin = evaluation.get("compressed_from")
    if not origin:
        return []
    return ["", f"Compression: {origin['reason']}."]


def _teachers(evaluation: dict[str, Any]) -> list[str]:
    warnings = evaluation.get("teacher_warnings")
    if warnings is None:
        return ["", "Teacher quality: not checked (the teacher's, assistant's or baseline's model card is missing)."]
    if not warnings:
        return ["", "Teacher quality: every teacher in the chain is at least as accurate on validation"
                " as the student trained alone."]
    return ["", "## Teacher quality", ""] + [f"- ⚠ {line}" for line in warnings] + [
        "- The default params.yaml is a first look, sized for a 5-minute run (16 px, short budgets):"
        " `make repro-full` trains every role with the full budget (docs/workflow.md)."]


def headline(evaluation: dict[str, Any]) -> dict[str, Any]:
    """A dozen numbers named for a person, the ones `dvc exp show` and `dvc metrics diff` lead with:
    what ships, how good it is (test accuracy and the set's decision metric; validation decided),
    what it costs against the teacher in one runtime, and what distillation added."""
    metric, variants = evaluation["decision_metric"], evaluation["variants"]
    deployed = evaluation.get("deployed")
    shipped = variants.get(deployed) or {}
    teacher = variants.get("teacher") or {}
    gain = evaluation.get("distillation_gain") or {}
    found: dict[str, Any] = {
        "deployed": deployed,
        "decision_metric": metric,
        "deployed_test_accuracy": shipped.get("accuracy"),
        **({f"deployed_test_{metric}": shipped.get(metric)} if metric != "accuracy" else {}),
        f"deployed_val_{metric}": (shipped.get("val") or {}).get(metric),
        "size_mb": shipped.get("size_mb"),
        "latency_ms": shipped.get("latency_ms"),
        "speedup_vs_teacher": shipped.get("latency_ratio_same_runtime"),
        "smaller_than_teacher": shipped.get("size_ratio_vs_teacher"),
        "teacher_test_accuracy": teacher.get("accuracy"),
        "kd_gain_vs_baseline": gain.get("accuracy"),
        **({f"kd_gain_vs_baseline_{metric}": gain.get(metric)} if metric != "accuracy" else {}),
        "assistant_gain": (evaluation.get("assistant_gain") or {}).get("accuracy"),
        "targets_passed": evaluation.get("targets_passed"),
        "int8_safe_on": (shipped.get("avx2") or {}).get("safe_on"),
    }
    return {key: value for key, value in found.items() if value is not None}


def write_outputs(
    result: dict[str, Any],
    params: Params,
    class_names: list[str],
    test_labels: list[int],
    metrics_path: Path,
    plots_dir: Path,
    report_path: Path,
    files_path: Path,
) -> None:
    write_json(metrics_path, result["evaluation"])
    write_json(metrics_path.with_name(HEADLINE.name), headline(result["evaluation"]))
    write_json(files_path, result["files"])  # not metrics: hashes that export checks
    write_plot_data(result, class_names, test_labels, plots_dir)
    with atomic_file(report_path) as tmp:
        tmp.write_text(render_summary(result, params))
