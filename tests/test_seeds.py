import pytest

from kd_pipeline.core.errors import PipelineError
from kd_pipeline.records.seeds import aggregate, collect_runs, measurable, paired, render


def _evaluation(student: float, baseline: float, direct: float) -> dict:
    variants = {name: {"accuracy": acc, "balanced_accuracy": acc, "f1": acc}
                for name, acc in (("student", student), ("baseline", baseline), ("direct", direct))}
    gain = {k: student - baseline for k in ("accuracy", "balanced_accuracy", "f1")}
    assistant = {k: student - direct for k in ("accuracy", "balanced_accuracy", "f1")}
    return {"variants": variants, "distillation_gain": gain, "assistant_gain": assistant}


RUNS = {0: _evaluation(0.90, 0.85, 0.89), 1: _evaluation(0.92, 0.86, 0.93), 2: _evaluation(0.94, 0.84, 0.93)}


def test_mean_spread_and_range_match_a_hand_computation() -> None:
    summary = aggregate(RUNS)
    student = summary["variants"]["student"]["accuracy"]
    assert student["mean"] == pytest.approx(0.92) and student["std"] == pytest.approx(0.02)  # sqrt(.0008 / 2)
    assert (student["min"], student["max"], student["n"]) == (0.90, 0.94, 3)
    gain = summary["gains"]["distillation_gain"]["accuracy"]  # 0.05, 0.06, 0.10
    assert gain["mean"] == pytest.approx(0.07) and gain["std"] == pytest.approx(0.026457513, rel=1e-6)
    assistant = summary["gains"]["assistant_gain"]["accuracy"]  # 0.01, -0.01, 0.01
    assert assistant["mean"] == pytest.approx(0.01 / 3) and assistant["std"] == pytest.approx(0.011547005, rel=1e-6)
    report = render(summary, {0: "a", 1: "b", 2: "c"})
    assert "| student | 0.9200 ± 0.0200 [0.9000, 0.9400]" in report and "+0.0700 ± 0.0265 over 3 seeds" in report


def test_gains_are_paired_differences_with_a_hand_computed_t_interval() -> None:
    """0.05, 0.06, 0.10: mean 0.07, sd 0.0264575, se 0.0152753; t(0.975, 2) = 4.3026527: half-width
    0.0657242; t = 4.5825757, two-sided p = 0.04446 (2 degrees of freedom)."""
    summary = aggregate(RUNS)
    gain = summary["gains"]["distillation_gain"]["accuracy"]
    assert gain["low"] == pytest.approx(0.07 - 0.0657242, abs=1e-6)
    assert gain["high"] == pytest.approx(0.07 + 0.0657242, abs=1e-6)
    assert gain["p_value"] == pytest.approx(0.04446, abs=2e-4)
    assert "95% CI [+0.0043, +0.1357], p = 0.044" in summary["verdicts"]["distillation_gain"]
    assert "a gain: the interval excludes 0" in summary["verdicts"]["distillation_gain"]
    # 0.01, -0.01, 0.01: mean 0.00333, se 0.0066667, half-width 0.0286844: the interval holds 0
    assistant = summary["gains"]["assistant_gain"]["accuracy"]
    assert assistant["low"] == pytest.approx(0.01 / 3 - 0.0286844, abs=1e-6) and assistant["high"] > 0
    assert "no measurable effect: the interval includes 0" in summary["verdicts"]["assistant_gain"]
    # every variant against the baseline, paired by seed: direct − baseline = 0.04, 0.07, 0.09
    direct = summary["vs_baseline"]["direct"]["accuracy"]
    assert direct["mean"] == pytest.approx(0.2 / 3) and direct["low"] > 0
    assert "| direct | +0.0667 |" in render(summary, {0: "a", 1: "b", 2: "c"})


def test_identical_differences_get_the_exact_sign_test_not_a_zero_width_interval() -> None:
    """One test image (0.0028) on every seed: sd 0, so no t-interval. Sign test, two-sided:
    3 seeds p = 2 × 0.5^3 = 0.25, 5 seeds 0.0625 (the interval still reaches 0), 6 seeds 0.03125
    (below 0.05: the interval is the point, and the gain measurable)."""
    three, five, six = (paired([0.0028] * n) for n in (3, 5, 6))
    assert three["p_value"] == pytest.approx(0.25) and (three["low"], three["high"]) == (0.0, 0.0028)
    assert five["p_value"] == pytest.approx(0.0625) and not measurable(five)
    assert six["p_value"] == pytest.approx(0.03125) and (six["low"], six["high"]) == (0.0028, 0.0028)
    assert measurable(six) and six["test"] == "sign"
    assert paired([-0.01] * 3)["high"] == 0.0 and paired([0.0] * 3)["p_value"] == 1.0
    runs = {seed: _evaluation(0.90, 0.85, 0.89) for seed in range(3)}  # + 0.05 on every seed
    summary = aggregate(runs)
    assert "p = 0.250 (sign test" in summary["verdicts"]["distillation_gain"]
    assert "no measurable effect" in summary["verdicts"]["distillation_gain"]


def test_one_seed_is_not_a_spread() -> None:
    with pytest.raises(PipelineError, match="at least 2 seeds"):
        aggregate({0: RUNS[0]})


def test_runs_are_the_experiments_that_differ_from_the_workspace_only_in_seed() -> None:
    def rev(name: str, seed: int, temperature: float, evaluation: dict | None, error: bool = False) -> dict:
        params = {"train": {"seed": seed, "epochs": 10}, "kd": {"temperature": temperature}}
        metrics = {"metrics/evaluate.json": {"data": evaluation}} if evaluation else {}
        return {"name": name, "rev": name, "error": {"msg": "x"} if error else None,
                "data": {"params": {"params.yaml": {"data": params}}, "metrics": metrics}}

    shown = [
        rev("workspace", 0, 4.0, RUNS[0]),
        {**rev("main", 0, 4.0, RUNS[0]), "experiments": [
            {"revs": [rev("seed-1", 1, 4.0, RUNS[1])]},
            {"revs": [rev("hot", 2, 8.0, RUNS[2])]},           # other params: not a seed run
            {"revs": [rev("broken", 3, 4.0, None, error=True)]},  # failed: left out
            {"revs": [rev("seed-2", 2, 4.0, RUNS[2])]},
            {"revs": [rev("running", 3, 4.0, RUNS[0])], "executor": {"state": "running"}},  # not its own yet
        ]},
    ]
    runs = collect_runs(shown, {"train": {"seed": 5, "epochs": 10}, "kd": {"temperature": 4.0}})
    assert {seed: name for seed, (name, _) in runs.items()} == {0: "workspace", 1: "seed-1", 2: "seed-2"}


def test_what_each_seed_shipped_is_compared_with_the_best_small_model_on_validation() -> None:
    """Issue 23's target per seed: the best small float model is the source prune chose on
    validation (`compressed_from`, not the model test would pick), and the shipped model may be
    at most a point below it in test accuracy."""
    def run(val: dict[str, float], test: dict[str, float], deployed: str, source: str) -> dict:
        variants = {n: {"accuracy": test[n], "balanced_accuracy": test[n], "f1": test[n],
                        "val": {"balanced_accuracy": val.get(n, 0.5)}} for n in test}
        return {"variants": variants, "decision_metric": "balanced_accuracy", "deployed": deployed,
                "compressed_from": {"source": source, "split": "val"}}

    test = {"student": 0.80, "direct": 0.90, "baseline": 0.85, "pruned_int8": 0.79}
    picked_on_val = run({"student": 0.7, "direct": 0.6, "baseline": 0.9}, test, "pruned_int8", "baseline")
    tie = run({"student": 0.9, "direct": 0.9, "baseline": 0.9}, test, "pruned_int8", "student")
    summary = aggregate({0: picked_on_val, 1: tie})
    first, second = summary["shipped"]["0"], summary["shipped"]["1"]
    assert first["best_small_float"] == "baseline" and first["difference"] == pytest.approx(-0.06)
    assert not first["within_one_point"]
    assert second["best_small_float"] == "student" and second["difference"] == pytest.approx(-0.01)
    assert second["within_one_point"]
    report = render(summary, {0: "a", 1: "b"})
    assert "| 0 | pruned_int8 | 0.7900 | baseline | 0.8500 | -0.0600 | no | -0.0600 (balanced_accuracy) |" in report
    assert set(aggregate({0: {**picked_on_val, "compressed_from": None}, 1: tie})["shipped"]) == {"1"}


def test_a_shipped_int8_file_is_scored_under_avx2_arithmetic_against_its_fp32_twin() -> None:
    """Issue 41's target per seed: the shipped int8 within a point of its float source on CPUs
    without VNNI (evaluate's emulation of AVX2's saturating arithmetic)."""
    def run(avx2: float) -> dict:
        variants = {n: {"accuracy": a, "balanced_accuracy": a, "f1": a, "val": {"accuracy": a}}
                    for n, a in (("baseline", 0.86), ("pruned_onnx", 0.85), ("pruned_int8", 0.855))}
        variants["pruned_int8"]["avx2"] = {"test_accuracy": avx2}
        return {"variants": variants, "decision_metric": "accuracy", "deployed": "pruned_int8",
                "compressed_from": {"source": "baseline", "split": "val"}}

    summary = aggregate({0: run(0.845), 1: run(0.80)})
    held, lost = summary["shipped"]["0"], summary["shipped"]["1"]
    assert held["float_twin"] == "pruned_onnx" and held["avx2_difference"] == pytest.approx(-0.005)
    assert held["avx2_within_one_point"] and not lost["avx2_within_one_point"]
    report = render(summary, {0: "a", 1: "b"})
    assert "| 1 | pruned_int8 | 0.8000 | pruned_onnx | 0.8500 | -0.0500 | no |" in report
    fp32 = {**run(0.8), "deployed": "baseline"}
    assert "avx2_accuracy" not in aggregate({0: fp32, 1: fp32})["shipped"]["0"]


def test_each_seed_keeps_its_own_numbers() -> None:
    summary = aggregate(RUNS)
    assert summary["per_seed"]["1"]["variants"]["direct"]["accuracy"] == 0.93
    assert set(summary["per_seed"]) == {"0", "1", "2"}


def test_one_image_computed_in_floating_point_is_still_one_image() -> None:
    """301/360 − 300/360 or 11/360 − 10/360 on each seed is 1/360 up to the last bits: sd ~ 1e-17, not a tight
    interval with p ~ 1e-28. It gets the sign test, and 3 seeds measure nothing."""
    differences = [301 / 360 - 300 / 360, 201 / 360 - 200 / 360, 11 / 360 - 10 / 360]
    assert len(set(differences)) > 1, "the float noise this test is about"
    result = paired(differences)
    assert result["test"] == "sign" and result["p_value"] == pytest.approx(0.25) and not measurable(result)
    assert paired([0.01, 0.0100001, 0.0099999]).get("test") != "sign", "a real spread keeps the t-interval"


def test_holm_adjusts_step_down_and_a_table_marks_measurable_only_after_it() -> None:
    from kd_pipeline.records.seeds import holm

    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.2]) == [0.2] and holm([]) == []
    cell = {"mean": -0.05, "low": -0.09, "high": -0.01, "p_value": 0.02, "n": 5, "level": 0.95}
    assert measurable(cell) and not measurable(cell, adjusted_p=0.215)


def test_the_exact_sign_flip_test_cannot_reach_005_with_five_seeds() -> None:
    from kd_pipeline.records.seeds import sign_flip_p

    assert sign_flip_p([0.01, 0.02, 0.015, 0.012, 0.011]) == pytest.approx(2 / 32)
    assert sign_flip_p([0.01, 0.02, 0.015, 0.012, 0.011, 0.013]) == pytest.approx(2 / 64)
    assert sign_flip_p([0.01, -0.02, 0.015]) == 1.0
    assert paired([0.01, 0.02, 0.015, 0.012, 0.011])["sign_flip_p"] == pytest.approx(0.0625)


def test_seeds_for_power_is_the_fewest_that_detect_the_difference_80_percent_of_the_time() -> None:
    import numpy as np
    from scipy import stats

    from kd_pipeline.records.seeds import power_note, seeds_for_power

    needed = seeds_for_power(0.01, 0.01)
    rng = np.random.default_rng(0)

    def simulated(n: int) -> float:  # share of paired t-tests at 0.05 that find a true +0.01 (sd 0.01)
        return float(np.mean([stats.ttest_1samp(rng.normal(0.01, 0.01, n), 0).pvalue < 0.05 for _ in range(3000)]))

    assert needed == 10 and simulated(needed) >= 0.78 and simulated(needed - 1) < 0.78
    assert seeds_for_power(0.0038, 0.0235) is None and seeds_for_power(0.0, 0.01) is None  # > 200 / nothing to find
    unresolved = paired([0.004, -0.02, 0.03, 0.01, -0.005])
    assert not measurable(unresolved) and power_note(unresolved).startswith("; 80% power needs ")
