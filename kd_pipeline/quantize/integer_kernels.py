"""Proof that an int8 model runs in integer kernels, not just that its file holds int8 numbers.

A static QDQ file keeps float Conv/Gemm nodes wrapped in QuantizeLinear/DequantizeLinear pairs;
ONNX Runtime fuses them into integer kernels (QLinearConv, QGemm, ...) only when it optimizes the
graph for the session. So the int8 model is loaded with graph optimization on, the optimized graph
is saved (`SessionOptions.optimized_model_filepath`), and each convolution or matrix multiply of
the float model is looked up there: its MACs count as integer when an integer operator consumes
its (quantized) weights.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

# Integer operators and the input position of their weights.
INTEGER_WEIGHT_INPUT = {
    "QLinearConv": 3, "QLinearMatMul": 3, "QGemm": 3, "ConvInteger": 1, "MatMulInteger": 1,
    "DynamicQuantizeMatMul": 1, "MatMulIntegerToFloat": 1,
}
QUANTIZED_SUFFIX = "_quantized"  # onnxruntime.quantization's name for a quantized initializer


@dataclass(frozen=True)
class IntegerShare:
    share: float  # integer MACs / all conv and matmul MACs of the float model, at batch 1
    integer_macs: int
    total_macs: int
    float_layers: list[str]  # float-model nodes left in float, largest first


def weight_macs(fp32_path: Path) -> dict[str, tuple[str, int]]:
    """Weight initializer → (node name, MACs at batch 1) for every Conv, Gemm and MatMul."""
    import onnx

    graph = onnx.shape_inference.infer_shapes(onnx.load(str(fp32_path))).graph
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in [*graph.value_info, *graph.output]}
    weights = {init.name: list(init.dims) for init in graph.initializer}
    found = {}
    for node in graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul") or len(node.input) < 2 or node.input[1] not in weights:
            continue
        macs = math.prod(weights[node.input[1]])
        if node.op_type == "Conv":
            macs *= math.prod(max(d, 1) for d in shapes.get(node.output[0], [])[2:])
        found[node.input[1]] = (node.name or node.output[0], macs)
    return found


def optimized_graph(int8_path: Path, out: Path) -> None:
    """The graph ONNX Runtime runs for this file (extended optimizations, CPU provider)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(out)
    options.intra_op_num_threads = 1
    ort.InferenceSession(str(int8_path), options, providers=["CPUExecutionProvider"])


def integer_mac_share(fp32_path: Path, int8_path: Path, optimized: Path | None = None) -> IntegerShare:
    """Share of the float model's conv/matmul MACs that ONNX Runtime runs in integer operators."""
    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        target = optimized or Path(tmp) / "optimized.onnx"
        optimized_graph(int8_path, target)
        graph = onnx.load(str(target)).graph
    integer_weights = {
        node.input[position].removesuffix(QUANTIZED_SUFFIX)
        for node in graph.node
        if (position := INTEGER_WEIGHT_INPUT.get(node.op_type)) is not None and len(node.input) > position
    }
    macs = weight_macs(fp32_path)
    total = sum(m for _, m in macs.values())
    integer = sum(m for weight, (_, m) in macs.items() if weight in integer_weights)
    left = sorted((item for weight, item in macs.items() if weight not in integer_weights), key=lambda x: -x[1])
    return IntegerShare(integer / total if total else 0.0, integer, total, [name for name, _ in left])
