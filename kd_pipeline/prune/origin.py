"""Where compression starts: the best small model the run trained, taught by whoever beats it.

student, direct and baseline share one architecture and budget; which of them is best depends
on the data and on how good the teachers turned out (a from-scratch teacher on small data can be
the weakest model of all). Pruning the distilled student unconditionally shipped a model worse
than the baseline the run had already trained, so prune starts from the most accurate of the
three on validation, and its fine-tune distils only from teachers that beat that model on
validation, or learns from the labels alone when none does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kd_pipeline.core.errors import CheckpointError
from kd_pipeline.core.models import CARD_FILE, read_card
from kd_pipeline.core.roles import ABOVE_STUDENT, SMALL_MODELS


@dataclass(frozen=True)
class Origin:
    source: str  # the small model compression starts from
    teachers: list[str]  # who teaches the fine-tune; empty: the labels alone
    metric: str  # the validation score that decided
    scores: dict[str, float]  # every candidate's validation score
    reason: str

    def as_card(self) -> dict[str, Any]:
        return {"source": self.source, "teachers": self.teachers, "metric": self.metric, "split": "val",
                "scores": self.scores, "reason": self.reason}


def _val_score(role: str, model_dir: Path, metric: str) -> float | None:
    """A checkpoint's validation score at its kept epoch; None when it was not trained."""
    if not (model_dir / CARD_FILE).is_file():
        return None
    score = read_card(model_dir).get("val_metrics", {}).get(metric)
    if score is None:
        raise CheckpointError(f"{model_dir}: its card has no validation {metric}; run `dvc repro` to retrain {role}")
    return float(score)


def choose_origin(model_dirs: dict[str, Path], metric: str, learn_from: str) -> Origin:
    """The source (best small model on validation) and the fine-tune's teachers: with
    `learn_from: nearest` the best teacher that beats the source, with `all_above` every one that does."""
    scores = {role: s for role, d in model_dirs.items() if (s := _val_score(role, d, metric)) is not None}
    small = [role for role in SMALL_MODELS if role in scores]
    if not small:
        raise CheckpointError(f"none of {', '.join(SMALL_MODELS)} is trained; run `dvc repro` first")
    source = max(small, key=lambda role: scores[role])  # max keeps the first of equals
    better = [role for role in ABOVE_STUDENT if scores.get(role, float("-inf")) > scores[source]]
    if learn_from == "nearest" and better:
        better = [max(better, key=lambda role: scores[role])]
    listed = ", ".join(f"{role} {scores[role]:.4f}" for role in small)
    taught = (f"fine-tuned by distillation from {' + '.join(better)}" if better else
              "fine-tuned on the labels alone: no teacher beats it on validation")
    reason = f"{source} is the best small model on validation {metric} ({listed}); {taught}"
    return Origin(source, better, metric, scores, reason)
