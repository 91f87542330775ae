"""int8 that runs integer kernels: ONNX Runtime post-training quantization, its building blocks.

Static QDQ with calibration on training images, or dynamic; ONNX Runtime runs integer kernels
on x86 CPUs. The stage that uses them is kd_pipeline.quantize.int8_variants; which layers stay in float
is kd_pipeline.quantize.mixed_precision's decision.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from kd_pipeline.core.data import Split, normalize_numpy
from kd_pipeline.core.errors import CompressionError
from kd_pipeline.core.params import QuantizeParams


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


def prepare_onnx(fp32_path: Path) -> Path:
    """ONNX Runtime's pre-processing (shape inference, graph clean-up) before quantization; the
    node names of the returned file are the ones `nodes_to_exclude` takes."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = fp32_path.with_suffix(".prep.onnx")
    quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
    return prepared


def quantize_prepared(
    prepared: Path, int8_path: Path, cfg: QuantizeParams, calibration: CalibrationImages | None,
    exclude: list[str] | tuple[str, ...] = (), ranges: dict[str, tuple[float, float]] | None = None,
    reduce_range: bool = False,
) -> None:
    """int8 ONNX: static QDQ (u8 activations, s8 weights, calibrated) or dynamic; the nodes in
    `exclude` stay in float (mixed precision); tensors in `ranges` get that (min, max) instead of
    a calibrated one (the ranges quantization-aware training learned); `reduce_range`: weights in
    7 bits, which AVX2's u8s8 kernels cannot saturate (kd_pipeline.quantize.avx2_arithmetic)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    if cfg.method == "dynamic":
        quantize_dynamic(str(prepared), str(int8_path), per_channel=cfg.per_channel, weight_type=QuantType.QInt8,
                         nodes_to_exclude=list(exclude), reduce_range=reduce_range)
        return
    if calibration is None:
        raise CompressionError("quantize.method static needs calibration images")

    class Reader(CalibrationDataReader):
        def get_next(self) -> dict[str, np.ndarray] | None:
            return calibration.get_next()

    overrides = {name: [{"rmin": np.array(low, np.float32), "rmax": np.array(high, np.float32)}]
                 for name, (low, high) in (ranges or {}).items()}
    quantize_static(
        str(prepared), str(int8_path), Reader(), quant_format=QuantFormat.QDQ, per_channel=cfg.per_channel,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=list(exclude),
        reduce_range=reduce_range,
        extra_options={"TensorQuantOverrides": overrides} if overrides else None,
    )


def learned_ranges(prepared: Path, layer_ranges: dict[str, list[float]]) -> dict[str, tuple[float, float]]:
    """The input tensor of each conv / matmul whose layer learned a range in quantization-aware
    training (`layer_ranges`: module name → [low, high]), matched through the layer's weight name,
    which the ONNX export keeps. A tensor several layers read gets the union of their ranges."""
    import onnx

    found: dict[str, tuple[float, float]] = {}
    for node in onnx.load(str(prepared)).graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul") or len(node.input) < 2:
            continue
        learned = layer_ranges.get(node.input[1].removesuffix(".weight"))
        if learned is not None:
            low, high = found.get(node.input[0], (learned[0], learned[1]))
            found[node.input[0]] = (min(low, learned[0]), max(high, learned[1]))
    return found


def quantize_onnx(
    fp32_path: Path, int8_path: Path, cfg: QuantizeParams, calibration: CalibrationImages | None
) -> None:
    """Every conv and matmul of `fp32_path` in int8 (see quantize_prepared)."""
    prepared = prepare_onnx(fp32_path)
    try:
        quantize_prepared(prepared, int8_path, cfg, calibration)
    finally:
        prepared.unlink(missing_ok=True)


def integer_ops(onnx_path: str | Path) -> list[str]:
    """Operator types in the file that carry int8 data (proof that it is not a float model)."""
    import onnx

    graph = onnx.load(str(onnx_path)).graph
    integer = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
               "MatMulInteger", "DynamicQuantizeLinear"}
    return sorted({node.op_type for node in graph.node if node.op_type in integer})
