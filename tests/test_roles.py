"""One module owns the role names (kd_pipeline/core/roles.py): no other module of the package,
its stages or benchmarks spells a group of them, so a role cannot be added to one list and
forgotten in another."""

import ast

from kd_pipeline.core import roles
from tests.conftest import ROOT

NAMES = {*roles.TORCH_MODELS, roles.QAT}
NAMES |= {roles.onnx_variant(name) for name in set(NAMES)} | {roles.int8_variant(name) for name in set(NAMES)}


def role_groups(source: str) -> list[tuple[int, list[str]]]:
    """Every tuple, list, set or dict literal in `source` that spells two or more role names
    (as elements, keys or values), with its line."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            items = node.elts
        elif isinstance(node, ast.Dict):
            items = [*(k for k in node.keys if k is not None), *node.values]
        else:
            continue
        spelled = [item.value for item in items if isinstance(item, ast.Constant) and item.value in NAMES]
        if len(spelled) >= 2:
            found.append((node.lineno, spelled))
    return found


def test_the_scan_finds_a_spelled_group() -> None:
    assert role_groups('SMALL = ("student", "direct", "baseline")\nx = {"teacher": 1, "y": "pruned_int8"}\n') == [
        (1, ["student", "direct", "baseline"]), (2, ["teacher", "pruned_int8"])]
    assert role_groups("SMALL = (STUDENT, DIRECT)\nx = ('teacher', 'mean')\n") == []


def test_no_module_but_roles_spells_a_group_of_role_names() -> None:
    files = [p for folder in ("kd_pipeline", "stages", "benchmarks") for p in sorted((ROOT / folder).rglob("*.py"))
             if p != ROOT / "kd_pipeline" / "core" / "roles.py"]
    spelled = {f"{p.relative_to(ROOT)}:{line}": names for p in files for line, names in role_groups(p.read_text())}
    assert not spelled, f"role names spelled outside kd_pipeline/core/roles.py: {spelled}"


def test_the_groups_agree() -> None:
    assert set(roles.SMALL_MODELS) | set(roles.CHAIN) == set(roles.FLOAT_MODELS)
    assert set(roles.TEACHERS) == set(roles.ABOVE_STUDENT) and set(roles.TEACHER_OF) == set(roles.FLOAT_MODELS)
    assert set(roles.ARCHITECTURE_OF) == set(roles.TORCH_MODELS)
    assert all(arm in roles.FLOAT_MODELS and control in roles.FLOAT_MODELS for arm, control, _ in roles.COMPARISONS)
    assert roles.source_of(roles.int8_variant(roles.QAT)) == roles.QAT and roles.is_onnx(roles.TEACHER_ONNX)
