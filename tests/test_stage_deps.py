"""dvc.yaml lists every project module a stage's script imports, directly or not, and no other:
an edit to any of them must make `dvc status` report the stage as changed."""

import ast
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT


def _imports(path: Path) -> set[Path]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
        if isinstance(node, ast.ImportFrom) and node.module == "kd_pipeline":  # from kd_pipeline import paths
            names += [f"kd_pipeline.{alias.name}" for alias in node.names]
        names += [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
        found |= {Path(*name.split(".")).with_suffix(".py") for name in names if name.startswith("kd_pipeline.")}
    return found


def import_closure(script: Path) -> set[Path]:
    seen: set[Path] = set()
    todo = [script]
    while todo:
        for module in _imports(ROOT / todo.pop()):
            if module not in seen:
                seen.add(module)
                todo.append(module)
    return seen


STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_are_the_scripts_import_closure(stage: str) -> None:
    script = Path(STAGES[stage]["cmd"].split()[1])
    listed = {Path(dep) for dep in STAGES[stage]["deps"] if str(dep).startswith("kd_pipeline/")}
    assert script in {Path(dep) for dep in STAGES[stage]["deps"]}
    closure = import_closure(script)
    assert not closure - listed, f"{stage}: dvc.yaml misses {sorted(map(str, closure - listed))}"
    extra = sorted(map(str, listed - closure))
    assert not extra, f"{stage}: dvc.yaml lists modules it does not import {extra}"
