"""Predictions and classification metrics (scikit-learn's), the same code for every stage.

Training keeps its epoch by them, prune and quantize choose by them, and evaluate reports them
for every variant. What a model costs (latency, memory, size) is kd_pipeline.evaluate.costs; running a
variant from uint8 images is kd_pipeline.evaluate.runtime.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    hamming_loss,
    multilabel_confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
)
from torch import nn

from kd_pipeline.core.data import Normalizer, Split, batches, is_multilabel


@torch.inference_mode()
def predict_logits(
    model: nn.Module, split: Split, normalizer: Normalizer, batch_size: int = 256
) -> torch.Tensor:
    """Logits for every image of a split, in order, as float32 on the CPU."""
    model.eval()
    device = normalizer.device
    outputs = []
    for _, images, _ in batches(split, batch_size):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            outputs.append(model(normalizer(images)).float().cpu())
    return torch.cat(outputs) if outputs else torch.empty(0)


def decide(logits: np.ndarray, multilabel: bool) -> np.ndarray:
    """Predictions from logits: the top class, or every label whose probability is above 0.5."""
    return (logits > 0).astype(np.int64) if multilabel else logits.argmax(axis=1)


def probabilities(logits: np.ndarray, multilabel: bool) -> np.ndarray:
    """Softmax over classes, or an independent sigmoid per label."""
    if multilabel:
        return 1.0 / (1.0 + np.exp(-logits))
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def softmax(logits: np.ndarray) -> np.ndarray:
    return probabilities(logits, multilabel=False)


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> dict[str, float]:
    """Accuracy and macro precision/recall/F1 over all classes (absent ones count as 0).

    Multi-label (N×L 0/1 arrays): accuracy is the mean per-label accuracy at 0.5 (MedMNIST's
    ACC for ChestMNIST); `exact_match` is the share of images with every label right.
    """
    labels = list(range(num_classes))
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average="macro", zero_division=0
    )
    scores = {"precision": float(precision), "recall": float(recall), "f1": float(f1)}
    if is_multilabel(y_true):
        return {"accuracy": 1.0 - float(hamming_loss(y_true, y_pred)),
                "exact_match": float(accuracy_score(y_true, y_pred)), **scores}
    with warnings.catch_warnings():  # a class absent from y_true: its recall is left out, as documented
        warnings.simplefilter("ignore")
        balanced = float(balanced_accuracy_score(y_true, y_pred))
    return {"accuracy": float(accuracy_score(y_true, y_pred)), "balanced_accuracy": balanced, **scores}


def mean_roc_auc(y_true: np.ndarray, logits: np.ndarray) -> float:
    """Mean one-vs-rest (or per-label) ROC AUC over the classes both present and absent in y_true.

    Equal to scikit-learn's macro OvR AUC (and MedMNIST's AUC) when every class is present;
    NaN when none can be scored. Cheap enough to log every epoch.
    """
    multilabel = is_multilabel(y_true)
    probs = probabilities(logits.astype(np.float64), multilabel)
    if not multilabel and probs.shape[1] == 2:
        return float(roc_auc_score(y_true, probs[:, 1])) if len(np.unique(y_true)) == 2 else float("nan")
    truth = y_true if multilabel else np.eye(probs.shape[1], dtype=np.int64)[y_true]
    scored = [k for k in range(probs.shape[1]) if 0 < truth[:, k].sum() < len(truth)]
    scores = [roc_auc_score(truth[:, k], probs[:, k]) for k in scored]
    return float(np.mean(scores)) if scores else float("nan")


@dataclass
class TestReport:
    """Everything measured from one variant's test predictions."""

    summary: dict[str, float]
    per_class: dict[str, dict[str, float]]
    confusion: list  # k×k counts; multi-label: one [[tn, fp], [fn, tp]] per label
    predictions: np.ndarray
    warnings: list[str] = field(default_factory=list)


def full_metrics(y_true: np.ndarray, logits: np.ndarray, class_names: list[str]) -> TestReport:
    """Summary, per-class and confusion metrics from logits; problems become warnings, not crashes."""
    if is_multilabel(y_true):
        return _multilabel_metrics(y_true, logits, class_names)
    labels = list(range(len(class_names)))
    y_pred = decide(logits, multilabel=False)
    notes: list[str] = []
    summary = classification_metrics(y_true, y_pred, len(labels))
    present = np.unique(y_true)
    missing = [class_names[k] for k in labels if k not in present]
    if missing:
        notes.append(f"test split has no samples of classes {', '.join(missing)}: their recall is undefined")
    probs = softmax(logits.astype(np.float64))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if len(labels) == 2:
                auc = float(roc_auc_score(y_true, probs[:, 1]))
            else:
                auc = float(roc_auc_score(y_true, probs, multi_class="ovr", labels=labels))
        if np.isfinite(auc):
            summary["roc_auc"] = auc
        else:
            notes.append("ROC AUC not computed: undefined for this test split")
    except ValueError as err:
        notes.append(f"ROC AUC not computed: {err}")
    per_class = _per_class(y_true, y_pred, class_names)
    confusion = confusion_matrix(y_true, y_pred, labels=labels).tolist()
    return TestReport(summary=summary, per_class=per_class, confusion=confusion, predictions=y_pred, warnings=notes)


def _multilabel_metrics(y_true: np.ndarray, logits: np.ndarray, names: list[str]) -> TestReport:
    """Per-label AUC and its mean (MedMNIST's AUC), accuracy at 0.5, macro P/R/F1, per-label 2×2 counts."""
    y_pred = decide(logits, multilabel=True)
    probs = probabilities(logits.astype(np.float64), multilabel=True)
    summary = classification_metrics(y_true, y_pred, len(names))
    notes: list[str] = []
    aucs: dict[str, float] = {}
    balanced: list[float] = []
    for k, name in enumerate(names):
        if len(np.unique(y_true[:, k])) < 2:
            notes.append(f"label {name}: test split has only {'positives' if y_true[0, k] else 'negatives'};"
                         " its AUC is undefined and left out of the mean")
            continue
        aucs[name] = float(roc_auc_score(y_true[:, k], probs[:, k]))
        balanced.append(float(balanced_accuracy_score(y_true[:, k], y_pred[:, k])))
    if aucs:
        summary["roc_auc"] = float(np.mean(list(aucs.values())))
        summary["balanced_accuracy"] = float(np.mean(balanced))
    per_class = _per_class(y_true, y_pred, names)
    for name, auc in aucs.items():
        per_class[name]["roc_auc"] = auc
    confusion = multilabel_confusion_matrix(y_true, y_pred).tolist()
    return TestReport(summary=summary, per_class=per_class, confusion=confusion, predictions=y_pred, warnings=notes)


def _per_class(y_true: np.ndarray, y_pred: np.ndarray, names: list[str]) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support of each class (or label), absent ones as 0."""
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=list(range(len(names))), average=None, zero_division=0
    )
    return {
        name: {"precision": float(precision[k]), "recall": float(recall[k]), "f1": float(f1[k]),
               "support": int(support[k])}
        for k, name in enumerate(names)
    }
