"""A role at its own input size (teacher.image_size): upsampled inside the model, everywhere."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch.nn import functional as F  # noqa: N812

from kd_pipeline.core.data import load_split
from kd_pipeline.core.errors import ParamsError
from kd_pipeline.core.models import Resized, count_macs, create_model, load_checkpoint, network, save_checkpoint
from kd_pipeline.core.params import ModelParams, fingerprint
from kd_pipeline.core.paths import Layout
from kd_pipeline.quantize.onnx_export import export_onnx
from kd_pipeline.train.chain import train_role, view_size
from kd_pipeline.visualize.visualization import Model
from tests.conftest import TINY_MODEL, tiny_params


def _card(view: int | None = None) -> dict:
    card = {"timm_name": TINY_MODEL, "model_kwargs": {}, "num_classes": 3, "input_size": [3, 16, 16],
            "mean": [0.5] * 3, "std": [0.25] * 3}
    return {**card, "view_size": view} if view else card


def test_a_resized_model_upsamples_then_runs_its_network_and_its_checkpoint_holds_the_network(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Resized(create_model(TINY_MODEL, 3).eval(), 32).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        expected = model.net(F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False))
        assert torch.equal(model(x), expected)
    save_checkpoint(model, tmp_path / "ckpt", _card(32))
    loaded, _ = load_checkpoint(tmp_path / "ckpt", num_classes=3)
    assert isinstance(loaded, Resized) and loaded.size == 32
    with torch.no_grad():
        assert torch.equal(loaded(x), expected)
    # the weights file is the timm network's own: it loads into a plain model too
    plain = create_model(TINY_MODEL, 3)
    plain.load_state_dict(network(loaded).state_dict(), strict=True)
    # MACs counted at the size the network runs
    assert count_macs(loaded, [3, 16, 16]) == count_macs(network(loaded), [3, 32, 32])
    assert count_macs(loaded, [3, 16, 16]) > 3 * count_macs(network(loaded), [3, 16, 16])


def test_the_onnx_file_of_a_resized_model_takes_the_data_size_and_matches_torch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Resized(create_model(TINY_MODEL, 3).eval(), 32).eval()
    export_onnx(model, [3, 16, 16], tmp_path / "m.onnx")
    x = torch.randn(4, 3, 16, 16)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        assert np.abs(got - model(x).numpy()).max() < 1e-4


def test_a_role_at_the_data_size_keeps_the_fingerprint_it_had_before_the_key_existed() -> None:
    role = ModelParams(model="resnet18")
    before = {"model": "resnet18", "pretrained": False, "pretrained_file": None, "model_kwargs": {}, "train": {}}
    expected = hashlib.sha256(json.dumps([before], sort_keys=True, default=str).encode()).hexdigest()[:16]
    assert fingerprint(role) == expected
    assert fingerprint(ModelParams(model="resnet18", image_size=64)) != expected


def test_the_student_and_a_disagreeing_vit_size_are_refused() -> None:
    with pytest.raises(ParamsError, match="student.image_size = 64 is not allowed"):
        tiny_params(student={"image_size": 64})
    vit = ModelParams(model="vit_tiny_patch16_224", image_size=64, model_kwargs={"img_size": 32})
    with pytest.raises(ParamsError, match="teacher.model_kwargs.img_size = 32 but the teacher sees 64 px"):
        view_size("teacher", vit, 28)
    assert view_size("teacher", ModelParams(model="resnet18"), 28) == 28
    assert view_size("teacher", ModelParams(model="resnet18", image_size=64), 28) == 64


def test_a_teacher_at_twice_the_data_size_trains_teaches_and_is_drawn(prepared_dir: Path, tmp_path: Path) -> None:
    layout = Layout(prepared=prepared_dir, models=tmp_path / "models", metrics=tmp_path / "metrics",
                    resume=tmp_path / "resume")
    params = tiny_params(teacher={"image_size": 32}, train={"epochs": 1})
    train_role("teacher", params, layout)
    teacher, card = load_checkpoint(layout.model_dir("teacher"))
    assert card["view_size"] == 32 and card["input_size"] == [3, 16, 16] and isinstance(teacher, Resized)
    direct = train_role("direct", params, layout)  # distils from the teacher's cached logits at 32 px
    direct_card = json.loads((layout.model_dir("direct") / "model.json").read_text())
    assert direct_card["teacher"] == "teacher" and "view_size" not in direct_card and 0 <= direct["accuracy"] <= 1
    # drawn at its own size, its maps brought back to the image's, so they compare with the student's
    test = load_split(prepared_dir, "test")
    images, targets = np.asarray(test.images[:3]), np.asarray(test.labels[:3])
    drawn = Model("teacher", layout.model_dir("teacher"), card["num_classes"])
    assert drawn.inputs(images).shape[-1] == 32 and drawn.maps(images, targets).shape == (3, 16, 16)
    assert Model("direct", layout.model_dir("direct"), card["num_classes"]).maps(images, targets).shape == (3, 16, 16)
