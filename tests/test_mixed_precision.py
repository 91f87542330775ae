"""Accuracy-controlled int8: layers kept in float until the validation loss fits the budget."""

from pathlib import Path

import numpy as np
import pytest
import torch

from kd_pipeline.core.data import Split
from kd_pipeline.core.params import QuantizeParams
from kd_pipeline.quantize.mixed_precision import controlled_int8, ranked, val_scores, write_report
from kd_pipeline.quantize.onnx_export import export_onnx
from kd_pipeline.quantize.quantization import CalibrationImages, prepare_onnx

CARD = {"mean": [0.5] * 3, "std": [0.25] * 3, "class_names": ["a", "b", "c", "d"]}


@pytest.fixture(scope="module")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Split, Split]:
    """An untrained network whose validation labels are its own float decisions (float accuracy
    1.0), calibrated on dim images that misfit the activation ranges of the bright validation
    images: full int8 flips some decisions, as a real calibration that misses a layer's range does."""
    folder = tmp_path_factory.mktemp("mixed")
    torch.manual_seed(0)
    export_onnx(_network().eval(), [3, 16, 16], folder / "m.fp32.onnx")
    rng = np.random.default_rng(0)
    dim = rng.integers(0, 40, (64, 16, 16, 3), dtype=np.uint8)
    bright = rng.integers(0, 256, (96, 16, 16, 3), dtype=np.uint8)
    labels = val_scores_logits(folder / "m.fp32.onnx", bright).argmax(1)
    return folder / "m.fp32.onnx", Split(dim, np.zeros(64, np.int64)), Split(bright, labels)


def _network() -> torch.nn.Module:
    """Random convolutions without global pooling, so decisions depend on the pixels (an untrained
    timm network answers one class for every image)."""
    from torch import nn

    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(512, 4))


def val_scores_logits(path: Path, images: np.ndarray) -> np.ndarray:
    from kd_pipeline.evaluate.runtime import onnx_runner

    return onnx_runner(path, CARD["mean"], CARD["std"], threads=1)(images)


def _control(fp32: Path, train: Split, val: Split, out: Path, cfg: QuantizeParams):
    prepared = prepare_onnx(fp32)
    calibration = lambda: CalibrationImages(train, np.arange(len(train)), CARD["mean"], CARD["std"], 32)  # noqa: E731
    return controlled_int8(fp32, prepared, out, cfg, calibration, val, CARD, "accuracy")


def test_layers_go_to_float_until_validation_accuracy_holds(model_files: tuple, tmp_path: Path) -> None:
    fp32, train, val = model_files
    assert val_scores(fp32, val, CARD)["accuracy"] == 1.0
    control = _control(fp32, train, val, tmp_path / "m.int8.onnx", QuantizeParams(max_accuracy_drop=0.0,
                                                                                 min_integer_mac_share=0.0))
    full = control.attempts[0]
    assert full.kept_float == [] and not full.check["pass"], "full int8 was expected to flip a near-tie"
    chosen = control.chosen
    assert chosen.check["pass"] and len(chosen.kept_float) > 0 and chosen.integer_mac_share < full.integer_mac_share
    assert val_scores(tmp_path / "m.int8.onnx", val, CARD)["accuracy"] == 1.0  # the file written is the chosen one
    assert len(control.layers) == 4 and set(chosen.kept_float) <= {row["node"] for row in control.layers}
    assert ranked(control.layers)[: len(chosen.kept_float)] == chosen.kept_float  # worst SQNR first
    write_report({"m": control}, "accuracy", tmp_path / "q.md", tmp_path / "q.png")
    text = (tmp_path / "q.md").read_text()
    assert "Layers that lose most" in text and "| yes |" in text
    assert (tmp_path / "q.png").read_bytes()[:4] == b"\x89PNG"


def test_a_budget_the_mac_share_cannot_allow_is_one_line_naming_both_keys(model_files: tuple, tmp_path: Path) -> None:
    fp32, train, val = model_files
    control = _control(fp32, train, val, tmp_path / "m.int8.onnx", QuantizeParams(max_accuracy_drop=0.0,
                                                                                 min_integer_mac_share=0.99))
    assert not control.chosen.check["pass"] and control.chosen.integer_mac_share >= 0.99
    assert "quantize.max_accuracy_drop = 0" in control.note and "quantize.min_integer_mac_share = 0.99" in control.note


def test_sqnr_is_high_for_a_fine_grid_and_low_for_a_clipping_one() -> None:
    from kd_pipeline.quantize.mixed_precision import sqnr

    x = np.linspace(-1, 3, 10_000)
    fine = sqnr(x, 4 / 255, 64)  # the tensor's own range: ~ 6 dB per bit
    clipped = sqnr(x, 0.5 / 255, 64)  # a range that misses most of the tensor
    assert fine > 40 and clipped < 10 and sqnr(np.zeros(4), 0.1, 0) == float("inf")


def test_per_layer_error_of_a_vit(tmp_path: Path) -> None:
    """A ViT's graph holds 0-d weights that ONNX Runtime's own compute_weight_error fails on."""
    from kd_pipeline.core.models import create_model
    from kd_pipeline.quantize.mixed_precision import layer_errors
    from kd_pipeline.quantize.quantization import quantize_prepared

    torch.manual_seed(0)
    vit = create_model("test_vit", 4, model_kwargs={"img_size": 16, "patch_size": 4}).eval()
    export_onnx(vit, [3, 16, 16], tmp_path / "v.fp32.onnx")
    prepared = prepare_onnx(tmp_path / "v.fp32.onnx")
    images = np.random.default_rng(0).integers(0, 256, (16, 16, 16, 3), dtype=np.uint8)
    split = Split(images, np.arange(16) % 4)
    calibration = CalibrationImages(split, np.arange(16), CARD["mean"], CARD["std"], 8)
    quantize_prepared(prepared, tmp_path / "v.int8.onnx", QuantizeParams(), calibration)
    rows = layer_errors(prepared, tmp_path / "v.int8.onnx", split, CARD, tmp_path)
    assert len(rows) > 5 and sum(row["weight_sqnr"] is not None for row in rows) > len(rows) // 2
