"""dvc.yaml lists every project module a stage's script imports, directly or not, and no other:
an edit to any of them must make `dvc status` report the stage as changed."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT


def _imports(path: Path) -> set[Path]:
    """The project modules `path` imports: `from kd_pipeline.train import chain` names the module
    chain.py, `from kd_pipeline.train.chain import x` names it too (a package's `__init__.py`
    holds only its docstring, tests/test_architecture.py checks, so it is never a dep)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("kd_pipeline"):
            names += [f"{node.module}.{alias.name}" for alias in node.names]
        names += [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
        found |= {module for name in names if name.startswith("kd_pipeline.")
                  if (ROOT / (module := Path(*name.split(".")).with_suffix(".py"))).is_file()}
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


def stage_script(cmd: str) -> Path:
    """`python -m stages.train teacher` → stages/train.py."""
    words = cmd.split()
    assert words[:2] == ["python", "-m"] and words[2].startswith("stages."), f"not a stage module: {cmd}"
    return Path(*words[2].split(".")).with_suffix(".py")


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_are_the_scripts_import_closure(stage: str) -> None:
    script = stage_script(STAGES[stage]["cmd"])
    listed = {Path(dep) for dep in STAGES[stage]["deps"] if str(dep).startswith("kd_pipeline/")}
    assert script in {Path(dep) for dep in STAGES[stage]["deps"]}
    closure = import_closure(script)
    assert not closure - listed, f"{stage}: dvc.yaml misses {sorted(map(str, closure - listed))}"
    extra = sorted(map(str, listed - closure))
    assert not extra, f"{stage}: dvc.yaml lists modules it does not import {extra}"


def test_stage_commands_run_the_library_of_the_checkout_they_run_in(tmp_path: Path) -> None:
    """DVC runs queued and temporary experiments in a copy of the workspace. The package is
    installed in editable mode from the workspace, so `python stages/x.py` in the copy would
    import the workspace's library, whatever the experiment committed: a result recorded under
    one code version, computed by another. Run as modules, the stages import the copy's."""
    for folder in ("stages", "kd_pipeline"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "kd_pipeline" / "__init__.py").write_text("raise SystemExit('imported from the copy')\n")
    for cmd in sorted({STAGES[stage]["cmd"] for stage in STAGES}):
        argv = [sys.executable, *cmd.split()[1:]]
        run = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert "imported from the copy" in run.stderr, f"{cmd} ran another library: {run.stderr[-300:]}"
