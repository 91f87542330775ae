"""Which of this CPU's kernels evaluate's outputs depend on, written where DVC can see it.

evaluate measures every variant on the CPU it runs on, and ONNX Runtime's int8 kernels compute
differently by instruction set: on AVX2 adjacent u8s8 products saturate in int16, with VNNI or AMX
they do not (docs/cpus.md); PyTorch's and oneDNN's float kernels round by the level they run at.
export re-checks evaluate's test predictions on its own CPU. With no dep that names the CPU, DVC
keeps a committed evaluate.json made on another CPU class whenever the models are byte-identical
(two CPUs held to AVX2 train the same ones), and export then fails on predictions this CPU never
made. The `cpu` stage runs on every `dvc repro` (always_changed) and writes this file; evaluate
depends on it, so it re-runs when the class changes and only then. The CPU's model name, clock and
core count stay out: they change timings, which evaluate.json records beside the machine, not
predictions.
"""

from __future__ import annotations

import os
from pathlib import Path

from kd_pipeline.core.files import write_json
from kd_pipeline.evaluate.machine import cpu_info


def kernel_class(info: dict[str, object], env: dict[str, str] | None = None) -> dict[str, object]:
    """The instruction sets and int8 path of `cpu_info()`, and the levels PyTorch and oneDNN are
    held to ("default": all the CPU has; a PyTorch limit at the CPU's own best level is no limit,
    so an AVX2 machine told `ATEN_CPU_CAPABILITY=avx2` does not re-run evaluate)."""
    env = os.environ if env is None else env
    isa = info["isa"] if isinstance(info["isa"], list) else []
    best = "AVX512" if "avx512f" in isa else "AVX2" if "avx2" in isa else "DEFAULT"
    aten = env.get("ATEN_CPU_CAPABILITY", "default").upper()
    return {"isa": info["isa"], "int8_kernels": info["int8_kernels"],
            "pytorch_kernels": "default" if aten in ("DEFAULT", best) else aten,
            "onednn_kernels": env.get("ONEDNN_MAX_CPU_ISA", "default")}


def write_kernel_class(path: Path) -> dict[str, object]:
    """This CPU's kernel class, written to `path` (rewritten byte for byte the same on the same class)."""
    found = kernel_class(cpu_info())
    write_json(path, found)
    return found
