"""timm models by name, and checkpoints that load without executing code.

A checkpoint is a folder: `model.safetensors` (weights only) and `model.json` (the timm
name, its kwargs, classes, input size and normalisation, and `view_size` for a model that
upsamples its input), enough to rebuild the model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from timm.layers import Attention
from torch import nn
from torch.nn import functional as F  # noqa: N812

from kd_pipeline.core import cifar_networks  # noqa: F401  (registers the paper's CIFAR networks with timm)
from kd_pipeline.core.errors import CheckpointError
from kd_pipeline.core.files import atomic_dir, write_json

WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "model.json"


def create_model(
    name: str,
    num_classes: int,
    pretrained: bool = False,
    pretrained_file: str | None = None,
    model_kwargs: dict[str, Any] | None = None,
) -> nn.Module:
    """Create a timm model by name with a fresh classifier for `num_classes`.

    `pretrained_file` loads local weights through timm's own path
    (`pretrained_cfg_overlay=dict(file=...)`), so offline users need no hub.
    """
    kwargs = dict(model_kwargs or {})
    if pretrained_file:
        if not Path(pretrained_file).is_file():
            raise CheckpointError(f"pretrained_file {pretrained_file}: file not found")
        kwargs["pretrained_cfg_overlay"] = dict(file=str(pretrained_file))
        pretrained = True
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, **kwargs)
    except TypeError as err:
        raise CheckpointError(f"model {name}: unsupported model_kwargs {model_kwargs}: {err}") from None
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise CheckpointError(f"model {name}: weights do not fit this architecture: {first}") from None


def upsample(x: torch.Tensor, size: int) -> torch.Tensor:
    """Images or maps (N × C × H × W) at size × size, bilinear: how a role sees more pixels."""
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


class Resized(nn.Module):
    """A network that sees its inputs at its own size (params: teacher.image_size).

    The batch, the ONNX file and every caller keep the data's size; the first op upsamples
    bilinearly to `size`. So a teacher's KD targets are computed on its own view of the very image
    (augmented) its student sees, cached logits are at the teacher's resolution, and latency and
    MACs count the network at the size it runs. The checkpoint holds the network's own weights
    and `view_size` in its card.
    """

    def __init__(self, net: nn.Module, size: int):
        super().__init__()
        self.net = net
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(upsample(x, self.size))


def at_size(net: nn.Module, size: int, data_size: int) -> nn.Module:
    """`net` seeing `size` × `size` inputs when fed the data's: wrapped only when the sizes differ."""
    return net if size == data_size else Resized(net, size)


def network(model: nn.Module) -> nn.Module:
    """The timm network inside (what its layers, feature_info and group matcher belong to)."""
    return model.net if isinstance(model, Resized) else model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def save_checkpoint(model: nn.Module, out_dir: str | Path, card: dict[str, Any]) -> None:
    """Write weights + card into `out_dir` atomically (the folder appears complete or not at all)."""
    state = {k: v.detach().to("cpu").contiguous() for k, v in network(model).state_dict().items()}
    with atomic_dir(out_dir) as tmp:
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"timm_name": card["timm_name"]})
        write_json(tmp / CARD_FILE, card)


def read_card(ckpt_dir: str | Path) -> dict[str, Any]:
    path = Path(ckpt_dir) / CARD_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: not found; run the stage that writes {ckpt_dir} first")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: not valid JSON ({err.msg})") from None


def load_checkpoint(ckpt_dir: str | Path, num_classes: int | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model from its card and load its weights (safetensors: no pickle, no code).

    When `num_classes` is given, a checkpoint made for another class count is refused.
    Channel-pruned checkpoints (`channel_pruned` in the card) are rebuilt at their pruned widths.
    """
    ckpt_dir = Path(ckpt_dir)
    card = read_card(ckpt_dir)
    if num_classes is not None and card["num_classes"] != num_classes:
        raise CheckpointError(
            f"{ckpt_dir}: made for {card['num_classes']} classes but the data has {num_classes}"
        )
    weights = ckpt_dir / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{weights}: not found")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{weights}: unreadable safetensors file ({err})") from None
    model = create_model(card["timm_name"], card["num_classes"], model_kwargs=card.get("model_kwargs"))
    if card.get("channel_pruned"):
        model = reshape_like(model, state)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 else lines[0]
        raise CheckpointError(f"{weights}: does not match {card['timm_name']}: {detail}") from None
    if card.get("view_size"):
        model = Resized(model, card["view_size"])
    model.eval()
    return model, card


def reshape_like(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """Resize a fresh model's layers to a channel-pruned state dict, so the weights load.

    Pruned checkpoints stay plain safetensors: the architecture is the timm model with the
    channel counts read off the saved tensor shapes.
    """
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        # A depthwise convolution (MobileNets) keeps one group per channel when pruned.
        depthwise = isinstance(module, nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels
        for key, tensor in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
            saved = state.get(prefix + key)
            if saved is None or saved.shape == tensor.shape:
                continue
            new = torch.empty(saved.shape, dtype=tensor.dtype)
            if isinstance(tensor, nn.Parameter):
                setattr(module, key, nn.Parameter(new, requires_grad=tensor.requires_grad))
            else:
                module.register_buffer(key, new)
        if isinstance(module, nn.Conv2d):
            module.out_channels = module.weight.shape[0]
            if depthwise:
                module.groups = module.out_channels
            module.in_channels = module.weight.shape[1] * module.groups
        elif isinstance(module, nn.BatchNorm2d) and module.weight is not None:
            module.num_features = module.weight.shape[0]
        elif isinstance(module, nn.Linear):
            module.out_features, module.in_features = module.weight.shape
        elif isinstance(module, nn.LayerNorm) and module.weight is not None:
            module.normalized_shape = (module.weight.shape[0],)
    return sync_attention(model)


def sync_attention(model: nn.Module) -> nn.Module:
    """Make each timm attention block's head size follow its (pruned) qkv projection.

    Pruning narrows the head dimension and keeps the number of heads; the softmax scale stays
    the one the weights were trained with (a fresh model at the original width has it too).
    """
    for module in model.modules():
        if isinstance(module, Attention):
            module.head_dim = module.qkv.out_features // (3 * module.num_heads)
            module.attn_dim = module.num_heads * module.head_dim
    return model


def move_to_device(model: nn.Module, device: torch.device) -> nn.Module:
    """Put a model on the device; channels_last on CUDA, where convolutions run faster so."""
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model


def count_macs(model: nn.Module, input_size: list[int]) -> int:
    """Multiply-accumulates of one forward pass at batch 1 (Torch-Pruning's counter)."""
    import torch_pruning as tp

    macs, _ = tp.utils.count_ops_and_params(model.eval(), torch.zeros(1, *input_size))
    return int(macs)
