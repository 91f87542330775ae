"""The prepared data and fast batches from it (kd_pipeline.prepare.preparation writes it).

Prepared data is one folder: `{train,val,test}/images.npy` (uint8, NHWC, 3 channels),
`{split}/labels.npy` (int64: one class per image, or N×L 0/1 columns for a multi-label set)
and `meta.json` (class names, counts, train mean/std and a
content hash). `.npy` rather than `.npz` so that splits load memory-mapped: a large set
never has to fit in RAM, and batches are sliced straight from the map.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from kd_pipeline.core.errors import DataError
from kd_pipeline.core.params import AugmentParams

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Split:
    """One split: uint8 NHWC images (possibly memory-mapped) and int64 labels."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def multilabel(self) -> bool:
        return is_multilabel(self.labels)


def is_multilabel(labels: np.ndarray) -> bool:
    """N×L 0/1 label columns (any number of labels per image) rather than one class index each."""
    return labels.ndim == 2


@dataclass(frozen=True)
class Meta:
    """What a prepared dataset is: read by training, evaluation and export."""

    class_names: list[str]
    image_size: int
    mean: list[float]
    std: list[float]
    counts: dict[str, dict[str, int]]
    content_hash: str
    source: dict[str, Any]
    task: str = "multiclass"  # multiclass (one class per image) | multilabel (0/1 per label)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def load_meta(prepared_dir: str | Path) -> Meta:
    path = Path(prepared_dir) / "meta.json"
    if not path.is_file():
        raise DataError(f"{path}: not found; run the prepare stage first (dvc repro prepare)")
    return Meta(**json.loads(path.read_text()))


def load_split(prepared_dir: str | Path, split: str, mmap: bool = True) -> Split:
    """One split, memory-mapped by default so large sets stay out of RAM."""
    folder = Path(prepared_dir) / split
    paths = [folder / "images.npy", folder / "labels.npy"]
    for path in paths:
        if not path.is_file():
            raise DataError(f"{path}: not found; run the prepare stage first (dvc repro prepare)")
    images = np.load(paths[0], mmap_mode="r" if mmap else None)
    labels = np.load(paths[1])
    if images.ndim != 4 or images.dtype != np.uint8 or len(images) != len(labels):
        raise DataError(f"{folder}: expected uint8 NHWC images with one label each")
    return Split(images=images, labels=labels)


def epoch_order(split: Split, seed: int, shuffle: bool = True, balanced: bool = False) -> np.ndarray:
    """The row order of one epoch; it depends only on the seed.

    `balanced` draws an epoch's worth of indices with replacement, each image weighted by the
    inverse of its class's size, so every class is seen about equally often.
    """
    rng = np.random.default_rng(seed)
    if balanced and split.multilabel:
        raise DataError("train.sampler balanced needs one class per image; this data is multi-label"
                        " (use train.class_weights: true, which weighs each label's positives)")
    if balanced:
        weights = 1.0 / np.bincount(split.labels)[split.labels]
        return rng.choice(len(split), size=len(split), replace=True, p=weights / weights.sum())
    return rng.permutation(len(split)) if shuffle else np.arange(len(split))


def read_batch(split: Split, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 NHWC images and labels of rows `idx`, in that order."""
    # Sorted reads are sequential on a memory map; the batch order stays shuffled.
    sorted_idx = np.sort(idx)
    position = np.argsort(np.argsort(idx))
    images = np.ascontiguousarray(split.images[sorted_idx])[position]
    return torch.from_numpy(images), torch.from_numpy(split.labels[idx])


def batches(
    split: Split, batch_size: int, shuffle: bool = False, seed: int = 0, balanced: bool = False
) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
    """Yield (indices, uint8 NHWC images, labels) batches in `epoch_order`."""
    order = epoch_order(split, seed, shuffle, balanced)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        yield (idx, *read_batch(split, idx))


class Normalizer:
    """uint8 NHWC batch → normalised float NCHW on the model's device, in one fused step."""

    def __init__(self, mean: list[float], std: list[float], device: torch.device, channels_last: bool):
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255.0
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255.0
        self.device = device
        self.channels_last = channels_last

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":
            images = images.pin_memory().to(self.device, non_blocking=True)
        x = images.permute(0, 3, 1, 2).float()
        x = (x - self.mean) / self.std
        if self.channels_last:
            return x.contiguous(memory_format=torch.channels_last)
        return x.contiguous()


def normalize_numpy(images: np.ndarray, mean: list[float], std: list[float]) -> np.ndarray:
    """uint8 NHWC → float32 NCHW, normalised: the exact preprocessing of the PyTorch path."""
    x = images.astype(np.float32).transpose(0, 3, 1, 2)
    m = np.asarray(mean, np.float32).reshape(1, 3, 1, 1) * 255.0
    s = np.asarray(std, np.float32).reshape(1, 3, 1, 1) * 255.0
    return (x - m) / s


def color_jitter(images: torch.Tensor, cfg: AugmentParams, generator: torch.Generator) -> torch.Tensor:
    """Per-image brightness, contrast and saturation jitter on a uint8 NHWC batch, vectorised.

    Colour only: no geometry changes, so labels and spatial structure are untouched.
    """
    n = images.shape[0]
    x = images.float()

    def factors(strength: float) -> torch.Tensor:
        u = torch.rand(n, 1, 1, 1, generator=generator)
        return 1.0 + (2.0 * u - 1.0) * strength

    luma = torch.tensor([0.299, 0.587, 0.114])
    x = x * factors(cfg.brightness)
    mean_grey = (x * luma).sum(dim=-1, keepdim=True).mean(dim=(1, 2, 3), keepdim=True)
    x = mean_grey + (x - mean_grey) * factors(cfg.contrast)
    grey = (x * luma).sum(dim=-1, keepdim=True)
    x = grey + (x - grey) * factors(cfg.saturation)
    return x.round().clamp(0, 255).to(torch.uint8)


def flip_and_crop(images: torch.Tensor, cfg: AugmentParams, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal/vertical flips and a random crop of the edge-padded image, per image, vectorised.

    Geometry only, on a uint8 NHWC batch: each image gets its own flips and crop offset.
    """
    n, h, w, _ = images.shape
    if cfg.hflip:
        flip = torch.rand(n, generator=generator) < 0.5
        images = torch.where(flip.view(n, 1, 1, 1), images.flip(2), images)
    if cfg.vflip:
        flip = torch.rand(n, generator=generator) < 0.5
        images = torch.where(flip.view(n, 1, 1, 1), images.flip(1), images)
    pad = cfg.crop_padding
    if pad:
        padded = F.pad(images.permute(0, 3, 1, 2).float(), (pad, pad, pad, pad), mode="replicate")
        padded = padded.to(torch.uint8).permute(0, 2, 3, 1)
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
        rows = (dy.view(n, 1) + torch.arange(h)).view(n, h, 1)
        cols = (dx.view(n, 1) + torch.arange(w)).view(n, 1, w)
        images = padded[torch.arange(n).view(n, 1, 1), rows, cols]
    return images.contiguous()


def augment(images: torch.Tensor, cfg: AugmentParams, generator: torch.Generator) -> torch.Tensor:
    """The training augmentation `train.augment` asks for (geometry, then colour)."""
    images = flip_and_crop(images, cfg, generator)
    if cfg.color_jitter:
        images = color_jitter(images, cfg, generator)
    return images


def class_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights (n / (k · n_c)), so rare classes count as much as common ones.

    Multi-label data gets BCE's `pos_weight` instead: negatives / positives per label, so a
    rare finding's positives weigh as much as its negatives.
    """
    if is_multilabel(labels):
        positives = labels.sum(axis=0).astype(np.float64)
        return torch.tensor((len(labels) - positives) / np.maximum(positives, 1.0), dtype=torch.float32)
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = len(labels) / (num_classes * np.maximum(counts, 1.0))
    return torch.tensor(weights, dtype=torch.float32)
