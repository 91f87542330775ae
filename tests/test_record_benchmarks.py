"""The benchmarks behind the records that were made by hand before: the suite's time and the
reproducibility check. Their parsing and comparison are tested here; their runs are records."""

import importlib.util
from pathlib import Path

from tests.conftest import ROOT


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_suite_benchmark_reads_pytests_counts_seconds_and_slowest_tests() -> None:
    bench = _load("test_suite")
    output = ("..........\n============================= slowest 2 durations ==============================\n"
              "120.51s call     tests/test_chest_e2e.py::test_chest\n"
              "3.20s setup    tests/test_x.py::test_y\n"
              "================= 301 passed, 2 skipped, 1 warning in 428.93s (0:07:08) =================\n")
    parsed = bench.parse(output)
    assert parsed["counts"] == {"passed": 301, "skipped": 2, "warning": 1} and parsed["pytest_s"] == 428.93
    assert bench.parse("....\n303 passed in 411.02s (0:06:51)\n")["pytest_s"] == 411.02  # -q drops the ===
    assert parsed["slowest"][0] == {"test": "tests/test_chest_e2e.py::test_chest", "phase": "call", "seconds": 120.51}


def test_the_repro_check_tells_a_changed_model_from_a_changed_time() -> None:
    bench = _load("repro_check")

    def lock(model: str, metrics: str) -> dict:
        return {"stages": {"train": {"outs": [{"path": "models/student", "md5": model},
                                              {"path": "metrics/student/metrics.json", "md5": metrics}]},
                           "quantize": {"outs": [{"path": "reports/quantization.md", "md5": metrics}]},
                           "prepare": {"outs": [{"path": "metrics/data.json", "md5": "d"}]}}}

    same = bench.compare(lock("a", "t1"), lock("a", "t2"))
    assert [r["verdict"] for r in same] == ["same", "different (holds times)", "different (holds times)", "same"]
    changed = bench.compare(lock("a", "t1"), {"stages": {}})  # a model that no longer comes out: not the same
    assert [r["verdict"] for r in changed] == ["DIFFERENT", "different (holds times)", "different (holds times)",
                                               "DIFFERENT"]
    assert Path(bench.ROOT) == ROOT


def test_the_repro_check_deletes_every_locked_output_so_every_stage_runs(tmp_path: Path) -> None:
    """evaluate's outputs are committed to git, not cached: left in a fresh clone, they let DVC
    skip evaluate once the models come out the same, and the check would not re-measure it."""
    bench = _load("repro_check")
    (tmp_path / "plots/confusion").mkdir(parents=True)
    (tmp_path / "plots/confusion/student.json").write_text("[]")
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics/evaluate.json").write_text("{}")
    (tmp_path / "params.yaml").write_text("x: 1\n")
    lock = {"stages": {"evaluate": {"outs": [{"path": "plots/confusion", "md5": "a.dir"},
                                             {"path": "metrics/evaluate.json", "md5": "b"},
                                             {"path": "models/quantized", "md5": "c.dir"}]}}}
    bench.clear_outputs(tmp_path, lock)  # an output already missing (the cached model) is no error
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["params.yaml"]
