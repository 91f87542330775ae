"""A newcomer's first run, timed: `python benchmarks/first_run.py [--out results/first_run]`.

Clones HEAD into a temporary folder and runs the README's set-up there, as a new user would:
`make setup` (a fresh .venv from the pinned runtime lock; pip's download cache is whatever this
machine has), then `make repro` (the whole pipeline on digits, from an empty DVC cache), then a
second, no-op `dvc repro`. Prints each wall time, what the stages spent inside themselves
(`.timing/stages.json`) and what the processes spent outside them (imports, DVC's hashing and
locking), with the CPU. Run it alone: a timing beside another job is worthless. Run it with the
project's interpreter (`.venv/bin/python benchmarks/first_run.py`, PATH without that .venv) so
run.json names the library versions the clone installs from the same lock.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS_S = {"setup": 180.0, "repro": 300.0, "noop_repro": 2.0}  # issue 24's targets on 2 cores


def _timed(cmd: list[str], cwd: Path, log: Path) -> float:
    """Wall seconds of `cmd`; its output goes to `log`; a failure stops the benchmark."""
    started = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.run(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed in {cwd} (exit {proc.returncode}); see {log}")
    return time.perf_counter() - started


def first_run(workdir: Path) -> dict:
    """Clone, set up, reproduce and reproduce again; the seconds of each and of each stage."""
    clone = workdir / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    result = {
        "setup_s": _timed(["make", "setup"], clone, workdir / "setup.log"),
        "repro_s": _timed(["make", "repro"], clone, workdir / "repro.log"),
        "noop_repro_s": _timed([str(clone / ".venv" / "bin" / "dvc"), "repro"], clone, workdir / "noop.log"),
    }
    stages = json.loads((clone / ".timing" / "stages.json").read_text())
    result["stage_seconds"] = {command: round(seconds, 2) for command, seconds in stages.items()}
    result["inside_stages_s"] = round(sum(stages.values()), 1)
    result["outside_stages_s"] = round(result["repro_s"] - result["inside_stages_s"], 1)
    result["targets_s"] = TARGETS_S
    result["meets"] = {key: result[f"{key}_s"] <= limit for key, limit in TARGETS_S.items()}
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from kd_pipeline.evaluate.machine import cpu_info, describe

    with tempfile.TemporaryDirectory(prefix="kd-first-run-") as tmp:
        result = first_run(Path(tmp))
    machine = cpu_info()
    print(f"CPU: {describe(machine)}")
    for key in TARGETS_S:
        verdict = "meets" if result["meets"][key] else "misses"
        print(f"{key:11s} {result[f'{key}_s']:7.1f} s ({verdict} the {TARGETS_S[key]:.0f} s target)")
    print(f"inside the stages {result['inside_stages_s']:.1f} s, outside them (imports, DVC)"
          f" {result['outside_stages_s']:.1f} s")
    for command, seconds in result["stage_seconds"].items():
        print(f"  {command:45s} {seconds:7.2f} s")
    if args.out:
        from kd_pipeline.records.provenance import benchmark_record, pipeline_code

        benchmark_record(args.out, "benchmarks/first_run.py", sys.argv[1:] if argv is None else argv, result,

                         code=pipeline_code())
    return result


if __name__ == "__main__":
    main()
