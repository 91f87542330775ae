"""The teacher → assistant → student chain: who teaches whom, and one role trained end to end.

Teacher-assistant distillation (Mirzadeh et al., 2020): a mid-sized assistant bridges the
capacity gap, so the student learns from a teacher it can imitate.
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from dvclive import Live

from kd_pipeline.core.data import Meta
from kd_pipeline.core.errors import ParamsError
from kd_pipeline.core.evaluation import classification_metrics, decide
from kd_pipeline.core.models import at_size, count_parameters, create_model, move_to_device, save_checkpoint
from kd_pipeline.core.params import KDParams, ModelParams, Params, fingerprint
from kd_pipeline.core.paths import DEFAULT_LAYOUT, Layout
from kd_pipeline.core.ranking import decision_metric
from kd_pipeline.core.roles import ABOVE_STUDENT, ASSISTANT, CHAIN, PRUNED, STUDENT, TEACHER_OF
from kd_pipeline.train.distributed import Ranks, session
from kd_pipeline.train.finetune import (
    best_val_metrics,
    device_normalizer,
    fine_tune,
    load_teachers,
    prepared_run,
    stage_live,
)
from kd_pipeline.train.training import FitResult, predict_gathered, resolve_device

# Two controls share the student's architecture and budget (roles.TEACHER_OF): the baseline,
# trained without a teacher, measures what distillation adds; `direct`, distilled from the teacher
# without the assistant, measures what the assistant adds.




def train_role(role: str, params: Params, layout: Layout = DEFAULT_LAYOUT, **fit_kwargs: Any) -> dict[str, float]:
    """Train one role (distilling from its teacher in the chain) and write its checkpoint.

    Returns the test metrics of the best epoch (nothing in processes other than the first, with
    several). dvclive output goes to metrics/<role>/.
    """
    if role not in TEACHER_OF:
        raise ParamsError(f"unknown role {role!r}; allowed: {', '.join(TEACHER_OF)}")
    for warning in chain_warnings(params):
        print(f"warning: {warning}", file=sys.stderr)
    cfg = params.train_for(role)
    with session(resolve_device(cfg.device)) as (ranks, device):
        return _train_role(role, params, layout, ranks, device, **fit_kwargs)


def _train_role(
    role: str, params: Params, layout: Layout, ranks: Ranks, device: torch.device, **fit_kwargs: Any
) -> dict[str, float]:
    role_cfg = params.role(role)
    cfg = params.train_for(role)
    run = prepared_run(layout, cfg)
    meta = run.meta
    teachers = load_teachers(teachers_of(role, params.kd), params, run, device)
    teacher_role = "+".join(teachers.roles) or None
    size = view_size(role, role_cfg, meta.image_size)
    net = create_model(
        role_cfg.model, meta.num_classes, role_cfg.pretrained, role_cfg.pretrained_file, role_cfg.model_kwargs
    )
    # Pretrained weights expect the normalisation they were trained with.
    mean, std = meta.mean, meta.std
    if role_cfg.pretrained or role_cfg.pretrained_file:
        mean = list(net.pretrained_cfg.get("mean", mean))
        std = list(net.pretrained_cfg.get("std", std))
    model = move_to_device(at_size(net, size, meta.image_size), device)
    normalizer = device_normalizer(mean, std, device)
    # Only the student reads kd.learn_from: the other roles' hashes (and dvc.yaml params) leave it out.
    kd_read = {k: v for k, v in (teachers.loss_reads() or {}).items() if role == "student" or k != "learn_from"}
    params_hash = fingerprint(role, role_cfg, cfg, kd_read or None, meta.content_hash, teachers.params_hash)

    with stage_live(layout.metrics / role, ranks) as live:
        if live is not None:
            live.log_params({
                "role": role, "model": role_cfg.model, "teacher": teacher_role or "",
                "num_parameters": count_parameters(model), "device": device.type,
                **{f"train.{k}": v for k, v in cfg.model_dump(exclude={"augment"}).items()},
                **{f"kd.{k}": v for k, v in kd_read.items()},
            })
        with fine_tune(role, model, cfg, teachers, normalizer, params_hash, run, live=live, ranks=ranks,
                       **fit_kwargs) as result:
            test_logits = predict_gathered(model, run.test, normalizer, ranks)
            test_metrics = classification_metrics(
                run.test.labels, decide(test_logits.numpy(), run.test.multilabel), meta.num_classes
            )
            if live is None:
                return {}  # only the first process reports and writes
            _log_kept_epoch(live, result, test_metrics)
            card = _card(role, role_cfg.model, role_cfg.model_kwargs, meta, mean, std, model, teacher_role, result)
            if size != meta.image_size:
                card["view_size"] = size  # load_checkpoint wraps the network in Resized again
            card.update({"ranked_by": decision_metric(cfg.monitor, run.train.labels),  # how later stages compare it
                         "test_metrics": test_metrics, "params_hash": params_hash, "data_hash": meta.content_hash})
            save_checkpoint(model, layout.model_dir(role), card)
    return test_metrics


def _log_kept_epoch(live: Live, result: FitResult, test_metrics: dict[str, float]) -> None:
    """The kept epoch's validation scores and the test scores, for the stage's metrics.json."""
    live.log_metric("best_epoch", result.best_epoch, plot=False)
    for key, value in result.best.items():
        if key.startswith("val/"):
            live.log_metric(key, value, plot=False)  # the summary shows the kept epoch
    for key, value in test_metrics.items():
        live.log_metric(f"test/{key}", value, plot=False)


def _card(
    role: str, timm_name: str, model_kwargs: dict[str, Any], meta: Meta, mean: list[float], std: list[float],
    model: torch.nn.Module, teacher_role: str | None, result: FitResult,
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
        "val_metrics": best_val_metrics(result),
    }


def parameter_count(role_cfg: ModelParams) -> int:
    """A role's parameters, counted on the meta device (no memory, no weights, milliseconds)."""
    with torch.device("meta"):
        return count_parameters(create_model(role_cfg.model, 10, model_kwargs=role_cfg.model_kwargs))


def chain_warnings(params: Params) -> list[str]:
    """What makes the chain unlikely to transfer anything, said before any training: a student
    larger than a model that teaches it, or an assistant that is not between teacher and student.
    Warnings, not errors: a user may mean it (a self-distillation test, say)."""
    counts = {role: parameter_count(params.role(role)) for role in CHAIN}
    names = {role: params.role(role).model for role in counts}

    def said(role: str) -> str:
        return f"{role} {names[role]} ({counts[role] / 1e6:.3g} M parameters)"

    found = [f"{said('student')} is larger than its {said(above)}"
             for above in ABOVE_STUDENT if counts["student"] > counts[above]]
    if not counts["student"] <= counts["assistant"] <= counts["teacher"] and counts["student"] <= counts["teacher"]:
        found.append(f"{said('assistant')} is not between its {said('teacher')} and {said('student')}")
    return found


def view_size(role: str, role_cfg: ModelParams, data_size: int) -> int:
    """The size the role's network sees: its own `image_size`, or the data's. A ViT's `img_size`
    in model_kwargs must agree with the role's own size (its position embedding is made for one)."""
    size = role_cfg.image_size or data_size
    declared = role_cfg.model_kwargs.get("img_size")
    if role_cfg.image_size is not None and declared is not None and declared != size:
        raise ParamsError(
            f"{role}.model_kwargs.img_size = {declared} but the {role} sees {size} px"
            f" ({role}.image_size, or data.image_size when null); make them agree"
        )
    return size


def teachers_of(role: str, kd: KDParams) -> list[str]:
    """The models a role learns from: its nearest teacher in the chain, or for the student (and
    the pruned student) with `kd.learn_from: all_above`, the assistant and the teacher."""
    if role in (STUDENT, PRUNED) and kd.learn_from == "all_above":
        return list(ABOVE_STUDENT)
    nearest = ASSISTANT if role == PRUNED else TEACHER_OF[role]
    return [nearest] if nearest else []
