"""Records behind README numbers: copying a finished run, refusing a stale one, the README check."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
import yaml

from kd_pipeline import budgets
from kd_pipeline.core.errors import PipelineError
from kd_pipeline.records.provenance import missing_field
from kd_pipeline.records.seeds import aggregate
from kd_pipeline.records.store import _drop_seeds_of_another_run, record
from kd_pipeline.records.tables import GENERATED, README, readme_with_tables, records_table
from tests.conftest import ROOT

STAGE = """\
import json, os
os.makedirs("metrics", exist_ok=True); os.makedirs("reports", exist_ok=True)
json.dump({"variants": {"student": {"accuracy": 0.9}}, "deployed": "student",
           "machine": {"kernel_limits": {"pytorch": "AVX2", "onednn": "AVX2"}}}, open("metrics/evaluate.json", "w"))
open("reports/summary.md", "w").write("# summary")
"""


def test_generated_tables_match_the_records() -> None:
    assert "<!-- table: headline" in (ROOT / README).read_text()
    assert "<!-- table: records -->" in (ROOT / "docs/results.md").read_text()
    for page in GENERATED:
        text = (ROOT / page).read_text()
        assert readme_with_tables(text, ROOT / "results", page) == text, f"{page}: run kd-record --readme"


def test_the_readme_is_one_screen_with_a_picture_from_a_record() -> None:
    text = (ROOT / README).read_text()
    assert len(text.splitlines()) <= 150
    pictures = re.findall(r"!\[[^\]]*\]\((results/[^)]+\.png)\)", text)
    assert pictures and all((ROOT / p).is_file() for p in pictures), pictures


def _evaluation(accuracies: dict[str, float]) -> dict:
    variants = {name: {"accuracy": acc, "size_mb": 1.0} for name, acc in accuracies.items()}
    return {"variants": variants, "deployed": "student", "targets_passed": False,
            "distillation_gain": {"accuracy": accuracies["student"] - accuracies["baseline"]}}


def test_records_table_shows_spread_when_aggregated_single_runs_otherwise_and_each_cpu(tmp_path: Path) -> None:
    params = budgets.apply(yaml.safe_load((ROOT / "params.yaml").read_text()), "full")
    for name, seeds in (("a", True), ("b", False)):
        folder = tmp_path / name
        folder.mkdir()
        if name == "b":  # a short budget for the teacher, and a folder of images
            params["teacher"]["train"] = {"epochs": 2}
            params["data"].update(name="imagefolder", root="/data/screens")
        (folder / "params.yaml").write_text(yaml.safe_dump(params))
        evaluation = _evaluation({"student": 0.9, "baseline": 0.85})
        if name == "b":  # the stages ran with PyTorch held below the CPU's AVX-512 (their own evaluate.json says)
            evaluation["machine"] = {"isa": ["avx2", "avx512f"], "kernel_limits": {"pytorch": "AVX2"}}
        (folder / "evaluate.json").write_text(json.dumps(evaluation))
        (folder / "run.json").write_text(json.dumps({"machine": {
            "cpu": "AMD EPYC" if name == "a" else "Intel(R) Xeon(R) Platinum 8480+ CPU @ 2.00GHz",
            "isa": ["avx2"] if name == "a" else ["avx2", "avx512f", "amx_int8"],
            "int8_kernels": "AVX2 (no VNNI: u8s8 may saturate)" if name == "a" else "AMX", "cores": 2}}))
        if seeds:
            stats = {"mean": 0.05, "std": 0.01, "min": 0.04, "max": 0.06, "n": 3}
            (folder / "seeds.json").write_text(json.dumps(
                {"seeds": [0, 1, 2], "variants": {"student": {"accuracy": {**stats, "mean": 0.91}}},
                 "gains": {"distillation_gain": {"accuracy": stats}},
                 "shipped": {str(k): {"within_one_point": k != 1} for k in range(3)}}))
    rows = records_table(tmp_path).splitlines()
    assert rows[2].startswith("| a | digits (32 px) | 10/10/10 | 3 | – | – | 0.910 ± 0.010 |")
    assert "+0.050 ± 0.010" in rows[2] and "| 2/3 seeds |" in rows[2]
    assert rows[3].startswith("| b | imagefolder screens (32 px) | 2/10/10 | 1 | – | – | 0.900 | – | 0.850 | +0.050 |")
    assert rows[2].endswith("| 2/3 seeds | 2-core EPYC (AVX2) | unknown: no dvc.lock and no code md5s in run.json |")
    assert rows[3].endswith("| student | 0.900 | 1.00 MB | false | – | 2-core Xeon Platinum 8480+ (AMX),"
                            " kernels held to AVX2 | unknown: no dvc.lock and no code md5s in run.json |")


def _run(cmd: list, cwd: Path) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True)


def test_record_copies_a_finished_run_and_refuses_a_stale_one(tmp_path: Path, monkeypatch) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "params.yaml").write_text("x: 1\n")
    (repo / "stage.py").write_text(STAGE)
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"evaluate": {
        "cmd": f"{sys.executable} stage.py", "deps": ["stage.py"], "params": ["x"],
        "metrics": [{"metrics/evaluate.json": {"cache": False}}],
        "outs": [{"reports/summary.md": {"cache": False}}]},
        # like the pipeline's `cpu` stage: `dvc status` always lists it, and that is not a stale lock
        "cpu": {"cmd": f"{sys.executable} -c \"open('cpu.json', 'w').write('{{}}')\"", "always_changed": True,
                "outs": [{"cpu.json": {"cache": False}}]}}}))
    _run(["git", "init", "-q"], repo)
    _run(["dvc", "init", "-q"], repo)
    with pytest.raises(PipelineError, match="no finished run to record: dvc.lock, metrics/evaluate.json"):
        record("run", "dvc repro", root=repo)
    _run(["dvc", "repro", "-q"], repo)
    _run(["git", "add", "stage.py"], repo)  # staged, never committed: the record must say dirty
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)  # the recorder runs unheld; the stages did not
    folder = record("run", "dvc repro", root=repo)
    assert sorted(p.name for p in folder.iterdir()) == [
        "dvc.lock", "evaluate.json", "params.yaml", "run.json", "summary.md"]
    run = json.loads((folder / "run.json").read_text())
    assert run["command"] == "dvc repro" and run["machine"]["cores"] == os.cpu_count()
    assert run["dirty"] is True and run["code_commit"] == ""  # stage.py is staged, never committed
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", run["ended"])
    assert run["started"] is None  # recorded after the fact: its start is not known, and not invented
    assert missing_field(run) == "code_commit"  # never committed: `record --check` calls it incomplete
    assert run["versions"]["python"] and "torchvision" in run["versions"]
    assert run["versions"]["torch"] == torch.__version__.split("+")[0] and "onnxruntime" in run["versions"]
    assert run["machine"]["isa"] == "unknown" or isinstance(run["machine"]["isa"], list)
    assert run["machine"]["kernel_limits"] == {"pytorch": "AVX2", "onednn": "AVX2"}  # the stages', not ours

    (repo / "params.yaml").write_text("x: 2\n")
    with pytest.raises(PipelineError, match="dvc.lock is stale for evaluate"):
        record("run", "dvc repro", root=repo)
    assert json.loads((folder / "run.json").read_text()) == run  # the old record is untouched


def test_freshness_compares_a_records_code_with_todays(tmp_path: Path) -> None:
    import hashlib

    from kd_pipeline.records.store import freshness

    (tmp_path / "stages").mkdir()
    script = tmp_path / "stages" / "x.py"
    script.write_text("print(1)\n")
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"x": {"cmd": "python -m stages.x",
                                                                        "deps": ["stages/x.py", "data"]}}}))
    folder = tmp_path / "results" / "run"
    folder.mkdir(parents=True)
    lock = {"schema": "2.0", "stages": {"x": {"cmd": "python -m stages.x", "deps": [
        {"path": "stages/x.py", "hash": "md5", "md5": hashlib.md5(b"print(1)\n").hexdigest()},
        {"path": "data", "hash": "md5", "md5": "0" * 32 + ".dir"}]}}}
    (folder / "dvc.lock").write_text(yaml.safe_dump(lock))
    (folder / "run.json").write_text(json.dumps({"code_commit": "abcdef0123"}))
    assert freshness(folder, tmp_path) == "current"  # data deps do not count: the code is today's
    script.write_text("print(2)\n")
    assert freshness(folder, tmp_path) == "stale: 1 of 1 stages changed since abcdef0"


def test_a_benchmark_record_is_stale_when_the_code_it_ran_changes(tmp_path: Path, monkeypatch) -> None:
    from kd_pipeline.records.provenance import benchmark_record
    from kd_pipeline.records.store import freshness

    monkeypatch.chdir(tmp_path)
    script = tmp_path / "bench.py"
    script.write_text("print(1)\n")
    for cmd in (["git", "init", "-q"], ["git", "add", "bench.py"], ["git", "-c", "user.name=t", "-c", "user.email=t@t",
                                                                      "commit", "-qm", "bench"]):
        _run(cmd, tmp_path)
    benchmark_record(tmp_path / "results" / "bench", "bench.py", ["--out", "x"], {"ratio": 2.0})
    run = json.loads((tmp_path / "results" / "bench" / "run.json").read_text())
    assert run["command"] == "python bench.py --out x" and run["started"] <= run["ended"]
    assert missing_field(run) is None and run["code"] == {"bench.py": run["code"]["bench.py"]}
    assert freshness(tmp_path / "results" / "bench", tmp_path) == "current"
    script.write_text("print(2)\n")
    assert freshness(tmp_path / "results" / "bench", tmp_path).startswith("stale: 1 of 1 code files changed")


def test_a_clone_that_fails_leaves_no_folder_and_says_why_in_one_line(tmp_path: Path, monkeypatch) -> None:
    from kd_pipeline.records.rerun import kept_on_failure

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with (pytest.raises(PipelineError, match=r"could not clone .*nowhere to run in: .*") as err,
          kept_on_failure("kd-rerun-x-", tmp_path / "nowhere")):
        raise AssertionError("the body must not run")
    assert "\n" not in str(err.value) and list(tmp_path.iterdir()) == []


def test_a_whole_pipeline_benchmark_is_stale_when_a_stage_is_added(tmp_path: Path) -> None:
    """first_run and repro_check list dvc.yaml's stage code; a stage added since ran in no such record."""
    from kd_pipeline.records.store import freshness

    for name in ("stages/prepare.py", "stages/export.py", "stages/cpu.py"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(f"# {name}\n")
    md5 = {n: hashlib.md5((tmp_path / n).read_bytes()).hexdigest() for n in ("stages/prepare.py", "stages/export.py")}
    folder = tmp_path / "results" / "first_run"
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"code_commit": "abcdef0123", "code": md5}))
    stages = {"prepare": {"deps": ["stages/prepare.py"]}, "export": {"deps": ["stages/export.py", "models"]}}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    assert freshness(folder, tmp_path) == "current"
    stages["cpu"] = {"deps": ["stages/cpu.py"]}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    assert freshness(folder, tmp_path) == "stale: 1 stage code files added since abcdef0 (stages/cpu.py)"
    (folder / "run.json").write_text(json.dumps({"code_commit": "abcdef0123", "code": {"stages/export.py": md5[
        "stages/export.py"]}}))  # one stage's benchmark: not the whole pipeline, no claim about the others
    assert freshness(folder, tmp_path) == "current"


def test_check_names_an_incomplete_record_and_its_field_and_fails(tmp_path: Path, monkeypatch, capsys) -> None:
    from kd_pipeline.records import record as record_module

    for page in GENERATED:  # today's pages, current against today's records
        (tmp_path / page).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / page, tmp_path / page)
    shutil.copytree(ROOT / "results", tmp_path / "results")
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    monkeypatch.chdir(tmp_path)
    run_path = tmp_path / "results" / "digits-first-look" / "run.json"
    run = json.loads(run_path.read_text())
    del run["machine"]["isa"]
    run_path.write_text(json.dumps(run))
    assert record_module.main(["--check"]) == 1
    assert "results/digits-first-look: incomplete: run.json has no machine.isa" in capsys.readouterr().out


def _saved_record(results: Path, name: str, **changes: dict) -> Path:
    """A record folder holding default params with `changes`, a seeds.json and a marker file."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for group, values in changes.items():
        params[group].update(values)
    folder = results / name
    folder.mkdir(parents=True)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (folder / "seeds.json").write_text(json.dumps({"seeds": [0, 1, 2, 3, 4]}))
    (folder / "evaluate.json").write_text("{}")
    return folder


def test_a_rerun_reads_its_recipe_from_the_record(tmp_path: Path) -> None:
    from kd_pipeline.records.rerun import recipe

    data = tmp_path / "medmnist"
    data.mkdir()
    _saved_record(tmp_path / "results", "pneu", data={"name": "medmnist", "subset": "pneumoniamnist",
                                                      "root": str(data)}, train={"seed": 2})
    plan = recipe("pneu", tmp_path / "results", tmp_path)
    assert plan.seeds == [2, 0, 1, 3, 4]  # the workspace's seed first, the others queued
    assert plan.params["data"]["root"] == str(data) and plan.params["data"]["subset"] == "pneumoniamnist"
    (tmp_path / "results/pneu/seeds.json").unlink()
    assert recipe("pneu", tmp_path / "results", tmp_path).seeds == [2]


def test_a_record_with_retired_keys_reruns_its_data_at_todays_defaults(tmp_path: Path) -> None:
    from kd_pipeline.records.rerun import recipe

    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    data = tmp_path / "medmnist"
    data.mkdir()
    folder = _saved_record(tmp_path / "results", "old", data={"name": "medmnist", "subset": "breastmnist",
                                                              "root": str(data)}, train={"seed": 1, "epochs": 3})
    params = yaml.safe_load((folder / "params.yaml").read_text())
    params["export"]["min_int8_agreement"] = 0.9  # a key today's code no longer has
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(PipelineError, match="--today-defaults re-runs its data"):
        recipe("old", tmp_path / "results", tmp_path)
    plan = recipe("old", tmp_path / "results", tmp_path, today_defaults=True, seeds=5)
    today = budgets.apply(yaml.safe_load((ROOT / "params.yaml").read_text()), "full")
    assert plan.params["data"]["subset"] == "breastmnist" and plan.params["data"]["root"] == str(data)
    assert plan.params["train"] == {**today["train"], "seed": 1}  # the record's epochs are not kept
    assert plan.params["export"] == today["export"]
    assert plan.seeds == [1, 0, 2, 3, 4]


def test_a_failed_rerun_keeps_its_run_and_says_where(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A re-run that fails to record (after hours of training, maybe) keeps its clone, named in the
    one-line error; one that records removes it."""
    import tempfile
    from types import SimpleNamespace

    from kd_pipeline.records import rerun as module

    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "params.yaml").write_text("x: 0\n")
    _run(["git", "init", "-q"], repo)
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x", "--allow-empty"], repo)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(module, "recipe", lambda *args: SimpleNamespace(params={"x": 1}, seeds=[0]))
    monkeypatch.setattr(module, "provenance", lambda repo: {"dirty": False, "code_commit": "abc1234"})
    monkeypatch.setattr(module, "run_in", lambda cmd, cwd, quiet=False: "")  # dvc: as if it ran

    def stale(*args: object, **kwargs: object) -> Path:
        raise PipelineError("dvc.lock is stale for evaluate: rerun (`dvc repro`) before recording")

    monkeypatch.setattr(module, "record", stale)
    with pytest.raises(PipelineError, match=r"before recording \(the run is kept in .+\)$") as failed:
        module.rerun("run", repo=repo)
    kept = Path(re.search(r"kept in (.+)\)$", str(failed.value)).group(1))
    assert yaml.safe_load((kept / "params.yaml").read_text()) == {"x": 1}  # the run's own files

    monkeypatch.setattr(module, "record", lambda name, command, root, results, started: results / name)
    module.rerun("run", repo=repo)
    assert [path.name for path in tmp_path.glob("kd-rerun-*")] == [kept.parent.name]  # only the failed one


def test_a_rerun_sets_a_budget_on_top_of_todays_defaults_and_refuses_a_bad_setting(tmp_path: Path) -> None:
    """CIFAR-10's record is today's defaults at one epoch: `--set` carries the budget, checked
    by today's schema like the rest of the recipe."""
    from kd_pipeline.records.rerun import recipe

    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    _saved_record(tmp_path / "results", "cifar", data={"name": "digits"}, train={"epochs": 1, "sampler": "x"})
    plan = recipe("cifar", tmp_path / "results", tmp_path, today_defaults=True,
                  settings=["train.epochs=1", "teacher.train.epochs=1", "prune.epochs=1"])
    today = budgets.apply(yaml.safe_load((ROOT / "params.yaml").read_text()), "full")
    assert plan.params["train"] == {**today["train"], "epochs": 1}  # the retired key is gone
    assert plan.params["teacher"]["train"] == {"epochs": 1} and plan.params["prune"]["epochs"] == 1
    assert plan.params["assistant"] == today["assistant"]
    with pytest.raises(PipelineError, match="--set train.epochs: expected KEY=VALUE"):
        recipe("cifar", tmp_path / "results", tmp_path, today_defaults=True, settings=["train.epochs"])
    with pytest.raises(PipelineError, match="today's code refuses its params"):
        recipe("cifar", tmp_path / "results", tmp_path, today_defaults=True, settings=["train.epochz=1"])


@pytest.mark.parametrize(("changes", "message"), [
    ({"data": {"name": "imagefolder", "root": "/nowhere/screens"}}, "its data.root /nowhere/screens is not on this"),
    ({"kd": {"alpha": 2}}, "today's code refuses its params"),
])
def test_a_rerun_that_cannot_be_reproduced_says_why_and_keeps_the_record(tmp_path: Path, changes: dict,
                                                                          message: str) -> None:
    from kd_pipeline.records.rerun import rerun

    folder = _saved_record(tmp_path / "results", "old", **changes)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(PipelineError, match=re.escape(message)):
        rerun("old", tmp_path / "results", ROOT)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    with pytest.raises(PipelineError, match="no such record"):
        rerun("missing", tmp_path / "results", ROOT)


AMX_ISA = ["avx2", "fma", "avx512f", "avx512_vnni", "amx_int8"]


@pytest.mark.parametrize(("source", "machine", "held"), [
    ("evaluate.json", {"isa": AMX_ISA, "kernel_limits": {"pytorch": "AVX2", "onednn": "AVX2"}},
     {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}),
    ("evaluate.json", {"isa": AMX_ISA, "kernel_limits": {"pytorch": "AVX512", "onednn": "default"}}, {}),
    ("evaluate.json", {"isa": ["avx2", "fma"], "kernel_limits": {"pytorch": "AVX2", "onednn": "default"}}, {}),
    ("run.json", {"isa": AMX_ISA, "kernel_limits": {"pytorch": "avx2", "onednn": "AVX2"}},
     {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}),
    ("run.json", {"isa": AMX_ISA}, None),
])
def test_a_rerun_holds_the_kernels_its_record_held(tmp_path: Path, source: str, machine: dict,
                                                     held: dict | None) -> None:
    """A record's AVX2-held int8 file re-run at AMX kernels crossed its budget: the limits are
    part of the recipe. An AVX2 CPU's native level is no limit; an old record without them, unknown."""
    from kd_pipeline.records.rerun import held_kernels

    (tmp_path / source).write_text(json.dumps({"machine": machine}))
    assert held_kernels(tmp_path) == held


def test_record_rerun_restarts_itself_under_its_records_kernels(tmp_path: Path, monkeypatch) -> None:
    from kd_pipeline.records import record as command

    folder = tmp_path / "results" / "held"
    folder.mkdir(parents=True)
    (folder / "evaluate.json").write_text(json.dumps(
        {"machine": {"isa": AMX_ISA, "kernel_limits": {"pytorch": "AVX2", "onednn": "AVX2"}}}))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE")
    started = []

    def execve(path: str, args: list[str], env: dict[str, str]) -> None:
        started.append((args, env))
        raise SystemExit(0)

    monkeypatch.setattr(os, "execve", execve)
    with pytest.raises(SystemExit):
        command.main(["held", "--rerun", "--seeds", "2"])
    args, env = started[0]
    assert args[1:] == ["-m", "kd_pipeline.records.record", "held", "--rerun", "--seeds", "2"]
    assert env["ATEN_CPU_CAPABILITY"] == "avx2" and env["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # already under them: no restart, on to the re-run
    with pytest.raises(SystemExit):
        command.main(["held", "--rerun"])
    assert len(started) == 1


def test_rerun_is_a_record_command_and_fails_in_one_line(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "kd_pipeline.records.record", "nothing-here", "--rerun"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == ["error: results/nothing-here: no such record (no params.yaml)"]


def test_a_record_keeps_seeds_json_only_when_it_aggregates_the_recorded_run(tmp_path: Path) -> None:
    """A one-seed re-run leaves the repository's own seeds.json (other runs) in the clone: the
    record must not present it as this run's spread."""
    def run(student: float, baseline: float) -> dict:
        scores = {"student": student, "baseline": baseline}
        return {"variants": {n: {m: a for m in ("accuracy", "balanced_accuracy", "f1")} for n, a in scores.items()},
                "decision_metric": "accuracy", "deployed": "student"}

    this, other = run(0.9, 0.85), run(0.7, 0.6)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"train": {"seed": 0}}))
    for name, seed_zero, kept in (("ours", this, True), ("theirs", other, False)):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "evaluate.json").write_text(json.dumps(this))
        (folder / "seeds.json").write_text(json.dumps(aggregate({0: seed_zero, 1: other})))
        (folder / "seeds.md").write_text("# Across seeds\n")
        _drop_seeds_of_another_run(folder, tmp_path)
        assert (folder / "seeds.json").is_file() == kept and (folder / "seeds.md").is_file() == kept, name


def test_gains_are_paired_in_the_decision_metric_and_corrected_over_the_whole_table(tmp_path: Path) -> None:
    from kd_pipeline.records.tables import gains_table

    params = (ROOT / "params.yaml").read_text()
    for name, loss in (("a", 0.03), ("b", 0.0)):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "params.yaml").write_text(params)
        (folder / "evaluate.json").write_text(json.dumps({"decision_metric": "balanced_accuracy"}))
        per_seed = {str(s): {"variants": {
            "baseline": {"accuracy": 0.8, "balanced_accuracy": 0.8},
            "student": {"accuracy": 0.8 + 0.001 * s, "balanced_accuracy": 0.8 - loss + 0.004 * (s - 2) ** 2 / 4},
            "direct": {"accuracy": 0.8, "balanced_accuracy": 0.8 - 0.001 * s}}} for s in range(5)}
        (folder / "seeds.json").write_text(json.dumps({"per_seed": per_seed}))
        if name == "a":
            (folder / "run.json").write_text(json.dumps({"machine": {"cpu": "AMD EPYC", "int8_kernels": "AVX2"}}))
    rows = gains_table(tmp_path).splitlines()
    assert rows[0].startswith("| record | data | seeds | decides by | comparison | − test accuracy |")
    first = rows[2].split(" | ")
    assert first[0] == "| a" and first[3] == "balanced accuracy" and first[4] == "KD through the assistant − no KD"
    assert first[6].startswith("-0.0280 [") and "Holm" in first[6]  # a loss, in the metric the set decides by
    assert "measurable" in first[6] and len(rows) == 2 + 2 * 3
    assert first[7] == "EPYC (AVX2)" and rows[-1].split(" | ")[7] == "–"  # where each row ran; b does not say


def test_the_teacher_and_the_pruned_model_are_compared_with_the_baseline_as_one_family(tmp_path: Path) -> None:
    from kd_pipeline.records.tables import AGAINST_BASELINE, gains_table, render

    params = (ROOT / "params.yaml").read_text()
    for name, lead in (("a", 0.05), ("b", 0.0), ("c", 0.0)):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "params.yaml").write_text(params)
        (folder / "evaluate.json").write_text(json.dumps({"decision_metric": "accuracy"}))
        per_seed = {str(s): {"variants": {
            "baseline": {"accuracy": 0.8},
            "teacher": {"accuracy": 0.8 + lead + 0.002 * (s % 2)},
            "pruned": {"accuracy": 0.8 - 0.001 * s}}} for s in range(5)}
        (folder / "seeds.json").write_text(json.dumps({"per_seed": per_seed}))
    rows = render("versus", None, tmp_path).splitlines()
    assert rows == gains_table(tmp_path, AGAINST_BASELINE).splitlines() and len(rows) == 2 + 3 * 2
    teacher_a, pruned_a, teacher_b = (row.split(" | ") for row in rows[2:5])
    assert teacher_a[4] == "teacher − baseline" and pruned_a[4].startswith("pruned")
    assert "measurable" in teacher_a[5] and teacher_a[5].startswith("+0.0508 [")
    # six comparisons in the column: Holm multiplies the smallest p by six
    assert "measurable" not in teacher_b[5] and "Holm" in pruned_a[5]


def test_every_committed_record_is_complete_and_decided_on_a_named_metric() -> None:
    """The schema every README or note number is cited from: `record --check` would name the field."""
    from kd_pipeline.records.store import incomplete

    lacking = {folder.name: incomplete(folder) for folder in sorted((ROOT / "results").iterdir()) if folder.is_dir()}
    assert {name: why for name, why in lacking.items() if why} == {}


def test_every_record_the_readme_and_docs_cite_exists() -> None:
    """A number cited from `results/NAME` whose folder is gone has no source (`results/first_run`
    was cited for months after it left); `results/NAME-*` names a family and needs one member."""
    pages = [ROOT / README, *sorted((ROOT / "docs").glob("*.md"))]
    cited = {(page.name, name) for page in pages
             for name in re.findall(r"`results/([A-Za-z0-9_.*-]+)[^`]*`", page.read_text())
             if not name.isupper()}  # `results/NAME` is a placeholder
    assert len(cited) > 20
    assert sorted((page, name) for page, name in cited if not list((ROOT / "results").glob(name))) == []
