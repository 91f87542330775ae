"""The end-to-end tests' warm interpreter behaves as `python -m stages.NAME` and `dvc` would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.forkserver import shim_dir

REPORT = '''import os, sys
print("argv", sys.argv[1:], "main", __name__, "file", os.path.basename(sys.argv[0]))
print("cwd", os.getcwd(), "path0", sys.path[0], "var", os.environ.get("KD_PROBE"))
print("helper", __import__("helper").WHERE)
print("warm", "torch" in sys.modules, file=sys.stderr)
sys.exit(int(sys.argv[1]))
'''
NESTED = '''import os, subprocess, sys
import dvc
report = subprocess.run([sys.executable, "-m", "stages.report", "0"], capture_output=True, text=True)
print("nested", report.stderr.strip())
main = os.path.join(os.path.dirname(dvc.__file__), "__main__.py")
for command in ([sys.executable, "-m", "dvc", "version"], [sys.executable, main, "version"]):
    print(subprocess.run(command, capture_output=True, text=True).stdout.splitlines()[0])
'''
THREADS = '''import sys, torch
print("threads", torch.get_num_threads(), "unbuffered", sys.stdout.write_through)
print("warm", "timm" in sys.modules, file=sys.stderr)
'''
LAUNCHER = '''import os, subprocess, sys, time
subprocess.Popen([sys.argv[1], "-u", "-m", "stages.wait"], start_new_session=True,
                 env={**os.environ, "TORCHELASTIC_RUN_ID": "x", "LOCAL_RANK": "0"})
time.sleep(120)
'''
WAIT = '''import os, sys, time
open("pid", "w").write(str(os.getpid()))
time.sleep(120)
'''


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "__init__.py").write_text("")
    (tmp_path / "stages" / "report.py").write_text(REPORT)
    (tmp_path / "stages" / "wait.py").write_text(WAIT)
    (tmp_path / "stages" / "nested.py").write_text(NESTED)
    (tmp_path / "stages" / "threads.py").write_text(THREADS)
    (tmp_path / "stages" / "broken.py").write_text("raise ValueError('bad input in broken.py')\n")
    (tmp_path / "stages" / "killed.py").write_text("import os, signal\nos.kill(os.getpid(), signal.SIGTERM)\n")
    (tmp_path / "helper.py").write_text(f"WHERE = {str(tmp_path)!r}\n")
    return tmp_path


def _python(folder: Path, args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "KD_PROBE": "set", "DVC_NO_ANALYTICS": "1", **env}
    return subprocess.run([str(folder / "python"), *args], cwd=cwd, env=full, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.skipif(os.environ.get("KD_TESTS_COLD_STAGES") is not None, reason="the warm interpreter is off")
def test_a_warm_stage_matches_a_cold_one_in_output_exit_status_and_paths(repo: Path) -> None:
    warm_dir, cold_dir = shim_dir(), Path(sys.executable).parent
    for code in ("0", "3"):
        warm = _python(warm_dir, ["-m", "stages.report", code, "x y"], repo)
        cold = _python(cold_dir, ["-m", "stages.report", code, "x y"], repo)
        assert warm.returncode == cold.returncode == int(code)
        assert warm.stdout == cold.stdout and str(repo) in warm.stdout and "var set" in warm.stdout
        assert warm.stderr == "warm True\n" and cold.stderr == "warm False\n"  # torch came preloaded
    broken = _python(warm_dir, ["-m", "stages.broken"], repo)
    assert broken.returncode == 1 and broken.stderr.strip().endswith("ValueError: bad input in broken.py")
    assert _python(warm_dir, ["-m", "stages.killed"], repo).returncode == -signal.SIGTERM  # as the stage died
    # kernel limits are read when torch loads: a call that sets them gets a cold interpreter
    held = _python(warm_dir, ["-m", "stages.report", "0"], repo, ATEN_CPU_CAPABILITY="avx2")
    assert held.returncode == 0 and held.stderr == "warm False\n"
    other = _python(warm_dir, ["-c", "import sys; print(sys.argv[1:])", "a"], repo)  # not a stage
    assert other.stdout == "['a']\n"


@pytest.mark.skipif(os.environ.get("KD_TESTS_COLD_STAGES") is not None, reason="the warm interpreter is off")
def test_a_warm_dvc_matches_a_cold_one(repo: Path) -> None:
    warm_dir, cold_dir = shim_dir(), Path(sys.executable).parent
    for args in (["version"], ["status"], ["init", "--no-scm", "-q"], ["status"]):  # outside a project, then in one
        warm = subprocess.run([str(warm_dir / "dvc"), *args], cwd=repo, capture_output=True, text=True, timeout=120,
                              env={**os.environ, "DVC_NO_ANALYTICS": "1"})
        if args[0] == "init":
            assert warm.returncode == 0 and (repo / ".dvc").is_dir(), warm.stderr
            continue
        cold = subprocess.run([str(cold_dir / "dvc"), *args], cwd=repo, capture_output=True, text=True, timeout=120,
                              env={**os.environ, "DVC_NO_ANALYTICS": "1"})
        assert (warm.returncode, warm.stdout, warm.stderr) == (cold.returncode, cold.stdout, cold.stderr)


@pytest.mark.skipif(os.environ.get("KD_TESTS_COLD_STAGES") is not None, reason="the warm interpreter is off")
def test_what_a_warm_process_starts_with_sys_executable_runs_warm(repo: Path) -> None:
    """The gate and DVC start `sys.executable -m dvc` and DVC's queue workers
    `sys.executable .../dvc/__main__.py`: from a warm copy these come back to the server."""
    warm_dir, cold_dir = shim_dir(), Path(sys.executable).parent
    warm = _python(warm_dir, ["-m", "stages.nested"], repo)
    cold = _python(cold_dir, ["-m", "stages.nested"], repo)
    assert warm.returncode == cold.returncode == 0, warm.stderr + cold.stderr
    assert "nested warm True" in warm.stdout and "nested warm False" in cold.stdout
    version = [line for line in cold.stdout.splitlines() if line.startswith("DVC version")]
    assert len(version) == 2 and warm.stdout.splitlines()[1:] == version  # as `python -m dvc` prints it
    for args in (["-m", "dvc", "version"], ["-m", "kd_pipeline.gate", "--help"]):
        shimmed, real = _python(warm_dir, args, repo), _python(cold_dir, args, repo)
        assert (shimmed.returncode, shimmed.stdout) == (real.returncode, real.stdout) and real.returncode == 0


@pytest.mark.skipif(os.environ.get("KD_TESTS_COLD_STAGES") is not None, reason="the warm interpreter is off")
def test_killing_the_caller_kills_its_stage(repo: Path) -> None:
    proc = subprocess.Popen([str(shim_dir() / "python"), "-m", "stages.wait"], cwd=repo, start_new_session=True)
    deadline = time.time() + 60
    while not (repo / "pid").is_file() or not (repo / "pid").read_text():
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.05)
    stage = int((repo / "pid").read_text())
    assert stage != proc.pid  # the stage ran in the server's copy, not in the caller
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 10
    while _alive(stage):
        assert time.time() < deadline, "the stage outlived its killed caller"
        time.sleep(0.05)


@pytest.mark.skipif(os.environ.get("KD_TESTS_COLD_STAGES") is not None, reason="the warm interpreter is off")
def test_a_torchrun_worker_runs_warm_with_its_thread_count_and_dies_with_its_launcher(repo: Path) -> None:
    """torchrun starts each worker as `python -u -m MODULE` with OMP_NUM_THREADS=1 in a session of
    its own: the copy takes that thread count and unbuffered output as a cold worker would, and
    when the launcher is killed the worker goes too, as the training code asks of the kernel."""
    warm_dir, cold_dir = shim_dir(), Path(sys.executable).parent
    args = ["-u", "-m", "stages.threads"]
    warm = _python(warm_dir, args, repo, OMP_NUM_THREADS="1")
    cold = _python(cold_dir, args, repo, OMP_NUM_THREADS="1")
    assert warm.stdout == cold.stdout == "threads 1 unbuffered True\n", warm.stdout + cold.stdout
    assert warm.stderr == "warm True\n" and cold.stderr == "warm False\n"
    assert _python(warm_dir, args, repo, OMP_NUM_THREADS="all").stderr.endswith("warm False\n")  # not a count

    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(warm_dir / "python")], cwd=repo)
    deadline = time.time() + 60
    while not (repo / "pid").is_file() or not (repo / "pid").read_text():
        assert time.time() < deadline and launcher.poll() is None
        time.sleep(0.05)
    worker = int((repo / "pid").read_text())
    launcher.kill()  # its worker's shim is in a session of its own: only the kernel's death signal reaches it
    launcher.wait()
    deadline = time.time() + 10
    while _alive(worker):
        assert time.time() < deadline, "the worker outlived its killed launcher"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    """True while `pid` runs (a zombie waiting for its parent counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_a_settled_process_exports_with_the_table_onnxscript_builds() -> None:
    """`settle` (the server's and this test process's) caches the ONNX exporter's torchlib table:
    the cached list holds the very functions a fresh build returns, in order, and loaded modules
    are frozen out of garbage collection."""
    import gc
    import importlib

    from tests.forkserver import settle

    settle()
    apis = importlib.import_module("onnxscript._framework_apis.torch_2_11")
    assert hasattr(apis.get_torchlib_ops, "cache_info"), "settle() no longer caches the exporter's table"

    def table(metas: list) -> list[tuple]:
        return [(m.qualified_name, m.domain, m.name, m.is_complex, id(m.function)) for m in metas]

    assert table(apis.get_torchlib_ops()) == table(apis.get_torchlib_ops.__wrapped__())
    assert gc.get_freeze_count() > 0
