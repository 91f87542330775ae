"""The knowledge-distillation loss (Hinton et al., 2015), for one class per image or many labels.

Targets of shape N hold one class index per image (softmax, cross-entropy); targets of shape
N×L hold 0/1 per label (multi-label, e.g. ChestMNIST): each label is its own yes/no question,
so the loss is per-label binary cross-entropy and distillation matches per-label probabilities.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def hard_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    class_weights: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Cross-entropy against class indices; per-label BCE (weights = `pos_weight`) against N×L targets."""
    if targets.ndim == 2:
        y = targets.float() * (1.0 - label_smoothing) + 0.5 * label_smoothing
        return F.binary_cross_entropy_with_logits(logits.float(), y, pos_weight=class_weights)
    return F.cross_entropy(logits.float(), targets, weight=class_weights, label_smoothing=label_smoothing)


def soft_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float, multilabel: bool
) -> torch.Tensor:
    """KL(teacher ‖ student) at temperature T, without the T² factor.

    One class per image: KL between the softened softmax distributions (sum over classes,
    mean over images). Multi-label: KL between each label's softened Bernoulli
    (sigmoid(z/T)), averaged over labels and images, so it is on BCE's scale.
    """
    s = student_logits.float() / temperature
    t = teacher_logits.float() / temperature
    if multilabel:
        p_t = torch.sigmoid(t)
        kl = p_t * (F.logsigmoid(t) - F.logsigmoid(s)) + (1.0 - p_t) * (F.logsigmoid(-t) - F.logsigmoid(-s))
        return kl.mean()
    return F.kl_div(F.log_softmax(s, dim=1), F.log_softmax(t, dim=1), reduction="batchmean", log_target=True)


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    alpha: float,
    temperature: float,
    class_weights: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """α·T²·KL(teacher/T ‖ student/T) + (1−α)·hard loss (cross-entropy, or BCE for N×L targets).

    The T² factor keeps the soft term's gradients on the same scale as the hard term's
    when T changes, so α means the same thing at every temperature.
    """
    t = temperature
    soft = soft_loss(student_logits, teacher_logits, t, multilabel=targets.ndim == 2)
    hard = hard_loss(student_logits, targets, class_weights, label_smoothing)
    return alpha * t * t * soft + (1.0 - alpha) * hard


class TeacherEnsemble(torch.nn.Module):
    """Several teachers as one: logits whose tempered probabilities are the mean of theirs.

    Densely guided distillation (Son et al., ICCV 2021) lets the student learn from every model
    above it in the chain, so one assistant's mistakes are not passed on alone. Averaging the
    teachers' KL terms equals (up to a constant) the KL to their mean tempered distribution, so
    one set of mixture logits, T·log mean softmax(zᵢ/T) (per-label sigmoid for multi-label),
    serves the unchanged loss and the cached-logits path.
    """

    def __init__(self, teachers: list[torch.nn.Module], temperature: float, multilabel: bool) -> None:
        super().__init__()
        self.teachers = torch.nn.ModuleList(teachers)
        self.temperature = temperature
        self.multilabel = multilabel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.temperature
        scaled = torch.stack([teacher(x).float() / t for teacher in self.teachers])
        if self.multilabel:
            p = torch.sigmoid(scaled).mean(dim=0).clamp(1e-6, 1 - 1e-6)
            return t * (torch.log(p) - torch.log1p(-p))
        log_mean = torch.logsumexp(F.log_softmax(scaled, dim=-1), dim=0) - torch.log(torch.tensor(len(self.teachers)))
        return t * log_mean
