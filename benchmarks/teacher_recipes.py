"""Which from-scratch budget makes the teacher worth learning from? Measured, one run each.

Trains the baseline (the student alone, the bar a teacher must clear) and then the teacher
under each recipe on the same prepared data, and prints validation and test accuracy and the
wall time of each. Recipes are chosen on validation accuracy; test accuracy is shown for the
record only.

    python benchmarks/teacher_recipes.py                       # digits, params.yaml otherwise
    python benchmarks/teacher_recipes.py -S data.name=medmnist -S data.subset=retinamnist \\
        -S data.root=../shared/data/medmnist -S data.image_size=28
    python benchmarks/teacher_recipes.py --recipe 'epochs=20' --recipe 'epochs=20,augment.crop_padding=4'
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from kd_pipeline.core.models import read_card
from kd_pipeline.core.params import parse_params
from kd_pipeline.core.paths import Layout
from kd_pipeline.prepare.preparation import prepare
from kd_pipeline.train.chain import train_role

DEFAULT_RECIPES = ("", "augment.crop_padding=4", "epochs=20", "epochs=20,augment.crop_padding=4")


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        tree = tree.setdefault(key, {})
    tree[leaf] = value


def _recipe(text: str) -> dict[str, Any]:
    """'epochs=20,augment.crop_padding=4' → {'epochs': 20, 'augment': {'crop_padding': 4}}."""
    override: dict[str, Any] = {}
    for item in filter(None, text.split(",")):
        key, value = item.split("=", 1)
        _set(override, key, yaml.safe_load(value))
    return override


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-S", dest="sets", action="append", default=[], help="params override, as dvc exp run -S")
    parser.add_argument("--recipe", action="append", help="teacher.train keys, comma-separated (repeatable)")
    args = parser.parse_args()
    raw = yaml.safe_load(Path("params.yaml").read_text())
    for item in args.sets:
        key, value = item.split("=", 1)
        _set(raw, key, yaml.safe_load(value))
    with tempfile.TemporaryDirectory() as tmp:
        layout = Layout(prepared=Path(tmp) / "prepared", models=Path(tmp) / "models", metrics=Path(tmp) / "metrics",
                        resume=Path(tmp) / "resume")
        params = parse_params(raw)
        prepare(params.data, layout.prepared)
        rows = []
        base = dict(raw["teacher"].get("train") or {})
        for role, recipe in [("baseline", "")] + [("teacher", r) for r in (args.recipe or DEFAULT_RECIPES)]:
            raw["teacher"]["train"] = {**base, **_recipe(recipe)}
            started = time.perf_counter()
            test = train_role(role, parse_params(raw), layout)
            seconds = time.perf_counter() - started
            val = read_card(layout.model_dir(role))["val_metrics"]["accuracy"]
            rows.append((role, recipe or "(shared train group)", val, test["accuracy"], seconds))
    print("\n| role | teacher.train | val accuracy | test accuracy | seconds |\n|---|---|---|---|---|")
    for role, recipe, val, test, seconds in rows:
        print(f"| {role} | {recipe} | {val:.4f} | {test:.4f} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
