import math

import pytest
import torch

from kd_pipeline.train.distillation import hard_loss, kd_loss


def _softmax(row: list[float], t: float) -> list[float]:
    exps = [math.exp(v / t) for v in row]
    return [e / sum(exps) for e in exps]


def test_kd_loss_matches_hand_computation() -> None:
    student = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
    teacher = [[2.0, 1.0, 0.0], [0.5, 0.5, 2.0]]
    targets = [1, 2]
    alpha, t = 0.3, 2.0

    kl = 0.0
    for s_row, t_row in zip(student, teacher, strict=True):
        p, q = _softmax(t_row, t), _softmax(s_row, t)
        kl += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
    kl /= len(student)
    ce = 0.0
    for s_row, y in zip(student, targets, strict=True):
        ce -= math.log(_softmax(s_row, 1.0)[y])
    ce /= len(student)
    expected = alpha * t * t * kl + (1 - alpha) * ce

    got = kd_loss(torch.tensor(student), torch.tensor(teacher), torch.tensor(targets), alpha, t)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_alpha_zero_is_cross_entropy_and_identical_logits_have_no_soft_loss() -> None:
    logits = torch.randn(4, 5)
    targets = torch.tensor([0, 1, 2, 3])
    ce = torch.nn.functional.cross_entropy(logits, targets)
    assert kd_loss(logits, torch.randn(4, 5), targets, 0.0, 4.0).item() == pytest.approx(ce.item())
    assert kd_loss(logits, logits.clone(), targets, 1.0, 4.0).item() == pytest.approx(0.0, abs=1e-6)


def test_gradient_flows_to_student_only() -> None:
    student = torch.randn(3, 4, requires_grad=True)
    teacher = torch.randn(3, 4, requires_grad=True)
    kd_loss(student, teacher.detach(), torch.tensor([0, 1, 2]), 0.5, 3.0).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


def _bernoulli_kl(p: float, q: float) -> float:
    return p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))


def test_multilabel_kd_is_per_label_bernoulli_kl_plus_bce() -> None:
    student = [[1.0, -2.0, 0.5], [0.0, 1.0, -3.0]]
    teacher = [[2.0, -1.0, 0.0], [-0.5, 0.5, 2.0]]
    targets = [[1, 0, 1], [0, 1, 0]]
    alpha, t = 0.4, 3.0

    def sig(v: float) -> float:
        return 1.0 / (1.0 + math.exp(-v))

    pairs = [(s, te, y) for sr, tr, yr in zip(student, teacher, targets, strict=True)
             for s, te, y in zip(sr, tr, yr, strict=True)]
    kl = sum(_bernoulli_kl(sig(te / t), sig(s / t)) for s, te, _ in pairs) / len(pairs)
    bce = -sum(y * math.log(sig(s)) + (1 - y) * math.log(1 - sig(s)) for s, _, y in pairs) / len(pairs)
    expected = alpha * t * t * kl + (1 - alpha) * bce

    got = kd_loss(torch.tensor(student), torch.tensor(teacher), torch.tensor(targets), alpha, t)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    same = torch.tensor(student)
    assert kd_loss(same, same.clone(), torch.tensor(targets), 1.0, t).item() == pytest.approx(0.0, abs=1e-6)


def test_multilabel_hard_loss_uses_pos_weight() -> None:
    logits = torch.zeros(2, 2)
    targets = torch.tensor([[1, 0], [1, 0]])
    plain = hard_loss(logits, targets)
    weighted = hard_loss(logits, targets, class_weights=torch.tensor([3.0, 3.0]))
    # every positive costs log 2 three times over, negatives unchanged: (3 + 1) / 2 × log 2
    assert plain.item() == pytest.approx(math.log(2))
    assert weighted.item() == pytest.approx(2 * math.log(2))


def test_an_ensemble_of_teachers_gives_the_mean_of_their_tempered_probabilities() -> None:
    from kd_pipeline.train.distillation import TeacherEnsemble

    torch.manual_seed(0)
    x = torch.randn(5, 4)
    a, b = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    t = 4.0
    mixed = TeacherEnsemble([a, b], t, multilabel=False)(x)
    expected = (torch.softmax(a(x) / t, dim=1) + torch.softmax(b(x) / t, dim=1)) / 2
    assert torch.allclose(torch.softmax(mixed / t, dim=1), expected, atol=1e-6)
    mixed = TeacherEnsemble([a, b], t, multilabel=True)(x)
    expected = (torch.sigmoid(a(x) / t) + torch.sigmoid(b(x) / t)) / 2
    assert torch.allclose(torch.sigmoid(mixed / t), expected, atol=1e-6)
    # one teacher: the same distribution as the teacher alone
    assert torch.allclose(torch.softmax(TeacherEnsemble([a], t, False)(x) / t, 1), torch.softmax(a(x) / t, 1))


def test_the_student_learns_from_the_assistant_or_from_every_model_above_it() -> None:
    from kd_pipeline.core.params import KDParams
    from kd_pipeline.train.chain import teachers_of

    nearest, dense = KDParams(), KDParams(learn_from="all_above")
    assert [teachers_of(r, nearest) for r in ("teacher", "assistant", "student", "direct", "pruned")] == [
        [], ["teacher"], ["assistant"], ["teacher"], ["assistant"]]
    assert [teachers_of(r, dense) for r in ("assistant", "student", "direct", "baseline", "pruned")] == [
        ["teacher"], ["assistant", "teacher"], ["teacher"], [], ["assistant", "teacher"]]
