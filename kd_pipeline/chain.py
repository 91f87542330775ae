"""The teacher → assistant → student chain: who teaches whom, and one role trained end to end.

Teacher-assistant distillation (Mirzadeh et al., 2020): a mid-sized assistant bridges the
capacity gap, so the student learns from a teacher it can imitate.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from dvclive import Live
from torch import nn

from kd_pipeline.data import Meta, Normalizer, load_meta, load_split
from kd_pipeline.distillation import TeacherEnsemble
from kd_pipeline.distributed import Ranks, session
from kd_pipeline.errors import ParamsError, PipelineError
from kd_pipeline.evaluation import classification_metrics, decide
from kd_pipeline.files import atomic_dir
from kd_pipeline.models import (
    count_parameters,
    create_model,
    load_checkpoint,
    move_to_device,
    read_card,
    save_checkpoint,
)
from kd_pipeline.params import KDParams, Params, fingerprint
from kd_pipeline.paths import DEFAULT_LAYOUT, Layout
from kd_pipeline.ranking import decision_metric
from kd_pipeline.teachers import weaker_than_baseline
from kd_pipeline.training import ResumeFile, fit, predict_gathered, resolve_device, seed_everything

# Two controls share the student's architecture and budget: the baseline, trained without a
# teacher, measures what distillation adds; `direct`, distilled from the teacher without the
# assistant, measures what the assistant adds.
TEACHER_OF = {"teacher": None, "assistant": "teacher", "student": "assistant", "direct": "teacher", "baseline": None}




def train_role(role: str, params: Params, layout: Layout = DEFAULT_LAYOUT, **fit_kwargs: Any) -> dict[str, float]:
    """Train one role (distilling from its teacher in the chain) and write its checkpoint.

    Returns the test metrics of the best epoch (nothing in processes other than the first, with
    several). dvclive output goes to metrics/<role>/.
    """
    if role not in TEACHER_OF:
        raise ParamsError(f"unknown role {role!r}; allowed: {', '.join(TEACHER_OF)}")
    cfg = params.train_for(role)
    with session(resolve_device(cfg.device)) as (ranks, device):
        return _train_role(role, params, layout, ranks, device, **fit_kwargs)


def _train_role(
    role: str, params: Params, layout: Layout, ranks: Ranks, device: torch.device, **fit_kwargs: Any
) -> dict[str, float]:
    role_cfg = params.role(role)
    cfg = params.train_for(role)
    meta = load_meta(layout.prepared)
    train, val, test = (load_split(layout.prepared, s) for s in ("train", "val", "test"))
    seed_everything(cfg.seed, cfg.num_threads)

    teachers = teachers_of(role, params.kd)
    teacher_role = "+".join(teachers) or None
    teacher, teacher_hash = load_teachers(teachers, params, layout, meta, device)

    model = create_model(
        role_cfg.model, meta.num_classes, role_cfg.pretrained, role_cfg.pretrained_file, role_cfg.model_kwargs
    )
    model = move_to_device(model, device)
    # Pretrained weights expect the normalisation they were trained with.
    mean, std = meta.mean, meta.std
    if role_cfg.pretrained or role_cfg.pretrained_file:
        mean = list(model.pretrained_cfg.get("mean", mean))
        std = list(model.pretrained_cfg.get("std", std))
    normalizer = Normalizer(mean, std, device, channels_last=device.type == "cuda")
    kd = params.kd if teacher is not None else None
    # Only the student reads kd.learn_from: the other roles' hashes (and dvc.yaml params) leave it out.
    kd_read = {k: v for k, v in kd.read_by_loss().items() if role == "student" or k != "learn_from"} if kd else {}
    params_hash = fingerprint(role, role_cfg, cfg, kd_read or None, meta.content_hash, teacher_hash)

    with stage_live(layout.metrics / role, ranks) as live:
        if live is not None:
            live.log_params({
                "role": role, "model": role_cfg.model, "teacher": teacher_role or "",
                "num_parameters": count_parameters(model), "device": device.type,
                **{f"train.{k}": v for k, v in cfg.model_dump(exclude={"augment"}).items()},
                **{f"kd.{k}": v for k, v in kd_read.items()},
            })
        resume = ResumeFile(layout.resume / role / "state.pt", params_hash)
        result = fit(
            model, train, val, cfg, normalizer, meta.num_classes,
            teacher=teacher, kd=kd, live=live, resume=resume, name=role, ranks=ranks, **fit_kwargs,
        )
        test_logits = predict_gathered(model, test, normalizer, ranks)
        test_metrics = classification_metrics(
            test.labels, decide(test_logits.numpy(), test.multilabel), meta.num_classes
        )
        if live is None:
            return {}  # only the first process reports and writes
        live.log_metric("best_epoch", result.best_epoch, plot=False)
        for key, value in result.best.items():
            if key.startswith("val/"):
                live.log_metric(key, value, plot=False)  # the summary shows the kept epoch
        for key, value in test_metrics.items():
            live.log_metric(f"test/{key}", value, plot=False)

    card = _card(role, role_cfg.model, role_cfg.model_kwargs, meta, mean, std, model, teacher_role, result)
    card.update({"ranked_by": decision_metric(cfg.monitor, train.labels),  # how later stages compare it
                 "test_metrics": test_metrics, "params_hash": params_hash, "data_hash": meta.content_hash})
    save_checkpoint(model, layout.model_dir(role), card)
    resume.clear()
    return test_metrics


def _card(
    role: str, timm_name: str, model_kwargs: dict[str, Any], meta: Meta, mean: list[float], std: list[float],
    model: nn.Module, teacher_role: str | None, result: Any,
) -> dict[str, Any]:
    """What a checkpoint is: architecture, data, preprocessing, teacher and the kept epoch's scores."""
    return {
        "role": role,
        "timm_name": timm_name,
        "model_kwargs": model_kwargs,
        "num_classes": meta.num_classes,
        "class_names": meta.class_names,
        "task": meta.task,
        "input_size": [3, meta.image_size, meta.image_size],
        "mean": mean,
        "std": std,
        "num_parameters": count_parameters(model),
        "teacher": teacher_role,
        "best_epoch": result.best_epoch,
        "val_metrics": {k.removeprefix("val/"): v for k, v in result.best.items() if k.startswith("val/")},
    }


@contextmanager
def stage_live(directory: Path, ranks: Ranks) -> Iterator[Live | None]:
    """dvclive for a training stage, on the first process only (None on the others).

    It writes every epoch into a temporary folder that takes `directory`'s place only when the
    stage completes, so a killed stage never leaves a finished-looking metrics.json.
    """
    if not ranks.is_main:
        yield None
        return
    with (atomic_dir(directory) as live_dir,
          Live(dir=str(live_dir), save_dvc_exp=False, dvcyaml=False, report=None) as live):
        yield live


def teachers_of(role: str, kd: KDParams) -> list[str]:
    """The models a role learns from: its nearest teacher in the chain, or for the student (and
    the pruned student) with `kd.learn_from: all_above`, the assistant and the teacher."""
    if role in ("student", "pruned") and kd.learn_from == "all_above":
        return ["assistant", "teacher"]
    nearest = "assistant" if role == "pruned" else TEACHER_OF[role]
    return [nearest] if nearest else []


def load_teachers(
    roles: list[str], params: Params, layout: Layout, meta: Meta, device: torch.device
) -> tuple[nn.Module | None, str | None]:
    """The teachers as one eval-mode module (an ensemble when several) and their params hash."""
    if not roles:
        return None, None
    models, hashes = [], []
    for teacher_role in roles:
        model, card = load_checkpoint(layout.model_dir(teacher_role), num_classes=meta.num_classes)
        check_teacher(teacher_role, card, layout, params.kd.require_better_teacher)
        models.append(move_to_device(model, device).eval())
        hashes.append(card["params_hash"])
    if len(models) == 1:
        return models[0], hashes[0]
    ensemble = TeacherEnsemble(models, params.kd.temperature, meta.task == "multilabel")
    return ensemble.eval(), "+".join(hashes)


def check_teacher(teacher_role: str, teacher_card: dict[str, Any], layout: Layout, required: bool) -> None:
    """Say in one line when the teacher is less accurate on validation than the baseline
    (the student trained alone); with `kd.require_better_teacher`, stop instead of distilling."""
    baseline_dir = layout.model_dir("baseline")
    if not (baseline_dir / "model.json").is_file():
        print(f"note: {baseline_dir} not found: teacher quality not checked against the baseline")
        return
    message = weaker_than_baseline(teacher_role, teacher_card, read_card(baseline_dir))
    if message is None:
        return
    if required:
        raise PipelineError(f"{message} (kd.require_better_teacher: true stops here)")
    print(f"warning: {message}")
