"""Where and from what a record was made: the commit, the machine (CPU, instruction sets, int8
kernels), library versions and, for a benchmark, the md5s of the code it ran. The bottom of
`kd_pipeline.records`: every tool that writes a record imports it, it imports none of them.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kd_pipeline.core.files import write_json
from kd_pipeline.evaluate.machine import cpu_info


def machine() -> dict[str, Any]:
    """CPU model, instruction sets, core count, threads and GPU: what timings (and int8 accuracy)
    in a record depend on."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    gpu = None
    if shutil.which("nvidia-smi"):
        proc = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                              capture_output=True, text=True)
        gpu = proc.stdout.strip().splitlines()[0] if proc.returncode == 0 and proc.stdout.strip() else None
    info = cpu_info()
    threads = {key: os.environ[key] for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if key in os.environ}
    return {"cpu": cpu, "isa": info["isa"], "int8_kernels": info["int8_kernels"],
            "kernel_limits": info.get("kernel_limits"), "cores": os.cpu_count(), "thread_settings": threads,
            "gpu": gpu}


def versions() -> dict[str, str]:
    """Python and every library pyproject.toml pins: what a record's numbers depend on."""
    import platform
    import tomllib
    from importlib.metadata import PackageNotFoundError, version

    pinned = ["torch", "onnxruntime", "onnx", "dvc", "timm", "numpy", "scipy", "scikit-learn", "torch-pruning"]
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    if pyproject.is_file():  # a source checkout: its pins; an installed wheel: the fixed list
        pinned = [re.split(r"[=<>\[ ]", line, maxsplit=1)[0]
                  for line in tomllib.loads(pyproject.read_text())["project"]["dependencies"]]
    found = {"python": platform.python_version()}
    for package in pinned:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def provenance(root: Path) -> dict[str, Any]:
    """From what a record was made: the commit, and whether the code (tracked Python files,
    dvc.yaml) held uncommitted changes: such a record says so, since it cannot be re-run exactly.
    params.yaml and the run's outputs are expected to differ from the commit."""
    dirty = bool(_git("-C", str(root), "status", "--porcelain", "--untracked-files=no", "--", "*.py", "dvc.yaml"))
    return {"code_commit": _git("-C", str(root), "rev-parse", "HEAD"), "dirty": dirty}


def stamp(when: float | None) -> str | None:
    """A UTC time as run.json writes it (None: not known, e.g. a run recorded after the fact)."""
    from datetime import UTC, datetime

    return None if when is None else datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_json(command: str, made: dict[str, Any], started: float | None, **extra: Any) -> dict[str, Any]:
    """Every record's run.json, one schema (RUN_FIELDS): the command, when it started and ended,
    the commit, the machine with its instruction sets and int8 kernels, and the library versions."""
    import time

    return {"command": command, "started": stamp(started), "ended": stamp(time.time()), **made,
            "machine": machine(), "versions": versions(), **extra}


# Fields every run.json must hold (dotted: nested); `ended` may be `date` in records made before it.
RUN_FIELDS = ("command", "ended", "code_commit", "dirty", "machine.cpu", "machine.isa", "machine.int8_kernels",
              "versions.torch")


def missing_field(run: dict[str, Any]) -> str | None:
    """The first field of RUN_FIELDS a run.json lacks (None: complete)."""
    for field in RUN_FIELDS:
        value: Any = run
        for key in field.split("."):
            value = value.get(key) if isinstance(value, dict) else None
        if field == "ended" and value is None:
            value = run.get("date")
        if value is None or value == "":
            return field
    return None


def code_md5s(extra: Iterable[Path] = (), root: Path = Path(".")) -> dict[str, str]:
    """md5 of every project file a benchmark ran: the modules it imported from this checkout
    (and `extra`, the code it ran in other processes), so `--check` can tell when it is stale."""
    import hashlib

    root = root.resolve()
    files = {Path(m.__file__).resolve() for m in list(sys.modules.values()) if getattr(m, "__file__", None)}
    files |= {Path(p).resolve() for p in extra}
    inside = sorted(f.relative_to(root) for f in files
                    if f.is_relative_to(root) and ".venv" not in f.parts and f.suffix == ".py" and f.is_file())
    return {str(f): hashlib.md5((root / f).read_bytes()).hexdigest() for f in inside}


def _git(*args: str) -> str:
    proc = subprocess.run(["git", *args], capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else ""


def pipeline_code(dvc_yaml: Path = Path("dvc.yaml")) -> list[Path]:
    """Every Python file a dvc.yaml stage depends on: the code a benchmark that runs the whole
    pipeline in other processes (`make repro`) ran."""
    import yaml

    stages = yaml.safe_load(dvc_yaml.read_text())["stages"].values()
    return sorted({Path(str(dep)) for spec in stages for dep in spec.get("deps", []) if str(dep).endswith(".py")})


def benchmark_record(out: Path, script: str, args: list[str], result: dict[str, Any],
                     code: Iterable[Path] = ()) -> None:
    """A benchmark's numbers as `out/result.json`, and `out/run.json` (run_json's schema, started
    when the benchmark's process did) with the md5s of the code it ran: the record a README or note
    number cites, and what `record --check` compares with today's files."""
    import psutil

    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "result.json", result)
    write_json(out / "run.json", run_json(" ".join(["python", script, *args]), provenance(Path(".")),
                                          psutil.Process().create_time(), code=code_md5s([Path(script), *code])))
