"""Datasets to prepared arrays, and fast batches from them.

Prepared data is one folder: `{train,val,test}/images.npy` (uint8, NHWC, 3 channels),
`{split}/labels.npy` (int64: one class per image, or N×L 0/1 columns for a multi-label set)
and `meta.json` (class names, counts, train mean/std and a
content hash). `.npy` rather than `.npz` so that splits load memory-mapped: a large set
never has to fit in RAM, and batches are sliced straight from the map.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
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
from kd_pipeline.sources import RawData, load_source

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


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """Resize uint8 NHWC images to size×size×3 (grey becomes 3 identical channels)."""
    n, h, w, c = images.shape
    if c not in (1, 3):
        raise DataError(f"images have {c} channels; expected 1 (grey) or 3 (RGB)")
    x = torch.from_numpy(np.array(images)).permute(0, 3, 1, 2)
    if (h, w) != (size, size):
        x = F.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        x = x.round_().clamp_(0, 255).to(torch.uint8)
    return x.expand(-1, 3, -1, -1).permute(0, 2, 3, 1).contiguous().numpy()


def stratified_split(
    labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int, class_names: list[str] | None = None
) -> dict[str, np.ndarray]:
    """Seeded, stratified train/val/test indices that do not overlap, every class in every split."""
    return _split(labels, {"test": test_fraction, "val": val_fraction}, seed, class_names)


def _split(
    labels: np.ndarray, fractions: dict[str, float], seed: int, class_names: list[str] | None
) -> dict[str, np.ndarray]:
    multilabel = is_multilabel(labels)  # no single class to stratify on: a seeded random split
    if not multilabel:
        counts = np.bincount(labels)
        names = class_names or [str(k) for k in range(len(counts))]
        needed = len(fractions) + 1
        too_small = [f"{names[k]} ({n})" for k, n in enumerate(counts) if 0 < n < needed]
        if too_small:
            raise DataError(
                f"classes with fewer than {needed} images cannot appear in every split: {', '.join(too_small)};"
                " add images or remove those class folders"
            )
    rest = np.arange(len(labels))
    parts: dict[str, np.ndarray] = {}
    remaining = 1.0
    for name, fraction in fractions.items():
        size: float | int = fraction / remaining
        if not multilabel:  # a stratified split needs at least one image per class on each side
            classes = len(np.unique(labels[rest]))
            size = max(math.ceil(size * len(rest)), classes)
            if len(rest) - size < classes:
                raise DataError(
                    f"{len(labels)} images are too few to put each of the {classes} classes in train, val and"
                    " test (data.val_fraction, data.test_fraction); add images"
                )
        rest, taken = train_test_split(
            rest, test_size=size, stratify=None if multilabel else labels[rest], random_state=seed
        )
        remaining -= fraction
        parts[name] = taken
    parts["train"] = rest
    # Small classes can miss a split by rounding: move one image there from the largest split.
    for name in [] if multilabel else fractions:
        for k in np.setdiff1d(np.unique(labels), labels[parts[name]]):
            donor = max(parts, key=lambda p: int((labels[parts[p]] == k).sum()))
            pick = parts[donor][labels[parts[donor]] == k][0]
            parts[donor] = parts[donor][parts[donor] != pick]
            parts[name] = np.append(parts[name], pick)
    return {name: np.sort(parts[name]) for name in SPLITS if name in parts}


def prepare(cfg: DataParams, out_dir: str | Path, chunk_bytes: int = 32 << 20) -> Meta:
    """Load the source, resize, split and write the prepared folder atomically.

    Splits are written chunk by chunk into memory-mapped .npy files, so a large source never
    has to be held in RAM at the prepared size (an image folder is decoded into a scratch
    memory map inside the output's temporary folder, removed before the folder is renamed).
    """
    digest = hashlib.sha256()
    histogram = np.zeros((3, 256), np.int64)  # train pixel values per channel: exact mean and std
    counts: dict[str, dict[str, int]] = {}
    with atomic_dir(out_dir) as tmp:
        scratch = tmp / ".scratch"
        raw = load_source(cfg, scratch)
        num_classes = len(raw.class_names)
        multilabel = is_multilabel(raw.pool[1] if raw.pool is not None else raw.splits["train"][1])
        sources = _split_sources(raw, cfg)
        for split in SPLITS:
            images, labels, idx = sources[split]
            _check_labels(labels[idx], num_classes, split)
            (tmp / split).mkdir()
            shape = (len(idx), cfg.image_size, cfg.image_size, 3)
            out = np.lib.format.open_memmap(tmp / split / "images.npy", mode="w+", dtype=np.uint8, shape=shape)
            # Chunks of about `chunk_bytes` (source or prepared size, the larger), so memory
            # stays flat whatever the image count or resolution.
            per_image = max(int(np.prod(images.shape[1:])), cfg.image_size**2 * 3)
            chunk = max(1, min(4096, chunk_bytes // per_image))
            for start in range(0, len(idx), chunk):
                block = resize_images(images[np.sort(idx[start : start + chunk])], cfg.image_size)
                out[start : start + len(block)] = block
                digest.update(block.tobytes())
                if split == "train":
                    for channel in range(3):
                        histogram[channel] += np.bincount(block[..., channel].ravel(), minlength=256)
            out.flush()
            del out
            split_labels = labels[np.sort(idx)]
            np.save(tmp / split / "labels.npy", split_labels)
            digest.update(split_labels.tobytes())
            counts[split] = label_counts(split_labels, raw.class_names)
        del images, sources
        shutil.rmtree(scratch, ignore_errors=True)
        levels = np.arange(256) / 255.0
        pixels = max(int(histogram[0].sum()), 1)
        mean = histogram @ levels / pixels
        std = np.sqrt(np.maximum(histogram @ levels**2 / pixels - mean**2, 0.0))
        meta = Meta(
            class_names=raw.class_names,
            image_size=cfg.image_size,
            mean=[round(float(v), 6) for v in mean],
            std=[round(max(float(v), 1e-3), 6) for v in std],
            counts=counts,
            content_hash=digest.hexdigest()[:16],
            source={**cfg.model_dump(), "skipped_files": raw.skipped, "given_splits": sorted(raw.splits)},
            task="multilabel" if multilabel else "multiclass",
        )
        write_json(tmp / "meta.json", meta.__dict__)
    return meta


def _split_sources(raw: RawData, cfg: DataParams) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(images, labels, indices) per split: a seeded stratified split of a pool, or the source's own."""
    if raw.pool is not None:
        images, labels = raw.pool
        parts = stratified_split(labels, cfg.val_fraction, cfg.test_fraction, cfg.seed, raw.class_names)
        return {split: (images, labels, idx) for split, idx in parts.items()}
    sources = {split: (images, labels, np.arange(len(labels))) for split, (images, labels) in raw.splits.items()}
    missing = {split: fraction for split, fraction in (("test", cfg.test_fraction), ("val", cfg.val_fraction))
               if split not in sources}
    if missing:  # carve the missing splits from train: seeded and stratified
        images, labels, _ = sources["train"]
        carved = _split(labels, missing, cfg.seed, raw.class_names)
        sources.update({split: (images, labels, idx) for split, idx in carved.items()})
    return sources


def _check_labels(labels: np.ndarray, num_classes: int, split: str) -> None:
    if not len(labels):
        return
    if is_multilabel(labels):
        if labels.shape[1] != num_classes or labels.min() < 0 or labels.max() > 1:
            raise DataError(f"{split} labels: expected 0/1 columns for {num_classes} labels, got shape {labels.shape}")
    elif labels.min() < 0 or labels.max() >= num_classes:
        raise DataError(f"{split} labels outside 0..{num_classes - 1} for {num_classes} class names")


def label_counts(labels: np.ndarray, class_names: list[str]) -> dict[str, int]:
    """Images per class; for multi-label data, images carrying each label (positives)."""
    if is_multilabel(labels):
        return {name: int(labels[:, k].sum()) for k, name in enumerate(class_names)}
    return {name: int((labels == k).sum()) for k, name in enumerate(class_names)}


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
