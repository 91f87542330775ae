import hashlib
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from kd_pipeline.core.data import Split
from kd_pipeline.core.evaluation import decide
from kd_pipeline.core.models import create_model
from kd_pipeline.core.params import parse_params
from kd_pipeline.evaluate.comparison import predict_split
from kd_pipeline.evaluate.fidelity import file_sha256, predictions_sha256
from kd_pipeline.evaluate.runtime import onnx_runner
from kd_pipeline.export.bundle import ExportError, prove
from kd_pipeline.quantize.onnx_export import export_onnx

CARD = {"mean": [0.5] * 3, "std": [0.25] * 3, "input_size": [3, 16, 16]}
PARAMS = parse_params({})


def _setup(tmp_path: Path) -> tuple[torch.nn.Module, Path, Split]:
    torch.manual_seed(0)
    model = create_model("resnet10t", 4).eval()
    path = tmp_path / "model.onnx"
    export_onnx(model, CARD["input_size"], path)
    images = np.random.default_rng(0).integers(0, 256, (20, 16, 16, 3), dtype=np.uint8)
    return model, path, Split(images, np.zeros(20, np.int64))


def _record(path: Path, split: Split) -> dict:
    """What evaluate records for an ONNX variant: its file and a digest of its test decisions."""
    run = onnx_runner(path, CARD["mean"], CARD["std"], PARAMS.evaluate.num_threads)
    predictions = decide(predict_split(run, split), split.multilabel)
    return {"path": str(path), "sha256": file_sha256(path), "predictions_sha256": predictions_sha256(predictions)}


def test_an_onnx_variant_is_proven_to_be_the_file_evaluate_measured(tmp_path: Path) -> None:
    model, path, split = _setup(tmp_path)
    record, measured = _record(path, split), {"accuracy": 0.5, "max_abs_diff": 1e-6}
    check = prove("student_onnx", path, model, CARD, split, record, measured, PARAMS)
    assert check == {"same_file_as_evaluated": True, "images": 20, "max_abs_diff": 1e-6}

    other = {**record, "predictions_sha256": hashlib.sha256(b"other").hexdigest()}
    with pytest.raises(ExportError, match="test predictions differ from evaluate's"):
        prove("student_onnx", path, model, CARD, split, other, measured, PARAMS)
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(ExportError, match="changed since evaluate measured it"):
        prove("student_onnx", path, model, CARD, split, record, measured, PARAMS)


def test_a_pytorch_variant_is_converted_and_checked_against_pytorch(tmp_path: Path) -> None:
    model, path, split = _setup(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"weights")
    record = {"path": str(weights), "sha256": file_sha256(weights)}
    check = prove("student", path, model, CARD, split, record, {}, PARAMS)
    assert check["max_abs_diff"] <= 1e-4 and not check["same_file_as_evaluated"]

    proto = onnx.load(str(path))
    first = proto.graph.initializer[0]
    first.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(first) * -3.0, first.name))
    onnx.save(proto, str(path))
    with pytest.raises(ExportError, match="differ from PyTorch"):
        prove("student", path, model, CARD, split, record, {}, PARAMS)


def test_the_model_card_holds_no_timing_so_the_bundle_hashes_the_same_on_reruns() -> None:
    from kd_pipeline.export.bundle import _model_card

    def evaluation(latency: float) -> dict:
        measured = {"accuracy": 0.9, "f1": 0.9, "val": {"accuracy": 0.88}, "parameters": 1e6, "macs": 1e6,
                    "size_mb": 1.0, "latency_ms": latency, "latency_ratio_vs_teacher": 30 / latency,
                    "size_ratio_vs_teacher": 9.0, "accuracy_drop_vs_reference": 0.0, "accuracy_drop_vs_teacher": 0.0,
                    "val_drop_vs_reference": 0.0}
        speedup = {"value": 30 / latency - 1, "limit": 0.4, "pass": 30 / latency - 1 >= 0.4}
        return {"variants": {"student": measured, "teacher": {**measured, "accuracy": 0.9}}, "reference": "student",
                "deployed": "student", "deployed_reason": f"fastest variant (latency_ms {latency:.4g})",
                "targets": {"accuracy_drop": {"value": 0.0, "limit": 0.05, "pass": True}, "speedup": speedup},
                "targets_passed": speedup["pass"], "decision_metric": "accuracy",
                "machine": {"model": "Test CPU", "arch": "x86_64", "isa": ["avx2"], "int8_kernels": "AVX2"}}

    card = {"timm_name": "resnet18", "class_names": ["a", "b"], "input_size": [3, 8, 8], "mean": [0.5], "std": [0.5]}
    check = {"same_file_as_evaluated": True, "images": 10, "max_abs_diff": 1e-6}
    first, second = (_model_card("student", card, evaluation(t), PARAMS, check) for t in (1.234, 1.567))
    assert first == second and "1.23" not in first
    assert "**Chosen on validation** (accuracy): 0.8800" in first and "Test CPU (x86_64; avx2" in first
    slow = _model_card("student", card, evaluation(29.0), PARAMS, check)
    assert "**meets_targets**: false (missed: speedup;" in slow


def test_an_fp32_onnx_variant_ships_the_file_evaluate_measured_not_a_fresh_export(tmp_path: Path, monkeypatch) -> None:
    """student_onnx is copied byte for byte, never re-exported over the copy; student_int8 brings
    its fp32 twin; only a PyTorch variant is exported."""
    from kd_pipeline.export import bundle

    quantized = tmp_path / "models" / "quantized"
    quantized.mkdir(parents=True)
    (quantized / "student.fp32.onnx").write_bytes(b"fp32 measured")
    (quantized / "student.int8.onnx").write_bytes(b"int8 measured")
    exported = []
    monkeypatch.setattr(bundle, "export_onnx", lambda model, size, path: exported.append(path))
    for variant in ("student_onnx", "student_int8"):
        out = tmp_path / variant
        out.mkdir()
        bundle.write_model_files(variant, tmp_path / "models", None, {"input_size": [3, 8, 8]}, out)
        measured = b"fp32 measured" if variant == "student_onnx" else b"int8 measured"
        assert (out / "model.onnx").read_bytes() == measured
    assert (tmp_path / "student_int8" / "model.fp32.onnx").read_bytes() == b"fp32 measured"
    assert not (tmp_path / "student_onnx" / "model.fp32.onnx").exists() and exported == []
    bundle.write_model_files("student", tmp_path / "models", None, {"input_size": [3, 8, 8]}, tmp_path)
    assert exported == [tmp_path / "model.onnx"]


def test_metadata_carries_labels_and_preprocessing_and_leaves_the_graph_as_measured(tmp_path: Path) -> None:
    import json

    import onnxruntime as ort

    from kd_pipeline.export.bundle import add_metadata, onnx_metadata

    model, path, split = _setup(tmp_path)
    before = onnx.load(str(path)).graph.SerializeToString()
    run = onnx_runner(path, CARD["mean"], CARD["std"], 1)
    decisions = decide(predict_split(run, split), False)
    measured = {"accuracy": 0.5, "val": {"balanced_accuracy": 0.6},
                "avx2": {"int8_format": "u8s8 7-bit weights", "safe_on": "CPUs with and without VNNI"}}
    evaluation = {"decision_metric": "balanced_accuracy", "variants": {"student_int8": measured}}
    props = onnx_metadata("student_int8", {**CARD, "task": "multiclass"}, evaluation, ["a", "b", "c", "d"], "pad")
    add_metadata(path, props)
    found = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(found["labels"]) == ["a", "b", "c", "d"] and found["resize"] == "pad"
    assert found["val_balanced_accuracy"] == "0.600000" and found["int8_format"] == "u8s8 7-bit weights"
    assert ort.InferenceSession(str(path)).get_modelmeta().custom_metadata_map["mean"] == "[0.5, 0.5, 0.5]"
    assert onnx.load(str(path)).graph.SerializeToString() == before
    again = onnx_runner(path, CARD["mean"], CARD["std"], 1)
    assert np.array_equal(decide(predict_split(again, split), False), decisions)
