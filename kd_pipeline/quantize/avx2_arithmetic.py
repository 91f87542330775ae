"""int8 as a CPU without VNNI computes it, on any CPU.

ONNX Runtime's u8s8 kernels (u8 activations × s8 weights, the format quantize writes by default)
multiply on AVX2, and on AVX-512 without VNNI, with VPMADDUBSW: two adjacent u8×s8 products are
added into a signed 16-bit lane that saturates at ±32,767, then VPMADDWD widens the lanes to int32.
VNNI (VPDPBUSD) and AMX accumulate in int32 and never saturate. So one int8 file gives different
logits on the two kinds of CPU, and a model checked on a VNNI/AMX machine can lose points on the
AVX2 laptop or server it ships to; ONNX Runtime's quantization guide names the cure (weights in
7 bits, `reduce_range`, or the U8U8 format), not the symptom. Rounding float activations in NumPy
(mixed_precision.layer_errors) cannot see it, whatever the CPU.

`run_int8` executes a static QDQ file in PyTorch with the integer arithmetic the file specifies:
each conv and matmul whose activation and weights are both quantized accumulates u8×s8 products in
float64 (exact for these integers), and with `saturate` clamps every pair sum to int16 first, as
VPMADDUBSW does. Which products form a pair was read from MLAS's kernels and checked against
ONNX Runtime on an AVX2-only CPU (benchmarks/avx2_pairing.py, results/pneumoniamnist-avx2-pairing):
a conv pairs adjacent elements of its im2col row in (ky, kx, c) order (adjacent input channels at
one tap; across taps when the channel count is odd), a matmul adjacent elements of the reduced
dimension; depthwise convs widen to int16 before multiplying and never saturate. Padding holds
the activation's zero point, as MLAS pads. With `saturate=False` the same code gives what
VNNI/AMX compute. tests/test_avx2_arithmetic.py checks the arithmetic of the CPU it runs on
against ONNX Runtime there, whichever kind it is.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from kd_pipeline.core.data import normalize_numpy
from kd_pipeline.core.errors import CompressionError

INT16_MAX, INT16_MIN = 32767, -32768
UINT8, INT8 = 2, 3  # onnx.TensorProto data types of a zero point
PAIR_CHUNK = 1 << 24  # pair sums held at once (float32, about 64 MB)


@dataclass
class Quantized:
    """The integer tensor behind a DequantizeLinear: values (float64), scale, zero point, type."""

    q: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor
    dtype: int


@dataclass
class Saturation:
    """Per integer layer: u8×s8 pair sums computed, and how many left int16 (were clamped)."""

    pairs: dict[str, int] = field(default_factory=dict)
    clamped: dict[str, int] = field(default_factory=dict)

    def add(self, node: str, pairs: int, clamped: int) -> None:
        self.pairs[node] = self.pairs.get(node, 0) + pairs
        self.clamped[node] = self.clamped.get(node, 0) + clamped

    def rates(self) -> dict[str, float]:
        return {node: self.clamped[node] / max(self.pairs[node], 1) for node in self.pairs}


def _per_axis(value: torch.Tensor, axis: int, ndim: int) -> torch.Tensor:
    """A per-channel scale or zero point shaped to broadcast along `axis` of an ndim tensor."""
    if value.ndim == 0:
        return value
    shape = [1] * ndim
    shape[axis % ndim] = -1
    return value.reshape(shape)


def _pair_excess(pair_x: torch.Tensor, pair_w: torch.Tensor, outputs: int) -> tuple[torch.Tensor, int]:
    """Σ over pairs of (pair sum − its int16-saturated value) per output, and how many clamped.

    pair_x: (N, P, 2, L) u8 values, pair_w: (O, P, 2) s8 weights. Only the pairs that can leave
    int16 with this batch at all (|w0|·max x0 + |w1|·max x1 > 32,767; a fraction of a percent past
    the first layer) are computed, so the check costs about what the convolution does."""
    n, _, _, length = pair_x.shape
    out = torch.zeros(n, outputs, length, dtype=torch.float64)
    largest = pair_x.amax(dim=(0, 3)) if pair_x.numel() else torch.zeros(pair_w.shape[1:])  # (P, 2)
    reach = (pair_w.abs() * largest[None]).sum(-1)  # the largest pair sum this batch can make
    o_idx, p_idx = torch.nonzero(reach > INT16_MAX, as_tuple=True)
    clamped = 0
    step = max(1, PAIR_CHUNK // max(n * length, 1))
    for start in range(0, len(o_idx), step):
        o, p = o_idx[start : start + step], p_idx[start : start + step]
        xs = pair_x[:, p]  # (N, c, 2, L)
        ws = pair_w[o, p]  # (c, 2)
        total = xs[:, :, 0] * ws[None, :, 0, None] + xs[:, :, 1] * ws[None, :, 1, None]
        excess = (total - INT16_MAX).clamp(min=0) - (INT16_MIN - total).clamp(min=0)
        clamped += int(torch.count_nonzero(excess))
        out.index_add_(1, o, excess.double())
    return out, clamped


def conv_excess(
    x: torch.Tensor, w: torch.Tensor, stride: list[int], dilation: list[int]
) -> tuple[torch.Tensor, int, int]:
    """For u8 values `x` (padded NCHW) and s8 `w` (O, C, kh, kw), one group: what saturation takes
    off each output (N, O, H', W'), the pair sums computed and the number clamped.

    Pairs: adjacent elements of the im2col row in (ky, kx, c) order, zero-padded at its end, as
    MLAS reads an NHWC patch: adjacent input channels at one tap, and with an odd channel count
    (the 3-channel first conv) the last channel of one tap with the first of the next. Checked
    against ONNX Runtime on an AVX2-only CPU (results/pneumoniamnist-avx2-pairing); pairing per
    tap, with a zero pad at every tap, missed decisions there. Only the pairs whose weights can
    leave int16 with this batch's channel maxima are computed, as slices of `x`."""
    n, c = x.shape[:2]
    o, _, kh, kw = w.shape
    out_h = (x.shape[2] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    out_w = (x.shape[3] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    row: list[tuple[int, int, int] | None] = [(ky, kx, ch) for ky in range(kh) for kx in range(kw) for ch in range(c)]
    row_w = w.permute(0, 2, 3, 1).reshape(o, -1)  # (O, K) in the row's order
    row_max = x.amax(dim=(0, 2, 3))[torch.tensor([element[2] for element in row])]  # (K,)
    if len(row) % 2:
        row_w, row_max = F.pad(row_w, (0, 1)), F.pad(row_max, (0, 1))
        row.append(None)
    pair_w = row_w.reshape(o, -1, 2)
    reach = (pair_w.abs() * row_max.reshape(1, -1, 2)).sum(-1)  # (O, P): the largest pair sum this batch can make

    def tap(element: tuple[int, int, int]) -> torch.Tensor:
        ky, kx, ch = element
        top, left = ky * dilation[0], kx * dilation[1]
        return x[:, ch, top : top + stride[0] * (out_h - 1) + 1 : stride[0],
                 left : left + stride[1] * (out_w - 1) + 1 : stride[1]]  # (N, H', W')

    excess = torch.zeros(n, o, out_h, out_w, dtype=torch.float64)
    clamped = 0
    for p in torch.nonzero((reach > INT16_MAX).any(0)).flatten().tolist():
        outs = torch.nonzero(reach[:, p] > INT16_MAX).flatten()
        first, second = row[2 * p], row[2 * p + 1]
        ws = pair_w[outs, p]  # (k, 2)
        total = tap(first)[:, None] * ws[None, :, 0, None, None]
        if second is not None:
            total = total + tap(second)[:, None] * ws[None, :, 1, None, None]
        part = (total - INT16_MAX).clamp(min=0) - (INT16_MIN - total).clamp(min=0)
        clamped += int(torch.count_nonzero(part))
        excess.index_add_(1, outs, part.double())
    return excess, n * o * pair_w.shape[1] * out_h * out_w, clamped


def matmul_excess(x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """For u8 values `x` (N, K) and s8 `w` (O, K): what saturation takes off each output (N, O).
    Pairs: adjacent elements of K."""
    if x.shape[1] % 2:
        x, w = F.pad(x, (0, 1)), F.pad(w, (0, 1))
    pair_w = w.float().reshape(w.shape[0], -1, 2)
    pair_x = x.float().reshape(x.shape[0], -1, 2, 1)
    excess, clamped = _pair_excess(pair_x, pair_w, w.shape[0])
    return excess[..., 0], x.shape[0] * pair_w[..., 0].numel(), clamped


def int_conv(x: Quantized, w: Quantized, attrs: dict[str, Any], saturate: bool) -> tuple[torch.Tensor, int, int]:
    """Σ (x − zx)(w − zw) of a quantized conv, exactly; with `saturate`, minus what VPMADDUBSW's
    int16 pairs lose (u8 activations × s8 weights only; depthwise convs never saturate)."""
    top, left, bottom, right = _pads(attrs)
    padded = F.pad(x.q, (left, right, top, bottom), value=float(x.zero_point))  # MLAS pads with the zero point
    stride, dilation = list(attrs.get("strides", [1, 1])), list(attrs.get("dilations", [1, 1]))
    groups = int(attrs.get("group", 1))
    weights = w.q - _per_axis(w.zero_point, 0, 4)
    acc = F.conv2d(padded - x.zero_point, weights, stride=stride, dilation=dilation, groups=groups)
    per_in, per_out = padded.shape[1] // groups, w.q.shape[0] // groups
    if not saturate or not _u8s8(x, w) or per_in == 1:
        return acc, 0, 0
    parts = [conv_excess(padded[:, g * per_in : (g + 1) * per_in], weights[g * per_out : (g + 1) * per_out],
                         stride, dilation) for g in range(groups)]
    return acc - torch.cat([p[0] for p in parts], 1), sum(p[1] for p in parts), sum(p[2] for p in parts)


def int_matmul(x: Quantized, w: Quantized, trans_b: bool, saturate: bool) -> tuple[torch.Tensor, int, int]:
    """Σ (x − zx)(w − zw) of a quantized Gemm/MatMul with 2-D input, as int_conv."""
    weights = w.q - _per_axis(w.zero_point, 1 if not trans_b else 0, 2)
    weights = weights if trans_b else weights.T  # (O, K)
    acc = (x.q - x.zero_point) @ weights.T
    if not saturate or not _u8s8(x, w):
        return acc, 0, 0
    excess, count, clamped = matmul_excess(x.q, weights)
    return acc - excess, count, clamped


def _u8s8(x: Quantized, w: Quantized) -> bool:
    return x.dtype == UINT8 and w.dtype == INT8


def _pads(attrs: dict[str, Any]) -> tuple[int, int, int, int]:
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise CompressionError("AVX2 int8 emulation: Conv auto_pad is not supported; export with explicit pads")
    pads = list(attrs.get("pads", [0, 0, 0, 0]))
    return pads[0], pads[1], pads[2], pads[3]


def _attrs(node: Any) -> dict[str, Any]:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _quantize(ins: list[Any], attrs: dict[str, Any], dtype: int) -> torch.Tensor:
    x, scale, zero = ins[0], ins[1], ins[2] if len(ins) > 2 and ins[2] is not None else torch.tensor(0.0)
    low, high = (0, 255) if dtype == UINT8 else (-128, 127)
    axis = int(attrs.get("axis", 1))
    q = torch.round(x / _per_axis(scale, axis, x.ndim)) + _per_axis(zero, axis, x.ndim)  # round half to even
    return q.clamp(low, high)


def _pool(kind: str) -> Callable[[list[Any], dict[str, Any]], torch.Tensor]:
    def run(ins: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
        kernel = list(attrs["kernel_shape"])
        top, left, bottom, right = _pads(attrs)
        stride = list(attrs.get("strides", [1] * len(kernel)))
        ceil = bool(attrs.get("ceil_mode", 0))
        if kind == "max":
            x = F.pad(ins[0], (left, right, top, bottom), value=-math.inf)
            return F.max_pool2d(x, kernel, stride, ceil_mode=ceil, dilation=list(attrs.get("dilations", [1, 1])))
        x = F.pad(ins[0], (left, right, top, bottom))
        if attrs.get("count_include_pad", 0) or not any((top, left, bottom, right)):
            return F.avg_pool2d(x, kernel, stride, ceil_mode=ceil)
        ones = F.pad(torch.ones_like(ins[0][:1, :1]), (left, right, top, bottom))
        return F.avg_pool2d(x, kernel, stride, ceil_mode=ceil) / F.avg_pool2d(ones, kernel, stride, ceil_mode=ceil)
    return run


def _reduce_mean(ins: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    axes = attrs.get("axes") or (ins[1].long().tolist() if len(ins) > 1 and ins[1] is not None else None)
    keep = bool(attrs.get("keepdims", 1))
    return ins[0].mean(dim=tuple(axes), keepdim=keep) if axes else ins[0].mean()


def _reshape(ins: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    shape = [int(s) for s in ins[1].tolist()]
    shape = [ins[0].shape[i] if s == 0 and not attrs.get("allowzero", 0) else s for i, s in enumerate(shape)]
    return ins[0].reshape(shape)


def _flatten(ins: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    axis = int(attrs.get("axis", 1))
    return ins[0].reshape(math.prod(ins[0].shape[:axis]), -1)


def _float_conv(ins: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    top, left, bottom, right = _pads(attrs)
    return F.conv2d(F.pad(ins[0], (left, right, top, bottom)), ins[1], ins[2] if len(ins) > 2 else None,
                    stride=list(attrs.get("strides", [1, 1])), dilation=list(attrs.get("dilations", [1, 1])),
                    groups=int(attrs.get("group", 1)))


def _float_gemm(ins: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    a = ins[0].T if attrs.get("transA", 0) else ins[0]
    b = ins[1].T if attrs.get("transB", 0) else ins[1]
    out = attrs.get("alpha", 1.0) * (a @ b)
    return out + attrs.get("beta", 1.0) * ins[2] if len(ins) > 2 and ins[2] is not None else out


def _hard_sigmoid(ins: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    return (attrs.get("alpha", 0.2) * ins[0] + attrs.get("beta", 0.5)).clamp(0, 1)


def _clip(ins: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    low = ins[1] if len(ins) > 1 and ins[1] is not None else attrs.get("min", -math.inf)
    high = ins[2] if len(ins) > 2 and ins[2] is not None else attrs.get("max", math.inf)
    return ins[0].clamp(float(low), float(high))


# Element-wise and shape operators of the QDQ files timm's CNNs export to: (inputs, attributes) → output.
OPS: dict[str, Callable[[list[Any], dict[str, Any]], torch.Tensor]] = {
    "Add": lambda i, a: i[0] + i[1], "Sub": lambda i, a: i[0] - i[1], "Mul": lambda i, a: i[0] * i[1],
    "Div": lambda i, a: i[0] / i[1], "Relu": lambda i, a: i[0].clamp(min=0), "Clip": _clip,
    "Sigmoid": lambda i, a: torch.sigmoid(i[0]), "HardSigmoid": _hard_sigmoid,
    "HardSwish": lambda i, a: i[0] * (i[0] / 6 + 0.5).clamp(0, 1), "Identity": lambda i, a: i[0],
    "MaxPool": _pool("max"), "AveragePool": _pool("avg"),
    "GlobalAveragePool": lambda i, a: i[0].mean(dim=(2, 3), keepdim=True), "ReduceMean": _reduce_mean,
    "Reshape": _reshape, "Flatten": _flatten, "Concat": lambda i, a: torch.cat(i, int(a["axis"])),
    "Transpose": lambda i, a: i[0].permute(*a["perm"]) if "perm" in a else i[0].permute(*reversed(range(i[0].ndim))),
    "Squeeze": lambda i, a: i[0].squeeze(),
}
FLOAT_COMPUTE = {"Conv": _float_conv, "Gemm": _float_gemm, "MatMul": lambda i, a: i[0] @ i[1]}


class Int8Graph:
    """A static QDQ ONNX file run op by op in PyTorch (float64), its integer layers exactly."""

    def __init__(self, path: str | Path) -> None:
        import onnx
        from onnx import numpy_helper

        model = onnx.load(str(path))
        self.graph = model.graph
        self.inits = {t.name: torch.from_numpy(numpy_helper.to_array(t).astype(np.float64))
                      for t in model.graph.initializer}
        self.zero_types = {t.name: t.data_type for t in model.graph.initializer}
        self.input_name = model.graph.input[0].name
        known = {*OPS, *FLOAT_COMPUTE, "QuantizeLinear", "DequantizeLinear"}
        unknown = sorted({n.op_type for n in model.graph.node} - known)
        if unknown:
            raise CompressionError(f"{path}: the AVX2 int8 emulation does not know operator(s) {', '.join(unknown)}")

    @torch.inference_mode()
    def __call__(self, x: np.ndarray, saturate: bool, saturation: Saturation | None = None) -> np.ndarray:
        """Logits of a normalized float NCHW batch; `saturate`: AVX2's int16 pairs, else VNNI/AMX."""
        values: dict[str, Any] = dict(self.inits)
        values[self.input_name] = torch.from_numpy(np.asarray(x, np.float64))
        integers: dict[str, Quantized] = {}  # DequantizeLinear output → the integers behind it
        types: dict[str, int] = dict(self.zero_types)  # QuantizeLinear output → its data type
        for node in self.graph.node:
            ins = [values[name] if name else None for name in node.input]
            attrs = _attrs(node)
            if node.op_type == "QuantizeLinear":
                types[node.output[0]] = self.zero_types.get(node.input[2], UINT8) if len(node.input) > 2 else UINT8
                out = _quantize(ins, attrs, types[node.output[0]])
            elif node.op_type == "DequantizeLinear":
                q, scale = ins[0], ins[1]
                zero = ins[2] if len(ins) > 2 and ins[2] is not None else torch.tensor(0.0)
                axis = int(attrs.get("axis", 1))
                out = (q - _per_axis(zero, axis, q.ndim)) * _per_axis(scale, axis, q.ndim)
                if types.get(node.input[0]) in (UINT8, INT8):
                    integers[node.output[0]] = Quantized(q, scale, zero, types[node.input[0]])
            elif node.op_type in FLOAT_COMPUTE:
                out = self._compute(node, ins, attrs, integers, saturate, saturation)
            else:
                out = OPS[node.op_type](ins, attrs)
            values[node.output[0]] = out
        return values[self.graph.output[0].name].float().numpy()

    @staticmethod
    def _compute(node: Any, ins: list[Any], attrs: dict[str, Any], integers: dict[str, Quantized], saturate: bool,
                 saturation: Saturation | None) -> torch.Tensor:
        """A conv or matmul: in integers when both its activation and its weights are quantized."""
        x, w = integers.get(node.input[0]), integers.get(node.input[1])
        if x is None or w is None:  # kept in float (or a weight computed at run time)
            return FLOAT_COMPUTE[node.op_type](ins, attrs)
        if x.scale.ndim or (node.op_type != "Conv" and (ins[0].ndim != 2 or ins[1].ndim != 2)):
            raise CompressionError(f"the AVX2 int8 emulation covers 2-D int8 matmuls only, not {node.name}")
        if node.op_type == "Conv":
            acc, pairs, clamped = int_conv(x, w, attrs, saturate)
            scale = x.scale * _per_axis(w.scale, 1, 4)
        else:
            trans_b = node.op_type == "Gemm" and bool(attrs.get("transB", 0))
            acc, pairs, clamped = int_matmul(x, w, trans_b, saturate)
            scale = x.scale * _per_axis(w.scale, 1, 2)
        if saturation is not None:
            saturation.add(node.name or node.output[0], pairs, clamped)
        out = acc * scale
        if len(ins) > 2 and ins[2] is not None:
            out = out + (ins[2] if node.op_type != "Conv" else _per_axis(ins[2], 1, 4))
        return out


def avx2_logits(
    path: str | Path, images: np.ndarray, mean: list[float], std: list[float], saturation: Saturation | None = None,
    batch_size: int = 64,
) -> np.ndarray:
    """Logits of uint8 NHWC images under AVX2's saturating u8s8 arithmetic, in batches."""
    graph = Int8Graph(path)
    return np.concatenate([
        graph(normalize_numpy(np.array(images[i : i + batch_size]), mean, std), True, saturation)
        for i in range(0, len(images), batch_size)
    ])
