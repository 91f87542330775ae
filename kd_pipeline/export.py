"""The deployable bundle in export/: the chosen model as ONNX, its float weights, labels,
preprocessing and a model card, verified against PyTorch before it is written.

Verification on real test images: a float model must match PyTorch's logits to
`export.max_float_diff` (1e-4); an int8 model must agree with its float source on at least
`export.min_int8_agreement` (99%) of top-1 predictions (multi-label: of per-label decisions).
A failed check fails the stage and nothing is written.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from kd_pipeline.chain import DEFAULT_LAYOUT, Layout
from kd_pipeline.comparison import onnx_file, source_of
from kd_pipeline.compression import export_onnx
from kd_pipeline.data import Split, load_meta, load_split, normalize_numpy
from kd_pipeline.errors import PipelineError
from kd_pipeline.evaluation import decide
from kd_pipeline.files import atomic_dir, write_json
from kd_pipeline.models import load_checkpoint
from kd_pipeline.params import ExportParams, Params


class ExportError(PipelineError):
    """No variant can be exported, or the exported model does not match PyTorch."""


def verify(
    onnx_path: Path, model: torch.nn.Module, card: dict[str, Any], test: Split, int8: bool, cfg: ExportParams
) -> dict[str, float]:
    """Compare ONNX Runtime with PyTorch on the test images; raise ExportError on a mismatch."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got, ref = [], []
    model.eval()
    for start in range(0, len(test), 128):  # in chunks: a large test split never sits in RAM as float32
        x = normalize_numpy(np.array(test.images[start : start + 128]), card["mean"], card["std"])
        got.append(session.run(None, {"input": x})[0])
        with torch.inference_mode():
            ref.append(model(torch.from_numpy(x)).numpy())
    got, ref = np.concatenate(got), np.concatenate(ref)
    if int8:
        on = "label decisions" if test.multilabel else "top-1 classes"
        agreement = float((decide(got, test.multilabel) == decide(ref, test.multilabel)).mean())
        if agreement < cfg.min_int8_agreement:
            raise ExportError(
                f"{onnx_path.name}: int8 agrees with PyTorch on {agreement:.2%} of test {on},"
                f" below {cfg.min_int8_agreement:.0%}; try quantize.per_channel: true or more calibration batches"
            )
        return {"agreement": agreement, "agreement_on": on, "images": len(test)}
    diff = float(np.abs(got - ref).max())
    if diff > cfg.max_float_diff:
        raise ExportError(f"{onnx_path.name}: ONNX logits differ from PyTorch by {diff:.2e} (> {cfg.max_float_diff:g})")
    return {"max_abs_diff": diff, "images": len(test)}


def _model_card(variant: str, card: dict, evaluation: dict, params: Params, check: dict) -> str:
    measured = evaluation["variants"][variant]
    teacher = evaluation["variants"]["teacher"]
    check_line = (
        f"agreement with PyTorch on {check['agreement_on']}: {check['agreement']:.2%}" if "agreement" in check
        else f"max |logit difference| vs PyTorch {check['max_abs_diff']:.1e}"
    )
    return "\n".join([
        f"# Model card: {variant}",
        "",
        f"- **Architecture**: timm `{card['timm_name']}`{' (channel-pruned)' if card.get('channel_pruned') else ''},"
        f" {measured['parameters'] / 1e6:.2f} M parameters, {measured.get('macs', 0) / 1e6:.1f} MMACs",
        f"- **Made by**: teacher `{params.teacher.model}` → assistant `{params.assistant.model}` → student"
        f" `{params.student.model}` (KD α={params.kd.alpha}, T={params.kd.temperature})"
        + (f", pruned {params.prune.method} {params.prune.ratio:g}" if "pruned" in variant else "")
        + (f", int8 {params.quantize.method} (ONNX Runtime)" if variant.endswith("_int8") else ""),
        f"- **Data**: `{params.data.name}`, {len(card['class_names'])}"
        f" {'labels (multi-label: sigmoid per label)' if card.get('task') == 'multilabel' else 'classes'},"
        f" input {card['input_size']},"
        f" mean {card['mean']}, std {card['std']}",
        f"- **Test accuracy**: {measured['accuracy']:.4f} (teacher {teacher['accuracy']:.4f}),"
        f" macro F1 {measured['f1']:.4f}",
        f"- **Size**: {measured['size_mb']:.2f} MB ({measured['size_ratio_vs_teacher']:.1f}× smaller than the teacher)",
        f"- **CPU latency, batch 1**: {measured['latency_ms']:.2f} ms"
        f" ({measured['latency_ratio_vs_teacher']:.1f}× faster than the teacher)",
        f"- **Verified**: {check_line} on {check['images']} test images",
        f"- **Chosen by**: {evaluation['deployed_reason']}",
        "",
        "Use: `python -m kd_pipeline.predict --model export IMAGE_OR_FOLDER ...` (needs only onnxruntime,",
        "numpy and Pillow).",
        "",
    ])


def export_deployable(params: Params, layout: Layout = DEFAULT_LAYOUT, out_dir: Path = Path("export")) -> dict:
    """Write export/ for the variant evaluate chose, after verifying it; returns the check metrics."""
    evaluation_path = layout.metrics / "evaluate.json"
    if not evaluation_path.is_file():
        raise ExportError(f"{evaluation_path}: not found; run the evaluate stage first")
    evaluation = json.loads(evaluation_path.read_text())
    variant = evaluation.get("deployed")
    if not variant:
        raise ExportError(f"nothing to export: {evaluation.get('deployed_reason')}; relax targets.max_accuracy_drop")
    meta = load_meta(layout.prepared)
    test = load_split(layout.prepared, "test")
    int8 = variant.endswith("_int8")
    source = source_of(variant)
    model, card = load_checkpoint(layout.model_dir(source), num_classes=meta.num_classes)
    with atomic_dir(out_dir) as tmp:
        onnx_path = tmp / "model.onnx"
        if variant != source:  # the very ONNX file evaluate measured
            shutil.copyfile(onnx_file(layout.models, variant), onnx_path)
        else:
            export_onnx(model, card["input_size"], onnx_path)
        check = verify(onnx_path, model, card, test, int8, params.export)
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / "model.safetensors"))
        write_json(tmp / "model.json", card)
        write_json(tmp / "labels.json", dict(enumerate(meta.class_names)))
        write_json(tmp / "preprocessing.json", {
            "input_name": "input", "input_layout": "NCHW", "input_size": card["input_size"],
            "resize": "bilinear", "color": "RGB", "scale": "pixel / 255", "mean": card["mean"], "std": card["std"],
            "task": meta.task, "output": "sigmoid per label" if meta.task == "multilabel" else "softmax",
        })
        (tmp / "MODEL_CARD.md").write_text(_model_card(variant, card, evaluation, params, check))
    result = {"variant": variant, "int8": int8, "onnx_mb": (out_dir / "model.onnx").stat().st_size / 2**20, **check}
    write_json(layout.metrics / "export.json", result)
    return result
