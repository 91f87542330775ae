"""The CPU a number was measured on: its model and the instruction sets int8 speed depends on.

ONNX Runtime's int8 kernels are several times faster with VNNI (AVX-512 VNNI, AVX-VNNI) or AMX
than with AVX2 alone, where u8s8 products can also saturate; so every latency and every int8
accuracy is recorded beside the flags of the machine that produced it. What cannot be read is
recorded as unknown, never guessed.

PyTorch's and oneDNN's kernels can be held below what the CPU has (`ATEN_CPU_CAPABILITY=avx2`,
`ONEDNN_MAX_CPU_ISA=AVX2`: see docs/cpus.md), so an AVX-512 machine runs training and eager
inference as an AVX2 one does; the limits in force are recorded beside the flags. ONNX Runtime's
int8 kernels cannot be limited that way: their AVX2 arithmetic is emulated
(kd_pipeline.quantize.avx2_arithmetic), their AVX2 speed is measured only on an AVX2 machine.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

# The flags that decide which int8 / fp32 kernels run (x86 names as in /proc/cpuinfo; ARM:
# asimddp is the dot-product extension, i8mm the int8 matrix multiply).
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8",
             "asimd", "asimddp", "i8mm", "sve")


def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, object]:
    """{'model', 'arch', 'isa': [the ISA_FLAGS present], 'int8_kernels'}; unknown where unreadable."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return {"model": "unknown", "arch": platform.machine() or "unknown", "isa": "unknown",
                "int8_kernels": "unknown"}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    model = fields.get("model name") or fields.get("Hardware") or fields.get("CPU part") or "unknown"
    isa: list[str] | str = [flag for flag in ISA_FLAGS if flag in flags] if flags else "unknown"
    return {"model": model, "arch": platform.machine() or "unknown", "isa": isa, "int8_kernels": _int8_kernels(isa),
            "kernel_limits": kernel_limits()}


def kernel_limits() -> dict[str, str]:
    """The instruction-set ceilings PyTorch and oneDNN run under here (`default`: all the CPU has).
    PyTorch's own dispatch level is read from torch when it is already imported."""
    aten = os.environ.get("ATEN_CPU_CAPABILITY", "default")
    if "torch" in sys.modules:
        aten = sys.modules["torch"].backends.cpu.get_cpu_capability()
    return {"pytorch": aten, "onednn": os.environ.get("ONEDNN_MAX_CPU_ISA", "default"),
            "onnxruntime_int8": "not limitable (AVX2 arithmetic emulated in quantize and evaluate)"}


def _int8_kernels(isa: list[str] | str) -> str:
    """Which int8 dot-product path the flags allow, as ONNX Runtime's MLAS picks it."""
    if isa == "unknown":
        return "unknown"
    for flag, name in (("amx_int8", "AMX"), ("avx512_vnni", "AVX-512 VNNI"), ("avx_vnni", "AVX-VNNI"),
                       ("avx512f", "AVX-512 (no VNNI)"), ("avx2", "AVX2 (no VNNI: u8s8 may saturate)"),
                       ("i8mm", "ARM i8mm"), ("asimddp", "ARM dot product")):
        if flag in isa:
            return name
    return "none known"


def describe(info: dict[str, object]) -> str:
    """One line: model, architecture and instruction sets."""
    isa = info["isa"] if isinstance(info["isa"], str) else " ".join(info["isa"]) or "none listed"
    limits = info.get("kernel_limits") or {}
    held = [f"{name} {level}" for name, level in (("PyTorch", limits.get("pytorch")), ("oneDNN", limits.get("onednn")))
            if level and level != "default" and level.upper() != _highest(info)]
    return (f"{info['model']} ({info['arch']}; {isa}; int8 path {info['int8_kernels']}"
            + (f"; kernels held to {', '.join(held)}" if held else "") + ")")


def _highest(info: dict[str, object]) -> str:
    """PyTorch's name for the best vector level the flags allow (what `default` dispatches to)."""
    isa = info["isa"] if isinstance(info["isa"], list) else []
    return "AVX512" if "avx512f" in isa else "AVX2" if "avx2" in isa else "DEFAULT"
