"""The generated tables of README.md and docs/results.md, rendered from the records in
`results/` (`python -m kd_pipeline.records.record --readme`; a test fails when a page differs).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from kd_pipeline.core.errors import PipelineError
from kd_pipeline.core.params import read_yaml
from kd_pipeline.core.roles import (
    ARCHITECTURE_OF,
    BASELINE,
    CHAIN,
    COMPARISONS,
    FLOAT_MODELS,
    LEARNED_FROM,
    PRUNED,
    STUDENT,
    TEACHER,
    TEACHER_ONNX,
    TEACHERS,
)
from kd_pipeline.records.rerun import held_kernels
from kd_pipeline.records.seeds import holm_column, paired
from kd_pipeline.records.store import RESULTS, freshness
from kd_pipeline.records.sweep import sweep_table

README = Path("README.md")
# Every file with generated blocks: the README's first page and the results in full.
GENERATED = (README, Path("docs/results.md"))
# A generated block: <!-- table: records --> or <!-- table: variants NAME -->, then <!-- /table -->.
BLOCK = re.compile(r"(<!-- table: (\w+)(?: (\S+))? -->\n).*?(<!-- /table -->)", re.DOTALL)


def _cell(stats: dict[str, Any] | None, single: float | None, signed: bool = False) -> str:
    if stats:
        fmt = "+.3f" if signed else ".3f"
        return f"{stats['mean']:{fmt}} ± {stats['std']:.3f}"
    return "–" if single is None else f"{single:{'+.3f' if signed else '.3f'}}"


def dataset_label(params: dict[str, Any]) -> str:
    data = params["data"]
    name = data["subset"] if data["name"] == "medmnist" else data["name"]
    if data["name"] == "imagefolder" and data.get("root"):
        name = f"{name} {Path(data['root']).name}"
    return f"{name} ({data['image_size']} px)"


def epochs_label(params: dict[str, Any]) -> str:
    """Training epochs of teacher / assistant / student: the budget a row was trained with."""
    shared = params["train"]["epochs"]
    return "/".join(str((params[role].get("train") or {}).get("epochs", shared)) for role in CHAIN)


def machine_label(folder: Path) -> str:
    """Where a record ran, in a few words: the CPU, in brackets the instruction set of its int8
    kernels, and whether PyTorch's kernels were held below the CPU's best. A finding at the edge of
    significance on one CPU need not hold on another (docs/cpus.md), so every row says which."""
    run = folder / "run.json"
    machine = json.loads(run.read_text()).get("machine") if run.is_file() else None
    if not isinstance(machine, dict) or not machine.get("cpu"):
        return "–"
    name = " ".join(re.sub(r"\((?:R|TM)\)|\b(?:Intel|AMD|Processor|CPU)\b|@.*", " ", machine["cpu"]).split())
    isa = str(machine.get("int8_kernels") or "unknown").split(" (")[0]
    held = "ATEN_CPU_CAPABILITY" in (held_kernels(folder) or {})
    cores = f"{machine['cores']}-core " if machine.get("cores") else ""
    return f"{cores}{name} ({isa})" + (", kernels held to AVX2" if held else "")


def records_table(results: Path = RESULTS) -> str:
    """One row per record: float models and gains (mean ± sd over seeds when aggregated),
    and the deployed variant of the recorded run."""
    head = ("| record | data | epochs T/A/S | seeds | teacher | assistant | student | direct | baseline"
            " | distillation gain | assistant gain | deployed | accuracy | size | meets targets"
            " | within a point of the best small model | CPU (int8 ISA) | code |")
    rows = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for folder in sorted(p for p in results.iterdir() if (p / "evaluate.json").is_file()):
        evaluation = json.loads((folder / "evaluate.json").read_text())
        params = read_yaml((folder / "params.yaml").read_text())
        seeds = json.loads((folder / "seeds.json").read_text()) if (folder / "seeds.json").is_file() else {}
        variants, spread = evaluation["variants"], seeds.get("variants", {})
        cells = [_cell(spread.get(v, {}).get("accuracy"), variants.get(v, {}).get("accuracy"))
                 for v in FLOAT_MODELS]
        for gain in ("distillation_gain", "assistant_gain"):
            cells.append(_cell(seeds.get("gains", {}).get(gain, {}).get("accuracy"),
                               (evaluation.get(gain) or {}).get("accuracy"), signed=True))
        deployed = evaluation.get("deployed")
        shipped = variants.get(deployed, {})
        meets = str(evaluation.get("targets_passed")).lower()
        kept = seeds.get("shipped") or {}
        within = f"{sum(s['within_one_point'] for s in kept.values())}/{len(kept)} seeds" if kept else "–"
        rows.append(
            f"| {folder.name} | {dataset_label(params)} | {epochs_label(params)}"
            f" | {len(seeds.get('seeds', [])) or 1} | " + " | ".join(cells)
            + f" | {deployed} | {shipped.get('accuracy', 0):.3f} | {shipped.get('size_mb', 0):.2f} MB | {meets}"
            f" | {within} | {machine_label(folder)} | {freshness(folder)} |"
        )
    return "\n".join(rows)


# Each bigger or compressed model against the small model trained without KD, on the same seeds: the
# questions "is the teacher worth distilling from" and "what does pruning cost", one family per column.
AGAINST_BASELINE = ((TEACHER, BASELINE, "teacher − baseline"),
                    (PRUNED, BASELINE, "pruned (fine-tuned prune.epochs more) − baseline"))


def gains_table(results: Path = RESULTS, comparisons: tuple[tuple[str, str, str], ...] = COMPARISONS) -> str:
    """Every seed-aggregated record's paired `comparisons` (arm − control on the same seed), in test
    accuracy and in the metric its set decides by (losses as plainly as gains), recomputed from the
    per-seed numbers; each column is one family of comparisons, "measurable" only after Holm's
    correction over the whole table."""
    rows, cells = [], []
    for folder in sorted(p for p in results.iterdir() if (p / "seeds.json").is_file()):
        seeds = json.loads((folder / "seeds.json").read_text())
        metric = json.loads((folder / "evaluate.json").read_text())["decision_metric"]
        per_seed = [run["variants"] for run in seeds["per_seed"].values()]
        params = read_yaml((folder / "params.yaml").read_text())
        for arm, control, asks in comparisons:
            pairs = [v for v in per_seed if arm in v and control in v]
            if len(pairs) < 2:
                continue
            rows.append((folder, dataset_label(params), len(pairs), metric, asks))
            cells.append([paired([v[arm][m] - v[control][m] for v in pairs]) for m in ("accuracy", metric)])
    columns = [holm_column([c[k] for c in cells]) for k in (0, 1)] if cells else [[], []]
    lines = ["| record | data | seeds | decides by | comparison | − test accuracy | − test, decision metric"
             " | CPU (int8 ISA) | code |", "|---|---|---|---|---|---|---|---|---|"]
    for (folder, data, n, metric, asks), accuracy, decided in zip(rows, *columns, strict=True):
        lines.append(f"| {folder.name} | {data} | {n} | {metric.replace('_', ' ')} | {asks} | {accuracy}"
                     f" | {decided} | {machine_label(folder)} | {freshness(folder)} |")
    return "\n".join(lines)


RUNTIME = {"onnx": "ONNX Runtime fp32", "int8": "ONNX Runtime int8"}


def variants_table(folder: Path) -> str:
    """Every variant of one record, as evaluate measured it (deployed in bold)."""
    evaluation = json.loads((folder / "evaluate.json").read_text())
    params = read_yaml((folder / "params.yaml").read_text())
    rows = ["| variant | runtime | test accuracy | macro F1 | parameters | MMACs | size | latency b1"
            " | × faster, same runtime | × faster than eager teacher | × smaller |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, m in evaluation["variants"].items():
        role = ARCHITECTURE_OF.get(name, name)
        label = f"{name} ({params[role]['model']}, {LEARNED_FROM[name]})" if name in LEARNED_FROM else name
        if name in TEACHERS:
            label = f"{name} ({params[role]['model']})"
        if name == TEACHER_ONNX:
            label = f"{TEACHER_ONNX} (the same-runtime reference)"
        runtime = RUNTIME.get(name.rsplit("_", 1)[-1], "PyTorch fp32")
        cells = [f"{m['accuracy']:.4f}", f"{m['f1']:.4f}", f"{m['parameters'] / 1e6:.2f} M", f"{m['macs'] / 1e6:.1f}",
                 f"{m['size_mb']:.2f} MB", f"{m['latency_ms']:.2f} ms",
                 f"{m['latency_ratio_same_runtime']:.1f}" if "latency_ratio_same_runtime" in m else "–",
                 f"{m['latency_ratio_vs_teacher']:.1f}",
                 f"{m['size_ratio_vs_teacher']:.1f}"]
        if name == evaluation.get("deployed"):
            label, cells = f"**{label} (deployed)**", [f"**{c}**" for c in cells]
        rows.append(f"| {label} | {runtime} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def headline_table(folder: Path) -> str:
    """The README's three rows: the teacher, the small float model compression started from, and
    what ships, in test accuracy and the set's decision metric, size, latency and the ratios."""
    evaluation = json.loads((folder / "evaluate.json").read_text())
    params = read_yaml((folder / "params.yaml").read_text())
    metric = evaluation["decision_metric"]
    variants, deployed, reference = evaluation["variants"], evaluation.get("deployed"), evaluation["reference"]
    extra = "" if metric == "accuracy" else f" | test {metric.replace('_', ' ')}"
    rows = [f"| | model | runtime | test accuracy{extra} | size | latency b1 | × faster than the teacher, same runtime"
            " | × smaller |",
            "|---|---|---|---|---|---|---|---|" + ("---|" if extra else "")]
    for label, name in (("teacher", TEACHER), ("compressed from", reference), ("deployed", deployed)):
        if name not in variants:
            continue
        m = variants[name]
        base = name.split("_")[0]
        model = params[ARCHITECTURE_OF.get(base, STUDENT)]["model"]  # pruned: from a student-sized model
        model += ", pruned" if base == PRUNED else ""
        scores = f"{m['accuracy']:.4f}" + (f" | {m[metric]:.4f}" if extra else "")
        faster = f"{m['latency_ratio_same_runtime']:.1f}" if "latency_ratio_same_runtime" in m else "–"
        rows.append(f"| {label} | {name} ({model}) | {RUNTIME.get(name.rsplit('_', 1)[-1], 'PyTorch fp32')}"
                    f" | {scores} | {m['size_mb']:.2f} MB | {m['latency_ms']:.2f} ms"
                    f" | {faster} | {m['size_ratio_vs_teacher']:.1f} |")
    return "\n".join(rows)


def provenance_line(folder: Path) -> str:
    """The line under a one-record table: where it ran and whether today's code would compute it."""
    return f"\n\n`results/{folder.name}`: {machine_label(folder)}; code {freshness(folder)}."


def render(kind: str, arg: str | None, results: Path = RESULTS) -> str:
    if kind == "headline" and arg and (results / arg / "evaluate.json").is_file():
        return headline_table(results / arg) + provenance_line(results / arg)
    if kind == "records":
        return records_table(results)
    if kind == "gains":
        return gains_table(results)
    if kind == "versus":
        return gains_table(results, AGAINST_BASELINE)
    if kind == "variants" and arg and (results / arg / "evaluate.json").is_file():
        return variants_table(results / arg) + provenance_line(results / arg)
    if kind == "sweep" and arg and (results / arg / "sweep.json").is_file():
        return sweep_table(results / arg) + provenance_line(results / arg)
    raise PipelineError(f"README table {kind!r} {arg or ''}: unknown kind or no record {results / (arg or '')}")


def readme_with_tables(text: str, results: Path = RESULTS, source: Path = README) -> str:
    """A page (the README, docs/results.md) with every generated block re-rendered from the records."""
    if not BLOCK.search(text):
        raise PipelineError(f"{source}: no <!-- table: ... --> block found")
    return BLOCK.sub(lambda m: f"{m.group(1)}{render(m.group(2), m.group(3), results)}\n{m.group(4)}", text)
