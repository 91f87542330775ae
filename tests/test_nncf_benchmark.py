"""NNCF's accuracy control against the pipeline's own: both run on one toy checkpoint and are
scored by the same code (the comparison's numbers are a record, not a test)."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from kd_pipeline.core.models import create_model, save_checkpoint
from tests.conftest import ROOT

pytest.importorskip("nncf")  # requirements-dev.lock pins it: skipped only outside `make test`


def test_both_controls_quantize_the_same_file_and_are_scored_alike(tmp_path: Path, monkeypatch) -> None:
    rng = np.random.default_rng(0)
    for split, count in (("train", 256), ("val", 40), ("test", 40)):
        folder = tmp_path / "prepared" / split
        folder.mkdir(parents=True)
        np.save(folder / "images.npy", rng.integers(0, 256, (count, 16, 16, 3), dtype=np.uint8))
        np.save(folder / "labels.npy", rng.integers(0, 4, count))
    card = {"role": "baseline", "timm_name": "cifar_resnet8", "model_kwargs": {}, "num_classes": 4,
            "class_names": list("abcd"), "task": "multiclass", "input_size": [3, 16, 16], "mean": [0.5] * 3,
            "std": [0.25] * 3}
    torch.manual_seed(0)  # an untrained net's near-ties flip in int8 for some inits: not the test order's pick
    save_checkpoint(create_model("cifar_resnet8", 4), tmp_path / "ckpt", card)
    spec = importlib.util.spec_from_file_location("nncf_accuracy_control", ROOT / "benchmarks"
                                                  / "nncf_accuracy_control.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.chdir(ROOT)  # params.yaml's quantize and train groups
    out = tmp_path / "out"
    result = bench.main([str(tmp_path / "ckpt"), "--prepared", str(tmp_path / "prepared"), "--label", "toy",
                         "--out", str(out)])["toy"]
    for tool in ("ours", "nncf"):
        row = result[tool]
        assert {"val", "test", "val_avx2", "test_avx2"} <= set(row) and 0 < row["integer_mac_share"] <= 1
        assert row["cpu_s"] > 0 and isinstance(row["float_layers"], list)
    metric, ours = result["decision_metric"], result["ours"]
    floor = result["float"]["val"][metric] - result["max_accuracy_drop"] - 1e-9
    assert ours["val"][metric] >= floor and ours["val_avx2"][metric] >= floor  # its promise, in both arithmetics
    assert result["nncf"]["val"][metric] >= floor  # NNCF's, on this CPU only
    assert set(ours["kept_float"]) == set(ours["float_layers"])  # what it kept is what runs in float
    assert ours["integer_mac_share"] == 1.0 and not ours["kept_float"]  # full int8 on this seeded toy
    run = json.loads((out / "run.json").read_text())
    assert run["command"].startswith("python benchmarks/nncf_accuracy_control.py") and run["code"]


def test_nncf_is_validated_per_item_so_it_can_rank_layers_on_onnx(tmp_path: Path) -> None:
    """Per-item scores, not logits: NNCF's NMSE ranking over logits is OpenVINO-only, and a budget
    that makes it search then fails with UnsupportedBackendError on an ONNX model."""
    import nncf
    import onnx
    from nncf.quantization.algorithms.accuracy_control.evaluator import Evaluator

    from kd_pipeline.quantize.onnx_export import export_onnx

    spec = importlib.util.spec_from_file_location("nncf_accuracy_control", ROOT / "benchmarks"
                                                  / "nncf_accuracy_control.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    export_onnx(create_model("cifar_plain2", 4).eval(), [3, 16, 16], tmp_path / "m.onnx")
    card = {"class_names": list("abcd")}
    items = [(np.random.default_rng(i).normal(size=(1, 3, 16, 16)).astype(np.float32), i % 4) for i in range(8)]
    validate = bench.validation(card, "accuracy")
    score, per_item = validate(onnx.load(str(tmp_path / "m.onnx")), items)
    assert len(per_item) == 8 and set(per_item) <= {0.0, 1.0} and score == pytest.approx(sum(per_item) / 8)

    class Prepared:
        model_for_inference = onnx.load(str(tmp_path / "m.onnx"))

    assert Evaluator.determine_mode(Prepared(), nncf.Dataset(items), validate) is True
