"""Distillation losses as a registry: `kd.method` picks one, `kd.logit_standardization` applies to any.

- kd: Hinton et al. (2015), for one class per image or many labels. Targets of shape N hold one
  class index per image (softmax, cross-entropy); targets of shape N×L hold 0/1 per label
  (multi-label, e.g. ChestMNIST): each label is its own yes/no question, so the loss is per-label
  binary cross-entropy and distillation matches per-label probabilities.
- dkd: decoupled KD (Zhao et al., CVPR 2022), one class per image.
- dist: DIST (Huang et al., NeurIPS 2022), one class per image.
- logit standardization (Sun et al., CVPR 2024): each image's logits z-scored before the soft
  term; the hard term always sees the raw logits. One class per image.

A method is one function `(student, teacher, targets, kd, epoch, class_weights, label_smoothing)
-> loss` and one line in METHODS; the training loop asks `distillation_loss` for it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from kd_pipeline.core.errors import ParamsError
from kd_pipeline.core.params import KDParams


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


def standardize(logits: torch.Tensor) -> torch.Tensor:
    """Each row z-scored (mean 0, unbiased standard deviation 1), as the LS paper's code does."""
    logits = logits.float()
    mean = logits.mean(dim=-1, keepdim=True)
    return (logits - mean) / (1e-7 + logits.std(dim=-1, keepdim=True))


def dkd_terms(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """DKD's target-class (TCKD: binary KL of p_target vs the rest) and non-target-class (NCKD:
    KL among the other classes) terms, each × T², mean over images (Zhao et al., Eq. 7)."""
    t = temperature
    gt = F.one_hot(targets, student_logits.shape[1]).bool()
    s, tt = student_logits.float() / t, teacher_logits.float() / t
    p_s, p_t = F.softmax(s, dim=1), F.softmax(tt, dim=1)
    b_s = torch.stack([(p_s * gt).sum(1), (p_s * ~gt).sum(1)], dim=1)
    b_t = torch.stack([(p_t * gt).sum(1), (p_t * ~gt).sum(1)], dim=1)
    tckd = F.kl_div(torch.log(b_s), b_t, reduction="batchmean") * t * t
    log_s_other = F.log_softmax(s - 1000.0 * gt, dim=1)
    p_t_other = F.softmax(tt - 1000.0 * gt, dim=1)
    nckd = F.kl_div(log_s_other, p_t_other, reduction="batchmean") * t * t
    return tckd, nckd


def pearson_rows(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Pearson correlation of each row of `a` with the same row of `b`."""
    a, b = a - a.mean(dim=1, keepdim=True), b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def dist_terms(student_logits: torch.Tensor, teacher_logits: torch.Tensor, tau: float) -> tuple[torch.Tensor, ...]:
    """DIST's inter-class (1 − Pearson across classes, per image) and intra-class (1 − Pearson
    across the batch, per class) relations of the tempered probabilities, each × τ²."""
    y_s = F.softmax(student_logits.float() / tau, dim=1)
    y_t = F.softmax(teacher_logits.float() / tau, dim=1)
    inter = (1 - pearson_rows(y_s, y_t).mean()) * tau * tau
    intra = (1 - pearson_rows(y_s.t(), y_t.t()).mean()) * tau * tau
    return inter, intra


Loss = Callable[..., torch.Tensor]


def _kd(student: torch.Tensor, teacher: torch.Tensor, soft_student: torch.Tensor, soft_teacher: torch.Tensor,
        targets: torch.Tensor, kd: KDParams, epoch: int, weights: torch.Tensor | None, smoothing: float
        ) -> torch.Tensor:
    t = kd.temperature
    soft = soft_loss(soft_student, soft_teacher, t, multilabel=targets.ndim == 2)
    return kd.alpha * t * t * soft + (1.0 - kd.alpha) * hard_loss(student, targets, weights, smoothing)


def _dkd(student: torch.Tensor, teacher: torch.Tensor, soft_student: torch.Tensor, soft_teacher: torch.Tensor,
         targets: torch.Tensor, kd: KDParams, epoch: int, weights: torch.Tensor | None, smoothing: float
         ) -> torch.Tensor:
    tckd, nckd = dkd_terms(soft_student, soft_teacher, targets, kd.temperature)
    ramp = min(epoch / kd.dkd.warmup, 1.0) if kd.dkd.warmup else 1.0
    return hard_loss(student, targets, weights, smoothing) + ramp * (kd.dkd.alpha * tckd + kd.dkd.beta * nckd)


def _dist(student: torch.Tensor, teacher: torch.Tensor, soft_student: torch.Tensor, soft_teacher: torch.Tensor,
          targets: torch.Tensor, kd: KDParams, epoch: int, weights: torch.Tensor | None, smoothing: float
          ) -> torch.Tensor:
    inter, intra = dist_terms(soft_student, soft_teacher, kd.dist.tau)
    return hard_loss(student, targets, weights, smoothing) + kd.dist.beta * inter + kd.dist.gamma * intra


METHODS: dict[str, Loss] = {"kd": _kd, "dkd": _dkd, "dist": _dist}
MULTILABEL = {"kd"}  # methods with a per-label form


def distillation_loss(kd: KDParams, multilabel: bool) -> Callable[..., torch.Tensor]:
    """`loss(student_logits, teacher_logits, targets, epoch, class_weights, label_smoothing)` for
    `kd.method`; a method without a per-label form is refused for multi-label data."""
    if multilabel and (kd.method not in MULTILABEL or kd.logit_standardization):
        what = "kd.logit_standardization" if kd.method in MULTILABEL else f"kd.method {kd.method}"
        raise ParamsError(f"{what} is defined for one class per image, and this data is multi-label;"
                          " use kd.method: kd without kd.logit_standardization")
    method = METHODS[kd.method]

    def loss(student: torch.Tensor, teacher: torch.Tensor, targets: torch.Tensor, epoch: int,
             weights: torch.Tensor | None = None, smoothing: float = 0.0) -> torch.Tensor:
        soft_s, soft_t = (standardize(student), standardize(teacher)) if kd.logit_standardization else (
            student, teacher)
        return method(student, teacher, soft_s, soft_t, targets, kd, epoch, weights, smoothing)

    return loss


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
