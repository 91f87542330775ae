"""Dataset readers, offline-first: each returns uint8 NHWC images, int64 labels and class names.

Labels are one class index per image (shape N), or for a multi-label set such as ChestMNIST
one 0/1 column per label (shape N×L), where an image may carry any number of labels.

Files already on disk (`data.root`) are read with each library's own loader; a download
happens only when `data.download` is true, through that library's download code and
checksums. Nothing downloads at import time.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kd_pipeline.errors import DataError
from kd_pipeline.imaging import fit_image
from kd_pipeline.params import DataParams

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff"}


@dataclass
class RawData:
    """A source's images: either one pool to split, or the source's own official splits."""

    class_names: list[str]
    pool: tuple[np.ndarray, np.ndarray] | None = None
    splits: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # unreadable files, by path and reason


def load_source(cfg: DataParams, scratch: Path | None = None) -> RawData:
    """Dispatch on `data.name`. `scratch`: a folder for decoded images, so they need not fit in RAM."""
    if cfg.name == "imagefolder":
        return _image_folder(cfg, scratch)
    readers = {
        "digits": _digits,
        "medmnist": _medmnist,
        "cifar10": _cifar,
        "cifar100": _cifar,
    }
    return readers[cfg.name](cfg)


def _digits(cfg: DataParams) -> RawData:
    """scikit-learn's handwritten digits: ships inside the package, so no download."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    # Pixel values are 0..16; scale to the full uint8 range.
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    names = [str(name) for name in digits.target_names]
    return RawData(class_names=names, pool=(images, digits.target.astype(np.int64)))


def _root(cfg: DataParams, default: str) -> Path:
    root = Path(cfg.root or default).expanduser()
    if cfg.download:
        root.mkdir(parents=True, exist_ok=True)
    elif not root.is_dir():
        raise DataError(f"data.root {root}: folder not found (set data.download: true to download)")
    return root


def _medmnist(cfg: DataParams) -> RawData:
    """A 2D MedMNIST set through the medmnist package, with its official train/val/test split."""
    import medmnist

    info = medmnist.INFO[cfg.subset]
    multilabel = info["task"].startswith("multi-label")
    root = _root(cfg, "~/.medmnist")
    size_flag = "" if cfg.medmnist_size == 28 else f"_{cfg.medmnist_size}"
    expected = root / f"{cfg.subset}{size_flag}.npz"
    if not cfg.download and not expected.is_file():
        raise DataError(f"{expected}: not found (MedMNIST {cfg.subset} at {cfg.medmnist_size}px; "
                        "set data.download: true to download it)")
    dataset_class = getattr(medmnist, info["python_class"])
    splits = {}
    for split in ("train", "val", "test"):
        try:
            dataset = dataset_class(split=split, root=str(root), download=cfg.download,
                                    size=cfg.medmnist_size, mmap_mode="r")
        except (RuntimeError, KeyError, OSError, ValueError) as err:
            raise DataError(f"{expected}: cannot read the {split} split ({err})") from None
        images = np.asarray(dataset.imgs)
        if images.ndim == 3:
            images = images[..., None]
        labels = np.asarray(dataset.labels).astype(np.int64)
        names = [info["label"][str(k)] for k in range(len(info["label"]))]
        if multilabel and (labels.ndim != 2 or labels.shape[1] != len(names)):
            raise DataError(f"{expected}: {split} labels have shape {labels.shape}; expected (N, {len(names)})")
        splits[split] = (images, labels if multilabel else labels.reshape(-1))
    return RawData(class_names=names, splits=splits)


def _cifar(cfg: DataParams) -> RawData:
    """CIFAR-10/100 through torchvision (its md5 checks included); validation carved from train."""
    from torchvision import datasets

    dataset_class = datasets.CIFAR10 if cfg.name == "cifar10" else datasets.CIFAR100
    root = _root(cfg, "~/.cache/cifar")
    parts = {}
    for train in (True, False):
        try:
            dataset = dataset_class(str(root), train=train, download=cfg.download)
        except RuntimeError as err:
            folder = root / dataset_class.base_folder
            raise DataError(f"{folder}: {err} (the python-version batches are expected there)") from None
        parts["train" if train else "test"] = (np.asarray(dataset.data), np.asarray(dataset.targets, np.int64))
    return RawData(class_names=list(dataset.classes), splits=parts)


def _image_folder(cfg: DataParams, scratch: Path | None = None) -> RawData:
    """One sub-folder per class; every readable image converted to RGB at `data.image_size`.

    Decoded images go into a memory map in `scratch` when given (written in file order), so
    a folder of any size is decoded with bounded memory.
    """
    from PIL import Image, UnidentifiedImageError
    from tqdm import tqdm

    if not cfg.root:
        raise DataError("data.root: required for data.name imagefolder (a folder with one sub-folder per class)")
    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        raise DataError(f"data.root {root}: folder not found")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(class_dirs) < 2:
        raise DataError(f"data.root {root}: needs at least 2 class sub-folders, found {len(class_dirs)}")
    files = [
        (path, label)
        for label, folder in enumerate(class_dirs)
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        # hidden files and folders (.ipynb_checkpoints/, ._ AppleDouble files) are not the user's images
        if not any(part.startswith(".") for part in path.relative_to(folder).parts)
    ]
    shape = (len(files), cfg.image_size, cfg.image_size, 3)
    if scratch is not None and files:
        scratch.mkdir(parents=True, exist_ok=True)
        images = np.lib.format.open_memmap(scratch / "decoded.npy", mode="w+", dtype=np.uint8, shape=shape)
    else:
        images = np.empty(shape, np.uint8)
    labels, skipped = [], []
    for path, label in tqdm(files, desc=f"decode {root.name}", unit="img", leave=False, disable=None):
        try:
            with Image.open(path) as image:
                images[len(labels)] = fit_image(image.convert("RGB"), cfg.image_size, cfg.resize)
            labels.append(label)
        except (OSError, UnidentifiedImageError, ValueError) as err:
            reason = f"{path}: {type(err).__name__}: {err}"
            if cfg.on_corrupt == "fail":
                raise DataError(f"unreadable image {reason} (data.on_corrupt: skip to skip such files)") from None
            skipped.append(reason)
    if skipped:
        warnings.warn(f"skipped {len(skipped)} unreadable images: {'; '.join(skipped[:5])}", stacklevel=2)
    seen = set(labels)
    empty = [d.name for k, d in enumerate(class_dirs) if k not in seen]
    if empty:
        raise DataError(f"data.root {root}: no readable images in class folders {', '.join(empty)}")
    return RawData(
        class_names=[d.name for d in class_dirs],
        pool=(images[: len(labels)], np.asarray(labels, np.int64)),
        skipped=skipped,
    )
