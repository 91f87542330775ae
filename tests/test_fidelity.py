import numpy as np
import pytest

from kd_pipeline.fidelity import decided, float_fidelity, int8_fidelity
from kd_pipeline.params import ExportParams, QuantizeParams

# Four images, three classes: two clear decisions, two near-ties (top-1 minus top-2 < 0.2).
FLOAT = np.log(np.array([[0.90, 0.05, 0.05], [0.05, 0.90, 0.05], [0.45, 0.40, 0.15], [0.30, 0.35, 0.35]]))


def test_near_ties_are_found_by_the_probability_margin() -> None:
    assert decided(FLOAT, multilabel=False, margin=0.2).tolist() == [True, True, False, False]
    assert decided(FLOAT, multilabel=False, margin=0.0).all()
    labels = np.array([[3.0, 0.1], [-0.2, -4.0]])  # p = .95, .52 / .45, .02
    assert decided(labels, multilabel=True, margin=0.2).tolist() == [[True, False], [False, True]]


def test_int8_flips_of_near_ties_are_reported_but_do_not_block() -> None:
    int8 = FLOAT.copy()
    int8[2] = FLOAT[2][[1, 0, 2]]  # a near-tie flips
    check = int8_fidelity(int8, FLOAT, False, ExportParams(), QuantizeParams())
    assert check["int8_agreement"] == 0.75 and check["int8_agreement_decided"] == 1.0
    assert check["decided_share"] == 0.5 and check["pass"] and check["reason"] == ""


def test_int8_flips_of_clear_decisions_block_with_advice_for_the_params_in_force() -> None:
    int8 = FLOAT.copy()
    int8[0] = FLOAT[0][[1, 0, 2]]  # a confident decision flips
    check = int8_fidelity(int8, FLOAT, False, ExportParams(), QuantizeParams(per_channel=True))
    assert not check["pass"] and check["int8_agreement_decided"] == 0.5
    assert "50.00% of the test top-1 classes that are not near-ties" in check["reason"]
    assert "per_channel" not in check["reason"] and "calibration_batches is 8" in check["reason"]
    off = int8_fidelity(int8, FLOAT, False, ExportParams(), QuantizeParams(per_channel=False, method="dynamic"))
    assert "quantize.per_channel: true" in off["reason"] and "quantize.method: static" in off["reason"]
    assert "calibration" not in off["reason"]
    assert int8_fidelity(int8, FLOAT, False, ExportParams(min_int8_agreement=0.5), QuantizeParams())["pass"]


def test_multilabel_fidelity_compares_label_decisions() -> None:
    float_logits = np.array([[3.0, -3.0], [2.5, 0.05]])
    int8 = np.array([[2.9, -3.1], [2.4, -0.05]])  # only the near-tie label flips
    check = int8_fidelity(int8, float_logits, True, ExportParams(), QuantizeParams())
    assert check["int8_agreement"] == 0.75 and check["int8_agreement_decided"] == 1.0 and check["pass"]


def test_float_fidelity_bounds_the_largest_logit_difference() -> None:
    assert float_fidelity(FLOAT + 5e-5, FLOAT, ExportParams())["pass"]
    failed = float_fidelity(FLOAT + 1e-3, FLOAT, ExportParams())
    assert not failed["pass"] and failed["max_abs_diff"] == pytest.approx(1e-3)
    assert "export.max_float_diff 0.0001" in failed["reason"]
