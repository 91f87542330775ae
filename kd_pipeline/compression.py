"""Compression that shows up in bytes and milliseconds: channel pruning and int8 quantization.

- Structured pruning removes whole channels with Torch-Pruning's dependency graph, so the
  result is a smaller dense network (fewer parameters and MACs, faster on any CPU). For timm
  ViTs it narrows the embedding, every attention head and the MLP hidden layer.
- Unstructured pruning zeroes single weights; it is reported with its sparsity and does
  not make dense inference faster (the tensors keep their shapes).
- Quantization is ONNX Runtime post-training int8 (static QDQ with calibration on training
  images, or dynamic), which runs integer kernels on x86 CPUs; the fp32 ONNX it starts from is
  kept, so int8 is compared with fp32 in the same runtime.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from timm.layers import Attention
from torch import nn
from torch.nn.utils import prune as torch_prune

from kd_pipeline import qat
from kd_pipeline.chain import DEFAULT_LAYOUT, Layout, load_teachers, stage_live, teachers_of
from kd_pipeline.data import Normalizer, Split, load_meta, load_split, normalize_numpy
from kd_pipeline.distributed import Ranks, session
from kd_pipeline.errors import CheckpointError, CompressionError
from kd_pipeline.evaluation import classification_metrics, count_macs, decide, predict_logits
from kd_pipeline.files import atomic_dir, write_json
from kd_pipeline.integer_kernels import integer_mac_share
from kd_pipeline.models import count_parameters, load_checkpoint, move_to_device, save_checkpoint, sync_attention
from kd_pipeline.params import Params, PruneParams, QuantizeParams, fingerprint
from kd_pipeline.paths import QAT_ROLE
from kd_pipeline.training import ResumeFile, fit, resolve_device, seed_everything


def _importance(name: str) -> Any:
    import torch_pruning as tp

    return {
        "l1": lambda: tp.importance.MagnitudeImportance(p=1),
        "l2": lambda: tp.importance.MagnitudeImportance(p=2),
        "lamp": lambda: tp.importance.LAMPImportance(p=2),
        "fpgm": lambda: tp.importance.FPGMImportance(),
        "random": lambda: tp.importance.RandomImportance(),
    }[name]()


def layers_to_keep(model: nn.Module, names: list[str]) -> list[nn.Module]:
    """The classifier plus the named layers; an unknown name is an error that lists real ones."""
    modules = dict(model.named_modules())
    unknown = [n for n in names if n not in modules]
    if unknown:
        examples = ", ".join(n for n, m in modules.items() if isinstance(m, nn.Conv2d))
        raise CompressionError(
            f"prune.keep_layers: no layer named {', '.join(unknown)}; layers with channels: {examples[:300]}"
        )
    return [model.get_classifier(), *(modules[n] for n in names)]


def prune_channels(model: nn.Module, input_size: list[int], cfg: PruneParams) -> nn.Module:
    """Remove `cfg.ratio` of the channels (dependency-aware), in `cfg.iterative_steps` steps."""
    import torch_pruning as tp

    example = torch.zeros(1, *input_size)
    # Vision transformers: Torch-Pruning narrows each head of a qkv projection alike (heads kept),
    # and the attention blocks are told their new head size after every step.
    heads = {m.qkv: m.num_heads for m in model.modules() if isinstance(m, Attention)}
    try:
        pruner = tp.pruner.MetaPruner(
            model.eval(),
            example,
            importance=_importance(cfg.importance),
            global_pruning=cfg.global_pruning,
            pruning_ratio=cfg.ratio,
            iterative_steps=cfg.iterative_steps,
            ignored_layers=layers_to_keep(model, cfg.keep_layers),
            round_to=cfg.round_to or None,
            num_heads=heads,
            prune_head_dims=bool(heads),
            prune_num_heads=False,
        )
        for _ in range(cfg.iterative_steps):
            pruner.step()
            sync_attention(model)
        model(example)  # the pruned graph must still run
    except CompressionError:
        raise
    except Exception as err:  # Torch-Pruning raises many kinds on graphs it cannot trace
        raise CompressionError(
            f"Torch-Pruning cannot prune {type(model).__name__}: {type(err).__name__}: {str(err).splitlines()[0]}"
            " (try prune.method: unstructured, or list the offending layers in prune.keep_layers)"
        ) from None
    return model


def prune_weights(model: nn.Module, cfg: PruneParams) -> nn.Module:
    """Zero the smallest weights of every conv and linear layer (global or per layer), masks kept."""
    targets = [(m, "weight") for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    if cfg.global_pruning:
        torch_prune.global_unstructured(targets, pruning_method=torch_prune.L1Unstructured, amount=cfg.ratio)
    else:
        for module, name in targets:
            torch_prune.l1_unstructured(module, name, amount=cfg.ratio)
    return model


def make_pruning_permanent(model: nn.Module) -> nn.Module:
    """Fold unstructured masks into the weights so the state dict has plain `weight` tensors."""
    for module in model.modules():
        if torch_prune.is_pruned(module) and hasattr(module, "weight_mask"):
            torch_prune.remove(module, "weight")
    return model


def sparsity(model: nn.Module) -> float:
    """Fraction of exactly-zero weights over conv and linear layers."""
    total = zeros = 0
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            total += module.weight.numel()
            zeros += int((module.weight == 0).sum())
    return zeros / max(total, 1)


def export_onnx(model: nn.Module, input_size: list[int], path: str | Path) -> str:
    """fp32 ONNX with a dynamic batch axis; returns the exporter that made it.

    PyTorch's maintained exporter (`dynamo=True`: torch.export, then onnxscript) handles the
    timm CNNs and ViTs, pruned or not, and gives the same bytes run after run. The TorchScript
    exporter stays only as the fallback for a model torch.export cannot capture (Python control
    flow that depends on tensor values); the card records which one ran.
    """
    model = model.eval().to("cpu")
    example = torch.zeros(1, *input_size)
    names = {"input_names": ["input"], "output_names": ["logits"]}
    try:
        torch.onnx.export(
            model, (example,), str(path), **names, dynamic_shapes=({0: torch.export.Dim("batch")},),
            dynamo=True, opset_version=18, optimize=True, verbose=False, external_data=False,  # one file
        )
        return "dynamo"
    except Exception as dynamo_error:  # noqa: BLE001 (any capture failure falls back, and is reported)
        reason = f"{type(dynamo_error).__name__}: {str(dynamo_error).strip().splitlines()[0][:200]}"
        Path(path).unlink(missing_ok=True)
    try:
        torch.onnx.export(
            model, (example,), str(path), **names, dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=17, dynamo=False,
        )
    except Exception as err:
        raise CheckpointError(
            f"ONNX export of {type(model).__name__} failed with both exporters: dynamo ({reason});"
            f" torchscript ({str(err).splitlines()[0]})"
        ) from None
    print(f"{type(model).__name__}: exported with the TorchScript exporter; torch.export could not capture it"
          f" ({reason})")
    return "torchscript"


def calibration_sample(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Sorted indices of `count` training images, class-stratified and seeded.

    Prepared splits of an image folder are stored class by class, so the first N images can all
    be one class, and int8 ranges calibrated on them misfit the rest. Multi-label data (N×L) and
    classes too small to stratify fall back to a seeded uniform sample.
    """
    from sklearn.model_selection import train_test_split

    everything = np.arange(len(labels))
    if count >= len(labels):
        return everything
    stratify = labels if labels.ndim == 1 else None
    try:
        chosen, _ = train_test_split(everything, train_size=count, stratify=stratify, random_state=seed)
    except ValueError:  # a class with one image, or fewer images asked than classes
        chosen, _ = train_test_split(everything, train_size=count, random_state=seed)
    return np.sort(chosen)


class CalibrationImages:
    """ONNX Runtime CalibrationDataReader over chosen training images, in batches."""

    def __init__(self, split: Split, indices: np.ndarray, mean: list[float], std: list[float], batch_size: int):
        self._batches: Iterator[dict[str, np.ndarray]] = (
            {"input": normalize_numpy(np.array(split.images[indices[i : i + batch_size]]), mean, std)}
            for i in range(0, len(indices), batch_size)
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def quantize_onnx(
    fp32_path: Path, int8_path: Path, cfg: QuantizeParams, calibration: CalibrationImages | None
) -> None:
    """int8 ONNX: static QDQ (u8 activations, s8 weights, calibrated) or dynamic."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = fp32_path.with_suffix(".prep.onnx")
    quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
    if cfg.method == "dynamic":
        quantize_dynamic(str(prepared), str(int8_path), per_channel=cfg.per_channel, weight_type=QuantType.QInt8)
    else:
        if calibration is None:
            raise CompressionError("quantize.method static needs calibration images")

        class Reader(CalibrationDataReader):
            def get_next(self) -> dict[str, np.ndarray] | None:
                return calibration.get_next()

        quantize_static(
            str(prepared), str(int8_path), Reader(), quant_format=QuantFormat.QDQ,
            per_channel=cfg.per_channel, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        )
    prepared.unlink(missing_ok=True)


def integer_ops(onnx_path: str | Path) -> list[str]:
    """Operator types in the file that carry int8 data (proof that it is not a float model)."""
    import onnx

    graph = onnx.load(str(onnx_path)).graph
    integer = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
               "MatMulInteger", "DynamicQuantizeLinear"}
    return sorted({node.op_type for node in graph.node if node.op_type in integer})


def prune_student(params: Params, layout: Layout = DEFAULT_LAYOUT) -> dict[str, Any]:
    """Prune the student, fine-tune it by distillation from the assistant (and the teacher with
    `kd.learn_from: all_above`), write models/pruned."""
    student_train = params.train_for("pruned")  # the student's budget, with its own train keys
    with session(resolve_device(student_train.device)) as (ranks, device):
        return _prune_student(params, layout, ranks, device)


def _prune_student(params: Params, layout: Layout, ranks: Ranks, device: torch.device) -> dict[str, Any]:
    cfg = params.prune
    meta = load_meta(layout.prepared)
    train, val, test = (load_split(layout.prepared, s) for s in ("train", "val", "test"))
    student_train = params.train_for("pruned")
    seed_everything(student_train.seed, student_train.num_threads)
    model, card = load_checkpoint(layout.model_dir("student"), num_classes=meta.num_classes)
    before = {"parameters": count_parameters(model), "macs": count_macs(model, card["input_size"])}
    if cfg.method == "structured":
        prune_channels(model, card["input_size"], cfg)
    else:
        prune_weights(model, cfg)
    teacher_roles = teachers_of("pruned", params.kd)
    teacher, _ = load_teachers(teacher_roles, params, layout, meta, device)
    model = move_to_device(model, device)
    normalizer = Normalizer(card["mean"], card["std"], device, channels_last=device.type == "cuda")
    finetune = student_train.model_copy(
        update={"epochs": max(cfg.epochs, 1), "lr": cfg.lr, "scheduler": "cosine"}
    )
    with stage_live(layout.metrics / "pruned", ranks) as live:
        params_hash = fingerprint(card["params_hash"], cfg, params.kd, finetune)
        resume = ResumeFile(layout.resume / "pruned" / "state.pt", params_hash)  # a killed fine-tune resumes
        if cfg.epochs > 0:
            fit(model, train, val, finetune, normalizer, meta.num_classes,
                teacher=teacher, kd=params.kd, live=live, resume=resume, name="pruned", ranks=ranks)
        if live is None:
            return {}  # only the first process measures and writes
        live.log_params({f"prune.{k}": v for k, v in cfg.model_dump().items() if k != "keep_layers"})
        model = make_pruning_permanent(model.to("cpu"))
        cpu = Normalizer(card["mean"], card["std"], torch.device("cpu"), False)
        test_logits = predict_logits(model, test, cpu).numpy()
        test_metrics = classification_metrics(test.labels, decide(test_logits, test.multilabel), meta.num_classes)
        after = {"parameters": count_parameters(model), "macs": count_macs(model, card["input_size"])}
        summary = {
            "sparsity": sparsity(model),
            "parameters_before": before["parameters"], "parameters_after": after["parameters"],
            "macs_before": before["macs"], "macs_after": after["macs"],
        }
        for key, value in {**summary, **{f"test/{k}": v for k, v in test_metrics.items()}}.items():
            live.log_metric(key, value, plot=False)
    card = {
        **card,
        "role": "pruned",
        "teacher": "+".join(teacher_roles),
        "channel_pruned": cfg.method == "structured",
        "compression": {"prune": cfg.model_dump(), **summary},
        "num_parameters": after["parameters"],
        "test_metrics": test_metrics,
        "params_hash": fingerprint(card["params_hash"], cfg, params.kd),
    }
    save_checkpoint(model, layout.model_dir("pruned"), card)
    resume.clear()
    return {**summary, **test_metrics}


def qat_student(params: Params, layout: Layout, out: Path) -> dict[str, float]:
    """The pruned student fine-tuned for `quantize.qat_epochs` with the int8 rounding it will be
    deployed with (kd_pipeline.qat), distilled like the prune fine-tune, saved to `out` as a plain
    checkpoint (role pruned_qat). One process: the quantize stage does not run under torchrun."""
    cfg = params.quantize
    meta = load_meta(layout.prepared)
    train, val, test = (load_split(layout.prepared, s) for s in ("train", "val", "test"))
    budget = params.train_for("pruned")
    seed_everything(budget.seed, budget.num_threads)
    device = resolve_device(budget.device)
    model, card = load_checkpoint(layout.model_dir("pruned"), num_classes=meta.num_classes)
    teacher_roles = teachers_of("pruned", params.kd)
    teacher, _ = load_teachers(teacher_roles, params, layout, meta, device)
    model = qat.prepare(move_to_device(model, device))
    normalizer = Normalizer(card["mean"], card["std"], device, channels_last=device.type == "cuda")
    finetune = budget.model_copy(update={"epochs": cfg.qat_epochs, "lr": cfg.qat_lr, "scheduler": "cosine",
                                         "nproc_per_node": 1, "nnodes": 1})
    params_hash = fingerprint(card["params_hash"], cfg, params.kd, finetune)
    resume = ResumeFile(layout.resume / QAT_ROLE / "state.pt", params_hash)  # a killed fine-tune resumes
    result = fit(model, train, val, finetune, normalizer, meta.num_classes,
                 teacher=teacher, kd=params.kd, resume=resume, name=QAT_ROLE)
    layers = len(qat.activation_ranges(model))
    model = qat.finalize(model.to("cpu")).eval()
    cpu = Normalizer(card["mean"], card["std"], torch.device("cpu"), False)
    test_metrics = classification_metrics(
        test.labels, decide(predict_logits(model, test, cpu).numpy(), test.multilabel), meta.num_classes
    )
    save_checkpoint(model, out, {
        **card, "role": QAT_ROLE, "teacher": "+".join(teacher_roles),
        "qat": {"epochs": cfg.qat_epochs, "lr": cfg.qat_lr, "best_epoch": result.best_epoch, "layers": layers,
                "weights": "per output channel, symmetric int8, BatchNorm folded",
                "activations": "per tensor, uint8, EMA range while training; calibrated again for ONNX Runtime"},
        "val_metrics": {k.removeprefix("val/"): v for k, v in result.best.items() if k.startswith("val/")},
        "test_metrics": test_metrics,
        "params_hash": params_hash,
    })
    resume.clear()
    print(f"{QAT_ROLE}: {cfg.qat_epochs} QAT epochs, {layers} layers with int8 rounding, test accuracy"
          f" {test_metrics['accuracy']:.4f} (float, weights on the int8 grid)")
    return test_metrics


def reference_onnx(layout: Layout, out: Path) -> None:
    """The teacher as fp32 ONNX (teacher.fp32.onnx + card): speed-ups of ONNX variants are measured
    against it, in the same runtime, and evaluate checks it against the PyTorch teacher."""
    model, card = load_checkpoint(layout.model_dir("teacher"))
    exporter = export_onnx(model, card["input_size"], out / "teacher.fp32.onnx")
    write_json(out / "teacher.fp32.json", {
        "exporter": exporter,
        **{k: card[k] for k in ("timm_name", "num_classes", "class_names", "input_size", "mean", "std")},
        "task": card.get("task", "multiclass"), "source": "teacher", "role": "teacher_onnx",
        "parameters": count_parameters(model), "macs": count_macs(model, card["input_size"]),
    })


def quantize_variants(params: Params, sources: tuple[str, ...], layout: Layout = DEFAULT_LAYOUT) -> dict[str, Any]:
    """int8 ONNX of each source checkpoint into models/quantized/<source>.int8.onnx (+ .json card),
    beside the fp32 ONNX it was made from (<source>.fp32.onnx)."""
    cfg = params.quantize
    train = load_split(layout.prepared, "train")
    if len(train) < cfg.calibration_batch_size:
        raise CompressionError(
            f"quantize.calibration_batch_size = {cfg.calibration_batch_size} exceeds the {len(train)} training images"
        )
    indices = calibration_sample(train.labels, cfg.calibration_batches * cfg.calibration_batch_size, cfg.seed)
    calibrated = {"images": len(indices), "sampling": "class-stratified" if train.labels.ndim == 1 else "uniform",
                  "seed": cfg.seed}
    if train.labels.ndim == 1:
        calibrated["per_class"] = np.bincount(train.labels[indices], minlength=int(train.labels.max()) + 1).tolist()
    results = {}
    with atomic_dir(layout.models / "quantized") as tmp:
        reference_onnx(layout, tmp)
        if cfg.method == "qat":
            qat_student(params, layout, tmp / QAT_ROLE)
            sources = (*sources, QAT_ROLE)
        for source in sources:
            model, card = load_checkpoint(tmp / source if source == QAT_ROLE else layout.model_dir(source))
            fp32, int8 = tmp / f"{source}.fp32.onnx", tmp / f"{source}.int8.onnx"
            exporter = export_onnx(model, card["input_size"], fp32)
            calibration = CalibrationImages(train, indices, card["mean"], card["std"], cfg.calibration_batch_size)
            quantize_onnx(fp32, int8, cfg, calibration)
            proof = integer_mac_share(fp32, int8, tmp / f"{source}.int8.optimized.onnx")
            if proof.share < cfg.min_integer_mac_share:
                raise CompressionError(
                    f"{source}: ONNX Runtime runs {proof.share:.1%} of the int8 model's conv/matmul MACs in integer"
                    f" kernels, below quantize.min_integer_mac_share = {cfg.min_integer_mac_share:g}; left in float:"
                    f" {', '.join(proof.float_layers[:5])}{' ...' if len(proof.float_layers) > 5 else ''}"
                )
            result = {"fp32_mb": fp32.stat().st_size / 2**20, "int8_mb": int8.stat().st_size / 2**20,
                      "ops": integer_ops(int8), "integer_mac_share": proof.share, "float_layers": proof.float_layers}
            # The fp32 ONNX stays beside the int8 one: evaluate times both in ONNX Runtime, so
            # the int8 gain is measured apart from the runtime's own gain over eager PyTorch.
            shared = {
                **{k: card[k] for k in ("timm_name", "num_classes", "class_names", "input_size", "mean", "std")},
                "task": card.get("task", "multiclass"), "source": source, "exporter": exporter,
                # counted here, so evaluate measures an ONNX variant's memory without its PyTorch source
                "parameters": count_parameters(model), "macs": count_macs(model, card["input_size"]),
            }
            write_json(tmp / f"{source}.fp32.json", {**shared, "role": f"{source}_onnx"})
            write_json(tmp / f"{source}.int8.json", {
                **shared, "role": f"{source}_int8", "quantize": cfg.model_dump(), **result,
                **({"calibration": calibrated} if cfg.method != "dynamic" else {}),
            })
            results[source] = result
            print(f"{source}: int8 ONNX {result['int8_mb']:.2f} MB (fp32 {result['fp32_mb']:.2f} MB),"
                  f" {proof.share:.1%} of conv/matmul MACs in integer kernels")
    return results
