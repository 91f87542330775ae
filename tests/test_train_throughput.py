"""benchmarks/train_throughput.py runs every row, plain torchvision loop included, on a tiny folder."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import ROOT, TINY_MODEL


def test_benchmark_runs_every_row_on_a_tiny_generated_folder(tmp_path) -> None:  # noqa: ANN001
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/train_throughput.py"), "--student", TINY_MODEL, "--teacher",
         TINY_MODEL, "--size", "16", "--images", "200", "--source", "90x70", "--batch", "32", "--threads", "1",
         "--device", "cpu", "--checkpointing", "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    for row in ("pipeline student", "pipeline student, KD, cached teacher logits", "pipeline teacher",
                "plain loop student, 0 workers", "plain loop student, 2 workers",
                "pipeline student, hflip, KD, online teacher", "pipeline student, activation checkpointing",
                "student step alone, batch in memory"):
        match = re.search(rf"^\| {re.escape(row)} \| (\d+) \|$", out, re.MULTILINE)
        assert match and int(match.group(1)) > 0, row
    assert re.search(r"pipeline student / best plain loop: \d+\.\d\dx", out)
    assert re.search(r"compute ceiling / best plain loop: \d+\.\d\dx", out)
    assert re.search(r"KD step with cached teacher logits costs \d+\.\d\dx", out)
    assert "teacher step: n/a on CPU" in out
    assert list(tmp_path.iterdir()) == []  # the generated folder is removed
