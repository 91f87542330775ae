"""The quantize stage: fp32 and int8 ONNX of the pruned model and of the small model it was made
from (kd_pipeline.prune.origin), the teacher's fp32 ONNX as the same-runtime reference, and with
`quantize.method: qat` the quantization-aware student.

Each int8 model is accuracy-controlled on validation (kd_pipeline.quantize.mixed_precision); the fp32 ONNX
it starts from is kept, so int8 is compared with fp32 in the same runtime.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from kd_pipeline.core import paths
from kd_pipeline.core.data import Split, load_split
from kd_pipeline.core.errors import CompressionError
from kd_pipeline.core.files import atomic_dir, write_json
from kd_pipeline.core.models import (
    count_macs,
    count_parameters,
    load_checkpoint,
    move_to_device,
    read_card,
    save_checkpoint,
)
from kd_pipeline.core.params import Params, QuantizeParams, fingerprint
from kd_pipeline.core.paths import DEFAULT_LAYOUT, Layout
from kd_pipeline.core.ranking import decision_metric
from kd_pipeline.core.roles import PRUNED, QAT, STUDENT, TEACHER, TEACHER_ONNX, int8_variant, onnx_variant
from kd_pipeline.quantize import qat
from kd_pipeline.quantize.integer_kernels import integer_mac_share
from kd_pipeline.quantize.mixed_precision import FORMATS, Attempt, Control, controlled_int8, write_report
from kd_pipeline.quantize.onnx_export import export_onnx
from kd_pipeline.quantize.quantization import (
    CalibrationImages,
    calibration_sample,
    integer_ops,
    learned_ranges,
    prepare_onnx,
)
from kd_pipeline.train.finetune import (
    best_val_metrics,
    cpu_scores,
    device_normalizer,
    fine_tune,
    load_teachers,
    prepared_run,
)
from kd_pipeline.train.training import resolve_device


def qat_student(params: Params, layout: Layout, out: Path) -> dict[str, float]:
    """The pruned student fine-tuned for `quantize.qat_epochs` with the int8 rounding it will be
    deployed with (kd_pipeline.quantize.qat), distilled like the prune fine-tune, saved to `out` as a plain
    checkpoint (role pruned_qat). One process: the quantize stage does not run under torchrun."""
    cfg = params.quantize
    budget = params.train_for(PRUNED)
    run = prepared_run(layout, budget)
    device = resolve_device(budget.device)
    model, card = load_checkpoint(layout.model_dir(PRUNED), num_classes=run.meta.num_classes)
    teacher_roles = [role for role in card.get("teacher", "").split("+") if role]  # the prune fine-tune's
    teachers = load_teachers(teacher_roles, params, run, device)
    model = qat.prepare(move_to_device(model, device))
    finetune = budget.model_copy(update={"epochs": cfg.qat_epochs, "lr": cfg.qat_lr, "scheduler": "cosine",
                                         "nproc_per_node": 1, "nnodes": 1})
    params_hash = fingerprint(card["params_hash"], cfg, teachers.loss_reads(), finetune)
    with fine_tune(QAT, model, finetune, teachers, device_normalizer(card["mean"], card["std"], device),
                   params_hash, run) as result:
        ranges = qat.activation_ranges(model)  # before finalize removes them
        model = qat.finalize(model.to("cpu")).eval()
        test_metrics = cpu_scores(model, card, {"test": run.test}, run.meta.num_classes)["test"]
        save_checkpoint(model, out, {
            **card, "role": QAT, "teacher": "+".join(teacher_roles),
            "qat": {"epochs": cfg.qat_epochs, "lr": cfg.qat_lr, "best_epoch": result.best_epoch, "layers": len(ranges),
                    "weights": "per output channel, symmetric int8, BatchNorm folded",
                    "activations": "per tensor, uint8, EMA range while training; these ranges go into the int8 file",
                    "input_ranges": {name.removesuffix(".input_range"): r for name, r in ranges.items()}},
            "val_metrics": best_val_metrics(result),
            "test_metrics": test_metrics,
            "params_hash": params_hash,
        })
    print(f"{QAT}: {cfg.qat_epochs} QAT epochs, {len(ranges)} layers with int8 rounding, test accuracy"
          f" {test_metrics['accuracy']:.4f} (float, weights on the int8 grid)")
    return test_metrics


def reference_onnx(layout: Layout, out: Path) -> None:
    """The teacher as fp32 ONNX (teacher.fp32.onnx + card): speed-ups of ONNX variants are measured
    against it, in the same runtime, and evaluate checks it against the PyTorch teacher."""
    model, card = load_checkpoint(layout.model_dir(TEACHER))
    exporter = export_onnx(model, card["input_size"], out / "teacher.fp32.onnx")
    write_json(out / "teacher.fp32.json", {
        "exporter": exporter,
        **{k: card[k] for k in ("timm_name", "num_classes", "class_names", "input_size", "mean", "std")},
        "task": card.get("task", "multiclass"), "source": TEACHER, "role": TEACHER_ONNX,
        "parameters": count_parameters(model), "macs": count_macs(model, card["input_size"]),
    })


def compressed_sources(layout: Layout = DEFAULT_LAYOUT) -> tuple[str, str]:
    """The small model the pruned one was made from (its card's origin) and the pruned model:
    the two checkpoints quantize turns into fp32 and int8 ONNX."""
    source = read_card(layout.model_dir(PRUNED)).get("origin", {}).get("source", STUDENT)
    return source, PRUNED


def quantize_variants(
    params: Params, sources: tuple[str, ...] | None = None, layout: Layout = DEFAULT_LAYOUT,
    report: Path = paths.QUANTIZATION_REPORT, plot: Path = paths.QUANTIZATION_PLOT,
) -> dict[str, Any]:
    """int8 ONNX of each source checkpoint (default: compressed_sources) into
    models/quantized/<source>.int8.onnx (+ .json card), beside the fp32 ONNX it was made from."""
    cfg = params.quantize
    sources = sources or compressed_sources(layout)
    train, val = load_split(layout.prepared, "train"), load_split(layout.prepared, "val")
    metric = decision_metric(params.train.monitor, train.labels)
    indices, calibrated = _calibration(train, cfg)
    controls: dict[str, Control] = {}
    results = {}
    with atomic_dir(layout.models / "quantized") as tmp:
        reference_onnx(layout, tmp)
        if cfg.method == "qat":
            qat_student(params, layout, tmp / QAT)
            sources = (*sources, QAT)
        for source in sources:
            model, card = load_checkpoint(tmp / source if source == QAT else layout.model_dir(source))
            fp32, int8 = tmp / f"{source}.fp32.onnx", tmp / f"{source}.int8.onnx"
            exporter = export_onnx(model, card["input_size"], fp32)
            prepared = prepare_onnx(fp32)
            # QAT's learned input ranges go into the file; other tensors are calibrated as for PTQ.
            ranges = learned_ranges(prepared, card["qat"]["input_ranges"]) if source == QAT else None
            try:
                controls[source] = controlled_int8(
                    fp32, prepared, int8, cfg, calibration=lambda card=card: CalibrationImages(
                        train, indices, card["mean"], card["std"], cfg.calibration_batch_size),
                    val=val, card=card, metric=metric, ranges=ranges,
                )
            finally:
                prepared.unlink(missing_ok=True)
            results[source] = _write_cards(tmp, source, model, card, exporter, controls[source], ranges,
                                           {"quantize": cfg.model_dump(), "decision_metric": metric,
                                            **({"calibration": calibrated} if cfg.method != "dynamic" else {})})
    write_report(controls, metric, report, plot)
    return results


def _calibration(train: Split, cfg: QuantizeParams) -> tuple[np.ndarray, dict[str, Any]]:
    """The calibration images (a seeded, class-stratified training sample) and their description."""
    if len(train) < cfg.calibration_batch_size:
        raise CompressionError(
            f"quantize.calibration_batch_size = {cfg.calibration_batch_size} exceeds the {len(train)} training images"
        )
    indices = calibration_sample(train.labels, cfg.calibration_batches * cfg.calibration_batch_size, cfg.seed)
    calibrated = {"images": len(indices), "sampling": "class-stratified" if train.labels.ndim == 1 else "uniform",
                  "seed": cfg.seed}
    if train.labels.ndim == 1:
        calibrated["per_class"] = np.bincount(train.labels[indices], minlength=int(train.labels.max()) + 1).tolist()
    return indices, calibrated


def safe_on(attempt: Attempt) -> str:
    """Which CPUs the int8 file keeps its float source's validation scores on, in words."""
    check = attempt.check
    if not check.get("avx2_checked"):
        return "this CPU only (not emulated for CPUs without VNNI: dynamic int8, or an operator it lacks)"
    if check["native_pass"] and check["avx2_pass"]:
        return "CPUs with and without VNNI (AVX2 checked by exact emulation)"
    if check["native_pass"]:
        return "CPUs with VNNI or AMX only: on AVX2 its u8s8 products saturate"
    return "none: it loses more than quantize.max_accuracy_drop on this CPU"


def _write_cards(
    tmp: Path, source: str, model: torch.nn.Module, card: dict[str, Any], exporter: str, control: Control,
    ranges: dict[str, tuple[float, float]] | None, settings: dict[str, Any],
) -> dict[str, Any]:
    """The fp32 and int8 cards beside the two files, with the integer-kernel proof; one line each."""
    fp32, int8 = tmp / f"{source}.fp32.onnx", tmp / f"{source}.int8.onnx"
    proof = integer_mac_share(fp32, int8, tmp / f"{source}.int8.optimized.onnx")
    chosen = control.chosen
    result = {"fp32_mb": fp32.stat().st_size / 2**20, "int8_mb": int8.stat().st_size / 2**20,
              "ops": integer_ops(int8), "integer_mac_share": proof.share, "float_layers": proof.float_layers,
              "kept_float": chosen.kept_float, "val_drop": chosen.check["int8_val_drop"],
              "int8_format": chosen.format, "reduce_range": FORMATS[chosen.format], "avx2_val": chosen.avx2_val,
              "avx2_saturated": chosen.saturated, "safe_on": safe_on(chosen),
              **({"qat_ranges_in_file": len(ranges)} if ranges is not None else {})}
    # The fp32 ONNX stays beside the int8 one: evaluate times both in ONNX Runtime, so
    # the int8 gain is measured apart from the runtime's own gain over eager PyTorch.
    shared = {
        **{k: card[k] for k in ("timm_name", "num_classes", "class_names", "input_size", "mean", "std")},
        "task": card.get("task", "multiclass"), "source": source, "exporter": exporter,
        # counted here, so evaluate measures an ONNX variant's memory without its PyTorch source
        "parameters": count_parameters(model), "macs": count_macs(model, card["input_size"]),
    }
    write_json(tmp / f"{source}.fp32.json", {**shared, "role": onnx_variant(source)})
    write_json(tmp / f"{source}.int8.json", {**shared, "role": int8_variant(source), **settings, **result})
    if control.note:
        print(f"warning: {source}: {control.note}")
    print(f"{source}: int8 ONNX {result['int8_mb']:.2f} MB (fp32 {result['fp32_mb']:.2f} MB), {proof.share:.1%} of"
          f" conv/matmul MACs in integer kernels, {len(chosen.kept_float)} layer(s) kept in float, validation"
          f" {chosen.check['int8_val_drop_metric']} {-result['val_drop']:+.4f} against float")
    return result
