"""A record re-run at today's code: `python -m kd_pipeline.records.record NAME --rerun`.

A record's params.yaml is its whole recipe (dvc.yaml and the code are today's), and its
seeds.json names the training seeds it aggregated. In a temporary clone of HEAD (committed code
only, sharing this repository's DVC cache), those params are written, `dvc repro` runs the first
seed, every further seed runs as a queued experiment, `kd_pipeline.records.seeds` aggregates them, and
the record is replaced by the new run (a failure keeps the clone and names it). A record made
before a params key was retired is re-run with `--today-defaults`: today's params.yaml at the
full budget (kd_pipeline.budgets) with only the record's `data` group and first seed, which is
the recipe "this dataset at the defaults of that moment"; `--seeds N` sets how many
training seeds it aggregates, and `--set KEY=VALUE` (repeatable) changes one param on top, for a
recipe that is today's defaults plus a budget (CIFAR-10 at one epoch). Everything that can make
it fail is checked before any work: a record that cannot be reproduced (unknown name, params
today's code refuses, a data root that is not there, uncommitted code) says why in one line and
stays as it was. A record whose stages ran with PyTorch's or oneDNN's kernels held to a lower
instruction set (`ATEN_CPU_CAPABILITY`, `ONEDNN_MAX_CPU_ISA`) is re-run under the same limits
(`held_kernels`; `record --rerun` re-starts itself with them), and the command it records says so.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from tqdm import tqdm

from kd_pipeline import budgets
from kd_pipeline.core import paths
from kd_pipeline.core.errors import ParamsError, PipelineError
from kd_pipeline.core.params import parse_params, read_yaml
from kd_pipeline.records.provenance import provenance
from kd_pipeline.records.store import record

KERNEL_ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")  # what holds PyTorch's and oneDNN's kernels


@dataclass(frozen=True)
class Recipe:
    """What a record ran: its params (data root made absolute) and its training seeds, first the
    workspace's."""

    params: dict[str, Any]
    seeds: list[int]


def nested_set(params: dict[str, Any], key: str, value: str) -> None:
    """`a.b.c=value` into nested params, the value read as YAML (true, 3, 0.5, kd)."""
    *parents, leaf = key.split(".")
    node = params
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = yaml.safe_load(value)


def apply_settings(params: dict[str, Any], settings: Sequence[str], flag: str) -> None:
    """Each `KEY=VALUE` of `settings` into `params`; `flag` names the option in the error."""
    for line in settings:
        key, sep, value = line.partition("=")
        if not sep or not key:
            raise PipelineError(f"{flag} {line}: expected KEY=VALUE")
        nested_set(params, key, value)


def recipe(name: str, results: Path = paths.RESULTS, repo: Path = Path("."), today_defaults: bool = False,
           seeds: int | None = None, settings: Sequence[str] = ()) -> Recipe:
    """The record's params and seeds, checked against today's code and this machine's files.

    With `today_defaults`, the params are `repo`'s params.yaml at the full budget (kd_pipeline.budgets:
    params.yaml itself is a first look) with the record's `data` group and first training seed;
    `settings` (KEY=VALUE) are applied on top before the check; `seeds` (when given) is
    how many seeds to run, the record's first and then the smallest others."""
    folder = results / name
    if not (folder / "params.yaml").is_file():
        raise PipelineError(f"{folder}: no such record (no params.yaml)")
    raw = read_yaml((folder / "params.yaml").read_text())
    if today_defaults:
        today = budgets.apply(read_yaml((repo / "params.yaml").read_text()), "full")
        today["data"] = {**today["data"], **raw.get("data", {})}
        today["train"]["seed"] = raw.get("train", {}).get("seed", today["train"]["seed"])
        raw = today
    apply_settings(raw, settings, "--set")
    try:
        parsed = parse_params(raw, source=f"{folder}/params.yaml")
    except ParamsError as err:
        hint = "" if today_defaults else "; --today-defaults re-runs its data at today's default params"
        raise PipelineError(f"cannot re-run {name}: today's code refuses its params ({err}){hint}") from None
    root = parsed.data.root
    if root is not None:
        found = Path(root) if Path(root).is_absolute() else (repo / root).resolve()
        if not found.exists():
            raise PipelineError(f"cannot re-run {name}: its data.root {root} is not on this machine"
                                f" (put the data there, or record a new run)")
        raw["data"]["root"] = str(found)
    first = parsed.train.seed
    found_seeds = [first]
    if (folder / "seeds.json").is_file():
        found_seeds += [s for s in json.loads((folder / "seeds.json").read_text())["seeds"] if s != first]
    if seeds is not None:
        if seeds < 1:
            raise PipelineError(f"--seeds {seeds}: at least 1")
        found_seeds = [first, *(s for s in range(seeds + 1) if s != first)][:seeds]
    return Recipe(raw, found_seeds)


def held_kernels(folder: Path) -> dict[str, str] | None:
    """The environment that holds the kernels where the record's stages held them ({}: they ran
    at the CPU's best; None: the record does not say). On the same CPU, other kernels round
    otherwise and can land a model elsewhere: digits-qat's int8 file crossed its accuracy budget
    when re-run without its record's AVX2 limits. Read from the stages' own evaluate.json first,
    since the process that wrote run.json may have run under other limits."""
    for source in ("evaluate.json", "run.json"):
        machine = json.loads((folder / source).read_text()).get("machine") if (folder / source).is_file() else None
        limits = (machine or {}).get("kernel_limits")
        if limits:
            env = {}
            if str(limits.get("pytorch", "")).upper() == "AVX2" and "avx512f" in (machine.get("isa") or []):
                env["ATEN_CPU_CAPABILITY"] = "avx2"  # below what the CPU had: held, not native
            if limits.get("onednn", "default") != "default":
                env["ONEDNN_MAX_CPU_ISA"] = limits["onednn"]
            return env
    return None


def restart_under_kernels(folder: Path, module: str, argv: list[str]) -> None:
    """Re-start `python -m MODULE ARGV` under the kernel limits the record in `folder` ran with,
    when they differ from this process's (torch reads ATEN_CPU_CAPABILITY once, at import)."""
    held = held_kernels(folder)
    if held is None or all(os.environ.get(key) == held.get(key) for key in KERNEL_ENV):
        return
    env = {key: value for key, value in os.environ.items() if key not in KERNEL_ENV} | held
    print(f"{folder.name} ran with kernel limits {held or 'none'}: re-running under the same", flush=True)
    os.execve(sys.executable, [sys.executable, "-m", module, *argv], env)


def kernel_prefix() -> str:
    """This process's kernel limits as a command-line prefix ("" when none are set)."""
    return "".join(f"{key}={os.environ[key]} " for key in KERNEL_ENV if key in os.environ)


def _env(cwd: Path) -> dict[str, str]:
    """The clone's code, with this environment's packages and programs."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(cwd)}


def run_in(cmd: list[str], cwd: Path, quiet: bool = False) -> str:
    """Run a command of the pipeline's own environment; its output goes to the terminal too
    (unless `quiet`)."""
    proc = subprocess.run(cmd, cwd=cwd, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_env(cwd))
    if not quiet:
        print(proc.stdout, end="", flush=True)
    if proc.returncode != 0:
        last = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
        raise PipelineError(f"{' '.join(cmd)} failed in {cwd}: {last}")
    return proc.stdout


def _seeds(clone: Path, seeds: list[int]) -> None:
    """Every further seed as a queued experiment, one at a time; then the aggregate."""
    run_in([sys.executable, "-m", "dvc", "exp", "run", "--queue", "-S",
          "train.seed=" + ",".join(map(str, seeds))], clone)
    run_queue(clone)
    run_in([sys.executable, "-m", "kd_pipeline.records.seeds"], clone)


def queue_counts(status: str) -> Counter[str]:
    """`dvc queue status`'s experiments by state (Queued, Running, Success, Failed)."""
    return Counter(re.findall(r"^\S+\s+\S.*?\s(Queued|Running|Success|Failed)\s*$", status, re.MULTILINE))


def run_queue(clone: Path, poll_s: float = 20.0) -> None:
    """Run the queued experiments one at a time, wait for the last, and fail on a failed one;
    a progress bar counts finished experiments, with the ETA their pace gives.

    `dvc queue start`'s output goes to a file, not a pipe: the worker it starts keeps that output
    open, so a captured start would return only when the worker exits, after the last experiment,
    and the bar would jump from 0 to the end."""
    log = clone / ".dvc" / "tmp" / "queue-start.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        started = subprocess.run([sys.executable, "-m", "dvc", "queue", "start", "-j", "1"], cwd=clone,
                                 stdout=out, stderr=subprocess.STDOUT, env=_env(clone))
    if started.returncode != 0:
        last = (log.read_text().strip().splitlines() or ["(no output)"])[-1]
        raise PipelineError(f"dvc queue start failed in {clone}: {last}")
    with tqdm(desc="experiments", unit="exp", dynamic_ncols=True, file=sys.stdout) as bar:
        while True:
            status = run_in([sys.executable, "-m", "dvc", "queue", "status"], clone, quiet=True)
            counts = queue_counts(status)
            bar.total = sum(counts.values()) or None
            bar.update(counts["Success"] + counts["Failed"] - bar.n)
            bar.set_postfix(failed=counts["Failed"], refresh=True)
            if "Queued" not in status and "Running" not in status:
                break
            time.sleep(poll_s)
    # The worker outlives its last task and still writes under .dvc/tmp: stop it before the
    # clone is removed (a removal racing it once failed after the record was written).
    run_in([sys.executable, "-m", "dvc", "queue", "stop"], clone)
    for _ in range(30):
        if "0 active, 0 idle" in run_in([sys.executable, "-m", "dvc", "queue", "status"], clone):
            break
        time.sleep(2)
    if "Failed" in status:
        raise PipelineError(f"an experiment failed in {clone}: see `dvc queue logs` there")


@contextlib.contextmanager
def kept_on_failure(prefix: str, repo: Path) -> Iterator[Path]:
    """A temporary clone of `repo` at HEAD, removed once the run is recorded; a failure keeps it,
    named in its one-line error, since a re-run or a sweep may have trained for hours there and the
    errors point into it (`dvc queue logs`). A clone that fails leaves nothing behind."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    clone = tmp / "clone"
    cloned = subprocess.run(["git", "clone", "-q", str(repo), str(clone)], capture_output=True, text=True)
    if cloned.returncode:
        shutil.rmtree(tmp, ignore_errors=True)
        reason = (cloned.stderr.strip().splitlines() or [f"exit {cloned.returncode}"])[-1]
        raise PipelineError(f"could not clone {repo} to run in: {reason}")
    try:
        yield clone
    except PipelineError as err:
        raise PipelineError(f"{err} (the run is kept in {clone})") from err
    shutil.rmtree(tmp, ignore_errors=True)


def rerun(name: str, results: Path = paths.RESULTS, repo: Path = Path("."), today_defaults: bool = False,
          seeds: int | None = None, settings: Sequence[str] = ()) -> Path:
    """Reproduce record `name` at HEAD and replace it; returns the record's folder. A failure keeps
    the clone (named in its error): its training is in the shared run cache, its evaluation is not."""
    plan = recipe(name, results, repo, today_defaults, seeds, settings)
    made = provenance(repo)
    if made["dirty"]:  # the clone runs HEAD, and the record must say what ran
        raise PipelineError("uncommitted code changes: commit them first (a re-run runs HEAD)")
    commit = made["code_commit"]
    repo = repo.resolve()
    with kept_on_failure(f"kd-rerun-{name}-", repo) as clone:
        run_in([sys.executable, "-m", "dvc", "cache", "dir", "--local", str(repo / ".dvc" / "cache")], clone)
        (clone / "params.yaml").write_text(yaml.safe_dump(plan.params, sort_keys=False))
        started = time.time()
        run_in([sys.executable, "-m", "dvc", "repro"], clone)
        if len(plan.seeds) > 1:
            _seeds(clone, plan.seeds[1:])
        flags = ((" --today-defaults" if today_defaults else "") + (f" --seeds {seeds}" if seeds else "")
                 + "".join(f" --set {shlex.quote(line)}" for line in settings))
        recipe_text = ("today's params.yaml with the record's data group and first seed" if today_defaults
                       else "the record's params.yaml") + (", the --set values on top" if settings else "")
        command = (f"{kernel_prefix()}python -m kd_pipeline.records.record {name} --rerun{flags}: at {commit[:7]},"
                   f" {recipe_text} in a clone, dvc repro, then seeds {plan.seeds[1:] or 'none'} as queued"
                   f" experiments and python -m kd_pipeline.records.seeds ({time.time() - started:.0f} s wall in all)")
        return record(name, command, root=clone, results=(repo / results).resolve(), started=started)
