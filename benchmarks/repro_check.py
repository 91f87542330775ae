"""Is `dvc repro` reproducible here? `python benchmarks/repro_check.py [--out results/digits-repro-check]`.

Clones HEAD into a temporary folder with its own, empty DVC cache (so no run cache can restore an
output), deletes every output the committed `dvc.lock` lists, git-tracked ones too (evaluate's are
committed, not cached: left in place, DVC would skip evaluate once its models came out the same),
so every stage really runs, runs `dvc repro` with the committed params, and compares each
output's md5 in the new `dvc.lock` with the committed one. Models, int8 files and the export must
come out byte for byte; files that hold times (epoch seconds, latency, memory) are expected to
differ and are listed as such. Prints one line per output and the counts; exits 1 when an output
that holds no time differs.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# Outputs whose content holds a measured time or memory: they differ between two runs by design
# (quantization.md carries each int8 format's batch-1 latency).
TIMED = ("metrics/", "plots/tradeoff", "reports/summary.md", "reports/quantization.md")


def outputs(lock: dict) -> dict[tuple[str, str], str]:
    """(stage, path) → md5 of every output in a dvc.lock."""
    return {(stage, out["path"]): out.get("md5", "") for stage, spec in lock.get("stages", {}).items()
            for out in spec.get("outs", [])}


def compare(before: dict, after: dict) -> list[dict[str, str]]:
    """Each output of `before` with its verdict: same, different (holds times), or DIFFERENT."""
    rows = []
    new = outputs(after)
    for (stage, path), md5 in outputs(before).items():
        timed = path.startswith(TIMED) and not path.startswith("metrics/data.json")
        verdict = "same" if new.get((stage, path)) == md5 else "different (holds times)" if timed else "DIFFERENT"
        rows.append({"stage": stage, "path": path, "verdict": verdict})
    return rows


def clear_outputs(clone: Path, lock: dict) -> None:
    """Delete every output `lock` lists under `clone`, so `dvc repro` re-runs each stage."""
    for _, path in outputs(lock):
        target = clone / path
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def repro_check(workdir: Path) -> dict:
    """Run the committed pipeline from nothing in a clone and compare its outputs with dvc.lock."""
    clone = workdir / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    before = yaml.safe_load((clone / "dvc.lock").read_text())
    clear_outputs(clone, before)
    with (workdir / "repro.log").open("w") as log:
        proc = subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=clone, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise SystemExit(f"dvc repro failed in {clone} (exit {proc.returncode}); see {workdir / 'repro.log'}")
    rows = compare(before, yaml.safe_load((clone / "dvc.lock").read_text()))
    counts = {verdict: sum(r["verdict"] == verdict for r in rows) for verdict in sorted({r["verdict"] for r in rows})}
    return {"outputs": rows, "counts": counts, "reproducible": "DIFFERENT" not in counts}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    from kd_pipeline.evaluate.machine import cpu_info, describe

    with tempfile.TemporaryDirectory(prefix="kd-repro-check-") as tmp:
        result = repro_check(Path(tmp))
    print(f"CPU: {describe(cpu_info())}")
    for row in result["outputs"]:
        print(f"{row['stage']:20s} {row['path']:45s} {row['verdict']}")
    print(", ".join(f"{n} {verdict}" for verdict, n in result["counts"].items()))
    if args.out:
        from kd_pipeline.records.provenance import benchmark_record, pipeline_code

        benchmark_record(args.out, "benchmarks/repro_check.py", sys.argv[1:] if argv is None else argv, result,

                         code=pipeline_code())
    if not result["reproducible"]:
        raise SystemExit("an output that holds no time differs from dvc.lock: the pipeline is not reproducible here")
    return result


if __name__ == "__main__":
    main()
