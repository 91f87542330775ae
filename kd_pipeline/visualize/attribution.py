"""Where a model looks, and how much two models agree about it.

- CNNs: Grad-CAM on the deepest feature stage that is at least 4 × 4 (timm's `feature_info`),
  computed by captum's
  `LayerGradCam`, a maintained implementation, rather than hand-written gradient hooks.
- ViTs: the last block's attention from the class token to each patch (mean over heads).
  captum has no attention maps, so one forward hook reads the block's qkv projection and the
  attention weights are recomputed from it (timm's fused attention never materialises them).
- Agreement: per image, the Pearson correlation of two maps and the overlap of their top pixels.

Maps have the input's spatial size and lie in [0, 1] (each divided by its maximum).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from captum.attr import LayerAttribution, LayerGradCam
from torch import nn

from kd_pipeline.core.errors import CheckpointError


def is_vit(model: nn.Module) -> bool:
    """A timm vision transformer: patch embedding, a stack of blocks with self-attention."""
    blocks = getattr(model, "blocks", None)
    return hasattr(model, "patch_embed") and blocks is not None and hasattr(blocks[-1], "attn")


def method_of(model: nn.Module) -> str:
    return "cls-attention" if is_vit(model) else "grad-cam"


def feature_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's feature stages, input to output, by timm's `feature_info`."""
    info = getattr(model, "feature_info", None)
    if not info:
        raise CheckpointError(f"{type(model).__name__}: no timm feature_info, so no layer to draw maps from")
    return [(entry["module"], model.get_submodule(entry["module"])) for entry in info]


def cam_layer(model: nn.Module, input_size: int) -> tuple[str, nn.Module]:
    """The deepest feature stage whose output is still at least 4 × 4 for this input size: at
    32 px a ResNet's last stage is 1 × 1, and a one-pixel map says nothing about where."""
    stages = feature_modules(model)
    reductions = [entry.get("reduction", 1) for entry in model.feature_info]
    usable = [i for i, r in enumerate(reductions) if math.ceil(input_size / r) >= 4]
    return stages[usable[-1] if usable else 0]


def _normalise(maps: torch.Tensor) -> torch.Tensor:
    peak = maps.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)
    return (maps / peak).clamp(0, 1)


def grad_cam(model: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Grad-CAM of `targets` (one class per image) on `cam_layer`, upsampled to x."""
    _, layer = cam_layer(model, x.shape[-1])
    cam = LayerGradCam(model, layer).attribute(x, target=targets.tolist(), relu_attributions=True)
    cam = LayerAttribution.interpolate(cam.detach(), tuple(x.shape[-2:]), interpolate_mode="bilinear")
    return _normalise(cam[:, 0].clamp_min(0))


def cls_attention(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The last block's attention from the class token to each patch (mean over heads), upsampled.

    Without a class token (global-average-pooled ViTs) each patch's mean received attention.
    """
    attn = model.blocks[-1].attn
    captured: list[torch.Tensor] = []
    handle = attn.qkv.register_forward_hook(lambda _m, _i, out: captured.append(out.detach()))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    batch, tokens, _ = captured[0].shape
    q, k, _ = captured[0].reshape(batch, tokens, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k = attn.q_norm(q), attn.k_norm(k)
    weights = ((q * attn.scale) @ k.transpose(-2, -1)).softmax(-1).mean(1)  # batch × tokens × tokens
    prefix = getattr(model, "num_prefix_tokens", 1)
    has_cls = getattr(model, "cls_token", None) is not None
    received = weights[:, 0, prefix:] if has_cls else weights[:, :, prefix:].mean(1)
    grid = model.patch_embed.grid_size
    maps = received.reshape(batch, 1, *grid)
    return _normalise(F.interpolate(maps, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)[:, 0])


def saliency(model: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The model's map for each image: Grad-CAM of the target class (CNN) or CLS attention (ViT,
    class-agnostic)."""
    model.eval()
    return cls_attention(model, x) if is_vit(model) else grad_cam(model, x, targets)


def agreement(a: torch.Tensor, b: torch.Tensor, top_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image: Pearson correlation of the two maps, and the share of a's top pixels that are
    also b's. Identical maps score 1 and 1; a constant map correlates 0 with a different one."""
    a, b = a.flatten(1).double(), b.flatten(1).double()
    ac, bc = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    denominator = ac.norm(dim=1) * bc.norm(dim=1)
    correlation = torch.where(denominator > 0, (ac * bc).sum(1) / denominator.clamp_min(1e-300), 0.0)
    identical = (a == b).all(1)
    correlation = torch.where(identical, 1.0, correlation)
    k = max(1, math.ceil(top_fraction * a.shape[1]))
    top_a = torch.zeros_like(a, dtype=torch.bool).scatter_(1, a.topk(k, dim=1).indices, True)
    top_b = torch.zeros_like(b, dtype=torch.bool).scatter_(1, b.topk(k, dim=1).indices, True)
    overlap = (top_a & top_b).sum(1).double() / k
    overlap = torch.where(identical, 1.0, overlap)
    return correlation.float(), overlap.float()


def feature_maps(model: nn.Module, x: torch.Tensor, channels: int) -> list[tuple[str, torch.Tensor]]:
    """The first `channels` channels of each feature stage's output for one image (C × h × w).

    ViT stages output tokens: the patch tokens are laid back on their grid, embedding dimensions
    taking the place of channels. At most six stages, evenly spaced, so a 12-block ViT fits.
    """
    stages = feature_modules(model)
    if len(stages) > 6:
        stages = [stages[round(i * (len(stages) - 1) / 5)] for i in range(6)]
    outputs: dict[str, torch.Tensor] = {}
    handles = [
        module.register_forward_hook(lambda _m, _i, out, name=name: outputs.__setitem__(name, out.detach()))
        for name, module in stages
    ]
    try:
        with torch.no_grad():
            model.eval()(x[:1])
    finally:
        for handle in handles:
            handle.remove()
    result = []
    for name, _ in stages:
        out = outputs[name][0]
        if out.ndim == 2:  # tokens × dim
            grid = model.patch_embed.grid_size
            out = out[getattr(model, "num_prefix_tokens", 0):].T.reshape(-1, *grid)
        result.append((name, out[:channels].float()))
    return result
