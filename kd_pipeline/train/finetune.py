"""One fine-tune for every model the pipeline trains: each chain role, the pruned model's
fine-tune and the QAT student.

They share one skeleton, so a fix to it (how teachers load, how a killed run resumes, when the
resume file goes) reaches all three: the prepared data loaded and the RNGs seeded
(`prepared_run`), the teachers loaded and checked (`load_teachers`), then `fine_tune`:
resumable `fit` → the caller measures and saves → the resume file cleared. What
differs stays with the caller: how the model is made (created, pruned, QAT-prepared), its
fingerprint and its card.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from dvclive import Live
from torch import nn

from kd_pipeline.core.data import Meta, Normalizer, Split, load_meta, load_split
from kd_pipeline.core.errors import PipelineError
from kd_pipeline.core.evaluation import classification_metrics, decide, predict_logits
from kd_pipeline.core.models import load_checkpoint, move_to_device, read_card
from kd_pipeline.core.params import KDParams, Params, TrainParams
from kd_pipeline.core.paths import Layout
from kd_pipeline.core.roles import BASELINE
from kd_pipeline.train.distillation import TeacherEnsemble
from kd_pipeline.train.distributed import ONE_PROCESS, Ranks
from kd_pipeline.train.teachers import weaker_than_baseline
from kd_pipeline.train.training import FitResult, ResumeFile, fit, seed_everything


@dataclass(frozen=True)
class PreparedRun:
    """The prepared data a fine-tune reads, and where the run's files live."""

    layout: Layout
    meta: Meta
    train: Split
    val: Split
    test: Split


def prepared_run(layout: Layout, budget: TrainParams) -> PreparedRun:
    """The prepared splits, with every RNG seeded from `budget` (before any model is made, so
    equal params draw equal initial weights)."""
    meta = load_meta(layout.prepared)
    train, val, test = (load_split(layout.prepared, s) for s in ("train", "val", "test"))
    seed_everything(budget.seed, budget.num_threads)
    return PreparedRun(layout, meta, train, val, test)


@dataclass(frozen=True)
class Teachers:
    """The models a fine-tune distils from (None: it learns from the labels alone)."""

    roles: list[str]
    model: nn.Module | None
    params_hash: str | None
    kd: KDParams | None

    def loss_reads(self) -> dict[str, Any] | None:
        """The kd params the loss reads (None without a teacher), for fingerprints: params the
        loss ignores leave a checkpoint's fingerprint, and so its resume file, alone."""
        return self.kd.read_by_loss() if self.kd else None


def load_teachers(roles: list[str], params: Params, run: PreparedRun, device: torch.device) -> Teachers:
    """The teachers as one eval-mode module (an ensemble when several), checked against the
    baseline, with their params hash."""
    if not roles:
        return Teachers([], None, None, None)
    models, hashes = [], []
    for teacher_role in roles:
        model, card = load_checkpoint(run.layout.model_dir(teacher_role), num_classes=run.meta.num_classes)
        check_teacher(teacher_role, card, run.layout, params.kd.require_better_teacher)
        models.append(move_to_device(model, device).eval())
        hashes.append(card["params_hash"])
    if len(models) == 1:
        return Teachers(roles, models[0], hashes[0], params.kd)
    ensemble = TeacherEnsemble(models, params.kd.temperature, run.meta.task == "multilabel")
    return Teachers(roles, ensemble.eval(), "+".join(hashes), params.kd)


def check_teacher(teacher_role: str, teacher_card: dict[str, Any], layout: Layout, required: bool) -> None:
    """Say in one line when the teacher is less accurate on validation than the baseline
    (the student trained alone); with `kd.require_better_teacher`, stop instead of distilling."""
    baseline_dir = layout.model_dir(BASELINE)
    if not (baseline_dir / "model.json").is_file():
        print(f"note: {baseline_dir} not found: teacher quality not checked against the baseline")
        return
    message = weaker_than_baseline(teacher_role, teacher_card, read_card(baseline_dir))
    if message is None:
        return
    if required:
        raise PipelineError(f"{message} (kd.require_better_teacher: true stops here)")
    print(f"warning: {message}")


@contextmanager
def fine_tune(
    name: str, model: nn.Module, budget: TrainParams, teachers: Teachers, normalizer: Normalizer, params_hash: str,
    run: PreparedRun, *, live: Live | None = None, ranks: Ranks = ONE_PROCESS, train: bool = True,
    **fit_kwargs: Any,
) -> Iterator[FitResult | None]:
    """Train `model` (on its device) for `budget`, distilling from `teachers`, resumable from
    resume/<name>/ while `params_hash` stays the same; yields the fit's result (None with
    `train=False`: `prune.epochs: 0` measures and saves the pruned model untrained).

    The caller measures and saves inside the `with` block; the resume file is cleared only when
    the block completes, so a run killed before its checkpoint is written resumes.
    """
    resume = ResumeFile(run.layout.resume / name / "state.pt", params_hash)
    result = None
    if train:
        result = fit(model, run.train, run.val, budget, normalizer, run.meta.num_classes, teacher=teachers.model,
                     kd=teachers.kd, live=live, resume=resume, name=name, ranks=ranks, **fit_kwargs)
    yield result
    if ranks.is_main:  # the first process writes the checkpoint, and only then is the state gone
        resume.clear()


def device_normalizer(mean: list[float], std: list[float], device: torch.device) -> Normalizer:
    """The normalizer a model trains with on `device` (channels-last on CUDA, where it is faster)."""
    return Normalizer(mean, std, device, channels_last=device.type == "cuda")


def cpu_scores(model: nn.Module, card: dict[str, Any], splits: dict[str, Split], num_classes: int) -> dict[str, dict]:
    """The finished model's metrics per split, scored on the CPU in float32 with its card's
    normalisation: how its card's numbers are made, whatever device it trained on."""
    cpu = Normalizer(card["mean"], card["std"], torch.device("cpu"), False)
    return {name: classification_metrics(split.labels, decide(predict_logits(model, split, cpu).numpy(),
                                                              split.multilabel), num_classes)
            for name, split in splits.items()}


def best_val_metrics(result: FitResult) -> dict[str, float]:
    """The validation scores of the epoch the fit kept, without the `val/` prefix (for cards)."""
    return {k.removeprefix("val/"): v for k, v in result.best.items() if k.startswith("val/")}


# metrics.json's field that says whether the stage's training ended: false from its first epoch
# on, true only once the stage is done, so a killed stage's curves never read as a finished run.
COMPLETE = "complete"


@contextmanager
def stage_live(directory: Path, ranks: Ranks) -> Iterator[Live | None]:
    """dvclive for a training stage, on the first process only (None on the others).

    It writes every epoch straight into `directory`, the stage's DVC output, so `dvc plots show`
    and the DVC extension draw a running stage's curves. metrics.json says `complete: false` until
    the stage ends; a killed stage leaves it false (and DVC leaves the stage out of dvc.lock, so
    `dvc status` and the next `dvc repro` still see it as not run).
    """
    if not ranks.is_main:
        yield None
        return
    with Live(dir=str(directory), save_dvc_exp=False, dvcyaml=False, report=None) as live:
        live.summary[COMPLETE] = False
        yield live
        live.summary[COMPLETE] = True
