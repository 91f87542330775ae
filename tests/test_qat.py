"""Quantization-aware training: the model trains with int8 rounding and comes back as a plain
checkpoint whose BatchNorm-folded weights sit on the int8 grid ONNX Runtime uses."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kd_pipeline.core.models import create_model
from kd_pipeline.quantize import qat
from tests.conftest import TINY_MODEL


def _folded(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> torch.Tensor:
    return conv.weight * (norm.weight * (norm.running_var + norm.eps).rsqrt()).view(-1, 1, 1, 1)


def _grid_error(weight: torch.Tensor) -> float:
    """Largest distance, in grid steps, of a weight from ONNX Runtime's per-channel symmetric grid."""
    steps = weight / (weight.abs().flatten(1).amax(1) / 127).clamp(min=1e-12).view(-1, *[1] * (weight.dim() - 1))
    return float((steps - steps.round()).abs().max().detach())


def _conv_norm_pairs(model: nn.Module) -> dict[str, str]:
    """conv name → the BatchNorm registered right after it (a ResNet's conv/bn order)."""
    pairs, last_conv = {}, None
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            last_conv = name
        elif isinstance(module, nn.BatchNorm2d) and last_conv:
            pairs[last_conv], last_conv = name, None
    return pairs


def test_qat_trains_with_rounding_and_returns_the_same_architecture_on_the_int8_grid() -> None:
    torch.manual_seed(0)
    model = create_model(TINY_MODEL, 10)
    with torch.no_grad():
        for norm in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            norm.running_var.uniform_(0.5, 2.0)
            norm.weight.uniform_(0.5, 1.5)
    pairs = _conv_norm_pairs(model)
    assert len(pairs) >= 4
    modules = dict(model.named_modules())
    first_conv, first_norm = next(iter(pairs.items()))
    with torch.no_grad():
        modules[first_norm].weight[0] = 0.0  # timm zero-initialises some γ: the fold must stay finite
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert _grid_error(_folded(modules[first_conv], modules[first_norm])) > 0.1  # a float model is off the grid

    model = qat.prepare(model).train()
    x, y = torch.randn(16, 3, 16, 16), torch.randint(0, 10, (16,))
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    conv = dict(model.named_modules())[first_conv]
    before = conv.parametrizations.weight.original.detach().clone()
    for _ in range(3):
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert torch.isfinite(loss) and not torch.equal(before, conv.parametrizations.weight.original)
    ranges = qat.activation_ranges(model)
    assert ranges and all(low <= 0 <= high and high > low for low, high in ranges.values())

    model = qat.finalize(model).eval()
    assert {k: v.shape for k, v in model.state_dict().items()} == shapes
    modules = dict(model.named_modules())
    assert all(isinstance(modules[norm], nn.BatchNorm2d) for norm in pairs.values())
    assert not any(hasattr(m, "input_range") for m in model.modules())
    for conv, norm in pairs.items():
        assert _grid_error(_folded(modules[conv], modules[norm]).detach()) < 1e-3, conv
    assert _grid_error(model.get_classifier().weight) < 1e-3  # no BatchNorm after it: the weight itself
    assert torch.isfinite(model(x)).all()


def test_a_vit_trains_with_rounding_too() -> None:
    model = create_model("test_vit", 4, model_kwargs={"img_size": 16, "patch_size": 4})
    model = qat.prepare(model).train()
    model(torch.randn(2, 3, 16, 16)).sum().backward()
    model = qat.finalize(model)
    linear = next(m for m in model.modules() if isinstance(m, nn.Linear))
    assert _grid_error(linear.weight) < 1e-3


def test_the_ranges_qat_learned_are_the_ones_in_the_int8_file(tmp_path) -> None:
    """The int8 file's QuantizeLinear scale and zero point for a layer's input are those of the
    range that layer learned, not a fresh calibration (which would read other images)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from kd_pipeline.core.data import Split
    from kd_pipeline.core.params import QuantizeParams
    from kd_pipeline.quantize.onnx_export import export_onnx
    from kd_pipeline.quantize.quantization import CalibrationImages, learned_ranges, prepare_onnx, quantize_prepared

    torch.manual_seed(0)
    model = qat.prepare(create_model(TINY_MODEL, 4)).train()
    with torch.no_grad():
        model(torch.randn(8, 3, 16, 16) * 3)  # ranges from wide inputs
    ranges = {name.removesuffix(".input_range"): r for name, r in qat.activation_ranges(model).items()}
    model = qat.finalize(model).eval()
    export_onnx(model, [3, 16, 16], tmp_path / "m.fp32.onnx")
    prepared = prepare_onnx(tmp_path / "m.fp32.onnx")
    overrides = learned_ranges(prepared, ranges)
    assert len(overrides) >= len(ranges) // 2 and "input" in overrides  # the stem conv reads the model input
    narrow = Split(np.full((8, 16, 16, 3), 128, np.uint8), np.zeros(8, np.int64))  # calibration would differ
    calibration = CalibrationImages(narrow, np.arange(8), [0.5] * 3, [0.25] * 3, 8)
    quantize_prepared(prepared, tmp_path / "m.int8.onnx", QuantizeParams(), calibration, ranges=overrides)
    graph = onnx.load(str(tmp_path / "m.int8.onnx")).graph
    constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    node = next(n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "input")
    low, high = overrides["input"]
    assert float(constants[node.input[1]]) == pytest.approx((high - low) / 255, rel=1e-5)
    assert int(constants[node.input[2]]) == round(-low / ((high - low) / 255))
