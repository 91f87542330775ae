"""Quantization-aware training: the model trains with the int8 rounding it will be deployed with.

ONNX Runtime's static QDQ quantization (kd_pipeline.quantize.quantization.quantize_onnx) folds each
BatchNorm into the convolution before it, quantizes the folded weights per output channel,
symmetric int8 (scale = max |w| / 127), and activations per tensor, uint8 with calibrated ranges.
`prepare` makes a model compute that way while it trains:

- each conv or linear layer's weight is replaced (a torch parametrization) by its int8-rounded
  version, which is also the rounding of the BatchNorm-folded weight (see ChannelRounding), so
  training sees the deployed weights and the straight-through estimator carries the gradient to
  the float weights;
- BatchNorm is frozen (timm's FrozenBatchNorm2d): it computes with the running statistics the
  deployed fold uses, not with each batch's;
- each conv or linear layer's input is rounded to uint8 with a range tracked by an exponential
  moving average while training, as calibration would set it.

`finalize` leaves the weights on the int8 grid, removes the rounding and restores plain
BatchNorm, so the result is an ordinary checkpoint of the same architecture whose folded
weights ONNX Runtime's quantizer reproduces exactly. The input ranges it learned are written into
the int8 file (quantization.learned_ranges: ONNX Runtime's TensorQuantOverrides); the tensors no
layer rounded are calibrated as for static PTQ. Only the core `torch.fake_quantize_*` operators
are used (torch.ao.quantization is deprecated and its fused observers fail on timm models in this
torch).
"""

from __future__ import annotations

import torch
from timm.layers import freeze_batch_norm_2d, unfreeze_batch_norm_2d
from torch import nn
from torch.nn.utils import parametrize

QUANTIZED = (nn.Conv2d, nn.Linear)


class ActivationRange(nn.Module):
    """uint8 fake quantization of a tensor with an EMA of its min and max (0 always inside)."""

    def __init__(self, momentum: float = 0.01):
        super().__init__()
        self.momentum = momentum
        self.register_buffer("low", torch.zeros(()))
        self.register_buffer("high", torch.zeros(()))
        self.register_buffer("seen", torch.zeros((), dtype=torch.bool))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            with torch.no_grad():
                low, high = x.min().float().clamp(max=0), x.max().float().clamp(min=0)
                if not bool(self.seen):
                    self.low.copy_(low), self.high.copy_(high), self.seen.fill_(True)
                else:
                    self.low.lerp_(low, self.momentum), self.high.lerp_(high, self.momentum)
        scale = ((self.high - self.low) / 255).clamp(min=1e-8)
        zero_point = (-self.low / scale).round().clamp(0, 255).int()
        return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, 0, 255)


class ChannelRounding(nn.Module):
    """A weight rounded per output channel to symmetric int8 (scale = max |w| / 127), as ONNX
    Runtime rounds it. Folding a BatchNorm into the convolution multiplies each output channel by
    a constant, and per-channel symmetric rounding commutes with that, so this is exactly the
    rounding of the folded weight that int8 runs."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        scale = (weight.detach().abs().flatten(1).amax(dim=1) / 127).clamp(min=1e-12)
        zero = torch.zeros_like(scale, dtype=torch.int32)
        return torch.fake_quantize_per_channel_affine(weight, scale, zero, 0, -127, 127)


def prepare(model: nn.Module) -> nn.Module:
    """Make `model` train as its int8 deployment computes (in place; returns it)."""
    model = freeze_batch_norm_2d(model)
    for layer in model.modules():
        if isinstance(layer, QUANTIZED):
            parametrize.register_parametrization(layer, "weight", ChannelRounding())
            layer.add_module("input_range", ActivationRange())
            layer.qat_hook = layer.register_forward_pre_hook(_round_input)
    return model


def _round_input(layer: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return (layer.input_range(args[0]), *args[1:])


def finalize(model: nn.Module) -> nn.Module:
    """The trained model as a plain checkpoint: weights left on the int8 grid, no rounding of
    inputs, BatchNorm unfrozen (same keys and shapes as before `prepare`)."""
    for layer in model.modules():
        if isinstance(layer, QUANTIZED) and parametrize.is_parametrized(layer, "weight"):
            with torch.no_grad():
                parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)
            layer.qat_hook.remove()
            del layer.input_range, layer.qat_hook
    return unfreeze_batch_norm_2d(model)


def activation_ranges(model: nn.Module) -> dict[str, list[float]]:
    """The input range each quantized layer learned (reported in the int8 card)."""
    return {name: [float(m.low), float(m.high)] for name, m in model.named_modules() if isinstance(m, ActivationRange)}
