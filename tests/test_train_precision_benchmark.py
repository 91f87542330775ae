"""benchmarks/train_precision.py: fp32 and bf16 train for real with the pipeline's loop, bf16 is
really in effect, each seed's runs are paired, and the record is written."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
from train_precision import compare, main  # noqa: E402


def test_fp32_and_bf16_are_trained_paired_and_recorded(prepared_dir: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    out = tmp_path / "record"
    assert main(["--prepared", str(prepared_dir), "--params", str(ROOT / "params.yaml"), "--models", "cifar_plain2",
                 "--seeds", "0", "--epochs", "1", "--train-limit", "128", "--out", str(out)]) == 0
    result = json.loads((out / "result.json").read_text())
    runs = {(r["mode"], r["seed"]): r for r in result["runs"]}
    assert set(runs) == {("fp32", 0), ("bf16", 0)}
    assert result["train_images"] == 128 and all(r["epochs"] == 1 for r in runs.values())
    # autocast was in effect: the same seed's loss differs only by bf16 rounding, and does differ
    assert runs["bf16", 0]["last_train_loss"] != runs["fp32", 0]["last_train_loss"]
    assert runs["bf16", 0]["last_train_loss"] == pytest.approx(runs["fp32", 0]["last_train_loss"], rel=0.05)
    (comparison,) = result["comparisons"]
    assert comparison["seeds"] == [0]
    assert comparison["bf16_minus_fp32_val_accuracy"] == [
        round(runs["bf16", s]["val_accuracy"] - runs["fp32", s]["val_accuracy"], 4) for s in (0,)]
    run = json.loads((out / "run.json").read_text())
    assert run["command"].startswith("python benchmarks/train_precision.py --prepared")  # the arguments it was given
    assert "benchmarks/train_precision.py" in run["code"]


def test_a_seed_without_its_pair_is_left_out() -> None:
    rows = [{"model": "m", "mode": "fp32", "seed": 0, "fit_s": 2.0, "val_accuracy": 0.5, "test_accuracy": 0.5},
            {"model": "m", "mode": "bf16", "seed": 0, "fit_s": 1.0, "val_accuracy": 0.6, "test_accuracy": 0.4},
            {"model": "m", "mode": "bf16", "seed": 1, "fit_s": 1.0, "val_accuracy": 0.6, "test_accuracy": 0.4}]
    c = compare(rows, "m")
    assert c["seeds"] == [0] and c["speedup_bf16"] == [2.0]
    assert c["bf16_minus_fp32_val_accuracy"] == [0.1] and c["bf16_minus_fp32_test_accuracy"] == [-0.1]
