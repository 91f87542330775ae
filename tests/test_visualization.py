"""Maps, agreement, image selection, gradient flow and the visualize stage's outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from kd_pipeline.core.data import load_meta, load_split
from kd_pipeline.core.models import save_checkpoint
from kd_pipeline.core.params import VisualizeParams
from kd_pipeline.core.paths import Layout
from kd_pipeline.core.roles import TORCH_MODELS as TRAINED
from kd_pipeline.train.gradient_flow import GradientFlow, layer_groups
from kd_pipeline.train.training import fit
from kd_pipeline.visualize.attribution import agreement, feature_maps, saliency
from kd_pipeline.visualize.visualization import read_gradient_flow, select_images, visualize
from tests.conftest import TINY_MODEL, tiny_params

VIT_KWARGS = {"img_size": 16, "patch_size": 4}


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    kwargs = VIT_KWARGS if "vit" in name else {}
    return timm.create_model(name, num_classes=10, **kwargs).eval()


@pytest.mark.parametrize("name", [TINY_MODEL, "test_vit"])
def test_maps_have_the_input_size_and_vary(name: str) -> None:
    model = _model(name)
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        predicted = model(x).argmax(1)  # the class with positive evidence, as the stage draws it
    maps = saliency(model, x, predicted)
    assert maps.shape == (4, 16, 16)
    assert float(maps.min()) >= 0 and float(maps.max()) <= 1
    assert all(float(m.std()) > 0 for m in maps), "a map is constant"
    stages = feature_maps(model, x, channels=3)
    assert stages and all(maps.shape[0] == 3 and maps.ndim == 3 for _, maps in stages)


def test_agreement_is_one_with_itself_and_lower_with_another_model() -> None:
    x = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    targets = torch.arange(8) % 10
    mine = saliency(_model(TINY_MODEL), x, targets)
    torch.manual_seed(5)
    other = saliency(timm.create_model(TINY_MODEL, num_classes=10).eval(), x, targets)
    correlation, overlap = agreement(mine, mine, 0.2)
    assert torch.allclose(correlation, torch.ones(8)) and torch.allclose(overlap, torch.ones(8))
    correlation, overlap = agreement(mine, other, 0.2)
    assert float(correlation.mean()) < 0.9 and float(overlap.mean()) < 0.9
    flat = torch.zeros(1, 16, 16)
    assert float(agreement(mine[:1], flat, 0.2)[0]) == 0.0  # a constant map carries no agreement


def test_selection_is_seeded_spread_over_classes_and_holds_mistakes() -> None:
    labels = np.repeat(np.arange(5), 20)
    wrong = np.zeros(100, dtype=bool)
    wrong[[3, 47, 88]] = True
    first = select_images(labels, wrong, 8, seed=0)
    assert first == select_images(labels, wrong, 8, seed=0)
    assert first != select_images(labels, wrong, 8, seed=1)
    assert len(set(first)) == 8
    assert set(first) >= {3, 47, 88}  # up to half are mistakes: all three here
    assert len(set(labels[first])) == 5
    assert select_images(labels, np.zeros(100, dtype=bool), 8, seed=0)  # no mistakes: all correct ones
    assert len(select_images(labels[:3], wrong[:3], 8, seed=0)) == 3  # fewer images than asked


def test_layer_groups_run_from_stem_to_head() -> None:
    assert list(layer_groups(_model(TINY_MODEL))) == ["stem", "layer1", "layer2", "layer3", "layer4", "head"]
    vit = list(layer_groups(_model("test_vit")))
    assert vit[0] == "stem" and vit[-1] == "head" and "blocks.0" in vit


def test_fit_logs_each_groups_gradient_norm(prepared_dir: Path) -> None:
    from kd_pipeline.core.data import Normalizer

    params = tiny_params(train={"epochs": 1})
    train, val = load_split(prepared_dir, "train"), load_split(prepared_dir, "val")
    meta = load_meta(prepared_dir)
    model = _model(TINY_MODEL)
    result = fit(model, train, val, params.train, Normalizer(meta.mean, meta.std, torch.device("cpu"), False), 10)
    norms = {k: v for k, v in result.history[0].items() if k.startswith("grad_norm/")}
    assert set(norms) == {f"grad_norm/{g}" for g in layer_groups(model)}
    assert all(np.isfinite(v) and v > 0 for v in norms.values())
    flow = GradientFlow(model)
    assert flow.epoch_means() == {}  # nothing recorded yet


def _checkpoints(models: Path, meta, teacher: str) -> None:  # noqa: ANN001
    for role in TRAINED:
        name = teacher if role == "teacher" else TINY_MODEL
        card = {"timm_name": name, "num_classes": 10, "model_kwargs": VIT_KWARGS if "vit" in name else {},
                "mean": meta.mean, "std": meta.std, "input_size": [3, 16, 16]}
        save_checkpoint(_model(name), models / role, card)


def test_stage_outputs_with_a_vit_teacher_and_cnn_students(prepared_dir: Path, tmp_path: Path) -> None:
    meta, test = load_meta(prepared_dir), load_split(prepared_dir, "test")
    _checkpoints(tmp_path / "models", meta, "test_vit")
    grad = tmp_path / "metrics/student/plots/metrics/grad_norm"
    grad.mkdir(parents=True)
    for group, values in (("layer10", "3\n4"), ("stem", "1\n2"), ("head", "5\n6"), ("layer2", "7\n8")):
        (grad / f"{group}.tsv").write_text(f"step\t{group}\n0\t{values.splitlines()[0]}\n1\t{values.splitlines()[1]}\n")
    (tmp_path / "metrics/evaluate.json").write_text(json.dumps({"deployed": "pruned_int8"}))
    layout = Layout(models=tmp_path / "models", metrics=tmp_path / "metrics",
                    evaluation=tmp_path / "metrics/evaluate.json", confusion=tmp_path / "confusion",
                    visualize_plots=tmp_path / "plots", visualize_metrics=tmp_path / "visualize.json")
    result = visualize(VisualizeParams(images=4, agreement_images=50), test, meta, layout)
    assert result["methods"]["teacher"] == "cls-attention" and result["methods"]["student"] == "grad-cam"
    assert result["agreement_images"] == 50 and set(result["agreement_with_teacher"]) == set(TRAINED) - {"teacher"}
    assert result["deployed_wrong_in_selection"] >= 1  # untrained models get most images wrong
    written = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert written == ["feature_maps.png", "gradient_flow.png", "image_01.png", "image_02.png", "image_03.png",
                       "image_04.png", "overview.png"]
    assert all((tmp_path / "plots" / name).read_bytes()[:4] == b"\x89PNG" for name in written)
    assert json.loads((tmp_path / "visualize.json").read_text()) == json.loads(json.dumps(result))
    flows = read_gradient_flow(tmp_path / "metrics", ("student",))
    assert list(flows["student"]) == ["stem", "layer2", "layer10", "head"]
    assert flows["student"]["head"] == [5.0, 6.0]
