"""NNCF's accuracy control against the pipeline's own, on the same models:
`python benchmarks/nncf_accuracy_control.py CHECKPOINT... [--prepared data/prepared] [--out results/NAME]`.

For each checkpoint (a `models/<role>` folder), one fp32 ONNX file is quantized twice, from the
same 256 class-stratified training images, against the same validation split, decision metric
and budget (params.yaml's `quantize`, `train.monitor`):

- **ours**: `kd_pipeline.quantize.mixed_precision.controlled_int8`, as the quantize stage runs it
  (both int8 formats, each checked on this CPU and under AVX2's saturating arithmetic, then the
  layers with the worst SQNR kept in float until the validation drop is within budget);
- **NNCF**: `nncf.quantize_with_accuracy_control` (ONNX backend; preset MIXED, that is asymmetric
  uint8 activations and symmetric int8 weights like ours; otherwise NNCF's defaults), which ranks
  layers by their effect on the model's outputs and reverts them to float until within budget.

Each result is then scored by the same code: the decision metric and accuracy on validation and
test, on this CPU and under AVX2 arithmetic (the emulation, where it reads the file), the share of
conv/matmul MACs ONNX Runtime runs in integer kernels, and the nodes left in float; with the
process CPU seconds and wall seconds each took. One run; the CPU is printed and recorded.
NNCF is an optional dependency: `pip install nncf==3.4.0`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def _scores(path: Path, splits: dict[str, Any], card: dict[str, Any]) -> dict[str, Any]:
    """Validation and test scores of one int8 file, here and under AVX2 arithmetic."""
    from kd_pipeline.core.errors import CompressionError
    from kd_pipeline.quantize.mixed_precision import avx2_val_scores, val_scores

    row: dict[str, Any] = {}
    for split, data in splits.items():
        row[split] = val_scores(path, data, card)
        try:
            row[f"{split}_avx2"] = avx2_val_scores(path, data, card)[0]
        except CompressionError as err:  # a node layout the emulation does not read
            row[f"{split}_avx2"] = None
            row["avx2_note"] = str(err)
    return row


def ours(fp32: Path, work: Path, cfg: Any, train: Any, indices: np.ndarray, val: Any, card: dict[str, Any],
         metric: str) -> tuple[Path, dict[str, Any]]:
    """The quantize stage's accuracy-controlled int8 of `fp32`."""
    from kd_pipeline.quantize.mixed_precision import controlled_int8
    from kd_pipeline.quantize.quantization import CalibrationImages, prepare_onnx

    prepared, int8 = prepare_onnx(fp32), work / "ours.int8.onnx"
    control = controlled_int8(fp32, prepared, int8, cfg, calibration=lambda: CalibrationImages(
        train, indices, card["mean"], card["std"], cfg.calibration_batch_size), val=val, card=card, metric=metric)
    chosen = control.chosen
    return int8, {"format": chosen.format, "kept_float": chosen.kept_float, "attempts": len(control.attempts),
                  "within_budget_on_validation": bool(chosen.check["pass"]), "note": control.note}


def validation(card: dict[str, Any], metric: str) -> Any:
    """NNCF's validation function: the decision metric, and each item's own score (1.0 when its
    prediction is right). Per-item scores put NNCF in its "metric mode", where it ranks layers by
    how much reverting each one recovers; per-item logits would select its NMSE ranking, which
    NNCF 3.4 implements for OpenVINO only (`UnsupportedBackendError` for ONNX the moment a budget
    makes it search)."""
    import onnx
    import onnxruntime as ort

    from kd_pipeline.core.evaluation import full_metrics

    def validate(model: onnx.ModelProto, data: Any) -> tuple[float, list[float]]:
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        batch = list(data)
        logits = np.concatenate([session.run(None, {"input": np.concatenate([x for x, _ in batch[i:i + 256]])})[0]
                                 for i in range(0, len(batch), 256)])
        labels = np.array([y for _, y in batch])
        right = [float(p == y) for p, y in zip(logits.argmax(1), labels, strict=True)]
        score = full_metrics(labels, logits, card["class_names"]).summary[metric] if len(batch) > 1 else right[0]
        return float(score), right

    return validate


def nncf_control(fp32: Path, work: Path, cfg: Any, train: Any, indices: np.ndarray, val: Any,
                 card: dict[str, Any], metric: str) -> tuple[Path, dict[str, Any]]:
    """NNCF's accuracy-controlled int8 of `fp32`, validated by the same metric on the same split."""
    import nncf
    import onnx

    from kd_pipeline.core.data import normalize_numpy

    calibration = [normalize_numpy(np.array(train.images[[i]]), card["mean"], card["std"]) for i in indices]
    items = [(normalize_numpy(np.array(val.images[[i]]), card["mean"], card["std"]), int(val.labels[i]))
             for i in range(len(val))]
    model = onnx.load(str(fp32))
    quantized = nncf.quantize_with_accuracy_control(
        model, calibration_dataset=nncf.Dataset(calibration, lambda x: {"input": x}), subset_size=len(calibration),
        validation_dataset=nncf.Dataset(items, lambda item: {"input": item[0]}), validation_fn=validation(card, metric),
        max_drop=cfg.max_accuracy_drop, drop_type=nncf.DropType.ABSOLUTE, preset=nncf.QuantizationPreset.MIXED,
        target_device=nncf.TargetDevice.CPU)
    int8 = work / "nncf.int8.onnx"
    onnx.save(quantized, str(int8))
    return int8, {"preset": "MIXED", "nncf": nncf.__version__}


def integer_share(fp32: Path, int8: Path) -> tuple[float, list[str]]:
    """Share of conv/matmul MACs ONNX Runtime runs in integer kernels, and the float model's nodes
    left in float, for either tool's file: ONNX Runtime's quantizer names a quantized weight
    `W_quantized`, NNCF `q_output_W_1`; both are mapped back to the float model's `W`."""
    import re

    import onnx

    from kd_pipeline.quantize.integer_kernels import INTEGER_WEIGHT_INPUT, optimized_graph, weight_macs

    with tempfile.TemporaryDirectory() as tmp:
        optimized_graph(int8, Path(tmp) / "optimized.onnx")
        graph = onnx.load(str(Path(tmp) / "optimized.onnx")).graph
    names = {node.input[position] for node in graph.node
             if (position := INTEGER_WEIGHT_INPUT.get(node.op_type)) is not None and len(node.input) > position}
    integer = {n.removesuffix("_quantized") for n in names} | {re.sub(r"^q_output_|_\d+$", "", n) for n in names}
    macs = weight_macs(fp32)
    total = sum(m for _, m in macs.values())
    share = sum(m for weight, (_, m) in macs.items() if weight in integer) / total if total else 0.0
    return share, [node for weight, (node, _) in macs.items() if weight not in integer]


def measure(checkpoint: Path, prepared: Path, work: Path) -> dict[str, Any]:
    """Both controls on one checkpoint, scored alike."""
    from kd_pipeline.core.data import load_split
    from kd_pipeline.core.models import load_checkpoint
    from kd_pipeline.core.params import load_params
    from kd_pipeline.core.ranking import decision_metric
    from kd_pipeline.quantize.mixed_precision import val_scores
    from kd_pipeline.quantize.onnx_export import export_onnx
    from kd_pipeline.quantize.quantization import calibration_sample

    cfg = load_params().quantize
    model, card = load_checkpoint(checkpoint)
    fp32 = work / f"{checkpoint.name}.fp32.onnx"
    export_onnx(model, card["input_size"], fp32)
    splits = {name: load_split(prepared, name) for name in ("train", "val", "test")}
    train, val = splits.pop("train"), splits["val"]
    metric = decision_metric(load_params().train.monitor, train.labels)
    indices = calibration_sample(train.labels, cfg.calibration_batches * cfg.calibration_batch_size, cfg.seed)
    result: dict[str, Any] = {"decision_metric": metric, "max_accuracy_drop": cfg.max_accuracy_drop,
                              "float": {split: val_scores(fp32, data, card) for split, data in splits.items()}}
    for name, control in (("ours", lambda w: ours(fp32, w, cfg, train, indices, val, card, metric)),
                          ("nncf", lambda w: nncf_control(fp32, w, cfg, train, indices, val, card, metric))):
        folder = work / name
        folder.mkdir()
        cpu, wall = time.process_time(), time.perf_counter()
        int8, about = control(folder)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        share, left = integer_share(fp32, int8)
        result[name] = {**about, **_scores(int8, splits, card), "cpu_s": round(cpu, 1), "wall_s": round(wall, 1),
                        "integer_mac_share": share, "float_layers": left,
                        "size_mb": int8.stat().st_size / 1e6}
    return result


def report(label: str, result: dict[str, Any]) -> None:
    metric = result["decision_metric"]
    print(f"\n{label} (decision metric {metric}, budget {result['max_accuracy_drop']:g} on validation)")
    print(f"{'':6} | {'val':>7} | {'val AVX2':>8} | {'test':>7} | {'test AVX2':>9} | integer MACs | float layers"
          " | CPU s | wall s")
    rows = [("float", result["float"])] + [(n, result[n]) for n in ("ours", "nncf")]
    for name, row in rows:
        cells = [f"{row[split][metric]:.4f}" if row.get(split) else "–" for split in ("val", "val_avx2", "test",
                                                                                      "test_avx2")]
        print(f"{name:6} | {cells[0]:>7} | {cells[1]:>8} | {cells[2]:>7} | {cells[3]:>9}"
              f" | {row.get('integer_mac_share', 1.0) if name != 'float' else 0:12.1%}"
              f" | {len(row.get('float_layers', [])):12d} | {row.get('cpu_s', 0):5.1f} | {row.get('wall_s', 0):6.1f}")


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
    for label, checkpoint in zip(labels, args.checkpoints, strict=True):
        with tempfile.TemporaryDirectory() as folder:
            result[label] = measure(checkpoint, args.prepared, Path(folder))
        report(label, result[label])
    if args.out:
        from kd_pipeline.records.provenance import benchmark_record

        benchmark_record(args.out, "benchmarks/nncf_accuracy_control.py", sys.argv[1:] if argv is None else argv,
                         result)
    return result


if __name__ == "__main__":
    main()
