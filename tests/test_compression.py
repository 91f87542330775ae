from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from kd_pipeline.core.data import Split, normalize_numpy
from kd_pipeline.core.errors import CompressionError
from kd_pipeline.core.models import count_parameters, create_model, load_checkpoint, save_checkpoint
from kd_pipeline.core.params import PruneParams, QuantizeParams
from kd_pipeline.prune.pruning import make_pruning_permanent, prune_channels, prune_weights, sparsity
from kd_pipeline.quantize.integer_kernels import integer_mac_share
from kd_pipeline.quantize.onnx_export import export_onnx
from kd_pipeline.quantize.quantization import CalibrationImages, integer_ops, quantize_onnx

SIZE = [3, 16, 16]


def _model() -> nn.Module:
    torch.manual_seed(0)
    return create_model("resnet10t", 4).eval()


def test_structured_pruning_shrinks_and_round_trips(tmp_path: Path) -> None:
    model = _model()
    before = count_parameters(model)
    prune_channels(model, SIZE, PruneParams(ratio=0.5))
    after = count_parameters(model)
    assert after < 0.5 * before
    x = torch.randn(2, *SIZE)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 4)
    card = {"timm_name": "resnet10t", "model_kwargs": {}, "num_classes": 4, "channel_pruned": True}
    save_checkpoint(model, tmp_path / "pruned", card)
    loaded, _ = load_checkpoint(tmp_path / "pruned", num_classes=4)
    assert count_parameters(loaded) == after
    with torch.no_grad():
        assert torch.allclose(loaded(x), out, atol=1e-6)


def test_a_vit_is_pruned_reloaded_and_quantized_to_integer_kernels(tmp_path: Path) -> None:
    """Heads keep their count and narrow; embedding and MLP narrow; the checkpoint reloads; int8 runs."""
    torch.manual_seed(0)
    kwargs = {"img_size": 16, "patch_size": 4, "embed_dim": 64, "depth": 2, "num_heads": 4}
    model = create_model("vit_tiny_patch16_224", 4, model_kwargs=kwargs).eval()
    before = count_parameters(model)
    prune_channels(model, SIZE, PruneParams(ratio=0.5, iterative_steps=2))
    attn = model.blocks[0].attn
    assert (attn.num_heads, attn.head_dim, model.blocks[0].mlp.fc1.out_features) == (4, 8, 128)
    assert count_parameters(model) < 0.4 * before
    x = torch.randn(2, *SIZE)
    with torch.no_grad():
        out = model(x)
    card = {"timm_name": "vit_tiny_patch16_224", "model_kwargs": kwargs, "num_classes": 4, "channel_pruned": True}
    save_checkpoint(model, tmp_path / "pruned", card)
    loaded, _ = load_checkpoint(tmp_path / "pruned", num_classes=4)
    with torch.no_grad():
        assert torch.allclose(loaded(x), out, atol=1e-5)
    fp32, int8 = tmp_path / "vit.fp32.onnx", tmp_path / "vit.int8.onnx"
    export_onnx(loaded, SIZE, fp32)
    images = np.random.default_rng(0).integers(0, 256, (32, 16, 16, 3), dtype=np.uint8)
    calib = CalibrationImages(Split(images, np.zeros(32, np.int64)), np.arange(32), [0.5] * 3, [0.25] * 3, 16)
    quantize_onnx(fp32, int8, QuantizeParams(), calib)
    assert integer_mac_share(fp32, int8).share >= QuantizeParams().min_integer_mac_share


def test_kept_layers_are_not_pruned_and_unknown_names_are_errors() -> None:
    model = _model()
    width = model.conv1[0].out_channels
    prune_channels(model, SIZE, PruneParams(ratio=0.5, keep_layers=["conv1.0"]))
    assert model.conv1[0].out_channels == width
    with pytest.raises(CompressionError, match="prune.keep_layers: no layer named layer9.conv"):
        prune_channels(_model(), SIZE, PruneParams(keep_layers=["layer9.conv"]))


class _Rigid(nn.Module):
    """Hard-codes its channel count in forward: channel pruning must break it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3)
        self.fc = nn.Linear(16, 2)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).reshape(x.shape[0], 16, -1).mean(-1))


def test_model_the_pruner_cannot_handle_gives_clear_error() -> None:
    with pytest.raises(CompressionError, match="cannot prune _Rigid"):
        prune_channels(_Rigid(), SIZE, PruneParams(ratio=0.5, round_to=0))


def test_unstructured_pruning_reports_sparsity_and_keeps_shapes() -> None:
    model = _model()
    before = count_parameters(model)
    make_pruning_permanent(prune_weights(model, PruneParams(method="unstructured", ratio=0.6)))
    assert sparsity(model) == pytest.approx(0.6, abs=0.01)
    assert count_parameters(model) == before
    assert all("mask" not in key for key in model.state_dict())


@pytest.mark.parametrize("method", ["static", "dynamic"])
def test_int8_model_has_integer_ops_is_smaller_and_agrees(tmp_path: Path, method: str) -> None:
    model = _model()
    fp32, int8 = tmp_path / "m.fp32.onnx", tmp_path / "m.int8.onnx"
    export_onnx(model, SIZE, fp32)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (64, 16, 16, 3), dtype=np.uint8)
    mean, std = [0.5] * 3, [0.25] * 3
    calib = CalibrationImages(Split(images, np.zeros(64, np.int64)), np.arange(32), mean, std, batch_size=16)
    quantize_onnx(fp32, int8, QuantizeParams(method=method), calib)
    ops = integer_ops(int8)
    assert ops and ("QuantizeLinear" in ops or "DynamicQuantizeLinear" in ops)
    proof = integer_mac_share(fp32, int8)  # what ONNX Runtime really runs in integer kernels
    assert proof.share > 0.99, proof  # dynamic leaves the small classifier (Gemm) in float
    assert len(proof.float_layers) == (0 if method == "static" else 1), proof  # dynamic: the classifier
    assert int8.stat().st_size < 0.5 * fp32.stat().st_size
    x = normalize_numpy(images[:8], mean, std)
    ref = ort.InferenceSession(str(fp32)).run(None, {"input": x})[0]
    got = ort.InferenceSession(str(int8)).run(None, {"input": x})[0]
    assert got.shape == ref.shape
    assert np.corrcoef(ref.ravel(), got.ravel())[0, 1] > 0.9


def test_export_uses_the_dynamo_exporter_and_repeats_its_bytes(tmp_path: Path) -> None:
    model = _model()
    first, second = tmp_path / "a.onnx", tmp_path / "b.onnx"
    assert export_onnx(model, SIZE, first) == export_onnx(model, SIZE, second) == "dynamo"
    assert first.read_bytes() == second.read_bytes()
    x = np.random.default_rng(0).standard_normal((3, *SIZE)).astype(np.float32)  # batch axis is dynamic
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert np.abs(ort.InferenceSession(str(first)).run(None, {"input": x})[0] - ref).max() < 1e-4


class _DataDependent(nn.Module):
    """Python control flow on a tensor's value: torch.export cannot capture it, TorchScript traces it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 16 * 16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        return self.fc(x if x.sum() > -1e9 else -x)


def test_a_model_torch_export_cannot_capture_falls_back_to_torchscript(tmp_path: Path) -> None:
    assert export_onnx(_DataDependent(), SIZE, tmp_path / "m.onnx") == "torchscript"
    assert ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"input": np.zeros((2, *SIZE), np.float32)})


def test_calibration_images_are_a_seeded_class_stratified_sample() -> None:
    from kd_pipeline.quantize.quantization import calibration_sample

    labels = np.repeat(np.arange(4), [400, 50, 30, 20])  # stored class by class, as image folders are
    chosen = calibration_sample(labels, 100, seed=0)
    assert len(chosen) == 100 and np.all(np.diff(chosen) > 0)
    assert np.bincount(labels[chosen]).tolist() == [80, 10, 6, 4]  # the training split's proportions
    assert np.array_equal(chosen, calibration_sample(labels, 100, seed=0))
    assert not np.array_equal(chosen, calibration_sample(labels, 100, seed=1))
    assert len(calibration_sample(np.repeat([0, 1], [99, 1]), 10, seed=0)) == 10  # a lone image: uniform
    assert len(calibration_sample(np.zeros((50, 3)), 10, seed=0)) == 10  # multi-label: uniform
    assert len(calibration_sample(labels, 1000, seed=0)) == 500  # asked for more than there is: all


def test_qdq_around_the_input_only_is_not_integer_execution(tmp_path: Path) -> None:
    """A file with one Q/DQ pair holds int8 numbers but runs every convolution in float."""
    import onnx
    from onnx import TensorProto, helper

    fp32, fake = tmp_path / "m.fp32.onnx", tmp_path / "m.fake.onnx"
    export_onnx(_model(), SIZE, fp32)
    proto = onnx.load(str(fp32))
    graph = proto.graph
    first = graph.node[0]
    scale = helper.make_tensor("s", TensorProto.FLOAT, [], [0.05])
    zero = helper.make_tensor("z", TensorProto.UINT8, [], [128])
    graph.initializer.extend([scale, zero])
    q = helper.make_node("QuantizeLinear", ["input", "s", "z"], ["input_q"])
    dq = helper.make_node("DequantizeLinear", ["input_q", "s", "z"], ["input_dq"])
    first.input[0] = "input_dq"
    graph.node.insert(0, dq)
    graph.node.insert(0, q)
    onnx.save(proto, str(fake))
    assert "QuantizeLinear" in integer_ops(fake)  # the old check passed it
    proof = integer_mac_share(fp32, fake)
    assert proof.share == 0.0 and proof.float_layers and proof.integer_macs == 0
