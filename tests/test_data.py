import json
from pathlib import Path

import numpy as np
import pytest
import torch

from kd_pipeline.core.data import (
    batches,
    class_weights,
    color_jitter,
    load_meta,
    load_split,
)
from kd_pipeline.core.errors import DataError
from kd_pipeline.core.params import AugmentParams
from kd_pipeline.prepare.preparation import resize_images, stratified_split


def test_split_is_stratified_seeded_and_disjoint() -> None:
    labels = np.repeat(np.arange(4), [100, 50, 30, 20])
    parts = stratified_split(labels, 0.15, 0.2, seed=3)
    all_idx = np.concatenate(list(parts.values()))
    assert len(all_idx) == len(labels) == len(np.unique(all_idx))
    for name, fraction in (("test", 0.2), ("val", 0.15)):
        counts = np.bincount(labels[parts[name]], minlength=4)
        expected = np.bincount(labels) * fraction
        assert np.all(np.abs(counts - expected) <= 1.5), (name, counts, expected)
    again = stratified_split(labels, 0.15, 0.2, seed=3)
    other = stratified_split(labels, 0.15, 0.2, seed=4)
    assert all(np.array_equal(parts[k], again[k]) for k in parts)
    assert not np.array_equal(parts["test"], other["test"])


def test_split_refuses_classes_too_small_to_split() -> None:
    labels = np.array([0] * 20 + [1] * 2)
    with pytest.raises(DataError, match=r"fewer than 3 images cannot appear in every split: b \(2\)"):
        stratified_split(labels, 0.15, 0.2, seed=0, class_names=["a", "b"])


def test_many_classes_few_images_split_or_fail_in_one_line() -> None:
    labels = np.repeat(np.arange(10), 40)  # 5% of 400 is 20 images: enough for 10 classes
    parts = stratified_split(labels, 0.05, 0.05, seed=0)
    assert all(len(np.unique(labels[parts[name]])) == 10 for name in parts)
    labels = np.repeat(np.arange(10), 4)  # 5% of 40 is 2 images, fewer than the classes: one each
    parts = stratified_split(labels, 0.05, 0.05, seed=0)
    assert {name: len(idx) for name, idx in parts.items()} == {"train": 20, "val": 10, "test": 10}
    labels = np.concatenate([np.repeat(np.arange(12), 3), [0, 1]])  # 38 images: test 12 + val 12 leaves 14
    with pytest.raises(DataError, match="too few to put each of the 12 classes"):
        stratified_split(labels, 0.45, 0.4, seed=0)


def test_small_classes_reach_every_split() -> None:
    labels = np.array([0] * 200 + [1] * 3 + [2] * 5)
    for seed in range(5):
        parts = stratified_split(labels, 0.15, 0.2, seed=seed)
        for name, idx in parts.items():
            assert set(labels[idx]) == {0, 1, 2}, (seed, name)
        assert len(np.unique(np.concatenate(list(parts.values())))) == len(labels)


def test_prepared_folder_layout(prepared_dir: Path) -> None:
    meta = load_meta(prepared_dir)
    assert meta.num_classes == 10 and meta.image_size == 16
    sizes = {s: len(load_split(prepared_dir, s)) for s in ("train", "val", "test")}
    assert sum(sizes.values()) == 1797
    assert sizes == {s: sum(meta.counts[s].values()) for s in sizes}
    train = load_split(prepared_dir, "train")
    assert isinstance(train.images, np.memmap)
    assert train.images.shape[1:] == (16, 16, 3) and train.images.dtype == np.uint8
    assert json.loads((prepared_dir / "meta.json").read_text())["content_hash"] == meta.content_hash
    assert not list(prepared_dir.parent.glob(".prepared.*")), "temporary folder left behind"


def test_missing_prepared_data_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"meta.json: not found; run the prepare stage"):
        load_meta(tmp_path)
    with pytest.raises(DataError, match=r"images.npy: not found"):
        load_split(tmp_path, "train")


def test_resize_makes_three_channels() -> None:
    grey = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 1), dtype=np.uint8)
    out = resize_images(grey, 24)
    assert out.shape == (5, 24, 24, 3) and out.dtype == np.uint8
    assert np.array_equal(out[..., 0], out[..., 2])
    with pytest.raises(DataError, match="channels"):
        resize_images(np.zeros((1, 8, 8, 2), np.uint8), 8)


def test_batches_cover_split_in_seeded_order(prepared_dir: Path) -> None:
    split = load_split(prepared_dir, "val")
    seen = []
    for idx, images, labels in batches(split, 32, shuffle=True, seed=7):
        assert np.array_equal(images.numpy(), split.images[idx])
        assert np.array_equal(labels.numpy(), split.labels[idx])
        seen.append(idx)
    order = np.concatenate(seen)
    assert sorted(order.tolist()) == list(range(len(split)))
    again = np.concatenate([idx for idx, _, _ in batches(split, 32, shuffle=True, seed=7)])
    assert np.array_equal(order, again)


def test_color_jitter_changes_colour_only() -> None:
    images = torch.randint(0, 256, (8, 16, 16, 3), dtype=torch.uint8)
    out = color_jitter(images, AugmentParams(color_jitter=True), torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == torch.uint8
    assert not torch.equal(out, images)
    same = color_jitter(images, AugmentParams(brightness=0, contrast=0, saturation=0), torch.Generator())
    assert (same.int() - images.int()).abs().max() <= 1


def test_class_weights_are_inverse_frequency() -> None:
    weights = class_weights(np.array([0, 0, 0, 1]), 2)
    assert weights.tolist() == pytest.approx([4 / 6, 2.0])


def test_flips_and_crops_are_per_image_and_seeded() -> None:
    from kd_pipeline.core.data import augment
    from kd_pipeline.core.params import AugmentParams

    images = torch.arange(64 * 5 * 5 * 3, dtype=torch.int64).remainder(251).to(torch.uint8).view(64, 5, 5, 3)
    flips = augment(images, AugmentParams(hflip=True), torch.Generator().manual_seed(0))
    same = [(flips[i] == images[i]).all().item() for i in range(64)]
    mirrored = [(flips[i] == images[i].flip(1)).all().item() for i in range(64)]
    assert all(s or m for s, m in zip(same, mirrored, strict=True))
    assert 10 < sum(mirrored) < 54  # about half, each image on its own

    cfg = AugmentParams(crop_padding=2)
    crops = augment(images, cfg, torch.Generator().manual_seed(1))
    assert crops.shape == images.shape and crops.dtype == torch.uint8
    assert torch.equal(crops, augment(images, cfg, torch.Generator().manual_seed(1)))
    padded = torch.nn.functional.pad(images.permute(0, 3, 1, 2).float(), (2, 2, 2, 2), mode="replicate")
    padded = padded.to(torch.uint8).permute(0, 2, 3, 1)
    for i in range(8):  # every output is one 5×5 window of its own padded image
        windows = [padded[i, y : y + 5, x : x + 5] for y in range(5) for x in range(5)]
        assert any(torch.equal(crops[i], window) for window in windows)
    moved = sum(not torch.equal(crops[i], images[i]) for i in range(64))
    assert moved > 40  # 24 of 25 offsets move the image


def test_multilabel_split_is_seeded_disjoint_and_complete() -> None:
    from kd_pipeline.prepare.preparation import stratified_split

    labels = np.random.default_rng(0).integers(0, 2, (100, 5))
    parts = stratified_split(labels, 0.15, 0.2, seed=3)
    assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(100))
    assert {k: len(v) for k, v in parts.items()} == {"train": 65, "val": 15, "test": 20}
    again = stratified_split(labels, 0.15, 0.2, seed=3)
    assert all(np.array_equal(parts[k], again[k]) for k in parts)
