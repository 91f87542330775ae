"""The budgets a real dataset wants, as `dvc exp run -S` lines: one source for `make repro-full`,
for the tools that re-run a record at today's defaults (rerun, sweep), and for the docs.

`params.yaml` is a first look, sized for a 5-minute `make repro` on 2 AVX2 cores (digits at 16 px,
short budgets, results/first_run-*). Every record made before the first look trained with these.

    python -m kd_pipeline.budgets full      # prints the -S lines (the Makefile passes them on)
"""

from __future__ import annotations

import sys
from typing import Any

FULL: dict[str, Any] = {
    "data.image_size": 32,
    "teacher.train.epochs": 10,
    "assistant.train.epochs": 10,
    "train.epochs": 10,
    "train.batch_size": 64,
    "prune.epochs": 5,
}
BUDGETS = {"full": FULL}


def set_lines(name: str) -> list[str]:
    """The budget as `-S KEY=VALUE` arguments."""
    return [arg for key, value in BUDGETS[name].items() for arg in ("-S", f"{key}={value}")]


def apply(params: dict[str, Any], name: str) -> dict[str, Any]:
    """`params` (a parsed params.yaml) with the budget set, as `dvc exp run -S` would set it; a
    key params.yaml lacks is an error, as it is in DVC."""
    for key, value in BUDGETS[name].items():
        node = params
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        if leaf not in node:
            raise KeyError(f"budget {name}: {key} is not in params.yaml")
        node[leaf] = value
    return params


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0] not in BUDGETS:
        raise SystemExit(f"usage: python -m kd_pipeline.budgets {{{','.join(BUDGETS)}}}")
    print(" ".join(set_lines(argv[0])))


if __name__ == "__main__":
    main()
