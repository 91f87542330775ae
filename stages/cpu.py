"""Stage cpu: this CPU's kernel class, so evaluate re-runs on a CPU that computes int8 otherwise.

Runs on every `dvc repro` (always_changed in dvc.yaml) and costs no torch import; its output is
the only file it writes, and a dep of evaluate."""

import sys
from pathlib import Path

from kd_pipeline.core.errors import exit_on_pipeline_error
from kd_pipeline.core.stage_times import timed
from kd_pipeline.cpu.kernels import write_kernel_class


@timed("stages.cpu")
@exit_on_pipeline_error
def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m stages.cpu OUTPUT.json")
    found = write_kernel_class(Path(sys.argv[1]))
    print(f"cpu: int8 path {found['int8_kernels']}; PyTorch kernels {found['pytorch_kernels']},"
          f" oneDNN {found['onednn_kernels']}")


if __name__ == "__main__":
    main()
