"""Predictions and classification metrics (scikit-learn's, not hand-written formulas)."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import accuracy_score, precision_recall_fscore_support
from torch import nn

from kd_pipeline.data import Normalizer, Split, batches


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


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> dict[str, float]:
    """Accuracy and macro precision/recall/F1 over all classes (absent ones count as 0)."""
    labels = list(range(num_classes))
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average="macro", zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
    }
