"""Small students by name: the teacher-assistant paper's CIFAR networks (registered with timm by
kd_pipeline.core.cifar_networks) and timm's own tiny families go through the path every student
takes: build by name, prune, reload, Grad-CAM layer, ONNX, int8 in integer kernels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import timm
import torch

from kd_pipeline.core.data import Split, normalize_numpy
from kd_pipeline.core.models import count_parameters, create_model, load_checkpoint, save_checkpoint
from kd_pipeline.core.params import PruneParams, QuantizeParams
from kd_pipeline.prune.pruning import prune_channels
from kd_pipeline.quantize.integer_kernels import integer_mac_share
from kd_pipeline.quantize.onnx_export import export_onnx
from kd_pipeline.quantize.quantization import CalibrationImages, quantize_onnx
from kd_pipeline.visualize.attribution import cam_layer, grad_cam

SIZE = [3, 32, 32]
SMALL = ["cifar_plain2", "cifar_plain4", "cifar_resnet8", "mobilenetv3_small_050", "resnet10t"]


def test_the_papers_networks_are_timm_names_with_the_papers_sizes() -> None:
    """Mirzadeh et al. give plain2 13 k and plain10 2.5 M parameters; the CIFAR ResNets are 6n + 2 deep."""
    assert {"cifar_plain2", "cifar_plain10", "cifar_resnet8", "cifar_resnet110"} <= set(timm.list_models("cifar_*"))
    counts = {name: count_parameters(create_model(name, 10)) for name in
              ("cifar_plain2", "cifar_plain10", "cifar_resnet8", "cifar_resnet20", "cifar_resnet110")}
    assert 12_000 < counts["cifar_plain2"] < 14_000
    assert 2.4e6 < counts["cifar_plain10"] < 2.6e6
    assert 0.26e6 < counts["cifar_resnet20"] < 0.28e6  # He et al.: 0.27 M
    assert 1.6e6 < counts["cifar_resnet110"] < 1.8e6  # He et al.: 1.7 M
    assert counts["cifar_resnet8"] < counts["cifar_resnet20"] < counts["cifar_resnet110"]


@pytest.mark.parametrize("size", [28, 32, 64])
def test_plain_cnns_take_any_input_size(size: int) -> None:
    model = create_model("cifar_plain10", 3).eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 3, size, size)).shape == (2, 3)


@pytest.mark.parametrize("name", SMALL)
def test_a_small_student_is_pruned_reloaded_mapped_and_runs_int8(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model(name, 4).eval()
    before = count_parameters(model)
    prune_channels(model, SIZE, PruneParams(ratio=0.5))
    assert count_parameters(model) < before
    x = torch.randn(2, *SIZE)
    with torch.no_grad():
        out = model(x)
    save_checkpoint(model, tmp_path / "pruned", {"timm_name": name, "model_kwargs": {}, "num_classes": 4,
                                                 "channel_pruned": True})
    loaded, _ = load_checkpoint(tmp_path / "pruned", num_classes=4)
    with torch.no_grad():
        assert torch.allclose(loaded(x), out, atol=1e-5)

    layer_name, _ = cam_layer(loaded, SIZE[-1])
    assert layer_name  # a feature stage at least 4 x 4 to draw Grad-CAM from
    assert grad_cam(loaded, x, torch.tensor([0, 1])).shape == (2, 32, 32)

    fp32, int8 = tmp_path / "m.fp32.onnx", tmp_path / "m.int8.onnx"
    export_onnx(loaded, SIZE, fp32)
    images = np.random.default_rng(0).integers(0, 256, (32, 32, 32, 3), dtype=np.uint8)
    mean, std = [0.5] * 3, [0.25] * 3
    quantize_onnx(fp32, int8, QuantizeParams(), CalibrationImages(Split(images, np.zeros(32, np.int64)),
                                                                  np.arange(32), mean, std, 16))
    assert integer_mac_share(fp32, int8).share >= QuantizeParams().min_integer_mac_share
    batch = normalize_numpy(images[:4], mean, std)
    ref = ort.InferenceSession(str(fp32)).run(None, {"input": batch})[0]
    assert np.abs(ref - loaded(torch.from_numpy(batch)).detach().numpy()).max() < 1e-4
    assert ort.InferenceSession(str(int8)).run(None, {"input": batch})[0].shape == (4, 4)
