"""Does a converted model keep what its source does? One rule for evaluate and export.

evaluate deploys only a variant that passes it, and export ships the very file evaluate
measured (same bytes, same test predictions), so a run never fails at export on the variant
evaluate chose.

- fp32 ONNX: logits within `export.max_float_diff` of the PyTorch source's.
- int8 ONNX: on the validation split, its accuracy, balanced accuracy (one class per image) and
  the run's decision metric each within `quantize.max_accuracy_drop` of its float source's, on
  this machine and under the saturating u8s8 arithmetic of CPUs without VNNI.
  What users keep is accuracy; top-1 agreement with the source over every image (validation
  and test) is reported beside it and decides nothing.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from kd_pipeline.core.evaluation import decide
from kd_pipeline.core.params import ExportParams, QuantizeParams


def agreement(int8_logits: np.ndarray, float_logits: np.ndarray, multilabel: bool) -> float:
    """Share of decisions (images, or image-label pairs) the int8 model makes as its source does."""
    same = decide(int8_logits, multilabel) == decide(float_logits, multilabel)
    return float(same.mean()) if same.size else 1.0


def int8_fidelity(
    int8_val: dict[str, float], source_val: dict[str, float], metric: str, quantize: QuantizeParams,
    avx2_val: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Whether an int8 model may ship: its validation scores against its float source's, as this
    machine runs it and, given `avx2_val`, under the saturating arithmetic of CPUs without VNNI
    (kd_pipeline.quantize.avx2_arithmetic); the worse of the two decides."""
    check = _drop_check(int8_val, source_val, metric, quantize)
    if avx2_val is None:
        return {**check, "avx2_checked": False}
    avx2 = _drop_check(avx2_val, source_val, metric, quantize)
    worst = avx2 if avx2["int8_val_drop"] > check["int8_val_drop"] else check
    reason = check["reason"] or (avx2["reason"] and f"on CPUs without VNNI (AVX2 arithmetic), {avx2['reason']}")
    return {**worst, "pass": check["pass"] and avx2["pass"], "reason": reason, "avx2_checked": True,
            "native_val_drop": check["int8_val_drop"], "avx2_val_drop": avx2["int8_val_drop"],
            "native_pass": check["pass"], "avx2_pass": avx2["pass"]}


def _drop_check(
    int8_val: dict[str, float], source_val: dict[str, float], metric: str, quantize: QuantizeParams
) -> dict[str, Any]:
    keys = [k for k in dict.fromkeys((metric, "accuracy", "balanced_accuracy")) if k in source_val and k in int8_val]
    drops = {key: source_val[key] - int8_val[key] for key in keys}
    worst = max(drops, key=lambda key: drops[key])
    ok = drops[worst] <= quantize.max_accuracy_drop + 1e-12
    reason = "" if ok else (
        f"int8 loses {drops[worst]:.4f} validation {worst} against its float source"
        f" (> quantize.max_accuracy_drop {quantize.max_accuracy_drop:g}); {_int8_advice(quantize)}"
    )
    return {"int8_val_drop": drops[worst], "int8_val_drop_metric": worst, "pass": ok, "reason": reason}


def _int8_advice(quantize: QuantizeParams) -> str:
    """What could bring int8 closer to float, given the settings in force."""
    steps = []
    if quantize.method == "dynamic":
        steps.append("quantize.method: static (calibrated activations)")
    if not quantize.per_channel:
        steps.append("quantize.per_channel: true")
    if quantize.method == "static":
        steps.append(f"more calibration images (quantize.calibration_batches is {quantize.calibration_batches})")
    steps.append("or deploy a float variant (it is chosen automatically when no int8 variant qualifies)")
    return "try " + ", ".join(steps)


def float_fidelity(onnx_logits: np.ndarray, torch_logits: np.ndarray, cfg: ExportParams) -> dict[str, Any]:
    """Largest logit difference between an fp32 ONNX model and its PyTorch source."""
    diff = float(np.abs(onnx_logits - torch_logits).max()) if len(onnx_logits) else 0.0
    ok = diff <= cfg.max_float_diff
    reason = "" if ok else (
        f"ONNX logits differ from PyTorch by {diff:.2e} (> export.max_float_diff {cfg.max_float_diff:g})"
    )
    return {"max_abs_diff": diff, "pass": ok, "reason": reason}


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def predictions_sha256(predictions: np.ndarray) -> str:
    """A digest of a variant's test decisions, to prove that export ran what evaluate measured."""
    return hashlib.sha256(np.ascontiguousarray(predictions, dtype=np.int64).tobytes()).hexdigest()
