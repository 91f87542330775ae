import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from kd_pipeline.core.models import create_model, save_checkpoint
from kd_pipeline.quantize.avx2_arithmetic import conv_excess
from tests.conftest import ROOT


def _bench():  # noqa: ANN202 - a module loaded from a file
    spec = importlib.util.spec_from_file_location("avx2_pairing", ROOT / "benchmarks" / "avx2_pairing.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_the_rejected_per_tap_rule_pairs_like_the_emulation_when_the_channel_count_is_even() -> None:
    torch.manual_seed(0)
    x = torch.randint(0, 256, (2, 4, 6, 6)).double()
    w = torch.randint(-127, 128, (3, 4, 3, 3)).double()
    taps = _bench().per_tap_excess(x, w, [1, 1], [1, 1])
    row = conv_excess(x, w, [1, 1], [1, 1])
    assert row[2] > 0 and taps[1:] == row[1:] and torch.equal(taps[0], row[0])


def test_with_three_channels_only_the_emulation_pairs_across_taps() -> None:
    x = torch.full((1, 3, 1, 2), 255.0, dtype=torch.float64)
    w = torch.zeros(1, 3, 1, 2, dtype=torch.float64)
    w[0, 2, 0, 0] = w[0, 0, 0, 1] = 127.0
    assert conv_excess(x, w, [1, 1], [1, 1])[2] == 1
    assert _bench().per_tap_excess(x, w, [1, 1], [1, 1])[2] == 0


def test_the_benchmark_compares_each_arithmetic_with_onnx_runtime(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    for split, count in (("train", 256), ("val", 32), ("test", 32)):
        folder = tmp_path / "prepared" / split
        folder.mkdir(parents=True)
        np.save(folder / "images.npy", np.repeat(rng.integers(0, 256, (count, 16, 16, 1), dtype=np.uint8), 3, 3))
        np.save(folder / "labels.npy", rng.integers(0, 4, count))
    card = {"role": "baseline", "timm_name": "cifar_resnet8", "model_kwargs": {}, "num_classes": 4,
            "class_names": list("abcd"), "task": "multiclass", "input_size": [3, 16, 16], "mean": [0.5] * 3,
            "std": [0.25] * 3}
    save_checkpoint(create_model("cifar_resnet8", 4), tmp_path / "ckpt", card)
    monkeypatch.chdir(ROOT)  # params.yaml's quantize group
    out = tmp_path / "out"
    result = _bench().main([str(tmp_path / "ckpt"), "--prepared", str(tmp_path / "prepared"), "--label", "toy",
                            "--out", str(out)])
    for split in ("val", "test"):
        row = result["toy"][split]
        assert row["images"] == 32 and set(row) == {"images", "exact", "taps", "row"}
        for rule in ("exact", "taps", "row"):
            assert 0 <= row[rule]["decisions_differ"] <= 32 and row[rule]["max_logit_gap"] >= 0
    run = json.loads((out / "run.json").read_text())
    assert run["command"].startswith("python benchmarks/avx2_pairing.py")
    assert {"benchmarks/avx2_pairing.py", "kd_pipeline/quantize/avx2_arithmetic.py"} <= set(run["code"])
