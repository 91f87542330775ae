"""int8 calibration choices against their fp32 source on a prepared test split, in one run.

    python benchmarks/calibration.py [--prepared data/prepared] [--onnx models/quantized/pruned.fp32.onnx]
        [--images 256] [--threads 2]

It quantizes the fp32 ONNX file the way the quantize stage does (static QDQ, per-channel int8
weights, uint8 activations, the stage's class-stratified and seeded sample of training images)
once per ONNX Runtime calibration method (MinMax, the stage's; Percentile; Entropy) and once
with symmetric int8 activations, and prints each int8 file's test accuracy and its top-1
agreement with the fp32 file. When int8 loses accuracy on your data, it tells a calibration
choice (rows that differ) from a loss no calibration fixes (rows that agree). Multi-class only.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from kd_pipeline.core.data import load_meta, load_split, normalize_numpy
from kd_pipeline.quantize.quantization import CalibrationImages, calibration_sample


def predict(path: Path, images: np.ndarray, threads: int) -> np.ndarray:
    """Top-1 classes of an ONNX file on normalized images, in batches of 256."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    logits = [session.run(None, {"input": images[i : i + 256]})[0] for i in range(0, len(images), 256)]
    return np.concatenate(logits).argmax(1)


def variants() -> list[tuple[str, Any, dict[str, Any]]]:
    """(row name, calibration method, extra options) of the choices compared."""
    from onnxruntime.quantization import CalibrationMethod

    return [
        ("MinMax (the quantize stage)", CalibrationMethod.MinMax, {}),
        ("Percentile 99.999", CalibrationMethod.Percentile, {"CalibPercentile": 99.999}),
        ("Percentile 99.99", CalibrationMethod.Percentile, {"CalibPercentile": 99.99}),
        ("Entropy", CalibrationMethod.Entropy, {}),
        ("MinMax, symmetric int8 activations", CalibrationMethod.MinMax, {"ActivationSymmetric": True}),
    ]


def measure(prepared: Path, fp32: Path, count: int, threads: int, work: Path) -> list[tuple[str, float, float]]:
    """(row, int8 test accuracy, agreement with fp32) for the fp32 file and each choice."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    meta = load_meta(prepared)
    if meta.task != "multiclass":
        raise SystemExit(f"{prepared}: task {meta.task}; this benchmark compares top-1 classes (multiclass only)")
    train, test = load_split(prepared, "train"), load_split(prepared, "test")
    labels = np.asarray(test.labels).reshape(-1)
    images = normalize_numpy(np.array(test.images), meta.mean, meta.std)
    reference = predict(fp32, images, threads)
    rows = [("fp32 source", float(np.mean(reference == labels)), 1.0)]
    prepped, int8 = work / "prep.onnx", work / "int8.onnx"
    quant_pre_process(str(fp32), str(prepped), skip_symbolic_shape=True)
    chosen = calibration_sample(np.asarray(train.labels), count, seed=0)
    class Reader(CalibrationDataReader):
        """The stage's calibration batches, afresh for each quantization."""

        def __init__(self) -> None:
            self.source = CalibrationImages(train, chosen, meta.mean, meta.std, batch_size=32)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return self.source.get_next()

    for name, method, extra in variants():
        activations = QuantType.QInt8 if extra.get("ActivationSymmetric") else QuantType.QUInt8
        quantize_static(str(prepped), str(int8), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=activations, weight_type=QuantType.QInt8, calibrate_method=method,
                        extra_options=extra)
        predicted = predict(int8, images, threads)
        rows.append((name, float(np.mean(predicted == labels)), float(np.mean(predicted == reference))))
        print(f"{name}: accuracy {rows[-1][1]:.4f}, agreement {rows[-1][2]:.4f}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    parser.add_argument("--onnx", type=Path, default=Path("models/quantized/pruned.fp32.onnx"))
    parser.add_argument("--images", type=int, default=256, help="calibration images (the stage's 8 batches of 32)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="write result.json and run.json there")
    args = parser.parse_args(argv)
    for path in (args.prepared / "meta.json", args.onnx):
        if not path.is_file():
            raise SystemExit(f"{path}: not found (run dvc repro quantize first, or pass --prepared/--onnx)")
    with tempfile.TemporaryDirectory() as work:
        rows = measure(args.prepared, args.onnx, args.images, args.threads, Path(work))
    print(f"\n{args.onnx} on {args.prepared}/test, {args.images} calibration images")
    print("| calibration | test accuracy | top-1 agreement with fp32 |\n|---|---|---|")
    for name, accuracy, agreement in rows:
        print(f"| {name} | {accuracy:.4f} | {agreement:.4f} |")
    if args.out:
        from kd_pipeline.records.provenance import benchmark_record

        result = {"prepared": str(args.prepared), "onnx": str(args.onnx), "calibration_images": args.images,
                  "rows": [{"calibration": n, "test_accuracy": a, "agreement_with_fp32": g} for n, a, g in rows]}
        benchmark_record(args.out, "benchmarks/calibration.py", sys.argv[1:] if argv is None else argv, result)


if __name__ == "__main__":
    main()
