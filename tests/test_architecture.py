"""The architecture page and the README tree say what the code is."""

import ast
import re

from tests.architecture import ROOT, current_table, rerun_table


def test_the_rerun_table_in_docs_is_the_one_dvc_yaml_implies() -> None:
    assert current_table() == rerun_table(), "docs/architecture.md is stale: run python -m tests.architecture"


def test_the_annotated_tree_names_every_module_and_stage() -> None:
    """docs/architecture.md's file-by-file tree (the README's is the short one, linking to it)."""
    readme = (ROOT / "docs/architecture.md").read_text()
    tree = readme[readme.index("## Layout, file by file") :]
    named = set(re.findall(r"^\s+(\w+\.py)\s", tree, re.M)) | set(re.findall(r"(\w+\.py)", tree))
    modules = {p.name for p in (ROOT / "kd_pipeline").rglob("*.py") if p.name != "__init__.py"}
    assert not modules - named, f"docs/architecture.md's tree misses {sorted(modules - named)}"
    elsewhere = {n for n in named if any((ROOT / folder / n).exists() for folder in ("benchmarks", "stages", "tests"))}
    assert not named - modules - elsewhere, "docs/architecture.md's tree names a module that does not exist"


def test_no_library_function_is_longer_than_a_screen_without_a_reason() -> None:
    """60 lines, unless a comment in the function says why (`# long:`)."""
    long = []
    for path in sorted((ROOT / "kd_pipeline").rglob("*.py")):
        source = path.read_text()
        lines = source.splitlines()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef) and node.end_lineno - node.lineno + 1 > 60:
                body = "\n".join(lines[node.lineno - 1 : node.end_lineno])
                if "# long:" not in body:
                    long.append(f"{path.name}:{node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not long, f"split these or say why with '# long:': {long}"


def test_each_stage_has_its_library_package_and_packages_hold_only_a_docstring() -> None:
    """kd_pipeline/<stage>/ is the library of stages/<stage>.py (core: what every stage reads;
    records: the tools no stage imports); an `__init__.py` runs on import but is not a dvc.yaml
    dep, so it may hold nothing else."""
    packages = {p.parent.name for p in (ROOT / "kd_pipeline").glob("*/__init__.py")}
    stages = {p.stem for p in (ROOT / "stages").glob("*.py") if p.name != "__init__.py"}
    extra = stages | {"core", "records"}
    assert packages == extra, f"stages without a package, or packages without a stage: {packages ^ extra}"
    for init in (ROOT / "kd_pipeline").glob("*/__init__.py"):
        body = ast.parse(init.read_text()).body
        assert len(body) == 1 and isinstance(body[0], ast.Expr), f"{init} holds more than its docstring"


RECORDS_ORDER = ("experiments", "seeds", "pareto", "provenance", "store", "rerun", "sweep", "tables", "record")


def test_the_records_tools_import_one_way_and_no_stage_imports_them() -> None:
    """kd_pipeline/records/: each module imports only the ones before it in RECORDS_ORDER (no
    circle held together by imports inside functions), and no stage's import closure reaches it."""
    from tests.test_stage_deps import STAGES, import_closure, stage_script

    folder = ROOT / "kd_pipeline" / "records"
    assert {p.stem for p in folder.glob("*.py")} - {"__init__"} == set(RECORDS_ORDER)
    for rank, name in enumerate(RECORDS_ORDER):
        tree = ast.parse((folder / f"{name}.py").read_text())
        used = {node.module.rsplit(".", 1)[-1] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                and node.module and node.module.startswith("kd_pipeline.records.")}
        used |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                 and node.module == "kd_pipeline.records" for alias in node.names}
        later = used - set(RECORDS_ORDER[:rank])
        assert not later, f"records/{name}.py imports {sorted(later)}, which come after it"
    for stage, spec in STAGES.items():
        reached = [str(p) for p in import_closure(stage_script(spec["cmd"])) if "records" in p.parts]
        assert not reached, f"stage {stage} imports the records tools: {reached}"
