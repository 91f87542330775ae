"""What a stage costs before it does any work: the wall time of importing each stage, and of the
libraries under it, in fresh interpreters on this machine, one run.

    python benchmarks/stage_startup.py [--repeats 3] [--out results/stage_startup]

DVC runs every stage as its own process, so each pays these imports once: with eleven stages,
they are a floor under `make repro` and under every end-to-end test that runs `dvc repro`. Each
row is the median wall time of --repeats fresh `python -c "import ..."` runs; the library rows
are cumulative (torch, then torch + dynamo, ...), so their differences are what each layer adds.
Prints the CPU and instruction sets; with --out writes result.json and run.json there.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

STAGES = ("prepare", "train", "prune", "quantize", "evaluate", "visualize", "export")
# Cumulative: what a training stage's imports are made of, layer by layer.
LAYERS = (
    ("torch", "import torch"),
    ("+ torch._dynamo (imported by torchvision.ops, which timm imports)", "import torch, torch._dynamo"),
    ("+ timm", "import torch, torch._dynamo, timm"),
    ("+ sklearn.metrics (scipy.stats)", "import torch, torch._dynamo, timm, sklearn.metrics"),
)


def wall_seconds(code: str, repeats: int) -> float:
    """Median wall time of `python -c code` in a fresh interpreter, from this folder."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    from kd_pipeline.evaluate.machine import cpu_info, describe

    result = {
        "repeats": args.repeats,
        "python": wall_seconds("pass", args.repeats),
        "layers": {name: wall_seconds(code, args.repeats) for name, code in LAYERS},
        "stages": {stage: wall_seconds(f"import stages.{stage}", args.repeats) for stage in STAGES},
    }
    machine = cpu_info()
    print(f"CPU: {describe(machine)}")
    print(f"python alone: {result['python']:.2f} s")
    for name, seconds in result["layers"].items():
        print(f"{name:70s} {seconds:6.2f} s")
    for stage, seconds in result["stages"].items():
        print(f"import stages.{stage:60s} {seconds:6.2f} s")
    per_run = sum(result["stages"][s] for s in STAGES) + 4 * result["stages"]["train"]  # train runs 5 times
    result["imports_per_repro_s"] = per_run
    print(f"imports of one `dvc repro` (11 stage processes, train 5 of them): {per_run:.0f} s")
    if args.out:
        from kd_pipeline.records.provenance import benchmark_record

        benchmark_record(args.out, "benchmarks/stage_startup.py", sys.argv[1:] if argv is None else argv, result)
    return result


if __name__ == "__main__":
    main()
