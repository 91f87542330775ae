"""The deployable bundle in export/: the variant evaluate chose, as ONNX, with its float
weights, labels, preprocessing and a model card.

evaluate chose among variants that pass the fidelity rule (kd_pipeline.evaluate.fidelity), so export
does not judge again: it proves that it ships what evaluate measured. An ONNX variant is
copied byte for byte (its SHA-256 must match evaluate's record) and run on the test split in
the same runtime and threads, where its decisions must equal evaluate's; a PyTorch variant's
checkpoint must match evaluate's record, and its fresh ONNX must reproduce PyTorch's logits
within `export.max_float_diff`. A failed proof fails the stage and nothing is written.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import onnx
import torch
from safetensors.torch import save_file

from kd_pipeline import predict as standalone_predict
from kd_pipeline.core import paths
from kd_pipeline.core.data import Split, load_meta, load_split
from kd_pipeline.core.errors import PipelineError
from kd_pipeline.core.evaluation import decide
from kd_pipeline.core.files import atomic_dir, write_json
from kd_pipeline.core.models import load_checkpoint
from kd_pipeline.core.params import Params
from kd_pipeline.core.paths import DEFAULT_LAYOUT, Layout
from kd_pipeline.core.roles import (
    ASSISTANT,
    BASELINE,
    DIRECT,
    PRUNED,
    QAT,
    STUDENT,
    TEACHER,
    is_int8,
    is_onnx,
    onnx_variant,
    source_of,
)
from kd_pipeline.evaluate.comparison import onnx_file, predict_split
from kd_pipeline.evaluate.fidelity import file_sha256, float_fidelity, predictions_sha256
from kd_pipeline.evaluate.machine import describe
from kd_pipeline.evaluate.runtime import onnx_runner, torch_runner
from kd_pipeline.evaluate.targets import failures
from kd_pipeline.prepare import imaging
from kd_pipeline.quantize.onnx_export import export_onnx


class ExportError(PipelineError):
    """No variant can be exported, or the file to ship is not the one evaluate measured."""


def _check_same_file(path: Path, record: dict[str, str]) -> None:
    if file_sha256(path) != record["sha256"]:
        raise ExportError(f"{path} changed since evaluate measured it; run `dvc repro evaluate` first")


def prove(
    variant: str, onnx_path: Path, model: torch.nn.Module, card: dict[str, Any], test: Split,
    record: dict[str, str], measured: dict[str, float], params: Params,
) -> dict[str, Any]:
    """Show that `onnx_path` is what evaluate measured for `variant` (its `record` in
    reports/evaluated_files.json, its `measured` metrics); raise ExportError if not."""
    if is_onnx(variant):
        _check_same_file(onnx_path, record)  # before loading it: a changed file may not even parse
        run = onnx_runner(onnx_path, card["mean"], card["std"], params.evaluate.num_threads)
        predictions = decide(predict_split(run, test), test.multilabel)
        if predictions_sha256(predictions) != record["predictions_sha256"]:
            raise ExportError(f"{onnx_path.name}: its test predictions differ from evaluate's for {variant}")
        keys = ("int8_agreement", "int8_agreement_val", "int8_val_drop", "int8_val_drop_metric", "max_abs_diff")
        return {"same_file_as_evaluated": True, "images": len(test), **{k: measured[k] for k in keys if k in measured}}
    _check_same_file(Path(record["path"]), record)
    onnx_logits = predict_split(onnx_runner(onnx_path, card["mean"], card["std"], params.evaluate.num_threads), test)
    check = float_fidelity(onnx_logits, predict_split(torch_runner(model, card["mean"], card["std"]), test),
                           params.export)
    if not check["pass"]:
        raise ExportError(f"{onnx_path.name} ({variant}): {check['reason']}")
    return {"same_file_as_evaluated": False, "images": len(test), "max_abs_diff": check["max_abs_diff"]}


def _lineage(source: str, params: Params, origin: dict[str, Any] | None = None) -> str:
    """How the deployed weights were made, in the params' own names (`origin`: the pruned card's)."""
    kd = f"KD α={params.kd.alpha}, T={params.kd.temperature}"
    chain = {
        TEACHER: f"teacher `{params.teacher.model}` trained from the labels",
        ASSISTANT: f"assistant `{params.assistant.model}` distilled from teacher `{params.teacher.model}` ({kd})",
        STUDENT: f"teacher `{params.teacher.model}` → assistant `{params.assistant.model}` → student"
                   f" `{params.student.model}` ({kd})" if params.kd.learn_from == "nearest" else
                   f"teacher `{params.teacher.model}` → assistant `{params.assistant.model}`; student"
                   f" `{params.student.model}` distilled from both (densely guided, {kd})",
        DIRECT: f"student `{params.student.model}` distilled from teacher `{params.teacher.model}` directly ({kd})",
        BASELINE: f"student `{params.student.model}` trained from the labels alone (no teacher)",
    }
    if source in (PRUNED, QAT):
        origin = origin or {"source": STUDENT, "teachers": [ASSISTANT]}
        taught = " + ".join(origin["teachers"]) or "the labels alone"
        made = (chain[origin["source"]] + f", pruned {params.prune.method} {params.prune.ratio:g} (the best small"
                f" model on validation; fine-tuned from {taught})")
        if source == QAT:
            made += (f", quantization-aware fine-tune for {params.quantize.qat_epochs} epochs (int8 rounding of"
                     " weights and activations)")
        return made
    return chain[source]


def _rule(evaluation: dict, params: Params) -> str:
    """The selection rule in words, without measured timings (deployed_reason may carry one)."""
    if evaluation["targets"]["accuracy_drop"]["pass"]:
        return (f"export.select = {params.export.select} among the deployable variants within"
                f" {params.targets.max_accuracy_drop:g} validation {evaluation['decision_metric']} of the reference"
                f" ({evaluation['reference']})")
    return evaluation["deployed_reason"]  # the fallback: most accurate, its reason names accuracies only


def _cpu_lines(measured: dict, metric: str) -> list[str]:
    """Which CPUs an int8 variant keeps its accuracy on (AVX2's saturating arithmetic, emulated)."""
    avx2 = measured.get("avx2")
    if not avx2:
        return []
    return [f"- **CPUs**: int8 format {avx2['int8_format']}; keeps its float source's validation scores on"
            f" {avx2['safe_on']}. Under AVX2 arithmetic (no VNNI): validation {metric} {avx2['val'][metric]:.4f},"
            f" test accuracy {avx2['test_accuracy']:.4f} (here: {measured['accuracy']:.4f})"]


def _hub_header(variant: str, evaluation: dict, params: Params, opset: int | None) -> list[str]:
    """The YAML front matter model hubs read (Hugging Face's model-card metadata fields)."""
    metric = evaluation["decision_metric"]
    measured = evaluation["variants"][variant]
    dataset = params.data.subset or params.data.name
    tags = ["image-classification", "knowledge-distillation", "onnx", "kd-pipeline",
            *(["int8"] if is_int8(variant) else []), *(["pruned"] if variant.startswith(PRUNED) else [])]
    return ["---", "license: apache-2.0", "library_name: onnx", "pipeline_tag: image-classification",
            "tags:", *(f"  - {tag}" for tag in tags), "datasets:", f"  - {dataset}", "metrics:",
            *(f"  - {name}" for name in dict.fromkeys(["accuracy", metric])),
            f"test_accuracy: {measured['accuracy']:.4f}", f"val_{metric}: {measured['val'][metric]:.4f}",
            *([f"onnx_opset: {opset}"] if opset else []), "---", ""]


def _limitations(variant: str, card: dict, evaluation: dict, params: Params) -> list[str]:
    """What the card's numbers do not cover: other CPUs, other data, other seeds."""
    measured = evaluation["variants"][variant]
    avx2 = measured.get("avx2")
    cpus = (f"int8 ({avx2['int8_format']}) keeps its float source's validation scores on {avx2['safe_on']}"
            if avx2 else "a float ONNX model: the same decisions on any CPU ONNX Runtime runs on, speed aside")
    return ["", "## Intended use", "",
            f"Classifying images like its training data (`{params.data.subset or params.data.name}`,"
            f" {len(card['class_names'])} classes) at {card['input_size'][1]}×{card['input_size'][2]} px, with ONNX"
            " Runtime on a CPU, where a decision a person can check is acceptable.", "",
            "## Limitations", "",
            f"- **CPUs**: {cpus}. Latency was measured on {describe(evaluation['machine'])} only.",
            "- **Data**: it saw only this dataset's training split; images from other sources, sizes, cameras or"
            " populations were never tested, and its accuracy on them is unknown.",
            "- **One training run**: seed-to-seed spread is in `reports/seeds.md` when seeds were run"
            " (`python -m kd_pipeline.records.seeds`); a single run's test accuracy can move by a point between seeds."]


def _model_card(
    variant: str, card: dict, evaluation: dict, params: Params, check: dict, calibration: dict | None = None,
    opset: int | None = None,
) -> str:
    # long: one card, written in the order a reader meets it
    measured = evaluation["variants"][variant]
    reference = evaluation["reference"]
    metric = evaluation["decision_metric"]
    if "int8_agreement" in check:
        check_line = (
            f"int8 loses {check['int8_val_drop']:+.4f} validation {check['int8_val_drop_metric']} against its float"
            f" source (≤ quantize.max_accuracy_drop {params.quantize.max_accuracy_drop:g}) and agrees with it on"
            f" {check['int8_agreement']:.2%} of the test images"
        )
    else:
        check_line = f"max |logit difference| vs PyTorch {check['max_abs_diff']:.1e}"
    if check["same_file_as_evaluated"]:
        check_line += ("; the same graph and weights, with the same test predictions, as the file evaluate"
                       " measured (labels and preprocessing added as ONNX metadata)")
    meets = evaluation["targets_passed"]
    missed = [name for name, result in evaluation["targets"].items() if not result["pass"]]
    return "\n".join([
        *_hub_header(variant, evaluation, params, opset),
        f"# Model card: {variant}",
        "",
        f"- **meets_targets**: {str(meets).lower()}"
        + ("" if meets else f" (missed: {', '.join(missed) or 'no variant deployed'}; values in"
           " `reports/summary.md` and `metrics/export.json`)"),
        f"- **Architecture**: timm `{card['timm_name']}`{' (channel-pruned)' if card.get('channel_pruned') else ''},"
        f" {measured['parameters'] / 1e6:.2f} M parameters, {measured.get('macs', 0) / 1e6:.1f} MMACs",
        f"- **Made by**: {_lineage(source_of(variant), params, card.get('origin'))}"
        + (f", int8 {'dynamic' if params.quantize.method == 'dynamic' else 'static'} (ONNX Runtime)"
           if is_int8(variant) else "")
        + (f", calibrated on {calibration['images']} training images ({calibration['sampling']},"
           f" seed {calibration['seed']})" if calibration else "")
        + (f"; ONNX Runtime runs {measured['integer_mac_share']:.1%} of its conv/matmul MACs in integer kernels"
           if "integer_mac_share" in measured else ""),
        *_cpu_lines(measured, metric),
        f"- **Data**: `{params.data.name}`, {len(card['class_names'])}"
        f" {'labels (multi-label: sigmoid per label)' if card.get('task') == 'multilabel' else 'classes'},"
        f" input {card['input_size']},"
        f" mean {card['mean']}, std {card['std']}",
        f"- **Chosen on validation** ({metric}): {measured['val'][metric]:.4f}; reference {reference}"
        f" {evaluation['variants'][reference]['val'][metric]:.4f} (drop {measured['val_drop_vs_reference']:.4f})",
        f"- **Test accuracy** (reported, never used to choose): {measured['accuracy']:.4f}, balanced"
        f" {measured.get('balanced_accuracy', float('nan')):.4f}, macro F1 {measured['f1']:.4f}; reference"
        f" {reference} {evaluation['variants'][reference]['accuracy']:.4f}"
        f" (drop {measured['accuracy_drop_vs_reference']:.4f}),"
        f" teacher {evaluation['variants']['teacher']['accuracy']:.4f}"
        f" (drop {measured['accuracy_drop_vs_teacher']:.4f})",
        f"- **Size**: {measured['size_mb']:.2f} MB ({measured['size_ratio_vs_teacher']:.1f}× smaller than the teacher)",
        "- **Speed**: batch-1 latency and the ratio to the teacher are in `metrics/export.json` and"
        " `reports/summary.md` of the run that made this bundle (timings stay out of the bundle, so the same"
        f" inputs give the same files), measured on {describe(evaluation['machine'])}; int8 speed depends on the"
        " instruction set most: `python -m kd_pipeline.predict --benchmark` times it where you deploy",
        f"- **Verified**: {check_line}, on {check['images']} test images",
        f"- **Chosen by**: {_rule(evaluation, params)}",
        "",
        "Use: `python predict.py IMAGE_OR_FOLDER ...` in this folder (needs only onnxruntime, numpy and",
        "Pillow; `kd-predict --model export ...` in the project); `--benchmark` times the model"
        + (" and its fp32 twin (model.fp32.onnx)" if is_int8(variant) else "") + " on your CPU."
        + " model.onnx carries its labels and preprocessing as metadata.",
        *_limitations(variant, card, evaluation, params),
        "",
    ])


def onnx_metadata(variant: str, card: dict, evaluation: dict, class_names: list[str], resize: str) -> dict[str, str]:
    """What a user of model.onnx alone needs (ONNX metadata_props, strings): labels, preprocessing,
    the decision metric's validation value, and for int8 its format and the CPUs it holds on."""
    measured, metric = evaluation["variants"][variant], evaluation["decision_metric"]
    avx2 = measured.get("avx2") or {}
    props = {
        "kd_pipeline.variant": variant, "labels": json.dumps(class_names), "task": card.get("task", "multiclass"),
        "input_size": json.dumps(card["input_size"]), "input_layout": "NCHW, RGB, pixel / 255",
        "mean": json.dumps(card["mean"]), "std": json.dumps(card["std"]), "resize": resize,
        "decision_metric": metric, f"val_{metric}": f"{measured['val'][metric]:.6f}",
        "test_accuracy": f"{measured['accuracy']:.6f}",
    }
    if avx2:
        props |= {"int8_format": avx2["int8_format"], "int8_safe_on": avx2["safe_on"]}
    return props


def add_metadata(path: Path, props: dict[str, str]) -> None:
    """Write `props` into the ONNX file's metadata_props; the graph and weights stay byte for byte
    what they were (checked), so the file is still the one evaluate measured, plus its labels."""
    model = onnx.load(str(path))
    graph = model.graph.SerializeToString()
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    if onnx.load(str(path)).graph.SerializeToString() != graph:
        raise ExportError(f"{path}: writing its metadata changed the graph")


def write_model_files(variant: str, models: Path, model: torch.nn.Module, card: dict, folder: Path) -> None:
    """model.onnx: the very ONNX file evaluate measured, or a fresh export of a PyTorch variant;
    an int8 one gets its fp32 twin beside it, so `predict --benchmark` can compare them where it runs."""
    if is_onnx(variant):
        shutil.copyfile(onnx_file(models, variant), folder / "model.onnx")
        if is_int8(variant):
            shutil.copyfile(onnx_file(models, onnx_variant(source_of(variant))), folder / "model.fp32.onnx")
    else:
        export_onnx(model, card["input_size"], folder / "model.onnx")


def export_deployable(
    params: Params,
    layout: Layout = DEFAULT_LAYOUT,
    out_dir: Path = paths.EXPORT,
    files_path: Path = paths.EVALUATED_FILES,
) -> dict:
    """Write export/ for the variant evaluate chose, after proving it is what evaluate measured."""
    evaluation_path = layout.metrics / "evaluate.json"
    if not evaluation_path.is_file():
        raise ExportError(f"{evaluation_path}: not found; run the evaluate stage first")
    if not files_path.is_file():
        raise ExportError(f"{files_path}: not found; run the evaluate stage first")
    evaluation = json.loads(evaluation_path.read_text())
    variant = evaluation.get("deployed")
    if not variant:
        raise ExportError(f"nothing to export: {evaluation.get('deployed_reason')}")
    record = json.loads(files_path.read_text())[variant]
    meta = load_meta(layout.prepared)
    test = load_split(layout.prepared, "test")
    source = source_of(variant)
    model, card = load_checkpoint(layout.model_dir(source), num_classes=meta.num_classes)
    with atomic_dir(out_dir) as tmp:
        onnx_path = tmp / "model.onnx"
        write_model_files(variant, layout.models, model, card, tmp)
        check = prove(variant, onnx_path, model, card, test, record, evaluation["variants"][variant], params)
        add_metadata(onnx_path, onnx_metadata(variant, card, evaluation, meta.class_names,
                                              meta.source.get("resize", "stretch")))
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / "model.safetensors"))
        write_json(tmp / "model.json", card)
        write_json(tmp / "labels.json", dict(enumerate(meta.class_names)))
        write_json(tmp / "preprocessing.json", {
            "input_name": "input", "input_layout": "NCHW", "input_size": card["input_size"],
            "resize": meta.source.get("resize", "stretch"), "interpolation": "bilinear", "color": "RGB",
            "scale": "pixel / 255", "mean": card["mean"], "std": card["std"],
            "task": meta.task, "output": "sigmoid per label" if meta.task == "multilabel" else "softmax",
        })
        int8_card = layout.models / "quantized" / f"{source}.int8.json"
        calibration = json.loads(int8_card.read_text()).get("calibration") if is_int8(variant) else None
        opset = next((o.version for o in onnx.load(str(onnx_path)).opset_import if o.domain in ("", "ai.onnx")), None)
        (tmp / "MODEL_CARD.md").write_text(_model_card(variant, card, evaluation, params, check, calibration, opset))
        for module in (standalone_predict, imaging):  # `python export/predict.py`: onnxruntime, numpy, Pillow
            shutil.copyfile(str(module.__file__), tmp / Path(str(module.__file__)).name)
    measured = evaluation["variants"][variant]
    result = {
        "variant": variant, "int8": is_int8(variant), "meets_targets": evaluation["targets_passed"],
        "missed_targets": failures(evaluation),
        "onnx_mb": (out_dir / "model.onnx").stat().st_size / 2**20, **check,
        # Timings of the shipped file, measured by evaluate: here, not in the cached bundle.
        "latency_ms": measured["latency_ms"], "latency_ratio_vs_teacher": measured["latency_ratio_vs_teacher"],
    }
    write_json(layout.metrics / "export.json", result)
    return result
