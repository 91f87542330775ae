"""fp32 ONNX of a PyTorch model: the file quantize calibrates and export ships.

Its own module so that export (which re-exports a float checkpoint) needs neither the pruning
nor the quantization code, nor the training loop.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from kd_pipeline.core.errors import CheckpointError


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
