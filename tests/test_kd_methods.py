"""The registry's losses against hand computations and the limits their papers state."""

import math

import numpy as np
import pytest
import torch

from kd_pipeline.core.errors import ParamsError
from kd_pipeline.core.params import KDParams
from kd_pipeline.train.distillation import (
    METHODS,
    dist_terms,
    distillation_loss,
    dkd_terms,
    kd_loss,
    standardize,
)

STUDENT = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
TEACHER = [[2.0, 1.0, 0.0], [0.5, 0.5, 2.0]]
TARGETS = [1, 2]


def _softmax(row: list[float], t: float) -> list[float]:
    exps = [math.exp(v / t) for v in row]
    return [e / sum(exps) for e in exps]


def _kl(p: list[float], q: list[float]) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True) if pi > 0)


def _tensors() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.tensor(STUDENT), torch.tensor(TEACHER), torch.tensor(TARGETS)


def test_dkd_terms_match_hand_computation() -> None:
    """TCKD: KL of [p_target, 1 − p_target]; NCKD: KL among the non-target classes renormalized."""
    t = 2.0
    tckd = nckd = 0.0
    for s_row, t_row, y in zip(STUDENT, TEACHER, TARGETS, strict=True):
        p_s, p_t = _softmax(s_row, t), _softmax(t_row, t)
        tckd += _kl([p_t[y], 1 - p_t[y]], [p_s[y], 1 - p_s[y]])
        others = [k for k in range(3) if k != y]
        q_s = [p_s[k] / sum(p_s[j] for j in others) for k in others]
        q_t = [p_t[k] / sum(p_t[j] for j in others) for k in others]
        nckd += _kl(q_t, q_s)
    got_t, got_n = dkd_terms(*_tensors(), t)
    assert got_t.item() == pytest.approx(t * t * tckd / 2, rel=1e-5)
    assert got_n.item() == pytest.approx(t * t * nckd / 2, rel=1e-5)


def test_dkd_with_beta_zero_and_alpha_one_is_the_target_class_term_alone() -> None:
    student, teacher, targets = _tensors()
    kd = KDParams(method="dkd", temperature=2.0, dkd={"alpha": 1.0, "beta": 0.0, "warmup": 0})
    ce = torch.nn.functional.cross_entropy(student, targets)
    tckd, _ = dkd_terms(student, teacher, targets, 2.0)
    assert distillation_loss(kd, False)(student, teacher, targets, 1).item() == pytest.approx((ce + tckd).item())
    ramped = KDParams(method="dkd", temperature=2.0, dkd={"alpha": 1.0, "beta": 0.0, "warmup": 4})
    got = distillation_loss(ramped, False)(student, teacher, targets, 1).item()  # epoch 1 of a 4-epoch warm-up
    assert got == pytest.approx((ce + 0.25 * tckd).item())


def test_logit_standardization_of_standardized_logits_is_plain_kd() -> None:
    student, teacher, targets = standardize(torch.tensor(STUDENT)), standardize(torch.tensor(TEACHER)), None
    targets = torch.tensor(TARGETS)
    assert standardize(student).std(dim=1).tolist() == pytest.approx([1.0, 1.0], abs=1e-5)
    plain = distillation_loss(KDParams(alpha=0.9), False)(student, teacher, targets, 1)
    with_ls = distillation_loss(KDParams(alpha=0.9, logit_standardization=True), False)(student, teacher, targets, 1)
    assert with_ls.item() == pytest.approx(plain.item(), rel=1e-5)
    shifted = distillation_loss(KDParams(alpha=1.0, logit_standardization=True), False)
    # a teacher whose logits are the student's, shifted and scaled, teaches nothing new under LS
    assert shifted(student, 3 * student + 5, targets, 1).item() == pytest.approx(0.0, abs=1e-5)


def test_default_method_is_the_unchanged_hinton_loss() -> None:
    student, teacher, targets = _tensors()
    got = distillation_loss(KDParams(alpha=0.3, temperature=2.0), False)(student, teacher, targets, 7)
    assert torch.equal(got, kd_loss(student, teacher, targets, 0.3, 2.0))  # bitwise


def test_dist_is_zero_for_identical_logits_and_matches_a_hand_computation() -> None:
    student, teacher, targets = _tensors()
    inter, intra = dist_terms(student, student.clone(), tau=1.0)
    assert inter.item() == pytest.approx(0.0, abs=1e-6) and intra.item() == pytest.approx(0.0, abs=1e-6)
    rows_s, rows_t = [*STUDENT, [0.3, 0.1, -2.0]], [*TEACHER, [-1.0, 2.5, 0.2]]  # 3 images: intra is not ±1
    student, teacher = torch.tensor(rows_s), torch.tensor(rows_t)
    y_s = np.array([_softmax(r, 1.0) for r in rows_s])
    y_t = np.array([_softmax(r, 1.0) for r in rows_t])
    inter_hand = 1 - np.mean([np.corrcoef(a, b)[0, 1] for a, b in zip(y_s, y_t, strict=True)])
    intra_hand = 1 - np.mean([np.corrcoef(a, b)[0, 1] for a, b in zip(y_s.T, y_t.T, strict=True)])
    inter, intra = dist_terms(student, teacher, tau=1.0)
    assert inter.item() == pytest.approx(inter_hand, rel=1e-4) and intra.item() == pytest.approx(intra_hand, rel=1e-4)
    kd = KDParams(method="dist", dist={"beta": 2.0, "gamma": 3.0, "tau": 1.0})
    targets = torch.tensor([*TARGETS, 0])
    ce = torch.nn.functional.cross_entropy(student, targets)
    total = distillation_loss(kd, False)(student, teacher, targets, 1)
    assert total.item() == pytest.approx((ce + 2 * inter + 3 * intra).item(), rel=1e-5)


def test_methods_without_a_per_label_form_are_refused_for_multilabel_data() -> None:
    for kd in (KDParams(method="dkd"), KDParams(method="dist"), KDParams(logit_standardization=True)):
        with pytest.raises(ParamsError, match="defined for one class per image"):
            distillation_loss(kd, multilabel=True)
    assert distillation_loss(KDParams(), multilabel=True) is not None


@pytest.mark.parametrize("method", sorted(METHODS))
def test_one_training_step_lowers_each_loss(method: str) -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 3)
    x, y = torch.randn(16, 8), torch.randint(0, 3, (16,))
    teacher = torch.randn(16, 3) * 3
    loss_fn = distillation_loss(KDParams(method=method, dkd={"warmup": 0}), False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    before = loss_fn(model(x), teacher, y, 1)
    before.backward()
    optimizer.step()
    assert loss_fn(model(x), teacher, y, 1).item() < before.item()
