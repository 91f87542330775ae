"""Every variant side by side: chosen on the validation split, reported on the test split."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from kd_pipeline.core.data import Meta, Split
from kd_pipeline.core.errors import CheckpointError, PipelineError
from kd_pipeline.core.evaluation import full_metrics
from kd_pipeline.core.models import WEIGHTS_FILE, count_macs, count_parameters, load_checkpoint
from kd_pipeline.core.params import Params
from kd_pipeline.core.paths import checkpoint_dir
from kd_pipeline.core.roles import (
    GAINS,
    PRUNED,
    QAT,
    QAT_VARIANTS,
    TEACHER,
    TEACHER_ONNX,
    TORCH_MODELS,
    int8_variant,
    is_int8,
    is_onnx,
    onnx_variant,
    source_of,
)
from kd_pipeline.evaluate.costs import PeakRSS, file_size_mb, release_freed_memory, time_model
from kd_pipeline.evaluate.fidelity import agreement, file_sha256, float_fidelity, int8_fidelity, predictions_sha256
from kd_pipeline.evaluate.machine import cpu_info
from kd_pipeline.evaluate.runtime import onnx_runner, torch_runner
from kd_pipeline.evaluate.targets import check_targets, ratios_vs_teacher, reference_variant, select_variant, val_score

# The variants evaluate looks for, in report order: float checkpoints in models/<name>/ (roles.TORCH_MODELS, eager
# PyTorch); then whatever the quantize stage wrote to models/quantized/: <source>.fp32.onnx
# (variant <source>_onnx) and the int8 ONNX made from it, <source>.int8.onnx (<source>_int8).
# teacher_onnx is the teacher in ONNX Runtime: the same-runtime reference for speed, never deployed.
# Expected after a quantize run, so a missing one is reported rather than silently absent.
EXPECTED_ONNX = (TEACHER_ONNX, onnx_variant(PRUNED), int8_variant(PRUNED))
SOURCE_ORDER = (*TORCH_MODELS, QAT)
# With quantize.method qat: the QAT student (float, weights on the int8 grid) and its int8 file (roles.QAT_VARIANTS).


def onnx_kind(variant: str) -> str:
    return "int8" if is_int8(variant) else "fp32"


def same_runtime_teacher(variant: str, variants: dict[str, Any]) -> str:
    """The teacher to compare a variant's speed with: in ONNX Runtime for an ONNX variant (when
    measured), eager PyTorch otherwise, so a ratio never credits the runtime to the compression."""
    return TEACHER_ONNX if is_onnx(variant) and TEACHER_ONNX in variants else TEACHER


def onnx_file(models_dir: Path, variant: str) -> Path:
    """Where the quantize stage writes an ONNX variant: pruned_int8 → quantized/pruned.int8.onnx."""
    return models_dir / "quantized" / f"{source_of(variant)}.{onnx_kind(variant)}.onnx"


def onnx_variants(models_dir: Path, qat: bool) -> list[str]:
    """The ONNX variants in models/quantized (plus the expected ones, so a missing file is
    reported), teacher first, then by source, fp32 before int8."""
    found = {f"{p.name.split('.')[0]}_{'int8' if p.name.endswith('.int8.onnx') else 'onnx'}"
             for p in (models_dir / "quantized").glob("*.onnx") if p.name.count(".") == 2}
    names = {n for n in found | set(EXPECTED_ONNX) if qat or n not in QAT_VARIANTS}
    order = {source: k for k, source in enumerate(SOURCE_ORDER)}
    return sorted(names, key=lambda n: (order.get(source_of(n), len(order)), source_of(n), onnx_kind(n) == "int8"))


@dataclass
class Variant:
    """A model ready to measure: a uint8-NHWC-in, logits-out runner and its static costs."""

    name: str
    run: Callable[[np.ndarray], np.ndarray]
    size_mb: float
    parameters: int
    macs: int | None
    kind: str
    path: Path  # the file measured: export ships these very bytes
    integer_mac_share: float | None = None  # int8 only: MACs ONNX Runtime runs in integer kernels
    avx2: dict[str, Any] | None = None  # static int8 only: its card's scores under AVX2 arithmetic
    card: dict[str, Any] | None = None


def load_torch_variant(name: str, ckpt_dir: Path, meta: Meta) -> Variant:
    model, card = load_checkpoint(ckpt_dir, num_classes=meta.num_classes)
    return Variant(
        name=name,
        run=torch_runner(model, card["mean"], card["std"]),
        size_mb=file_size_mb(ckpt_dir / WEIGHTS_FILE),
        parameters=count_parameters(model),
        macs=count_macs(model, card["input_size"]),
        kind="pytorch fp32",
        path=ckpt_dir / WEIGHTS_FILE,
    )


def load_onnx_variant(name: str, onnx_path: Path, meta: Meta, threads: int) -> Variant:
    card_path = onnx_path.with_suffix(".json")
    if not onnx_path.is_file() or not card_path.is_file():
        raise CheckpointError(f"{onnx_path}: not found; run the quantize stage first")
    card = json.loads(card_path.read_text())
    if card["num_classes"] != meta.num_classes:
        raise CheckpointError(
            f"{onnx_path}: made for {card['num_classes']} classes but the data has {meta.num_classes}"
        )
    if "parameters" not in card or "macs" not in card:
        raise CheckpointError(f"{card_path}: no parameter or MAC count; run the quantize stage again")
    return Variant(  # the ONNX file alone: its memory is measured without the PyTorch source
        name=name,
        run=onnx_runner(onnx_path, card["mean"], card["std"], threads),
        size_mb=file_size_mb(onnx_path),
        parameters=card["parameters"],
        macs=card["macs"],
        integer_mac_share=card.get("integer_mac_share"),
        kind=f"onnxruntime {onnx_path.suffixes[0].lstrip('.')}",
        path=onnx_path,
        avx2={k: card.get(k) for k in ("avx2_val", "int8_format", "safe_on")} if card.get("avx2_val") else None,
        card=card,
    )


def default_loaders(models_dir: Path, meta: Meta, threads: int, qat: bool = False) -> dict[str, Callable[[], Variant]]:
    """Every variant evaluate knows, as lazy loaders (a missing one is reported, not fatal);
    the QAT variants only when `qat` (quantize.method: qat)."""
    torch_names = (*TORCH_MODELS, QAT) if qat else TORCH_MODELS
    loaders: dict[str, Callable[[], Variant]] = {
        name: (lambda name=name: load_torch_variant(name, checkpoint_dir(models_dir, name), meta))
        for name in torch_names
    }
    for name in onnx_variants(models_dir, qat):
        path = onnx_file(models_dir, name)
        loaders[name] = lambda name=name, path=path: load_onnx_variant(name, path, meta, threads)
    return loaders


def predict_split(run: Callable[[np.ndarray], np.ndarray], split: Split, batch_size: int = 256) -> np.ndarray:
    """Logits of a runner for a whole split, in the chunks export repeats to get the same numbers."""
    chunks = [
        run(np.array(split.images[start : start + batch_size]))  # a writable copy
        for start in range(0, len(split), batch_size)
    ]
    return np.concatenate(chunks)


def compare(
    loaders: dict[str, Callable[[], Variant]], val: Split, test: Split, meta: Meta, params: Params, metric: str
) -> dict[str, Any]:
    """Measure each variant on validation and test; a variant that cannot load is reported missing.

    Every decision (reference, int8 deployability, the deployed variant, the accuracy target)
    reads the validation scores in `metric`; the test scores are reported beside them. Returns
    the evaluation (per-variant metrics, fidelity to the source, gains, ratios, the reference,
    the deployed variant and its target checks), per-variant test details, and the files
    measured (path, SHA-256, test-prediction digest), which export checks.
    """
    variants, details, logits, files, missing, notes = _measure(loaders, val, test, meta, params)
    if TEACHER not in variants:
        raise PipelineError(f"the teacher could not be evaluated: {missing.get('teacher', 'not listed')}")
    fidelity = _fidelity(variants, logits, val.multilabel, params, metric)
    for name, check in fidelity.items():
        variants[name].update({k: v for k, v in check.items() if k not in ("pass", "reason")})
    for name in variants:
        files[name]["predictions_sha256"] = predictions_sha256(details[name]["predictions"])
    _flag_slow_int8(variants)
    reference = reference_variant(variants, params.targets, metric)
    for name, measured in variants.items():
        measured.update({f"{k}_vs_teacher": v for k, v in ratios_vs_teacher(measured, variants[TEACHER]).items()})
        same = ratios_vs_teacher(measured, variants[same_runtime_teacher(name, variants)])
        measured.update({f"{k}_same_runtime": same[k] for k in ("speedup", "latency_ratio")})
        measured["accuracy_drop_vs_reference"] = variants[reference]["accuracy"] - measured["accuracy"]
        measured["val_drop_vs_reference"] = val_score(variants[reference], metric) - val_score(measured, metric)

    evaluation: dict[str, Any] = {"task": meta.task, "decision_metric": metric, "decision_split": "val",
                                  "machine": cpu_info(), "reference": reference, "variants": variants}
    for gain, (arm, control) in GAINS.items():
        if arm in variants and control in variants:
            evaluation[gain] = {
                key: variants[arm][key] - variants[control][key]
                for key in ("accuracy", "balanced_accuracy", "f1")
            }
    unfaithful = {name: check["reason"] for name, check in fidelity.items() if not check["pass"]}
    selection = select_variant(variants, params.targets, params.export, unfaithful, metric)
    evaluation["deployed"] = selection.variant
    evaluation["deployed_reason"] = selection.reason
    evaluation["targets"] = {}
    if selection.variant is not None:
        chosen = variants[selection.variant]
        ratios = {**ratios_vs_teacher(chosen, variants[TEACHER]), "speedup": chosen["speedup_same_runtime"],
                  "accuracy_drop": chosen["val_drop_vs_reference"]}
        evaluation["targets"] = check_targets(ratios, params.targets)
        evaluation["targets"]["accuracy_drop"].update(
            {"metric": metric, "split": "val", "test_accuracy_drop": chosen["accuracy_drop_vs_reference"]})
    evaluation["targets_passed"] = bool(evaluation["targets"]) and all(
        t["pass"] for t in evaluation["targets"].values()
    )
    evaluation["not_deployable"] = unfaithful
    evaluation["missing"] = missing
    evaluation["warnings"] = notes
    return {"evaluation": evaluation, "details": details, "files": files}


def _flag_slow_int8(variants: dict[str, dict[str, Any]]) -> None:
    """Mark an int8 variant slower at batch 1 than its fp32 twin on this CPU (AVX2 without VNNI
    can make it so): it is reported, and `select: fastest` passes it over."""
    for name, measured in variants.items():
        twin = onnx_variant(source_of(name))
        if onnx_kind(name) == "int8" and twin in variants:
            measured["slower_than_fp32_twin"] = measured["latency_ms"] > variants[twin]["latency_ms"]


def _avx2_scores(variant: Variant, test: Split, meta: Meta) -> dict[str, Any]:
    """A static int8 variant on CPUs without VNNI: validation scores from its quantize card (made
    from these bytes), test scores measured here under the same exact emulation (reported only)."""
    from kd_pipeline.quantize.avx2_arithmetic import avx2_logits

    logits = avx2_logits(variant.path, test.images, variant.card["mean"], variant.card["std"])
    summary = full_metrics(test.labels, logits, meta.class_names).summary
    return {"val": variant.avx2["avx2_val"], "int8_format": variant.avx2["int8_format"],
            "safe_on": variant.avx2["safe_on"],
            **{f"test_{key}": summary[key] for key in ("accuracy", "balanced_accuracy") if key in summary}}


def _measure(
    loaders: dict[str, Callable[[], Variant]], val: Split, test: Split, meta: Meta, params: Params
) -> tuple[dict, dict, dict, dict, dict, list]:
    """Load, time and score each variant on validation and test, at the evaluate thread count."""
    cfg = params.evaluate
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.num_threads)
    variants: dict[str, dict[str, Any]] = {}
    details: dict[str, Any] = {}
    logits: dict[str, dict[str, np.ndarray]] = {}
    files: dict[str, dict[str, str]] = {}
    missing: dict[str, str] = {}
    notes: list[str] = []
    try:
        for name, load in tqdm(loaders.items(), desc="evaluate", leave=False, disable=None):
            release_freed_memory()
            try:
                with PeakRSS() as memory:  # loading and running the variant
                    variant = load()
                    timing = time_model(variant.run, test.images[:8], cfg.throughput_batch, cfg.warmup, cfg.repeats)
            except PipelineError as err:
                missing[name] = str(err)
                tqdm.write(f"warning: {name} not evaluated: {err}")
                continue
            logits[name] = {"val": predict_split(variant.run, val), "test": predict_split(variant.run, test)}
            decided = full_metrics(val.labels, logits[name]["val"], meta.class_names)
            report = full_metrics(test.labels, logits[name]["test"], meta.class_names)
            notes.extend(f"{name}: {note}" for note in report.warnings)
            variants[name] = {
                **report.summary,
                "val": decided.summary,
                "parameters": variant.parameters,
                **({"macs": variant.macs} if variant.macs is not None else {}),
                "size_mb": variant.size_mb,
                "latency_ms": timing.latency_ms,
                "throughput": timing.throughput,
                "peak_memory_mb": memory.growth_mb,
                **({"integer_mac_share": variant.integer_mac_share} if variant.integer_mac_share is not None else {}),
            }
            details[name] = {
                "kind": variant.kind,
                "per_class": report.per_class,
                "confusion": report.confusion,
                "predictions": report.predictions.tolist(),
            }
            if variant.avx2 is not None:
                variants[name]["avx2"] = _avx2_scores(variant, test, meta)
            files[name] = {"path": str(variant.path), "sha256": file_sha256(variant.path)}
            tqdm.write(
                f"{name}: val {decided.summary['accuracy']:.4f} test {report.summary['accuracy']:.4f} accuracy"
                f" | {variant.size_mb:.2f} MB | {timing.latency_ms:.2f} ms batch-1"
                f" | {timing.throughput:.0f} img/s batch-{cfg.throughput_batch}"
            )
    finally:
        torch.set_num_threads(previous_threads)
    return variants, details, logits, files, missing, notes


def _fidelity(
    variants: dict[str, dict[str, Any]], logits: dict[str, dict[str, np.ndarray]], multilabel: bool,
    params: Params, metric: str,
) -> dict[str, dict[str, Any]]:
    """Each ONNX variant against its PyTorch source, decided on validation (the deployability rule);
    int8 agreement with the source is reported on both splits."""
    checks = {}
    for name in logits:
        if not is_onnx(name):
            continue
        source = source_of(name)
        if source not in logits:
            checks[name] = {"pass": False, "reason": f"its source {source} was not evaluated"}
        elif onnx_kind(name) == "int8":
            checks[name] = {
                **int8_fidelity(variants[name]["val"], variants[source]["val"], metric, params.quantize,
                                variants[name].get("avx2", {}).get("val")),
                **{f"int8_agreement{'_val' if split == 'val' else ''}":
                   agreement(logits[name][split], logits[source][split], multilabel) for split in ("val", "test")},
            }
            share = variants[name].get("integer_mac_share")
            if share is not None and share < params.quantize.min_integer_mac_share:
                checks[name]["pass"] = False
                checks[name]["reason"] = checks[name]["reason"] or (
                    f"ONNX Runtime runs {share:.1%} of its conv/matmul MACs in integer kernels, below"
                    f" quantize.min_integer_mac_share = {params.quantize.min_integer_mac_share:g}")
        else:
            checks[name] = float_fidelity(logits[name]["val"], logits[source]["val"], params.export)
    return checks
