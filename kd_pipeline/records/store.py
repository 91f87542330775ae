"""What a record holds and whether it is current: `record()` copies a finished run's small files
into `results/NAME/`; `freshness()` and `stale_records()` compare the code a record ran with
today's files (what `python -m kd_pipeline.records.record --check` lists).
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from kd_pipeline.core import paths
from kd_pipeline.core.errors import PipelineError
from kd_pipeline.core.files import atomic_dir, write_json
from kd_pipeline.core.params import read_yaml
from kd_pipeline.core.stage_times import TIMES, per_stage
from kd_pipeline.gate import stale_stages
from kd_pipeline.records.provenance import missing_field, provenance, run_json

RESULTS = paths.RESULTS
# (source in the workspace, name in the record, required)
FILES = (
    ("params.yaml", "params.yaml", True),
    ("dvc.lock", "dvc.lock", True),
    (str(paths.EVALUATION), "evaluate.json", True),
    (str(paths.SUMMARY), "summary.md", True),
    (str(paths.EXPORT_METRICS), "export.json", False),
    (str(paths.EXPORT / "MODEL_CARD.md"), "MODEL_CARD.md", False),
    (str(paths.SEEDS_METRICS), "seeds.json", False),
    (str(paths.SEEDS_REPORT), "seeds.md", False),
    (str(paths.PARETO_REPORT), "pareto.md", False),
    (str(paths.PARETO_PLOTS / "points.json"), "pareto_points.json", False),
    (str(paths.PARETO_PLOTS / "pareto.png"), "pareto.png", False),
    (str(paths.VISUALIZE_METRICS), "visualize.json", False),
    (str(paths.QUANTIZATION_REPORT), "quantization.md", False),
    (str(paths.VISUALIZE_PLOTS / "overview.png"), "maps_overview.png", False),
    (str(paths.VISUALIZE_PLOTS / "gradient_flow.png"), "gradient_flow.png", False),
    (str(paths.PLOTS / "tradeoff.png"), "tradeoff.png", False),
)


def record(name: str, command: str, root: Path = Path("."), results: Path = RESULTS,
           started: float | None = None) -> Path:
    """Copy the finished run in `root` into `results/name/`; refuse a run whose lock is stale.
    `started`: when the run began, where the caller knows it (a re-run); None when recorded after."""
    missing = [src for src, _, required in FILES if required and not (root / src).is_file()]
    if missing:
        raise PipelineError(f"no finished run to record: {', '.join(missing)} missing (run `dvc repro` first)")
    status = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], cwd=root, capture_output=True, text=True)
    # the gate's reading: an always-changed stage (cpu) re-runs by design and says nothing of the lock
    stale, _ = stale_stages(json.loads(status.stdout or "{}"), pulled=True) if status.returncode == 0 else ([], [])
    if stale:
        raise PipelineError(f"dvc.lock is stale for {', '.join(stale)}: rerun (`dvc repro`) before recording")
    target = root / results / name
    with atomic_dir(target) as tmp:
        for src, dst, _ in FILES:
            if (root / src).is_file():
                shutil.copy(root / src, tmp / dst)
        _drop_seeds_of_another_run(tmp, root)
        made = provenance(root)
        if made["dirty"]:
            print(f"warning: {root} has uncommitted code changes; run.json says dirty: true")
        seconds = per_stage(root / "dvc.yaml", root / TIMES)
        run = run_json(command, made, started, stage_seconds=seconds)
        stages = json.loads((tmp / "evaluate.json").read_text()).get("machine") or {}
        if stages.get("kernel_limits"):  # what the numbers ran under; this process may run under others
            run["machine"]["kernel_limits"] = stages["kernel_limits"]
        write_json(tmp / "run.json", run)
    return target


def seeds_aggregate_this_run(seeds: dict[str, Any], evaluation: dict[str, Any], seed: int) -> bool:
    """True when `seeds` (metrics/seeds.json) holds this run as its seed `seed`: the same test
    accuracy for every variant. A re-run with one seed leaves the repository's own seeds.json
    in place, which aggregates other runs."""
    own = (seeds.get("per_seed") or {}).get(str(seed))
    if not own:
        return False
    return all(own["variants"].get(name, {}).get("accuracy") == v.get("accuracy")
               for name, v in evaluation["variants"].items())


def _drop_seeds_of_another_run(record_dir: Path, root: Path) -> None:
    seeds_file = record_dir / "seeds.json"
    if not seeds_file.is_file():
        return
    evaluation = json.loads((record_dir / "evaluate.json").read_text())
    seed = read_yaml((root / "params.yaml").read_text())["train"]["seed"]
    if not seeds_aggregate_this_run(json.loads(seeds_file.read_text()), evaluation, seed):
        print(f"warning: {paths.SEEDS_METRICS} does not aggregate this run (seed {seed}); not recorded")
        seeds_file.unlink()
        (record_dir / "seeds.md").unlink(missing_ok=True)


def _stamp(path: Path) -> tuple[str, int, int] | None:
    """What the caches below key a file on: its path, modification time and size."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return str(path.resolve()), stat.st_mtime_ns, stat.st_size


@functools.lru_cache(maxsize=1024)
def _parsed_yaml(stamp: tuple[str, int, int]) -> Any:
    import yaml

    return yaml.load(Path(stamp[0]).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


@functools.lru_cache(maxsize=4096)
def _md5(stamp: tuple[str, int, int]) -> str:
    return hashlib.md5(Path(stamp[0]).read_bytes()).hexdigest()


def _yaml(path: Path) -> dict[str, Any]:
    """A dvc.lock or dvc.yaml, parsed once per version of the file: the tables ask every record's
    freshness once per row, and parsing each lock anew in pure-Python YAML was most of
    `record --check`'s time. Read-only: callers share the object."""
    stamp = _stamp(path)
    return (_parsed_yaml(stamp) if stamp else None) or {}


def freshness(folder: Path, root: Path = Path(".")) -> str:
    """Whether the code a record ran is today's: "current", or "stale: ..." when the code deps in
    its dvc.lock (library modules and stage scripts, by md5) differ from the files here or a stage
    now imports modules it did not; a benchmark's record compares the md5s its run.json lists."""
    run = json.loads((folder / "run.json").read_text()) if (folder / "run.json").is_file() else {}
    commit = run.get("code_commit", "")[:7] or "?"

    def changed(path: str, md5: str | None) -> bool:
        stamp = _stamp(root / path)
        return stamp is None or _md5(stamp) != md5

    if not (folder / "dvc.lock").is_file():
        if not run.get("code"):
            return "unknown: no dvc.lock and no code md5s in run.json"
        moved = sum(changed(path, md5) for path, md5 in run["code"].items())
        if moved:
            return f"stale: {moved} of {len(run['code'])} code files changed since {commit}"
        added = _stage_code_added(run["code"], root)
        if added:
            return f"stale: {len(added)} stage code files added since {commit} ({', '.join(added)})"
        return "current"
    recorded = _yaml(folder / "dvc.lock").get("stages", {})
    today = _yaml(root / "dvc.yaml").get("stages", {})
    stale = 0
    for stage, spec in recorded.items():
        code = {dep["path"]: dep.get("md5") for dep in spec.get("deps", []) if dep["path"].endswith(".py")}
        now = {str(dep) for dep in today.get(stage, {}).get("deps", []) if str(dep).endswith(".py")}
        stale += stage not in today or now != set(code) or any(changed(p, md5) for p, md5 in code.items())
    return "current" if not stale else f"stale: {stale} of {len(recorded)} stages changed since {commit}"


def _stage_code_added(code: dict[str, str], root: Path) -> list[str]:
    """The stage code today's dvc.yaml lists that a benchmark of the whole pipeline did not run: a
    stage added since (md5s alone cannot see a file the record never listed). A benchmark ran the
    whole pipeline when its code holds the first and the last stage's scripts (first_run,
    repro_check, the test suite)."""
    if not {"stages/prepare.py", "stages/export.py"} <= set(code):
        return []
    today = {str(dep) for spec in _yaml(root / "dvc.yaml").get("stages", {}).values()
             for dep in spec.get("deps", []) if str(dep).endswith(".py")}
    return sorted(today - set(code))


def incomplete(folder: Path) -> str | None:
    """What a record lacks to be cited (None: nothing): a complete run.json, and the metric its
    set decides by where it has an evaluation."""
    if not (folder / "run.json").is_file():
        return "no run.json"
    try:
        run = json.loads((folder / "run.json").read_text())
    except ValueError as err:
        return f"run.json is not JSON ({err})"
    if field := missing_field(run):
        return f"run.json has no {field}"
    if (folder / "evaluate.json").is_file() and not json.loads((folder / "evaluate.json").read_text()).get(
            "decision_metric"):
        return "evaluate.json has no decision_metric"
    return None


def stale_records(results: Path = RESULTS, root: Path = Path(".")) -> dict[str, str]:
    """Every record that cannot be cited as today's: incomplete, or its code not today's."""
    found = {}
    for folder in sorted(p for p in results.iterdir() if p.is_dir()):
        lacks = incomplete(folder)
        found[folder.name] = f"incomplete: {lacks}" if lacks else freshness(folder, root)
    return {name: state for name, state in found.items() if state != "current"}
