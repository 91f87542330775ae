"""Stage prepare's work: a dataset (kd_pipeline.prepare.sources) to the prepared folder kd_pipeline.core.data reads.

Resized to the model's input size, split seeded and stratified, written chunk by chunk into
memory-mapped `.npy` files with `meta.json` (class names, counts, train mean/std, content hash),
atomically. Apart from data.py so that adding or fixing a dataset reader re-runs prepare alone.
"""

from __future__ import annotations

import hashlib
import math
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.model_selection import train_test_split

from kd_pipeline.core.data import SPLITS, Meta, is_multilabel
from kd_pipeline.core.errors import DataError
from kd_pipeline.core.files import atomic_dir, write_json
from kd_pipeline.core.params import DataParams
from kd_pipeline.prepare.sources import RawData, load_source


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
