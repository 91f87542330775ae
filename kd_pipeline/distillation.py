"""The knowledge-distillation loss (Hinton et al., 2015)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    alpha: float,
    temperature: float,
    class_weights: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """α·T²·KL(softmax(teacher/T) ‖ softmax(student/T)) + (1−α)·cross-entropy.

    The T² factor keeps the soft term's gradients on the same scale as the hard term's
    when T changes, so α means the same thing at every temperature.
    """
    t = temperature
    soft = F.kl_div(
        F.log_softmax(student_logits.float() / t, dim=1),
        F.log_softmax(teacher_logits.float() / t, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    hard = F.cross_entropy(
        student_logits.float(), targets, weight=class_weights, label_smoothing=label_smoothing
    )
    return alpha * t * t * soft + (1.0 - alpha) * hard
