"""Peak memory of `prepare` and of one training epoch on image folders of growing size.

    python benchmarks/memory.py [--images 4000 16000] [--image-size 64] [--model resnet18]

For each size it writes an image folder of JPEGs (10 imbalanced classes, 160×120 pixels, so
the resize really runs), then in fresh child processes runs the library's `prepare` on it and
one epoch of `fit` (no teacher) on the prepared arrays, sampling memory every 2 ms. Printed:
the prepared train/val/test arrays' size on disk, and each step's peak RSS and peak anonymous
memory (RSS minus file-backed pages) above the process's baseline after imports.

Prepared splits are read memory-mapped, so anonymous memory (what the job needs and cannot be
reclaimed) should stay flat as the folder grows, while total RSS may grow by cached file pages
of the map, which the kernel drops under pressure.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import tempfile
from pathlib import Path
from typing import Any


def make_folder(root: Path, count: int, seed: int = 0, size: tuple[int, int] = (160, 120)) -> None:
    """`count` JPEGs of `size` (width, height) in 10 class folders, sizes 1:2:…:10, each class its own
    colour pattern."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    weights = np.arange(1, 11) / np.arange(1, 11).sum()
    per_class = np.maximum(3, np.round(weights * count).astype(int))
    yy, xx = np.mgrid[0:size[1], 0:size[0]]
    for k, n in enumerate(per_class):
        folder = root / f"class_{k}"
        folder.mkdir(parents=True)
        base = np.stack([(xx * (k + 1)) % 256, (yy * (10 - k)) % 256, (xx + yy + 25 * k) % 256], axis=-1)
        for i in range(n):
            noise = rng.integers(-40, 41, base.shape)
            image = np.clip(base + noise, 0, 255).astype(np.uint8)
            Image.fromarray(image).save(folder / f"{i}.jpg", quality=90)


def _prepare(folder: str, out: str, image_size: int, queue: Any) -> None:
    from kd_pipeline.core.params import DataParams
    from kd_pipeline.evaluate.costs import PeakRSS
    from kd_pipeline.prepare.preparation import prepare

    with PeakRSS() as memory:
        prepare(DataParams(name="imagefolder", root=folder, image_size=image_size), out)
    queue.put((memory.growth_mb, memory.anon_growth_mb))


def _epoch(prepared: str, model_name: str, queue: Any) -> None:
    import torch

    from kd_pipeline.core.data import Normalizer, load_meta, load_split
    from kd_pipeline.core.models import create_model
    from kd_pipeline.core.params import TrainParams
    from kd_pipeline.evaluate.costs import PeakRSS
    from kd_pipeline.train.training import fit, seed_everything

    meta = load_meta(prepared)
    train, val = load_split(prepared, "train"), load_split(prepared, "val")
    seed_everything(0)
    model = create_model(model_name, meta.num_classes)
    normalizer = Normalizer(meta.mean, meta.std, torch.device("cpu"), channels_last=False)
    cfg = TrainParams(epochs=1, device="cpu")
    with PeakRSS() as memory:
        fit(model, train, val, cfg, normalizer, meta.num_classes, name=model_name)
    queue.put((memory.growth_mb, memory.anon_growth_mb))


def _in_child(target: Any, *args: Any) -> tuple[float, float]:
    """Run in a fresh process, so each peak starts from a clean heap."""
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=target, args=(*args, queue))
    process.start()
    result = queue.get()
    process.join()
    if process.exitcode:
        raise SystemExit(f"{target.__name__} failed with exit code {process.exitcode}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, nargs="+", default=[4000, 16000])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--workdir", default=None, help="where to write the folders (default: a temp dir)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as work:
        for count in args.images:
            folder, prepared = Path(work) / f"folder_{count}", Path(work) / f"prepared_{count}"
            make_folder(folder, count)
            folder_mb = sum(p.stat().st_size for p in folder.rglob("*.jpg")) / 2**20
            prep_rss, prep_anon = _in_child(_prepare, str(folder), str(prepared), args.image_size)
            arrays_mb = sum(p.stat().st_size for p in prepared.rglob("images.npy")) / 2**20
            epoch_rss, epoch_anon = _in_child(_epoch, str(prepared), args.model)
            rows.append((count, folder_mb, arrays_mb, prep_rss, prep_anon, epoch_rss, epoch_anon))
            print(f"{count} images: prepare peak +{prep_rss:.0f} MB RSS (+{prep_anon:.0f} MB anonymous),"
                  f" epoch peak +{epoch_rss:.0f} MB RSS (+{epoch_anon:.0f} MB anonymous)", flush=True)
    print(f"\n{args.model} at {args.image_size}px, peaks above each process's baseline after imports:")
    print("| images | JPEG folder (MB) | prepared arrays (MB) | prepare RSS (MB) | prepare anon (MB)"
          " | epoch RSS (MB) | epoch anon (MB) |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print("| {} | {:.0f} | {:.0f} | {:.0f} | {:.0f} | {:.0f} | {:.0f} |".format(*row))
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        print(f"\n{last[0] / first[0]:.1f}x the images: prepared arrays {last[2] / first[2]:.1f}x,"
              f" prepare anonymous peak {last[4] / max(first[4], 1):.2f}x,"
              f" epoch anonymous peak {last[6] / max(first[6], 1):.2f}x")


if __name__ == "__main__":
    main()
