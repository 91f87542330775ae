from pathlib import Path

import pytest
import yaml

from kd_pipeline.core.errors import ParamsError
from kd_pipeline.core.params import Params, fingerprint, load_params, parse_params
from tests.conftest import ROOT


def test_project_params_file_is_valid() -> None:
    params = load_params(ROOT / "params.yaml")
    assert params.teacher.model == "resnet50"
    assert params.student.model == "resnet18"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"kd": {"alpha": 1.5}}, ["kd.alpha", "1.5", "less than or equal to 1"]),
        ({"kd": {"alpha": -0.1}}, ["kd.alpha", "-0.1", "greater than or equal to 0"]),
        ({"kd": {"temperature": 0}}, ["kd.temperature", "0", "greater than 0"]),
        ({"train": {"epochs": 0}}, ["train.epochs", "0", "greater than or equal to 1"]),
        ({"train": {"epochs": "ten"}}, ["train.epochs", "'ten'", "integer"]),
        ({"train": {"lr": "0.1"}}, ["train.lr", "'0.1'", "number"]),
        ({"train": {"optimizer": "rmsprop"}}, ["train.optimizer", "rmsprop", "'adam', 'adamw' or 'sgd'"]),
        ({"train": {"scheduler": "linear"}}, ["train.scheduler", "'cosine', 'step', 'plateau' or 'none'"]),
        ({"train": {"monitor": "auc"}},
         ["train.monitor", "'auto', 'accuracy', 'balanced_accuracy', 'f1', 'roc_auc' or 'loss'"]),
        ({"teacher": {"model": "resnet50", "train": {"epochs": 0}}},
         ["teacher.train.epochs", "0", "greater than or equal to 1"]),
        ({"assistant": {"model": "resnet34", "train": {"lrr": 0.1}}},
         ["unknown key 'assistant.train.lrr'", "lr", "epochs"]),
        ({"student": {"model": "resnet18", "train": {"augment": {"crop_padding": -1}}}},
         ["student.train.augment.crop_padding", "-1"]),
        ({"targets": {"reference": "assistant"}}, ["targets.reference", "'best_small', 'best_float' or 'teacher'"]),
        ({"train": {"label_smoothing": 1.0}}, ["train.label_smoothing", "less than 1"]),
        ({"train": {"augment": {"brightness": 2}}}, ["train.augment.brightness", "2"]),
        ({"teacher": {"model": "resnet5"}}, ["teacher.model", "resnet5", "not a timm model", "resnet50"]),
        ({"student": {"model": "not_a_model_at_all"}}, ["student.model", "not a timm model"]),
        ({"data": {"image_size": 4}}, ["data.image_size", "4", "greater than or equal to 8"]),
        ({"data": {"name": "imagenet"}}, ["data.name", "imagenet", "'digits'"]),
        ({"data": {"val_fraction": 0.5, "test_fraction": 0.5}}, ["data", "too little training data"]),
        ({"train": {"lrr": 0.1}}, ["unknown key 'train.lrr'", "lr", "epochs"]),
        ({"kd_params": {}}, ["unknown key 'kd_params'", "kd", "train"]),
    ],
)
def test_rejects_with_one_line_naming_key_and_value(raw: dict, expected: list[str]) -> None:
    with pytest.raises(ParamsError) as info:
        parse_params(raw)
    message = str(info.value)
    assert "\n" not in message
    for fragment in expected:
        assert fragment in message


def test_rejects_non_mapping_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="expected a mapping"):
        parse_params([1, 2])
    bad = tmp_path / "params.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)
    with pytest.raises(ParamsError, match="file not found"):
        load_params(tmp_path / "missing.yaml")


def test_defaults_fill_missing_groups_and_ints_are_accepted_as_floats() -> None:
    params = parse_params({"kd": {"temperature": 6}})
    assert params.kd.temperature == 6.0
    assert params == Params.model_validate(yaml.safe_load("kd: {temperature: 6}"))


def test_fingerprint_changes_with_params() -> None:
    a = parse_params({})
    b = parse_params({"kd": {"temperature": 6}})
    assert fingerprint(a.kd) == fingerprint(parse_params({}).kd)
    assert fingerprint(a.kd) != fingerprint(b.kd)


def test_unknown_role() -> None:
    with pytest.raises(ParamsError, match="unknown role"):
        parse_params({}).role("professor")


def test_role_train_keys_override_the_shared_group() -> None:
    params = parse_params({
        "train": {"epochs": 10, "lr": 0.003, "augment": {"hflip": True}},
        "teacher": {"model": "resnet50", "train": {"epochs": 30, "augment": {"crop_padding": 4}}},
    })
    teacher = params.train_for("teacher")
    assert (teacher.epochs, teacher.lr, teacher.augment.hflip, teacher.augment.crop_padding) == (30, 0.003, True, 4)
    assert params.train_for("assistant") == params.train
    for role in ("student", "direct", "baseline", "pruned"):  # the student's architecture and budget
        assert params.train_for(role) == params.train
    student = parse_params({"student": {"model": "resnet18", "train": {"lr": 0.01}}})
    assert {student.train_for(r).lr for r in ("student", "direct", "baseline", "pruned")} == {0.01}


def test_numbers_are_read_as_yaml_1_2(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("train: {lr: 1e-3, weight_decay: 5.0e-4}\nteacher: {model: resnet50, train: {lr: 3E-4}}\n")
    params = load_params(path)
    assert params.train.lr == 0.001 and params.train.weight_decay == 0.0005
    assert params.train_for("teacher").lr == 0.0003
