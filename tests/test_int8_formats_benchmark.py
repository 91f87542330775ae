import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from kd_pipeline.core.models import create_model, save_checkpoint
from tests.conftest import ROOT


def test_the_int8_formats_benchmark_scores_each_format_on_both_kinds_of_cpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gray-image checkpoint: both formats on both splits, here and under AVX2 arithmetic, and
    the 7-bit format never saturates."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 256), ("val", 48), ("test", 48)):
        folder = tmp_path / "prepared" / split
        folder.mkdir(parents=True)
        np.save(folder / "images.npy", np.repeat(rng.integers(0, 256, (count, 16, 16, 1), dtype=np.uint8), 3, 3))
        np.save(folder / "labels.npy", rng.integers(0, 4, count))
    card = {"role": "baseline", "timm_name": "cifar_resnet8", "model_kwargs": {}, "num_classes": 4,
            "class_names": list("abcd"), "task": "multiclass", "input_size": [3, 16, 16], "mean": [0.5] * 3,
            "std": [0.25] * 3}
    save_checkpoint(create_model("cifar_resnet8", 4), tmp_path / "ckpt", card)
    spec = importlib.util.spec_from_file_location("int8_formats", ROOT / "benchmarks" / "int8_formats.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.chdir(ROOT)  # params.yaml's quantize group
    out = tmp_path / "out"
    result = bench.main([str(tmp_path / "ckpt"), "--prepared", str(tmp_path / "prepared"), "--label", "toy",
                         "--out", str(out)])
    rows = result["toy"]
    assert set(rows) == {"fp32", "u8s8", "u8s8 7-bit weights"}
    for fmt in ("u8s8", "u8s8 7-bit weights"):
        assert {"val", "test", "val_avx2", "test_avx2", "latency_ms"} <= set(rows[fmt])
    assert rows["u8s8 7-bit weights"]["test_clamped"] == {} and rows["fp32"]["latency_ms"] > 0
    run = json.loads((out / "run.json").read_text())
    assert run["command"].startswith("python benchmarks/int8_formats.py") and "kernel_limits" in run["machine"]
    assert "kd_pipeline/quantize/avx2_arithmetic.py" in run["code"]  # stale when the emulation changes
