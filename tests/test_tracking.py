"""Is the dataset versioned by DVC? One line when it is not, nothing when it is."""

from pathlib import Path

from kd_pipeline.core.params import DataParams
from kd_pipeline.prepare.tracking import tracked_by, untracked_note


def test_a_folder_added_under_data_raw_is_tracked_and_others_are_named(tmp_path: Path) -> None:
    folder = tmp_path / "data" / "raw" / "screens"
    (folder / "cat").mkdir(parents=True)
    cfg = DataParams(name="imagefolder", root=str(folder))
    note = untracked_note(cfg, project=tmp_path)
    assert note is not None and "\n" not in note
    assert "dvc add data/raw/screens" in note and "data.root: data/raw/screens" in note

    (tmp_path / "data" / "raw" / "screens.dvc").write_text("outs:\n- path: screens\n")
    assert tracked_by(folder / "cat", tmp_path) == tmp_path / "data" / "raw" / "screens.dvc"
    assert untracked_note(cfg, project=tmp_path) is None


def test_tracked_data_outside_data_raw_and_default_caches_are_named(tmp_path: Path) -> None:
    elsewhere = tmp_path / "images"
    elsewhere.mkdir()
    (tmp_path / "images.dvc").write_text("outs:\n- path: images\n")
    assert untracked_note(DataParams(name="imagefolder", root=str(elsewhere)), project=tmp_path) is not None
    assert "~" not in untracked_note(DataParams(name="medmnist", subset="breastmnist"), project=tmp_path)
    assert untracked_note(DataParams(name="digits"), project=tmp_path) is None
