"""The tools that make, re-run and read the records in `results/`, one way down:

- `experiments` reads DVC experiments (and the detail files each holds);
- `seeds` aggregates and tests seeds, `pareto` picks from experiments: both read through `experiments`;
- `provenance` says where a record was made (commit, machine, versions, code md5s);
- `store` writes a record folder and says whether one is current;
- `rerun` reproduces a record in a clone (through `store`), `sweep` runs grids of them;
- `tables` renders the README's and docs/results.md's tables from the records;
- `record` is the command line (`kd-record`): record, `--rerun`, `--readme`, `--check`.

Each module imports only those above it in this list.
"""
