"""Does int8 pay on this CPU? The deployed architecture at 224 px, fp32 against int8, one run.

    python benchmarks/int8_speed.py [--model resnet18] [--prune 0.5] [--size 224] [--threads 1]
        [--repeats 50] [--out results/int8_speed]

Builds the student architecture (pruned like the prune stage's default, 50% of channels with
Torch-Pruning), exports fp32 ONNX and quantizes it the way the quantize stage does (static QDQ,
per-channel int8 weights, uint8 activations; calibrated on random images: only speed is measured
here), proves the share of MACs ONNX Runtime runs in integer kernels, then times both files at
batch 1 (median of --repeats after warm-up) and at batch 16 in the same process, and prints the
ratios beside the CPU's instruction sets. int8 pays most with VNNI or AMX; on AVX2 alone it can
lose to fp32 at small sizes (the pipeline flags that per run: `slower_than_fp32_twin`). With
--out, the numbers, the command and the machine are written there as result.json and run.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> dict:
    import torch

    from kd_pipeline.core.data import Split
    from kd_pipeline.core.models import create_model
    from kd_pipeline.core.params import PruneParams, QuantizeParams
    from kd_pipeline.evaluate.machine import cpu_info, describe
    from kd_pipeline.predict import median_ms
    from kd_pipeline.prune.pruning import prune_channels
    from kd_pipeline.quantize.integer_kernels import integer_mac_share
    from kd_pipeline.quantize.onnx_export import export_onnx
    from kd_pipeline.quantize.quantization import CalibrationImages, quantize_onnx

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--prune", type=float, default=0.5, help="share of channels removed; 0: unpruned")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    model = create_model(args.model, 10).eval()
    if args.prune:
        prune_channels(model, [3, args.size, args.size], PruneParams(ratio=args.prune))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (32, args.size, args.size, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as folder:
        fp32, int8 = Path(folder) / "m.fp32.onnx", Path(folder) / "m.int8.onnx"
        export_onnx(model, [3, args.size, args.size], fp32)
        calibration = CalibrationImages(Split(images, np.zeros(len(images), np.int64)), np.arange(len(images)),
                                        [0.5] * 3, [0.25] * 3, 8)
        quantize_onnx(fp32, int8, QuantizeParams(), calibration)
        share = integer_mac_share(fp32, int8, Path(folder) / "m.int8.optimized.onnx").share
        one = rng.standard_normal((1, 3, args.size, args.size)).astype(np.float32)
        sixteen = rng.standard_normal((16, 3, args.size, args.size)).astype(np.float32)
        result = {
            "model": args.model, "pruned": args.prune, "size": args.size, "threads": args.threads,
            "integer_mac_share": share,
            "fp32_ms_b1": median_ms(fp32, one, args.threads, args.repeats),
            "int8_ms_b1": median_ms(int8, one, args.threads, args.repeats),
            "fp32_ms_b16": median_ms(fp32, sixteen, args.threads, max(5, args.repeats // 5)),
            "int8_ms_b16": median_ms(int8, sixteen, args.threads, max(5, args.repeats // 5)),
        }
    result["speedup_b1"] = result["fp32_ms_b1"] / result["int8_ms_b1"]
    result["speedup_b16"] = result["fp32_ms_b16"] / result["int8_ms_b16"]
    machine = cpu_info()
    print(f"CPU: {describe(machine)}")
    print(f"{args.model}{f' pruned {args.prune:g}' if args.prune else ''} at {args.size} px, {args.threads} thread(s),"
          f" {share:.1%} of MACs in integer kernels")
    print(f"batch 1:  fp32 {result['fp32_ms_b1']:.2f} ms, int8 {result['int8_ms_b1']:.2f} ms:"
          f" int8 {result['speedup_b1']:.2f}x the speed of fp32")
    print(f"batch 16: fp32 {result['fp32_ms_b16']:.1f} ms, int8 {result['int8_ms_b16']:.1f} ms:"
          f" int8 {result['speedup_b16']:.2f}x")
    if args.out:
        from kd_pipeline.records.provenance import benchmark_record

        benchmark_record(args.out, "benchmarks/int8_speed.py", sys.argv[1:] if argv is None else argv, result)
    return result


if __name__ == "__main__":
    main()
