"""Each stage's wall time from the last run, kept beside the pipeline, never inside its outputs.

A stage's main is wrapped by `timed`: on success it writes its command line and seconds to
`.timing/stages.json` (ignored by git and DVC, so no cached output holds a time). `python -m
kd_pipeline.core.stage_times` prints them per dvc.yaml stage, and a record's run.json copies them.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from kd_pipeline.core.files import atomic_file

T = TypeVar("T")
TIMES = Path(".timing") / "stages.json"


def timed(module: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Record `python -m <module> <args>`'s wall time when it returns without an error."""

    def wrap(main: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(main)
        def wrapper(*args: Any, **kwargs: Any) -> T:
            started = time.perf_counter()
            result = main(*args, **kwargs)
            command = " ".join(["python", "-m", module, *sys.argv[1:]])
            save(command, time.perf_counter() - started)
            return result

        return wrapper

    return wrap


def load(path: Path = TIMES) -> dict[str, float]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def save(command: str, seconds: float, path: Path = TIMES) -> None:
    times = {**load(path), command: round(seconds, 2)}
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(times, indent=2, sort_keys=True) + "\n")


def per_stage(dvc_yaml: Path = Path("dvc.yaml"), path: Path = TIMES) -> dict[str, float | None]:
    """Seconds of each dvc.yaml stage's last successful run here (None: not run here)."""
    times = load(path)
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    return {name: times.get(spec["cmd"]) for name, spec in stages.items()}


def main() -> None:
    found = per_stage()
    width = max(map(len, found))
    for name, seconds in found.items():
        print(f"{name:{width}}  {'not run here' if seconds is None else f'{seconds:8.1f} s'}")
    print(f"{'total':{width}}  {sum(s for s in found.values() if s):8.1f} s (stages run here, last time each)")


if __name__ == "__main__":
    main()
