"""docs/params.md is generated from the schema and params.yaml, and stays current."""

from pathlib import Path

from pydantic import BaseModel

from kd_pipeline import params_doc
from kd_pipeline.core.params import Params


def _leaves(model: type[BaseModel], prefix: str = "") -> set[str]:
    keys = set()
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            keys |= _leaves(field.annotation, f"{prefix}{name}.")
        else:
            keys.add(f"{prefix}{name}")
    return keys


def test_the_params_page_is_current_and_names_every_key() -> None:
    assert params_doc.main(["--check"]) == 0, "run python -m kd_pipeline.params_doc"
    page = Path("docs/params.md").read_text()
    missing = [key for key in _leaves(Params) if f"| `{key}` |" not in page]
    assert not missing, f"docs/params.md misses {missing}"


def test_defaults_and_comments_come_from_params_yaml() -> None:
    text = "train:\n  lr: 0.5          # the step\n                   # it takes\n  epochs: 3\n"
    assert params_doc.yaml_comments(text) == {"train": "", "train.lr": "the step it takes", "train.epochs": ""}
    page = params_doc.page(Path("params.yaml").read_text().replace("min_speedup: 0.40", "min_speedup: 0.55"))
    assert "| `targets.min_speedup` | `0.55` |" in page
    assert "| `quantize.min_integer_mac_share` | `0.8` | float, ≥ 0 and ≤ 1 |" in page
    assert "| `kd.method` | `kd` | kd / dkd / dist |" in page
