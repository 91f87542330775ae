"""The small students of the teacher-assistant paper, registered in timm's model registry.

Mirzadeh et al. (AAAI 2020, arXiv 1902.03393) measure distillation across a capacity gap with
two CIFAR families: the CIFAR ResNets of He et al. (three stages of 16/32/64 channels, 6n + 2
layers: `cifar_resnet8` … `cifar_resnet110`) and plain CNNs of 2 to 10 layers (`cifar_plain2` …
`cifar_plain10`, 13 k to 2.5 M parameters). Registered here, they are timm names like any other,
so every stage (train, prune, quantize, evaluate, visualize, export, predict) builds them through
`timm.create_model` and reads the same `feature_info`, `get_classifier` and `group_matcher`.

At 32 px they are the paper's networks layer for layer; at other sizes the plain CNNs pool their
last map to the 32-px grid before the classifier, and the ResNets pool globally, so any
`data.image_size` works.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)

# The paper's CIFAR-10 plain CNNs: conv widths per max-pooled stage, then hidden FC widths.
PLAIN_SPECS: dict[int, tuple[tuple[tuple[int, ...], ...], tuple[int, ...]]] = {
    2: (((16,), (16,)), ()),
    4: (((16, 16), (32, 32)), ()),
    6: (((16, 16), (32, 32), (64, 64)), ()),
    8: (((16, 16), (32, 32), (64, 64), (128, 128)), (64,)),
    10: (((32, 32), (64, 64), (128, 128), (256, 256, 256, 256)), (128,)),
}
RESNET_DEPTHS = (8, 14, 20, 32, 44, 56, 110)  # 6n + 2: n basic blocks per stage


class PlainCNN(nn.Module):
    """Conv-BN-ReLU stages each closed by a 2 × 2 max pool, flattened into fully connected layers."""

    def __init__(self, stages: Sequence[Sequence[int]], hidden: Sequence[int], num_classes: int = 10,
                 in_chans: int = 3, drop_rate: float = 0.0, base_size: int = 32, **_: Any):
        super().__init__()
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.grid = base_size // 2 ** len(stages)
        blocks, chans, self.feature_info = [], in_chans, []
        for i, widths in enumerate(stages):
            layers: list[nn.Module] = []
            for width in widths:
                layers += [nn.Conv2d(chans, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
                chans = width
            blocks.append(nn.Sequential(*layers, nn.MaxPool2d(2, 2)))
            self.feature_info.append(dict(num_chs=chans, reduction=2 ** (i + 1), module=f"stages.{i}"))
        self.stages = nn.Sequential(*blocks)
        features, fcs = chans * self.grid * self.grid, []
        for width in hidden:
            fcs += [nn.Linear(features, width), nn.ReLU(inplace=True)]
            features = width
        self.hidden = nn.Sequential(*fcs)
        self.num_features = features
        self.fc = nn.Linear(features, num_classes) if num_classes else nn.Identity()

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(stem=r"^stages\.0", blocks=r"^stages\.(\d+)" if coarse else r"^stages\.(\d+)\.(\d+)")

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.stages(x)
        if tuple(x.shape[-2:]) != (self.grid, self.grid):  # only off the 32-px grid
            x = F.adaptive_avg_pool2d(x, self.grid)
        return x

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.hidden(x.flatten(1))
        x = F.dropout(x, self.drop_rate, self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


class BasicBlock(nn.Module):
    """Two 3 × 3 convolutions with a shortcut; a 1 × 1 projection where the shape changes."""

    def __init__(self, chans: int, width: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(chans, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.act = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or chans != width:
            self.downsample = nn.Sequential(nn.Conv2d(chans, width, 1, stride, bias=False), nn.BatchNorm2d(width))

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.act(self.bn1(self.conv1(x)))
        return self.act(self.bn2(self.conv2(out)) + shortcut)


class CifarResNet(nn.Module):
    """He et al.'s CIFAR ResNet: a 16-channel stem, three stages of `blocks` basic blocks at 16, 32
    and 64 channels (stride 1, 2, 2), global average pooling, one linear classifier."""

    def __init__(self, blocks: int, num_classes: int = 10, in_chans: int = 3, drop_rate: float = 0.0, **_: Any):
        super().__init__()
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.conv1 = nn.Conv2d(in_chans, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.act1 = nn.ReLU(inplace=True)
        chans, self.feature_info = 16, [dict(num_chs=16, reduction=1, module="act1")]
        for i, (width, stride) in enumerate(((16, 1), (32, 2), (64, 2))):
            stage = nn.Sequential(*(BasicBlock(chans if b == 0 else width, width, stride if b == 0 else 1)
                                    for b in range(blocks)))
            setattr(self, f"layer{i + 1}", stage)
            chans = width
            self.feature_info.append(dict(num_chs=width, reduction=2 ** i, module=f"layer{i + 1}"))
        self.num_features = chans
        self.fc = nn.Linear(chans, num_classes) if num_classes else nn.Identity()
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(stem=r"^conv1|^bn1", blocks=r"^layer(\d+)" if coarse else r"^layer(\d+)\.(\d+)")

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.act1(self.bn1(self.conv1(x)))
        return self.layer3(self.layer2(self.layer1(x)))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = F.dropout(x.mean((2, 3)), self.drop_rate, self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def _cfg(**kwargs: Any) -> dict[str, Any]:
    """No hub weights: `pretrained_file` (timm's file overlay) is the only way to load any."""
    return dict(num_classes=10, input_size=(3, 32, 32), pool_size=None, mean=CIFAR_MEAN, std=CIFAR_STD,
                classifier="fc", license="apache-2.0", **kwargs)


default_cfgs = generate_default_cfgs(
    {f"cifar_resnet{d}": _cfg(first_conv="conv1") for d in RESNET_DEPTHS}
    | {f"cifar_plain{n}": _cfg(first_conv="stages.0.0") for n in PLAIN_SPECS}
)


def _plain(layers: int, pretrained: bool, **kwargs: Any) -> PlainCNN:
    stages, hidden = PLAIN_SPECS[layers]
    return build_model_with_cfg(PlainCNN, f"cifar_plain{layers}", pretrained, stages=stages, hidden=hidden,
                                feature_cfg=dict(flatten_sequential=True), **kwargs)


def _resnet(depth: int, pretrained: bool, **kwargs: Any) -> CifarResNet:
    return build_model_with_cfg(CifarResNet, f"cifar_resnet{depth}", pretrained, blocks=(depth - 2) // 6, **kwargs)


@register_model
def cifar_plain2(pretrained: bool = False, **kwargs: Any) -> PlainCNN:
    """The paper's CIFAR-10 student: two conv layers, 13 k parameters."""
    return _plain(2, pretrained, **kwargs)


@register_model
def cifar_plain4(pretrained: bool = False, **kwargs: Any) -> PlainCNN:
    return _plain(4, pretrained, **kwargs)


@register_model
def cifar_plain6(pretrained: bool = False, **kwargs: Any) -> PlainCNN:
    return _plain(6, pretrained, **kwargs)


@register_model
def cifar_plain8(pretrained: bool = False, **kwargs: Any) -> PlainCNN:
    return _plain(8, pretrained, **kwargs)


@register_model
def cifar_plain10(pretrained: bool = False, **kwargs: Any) -> PlainCNN:
    """The paper's CIFAR-10 teacher: eight conv and two FC layers, 2.5 M parameters."""
    return _plain(10, pretrained, **kwargs)


@register_model
def cifar_resnet8(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    return _resnet(8, pretrained, **kwargs)


@register_model
def cifar_resnet14(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    return _resnet(14, pretrained, **kwargs)


@register_model
def cifar_resnet20(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    return _resnet(20, pretrained, **kwargs)


@register_model
def cifar_resnet32(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    return _resnet(32, pretrained, **kwargs)


@register_model
def cifar_resnet44(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    return _resnet(44, pretrained, **kwargs)


@register_model
def cifar_resnet56(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    return _resnet(56, pretrained, **kwargs)


@register_model
def cifar_resnet110(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    return _resnet(110, pretrained, **kwargs)
