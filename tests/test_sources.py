import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kd_pipeline.core.data import batches, class_weights, load_meta, load_split
from kd_pipeline.core.errors import DataError, ParamsError
from kd_pipeline.core.params import DataParams, parse_params
from kd_pipeline.prepare.imaging import fit_image
from kd_pipeline.prepare.preparation import prepare
from kd_pipeline.prepare.sources import load_source


def write_medmnist(root: Path, flag: str = "breastmnist", sizes=(20, 6, 8), labels_per_image: int = 1) -> Path:
    """A file in the layout medmnist reads: {split}_images (N,28,28) and {split}_labels (N,L)."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in zip(("train", "val", "test"), sizes, strict=True):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        if labels_per_image == 1:
            arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(n, 1).astype(np.uint8)
        else:
            arrays[f"{split}_labels"] = rng.integers(0, 2, (n, labels_per_image), dtype=np.uint8)
    path = root / f"{flag}.npz"
    np.savez(path, **arrays)
    return path


def test_medmnist_keeps_official_splits_and_becomes_rgb(tmp_path: Path) -> None:
    write_medmnist(tmp_path)
    cfg = DataParams(name="medmnist", subset="breastmnist", root=str(tmp_path), image_size=16)
    meta = prepare(cfg, tmp_path / "prepared")
    assert meta.class_names == ["malignant", "normal, benign"]
    assert {s: sum(c.values()) for s, c in meta.counts.items()} == {"train": 20, "val": 6, "test": 8}
    train = load_split(tmp_path / "prepared", "train")
    assert train.images.shape == (20, 16, 16, 3)
    assert np.array_equal(train.images[..., 0], train.images[..., 2])


def test_medmnist_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    cfg = DataParams(name="medmnist", subset="pneumoniamnist", root=str(tmp_path), medmnist_size=64)
    with pytest.raises(DataError, match=r"pneumoniamnist_64.npz: not found .*data.download: true"):
        load_source(cfg)
    with pytest.raises(DataError, match="folder not found"):
        load_source(DataParams(name="medmnist", subset="breastmnist", root=str(tmp_path / "nope")))


def test_chestmnist_is_prepared_multilabel(tmp_path: Path) -> None:
    write_medmnist(tmp_path, "chestmnist", labels_per_image=14)
    meta = prepare(DataParams(name="medmnist", subset="chestmnist", root=str(tmp_path), image_size=16),
                   tmp_path / "prepared")
    assert meta.task == "multilabel" and meta.num_classes == 14 and meta.class_names[0] == "atelectasis"
    test = load_split(tmp_path / "prepared", "test")
    assert test.multilabel and test.labels.shape == (8, 14) and test.labels.dtype == np.int64
    assert meta.counts["test"]["atelectasis"] == int(test.labels[:, 0].sum())
    weights = class_weights(test.labels, 14)  # BCE pos_weight: negatives / positives
    positives = test.labels[:, 0].sum()
    assert weights[0].item() == pytest.approx((8 - positives) / max(positives, 1))
    with pytest.raises(DataError, match="sampler balanced needs one class per image"):
        next(batches(test, 4, balanced=True))


def test_medmnist_wrong_label_count_is_a_clear_error(tmp_path: Path) -> None:
    write_medmnist(tmp_path, "chestmnist", labels_per_image=3)
    with pytest.raises(DataError, match=r"chestmnist.npz: train labels have shape \(20, 3\); expected \(N, 14\)"):
        load_source(DataParams(name="medmnist", subset="chestmnist", root=str(tmp_path)))


def test_medmnist_params_are_checked() -> None:
    with pytest.raises(ParamsError, match="not a 2D MedMNIST set"):
        parse_params({"data": {"name": "medmnist", "subset": "organmnist3d"}})
    with pytest.raises(ParamsError, match="subset is only for data.name medmnist"):
        parse_params({"data": {"subset": "breastmnist"}})
    with pytest.raises(ParamsError, match="medmnist_size"):
        parse_params({"data": {"name": "medmnist", "subset": "breastmnist", "medmnist_size": 32}})


def test_cifar_batches_with_validation_carved_from_train(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from torchvision.datasets import cifar

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)

    def batch(n: int) -> dict:
        return {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": [i % 10 for i in range(n)]}

    for name in [f"data_batch_{i}" for i in range(1, 6)]:
        (folder / name).write_bytes(pickle.dumps(batch(20)))
    (folder / "test_batch").write_bytes(pickle.dumps(batch(30)))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}))
    # Made-up batches cannot match torchvision's md5 list; everything else is torchvision's own reader.
    monkeypatch.setattr(cifar, "check_integrity", lambda path, md5=None: Path(path).is_file())
    meta = prepare(DataParams(name="cifar10", root=str(tmp_path), val_fraction=0.2), tmp_path / "prepared")
    sizes = {s: sum(c.values()) for s, c in meta.counts.items()}
    assert sizes == {"train": 80, "val": 20, "test": 30}
    assert all(n == 2 for n in meta.counts["val"].values())
    assert meta.class_names[0] == "c0"


def test_cifar_missing_files_name_the_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cifar-10-batches-py"):
        load_source(DataParams(name="cifar10", root=str(tmp_path)))


def write_image_folder(root: Path) -> None:
    rng = np.random.default_rng(0)
    for name, count, suffix in (("cats", 20, ".png"), ("dogs", 12, ".jpg"), ("rare", 4, ".bmp")):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)).save(folder / f"{i}{suffix}")
    cats = root / "cats"
    Image.new("RGBA", (10, 10), (255, 0, 0, 128)).save(cats / "rgba.png")
    Image.new("L", (10, 10), 200).save(cats / "grey.png")
    Image.new("P", (10, 10)).save(cats / "palette.gif")
    Image.new("CMYK", (10, 10), (0, 0, 0, 0)).save(cats / "cmyk.jpg")
    Image.new("RGB", (10, 10)).save(cats / "photo.webp")
    (cats / "broken.png").write_bytes(b"\x89PNG not really")
    (cats / "notes.txt").write_text("not an image")


def test_image_folder_converts_modes_skips_corrupt_and_keeps_every_class(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "images")
    cfg = DataParams(name="imagefolder", root=str(tmp_path / "images"), image_size=16, resize="pad")
    with pytest.warns(UserWarning, match="skipped 1 unreadable images: .*broken.png"):
        meta = prepare(cfg, tmp_path / "prepared")
    assert meta.class_names == ["cats", "dogs", "rare"]
    assert sum(meta.counts[s]["cats"] for s in meta.counts) == 25  # 20 + 5 converted, corrupt skipped
    for split in ("train", "val", "test"):
        assert meta.counts[split]["rare"] >= 1, split
    assert len(meta.source["skipped_files"]) == 1
    assert load_meta(tmp_path / "prepared").counts == meta.counts
    assert sorted(p.name for p in (tmp_path / "prepared").iterdir()) == ["meta.json", "test", "train", "val"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no scratch left beside it
    with pytest.raises(DataError, match=r"unreadable image .*broken.png"):
        load_source(cfg.model_copy(update={"on_corrupt": "fail"}))


def test_image_folder_names_classes_too_small(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "images")
    for path in list((tmp_path / "images" / "rare").iterdir())[2:]:
        path.unlink()
    cfg = DataParams(name="imagefolder", root=str(tmp_path / "images"), image_size=16)
    with pytest.raises(DataError, match=r"fewer than 3 images cannot appear in every split: rare \(2\)"), \
            pytest.warns(UserWarning):
        prepare(cfg, tmp_path / "prepared")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images"]  # nothing half-written


def test_pad_keeps_aspect_ratio() -> None:
    image = Image.new("RGB", (40, 20), (255, 255, 255))
    padded = fit_image(image, 16, "pad")
    assert padded.shape == (16, 16, 3)
    assert padded[0].max() == 0 and padded[8].min() == 255  # black bars above, image in the middle
    assert fit_image(image, 16, "stretch").min() == 255


def write_split_folder(root: Path, splits: dict[str, dict[str, int]]) -> None:
    """root/<split>/<class>/<i>.jpg, as CIFAR-10's JPEG release is laid out."""
    rng = np.random.default_rng(1)
    for split, classes in splits.items():
        for name, count in classes.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i}.jpg")


def test_a_folder_already_split_keeps_its_split_and_its_classes(tmp_path: Path) -> None:
    write_split_folder(tmp_path / "cifar", {"train": {"cat": 20, "dog": 12, "frog": 8},
                                            "test": {"cat": 5, "dog": 4, "frog": 3}})
    meta = prepare(DataParams(name="imagefolder", root=str(tmp_path / "cifar"), image_size=8), tmp_path / "p")
    assert meta.class_names == ["cat", "dog", "frog"]  # not "test" against "train"
    assert meta.counts["test"] == {"cat": 5, "dog": 4, "frog": 3}
    assert {k: meta.counts["train"][k] + meta.counts["val"][k] for k in meta.class_names} == \
        {"cat": 20, "dog": 12, "frog": 8}
    assert all(meta.counts["val"][k] >= 1 for k in meta.class_names)  # carved, stratified
    assert meta.source["given_splits"] == ["test", "train"]


def test_a_given_validation_folder_is_kept_and_a_missing_test_is_carved(tmp_path: Path) -> None:
    write_split_folder(tmp_path / "d", {"train": {"a": 12, "b": 12}, "valid": {"a": 3, "b": 2}})
    meta = prepare(DataParams(name="imagefolder", root=str(tmp_path / "d"), image_size=8), tmp_path / "p")
    assert meta.counts["val"] == {"a": 3, "b": 2}
    assert all(meta.counts["test"][k] >= 1 for k in ("a", "b"))
    assert sum(meta.counts["train"].values()) + sum(meta.counts["test"].values()) == 24


@pytest.mark.parametrize(
    ("splits", "message"),
    [
        ({"train": {"a": 3, "b": 3}, "cats": {"x": 1}}, r"mixes split folders \(train\) with other folders \(cats\)"),
        ({"val": {"a": 3, "b": 3}, "test": {"a": 1, "b": 1}}, r"split folders test, val but no train/"),
        ({"train": {"a": 3, "b": 3}, "test": {"a": 1, "c": 1}}, r"test: class folders not in train/: c"),
        ({"train": {"a": 3, "b": 3}, "val": {"a": 1}, "validation": {"a": 1}}, r"both val/ and validation/"),
        ({"photos": {"a": 3, "b": 3}}, r"found 1 \(photos/: point data.root at the folder that holds"),
    ],
)
def test_a_layout_that_cannot_be_read_as_classes_is_one_clear_error(
    tmp_path: Path, splits: dict[str, dict[str, int]], message: str
) -> None:
    write_split_folder(tmp_path / "d", splits)
    with pytest.raises(DataError, match=message):
        prepare(DataParams(name="imagefolder", root=str(tmp_path / "d"), image_size=8), tmp_path / "p")
    assert not (tmp_path / "p").exists()
