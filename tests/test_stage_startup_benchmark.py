import importlib.util
import json
from pathlib import Path

from tests.conftest import ROOT


def test_the_startup_benchmark_times_fresh_interpreters_and_writes_its_record(tmp_path: Path, monkeypatch) -> None:
    """Cheap rows stand in for the real ones (each real stage import takes seconds): the
    arithmetic, the fresh processes and the record are what is tested."""
    spec = importlib.util.spec_from_file_location("stage_startup", ROOT / "benchmarks" / "stage_startup.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setattr(bench, "STAGES", ("export", "train"))
    monkeypatch.setattr(bench, "LAYERS", (("json", "import json"),))
    monkeypatch.setattr(bench, "wall_seconds", lambda code, repeats: 2.0 if "train" in code else 1.0)
    result = bench.main(["--repeats", "1", "--out", str(tmp_path / "out")])
    assert result["stages"] == {"export": 1.0, "train": 2.0} and result["layers"] == {"json": 1.0}
    assert result["imports_per_repro_s"] == 1.0 + 2.0 + 4 * 2.0  # train runs for five roles
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["command"].startswith("python benchmarks/stage_startup.py") and "isa" in run["machine"]


def test_a_fresh_interpreter_is_timed() -> None:
    spec = importlib.util.spec_from_file_location("stage_startup", ROOT / "benchmarks" / "stage_startup.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.wall_seconds("import time; time.sleep(0.3)", 1) >= 0.3  # the child's whole life is timed
