"""Which score ranks models, on which split: one rule for training, prune and evaluate.

Every decision the pipeline takes (the kept epoch, the reference model, the model to compress,
the teacher of the prune fine-tune, whether int8 may ship, the deployed variant) compares
models on the validation split with the metric the run monitors (`train.monitor`). Its `auto`
setting follows the data: mean per-label ROC AUC for multi-label data (mean per-label accuracy
rewards predicting every label absent), balanced accuracy when the training split's largest
class is more than IMBALANCED times its smallest (plain accuracy rewards ignoring the small
classes), plain accuracy otherwise. The test split only reports.
"""

from __future__ import annotations

import numpy as np

DECISION_SPLIT = "val"
IMBALANCED = 1.5  # largest / smallest class count above which `auto` ranks by balanced accuracy


def imbalance_ratio(labels: np.ndarray) -> float:
    """Largest over smallest class count among the classes present (1.0 for multi-label data)."""
    if labels.ndim != 1 or len(labels) == 0:
        return 1.0
    counts = np.bincount(labels)
    counts = counts[counts > 0]
    return float(counts.max() / counts.min())


def resolve_monitor(monitor: str, labels: np.ndarray) -> str:
    """`train.monitor` with `auto` resolved for these training labels (N, or N×L multi-label)."""
    if monitor != "auto":
        return monitor
    if labels.ndim == 2:
        return "roc_auc"
    return "balanced_accuracy" if imbalance_ratio(labels) > IMBALANCED else "accuracy"


def decision_metric(monitor: str, labels: np.ndarray) -> str:
    """The higher-is-better score that compares models: the monitored one, or for `loss` (which
    no two models share a scale of) the score `auto` would pick."""
    return resolve_monitor("auto" if monitor == "loss" else monitor, labels)
