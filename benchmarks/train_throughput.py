"""Training throughput in one run: the pipeline's loop against the loop a user would otherwise write.

    python benchmarks/train_throughput.py [--student resnet18] [--teacher resnet50] [--size 32]
        [--images 2048] [--source 160x120] [--batch 64] [--threads 0] [--device auto] [--compile]
        [--checkpointing]

It writes an image folder of JPEGs (10 imbalanced classes, 160×120 pixels by default, as
benchmarks/memory.py does), prepares it with the library's `prepare`, and times the second of
two epochs (the first warms caches and allocators) of:

- the pipeline's `fit` for the student (memory-mapped uint8 batches, fused AdamW), plain
  cross-entropy; the same with distillation from cached teacher logits; and with the teacher
  run online (forced by a horizontal flip, so the student-with-flip row is its control);
- the pipeline's `fit` for the teacher;
- the plain loop: torchvision `ImageFolder` over the same files (resize, `ToTensor`,
  `Normalize`), `DataLoader` with 0 and with 2 worker processes, the same model, batch, device
  and optimizer (AdamW with torch's defaults), cross-entropy;
- the compute ceiling: the student's training step alone, on one batch already in memory, as many
  steps as an epoch has. No loop over these images can beat the plain loop by more than this row
  does, so it says how much of a gap the data path can close on this machine.

Pipeline epochs include a validation pass over 5% of the images (the plain loop has none), so
the ratios are conservative. Printed: images/s per row and the ratios between them; on CUDA also
the share of the GPU's dense bf16 peak that the teacher's step reaches (3 × 2 FLOPs per MAC per
image: forward and two backward matrix products). `--compile` adds a `torch.compile`d student
row and `--checkpointing` a row with timm's activation checkpointing (less memory, more compute).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory import make_folder  # noqa: E402  (the sibling benchmark's generated folder)

from kd_pipeline.core.data import Normalizer, load_meta, load_split  # noqa: E402
from kd_pipeline.core.models import (  # noqa: E402
    count_macs,  # noqa: E402
    create_model,
    move_to_device,
)
from kd_pipeline.core.params import DataParams, KDParams, TrainParams  # noqa: E402
from kd_pipeline.prepare.preparation import prepare  # noqa: E402
from kd_pipeline.train.training import build_optimizer, fit, resolve_device, seed_everything  # noqa: E402

# Dense bf16 peak of the GPUs we have measured on, in TFLOP/s (vendor datasheets, no sparsity).
BF16_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0}


def pipeline_row(prepared: Path, model_name: str, cfg: TrainParams, device: torch.device,
                 teacher: torch.nn.Module | None = None, tweak: str | None = None) -> dict[str, float]:
    """Images/s of the second epoch of the pipeline's own `fit`."""
    meta = load_meta(prepared)
    train, val = load_split(prepared, "train"), load_split(prepared, "val")
    seed_everything(0, cfg.num_threads)
    model = move_to_device(create_model(model_name, meta.num_classes), device)
    if tweak == "checkpointing":
        model.set_grad_checkpointing(True)
    if tweak == "compile":
        model = torch.compile(model)
    normalizer = Normalizer(meta.mean, meta.std, device, channels_last=device.type == "cuda")
    kd = KDParams() if teacher is not None else None
    result = fit(model, train, val, cfg.model_copy(update={"epochs": 2}), normalizer, meta.num_classes,
                 teacher=teacher, kd=kd, name=model_name)
    second = result.history[1]
    return {"images_per_s": len(train) / second["epoch_time_s"], "peak_memory_mb": second["peak_memory_mb"]}


def plain_row(folder: Path, model_name: str, size: int, batch: int, workers: int, device: torch.device,
              mean: list[float], std: list[float]) -> dict[str, float]:
    """Images/s of the second epoch of a textbook torchvision loop over the image files."""
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    transform = transforms.Compose([transforms.Resize((size, size)), transforms.ToTensor(),
                                    transforms.Normalize(mean, std)])
    dataset = datasets.ImageFolder(str(folder), transform=transform)
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers,
                        pin_memory=device.type == "cuda")
    torch.manual_seed(0)
    model = create_model(model_name, len(dataset.classes)).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    seconds = 0.0
    for _ in range(2):
        started = time.perf_counter()
        for images, labels in loader:
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss = loss_fn(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
    return {"images_per_s": len(dataset) / seconds}


def ceiling_row(model_name: str, num_classes: int, size: int, steps: int, cfg: TrainParams,
                device: torch.device) -> dict[str, float]:
    """Images/s of the student's step with no data path at all: one batch, already normalized."""
    seed_everything(0, cfg.num_threads)
    model = move_to_device(create_model(model_name, num_classes), device).train()
    optimizer = build_optimizer(model, cfg)
    images = torch.randn(cfg.batch_size, 3, size, size, device=device)
    if device.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, num_classes, (cfg.batch_size,), device=device)
    seconds = 0.0
    for _ in range(2):
        started = time.perf_counter()
        for _ in range(steps):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss = torch.nn.functional.cross_entropy(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
    return {"images_per_s": steps * cfg.batch_size / seconds}


def peak_share(device: torch.device, macs: int, images_per_s: float) -> str:
    """The teacher step's achieved FLOP/s as a share of the GPU's dense bf16 peak."""
    if device.type != "cuda":
        return "n/a on CPU"
    name = torch.cuda.get_device_name(device)
    peak = next((v for k, v in BF16_PEAK_TFLOPS.items() if k in name), None)
    achieved = 6 * macs * images_per_s / 1e12
    return f"{achieved:.1f} TFLOP/s" + (f" = {achieved / peak:.1%} of {name}'s {peak:.0f}" if peak else f" on {name}")


def measure(args: argparse.Namespace, work: Path) -> dict[str, dict[str, float]]:
    folder, prepared = work / "folder", work / "prepared"
    make_folder(folder, args.images, size=args.source)
    prepare(DataParams(name="imagefolder", root=str(folder), image_size=args.size, val_fraction=0.05,
                       test_fraction=0.05), prepared)
    meta = load_meta(prepared)
    device = resolve_device(args.device)
    cfg = TrainParams(batch_size=args.batch, num_threads=args.threads, device=args.device)
    flip = cfg.model_copy(update={"augment": cfg.augment.model_copy(update={"hflip": True})})
    seed_everything(0, args.threads)
    teacher = move_to_device(create_model(args.teacher, meta.num_classes), device).eval()
    rows: dict[str, dict[str, float]] = {}
    runs: list[tuple[str, Any]] = [
        ("pipeline student", lambda: pipeline_row(prepared, args.student, cfg, device)),
        ("pipeline student, KD, cached teacher logits",
         lambda: pipeline_row(prepared, args.student, cfg, device, teacher)),
        ("pipeline student, hflip", lambda: pipeline_row(prepared, args.student, flip, device)),
        ("pipeline student, hflip, KD, online teacher",
         lambda: pipeline_row(prepared, args.student, flip, device, teacher)),
        ("pipeline teacher", lambda: pipeline_row(prepared, args.teacher, cfg, device)),
    ]
    for workers in (0, 2):
        runs.append((f"plain loop student, {workers} workers", lambda w=workers: plain_row(
            folder, args.student, args.size, args.batch, w, device, meta.mean, meta.std)))
    steps = len(load_split(prepared, "train")) // args.batch
    runs.append(("student step alone, batch in memory", lambda: ceiling_row(
        args.student, meta.num_classes, args.size, steps, cfg, device)))
    if args.compile:
        runs.append(("pipeline student, torch.compile",
                     lambda: pipeline_row(prepared, args.student, cfg, device, tweak="compile")))
    if args.checkpointing:
        runs.append(("pipeline student, activation checkpointing",
                     lambda: pipeline_row(prepared, args.student, cfg, device, tweak="checkpointing")))
    for name, run in runs:
        rows[name] = run()
        print(f"{name}: {rows[name]['images_per_s']:.0f} images/s", flush=True)
    rows["pipeline teacher"]["macs"] = count_macs(teacher, [3, args.size, args.size])
    return rows


def report(rows: dict[str, dict[str, float]], args: argparse.Namespace) -> None:
    speed = {name: row["images_per_s"] for name, row in rows.items()}
    plain = max(speed["plain loop student, 0 workers"], speed["plain loop student, 2 workers"])
    student = speed["pipeline student"]
    print(f"\n{args.student} student / {args.teacher} teacher at {args.size} px, batch {args.batch},"
          f" {torch.get_num_threads()} threads, {args.images} {args.source[0]}x{args.source[1]} JPEGs,"
          " second epoch of two")
    print("| row | images/s |\n|---|---|")
    for name, value in speed.items():
        print(f"| {name} | {value:.0f} |")
    print(f"\npipeline student / best plain loop: {student / plain:.2f}x")
    ceiling = speed["student step alone, batch in memory"]
    print(f"compute ceiling / best plain loop: {ceiling / plain:.2f}x (the most any data path could gain here);"
          f" the pipeline's loop reaches {student / ceiling:.0%} of the ceiling")
    cached = speed["pipeline student, KD, cached teacher logits"]
    print(f"KD step with cached teacher logits costs {student / cached:.2f}x a plain student step")
    online = speed["pipeline student, hflip, KD, online teacher"]
    print(f"KD step with the teacher online costs {speed['pipeline student, hflip'] / online:.2f}x a plain student"
          " step (both with hflip)")
    for tweak in ("torch.compile", "activation checkpointing"):
        name = f"pipeline student, {tweak}"
        if name in speed:
            memory = rows[name]["peak_memory_mb"]
            note = f", peak {memory:.0f} MB vs {rows['pipeline student']['peak_memory_mb']:.0f} MB" if (
                args.device != "cpu" and torch.cuda.is_available()) else ""
            print(f"{tweak}: {speed[name] / student:.2f}x the pipeline student's images/s{note}")
    device = resolve_device(args.device)
    print(f"teacher step: {peak_share(device, int(rows['pipeline teacher']['macs']), speed['pipeline teacher'])}")


def source_size(text: str) -> tuple[int, int]:
    """WIDTHxHEIGHT, e.g. 500x375 (ImageNet's typical photo)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT, e.g. 500x375") from None
    if min(width, height) < 8:
        raise argparse.ArgumentTypeError(f"{text!r}: each side must be at least 8 pixels")
    return width, height


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", default="resnet18")
    parser.add_argument("--teacher", default="resnet50")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--source", default=(160, 120), type=source_size, help="the generated JPEGs' WIDTHxHEIGHT")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0, help="0: torch's default")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--compile", action="store_true", help="add a torch.compile row")
    parser.add_argument("--checkpointing", action="store_true", help="add an activation-checkpointing row")
    parser.add_argument("--workdir", default=None, help="where to write the folder (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=None, help="write result.json and run.json there")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.workdir) as work:
        rows = measure(args, Path(work))
    report(rows, args)
    if args.out:
        from kd_pipeline.records.provenance import benchmark_record

        settings = {k: v for k, v in vars(args).items() if k not in ("out", "workdir")}
        result = {"settings": {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()},
                  "threads": torch.get_num_threads(), "rows": rows}
        benchmark_record(args.out, "benchmarks/train_throughput.py", sys.argv[1:] if argv is None else argv, result)


if __name__ == "__main__":
    main()
