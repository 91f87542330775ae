"""The real `dvc repro` on image folders: a messy, imbalanced one, and one versioned by DVC."""

from __future__ import annotations

import json

import pytest

from tests.e2e import new_repo, run, write_params


def test_messy_imbalanced_folder_runs_through_export_with_default_params(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A user's folder, untuned: 1:100 imbalance, mixed formats and modes, corrupt and hidden files."""
    from tests.messy_folder import write_messy_folder

    repo = new_repo(tmp_path_factory, "kd-e2e-messy")
    folder = repo / "messy"
    counts = write_messy_folder(folder, largest=300, ratio=100)
    write_params(repo, data={"name": "imagefolder", "root": str(folder)})
    untracked = run(["dvc", "repro"], repo)
    assert "warning: data.root" in untracked.stdout and "is not versioned by DVC" in untracked.stdout
    meta = json.loads((repo / "data/prepared/meta.json").read_text())
    assert meta["class_names"] == sorted(counts)
    assert {name: sum(meta["counts"][s][name] for s in meta["counts"]) for name in counts} == counts
    assert all(meta["counts"][split]["ring"] >= 1 for split in ("train", "val", "test"))
    skipped = " ".join(meta["source"]["skipped_files"])
    assert "truncated.jpg" in skipped and "empty.png" in skipped and len(meta["source"]["skipped_files"]) == 2
    evaluation = json.loads((repo / "metrics/evaluate.json").read_text())
    exported = json.loads((repo / "metrics/export.json").read_text())
    assert exported["variant"] == evaluation["deployed"] and (repo / "export/model.onnx").is_file()
    if not evaluation["targets_passed"]:
        assert "**meets_targets**: false" in (repo / "export/MODEL_CARD.md").read_text()


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
