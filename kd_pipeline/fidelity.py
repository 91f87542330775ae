"""Does a converted model still make its source's decisions? One rule for evaluate and export.

evaluate deploys only a variant that passes it, and export ships the very file evaluate
measured (same bytes, same test predictions), so a run never fails at export on the variant
evaluate chose.

- fp32 ONNX: logits within `export.max_float_diff` of the PyTorch source's.
- int8 ONNX: top-1 agreement with the float source of at least `export.min_int8_agreement`
  on the test images whose float decision is not a near-tie (top-1 minus top-2 probability
  at least `export.int8_margin`; multi-label: each label with |p − 0.5| ≥ margin / 2). A
  5-class model at 55% accuracy has many near-ties, and int8 noise flips them both ways; what
  that costs in accuracy is bounded by `targets.max_accuracy_drop`, which every deployed
  variant meets against the reference. Agreement over all images is reported beside it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from kd_pipeline.evaluation import decide, probabilities
from kd_pipeline.params import ExportParams, QuantizeParams


def decided(logits: np.ndarray, multilabel: bool, margin: float) -> np.ndarray:
    """True where the decision is clear of a near-tie: per image, or per image and label."""
    probs = probabilities(logits.astype(np.float64), multilabel)
    if multilabel:
        return np.abs(probs - 0.5) >= margin / 2
    if probs.shape[1] < 2:
        return np.ones(len(probs), bool)
    top2 = np.sort(probs, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0] >= margin


def int8_fidelity(
    int8_logits: np.ndarray, float_logits: np.ndarray, multilabel: bool, cfg: ExportParams, quantize: QuantizeParams
) -> dict[str, Any]:
    """Agreement of an int8 model with its float source, and whether it may be deployed."""
    same = decide(int8_logits, multilabel) == decide(float_logits, multilabel)
    clear = decided(float_logits, multilabel, cfg.int8_margin)
    agreement = float(same.mean())
    confident = float(same[clear].mean()) if clear.any() else 1.0
    result = {
        "int8_agreement": agreement,
        "int8_agreement_decided": confident,
        "decided_share": float(clear.mean()),
        "pass": confident >= cfg.min_int8_agreement,
        "reason": "",
    }
    if not result["pass"]:
        on = "label decisions" if multilabel else "top-1 classes"
        result["reason"] = (
            f"int8 agrees with its float source on {confident:.2%} of the test {on} that are not near-ties"
            f" (margin {cfg.int8_margin:g}; {agreement:.2%} of all), below export.min_int8_agreement"
            f" {cfg.min_int8_agreement:g}; {_int8_advice(quantize)}"
        )
    return result


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
