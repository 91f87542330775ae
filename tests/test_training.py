from pathlib import Path

import pytest
import torch

from kd_pipeline.core.data import Normalizer, load_meta, load_split
from kd_pipeline.core.models import create_model
from kd_pipeline.train.training import EarlyStopping, FitResult, ResumeFile, fit, seed_everything
from tests.conftest import TINY_MODEL, tiny_params

TIMING_KEYS = {"epoch_time_s", "peak_memory_mb"}  # independent of training.TIMING on purpose


class Killed(Exception):
    pass


def _run(prepared_dir: Path, state: Path | None, kill_after: int | None = None) -> tuple[FitResult, dict]:
    params = tiny_params(train={"epochs": 3, "augment": {"color_jitter": True}})
    meta = load_meta(prepared_dir)
    train, val = load_split(prepared_dir, "train"), load_split(prepared_dir, "val")
    seed_everything(0)
    teacher = create_model(TINY_MODEL, 10).eval()
    # dropout and drop-path (stochastic depth) draw random numbers: resume must restore the RNG
    model = create_model(TINY_MODEL, 10, model_kwargs={"drop_rate": 0.3, "drop_path_rate": 0.2})
    normalizer = Normalizer(meta.mean, meta.std, torch.device("cpu"), channels_last=False)

    def kill(epoch: int) -> None:
        if kill_after is not None and epoch == kill_after:
            raise Killed

    result = fit(
        model, train, val, params.train, normalizer, 10,
        teacher=teacher, kd=params.kd, resume=ResumeFile(state, "fp-1") if state else None,
        on_epoch_end=kill,
    )
    return result, model.state_dict()


def _comparable(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in history]


def test_resume_after_kill_matches_uninterrupted_run(prepared_dir: Path, tmp_path: Path) -> None:
    full, full_weights = _run(prepared_dir, None)
    state = tmp_path / "resume" / "state.pt"
    with pytest.raises(Killed):
        _run(prepared_dir, state, kill_after=1)
    assert state.is_file()
    saved = torch.load(state, weights_only=True)
    assert len(saved["history"]) == 1
    resumed, resumed_weights = _run(prepared_dir, state)
    assert resumed.epochs_run == full.epochs_run == 3
    assert _comparable(resumed.history) == _comparable(full.history)
    assert resumed.best_epoch == full.best_epoch
    for key, value in full_weights.items():
        assert torch.equal(value, resumed_weights[key]), key


def test_same_seed_same_metrics(prepared_dir: Path) -> None:
    first, _ = _run(prepared_dir, None)
    second, _ = _run(prepared_dir, None)
    assert _comparable(first.history) == _comparable(second.history)


def test_state_from_other_params_is_ignored(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "state.pt"
    ResumeFile(path, "old").save({"history": []})
    assert ResumeFile(path, "new").load() is None
    assert "other params" in capsys.readouterr().out
    path.write_bytes(b"not a checkpoint")
    assert ResumeFile(path, "old").load() is None


def test_early_stopping() -> None:
    stopper = EarlyStopping(patience=2, mode="max")
    for epoch, value in enumerate([0.5, 0.7, 0.6, 0.65], start=1):
        stopper.update(value, epoch)
    assert stopper.best == 0.7 and stopper.best_epoch == 2 and stopper.should_stop
    assert not EarlyStopping(patience=0, mode="min", bad_epochs=10).should_stop


def test_training_learns(prepared_dir: Path) -> None:
    result, _ = _run(prepared_dir, None)
    assert result.history[-1]["train/loss"] < result.history[0]["train/loss"]
    assert result.best["val/accuracy"] > 0.3  # ten classes: chance is 0.1


def test_multilabel_training_and_distillation_learn(prepared_dir: Path, tmp_path: Path) -> None:
    """Digits relabelled as three yes/no questions (even? below 5? round?): BCE training and KD."""
    import shutil

    import numpy as np

    from kd_pipeline.core.evaluation import full_metrics, predict_logits

    folder = tmp_path / "multilabel"
    shutil.copytree(prepared_dir, folder)
    for split in ("train", "val", "test"):
        digits = np.load(folder / split / "labels.npy")
        labels = np.stack([digits % 2 == 0, digits < 5, np.isin(digits, [0, 6, 8, 9])], axis=1).astype(np.int64)
        np.save(folder / split / "labels.npy", labels)
    meta = load_meta(folder)
    train, val, test = (load_split(folder, s) for s in ("train", "val", "test"))
    assert train.multilabel
    params = tiny_params(train={"epochs": 3, "class_weights": True})
    normalizer = Normalizer(meta.mean, meta.std, torch.device("cpu"), channels_last=False)
    seed_everything(0)
    teacher = create_model(TINY_MODEL, 3)
    taught = fit(teacher, train, val, params.train, normalizer, 3)
    student = create_model(TINY_MODEL, 3)
    distilled = fit(student, train, val, params.train, normalizer, 3, teacher=teacher.eval(), kd=params.kd)
    for result in (taught, distilled):
        assert result.history[-1]["train/loss"] < result.history[0]["train/loss"]
        assert {"val/accuracy", "val/exact_match", "val/f1"} <= set(result.best)
    report = full_metrics(test.labels, predict_logits(student, test, normalizer).numpy(), ["even", "low", "round"])
    assert report.summary["roc_auc"] > 0.75  # chance is 0.5


def test_a_stage_s_curves_are_on_disk_while_it_trains_and_only_a_finished_one_says_complete(
        prepared_dir: Path, tmp_path: Path) -> None:
    """dvclive writes into the stage's output folder every epoch (what `dvc plots show` reads while a
    stage runs); metrics.json says complete: false until the stage ends, so a killed one never reads
    as finished, and the experiments reader leaves it out."""
    import json

    from kd_pipeline.core.paths import Layout
    from kd_pipeline.records.experiments import read_at
    from kd_pipeline.train.chain import train_role

    layout = Layout(prepared=prepared_dir, models=tmp_path / "models", metrics=tmp_path / "metrics",
                    resume=tmp_path / "resume")
    params = tiny_params(train={"epochs": 2})
    live_dir = layout.metrics / "teacher"
    seen: list[tuple[dict, int]] = []

    def kill(epoch: int) -> None:
        curve = live_dir / "plots" / "metrics" / "val" / "accuracy.tsv"
        seen.append((json.loads((live_dir / "metrics.json").read_text()), len(curve.read_text().splitlines())))
        raise Killed

    with pytest.raises(Killed):
        train_role("teacher", params, layout, on_epoch_end=kill)
    assert seen == [(seen[0][0], 2)] and seen[0][0]["complete"] is False  # the header and the first epoch
    assert json.loads((live_dir / "metrics.json").read_text())["complete"] is False, "a killed stage looks finished"
    assert read_at("workspace", ("metrics/teacher/metrics.json",), tmp_path) == {}
    train_role("teacher", params, layout)
    summary = json.loads((live_dir / "metrics.json").read_text())
    assert summary["complete"] is True and "accuracy" in summary["test"]
    assert len((live_dir / "plots" / "metrics" / "val" / "accuracy.tsv").read_text().splitlines()) == 3
    assert read_at("workspace", ("metrics/teacher/metrics.json",), tmp_path)["metrics/teacher/metrics.json"] == summary


def test_a_stage_s_dvclive_folder_is_byte_identical_across_runs(prepared_dir: Path, tmp_path: Path) -> None:
    """metrics/<role>/ is a cached DVC output: the same params and data must give the same bytes
    (no epoch times or memory in it), or the run cache and dvc.lock would record noise."""
    from kd_pipeline.core.paths import Layout
    from kd_pipeline.train.chain import train_role

    params = tiny_params(train={"epochs": 2})
    runs = []
    for k in (1, 2):
        layout = Layout(prepared=prepared_dir, models=tmp_path / f"models{k}", metrics=tmp_path / f"metrics{k}",
                        resume=tmp_path / f"resume{k}")
        train_role("teacher", params, layout)
        folder = layout.metrics / "teacher"
        runs.append({str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()})
    assert "metrics.json" in runs[0] and not TIMING_KEYS & {Path(name).stem for name in runs[0]}
    assert runs[0] == runs[1]


def _snapshots(prepared_dir: Path, keep: str) -> tuple[FitResult, list[dict], dict]:
    """A four-epoch fit at a learning rate high enough that validation goes up and down."""
    params = tiny_params(train={"epochs": 4, "lr": 0.2, "optimizer": "sgd", "scheduler": "none"})
    train, val = load_split(prepared_dir, "train"), load_split(prepared_dir, "val")
    meta = load_meta(prepared_dir)
    seed_everything(0)
    model = create_model(TINY_MODEL, 10)
    snapshots: list[dict] = []
    result = fit(model, train, val, params.train, Normalizer(meta.mean, meta.std, torch.device("cpu"),
                 channels_last=False), 10, keep=keep,
                 on_epoch_end=lambda _: snapshots.append({k: v.clone() for k, v in model.state_dict().items()}))
    return result, snapshots, model.state_dict()


def test_a_fine_tune_kept_at_its_last_epoch_was_not_picked_on_validation(prepared_dir: Path) -> None:
    """prune.keep: last leaves the final epoch's weights, whatever validation says; best goes back."""
    best, snapshots, best_weights = _snapshots(prepared_dir, "best")
    assert best.best_epoch < 4, "the setup must have a best epoch before the last"
    last, _, last_weights = _snapshots(prepared_dir, "last")
    assert last.best_epoch == last.epochs_run == 4 and last.best == last.history[-1]
    for key in last_weights:
        assert torch.equal(last_weights[key], snapshots[-1][key]), key
        assert torch.equal(best_weights[key], snapshots[best.best_epoch - 1][key]), key
