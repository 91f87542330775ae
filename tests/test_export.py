from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from kd_pipeline.compression import export_onnx
from kd_pipeline.data import Split
from kd_pipeline.export import ExportError, verify
from kd_pipeline.models import create_model
from kd_pipeline.params import ExportParams

CARD = {"mean": [0.5] * 3, "std": [0.25] * 3, "input_size": [3, 16, 16]}


def _setup(tmp_path: Path) -> tuple[torch.nn.Module, Path, Split]:
    torch.manual_seed(0)
    model = create_model("resnet10t", 4).eval()
    path = tmp_path / "model.onnx"
    export_onnx(model, CARD["input_size"], path)
    images = np.random.default_rng(0).integers(0, 256, (20, 16, 16, 3), dtype=np.uint8)
    return model, path, Split(images, np.zeros(20, np.int64))


def test_float_export_passes_verification(tmp_path: Path) -> None:
    model, path, split = _setup(tmp_path)
    check = verify(path, model, CARD, split, int8=False, cfg=ExportParams())
    assert check["max_abs_diff"] <= 1e-4 and check["images"] == 20


def test_verification_catches_a_corrupted_model(tmp_path: Path) -> None:
    model, path, split = _setup(tmp_path)
    proto = onnx.load(str(path))
    first = proto.graph.initializer[0]
    first.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(first) * -3.0, first.name))
    onnx.save(proto, str(path))
    with pytest.raises(ExportError, match="differ from PyTorch"):
        verify(path, model, CARD, split, int8=False, cfg=ExportParams())
    with pytest.raises(ExportError, match="int8 agrees with PyTorch on .* of test top-1 classes"):
        verify(path, model, CARD, split, int8=True, cfg=ExportParams(min_int8_agreement=1.0))


def test_int8_check_of_a_multilabel_model_compares_label_decisions(tmp_path: Path) -> None:
    model, path, split = _setup(tmp_path)
    multilabel = Split(split.images, np.zeros((20, 4), np.int64))
    check = verify(path, model, CARD, multilabel, int8=True, cfg=ExportParams())
    assert check == {"agreement": 1.0, "agreement_on": "label decisions", "images": 20}
