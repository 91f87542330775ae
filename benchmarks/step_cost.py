"""What a training step costs per image, by model, input size and batch size, on this CPU, one run:

    python benchmarks/step_cost.py [--models resnet50 resnet34 resnet18] [--sizes 32 24 16]
        [--batches 64 128] [--modes fp32 bf16 channels_last] [--steps 5] [--out results/step_cost]

Why it exists: on digits (8×8 images upsampled) the chain's ResNets see tiny feature maps, so
a step's cost follows the weights more than the pixels. This measures that, so a cheaper default
is chosen by measurement: the pipeline's own model factory and optimizer (fused AdamW), random
inputs already in memory (no data path), forward + backward + step, the median of `--steps`
timed steps after two warm-up steps. Prints ms per image and each row's speed against the
model's first size, batch and mode; with --out writes result.json and run.json there.

`--modes` (issue 40's training-budget question) adds what a `train` setting could switch on:
`bf16` (autocast to bfloat16 on the CPU: AMX or AVX-512 BF16 kernels where the CPU has them) and
`channels_last` (NHWC tensors and weights). Speed only: a mode that pays here would still need
its accuracy measured against fp32 before it became a setting.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kd_pipeline.core.models import create_model  # noqa: E402
from kd_pipeline.core.params import TrainParams  # noqa: E402
from kd_pipeline.train.training import build_optimizer, seed_everything  # noqa: E402

MODES = ("fp32", "bf16", "channels_last")


def step_ms_per_image(model_name: str, size: int, batch: int, steps: int, num_classes: int = 10,
                      mode: str = "fp32") -> float:
    """Median wall milliseconds per image of one training step (forward, backward, optimizer)."""
    seed_everything(0)
    model = create_model(model_name, num_classes).train()
    images, labels = torch.randn(batch, 3, size, size), torch.randint(0, num_classes, (batch,))
    if mode == "channels_last":
        model, images = model.to(memory_format=torch.channels_last), images.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, TrainParams())
    times = []
    for step in range(steps + 2):
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16"):
            loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step >= 2:
            times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000.0 / batch


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet50", "resnet34", "resnet18"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[32, 24, 16])
    parser.add_argument("--batches", nargs="+", type=int, default=[64, 128])
    parser.add_argument("--modes", nargs="+", default=["fp32"], choices=MODES)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    from kd_pipeline.evaluate.machine import cpu_info, describe

    machine = cpu_info()
    print(f"CPU: {describe(machine)}, {torch.get_num_threads()} threads")
    rows = []
    for model_name in args.models:
        first = None
        for batch in args.batches:
            for size in args.sizes:
                for mode in args.modes:
                    ms = step_ms_per_image(model_name, size, batch, args.steps, mode=mode)
                    first = first or ms
                    rows.append({"model": model_name, "size": size, "batch": batch, "mode": mode,
                                 "ms_per_image": round(ms, 3), "speed_vs_first": round(first / ms, 2)})
                    print(f"{model_name:22s} {size:3d} px batch {batch:4d} {mode:13s}: {ms:6.3f} ms/image"
                          f" ({first / ms:.2f}x the {args.sizes[0]} px, batch {args.batches[0]}, {args.modes[0]} row)",
                          flush=True)
    result = {"threads": torch.get_num_threads(), "steps": args.steps, "rows": rows}
    if args.out:
        from kd_pipeline.records.provenance import benchmark_record

        benchmark_record(args.out, "benchmarks/step_cost.py", sys.argv[1:] if argv is None else argv, result)
    return result


if __name__ == "__main__":
    main()
