"""An image folder versioned by DVC is part of the pipeline (the messy folder runs whole in
tests/test_pipeline_e2e.py)."""

from __future__ import annotations

import json

import pytest

from tests.e2e import new_repo, run, write_params


def test_a_folder_versioned_by_dvc_is_a_dependency_of_prepare(tmp_path_factory: pytest.TempPathFactory) -> None:
    """dvc add under data/raw: one changed image makes prepare stale, and repro rebuilds from there."""
    from PIL import Image

    from tests.messy_folder import write_messy_folder

    repo = new_repo(tmp_path_factory, "kd-e2e-tracked")
    folder = repo / "data" / "raw" / "shapes"
    write_messy_folder(folder, largest=30, ratio=10)
    run(["dvc", "add", "-q", "data/raw/shapes"], repo)
    write_params(repo, data={"name": "imagefolder", "root": "data/raw/shapes"})
    first = run(["dvc", "repro", "prepare"], repo)
    assert "not versioned" not in first.stdout
    assert json.loads(run(["dvc", "status", "--json", "prepare"], repo).stdout or "{}") == {}

    image = next(p for p in sorted(folder.rglob("*.png")) if p.stat().st_size > 0 and "." not in p.parent.name)
    Image.new("RGB", (20, 20), (255, 0, 0)).save(image)
    changed = json.loads(run(["dvc", "status", "--json"], repo).stdout)
    assert "prepare" in changed and "data/raw/shapes.dvc" in changed
    rebuilt = run(["dvc", "repro", "prepare"], repo)
    assert "Running stage 'prepare'" in rebuilt.stdout
    assert json.loads(run(["dvc", "status", "--json", "prepare"], repo).stdout or "{}") == {}
