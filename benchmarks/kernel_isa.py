"""Which vector kernels PyTorch and oneDNN run here, as the CPU allows and held to AVX2.

    python benchmarks/kernel_isa.py

Runs one fp32 convolution in a fresh process per setting, once with nothing set and once with
`ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2`, and prints PyTorch's dispatch level and the
oneDNN implementation that ran (its verbose log), so a number made "as an AVX2 machine" on an
AVX-512 or AMX CPU can be shown to have used AVX2 kernels. ONNX Runtime's int8 kernels take no
such limit (docs/cpus.md). Behaviour, not timing: it measures nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys

AVX2_LIMITS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
PROBE = """
import torch
print("pytorch", torch.backends.cpu.get_cpu_capability())
conv = torch.nn.Conv2d(64, 64, 3).eval()
with torch.no_grad(), torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
    conv(torch.randn(8, 64, 32, 32))
"""


def kernels(limits: dict[str, str]) -> dict[str, str]:
    """{'pytorch': dispatch level, 'onednn_isa': what oneDNN detected, 'convolution': implementation}."""
    env = {k: v for k, v in os.environ.items() if k not in AVX2_LIMITS} | limits
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True).stdout
    found = {"pytorch": "unknown", "onednn_isa": "unknown", "convolution": "not run by oneDNN"}
    for line in out.splitlines():
        fields = line.split(",")
        if line.startswith("pytorch "):
            found["pytorch"] = line.split()[1]
        elif line.startswith("onednn_verbose") and "info,cpu,isa:" in line:
            found["onednn_isa"] = line.split("isa:", 1)[1]
        elif fields[0] == "onednn_verbose" and fields[3:4] == ["exec"] and fields[5:6] == ["convolution"]:
            found["convolution"] = fields[6]
    return found


def main() -> dict[str, dict[str, str]]:
    from kd_pipeline.evaluate.machine import cpu_info, describe

    print(f"CPU: {describe(cpu_info())}")
    result = {"as the CPU allows": kernels({}), "held to AVX2": kernels(AVX2_LIMITS)}
    for setting, found in result.items():
        print(f"{setting:>18}: PyTorch {found['pytorch']}, oneDNN {found['onednn_isa']}, conv {found['convolution']}")
    return result


if __name__ == "__main__":
    main()
