"""Does int8 hold on CPUs without VNNI? Each checkpoint in both int8 formats, on both kinds of CPU.

    python benchmarks/int8_formats.py models/baseline [models/student ...] [--prepared data/prepared]
        [--out results/NAME]

For each checkpoint: fp32 ONNX, then int8 the way the quantize stage makes it (static QDQ,
per-channel weights, calibrated on the class-stratified training sample `quantize.*` in
params.yaml names), in the two formats it chooses between: u8s8 (s8 weights) and u8s8 with 7-bit
weights (`reduce_range`). Each file is scored on validation and test as ONNX Runtime runs it on
this CPU and under AVX2's saturating u8s8 arithmetic (kd_pipeline.quantize.avx2_arithmetic, exact
emulation), with the share of pair sums each layer clamps and batch-1 latency here (one thread,
median of 50, all in this one run). The accuracy control takes no layer to float here: this shows
what the format alone does. With --out, result.json and run.json (command, commit, machine).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def measure(ckpt: Path, prepared: Path, work: Path) -> dict[str, Any]:
    """fp32 and both int8 formats of one checkpoint: scores on both splits and CPUs, latency here."""
    from kd_pipeline.core.data import load_split
    from kd_pipeline.core.models import load_checkpoint
    from kd_pipeline.core.params import load_params
    from kd_pipeline.evaluate.costs import time_model
    from kd_pipeline.evaluate.runtime import onnx_runner
    from kd_pipeline.quantize.mixed_precision import FORMATS, avx2_val_scores, val_scores
    from kd_pipeline.quantize.onnx_export import export_onnx
    from kd_pipeline.quantize.quantization import (
        CalibrationImages,
        calibration_sample,
        prepare_onnx,
        quantize_prepared,
    )

    cfg = load_params().quantize
    model, card = load_checkpoint(ckpt)
    splits = {name: load_split(prepared, name) for name in ("train", "val", "test")}
    fp32 = work / f"{ckpt.name}.fp32.onnx"
    export_onnx(model, card["input_size"], fp32)
    source = prepare_onnx(fp32)
    sample = calibration_sample(splits["train"].labels, cfg.calibration_batches * cfg.calibration_batch_size, cfg.seed)

    def latency(path: Path) -> float:
        run = onnx_runner(path, card["mean"], card["std"], threads=1)
        return time_model(run, np.array(splits["val"].images[:1]), 1, warmup=10, repeats=50).latency_ms

    rows: dict[str, Any] = {"fp32": {split: val_scores(fp32, splits[split], card) for split in ("val", "test")}}
    rows["fp32"]["latency_ms"] = latency(fp32)
    for fmt, reduce_range in FORMATS.items():
        int8 = work / f"{ckpt.name}.{len(rows)}.int8.onnx"
        calibration = CalibrationImages(splits["train"], sample, card["mean"], card["std"], cfg.calibration_batch_size)
        quantize_prepared(source, int8, cfg, calibration, reduce_range=reduce_range)
        row: dict[str, Any] = {"latency_ms": latency(int8)}
        for split in ("val", "test"):
            row[split] = val_scores(int8, splits[split], card)
            row[f"{split}_avx2"], saturation = avx2_val_scores(int8, splits[split], card)
            row[f"{split}_clamped"] = {k: v for k, v in saturation.rates().items() if v > 0}
        rows[fmt] = row
    return rows


def report(name: str, rows: dict[str, Any]) -> None:
    print(f"\n{name}")
    print(f"{'format':>20} | {'val acc here':>12} | {'val acc AVX2':>12} | {'test acc here':>13}"
          f" | {'test acc AVX2':>13} | {'test bal here':>13} | {'test bal AVX2':>13} | latency ms"
          " | most clamped (test)")
    for fmt, row in rows.items():
        avx2 = row.get("test_avx2", row["test"])
        worst = sorted(row.get("test_clamped", {}).items(), key=lambda kv: -kv[1])[:1]
        print(f"{fmt:>20} | {row['val']['accuracy']:12.4f} | {row.get('val_avx2', row['val'])['accuracy']:12.4f}"
              f" | {row['test']['accuracy']:13.4f} | {avx2['accuracy']:13.4f}"
              f" | {row['test']['balanced_accuracy']:13.4f} | {avx2['balanced_accuracy']:13.4f}"
              f" | {row['latency_ms']:10.3f} | {', '.join(f'{k} {v:.2%}' for k, v in worst) or '–'}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from kd_pipeline.evaluate.machine import cpu_info, describe

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    parser.add_argument("--label", action="append", default=[], help="a name per checkpoint for the result")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    machine = cpu_info()
    print(f"CPU: {describe(machine)}")
    labels = args.label or [str(path) for path in args.checkpoints]
    result = {}
    with tempfile.TemporaryDirectory() as folder:
        for label, ckpt in zip(labels, args.checkpoints, strict=True):
            result[label] = measure(ckpt, args.prepared, Path(folder))
            report(label, result[label])
    if args.out:
        from kd_pipeline.records.provenance import benchmark_record

        command = sys.argv[1:] if argv is None else argv
        benchmark_record(args.out, "benchmarks/int8_formats.py", command, result,
                         code=[Path("kd_pipeline/quantize/mixed_precision.py")])  # the AVX2 emulation with it
    return result


if __name__ == "__main__":
    main()
