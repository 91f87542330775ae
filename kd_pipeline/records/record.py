"""Records behind README numbers: `python -m kd_pipeline.records.record NAME --command "..."`
(or `kd-record`).

A record is a finished run's small files, copied into `results/NAME/` (in git): its params,
`dvc.lock` (which code, params and data produced it), the evaluation and export metrics, the
report and model card, the seed aggregate when there is one, and `run.json` with the command
line and the machine. The README's result tables are generated from the records (`--readme`),
and `--check` fails when they disagree or a record is incomplete.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kd_pipeline.core.errors import PipelineError, exit_on_pipeline_error
from kd_pipeline.records.rerun import rerun, restart_under_kernels
from kd_pipeline.records.store import RESULTS, record, stale_records
from kd_pipeline.records.tables import GENERATED, readme_with_tables


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
        restart_under_kernels(RESULTS / args.name, "kd_pipeline.records.record", sys.argv[1:] if argv is None else argv)
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
                print(f"{page}: a generated table differs from {RESULTS}/; run kd-record --readme")
                differ.append(page)
            elif not args.check:
                page.write_text(current)
        return 1 if differ else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
