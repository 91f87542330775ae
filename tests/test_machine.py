from pathlib import Path

from kd_pipeline.evaluate.machine import cpu_info, describe


def test_instruction_sets_are_read_from_cpuinfo(tmp_path: Path) -> None:
    avx2 = tmp_path / "avx2"
    avx2.write_text("processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse avx2 fma\n\n"
                    "processor\t: 1\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse avx2 fma\n")
    info = cpu_info(avx2)
    assert info["model"] == "AMD EPYC 7B13" and info["isa"] == ["avx2", "fma"]
    assert info["int8_kernels"].startswith("AVX2 (no VNNI")
    vnni = tmp_path / "vnni"
    vnni.write_text("model name\t: Intel Xeon\nflags\t\t: avx2 avx512f avx512_vnni\n")
    assert cpu_info(vnni)["int8_kernels"] == "AVX-512 VNNI"
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd asimddp i8mm\nCPU part\t: 0xd40\n")
    assert cpu_info(arm)["isa"] == ["asimd", "asimddp", "i8mm"] and cpu_info(arm)["int8_kernels"] == "ARM i8mm"


def test_what_cannot_be_read_is_unknown_never_guessed(tmp_path: Path) -> None:
    info = cpu_info(tmp_path / "missing")
    assert info["isa"] == "unknown" and info["model"] == "unknown" and info["int8_kernels"] == "unknown"
    assert "unknown" in describe(info)
    blank = tmp_path / "blank"
    blank.write_text("processor\t: 0\n")
    assert cpu_info(blank)["isa"] == "unknown"


def test_kernels_held_to_avx2_really_change(monkeypatch) -> None:
    """On a CPU with more than AVX2, the two variables move PyTorch's dispatch and oneDNN's
    convolution to AVX2 kernels (what docs/cpus.md tells users to run as an AVX2 machine)."""
    import pytest

    from benchmarks.kernel_isa import AVX2_LIMITS, kernels

    if "avx2" not in (cpu_info()["isa"] or []):
        pytest.skip("this CPU has no AVX2")
    held = kernels(AVX2_LIMITS)
    assert held["pytorch"] == "AVX2" and "AVX2" in held["onednn_isa"]
    assert held["convolution"] in ("jit:avx2", "brg:avx2", "not run by oneDNN")
    for name, value in AVX2_LIMITS.items():
        monkeypatch.setenv(name, value)
    info = cpu_info()
    assert info["kernel_limits"]["onednn"] == "AVX2"
    if "avx512f" in info["isa"]:
        assert "kernels held to" in describe(info)


def test_the_kernel_class_evaluate_depends_on_changes_with_the_int8_path_and_held_levels_only(tmp_path: Path) -> None:
    """reports/cpu.json (the cpu stage): what makes evaluate re-run on another CPU."""
    from kd_pipeline.cpu.kernels import kernel_class

    def read(name: str, flags: str) -> dict[str, object]:
        (tmp_path / name).write_text(f"model name\t: {name}\nflags\t\t: {flags}\n")
        return cpu_info(tmp_path / name)

    milan, genoa = read("AMD EPYC 7B13", "avx2 fma"), read("AMD EPYC 9B14", "avx2 fma avx512f avx512_vnni")
    assert kernel_class(milan, {}) == kernel_class(read("Intel Core i7", "avx2 fma"), {})  # same class, other CPU
    assert kernel_class(milan, {})["int8_kernels"] != kernel_class(genoa, {})["int8_kernels"]
    # a PyTorch limit at the CPU's own best level holds nothing; below it, it does
    assert kernel_class(milan, {"ATEN_CPU_CAPABILITY": "avx2"}) == kernel_class(milan, {})
    held = kernel_class(genoa, {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"})
    assert held["pytorch_kernels"] == "AVX2" and held["onednn_kernels"] == "AVX2"
    assert kernel_class(genoa, {"ATEN_CPU_CAPABILITY": "avx512"})["pytorch_kernels"] == "default"


def test_the_cpu_stage_writes_its_file_or_says_how_to_call_it(tmp_path: Path) -> None:
    import json
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    def stage(*argv: str) -> subprocess.CompletedProcess[str]:  # in tmp_path: its timing file lands there
        return subprocess.run([sys.executable, "-m", "stages.cpu", *argv], cwd=tmp_path, capture_output=True,
                              text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})

    done = stage("reports/cpu.json")
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "reports/cpu.json").read_text())["int8_kernels"] == cpu_info()["int8_kernels"]
    bare = stage()
    assert bare.returncode != 0 and bare.stderr.strip() == "usage: python -m stages.cpu OUTPUT.json"
