import numpy as np
import pytest

from kd_pipeline.core.params import ExportParams, QuantizeParams
from kd_pipeline.evaluate.fidelity import agreement, float_fidelity, int8_fidelity

FLOAT = np.log(np.array([[0.90, 0.05, 0.05], [0.05, 0.90, 0.05], [0.45, 0.40, 0.15], [0.30, 0.35, 0.35]]))


def test_agreement_counts_every_image_and_every_label() -> None:
    int8 = FLOAT.copy()
    int8[2] = FLOAT[2][[1, 0, 2]]  # a near-tie flips: it counts like any other image
    assert agreement(int8, FLOAT, multilabel=False) == 0.75
    float_logits = np.array([[3.0, -3.0], [2.5, 0.05]])
    assert agreement(np.array([[2.9, -3.1], [2.4, -0.05]]), float_logits, multilabel=True) == 0.75


def test_int8_ships_when_validation_accuracy_holds() -> None:
    source = {"accuracy": 0.900, "balanced_accuracy": 0.800, "f1": 0.7}
    int8 = {"accuracy": 0.895, "balanced_accuracy": 0.795, "f1": 0.5}  # f1 is not the decision metric
    check = int8_fidelity(int8, source, "accuracy", QuantizeParams(max_accuracy_drop=0.01))
    assert check["pass"] and check["reason"] == "" and check["int8_val_drop"] == pytest.approx(0.005)


def test_int8_is_refused_when_the_balanced_accuracy_falls_even_if_accuracy_holds() -> None:
    """RetinaMNIST's case: accuracy nearly kept while the small classes are lost."""
    source = {"accuracy": 0.55, "balanced_accuracy": 0.45}
    int8 = {"accuracy": 0.545, "balanced_accuracy": 0.40}
    check = int8_fidelity(int8, source, "accuracy", QuantizeParams(per_channel=True))
    assert not check["pass"] and check["int8_val_drop_metric"] == "balanced_accuracy"
    assert "loses 0.0500 validation balanced_accuracy" in check["reason"]
    assert "per_channel" not in check["reason"] and "calibration_batches is 8" in check["reason"]
    off = int8_fidelity(int8, source, "accuracy", QuantizeParams(per_channel=False, method="dynamic"))
    assert "quantize.per_channel: true" in off["reason"] and "quantize.method: static" in off["reason"]
    assert int8_fidelity(int8, source, "accuracy", QuantizeParams(max_accuracy_drop=0.05))["pass"]


def test_multilabel_int8_is_judged_on_its_decision_metric() -> None:
    source = {"accuracy": 0.95, "roc_auc": 0.80}
    assert not int8_fidelity({"accuracy": 0.95, "roc_auc": 0.75}, source, "roc_auc", QuantizeParams())["pass"]
    assert int8_fidelity({"accuracy": 0.95, "roc_auc": 0.795}, source, "roc_auc", QuantizeParams())["pass"]


def test_float_fidelity_bounds_the_largest_logit_difference() -> None:
    assert float_fidelity(FLOAT + 5e-5, FLOAT, ExportParams())["pass"]
    failed = float_fidelity(FLOAT + 1e-3, FLOAT, ExportParams())
    assert not failed["pass"] and failed["max_abs_diff"] == pytest.approx(1e-3)
    assert "export.max_float_diff 0.0001" in failed["reason"]


def test_an_int8_variant_below_the_integer_mac_share_is_not_deployable() -> None:
    """quantize keeps such a file (so export still ships the best deployable variant); evaluate
    refuses it with the reason."""
    import numpy as np

    from kd_pipeline.core.params import Params
    from kd_pipeline.evaluate.comparison import _fidelity

    scores = {"accuracy": 0.9, "balanced_accuracy": 0.9}
    logits = {name: {"val": np.eye(4), "test": np.eye(4)} for name in ("student", "student_int8")}
    for share, deployable in ((0.5, False), (0.95, True)):
        variants = {"student": {"val": scores}, "student_int8": {"val": scores, "integer_mac_share": share}}
        check = _fidelity(variants, logits, False, Params(), "accuracy")["student_int8"]
        assert check["pass"] is deployable
        assert deployable or "quantize.min_integer_mac_share = 0.8" in check["reason"]
