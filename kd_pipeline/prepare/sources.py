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

from kd_pipeline.core.errors import DataError
from kd_pipeline.core.params import DataParams
from kd_pipeline.prepare.imaging import fit_image, to_rgb

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


# Folder names that mean "a split", not "a class": a root holding them is already split.
SPLIT_FOLDERS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def folder_layout(root: Path) -> dict[str, Path]:
    """{split: folder}: {"pool": root} for one folder per class, or the splits a root already holds.

    A root with `train/` and `test/` (and optionally `val/`) keeps that split, each holding one
    folder per class, as CIFAR-10's JPEG release and most exported datasets do. Read as
    classes, such a root would silently become "train" against "test"; a root that mixes split
    folders with other folders is refused for the same reason.
    """
    dirs = _visible_dirs(root)
    named = [d for d in dirs if d.name.lower() in SPLIT_FOLDERS]
    if not named:
        if len(dirs) < 2:
            found = f" ({dirs[0].name}/: point data.root at the folder that holds the class folders)" if dirs else ""
            raise DataError(f"data.root {root}: needs at least 2 class sub-folders, found {len(dirs)}{found}")
        return {"pool": root}
    others = [d.name for d in dirs if d not in named]
    if others:
        raise DataError(
            f"data.root {root}: mixes split folders ({', '.join(d.name for d in named)}) with other folders"
            f" ({', '.join(others[:5])}); use one folder per class, or train/ and test/ (optionally val/)"
            " each holding one folder per class"
        )
    layout: dict[str, Path] = {}
    for folder in named:
        split = SPLIT_FOLDERS[folder.name.lower()]
        if split in layout:
            raise DataError(f"data.root {root}: both {layout[split].name}/ and {folder.name}/ name the {split} split")
        layout[split] = folder
    if "train" not in layout:
        raise DataError(f"data.root {root}: split folders {', '.join(d.name for d in named)} but no train/")
    for split, folder in layout.items():
        if not _visible_dirs(folder):
            raise DataError(f"data.root {folder}: the {split} split holds no class sub-folders")
    return {split: layout[split] for split in ("train", "val", "test") if split in layout}


def _class_names(layout: dict[str, Path]) -> list[str]:
    """The training split's class folders; other splits may hold fewer, never others."""
    first = next(iter(layout.values()))
    names = [d.name for d in _visible_dirs(first)]
    for folder in layout.values():
        unknown = sorted(set(d.name for d in _visible_dirs(folder)) - set(names))
        if unknown:
            raise DataError(f"data.root {folder}: class folders not in {first.name}/: {', '.join(unknown[:5])}")
    return names


def _image_files(folder: Path) -> list[Path]:
    # hidden files and folders (.ipynb_checkpoints/, ._ AppleDouble files) are not the user's images
    return [
        path
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not any(part.startswith(".") for part in path.relative_to(folder).parts)
    ]


def _decode(
    files: list[tuple[str, Path, int]], cfg: DataParams, scratch: Path | None, name: str
) -> tuple[np.ndarray, list[tuple[str, int]], list[str]]:
    """Every readable file fitted to RGB at `data.image_size`, in file order, into a memory map in
    `scratch` when given (bounded memory for a folder of any size); (split, label) of each image
    kept, and one line per file skipped (or a DataError with `data.on_corrupt: fail`)."""
    from PIL import Image, UnidentifiedImageError
    from tqdm import tqdm

    shape = (len(files), cfg.image_size, cfg.image_size, 3)
    if scratch is not None and files:
        scratch.mkdir(parents=True, exist_ok=True)
        images = np.lib.format.open_memmap(scratch / "decoded.npy", mode="w+", dtype=np.uint8, shape=shape)
    else:
        images = np.empty(shape, np.uint8)
    kept: list[tuple[str, int]] = []
    skipped: list[str] = []
    for split, path, label in tqdm(files, desc=f"decode {name}", unit="img", leave=False, disable=None):
        try:
            with Image.open(path) as image:
                images[len(kept)] = fit_image(to_rgb(image), cfg.image_size, cfg.resize)
            kept.append((split, label))
        except (OSError, UnidentifiedImageError, ValueError) as err:
            reason = f"{path}: {type(err).__name__}: {err}"
            if cfg.on_corrupt == "fail":
                raise DataError(f"unreadable image {reason} (data.on_corrupt: skip to skip such files)") from None
            skipped.append(reason)
    if skipped:
        warnings.warn(f"skipped {len(skipped)} unreadable images: {'; '.join(skipped[:5])}", stacklevel=3)
    return images, kept, skipped


def _image_folder(cfg: DataParams, scratch: Path | None = None) -> RawData:
    """One sub-folder per class (or train/, val/, test/ each holding them); every readable
    image converted to RGB at `data.image_size`.

    Decoded images go into a memory map in `scratch` when given (written in file order), so
    a folder of any size is decoded with bounded memory.
    """
    if not cfg.root:
        raise DataError("data.root: required for data.name imagefolder (a folder with one sub-folder per class)")
    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        raise DataError(f"data.root {root}: folder not found")
    layout = folder_layout(root)
    names = _class_names(layout)
    files = [
        (split, path, label)
        for split, split_root in layout.items()
        for label, name in enumerate(names)
        if (split_root / name).is_dir()
        for path in _image_files(split_root / name)
    ]
    images, kept, skipped = _decode(files, cfg, scratch, root.name)
    splits = np.asarray([split for split, _ in kept])
    labels = np.asarray([label for _, label in kept], np.int64)
    first = next(iter(layout))
    empty = [name for k, name in enumerate(names) if not (labels[splits == first] == k).any()]
    if empty:
        where = root if first == "pool" else layout[first]
        raise DataError(f"data.root {where}: no readable images in class folders {', '.join(empty)}")
    if first == "pool":
        return RawData(class_names=names, pool=(images[: len(kept)], labels), skipped=skipped)
    # Files were decoded split by split, so each split is one contiguous run of the memory map.
    parts = {}
    for split in layout:
        where = np.flatnonzero(splits == split)
        if not len(where):
            raise DataError(f"data.root {layout[split]}: no readable images in the {split} split")
        start, stop = int(where[0]), int(where[-1]) + 1
        parts[split] = (images[start:stop], labels[start:stop])
        missing = [name for k, name in enumerate(names) if not (parts[split][1] == k).any()]
        if missing:
            warnings.warn(f"{layout[split]}: no images of {', '.join(missing[:5])}; that split's"
                          " per-class metrics leave them out", stacklevel=2)
    return RawData(class_names=names, splits=parts, skipped=skipped)
