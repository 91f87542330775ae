"""Time every variant on this CPU in one run and print ratios against the teacher.

    python benchmarks/variants.py [--threads 1] [--repeats 100] [--batch 64]

Run after `dvc repro` (it reads models/ and data/prepared/). Fixed threads, warm-up, median
of repeats: batch-1 latency, batch-N throughput, file size, parameters and MACs, then the gain
of each step apart: eager PyTorch → ONNX Runtime fp32 → ONNX Runtime int8.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from kd_pipeline.core.data import load_meta, load_split
from kd_pipeline.core.params import load_params
from kd_pipeline.core.ranking import decision_metric
from kd_pipeline.core.roles import source_of
from kd_pipeline.evaluate.comparison import compare, default_loaders
from kd_pipeline.evaluate.machine import describe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    params = load_params()
    params = params.model_copy(update={"evaluate": params.evaluate.model_copy(
        update={"num_threads": args.threads, "repeats": args.repeats, "throughput_batch": args.batch})})
    meta = load_meta("data/prepared")
    train, val, test = (load_split("data/prepared", split) for split in ("train", "val", "test"))
    loaders = default_loaders(Path("models"), meta, args.threads)
    metric = decision_metric(params.train.monitor, train.labels)
    evaluation = compare(loaders, val, test, meta, params, metric)["evaluation"]
    variants = evaluation["variants"]
    print(f"\nCPU: {describe(evaluation['machine'])}")
    print(f"{args.threads} thread(s), median of {args.repeats}; ratios are teacher / variant; test accuracy")
    print(f"{'variant':14} {'acc':>7} {'params M':>9} {'MMACs':>8} {'MB':>7} {'ms b1':>7} "
          f"{'img/s':>7} {'x faster':>9} {'x smaller':>10} {'x thruput':>10}")
    teacher = variants["teacher"]
    for name, m in variants.items():
        print(f"{name:14} {m['accuracy']:7.4f} {m['parameters'] / 1e6:9.2f} {m.get('macs', 0) / 1e6:8.1f}"
              f" {m['size_mb']:7.2f} {m['latency_ms']:7.2f} {m['throughput']:7.0f}"
              f" {teacher['latency_ms'] / m['latency_ms']:9.2f} {teacher['size_mb'] / m['size_mb']:10.2f}"
              f" {m['throughput'] / teacher['throughput']:10.2f}")
    print("\nwhere the gain comes from (same model, one step at a time):")
    for source in sorted({source_of(name) for name in variants if name.endswith("_int8")}):
        steps = [(source, f"{source}_onnx", "ONNX Runtime fp32 vs eager PyTorch"),
                 (f"{source}_onnx", f"{source}_int8", "int8 vs fp32, both in ONNX Runtime")]
        for before, after, what in steps:
            if before in variants and after in variants:
                a, b = variants[before], variants[after]
                print(f"  {after:14} {what}: latency {a['latency_ms'] / b['latency_ms']:.2f}x lower,"
                      f" throughput {b['throughput'] / a['throughput']:.2f}x, size {a['size_mb'] / b['size_mb']:.2f}x"
                      f" smaller, accuracy {b['accuracy'] - a['accuracy']:+.4f}")


if __name__ == "__main__":
    main()
