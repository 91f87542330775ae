"""Records behind README numbers: `python -m kd_pipeline.record NAME --command "..."`.

A record is a finished run's small files, copied into `results/NAME/` (in git): its params,
`dvc.lock` (which code, params and data produced it), the evaluation and export metrics, the
report and model card, the seed aggregate when there is one, and `run.json` with the command
line and the machine. The README's result tables are generated from the records
(`python -m kd_pipeline.record --readme`), and a test fails when they disagree.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kd_pipeline.core import paths
from kd_pipeline.core.errors import PipelineError, exit_on_pipeline_error
from kd_pipeline.core.files import atomic_dir, write_json
from kd_pipeline.core.params import read_yaml
from kd_pipeline.core.stage_times import TIMES, per_stage
from kd_pipeline.evaluate.machine import cpu_info

RESULTS = paths.RESULTS
README = Path("README.md")
# Every file with generated blocks: the README's first page and the results in full.
GENERATED = (README, Path("docs/results.md"))
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
# A generated block: <!-- table: records --> or <!-- table: variants NAME -->, then <!-- /table -->.
BLOCK = re.compile(r"(<!-- table: (\w+)(?: (\S+))? -->\n).*?(<!-- /table -->)", re.DOTALL)


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
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
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


def record(name: str, command: str, root: Path = Path("."), results: Path = RESULTS,
           started: float | None = None) -> Path:
    """Copy the finished run in `root` into `results/name/`; refuse a run whose lock is stale.
    `started`: when the run began, where the caller knows it (a re-run); None when recorded after."""
    missing = [src for src, _, required in FILES if required and not (root / src).is_file()]
    if missing:
        raise PipelineError(f"no finished run to record: {', '.join(missing)} missing (run `dvc repro` first)")
    status = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], cwd=root, capture_output=True, text=True)
    if status.returncode == 0 and json.loads(status.stdout or "{}"):
        stale = ", ".join(json.loads(status.stdout))
        raise PipelineError(f"dvc.lock is stale for {stale}: rerun (`dvc repro`) before recording")
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
        write_json(tmp / "run.json", run_json(command, made, started, stage_seconds=seconds))
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


def _cell(stats: dict[str, Any] | None, single: float | None, signed: bool = False) -> str:
    if stats:
        fmt = "+.3f" if signed else ".3f"
        return f"{stats['mean']:{fmt}} ± {stats['std']:.3f}"
    return "–" if single is None else f"{single:{'+.3f' if signed else '.3f'}}"


def dataset_label(params: dict[str, Any]) -> str:
    data = params["data"]
    name = data["subset"] if data["name"] == "medmnist" else data["name"]
    if data["name"] == "imagefolder" and data.get("root"):
        name = f"{name} {Path(data['root']).name}"
    return f"{name} ({data['image_size']} px)"


def epochs_label(params: dict[str, Any]) -> str:
    """Training epochs of teacher / assistant / student: the budget a row was trained with."""
    shared = params["train"]["epochs"]
    return "/".join(str((params[role].get("train") or {}).get("epochs", shared))
                    for role in ("teacher", "assistant", "student"))


def freshness(folder: Path, root: Path = Path(".")) -> str:
    """Whether the code a record ran is today's: "current", or "stale: ..." when the code deps in
    its dvc.lock (library modules and stage scripts, by md5) differ from the files here or a stage
    now imports modules it did not; a benchmark's record compares the md5s its run.json lists."""
    import hashlib

    import yaml

    run = json.loads((folder / "run.json").read_text()) if (folder / "run.json").is_file() else {}
    commit = run.get("code_commit", "")[:7] or "?"

    def changed(path: str, md5: str | None) -> bool:
        return not (root / path).is_file() or hashlib.md5((root / path).read_bytes()).hexdigest() != md5

    if not (folder / "dvc.lock").is_file():
        if not run.get("code"):
            return "unknown: no dvc.lock and no code md5s in run.json"
        moved = sum(changed(path, md5) for path, md5 in run["code"].items())
        return "current" if not moved else f"stale: {moved} of {len(run['code'])} code files changed since {commit}"
    recorded = yaml.safe_load((folder / "dvc.lock").read_text()).get("stages", {})
    today = yaml.safe_load((root / "dvc.yaml").read_text()).get("stages", {})
    stale = 0
    for stage, spec in recorded.items():
        code = {dep["path"]: dep.get("md5") for dep in spec.get("deps", []) if dep["path"].endswith(".py")}
        now = {str(dep) for dep in today.get(stage, {}).get("deps", []) if str(dep).endswith(".py")}
        stale += stage not in today or now != set(code) or any(changed(p, md5) for p, md5 in code.items())
    return "current" if not stale else f"stale: {stale} of {len(recorded)} stages changed since {commit}"


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


def records_table(results: Path = RESULTS) -> str:
    """One row per record: float models and gains (mean ± sd over seeds when aggregated),
    and the deployed variant of the recorded run."""
    head = ("| record | data | epochs T/A/S | seeds | teacher | assistant | student | direct | baseline"
            " | distillation gain | assistant gain | deployed | accuracy | size | meets targets"
            " | within a point of the best small model | code |")
    rows = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for folder in sorted(p for p in results.iterdir() if (p / "evaluate.json").is_file()):
        evaluation = json.loads((folder / "evaluate.json").read_text())
        params = read_yaml((folder / "params.yaml").read_text())
        seeds = json.loads((folder / "seeds.json").read_text()) if (folder / "seeds.json").is_file() else {}
        variants, spread = evaluation["variants"], seeds.get("variants", {})
        cells = [_cell(spread.get(v, {}).get("accuracy"), variants.get(v, {}).get("accuracy"))
                 for v in ("teacher", "assistant", "student", "direct", "baseline")]
        for gain in ("distillation_gain", "assistant_gain"):
            cells.append(_cell(seeds.get("gains", {}).get(gain, {}).get("accuracy"),
                               (evaluation.get(gain) or {}).get("accuracy"), signed=True))
        deployed = evaluation.get("deployed")
        shipped = variants.get(deployed, {})
        meets = str(evaluation.get("targets_passed")).lower()
        kept = seeds.get("shipped") or {}
        within = f"{sum(s['within_one_point'] for s in kept.values())}/{len(kept)} seeds" if kept else "–"
        rows.append(
            f"| {folder.name} | {dataset_label(params)} | {epochs_label(params)}"
            f" | {len(seeds.get('seeds', [])) or 1} | " + " | ".join(cells)
            + f" | {deployed} | {shipped.get('accuracy', 0):.3f} | {shipped.get('size_mb', 0):.2f} MB | {meets}"
            f" | {within} | {freshness(folder)} |"
        )
    return "\n".join(rows)


# The paired comparisons a seed-aggregated record answers: (arm, control, what it asks).
COMPARISONS = (("student", "baseline", "KD through the assistant − no KD"),
               ("direct", "baseline", "KD from the teacher − no KD"),
               ("student", "direct", "what the assistant adds"))


def gains_table(results: Path = RESULTS) -> str:
    """Every seed-aggregated record's paired gains, in test accuracy and in the metric its set
    decides by (losses as plainly as gains), recomputed from the per-seed numbers; each column is
    one family of comparisons, "measurable" only after Holm's correction over the whole table."""
    from kd_pipeline.seeds import holm_column, paired

    rows, cells = [], []
    for folder in sorted(p for p in results.iterdir() if (p / "seeds.json").is_file()):
        seeds = json.loads((folder / "seeds.json").read_text())
        metric = json.loads((folder / "evaluate.json").read_text())["decision_metric"]
        per_seed = [run["variants"] for run in seeds["per_seed"].values()]
        params = read_yaml((folder / "params.yaml").read_text())
        for arm, control, asks in COMPARISONS:
            pairs = [v for v in per_seed if arm in v and control in v]
            if len(pairs) < 2:
                continue
            rows.append((folder, dataset_label(params), len(pairs), metric, asks))
            cells.append([paired([v[arm][m] - v[control][m] for v in pairs]) for m in ("accuracy", metric)])
    columns = [holm_column([c[k] for c in cells]) for k in (0, 1)] if cells else [[], []]
    lines = ["| record | data | seeds | decides by | comparison | − test accuracy | − test, decision metric | code |",
             "|---|---|---|---|---|---|---|---|"]
    for (folder, data, n, metric, asks), accuracy, decided in zip(rows, *columns, strict=True):
        lines.append(f"| {folder.name} | {data} | {n} | {metric.replace('_', ' ')} | {asks} | {accuracy}"
                     f" | {decided} | {freshness(folder)} |")
    return "\n".join(lines)


RUNTIME = {"onnx": "ONNX Runtime fp32", "int8": "ONNX Runtime int8"}
LABEL = {"student": "via the assistant", "direct": "from the teacher", "baseline": "no KD"}


def variants_table(folder: Path) -> str:
    """Every variant of one record, as evaluate measured it (deployed in bold)."""
    evaluation = json.loads((folder / "evaluate.json").read_text())
    params = read_yaml((folder / "params.yaml").read_text())
    rows = ["| variant | runtime | test accuracy | macro F1 | parameters | MMACs | size | latency b1"
            " | × faster, same runtime | × faster than eager teacher | × smaller |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, m in evaluation["variants"].items():
        role = {"direct": "student", "baseline": "student"}.get(name, name)
        label = f"{name} ({params[role]['model']}, {LABEL[name]})" if name in LABEL else name
        if role in ("teacher", "assistant"):
            label = f"{name} ({params[role]['model']})"
        if name == "teacher_onnx":
            label = "teacher_onnx (the same-runtime reference)"
        runtime = RUNTIME.get(name.rsplit("_", 1)[-1], "PyTorch fp32")
        cells = [f"{m['accuracy']:.4f}", f"{m['f1']:.4f}", f"{m['parameters'] / 1e6:.2f} M", f"{m['macs'] / 1e6:.1f}",
                 f"{m['size_mb']:.2f} MB", f"{m['latency_ms']:.2f} ms",
                 f"{m['latency_ratio_same_runtime']:.1f}" if "latency_ratio_same_runtime" in m else "–",
                 f"{m['latency_ratio_vs_teacher']:.1f}",
                 f"{m['size_ratio_vs_teacher']:.1f}"]
        if name == evaluation.get("deployed"):
            label, cells = f"**{label} (deployed)**", [f"**{c}**" for c in cells]
        rows.append(f"| {label} | {runtime} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def headline_table(folder: Path) -> str:
    """The README's three rows: the teacher, the small float model compression started from, and
    what ships, in test accuracy and the set's decision metric, size, latency and the ratios."""
    evaluation = json.loads((folder / "evaluate.json").read_text())
    params = read_yaml((folder / "params.yaml").read_text())
    metric = evaluation["decision_metric"]
    variants, deployed, reference = evaluation["variants"], evaluation.get("deployed"), evaluation["reference"]
    extra = "" if metric == "accuracy" else f" | test {metric.replace('_', ' ')}"
    rows = [f"| | model | runtime | test accuracy{extra} | size | latency b1 | × faster than the teacher, same runtime"
            " | × smaller |",
            "|---|---|---|---|---|---|---|---|" + ("---|" if extra else "")]
    for label, name in (("teacher", "teacher"), ("compressed from", reference), ("deployed", deployed)):
        if name not in variants:
            continue
        m = variants[name]
        base = name.split("_")[0]
        role = base if base in ("teacher", "assistant") else "student"  # pruned: from a student-sized model
        model = params[role]["model"]
        model += ", pruned" if base == "pruned" else ""
        scores = f"{m['accuracy']:.4f}" + (f" | {m[metric]:.4f}" if extra else "")
        faster = f"{m['latency_ratio_same_runtime']:.1f}" if "latency_ratio_same_runtime" in m else "–"
        rows.append(f"| {label} | {name} ({model}) | {RUNTIME.get(name.rsplit('_', 1)[-1], 'PyTorch fp32')}"
                    f" | {scores} | {m['size_mb']:.2f} MB | {m['latency_ms']:.2f} ms"
                    f" | {faster} | {m['size_ratio_vs_teacher']:.1f} |")
    return "\n".join(rows)


def render(kind: str, arg: str | None, results: Path = RESULTS) -> str:
    if kind == "headline" and arg and (results / arg / "evaluate.json").is_file():
        return headline_table(results / arg)
    if kind == "records":
        return records_table(results)
    if kind == "gains":
        return gains_table(results)
    if kind == "variants" and arg and (results / arg / "evaluate.json").is_file():
        return variants_table(results / arg)
    if kind == "sweep" and arg and (results / arg / "sweep.json").is_file():
        from kd_pipeline.sweep import sweep_table

        return sweep_table(results / arg)
    raise PipelineError(f"README table {kind!r} {arg or ''}: unknown kind or no record {results / (arg or '')}")


def readme_with_tables(text: str, results: Path = RESULTS, source: Path = README) -> str:
    """A page (the README, docs/results.md) with every generated block re-rendered from the records."""
    if not BLOCK.search(text):
        raise PipelineError(f"{source}: no <!-- table: ... --> block found")
    return BLOCK.sub(lambda m: f"{m.group(1)}{render(m.group(2), m.group(3), results)}\n{m.group(4)}", text)


@exit_on_pipeline_error
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Record a finished run, or regenerate the README's table.")
    parser.add_argument("name", nargs="?", help="record folder under results/")
    parser.add_argument("--command", help="the command line that produced the run (required with NAME)")
    parser.add_argument("--rerun", action="store_true",
                        help="reproduce record NAME at HEAD from its own params and seeds, and replace it")
    parser.add_argument("--today-defaults", action="store_true",
                        help="with --rerun: today's params.yaml with only the record's data group and first seed")
    parser.add_argument("--seeds", type=int, help="with --rerun: how many training seeds (default: the record's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="settings",
                        help="with --rerun: one param on top of the recipe (repeatable), e.g. train.epochs=1")
    parser.add_argument("--readme", action="store_true",
                        help="rewrite the generated tables (README.md, docs/results.md) from results/")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when a generated table is not current or a record is incomplete;"
                             " list every record that is not current")
    args = parser.parse_args(argv)
    if args.name and args.rerun:
        from kd_pipeline.rerun import rerun

        done = rerun(args.name, today_defaults=args.today_defaults, seeds=args.seeds, settings=args.settings)
        print(f"re-ran {done}")
    elif args.name:
        if not args.command:
            raise PipelineError("--command is required: the command line that produced this run")
        print(f"recorded {record(args.name, args.command)}")
    if args.readme or args.check:
        differ: list[Path | str] = []
        if args.check:
            for name, state in stale_records().items():
                print(f"{RESULTS / name}: {state}")
                if state.startswith("incomplete"):
                    differ.append(name)
        for page in GENERATED:
            text = page.read_text()
            current = readme_with_tables(text, source=page)
            if args.check and current != text:
                print(f"{page}: a generated table differs from {RESULTS}/; run python -m kd_pipeline.record --readme")
                differ.append(page)
            elif not args.check:
                page.write_text(current)
        return 1 if differ else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
