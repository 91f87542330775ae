"""Which u8×s8 products does this CPU's ONNX Runtime pair? The AVX2 emulation against the real kernels.

    python benchmarks/avx2_pairing.py models/baseline [more checkpoints] [--prepared data/prepared]
        [--label NAME ...] [--out results/NAME]

On a CPU without VNNI, ONNX Runtime adds two adjacent u8×s8 products in a saturating int16 lane
(kd_pipeline.quantize.avx2_arithmetic). Which two products are adjacent is MLAS's choice, read
from its sources, and decides how many pair sums clamp. For each checkpoint this makes the u8s8
int8 file the quantize stage would (static QDQ, per-channel s8 weights, calibrated on the
`quantize.*` training sample), runs it in ONNX Runtime here, and compares its logits, per image
of validation and test, with three arithmetics:

- `exact`: int32 sums, what VNNI and AMX compute;
- `taps`: the emulation's rule until 12/2026, pairs of adjacent input channels at one kernel tap,
  an odd channel count padded with zero at every tap (kept here as the rule the real kernels
  rejected);
- `row`: the emulation's rule (avx2_arithmetic.conv_excess), pairs along the whole im2col row in
  (ky, kx, c) order, so with an odd channel count (the 3-channel first conv) the last channel of
  one tap pairs with the first of the next.

On an AVX2 CPU the arithmetic that disagrees with ONNX Runtime on no image is the one its kernels
run; on a VNNI/AMX CPU `exact` should. Even channel counts pair alike under `taps` and `row`.
With --out, result.json and run.json (command, commit, machine).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from kd_pipeline.quantize.avx2_arithmetic import INT16_MAX, INT16_MIN


def per_tap_excess(
    x: torch.Tensor, w: torch.Tensor, stride: list[int], dilation: list[int]
) -> tuple[torch.Tensor, int, int]:
    """`avx2_arithmetic.conv_excess` as it was until 12/2026: pairs of adjacent input channels at
    one kernel tap, an odd channel count padded with zero at every tap. Only the (tap, pair)
    weights that can leave int16 with this batch's channel maxima are computed, as slices of `x`."""
    if x.shape[1] % 2:
        x, w = F.pad(x, (0, 0, 0, 0, 0, 1)), F.pad(w, (0, 0, 0, 0, 0, 1))
    n, c = x.shape[:2]
    o, _, kh, kw = w.shape
    out_h = (x.shape[2] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    out_w = (x.shape[3] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    pair_w = w.reshape(o, c // 2, 2, kh, kw)
    largest = x.amax(dim=(0, 2, 3)).reshape(1, c // 2, 2, 1, 1)
    reach = (pair_w.abs() * largest).sum(2)  # (O, J, kh, kw): the largest pair sum this batch can make
    excess = torch.zeros(n, o, out_h, out_w, dtype=torch.float64)
    clamped = 0
    candidates = torch.nonzero(reach > INT16_MAX)
    for j, ky, kx in torch.unique(candidates[:, 1:], dim=0).tolist():
        outs = candidates[(candidates[:, 1] == j) & (candidates[:, 2] == ky) & (candidates[:, 3] == kx), 0]
        top, left = ky * dilation[0], kx * dilation[1]
        xs = x[:, 2 * j : 2 * j + 2, top : top + stride[0] * (out_h - 1) + 1 : stride[0],
               left : left + stride[1] * (out_w - 1) + 1 : stride[1]]  # (N, 2, H', W')
        ws = pair_w[outs, j, :, ky, kx]  # (k, 2)
        total = xs[:, None, 0] * ws[None, :, 0, None, None] + xs[:, None, 1] * ws[None, :, 1, None, None]
        part = (total - INT16_MAX).clamp(min=0) - (INT16_MIN - total).clamp(min=0)
        clamped += int(torch.count_nonzero(part))
        excess.index_add_(1, outs, part)
    return excess, n * o * (c // 2) * kh * kw * out_h * out_w, clamped


def emulated(path: Path, images: np.ndarray, card: dict[str, Any], rule: str) -> np.ndarray:
    """Logits of an int8 file under one pairing rule (`exact`, `taps` or `row`)."""
    from kd_pipeline.core.data import normalize_numpy
    from kd_pipeline.quantize import avx2_arithmetic

    x = normalize_numpy(images, card["mean"], card["std"])
    original = avx2_arithmetic.conv_excess
    if rule == "taps":
        avx2_arithmetic.conv_excess = per_tap_excess
    try:
        return avx2_arithmetic.Int8Graph(path)(x, saturate=rule != "exact")
    finally:
        avx2_arithmetic.conv_excess = original


def measure(ckpt: Path, prepared: Path, work: Path) -> dict[str, Any]:
    """Per split: images, and for each rule the decisions and max logit gap against ONNX Runtime here."""
    from kd_pipeline.core.data import load_split
    from kd_pipeline.core.models import load_checkpoint
    from kd_pipeline.core.params import load_params
    from kd_pipeline.evaluate.runtime import onnx_runner
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
    fp32, int8 = work / f"{ckpt.name}.fp32.onnx", work / f"{ckpt.name}.int8.onnx"
    export_onnx(model, card["input_size"], fp32)
    sample = calibration_sample(splits["train"].labels, cfg.calibration_batches * cfg.calibration_batch_size, cfg.seed)
    calibration = CalibrationImages(splits["train"], sample, card["mean"], card["std"], cfg.calibration_batch_size)
    quantize_prepared(prepare_onnx(fp32), int8, cfg, calibration, reduce_range=False)
    rows: dict[str, Any] = {}
    for split in ("val", "test"):
        images = splits[split].images
        runtime = onnx_runner(int8, card["mean"], card["std"], threads=1)(images)
        row: dict[str, Any] = {"images": len(runtime)}
        for rule in ("exact", "taps", "row"):
            logits = emulated(int8, images, card, rule)
            row[rule] = {"decisions_differ": int((logits.argmax(1) != runtime.argmax(1)).sum()),
                         "max_logit_gap": float(np.abs(logits - runtime).max() / np.abs(runtime).max())}
        rows[split] = row
    return rows


def report(name: str, rows: dict[str, Any]) -> None:
    print(f"\n{name}: images whose decision differs from ONNX Runtime here (largest logit gap, share of"
          " the largest logit)")
    heads = ("exact (VNNI/AMX)", "taps (rejected)", "row (the emulation)")
    print(f"{'split':>6} | {'images':>6} | " + " | ".join(f"{head:>22}" for head in heads))
    for split, row in rows.items():
        cells = [f"{row[r]['decisions_differ']:>6} ({row[r]['max_logit_gap']:8.4f})" for r in ("exact", "taps", "row")]
        print(f"{split:>6} | {row['images']:>6} | " + " | ".join(f"{cell:>22}" for cell in cells))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from kd_pipeline.evaluate.machine import cpu_info, describe

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    parser.add_argument("--label", action="append", default=[], help="a name per checkpoint for the result")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    print(f"CPU: {describe(cpu_info())}")
    labels = args.label or [str(path) for path in args.checkpoints]
    result = {}
    with tempfile.TemporaryDirectory() as folder:
        for label, ckpt in zip(labels, args.checkpoints, strict=True):
            result[label] = measure(ckpt, args.prepared, Path(folder))
            report(label, result[label])
    if args.out:
        from kd_pipeline.records.provenance import benchmark_record

        command = sys.argv[1:] if argv is None else argv
        benchmark_record(args.out, "benchmarks/avx2_pairing.py", command, result,
                         code=[Path("kd_pipeline/quantize/avx2_arithmetic.py")])  # the rule under test
    return result


if __name__ == "__main__":
    main()
