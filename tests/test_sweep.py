"""The distillation sweep's arithmetic: the grid, the per-seed pairing with the baseline, and a
best setting picked on validation even when test disagrees."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from kd_pipeline.core.errors import PipelineError
from kd_pipeline.records.sweep import collect, grid, listed, recorded_command, render, roles_of, summarize


def _role(val: float, test: float) -> dict:
    return {"val": {"balanced_accuracy": val}, "test": {"accuracy": test, "balanced_accuracy": test}}


def _row(seed: int, method: str, student: tuple[float, float], baseline: tuple[float, float]) -> dict:
    return {"name": f"{method}-{seed}", "rev": "x", "seed": seed, "point": {"kd.method": method},
            "roles": {"baseline": _role(*baseline), "student": _role(*student), "direct": _role(*baseline)}}


def test_grid_is_every_combination() -> None:
    points = grid(["kd.method=kd,dkd", "kd.logit_standardization=false,true"])
    assert len(points) == 4
    assert {"kd.method": "dkd", "kd.logit_standardization": "true"} in points
    with pytest.raises(PipelineError, match="KEY=VALUE"):
        grid(["kd.method"])


def test_gains_are_paired_per_seed_and_the_best_is_chosen_on_validation() -> None:
    baselines = {0: (0.80, 0.70), 1: (0.90, 0.90)}
    rows = [
        # dkd: better on validation by 0.05 each seed, worse on test by 0.02
        *(_row(s, "dkd", (b[0] + 0.05, b[1] - 0.02), b) for s, b in baselines.items()),
        # kd: equal on validation, better on test by 0.04
        *(_row(s, "kd", (b[0], b[1] + 0.04), b) for s, b in baselines.items()),
    ]
    summary = summarize(rows, "balanced_accuracy", ["student", "direct"])
    assert summary["best_on_validation"] == {"kd.method": "dkd"}
    by_method = {p["point"]["kd.method"]: p for p in summary["points"]}
    assert by_method["dkd"]["student"]["test_accuracy"]["mean"] == pytest.approx(-0.02)
    assert by_method["kd"]["student"]["test_accuracy"]["mean"] == pytest.approx(0.04)
    assert by_method["kd"]["direct"]["test_accuracy"]["mean"] == pytest.approx(0.0)
    assert summary["baseline_test_accuracy_mean"] == pytest.approx(0.80)
    # identical differences: the sign test, p = 2 × 0.5² and an interval that reaches 0
    assert "| dkd | student | 0.7800 | -0.0200 [-0.0200, +0.0000] p=0.500 (Holm 1.000) |" in render(summary, "t")


def test_a_sweep_cell_shows_the_t_interval_and_p_value_and_calls_it_measurable() -> None:
    baselines = {0: (0.80, 0.80), 1: (0.85, 0.85), 2: (0.90, 0.90)}
    rows = [_row(s, "kd", (b[0], b[1] - 0.10 - 0.01 * s), b) for s, b in baselines.items()]
    # by hand: differences -0.10, -0.11, -0.12: mean -0.11, sd 0.01, t = -0.11 / (0.01 / √3) = -19.05,
    # two-sided p (df 2) = 0.0027; half-width t(0.975, 2) 4.3027 × 0.01 / √3 = 0.0248; the exact
    # sign-flip test of three same-signed differences: 2 / 2^3 = 0.25
    cell = "-0.1100 [-0.1348, -0.0852] p=0.003 (sign-flip 0.250) measurable"
    assert f"| kd | student | 0.7400 | {cell} |" in render(summarize(rows, "balanced_accuracy", ["student"]), "t")


def test_a_grid_key_that_changes_the_baseline_is_refused() -> None:
    rows = [_row(0, "kd", (0.9, 0.9), (0.8, 0.8)), _row(0, "dkd", (0.9, 0.9), (0.7, 0.7))]
    with pytest.raises(PipelineError, match="two different baselines"):
        summarize(rows, "balanced_accuracy", ["student", "direct"])


def test_only_the_roles_the_stages_train_are_read() -> None:
    assert roles_of(["train_baseline", "distill_student"]) == ["student"]
    with pytest.raises(PipelineError, match="need train_baseline"):
        roles_of(["distill_student"])


def test_points_listed_one_by_one() -> None:
    points = listed(["kd.method=kd kd.logit_standardization=false", "kd.method=dkd kd.logit_standardization=true"])
    assert points[1] == {"kd.method": "dkd", "kd.logit_standardization": "true"}
    with pytest.raises(PipelineError, match="same keys"):
        listed(["kd.method=kd", "kd.logit_standardization=true"])
    with pytest.raises(PipelineError, match="KEY=VALUE"):
        listed(["kd.method"])


def _rev(name: str, seed: int, method: str, roles: dict) -> dict:
    metrics = {f"metrics/{role}/metrics.json": {"data": data} for role, data in roles.items()}
    return {"name": name, "rev": name, "data": {"params": {"params.yaml": {"data": {
        "train": {"seed": seed}, "kd": {"method": method}}}}, "metrics": metrics}}


def test_collect_reads_every_finished_experiment_and_only_the_trained_roles() -> None:
    base = {"baseline": _role(0.8, 0.8), "student": _role(0.9, 0.9), "direct": _role(0.1, 0.1)}
    shown = [{"experiments": [
        {"executor": {"state": "success"}, "revs": [_rev("a", 0, "kd", base)]},
        {"executor": {"state": "success"}, "revs": [_rev("b", 1, "dkd", base)]},
        {"executor": {"state": "failed"}, "revs": [_rev("c", 2, "kd", base)]},
        {"executor": {"state": "success"}, "revs": [_rev("d", 3, "kd", {"baseline": _role(0.8, 0.8)})]},
    ]}]
    rows = collect(shown, ["kd.method"], ["student"])
    assert [(r["name"], r["seed"], r["point"]) for r in rows] == [("a", 0, {"kd.method": "kd"}),
                                                                   ("b", 1, {"kd.method": "dkd"})]
    assert set(rows[1]["roles"]) == {"baseline", "student"}


def test_the_recorded_command_pastes_back_into_a_shell() -> None:
    argv = ["t64", "--record", "messy", "--point", "teacher.image_size=64 assistant.image_size=64",
            "--fixed", "kd.method=dist"]
    command = recorded_command(argv, 346.4)
    assert command.endswith(" (346 s wall in all)")
    assert shlex.split(command.removesuffix(" (346 s wall in all)"))[3:] == argv


def _accuracy(val: float, test: float) -> dict:
    return {"val": {"accuracy": val, "balanced_accuracy": val}, "test": {"accuracy": test, "balanced_accuracy": test}}


def _chain_row(seed: int, student: float, direct: float, baseline: float, teacher: float) -> dict:
    return {"name": f"s{seed}", "rev": "x", "seed": seed, "point": {},
            "roles": {"baseline": _accuracy(baseline, baseline), "student": _accuracy(student, student),
                      "direct": _accuracy(direct, direct), "teacher": _accuracy(teacher, teacher),
                      "assistant": _accuracy(0.7, 0.7)}}


def test_what_the_assistant_adds_is_student_minus_direct_paired_by_seed() -> None:
    rows = [_chain_row(0, 0.62, 0.60, 0.55, 0.80), _chain_row(1, 0.66, 0.63, 0.57, 0.80),
            _chain_row(2, 0.64, 0.62, 0.56, 0.80)]
    summary = summarize(rows, "accuracy", ["student", "direct"])
    added = summary["points"][0]["student_vs_direct"]["test_accuracy"]
    assert added["mean"] == pytest.approx((0.02 + 0.03 + 0.02) / 3)
    assert summary["points"][0]["direct"]["test_accuracy"]["mean"] == pytest.approx((0.05 + 0.06 + 0.06) / 3)
    lead = summary["upstream"]["teacher_lead"]
    assert lead["val"] == pytest.approx(0.80 - 0.56) and lead["tests_distillation"]
    assert summary["upstream"]["teacher"]["distinct_runs"] == 1  # trained once, the same in every experiment
    text = render(summary, "t")
    assert "What the assistant adds" in text and "so this row tests distillation" in text


def test_a_teacher_that_leads_by_less_than_five_points_on_validation_does_not_test_distillation() -> None:
    rows = [_chain_row(0, 0.62, 0.60, 0.58, 0.62), _chain_row(1, 0.66, 0.63, 0.60, 0.62)]
    summary = summarize(rows, "accuracy", ["student", "direct"])
    assert summary["upstream"]["teacher_lead"]["val"] == pytest.approx(0.03)
    assert not summary["upstream"]["teacher_lead"]["tests_distillation"]
    assert "does not test distillation" in render(summary, "t")


def test_collect_reads_the_seed_from_the_seed_key() -> None:
    rev = _rev("a", 0, "kd", {"baseline": _role(0.8, 0.8), "student": _role(0.9, 0.9), "teacher": _role(1, 1)})
    rev["data"]["params"]["params.yaml"]["data"]["student"] = {"train": {"seed": 3}}
    rows = collect([{"experiments": [{"revs": [rev]}]}], ["kd.method"], ["student"], "student.train.seed")
    assert rows[0]["seed"] == 3 and set(rows[0]["roles"]) == {"baseline", "student", "teacher"}


def test_a_sweep_over_student_sizes_pairs_each_size_with_its_own_baseline() -> None:
    rows = []
    for seed in (0, 1):
        for name, base, student in (("resnet18", 0.80, 0.80), ("cifar_resnet8", 0.60, 0.64)):
            row = _chain_row(seed, student + seed / 100, student, base + seed / 100, 0.82)
            rows.append({**row, "point": {"student.model": name}})
    summary = summarize(rows, "accuracy", ["student", "direct"])
    by_model = {e["point"]["student.model"]: e for e in summary["points"]}
    assert by_model["cifar_resnet8"]["student"]["test_accuracy"]["mean"] == pytest.approx(0.04)
    assert by_model["resnet18"]["student"]["test_accuracy"]["mean"] == pytest.approx(0.0)
    assert not by_model["resnet18"]["teacher_lead"]["tests_distillation"]  # 0.82 - 0.805: too close
    assert by_model["cifar_resnet8"]["teacher_lead"]["tests_distillation"]
    summary["students"] = {"resnet18": {"parameters": 11_000_000, "macs": 5e8, "onnx_mb": 42.0, "latency_ms": 3.0},
                           "cifar_resnet8": {"parameters": 78_000, "macs": 1.2e7, "onnx_mb": 0.3, "latency_ms": 0.2}}
    text = render(summary, "t")
    assert text.index("| resnet18 | 11,000,000") < text.index("| cifar_resnet8 | 78,000")  # largest first
    assert "direct − baseline, test balanced accuracy" in text and "Holm" in text.split("Student sizes")[1]


def _size_rows(gains: dict[str, list[float]], teacher: float) -> list[dict]:
    rows = []
    for name, by_seed in gains.items():
        for seed, gain in enumerate(by_seed):
            base = 0.70 + seed / 100
            row = _chain_row(seed, base + gain, base + gain / 2, base, teacher)
            rows.append({**row, "point": {"student.model": name}})
    return rows


SIZES = {"resnet18": {"parameters": 11_000_000, "macs": 5e8, "onnx_mb": 42.0, "latency_ms": 3.0},
         "resnet10t": {"parameters": 4_900_000, "macs": 2e8, "onnx_mb": 18.8, "latency_ms": 0.6},
         "cifar_resnet8": {"parameters": 78_000, "macs": 1.2e7, "onnx_mb": 0.3, "latency_ms": 0.2}}


def test_the_size_sweep_names_the_largest_size_where_distillation_pays_and_what_it_costs() -> None:
    rows = _size_rows({"resnet18": [0.0, 0.01, -0.01], "resnet10t": [0.01, -0.005, 0.0],
                       "cifar_resnet8": [0.040, 0.050, 0.045]}, teacher=0.80)
    summary = {**summarize(rows, "accuracy", ["student", "direct"]), "students": SIZES}
    verdict = render(summary, "t").split("**Where distillation pays**")[1]
    assert "it starts at **cifar_resnet8** (78,000 parameters" in verdict
    assert "student − baseline +0.0450" in verdict and "paying sizes: cifar_resnet8." in verdict
    assert "test accuracy 0.7550; teacher − it +0.0450 (teacher 0.8000)" in verdict  # mean(0.74, 0.76, 0.765)


def test_the_size_sweep_says_why_no_size_pays() -> None:
    weak = _size_rows({"resnet18": [0.0, 0.01, -0.01], "cifar_resnet8": [0.01, -0.01, 0.0]}, teacher=0.72)
    summary = {**summarize(weak, "accuracy", ["student", "direct"]), "students": SIZES}
    assert "at none of these sizes; the teacher led the baseline by the minimum on validation at no size" in render(
        summary, "t")
    strong = _size_rows({"resnet18": [0.0, 0.01, -0.01], "cifar_resnet8": [0.03, -0.02, 0.01]}, teacher=0.80)
    summary = {**summarize(strong, "accuracy", ["student", "direct"]), "students": SIZES}
    assert "the teacher led by the minimum only at resnet18, cifar_resnet8, and there the gain is not" in render(
        summary, "t")
    losing = _size_rows({"resnet18": [-0.03, -0.04, -0.035], "cifar_resnet8": [0.03, -0.02, 0.01]}, teacher=0.80)
    summary = {**summarize(losing, "accuracy", ["student", "direct"]), "students": SIZES}
    assert "at none of these sizes" in render(summary, "t")  # a measurable loss is not where it pays


def test_a_grid_key_the_baseline_does_not_read_must_not_change_it() -> None:
    rows = [_chain_row(0, 0.6, 0.6, 0.5, 0.8), _chain_row(0, 0.6, 0.6, 0.55, 0.8)]
    rows[1]["point"] = {"kd.temperature": 2}
    rows[0]["point"] = {"kd.temperature": 4}
    with pytest.raises(PipelineError, match="two different baselines"):
        summarize(rows, "accuracy", ["student"])


def test_student_costs_are_measured_per_size() -> None:
    from kd_pipeline.records.sweep import student_costs

    costs = student_costs(["cifar_plain2", "cifar_resnet8"], 32, 10)
    assert costs["cifar_plain2"]["parameters"] == 13_082
    assert costs["cifar_plain2"]["macs"] < costs["cifar_resnet8"]["macs"]
    assert costs["cifar_plain2"]["onnx_mb"] < costs["cifar_resnet8"]["onnx_mb"]
    assert all(c["latency_ms"] > 0 for c in costs.values())


def test_a_sweep_record_keeps_the_lock_of_the_stages_it_ran_only() -> None:
    import yaml

    from kd_pipeline.records.sweep import trained_lock

    lock = yaml.safe_dump({"schema": "2.0", "stages": {s: {"cmd": s} for s in (
        "prepare", "train_teacher", "distill_student", "prune", "quantize", "evaluate", "export")}})
    kept = yaml.safe_load(trained_lock(lock))
    assert set(kept["stages"]) == {"prepare", "train_teacher", "distill_student"} and kept["schema"] == "2.0"


def test_queue_progress_counts_experiments_by_state() -> None:
    from kd_pipeline.records.rerun import queue_counts

    status = """Task     Name        Created    Status
9823923  dingy-tans  05:12 PM   Running
9b6e953  tight-matt  05:12 PM   Queued
e8f009d  leafy-ankh  05:12 PM   Queued
4c2b31e  obese-sumo  05:12 PM   Success
1c2b31e  sad-sumo    05:12 PM   Failed

Worker status: 1 active, 0 idle
"""
    counts = queue_counts(status)
    assert counts == {"Running": 1, "Queued": 2, "Success": 1, "Failed": 1}
    assert sum(queue_counts("Task     Name        Created    Status\n").values()) == 0


QUEUED_STAGE = """import json, os, sys, time, yaml
quality = yaml.safe_load(open("params.yaml"))["quality"]
json.dump({"score": quality}, open("metrics.json", "w"))
deadline = time.time() + 120
while not quality and not os.path.exists(RELEASE) and time.time() < deadline:
    time.sleep(0.1)  # the failing experiment waits until the test has seen the first one counted
sys.exit(0 if quality else 1)
"""


def test_the_queue_shows_progress_while_it_runs_and_fails_on_a_failed_experiment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`run_queue` (every sweep's and every `record --rerun --seeds`'s): its bar counts an
    experiment once it finishes, while the next still runs, not all of them at the end; it
    returns with the worker gone and fails, in one line, on a failed experiment."""
    import subprocess
    import sys
    import threading
    import time

    import yaml

    from kd_pipeline.records.rerun import run_in, run_queue
    from tests.forkserver import warm

    monkeypatch.setattr(sys, "executable", warm("python"))  # dvc warm, as the e2e tests run it
    release = tmp_path / "release"
    (tmp_path / "stage.py").write_text(f"RELEASE = {str(release)!r}\n" + QUEUED_STAGE)
    (tmp_path / "params.yaml").write_text("quality: 1\n")
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"score": {
        "cmd": "python stage.py", "deps": ["stage.py"], "params": ["quality"],
        "metrics": [{"metrics.json": {"cache": False}}]}}}))
    for cmd in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "base"]):
        subprocess.run(cmd, cwd=tmp_path, check=True, capture_output=True)
    for quality in ("2", "0"):  # the second waits for `release`, then fails
        run_in([sys.executable, "-m", "dvc", "exp", "run", "--queue", "-S", f"quality={quality}"], tmp_path)
    capsys.readouterr()
    failures: list[Exception] = []

    def drive() -> None:
        try:
            run_queue(tmp_path, poll_s=0.2)
        except PipelineError as error:
            failures.append(error)

    runner = threading.Thread(target=drive)
    runner.start()
    bar, deadline = "", time.monotonic() + 60
    while "1/2" not in bar and runner.is_alive() and time.monotonic() < deadline:
        time.sleep(0.2)
        bar += capsys.readouterr().out
    release.touch()
    runner.join(120)
    bar += capsys.readouterr().out
    assert "1/2" in bar and "2/2" in bar, bar  # the first counted while the second still ran
    assert len(failures) == 1 and "an experiment failed in" in str(failures[0]), failures
    assert "0 active, 0 idle" in run_in([sys.executable, "-m", "dvc", "queue", "status"], tmp_path, quiet=True)


def test_a_sweep_restarts_under_its_base_records_kernels(tmp_path: Path, monkeypatch) -> None:
    """A sweep's runs are compared with its base record's: on one CPU they must run its kernels."""
    import json
    import os

    from kd_pipeline.records import sweep as command

    folder = tmp_path / "results" / "base"
    folder.mkdir(parents=True)
    isa = ["avx2", "avx512f", "avx512_vnni", "amx_int8"]
    (folder / "evaluate.json").write_text(json.dumps(
        {"machine": {"isa": isa, "kernel_limits": {"pytorch": "AVX2", "onednn": "AVX2"}}}))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    started = []

    def execve(path: str, args: list[str], env: dict[str, str]) -> None:
        started.append((args, env))
        raise SystemExit(0)

    monkeypatch.setattr(os, "execve", execve)
    argv = ["t", "--record", "base", "--set", "kd.temperature=2,4"]
    with pytest.raises(SystemExit):
        command.main(argv)
    args, env = started[0]
    assert args[1:] == ["-m", "kd_pipeline.records.sweep", *argv]
    assert env["ATEN_CPU_CAPABILITY"] == "avx2" and env["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert command.recorded_command(argv, 1.0).startswith("ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python -m")
