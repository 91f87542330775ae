"""Datasets to prepared arrays, and fast batches from them.

Prepared data is one folder: `{train,val,test}/images.npy` (uint8, NHWC, 3 channels),
`{split}/labels.npy` (int64) and `meta.json` (class names, counts, train mean/std and a
content hash). `.npy` rather than `.npz` so that splits load memory-mapped: a large set
never has to fit in RAM, and batches are sliced straight from the map.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.model_selection import train_test_split

from kd_pipeline.errors import DataError
from kd_pipeline.files import atomic_dir, write_json
from kd_pipeline.params import AugmentParams, DataParams

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Split:
    """One split: uint8 NHWC images (possibly memory-mapped) and int64 labels."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


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

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def load_source(cfg: DataParams) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Raw images (uint8 NHWC, any size) and labels of the configured source."""
    if cfg.name == "digits":
        return _load_digits()
    raise DataError(f"data.name: unknown dataset {cfg.name!r}")


def _load_digits() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """scikit-learn's handwritten digits: ships inside the package, so no download."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    # Pixel values are 0..16; scale to the full uint8 range.
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    return images, digits.target.astype(np.int64), [str(name) for name in digits.target_names]


def resize_images(images: np.ndarray, size: int, chunk: int = 512) -> np.ndarray:
    """Resize uint8 NHWC images to size×size×3 (grey becomes 3 identical channels)."""
    n, h, w, c = images.shape
    if c not in (1, 3):
        raise DataError(f"images have {c} channels; expected 1 (grey) or 3 (RGB)")
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    for start in range(0, n, chunk):
        batch = torch.from_numpy(np.ascontiguousarray(images[start : start + chunk]))
        x = batch.permute(0, 3, 1, 2).float()
        if (h, w) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        x = x.round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1)
        out[start : start + chunk] = x.permute(0, 2, 3, 1).numpy()
    return out


def stratified_split(
    labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> dict[str, np.ndarray]:
    """Seeded, stratified train/val/test indices that do not overlap."""
    counts = np.bincount(labels)
    too_small = [str(k) for k, n in enumerate(counts) if 0 < n < 3]
    if too_small:
        raise DataError(f"classes {', '.join(too_small)} have fewer than 3 images; cannot split")
    indices = np.arange(len(labels))
    rest, test = train_test_split(
        indices, test_size=test_fraction, stratify=labels, random_state=seed
    )
    train, val = train_test_split(
        rest,
        test_size=val_fraction / (1.0 - test_fraction),
        stratify=labels[rest],
        random_state=seed,
    )
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


def prepare(cfg: DataParams, out_dir: str | Path) -> Meta:
    """Load the source, resize, split and write the prepared folder atomically."""
    images, labels, class_names = load_source(cfg)
    if len(images) != len(labels):
        raise DataError(f"{len(images)} images but {len(labels)} labels")
    images = resize_images(images, cfg.image_size)
    parts = stratified_split(labels, cfg.val_fraction, cfg.test_fraction, cfg.seed)
    train_float = images[parts["train"]].astype(np.float64) / 255.0
    digest = hashlib.sha256()
    with atomic_dir(out_dir) as tmp:
        for split, idx in parts.items():
            (tmp / split).mkdir()
            for name, array in (("images", images[idx]), ("labels", labels[idx])):
                np.save(tmp / split / f"{name}.npy", array)
                digest.update(array.tobytes())
        meta = Meta(
            class_names=class_names,
            image_size=cfg.image_size,
            mean=[round(float(v), 6) for v in train_float.mean(axis=(0, 1, 2))],
            std=[round(max(float(v), 1e-3), 6) for v in train_float.std(axis=(0, 1, 2))],
            counts={
                split: {name: int((labels[idx] == k).sum()) for k, name in enumerate(class_names)}
                for split, idx in parts.items()
            },
            content_hash=digest.hexdigest()[:16],
            source=cfg.model_dump(),
        )
        write_json(tmp / "meta.json", meta.__dict__)
    return meta


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


def batches(
    split: Split, batch_size: int, shuffle: bool = False, seed: int = 0
) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
    """Yield (indices, uint8 NHWC images, labels) batches; the order depends only on seed."""
    order = np.arange(len(split))
    if shuffle:
        order = np.random.default_rng(seed).permutation(len(split))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        # Sorted reads are sequential on a memory map; the batch order stays shuffled.
        sorted_idx = np.sort(idx)
        position = np.argsort(np.argsort(idx))
        images = np.ascontiguousarray(split.images[sorted_idx])[position]
        yield idx, torch.from_numpy(images), torch.from_numpy(split.labels[idx])


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


def class_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights (n / (k · n_c)), so rare classes count as much as common ones."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = len(labels) / (num_classes * np.maximum(counts, 1.0))
    return torch.tensor(weights, dtype=torch.float32)
