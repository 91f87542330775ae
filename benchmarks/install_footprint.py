"""What `make` installs, in MB on disk, per direct dependency: `python benchmarks/install_footprint.py`.

Reads the installed environment (this interpreter's site-packages), so it measures what pip
really unpacked for the pinned locks. Each direct dependency of `pyproject.toml` gets the size
of its whole dependency closure and of the part only it pulls in (what dropping it would save).
The install time is dominated by unpacking these bytes: `time make setup` on a fresh clone
gives the wall time beside it (a pip cache makes the second clone's download free, not its unpacking).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata as md
import os
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def _requires(name: str, extras: tuple[str, ...]) -> list[tuple[str, tuple[str, ...]]]:
    """The installed distribution's own requirements that apply on this machine with `extras`."""
    try:
        dist = md.distribution(name)
    except md.PackageNotFoundError:
        return []
    found = []
    for line in dist.requires or []:
        req = Requirement(line)
        if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in ("", *extras)):
            found.append((canonicalize_name(req.name), tuple(req.extras)))
    return found


def closure(roots: list[str]) -> set[str]:
    """Every installed distribution that `roots` (requirement strings) pull in, themselves included."""
    seen: dict[str, set[str]] = {}
    stack = [(canonicalize_name(Requirement(r).name), tuple(Requirement(r).extras)) for r in roots]
    while stack:
        name, extras = stack.pop()
        if name in seen and set(extras) <= seen[name]:
            continue
        seen.setdefault(name, set()).update(extras)
        stack += _requires(name, extras)
    return set(seen)


def size_mb(name: str) -> float:
    """Bytes of a distribution's installed files (its RECORD), in MB."""
    try:
        files = md.distribution(name).files or []
    except md.PackageNotFoundError:
        return 0.0
    total = 0
    for file in files:
        with contextlib.suppress(OSError):  # a file RECORD lists that pip did not install
            total += os.path.getsize(file.locate())
    return total / 2**20


def footprint(project: dict) -> dict:
    """MB per direct runtime dependency (whole closure, and the part only it pulls in), the
    runtime total and what the test tools (the `dev` extra) add on top."""
    runtime = project["dependencies"]
    closures = {canonicalize_name(Requirement(r).name): closure([r]) for r in runtime}
    everything = set().union(*closures.values())
    sizes = {name: size_mb(name) for name in everything}
    per_dependency = {}
    for name, own in closures.items():
        others = set().union(*(c for n, c in closures.items() if n != name))
        per_dependency[name] = {"closure_mb": round(sum(sizes[n] for n in own), 1),
                                "only_it_mb": round(sum(sizes[n] for n in own - others), 1)}
    dev = closure(project["optional-dependencies"]["dev"]) - everything
    return {
        "runtime_packages": len(everything),
        "runtime_mb": round(sum(sizes.values()), 1),
        "largest_packages_mb": {n: round(s, 1) for n, s in sorted(sizes.items(), key=lambda x: -x[1])[:10]},
        "per_dependency": dict(sorted(per_dependency.items(), key=lambda x: -x[1]["closure_mb"])),
        "dev_packages": len(dev),
        "dev_mb": round(sum(size_mb(n) for n in dev), 1),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    result = footprint(project)
    print(f"runtime: {result['runtime_packages']} packages, {result['runtime_mb']:.0f} MB"
          f" (requirements.lock); test tools add {result['dev_packages']} packages, {result['dev_mb']:.0f} MB"
          " (requirements-dev.lock, `make test` only)")
    for name, mb in result["largest_packages_mb"].items():
        print(f"  {name:40s} {mb:8.1f} MB")
    print("per direct dependency: closure MB / MB only it pulls in")
    for name, row in result["per_dependency"].items():
        print(f"  {name:40s} {row['closure_mb']:8.1f} {row['only_it_mb']:8.1f}")
    if args.out:
        sys.path.insert(0, str(ROOT))
        from kd_pipeline.records.provenance import benchmark_record

        benchmark_record(args.out, "benchmarks/install_footprint.py", sys.argv[1:] if argv is None else argv, result)
    return result


if __name__ == "__main__":
    main()
