"""benchmarks/calibration.py compares calibration choices on a tiny model and prepared digits."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from kd_pipeline.core.data import load_meta, load_split, normalize_numpy
from kd_pipeline.core.models import create_model
from kd_pipeline.core.params import QuantizeParams
from kd_pipeline.quantize.onnx_export import export_onnx
from kd_pipeline.quantize.quantization import CalibrationImages, calibration_sample, quantize_onnx
from tests.conftest import ROOT, TINY_MODEL


def _benchmark() -> ModuleType:
    """The benchmark, loaded from its file (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("calibration", ROOT / "benchmarks/calibration.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_choice_is_measured_and_minmax_is_the_stages_own_file(prepared_dir: Path, tmp_path: Path) -> None:
    meta, train, test = (load_meta(prepared_dir), load_split(prepared_dir, "train"), load_split(prepared_dir, "test"))
    fp32 = tmp_path / "m.fp32.onnx"
    export_onnx(create_model(TINY_MODEL, meta.num_classes).eval(), [3, 16, 16], fp32)
    benchmark = _benchmark()
    rows = benchmark.measure(prepared_dir, fp32, count=64, threads=1, work=tmp_path)
    assert [name for name, _, _ in rows][:2] == ["fp32 source", "MinMax (the quantize stage)"] and len(rows) == 6
    assert rows[0][2] == 1.0 and all(0 <= accuracy <= 1 and 0 < agreement <= 1 for _, accuracy, agreement in rows)

    # the MinMax row is what the quantize stage makes from the same calibration sample
    chosen = calibration_sample(np.asarray(train.labels), 64, 0)
    stage = tmp_path / "stage.int8.onnx"
    quantize_onnx(fp32, stage, QuantizeParams(), CalibrationImages(train, chosen, meta.mean, meta.std, 32))
    predicted = benchmark.predict(stage, normalize_numpy(np.array(test.images), meta.mean, meta.std), 1)
    assert rows[1][1] == float(np.mean(predicted == np.asarray(test.labels)))


def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="not found"):
        _benchmark().main(["--prepared", str(tmp_path), "--onnx", str(tmp_path / "none.onnx")])
