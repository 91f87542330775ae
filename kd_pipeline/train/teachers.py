"""Is a teacher worth learning from? Its validation score against the student trained alone.

A from-scratch teacher on small data can end up weaker than the small model trained without
any teacher (the baseline); distilling from it then costs accuracy. Both are scored on the
same validation split (never the test split), at the epoch each kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kd_pipeline.core.models import CARD_FILE, read_card
from kd_pipeline.core.roles import BASELINE, PRUNED, TEACHERS


def advice(role: str) -> str:
    """What makes a from-scratch teacher stronger, in the params that set it."""
    return (
        f"give the {role} a longer budget ({role}.train.epochs), pretrained weights"
        f" ({role}.pretrained or {role}.pretrained_file) or augmentation ({role}.train.augment.*)"
    )


def primary_metric(card: dict[str, Any]) -> str:
    """The validation score that ranks a checkpoint against others: the one its training run
    monitored (kd_pipeline.core.ranking), or for an older card, accuracy (ROC AUC for multi-label)."""
    return card.get("ranked_by") or ("roc_auc" if card.get("task") == "multilabel" else "accuracy")


def weaker_than_baseline(teacher_role: str, teacher_card: dict[str, Any], baseline_card: dict[str, Any]) -> str | None:
    """One line when the teacher scores below the baseline on validation, else None."""
    metric = primary_metric(baseline_card)
    teacher = teacher_card.get("val_metrics", {}).get(metric)
    baseline = baseline_card.get("val_metrics", {}).get(metric)
    if teacher is None or baseline is None or teacher >= baseline:
        return None
    return (
        f"the {teacher_role} ({teacher_card['timm_name']}, val {metric} {teacher:.4f}) is less accurate than the"
        f" student trained alone (baseline, {baseline:.4f}): distilling from it can cost accuracy;"
        f" {advice(teacher_role)}"
    )


def teacher_warnings(models_dir: Path) -> list[str] | None:
    """The one-line warning of every teacher in the chain that is weaker than the baseline;
    None when a card is missing, so the report says "not checked" rather than "all good"."""
    cards = {role: models_dir / role / CARD_FILE for role in (*TEACHERS, BASELINE)}
    if not all(path.is_file() for path in cards.values()):
        return None
    baseline = read_card(models_dir / BASELINE)
    found = (weaker_than_baseline(role, read_card(models_dir / role), baseline) for role in TEACHERS)
    return [line for line in found if line]


def compressed_from(models_dir: Path) -> dict[str, Any] | None:
    """Which small model the pruned one was made from and who taught its fine-tune (its card's
    origin, kd_pipeline.prune.origin); None when the pruned model or its origin is missing."""
    path = models_dir / PRUNED / CARD_FILE
    return read_card(path.parent).get("origin") if path.is_file() else None
