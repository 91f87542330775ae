from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from kd_pipeline.core.errors import CheckpointError
from kd_pipeline.core.models import create_model, load_checkpoint, save_checkpoint
from tests.conftest import TINY_MODEL


def _card(name: str = TINY_MODEL, num_classes: int = 3) -> dict:
    return {"timm_name": name, "model_kwargs": {}, "num_classes": num_classes, "input_size": [3, 16, 16]}


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model(TINY_MODEL, 3).eval()
    x = torch.randn(2, 3, 16, 16)
    save_checkpoint(model, tmp_path / "ckpt", _card())
    loaded, card = load_checkpoint(tmp_path / "ckpt", num_classes=3)
    assert card["timm_name"] == TINY_MODEL
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["model.json", "model.safetensors"]
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_checkpoint_for_other_class_count_is_refused(tmp_path: Path) -> None:
    save_checkpoint(create_model(TINY_MODEL, 3), tmp_path / "ckpt", _card())
    with pytest.raises(CheckpointError, match="made for 3 classes but the data has 5"):
        load_checkpoint(tmp_path / "ckpt", num_classes=5)


def test_weights_of_another_architecture_are_refused(tmp_path: Path) -> None:
    save_checkpoint(create_model(TINY_MODEL, 3), tmp_path / "ckpt", _card())
    (tmp_path / "ckpt" / "model.json").write_text(
        '{"timm_name": "test_efficientnet", "model_kwargs": {}, "num_classes": 3}'
    )
    with pytest.raises(CheckpointError, match="does not match test_efficientnet") as info:
        load_checkpoint(tmp_path / "ckpt")
    assert "\n" not in str(info.value)


def test_corrupt_and_missing_checkpoints(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="model.json: not found"):
        load_checkpoint(tmp_path / "nothing")
    save_checkpoint(create_model(TINY_MODEL, 3), tmp_path / "ckpt", _card())
    (tmp_path / "ckpt" / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="unreadable safetensors"):
        load_checkpoint(tmp_path / "ckpt")


def test_local_pretrained_file_loads_offline_with_new_classifier(tmp_path: Path) -> None:
    source = create_model(TINY_MODEL, 1000)
    weights = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(weights))
    model = create_model(TINY_MODEL, 4, pretrained_file=str(weights))
    assert model.get_classifier().out_features == 4
    first = next(iter(source.state_dict()))
    assert torch.equal(model.state_dict()[first], source.state_dict()[first])
    with pytest.raises(CheckpointError, match="file not found"):
        create_model(TINY_MODEL, 4, pretrained_file=str(tmp_path / "missing.safetensors"))
