"""A model as a function from uint8 NHWC images to logits, in eager PyTorch or ONNX Runtime on the
CPU: how evaluate, quantize's accuracy control and export run every variant alike."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kd_pipeline.core.data import Normalizer, normalize_numpy


def torch_runner(model: nn.Module, mean: list[float], std: list[float]) -> Callable[[np.ndarray], np.ndarray]:
    """uint8 NHWC batch → logits with an eager PyTorch model on the CPU."""
    normalizer = Normalizer(mean, std, torch.device("cpu"), channels_last=False)
    model = model.eval().to("cpu")

    @torch.inference_mode()
    def run(images: np.ndarray) -> np.ndarray:
        return model(normalizer(torch.from_numpy(images))).float().numpy()

    return run


def onnx_runner(
    path: str | Path, mean: list[float], std: list[float], threads: int
) -> Callable[[np.ndarray], np.ndarray]:
    """uint8 NHWC batch → logits with ONNX Runtime on the CPU, at a fixed thread count."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(images: np.ndarray) -> np.ndarray:
        return session.run(None, {"input": normalize_numpy(images, mean, std)})[0]

    return run
