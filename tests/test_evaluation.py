import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score

from kd_pipeline.core.data import Split, load_meta, load_split
from kd_pipeline.core.errors import CheckpointError, PipelineError
from kd_pipeline.core.evaluation import full_metrics, softmax
from kd_pipeline.core.params import ExportParams, TargetsParams, parse_params
from kd_pipeline.evaluate.comparison import Variant, compare
from kd_pipeline.evaluate.costs import time_model
from kd_pipeline.evaluate.report import render_summary, write_outputs
from kd_pipeline.evaluate.targets import (
    check_targets,
    failures,
    main,
    ratios_vs_teacher,
    reference_variant,
    select_variant,
)

Y_TRUE = np.array([0, 0, 1, 1, 2, 2, 2, 0])
LOGITS = np.array([[3, 1, 0], [0, 2, 1], [0, 3, 0], [1, 2, 0], [0, 0, 4], [2, 0, 1], [0, 1, 3], [4, 0, 0]], dtype=float)


def test_metrics_agree_with_scikit_learn_and_hand_count() -> None:
    report = full_metrics(Y_TRUE, LOGITS, ["a", "b", "c"])
    y_pred = LOGITS.argmax(1)
    assert report.summary["accuracy"] == pytest.approx(6 / 8)
    assert report.summary["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(Y_TRUE, y_pred))
    assert report.summary["f1"] == pytest.approx(f1_score(Y_TRUE, y_pred, average="macro"))
    assert report.summary["roc_auc"] == pytest.approx(roc_auc_score(Y_TRUE, softmax(LOGITS), multi_class="ovr"))
    assert report.confusion == [[2, 1, 0], [0, 2, 0], [1, 0, 2]]
    assert report.per_class["c"]["recall"] == pytest.approx(2 / 3)
    assert report.per_class["a"]["support"] == 3
    assert report.warnings == []


def test_class_without_test_samples_is_a_warning_not_a_crash() -> None:
    report = full_metrics(np.array([0, 1, 0, 1]), np.eye(3)[[0, 1, 1, 1]], ["a", "b", "c"])
    assert report.per_class["c"]["support"] == 0
    assert any("no samples of classes c" in w for w in report.warnings)


def _variants(student_acc: float = 0.97, student_ms: float = 2.0, student_mb: float = 10.0) -> dict:
    return {
        "teacher": {"accuracy": 0.98, "val": {"accuracy": 0.98}, "latency_ms": 10.0, "size_mb": 100.0},
        "assistant": {"accuracy": 0.975, "val": {"accuracy": 0.975}, "latency_ms": 6.0, "size_mb": 50.0},
        "student": {"accuracy": student_acc, "val": {"accuracy": student_acc}, "latency_ms": student_ms,
                    "size_mb": student_mb},
    }


def test_selection_rules_and_the_most_accurate_when_none_qualifies() -> None:
    targets = TargetsParams(max_accuracy_drop=0.02)
    assert select_variant(_variants(), targets, ExportParams(select="smallest")).variant == "student"
    assert select_variant(_variants(), targets, ExportParams(select="most_accurate")).variant == "assistant"
    none = select_variant(_variants(student_acc=0.5), TargetsParams(max_accuracy_drop=0.001, reference="best_float"),
                          ExportParams())
    assert none.variant == "assistant" and not none.within_budget
    assert "no variant is within targets.max_accuracy_drop = 0.001 of the reference (teacher)" in none.reason


def test_when_none_is_within_budget_the_rule_still_picks_among_the_best_deployable() -> None:
    """messy-1seed: nothing within 0.01 of the teacher; baseline_int8 scores as the baseline on
    validation at a quarter of its size, so it ships, not the float model; pruned_int8 is 0.02 off."""
    def v(score: float, mb: float, ms: float) -> dict:
        return {"accuracy": 0.0, "val": {"accuracy": score}, "latency_ms": ms, "size_mb": mb}
    variants = {"teacher": v(0.95, 90.0, 9.0), "baseline": v(0.90, 42.7, 3.0), "baseline_int8": v(0.90, 10.8, 1.0),
                "student": v(0.85, 42.7, 3.0), "pruned_int8": v(0.88, 3.0, 0.5)}
    teacher_ref = TargetsParams(max_accuracy_drop=0.01, reference="best_float")
    chosen = select_variant(variants, teacher_ref, ExportParams(select="smallest"))
    assert chosen.variant == "baseline_int8" and not chosen.within_budget
    assert "best deployable one on validation, baseline: baseline_int8 (drop from the reference 0.0500)" in (
        chosen.reason)
    lenient = select_variant(variants, TargetsParams(max_accuracy_drop=0.02, reference="best_float"),
                             ExportParams(select="smallest"))
    assert lenient.variant == "pruned_int8" and not lenient.within_budget
    accurate = select_variant(variants, teacher_ref, ExportParams(select="most_accurate"))
    assert accurate.variant == "baseline_int8"  # tie on accuracy: the faster one


def test_a_tie_on_the_rule_goes_to_the_faster_variant() -> None:
    """PneumoniaMNIST: pruned (PyTorch, 10.71 MB, 2.93 ms) and pruned_onnx (10.75 MB, 0.33 ms)."""
    variants = {**_variants(student_mb=40.0),
                "pruned": {"accuracy": 0.975, "val": {"accuracy": 0.975}, "latency_ms": 2.93, "size_mb": 10.71},
                "pruned_onnx": {"accuracy": 0.975, "val": {"accuracy": 0.975}, "latency_ms": 0.33, "size_mb": 10.75}}
    assert select_variant(variants, TargetsParams(), ExportParams(select="smallest")).variant == "pruned_onnx"
    variants["pruned_onnx"]["size_mb"] = 11.5  # beyond the margin: size decides
    assert select_variant(variants, TargetsParams(), ExportParams(select="smallest")).variant == "pruned"
    twins = {**_variants(), "a": {"accuracy": 0.97, "val": {"accuracy": 0.97}, "latency_ms": 1.0, "size_mb": 5.0},
             "b": {"accuracy": 0.975, "val": {"accuracy": 0.975}, "latency_ms": 1.01, "size_mb": 9.0}}
    assert select_variant(twins, TargetsParams(), ExportParams(select="fastest")).variant == "a"  # then smaller
    # b is as accurate as the assistant (0.975) and faster
    assert select_variant(twins, TargetsParams(), ExportParams(select="most_accurate")).variant == "b"


def test_reference_is_the_best_float_model_unless_the_teacher_is_asked_for() -> None:
    weak_teacher = {
        "teacher": {"accuracy": 0.727, "val": {"accuracy": 0.727}, "latency_ms": 10.0, "size_mb": 100.0},
        "assistant": {"accuracy": 0.825, "val": {"accuracy": 0.825}, "latency_ms": 6.0, "size_mb": 50.0},
        "student": {"accuracy": 0.855, "val": {"accuracy": 0.855}, "latency_ms": 2.0, "size_mb": 10.0},
        "baseline": {"accuracy": 0.904, "val": {"accuracy": 0.904}, "latency_ms": 2.0, "size_mb": 10.0},
        "pruned_int8": {"accuracy": 0.80, "val": {"accuracy": 0.80}, "latency_ms": 0.5, "size_mb": 2.0},
    }
    assert reference_variant(weak_teacher, TargetsParams()) == "baseline"
    assert reference_variant(weak_teacher, TargetsParams(reference="teacher")) == "teacher"
    # Against the weak teacher everything qualifies and the smallest wins; against the best
    # float model (0.904) only the student and the baseline are within 0.05.
    lenient = select_variant(weak_teacher, TargetsParams(reference="teacher"), ExportParams())
    assert lenient.variant == "pruned_int8" and lenient.within_budget
    strict = select_variant(weak_teacher, TargetsParams(), ExportParams())
    assert strict.variant in {"student", "baseline"} and "reference, baseline" in strict.reason
    pruned = {"pruned": {"accuracy": 0.99, "val": {"accuracy": 0.99}}}
    assert reference_variant({**weak_teacher, **pruned}, TargetsParams()) == "baseline"


def test_best_small_reference_ships_a_small_model_when_a_big_one_wins_validation() -> None:
    """messy seed 0: the assistant wins on a noisy validation split; under best_float only it is
    within 0.01 and the 81 MB assistant ships, under best_small (the default) the compressed baseline."""
    def v(score: float, mb: float) -> dict:
        return {"accuracy": 0.0, "val": {"accuracy": score}, "latency_ms": mb / 10, "size_mb": mb}
    variants = {"teacher": v(0.70, 90.0), "assistant": v(0.76, 81.0), "student": v(0.70, 42.7),
                "direct": v(0.71, 42.7), "baseline": v(0.73, 42.7), "pruned_int8": v(0.725, 3.0)}
    assert TargetsParams().reference == "best_small"
    assert reference_variant(variants, TargetsParams()) == "baseline"
    small = select_variant(variants, TargetsParams(), ExportParams())
    assert small.variant == "pruned_int8" and small.within_budget and "reference, baseline" in small.reason
    big = select_variant(variants, TargetsParams(reference="best_float"), ExportParams())
    assert big.variant == "assistant"


def test_decisions_read_validation_when_test_disagrees() -> None:
    """The baseline is best on validation, the student on test: validation decides everything."""
    variants = {
        "teacher": {"accuracy": 0.90, "val": {"accuracy": 0.80, "balanced_accuracy": 0.70}, "latency_ms": 10.0,
                    "size_mb": 100.0},
        "student": {"accuracy": 0.95, "val": {"accuracy": 0.85, "balanced_accuracy": 0.60}, "latency_ms": 2.0,
                    "size_mb": 10.0},
        "baseline": {"accuracy": 0.85, "val": {"accuracy": 0.84, "balanced_accuracy": 0.75}, "latency_ms": 2.1,
                     "size_mb": 10.0},
    }
    assert reference_variant(variants, TargetsParams(), "balanced_accuracy") == "baseline"
    assert reference_variant(variants, TargetsParams(), "accuracy") == "student"
    tight = TargetsParams(max_accuracy_drop=0.01)
    assert select_variant(variants, tight, ExportParams(), metric="balanced_accuracy").variant == "baseline"
    picked = select_variant(variants, tight, ExportParams(select="most_accurate"), metric="balanced_accuracy")
    assert picked.variant == "baseline" and "validation balanced_accuracy" in picked.reason
    without_val = {name: {k: v for k, v in m.items() if k != "val"} for name, m in variants.items()}
    with pytest.raises(KeyError):  # no fallback to the test scores
        select_variant(without_val, tight, ExportParams())


def test_int8_slower_than_its_fp32_twin_is_never_the_fastest() -> None:
    variants = {**_variants(), "pruned_onnx": {"accuracy": 0.97, "val": {"accuracy": 0.97}, "latency_ms": 0.40,
                                               "size_mb": 10.0},
                "pruned_int8": {"accuracy": 0.97, "val": {"accuracy": 0.97}, "latency_ms": 0.38, "size_mb": 2.5}}
    assert select_variant(variants, TargetsParams(), ExportParams(select="fastest")).variant == "pruned_int8"
    variants["pruned_int8"].update(latency_ms=0.50, slower_than_fp32_twin=True)
    assert select_variant(variants, TargetsParams(), ExportParams(select="fastest")).variant == "pruned_onnx"
    assert select_variant(variants, TargetsParams(), ExportParams(select="smallest")).variant == "pruned_int8"


def test_variants_that_do_not_reproduce_their_source_are_never_deployed() -> None:
    variants = {**_variants(),
                "student_int8": {"accuracy": 0.97, "val": {"accuracy": 0.97}, "latency_ms": 0.5, "size_mb": 2.0}}
    assert select_variant(variants, TargetsParams(), ExportParams()).variant == "student_int8"
    chosen = select_variant(variants, TargetsParams(), ExportParams(), {"student_int8": "int8 agrees on 90%"})
    assert chosen.variant == "student"


def test_target_check_fails_when_missed_and_passes_when_met() -> None:
    targets = TargetsParams(max_accuracy_drop=0.02, min_speedup=0.4, min_size_reduction=0.3)
    met = check_targets(ratios_vs_teacher(_variants()["student"], _variants()["teacher"]), targets)
    assert all(t["pass"] for t in met.values())
    slow = _variants(student_ms=9.0, student_mb=80.0)["student"]
    missed = check_targets(ratios_vs_teacher(slow, _variants()["teacher"]), targets)
    assert not missed["speedup"]["pass"] and not missed["size_reduction"]["pass"]
    lines = failures({"deployed": "student", "targets": missed})
    assert len(lines) == 2 and "speedup: 0.1111 for student, needs at least 0.4000" in lines[0]


def test_check_command_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.conftest import ROOT

    targets = TargetsParams()
    good = {
        "deployed": "student",
        "targets": check_targets({"accuracy_drop": 0, "speedup": 1, "size_reduction": 0.5}, targets),
    }
    bad = {
        "deployed": "student",
        "targets": check_targets({"accuracy_drop": 0.2, "speedup": 1, "size_reduction": 0.5}, targets),
    }
    params = str(ROOT / "params.yaml")
    for data, code in ((good, 0), (bad, 1)):
        path = tmp_path / "evaluate.json"
        path.write_text(json.dumps(data))
        assert main(["--metrics", str(path), "--params", params]) == code
    assert "target missed: accuracy_drop: 0.2000" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["--metrics", str(tmp_path / "missing.json"), "--params", params])
    assert info.value.code == 2


def _fake_variant(name: str, truth: dict[bytes, int], ms: float, mb: float, folder: Path,
                  flip: int = 0) -> Variant:
    """A variant that answers the true class of every image it is shown (any split), but the next
    class for the images whose checksum is divisible by `flip` (about 1 in `flip`)."""
    import time
    import zlib

    def run(images: np.ndarray) -> np.ndarray:
        time.sleep(ms / 1000)
        out = np.zeros((len(images), 10))
        for row, image in enumerate(images):
            label = truth.get(image.tobytes(), 0)
            if flip and zlib.crc32(image.tobytes()) % flip == 0:
                label = (label + 1) % 10
            out[row, label] = 5.0
        return out

    path = folder / f"{name}.bin"
    path.write_bytes(name.encode())
    return Variant(name=name, run=run, size_mb=mb, parameters=1000, macs=None, kind="fake", path=path)


def _truth(*splits: Split) -> dict[bytes, int]:
    return {np.asarray(image).tobytes(): int(label) for split in splits
            for image, label in zip(split.images, split.labels, strict=True)}


def test_compare_report_lists_every_variant_and_marks_missing(prepared_dir: Path, tmp_path: Path) -> None:
    meta = load_meta(prepared_dir)
    val, test = (load_split(prepared_dir, split) for split in ("val", "test"))
    truth = _truth(val, test)
    params = parse_params({"evaluate": {"warmup": 0, "repeats": 3, "throughput_batch": 4}})

    def broken() -> Variant:
        raise CheckpointError("models/baseline/model.json: not found")

    loaders = {
        # 20 ms against 0.1: the speed target holds even when a loaded machine delays a sleep by ms
        "teacher": lambda: _fake_variant("teacher", truth, 20.0, 100.0, tmp_path),
        "student": lambda: _fake_variant("student", truth, 0.1, 10.0, tmp_path),
        "baseline": broken,
        "student_int8": lambda: _fake_variant("student_int8", truth, 0.05, 3.0, tmp_path, flip=5),
    }
    result = compare(loaders, val, test, meta, params, "accuracy")
    evaluation = result["evaluation"]
    assert set(evaluation["variants"]) == {"teacher", "student", "student_int8"}
    assert "baseline" in evaluation["missing"]
    assert 0.5 < evaluation["variants"]["student_int8"]["int8_agreement"] < 0.95
    assert 0.5 < evaluation["variants"]["student_int8"]["int8_agreement_val"] < 0.95
    assert evaluation["variants"]["student_int8"]["val"]["accuracy"] < 0.95  # decided on validation
    assert "student_int8" in evaluation["not_deployable"]
    assert "quantize.per_channel" not in evaluation["not_deployable"]["student_int8"]  # already true
    assert evaluation["deployed"] == "student" and evaluation["targets_passed"]
    assert evaluation["reference"] == "student"  # best_small: the teacher is not a candidate
    assert evaluation["variants"]["student"]["latency_ratio_vs_teacher"] > 1.5
    assert result["files"]["student"]["sha256"] == hashlib.sha256(b"student").hexdigest()

    write_outputs(
        result,
        params,
        meta.class_names,
        test.labels.tolist(),
        tmp_path / "evaluate.json",
        tmp_path / "plots",
        tmp_path / "summary.md",
        tmp_path / "files.json",
    )
    summary = (tmp_path / "summary.md").read_text()
    assert "| teacher |" in summary and "| student |" in summary and "**baseline**: models/baseline" in summary
    assert "Reference for drops: **student**" in summary and "- **student_int8**: int8 loses" in summary
    assert "reads the **validation** split, scored by **accuracy**" in summary and "CPU: " in summary
    assert json.loads((tmp_path / "plots/confusion/student.json").read_text())[0].keys() == {"actual", "predicted"}
    assert (tmp_path / "plots/tradeoff.png").read_bytes()[:4] == b"\x89PNG"
    assert render_summary(result, params) == summary


def test_the_summary_says_whether_the_student_size_leaves_the_teacher_a_gap_and_points_to_the_size_sweep() -> None:
    from kd_pipeline.evaluate.report import _student_size

    params = parse_params({"student": {"model": "cifar_resnet8"}})

    def evaluation(teacher: float) -> dict:
        return {"decision_metric": "balanced_accuracy", "variants": {
            "teacher": {"val": {"balanced_accuracy": teacher}}, "baseline": {"val": {"balanced_accuracy": 0.80}},
            "student": {"parameters": 77_522, "size_mb": 0.33, "val": {"balanced_accuracy": 0.82}}}}

    (gap,) = _student_size(evaluation(0.86), params)
    assert gap.startswith("- **Student size**: cifar_resnet8, 77,522 parameters, 0.33 MB; teacher − student trained"
                          " alone (baseline), validation balanced_accuracy: +0.0600, at least the 0.05")
    assert "a sweep over `student.model`" in gap
    (none,) = _student_size(evaluation(0.82), params)
    assert "balanced_accuracy: +0.0200, under the 0.05" in none and "opens the gap" in none
    assert _student_size({"decision_metric": "accuracy", "variants": {}}, params) == []


def test_speed_of_an_onnx_variant_is_judged_against_the_teacher_in_onnx_runtime(prepared_dir: Path,
                                                                               tmp_path: Path) -> None:
    """Like with like: ONNX Runtime's own gain over eager PyTorch is not credited to compression."""
    meta = load_meta(prepared_dir)
    val, test = (load_split(prepared_dir, split) for split in ("val", "test"))
    truth = _truth(val, test)
    params = parse_params({"evaluate": {"warmup": 0, "repeats": 3, "throughput_batch": 4},
                           "targets": {"min_speedup": 4.0}})
    loaders = {name: (lambda name=name, ms=ms, mb=mb: _fake_variant(name, truth, ms, mb, tmp_path))
               for name, ms, mb in (("teacher", 40.0, 100.0), ("teacher_onnx", 10.0, 1.0),
                                    ("student", 20.0, 10.0), ("student_onnx", 5.0, 9.0))}
    evaluation = compare(loaders, val, test, meta, params, "accuracy")["evaluation"]
    onnx = evaluation["variants"]["student_onnx"]
    assert evaluation["deployed"] == "student_onnx"  # teacher_onnx is smaller, but a reference
    assert 1.5 < onnx["latency_ratio_same_runtime"] < 3  # 10 ms / 5 ms, against teacher_onnx
    assert onnx["latency_ratio_vs_teacher"] > 5  # 40 ms / 5 ms, against the eager teacher
    assert evaluation["variants"]["student"]["latency_ratio_same_runtime"] > 1.5  # eager against eager
    speed = evaluation["targets"]["speedup"]
    assert speed["value"] == onnx["speedup_same_runtime"] and not speed["pass"]  # 4.0 asked of 2×


def test_teacher_missing_is_fatal(prepared_dir: Path) -> None:
    meta = load_meta(prepared_dir)

    def broken() -> Variant:
        raise CheckpointError("models/teacher/model.json: not found")

    with pytest.raises(PipelineError, match="teacher could not be evaluated"):
        split = load_split(prepared_dir, "test")
        compare({"teacher": broken}, split, split, meta, parse_params({}), "accuracy")


def test_time_model_reports_medians() -> None:
    timing = time_model(lambda x: x.sum(), np.zeros((2, 4, 4, 3), np.uint8), 8, warmup=1, repeats=3)
    assert timing.latency_ms > 0 and timing.throughput > 0


def test_multilabel_metrics_match_medmnist_evaluator() -> None:
    from medmnist.evaluator import getACC, getAUC

    rng = np.random.default_rng(1)
    y_true = rng.integers(0, 2, (40, 4))
    logits = rng.normal(size=(40, 4)) + 1.5 * (y_true - 0.5)
    report = full_metrics(y_true, logits, ["a", "b", "c", "d"])
    probs = 1 / (1 + np.exp(-logits))
    task = "multi-label, binary-class"
    assert report.summary["roc_auc"] == pytest.approx(getAUC(y_true, probs, task))
    assert report.summary["accuracy"] == pytest.approx(getACC(y_true, probs, task))
    assert report.summary["exact_match"] == pytest.approx(((probs > 0.5) == y_true).all(axis=1).mean())
    assert report.summary["f1"] == pytest.approx(f1_score(y_true, probs > 0.5, average="macro"))
    assert report.per_class["b"]["roc_auc"] == pytest.approx(roc_auc_score(y_true[:, 1], probs[:, 1]))
    (tn, fp), (fn, tp) = report.confusion[2]
    assert tp == int(((probs[:, 2] > 0.5) & (y_true[:, 2] == 1)).sum()) and tn + fp + fn + tp == 40
    assert report.predictions.shape == (40, 4)


def test_multilabel_label_without_positives_is_left_out_of_mean_auc() -> None:
    y_true = np.array([[1, 0], [0, 0], [1, 0], [0, 0]])
    logits = np.array([[2.0, -1], [-1, -2], [1, 0.5], [-2, -1]])
    report = full_metrics(y_true, logits, ["seen", "never"])
    assert report.summary["roc_auc"] == pytest.approx(1.0)
    assert "roc_auc" not in report.per_class["never"]
    assert any("never" in w and "only negatives" in w for w in report.warnings)


def test_multilabel_confusion_rows_skip_true_negatives() -> None:
    from kd_pipeline.evaluate.report import confusion_rows

    rows = confusion_rows([[1, 0], [0, 0]], [[0, 1], [0, 0]], ["Effusion", "Mass"])
    assert rows == [
        {"actual": "Effusion: yes", "predicted": "Effusion: no"},
        {"actual": "Mass: no", "predicted": "Mass: yes"},
    ]


def test_mean_roc_auc_matches_scikit_learn_and_skips_absent_classes() -> None:
    from kd_pipeline.core.evaluation import mean_roc_auc

    assert mean_roc_auc(Y_TRUE, LOGITS) == pytest.approx(roc_auc_score(Y_TRUE, softmax(LOGITS), multi_class="ovr"))
    binary = np.array([0, 1, 1, 0])
    two = np.array([[1.0, 0], [0, 2], [0, 1], [0.5, 0]])
    assert mean_roc_auc(binary, two) == pytest.approx(roc_auc_score(binary, softmax(two)[:, 1]))
    present = Y_TRUE < 2  # class 2 absent: scored over classes 0 and 1 only
    probs = softmax(LOGITS[present])
    expected = np.mean([roc_auc_score(Y_TRUE[present] == k, probs[:, k]) for k in (0, 1)])
    assert mean_roc_auc(Y_TRUE[present], LOGITS[present]) == pytest.approx(expected)
    assert np.isnan(mean_roc_auc(np.zeros(4, np.int64), two))


def test_an_onnx_variant_loads_without_its_pytorch_source(tmp_path) -> None:
    """Peak memory of an ONNX variant is the ONNX Runtime session's, not its source checkpoint's."""
    import json as _json

    import pytest as _pytest

    from kd_pipeline.core.data import Meta
    from kd_pipeline.core.errors import CheckpointError
    from kd_pipeline.core.models import create_model
    from kd_pipeline.evaluate.comparison import load_onnx_variant
    from kd_pipeline.quantize.onnx_export import export_onnx

    folder = tmp_path / "models" / "quantized"  # no models/student beside it
    folder.mkdir(parents=True)
    export_onnx(create_model("resnet10t", 3).eval(), [3, 16, 16], folder / "student.fp32.onnx")
    card = {"num_classes": 3, "mean": [0.5] * 3, "std": [0.25] * 3, "input_size": [3, 16, 16],
            "source": "student", "parameters": 123, "macs": 456}
    (folder / "student.fp32.json").write_text(_json.dumps(card))
    meta = Meta(class_names=["a", "b", "c"], image_size=16, mean=[0.5] * 3, std=[0.25] * 3, counts={},
                content_hash="x", source={})
    variant = load_onnx_variant("student_onnx", folder / "student.fp32.onnx", meta, threads=1)
    assert (variant.parameters, variant.macs) == (123, 456)
    del card["macs"]
    (folder / "student.fp32.json").write_text(_json.dumps(card))
    with _pytest.raises(CheckpointError, match="run the quantize stage again"):
        load_onnx_variant("student_onnx", folder / "student.fp32.onnx", meta, threads=1)


def test_the_headline_names_what_ships_in_the_decision_metric_without_duplicates() -> None:
    from kd_pipeline.evaluate.report import headline

    shipped = {"accuracy": 0.9, "balanced_accuracy": 0.8, "val": {"balanced_accuracy": 0.85}, "size_mb": 1.0,
               "latency_ms": 0.5, "latency_ratio_same_runtime": 4.0, "size_ratio_vs_teacher": 30.0,
               "avx2": {"safe_on": "CPUs with and without VNNI"}}
    evaluation = {"decision_metric": "balanced_accuracy", "deployed": "pruned_int8",
                  "variants": {"teacher": {"accuracy": 0.92}, "pruned_int8": shipped},
                  "distillation_gain": {"accuracy": 0.01, "balanced_accuracy": -0.02}, "targets_passed": False}
    found = headline(evaluation)
    assert found["deployed"] == "pruned_int8" and found["deployed_test_balanced_accuracy"] == 0.8
    assert found["deployed_val_balanced_accuracy"] == 0.85 and found["kd_gain_vs_baseline_balanced_accuracy"] == -0.02
    assert found["speedup_vs_teacher"] == 4.0 and found["targets_passed"] is False
    assert len([v for v in found.values() if isinstance(v, int | float)]) <= 30
    plain = headline({**evaluation, "decision_metric": "accuracy"})
    assert "deployed_test_balanced_accuracy" not in plain and "kd_gain_vs_baseline_accuracy" not in plain
