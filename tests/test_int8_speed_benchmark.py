import importlib.util
import json
from pathlib import Path

from tests.conftest import ROOT


def test_the_int8_speed_benchmark_times_both_files_and_proves_integer_kernels(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("int8_speed", ROOT / "benchmarks" / "int8_speed.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.main(["--size", "32", "--repeats", "3", "--out", str(tmp_path / "out")])
    assert result["integer_mac_share"] >= 0.95 and result["fp32_ms_b1"] > 0 and result["int8_ms_b1"] > 0
    assert result["speedup_b1"] == result["fp32_ms_b1"] / result["int8_ms_b1"]
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["command"].startswith("python benchmarks/int8_speed.py") and "isa" in run["machine"]
