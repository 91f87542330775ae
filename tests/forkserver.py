"""A warm interpreter for the processes the end-to-end tests' DVC runs start.

Every `python -m stages.NAME` that DVC runs imports torch, timm and scikit-learn before it does
any work: about 9 s of each stage on a 2-core AVX2 CPU and 99 s of each full `dvc repro`
(`results/stage_startup-avx2`), most of what the end-to-end tests cost; every `dvc` command
imports DVC. Here one server process imports them once; `python` and `dvc` shims first on the
tests' PATH hand each `dvc ...`, `python -m stages.*`, `python -m dvc` and `python -m
kd_pipeline.gate` command (its argv, working directory, environment and standard streams) to the
server, which forks a copy that runs the real command in the caller's repository and reports its
exit status. In the copy `sys.executable` is the `python` shim, so what it starts the same way
(the gate's and DVC's own `sys.executable -m dvc`, DVC's queue workers, `python -m
torch.distributed.run` and the `python -u -m stages.train` workers it starts) comes back warm too. The
stage code, DVC and the files are the real ones; only the interpreter start is shared (with
`settle`'s two savings: the ONNX exporter's table built once, the loaded modules frozen for gc). Cold
starts are measured by `benchmarks/stage_startup.py` and run by `make repro`.

Any other `python`, and any call whose import-time settings (kernel limits, thread counts)
differ from the server's, runs the real interpreter; but for OMP_NUM_THREADS, which torchrun sets
to 1 for each worker and a copy sets itself. A killed caller takes its command with it: the copy
runs in its own process group, killed as soon as the caller's connection closes (a torchrun
worker's shim also dies with its launcher, as the worker asks the kernel in training).
`KD_TESTS_COLD_STAGES=1` turns the server off.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

# read by torch, oneDNN or OpenMP when they load: a stage that sets any of them differently
# than the server did needs its own interpreter
IMPORT_TIME_ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "OMP_NUM_THREADS",
                   "MKL_NUM_THREADS", "KMP_AFFINITY", "OMP_PROC_BIND", "PYTHONHASHSEED", "PYTHONUNBUFFERED",
                   "PYTHONWARNINGS", "PYTHONOPTIMIZE", "MPLBACKEND")
PRELOAD = ("numpy", "torch", "torchvision", "timm", "sklearn.metrics", "scipy.stats", "onnx", "onnxruntime",
           "PIL.Image", "yaml", "pydantic", "safetensors.torch", "tqdm", "dvclive", "captum.attr",
           "torch_pruning", "matplotlib", "dvc.cli.parser", "dvc.repo")
WARM_MODULES = ("dvc", "kd_pipeline.gate", "torch.distributed.run")  # besides stages.*: `python -m` run warm
THREADS = "OMP_NUM_THREADS"  # the one import-time setting a copy can take itself (torchrun sets it to 1)
STREAMS = 3
_SETTINGS: dict[str, str | None] = {}  # the server's import-time settings, inherited by each copy
_BASE_PATH: list[str] = []  # the server's sys.path without its own folder and PYTHONPATH

SHIM = '''#!{python} -SE
"""`{program}` for the tests' DVC runs: `dvc`, and `python -m` of stages.* or {warm}, run in the warm server."""
import json, os, signal, socket, sys

PROGRAM, REAL, WARM = {program!r}, {real!r}, {warm!r}
args = sys.argv[1:]
if PROGRAM == "python" and args and args[0].endswith("/dvc/__main__.py"):
    args = ["-m", "dvc", *args[1:]]  # how DVC starts its own daemons and queue workers
unbuffered = PROGRAM == "python" and args[:2] == ["-u", "-m"]  # how torchrun starts its workers
if unbuffered:
    args = args[1:]
if PROGRAM == "python" and (len(args) < 2 or args[0] != "-m" or not (args[1].startswith("stages.") or args[1] in WARM)):
    os.execv(REAL, [REAL, *sys.argv[1:]])
if "TORCHELASTIC_RUN_ID" in os.environ and "LOCAL_RANK" in os.environ:
    import ctypes  # a torchrun worker dies with its launcher, as kd_pipeline.train.distributed asks
    launcher = os.getppid()
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != launcher:
        os._exit(1)
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    sock.connect({address!r})
except OSError:
    os.execv(REAL, [REAL, *sys.argv[1:]])
argv = args[1:] if PROGRAM == "python" else args
request = json.dumps({{"program": PROGRAM, "real": REAL, "argv": argv, "cwd": os.getcwd(), "env": dict(os.environ),
                      "python": os.path.join(os.path.dirname(os.path.abspath(__file__)), "python"),
                      "unbuffered": unbuffered}})
request = request.encode()
socket.send_fds(sock, [b"!"], [0, 1, 2])
sock.sendall(len(request).to_bytes(8, "big") + request)
reply = b""
while chunk := sock.recv(64):
    reply += chunk
if reply == b"cold":
    os.execv(REAL, [REAL, *sys.argv[1:]])
code = int(reply) if reply else 1
if code < 0:  # killed by a signal: die of the same one, as the stage did
    if -code not in (signal.SIGKILL, signal.SIGSTOP):
        signal.signal(-code, signal.SIG_DFL)
    os.kill(os.getpid(), -code)
sys.exit(code)
'''


def _receive(conn: socket.socket) -> tuple[dict, list[int]]:
    """One request: its length-prefixed JSON and the caller's three standard streams."""
    _, fds, _, _ = socket.recv_fds(conn, 1, STREAMS)
    size = int.from_bytes(_exactly(conn, 8), "big")
    return json.loads(_exactly(conn, size)), list(fds)


def _exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the caller went away mid-request")
        data += chunk
    return data


def _exit_code(error: SystemExit) -> int:
    """What the interpreter would exit with for `sys.exit(code)`."""
    if error.code is None:
        return 0
    if isinstance(error.code, int):
        return error.code
    print(error.code, file=sys.stderr)
    return 1


def _run_stage(request: dict, fds: list[int]) -> None:
    """In the forked copy: become the caller's `python -m MODULE ARGS` and never return."""
    os.setpgid(0, 0)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    if request.get("unbuffered"):  # `python -u`
        sys.stdout.reconfigure(write_through=True)
        sys.stderr.reconfigure(write_through=True)
    if os.environ.get(THREADS) != _SETTINGS.get(THREADS):
        _limit_threads(int(os.environ[THREADS]))
    code = 0
    try:
        _main(request)
    except SystemExit as error:
        code = _exit_code(error)
    except KeyboardInterrupt:
        code = 130
    except BaseException:  # noqa: BLE001 - printed as the interpreter would, then exit 1
        traceback.print_exc()
        code = 1
    try:
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def _limit_threads(count: int) -> None:
    """What OMP_NUM_THREADS=count at import would have set: torch's intra-op threads and every
    OpenMP and BLAS pool loaded (threadpoolctl, scikit-learn's own dependency)."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(count)
    threadpool_limits(count)


def _warm_enough(env: dict[str, str]) -> bool:
    """Whether a copy of the server can run a command with this environment: the same import-time
    settings, but for a thread count it can set itself."""
    differs = {key for key in IMPORT_TIME_ENV if env.get(key) != _SETTINGS[key]}
    return not differs or (differs == {THREADS} and env.get(THREADS, "").isdigit() and int(env[THREADS]) > 0)


def _main(request: dict) -> None:
    """`python -m MODULE ARGS` or `dvc ARGS`, with sys.path as that command would start with."""
    paths = [p for p in request["env"].get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.executable = request["python"]  # what it starts with `sys.executable -m dvc` comes back here
    if request["program"] == "dvc":
        sys.path[:] = [str(Path(request["real"]).parent), *paths, *_BASE_PATH]
        sys.argv = [request["real"], *request["argv"]]
        from dvc.cli import main

        raise SystemExit(main(request["argv"]))
    sys.path[:] = [request["cwd"], *paths, *_BASE_PATH]  # `python -m` puts its folder first
    module, *args = request["argv"]
    sys.argv = [module, *args]
    import runpy

    runpy.run_module(module, run_name="__main__", alter_sys=True)


def _supervise(conn: socket.socket, request: dict, fds: list[int]) -> None:
    """In a forked supervisor: start the stage, kill its process group if the caller goes away,
    else send the caller the stage's exit status."""
    pid = os.fork()
    if pid == 0:
        try:
            conn.close()
            _run_stage(request, fds)
        finally:
            os._exit(1)
    for fd in fds:
        os.close(fd)
    waiter = os.pidfd_open(pid)
    while True:
        ready, _, _ = select.select([conn, waiter], [], [])
        if waiter in ready:
            _, status = os.waitpid(pid, 0)
            conn.sendall(str(os.waitstatus_to_exitcode(status)).encode())
            break
        if not conn.recv(1):  # the caller closed or was killed
            for target in (-pid, pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(target, signal.SIGKILL)
            os.waitpid(pid, 0)
            break
    conn.close()


def settle() -> None:
    """Do once, in a process about to run many stages or tests, what each would otherwise redo.

    Every `torch.onnx.export` rebuilds the exporter's table of torchlib functions from onnxscript's
    sources (about 1 to 2 s; a pipeline exports three to six times): a pure function of the installed
    packages, like an import, and only read, so it is built here once. Then `gc.freeze()`, as the
    gc docs advise before forking: the modules loaded so far are never garbage, and each garbage
    collection (evaluate runs one per variant it measures, about 0.4 s each over the server's heap)
    skips them. Without the pinned onnxscript layout, exports build the table as before."""
    import functools
    import importlib

    with contextlib.suppress(ImportError, AttributeError):
        apis = importlib.import_module("onnxscript._framework_apis.torch_2_11")
        if not hasattr(apis.get_torchlib_ops, "cache_info"):
            apis.get_torchlib_ops = functools.cache(apis.get_torchlib_ops)
        apis.get_torchlib_ops()
    gc.collect()
    gc.freeze()


def serve(address: str, parent: int) -> None:
    """Import the heavy libraries, then fork a supervisor per request until `parent` exits."""
    own = {p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p}
    _BASE_PATH[:] = [p for p in sys.path[1:] if p not in own]  # without this folder and PYTHONPATH
    for name in PRELOAD:
        __import__(name)
    settle()
    _SETTINGS.update({k: os.environ.get(k) for k in IMPORT_TIME_ENV})
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # supervisors are reaped by the kernel
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(address + ".tmp")
    os.rename(address + ".tmp", address)  # callers see the address only once it accepts
    listener.listen(64)
    listener.settimeout(1.0)
    sys.stdout.flush()
    sys.stderr.flush()
    while os.getppid() == parent:
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        conn.settimeout(None)
        try:
            request, fds = _receive(conn)
        except (OSError, ValueError):
            conn.close()
            continue
        if not _warm_enough(request["env"]):
            conn.sendall(b"cold")
            conn.close()
            for fd in fds:
                os.close(fd)
            continue
        if os.fork() == 0:
            try:  # a supervisor never returns to this loop, whatever happens
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                listener.close()
                _supervise(conn, request, fds)
            finally:
                os._exit(0)
        conn.close()
        for fd in fds:
            os.close(fd)


_started: dict[str, Path] = {}


def shim_dir() -> Path | None:
    """A folder holding the `python` and `dvc` shims, their server started on first use (one per
    test process); None when `KD_TESTS_COLD_STAGES` asks for cold processes."""
    if os.environ.get("KD_TESTS_COLD_STAGES"):
        return None
    if "dir" not in _started:
        folder = Path(tempfile.mkdtemp(prefix="kd-warm-"))
        atexit.register(shutil.rmtree, folder, True)  # runs after the server is killed (last in, first out)
        address = str(folder / "server.sock")
        server = subprocess.Popen([sys.executable, "-m", "tests.forkserver", address, str(os.getpid())],
                                  cwd=Path(__file__).resolve().parents[1], stdin=subprocess.DEVNULL)
        atexit.register(server.kill)
        (folder / "bin").mkdir()
        for program in ("python", "dvc"):
            shim = folder / "bin" / program
            shim.write_text(SHIM.format(python=sys.executable, program=program, real=_real(program), address=address,
                                        warm=WARM_MODULES))
            shim.chmod(0o755)
        deadline = time.time() + 300
        while not Path(address).exists():
            if server.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"the tests' stage server did not start (exit {server.poll()})")
            time.sleep(0.1)
        _started["dir"] = folder / "bin"
    return _started["dir"]


def _real(program: str) -> str:
    """This environment's own `python` or `dvc`."""
    return sys.executable if program == "python" else str(Path(sys.executable).parent / program)


def warm(program: str) -> str:
    """The shim for `python` or `dvc` when the server is on, else the real program."""
    folder = shim_dir()
    return str(folder / program) if folder is not None else _real(program)


def stage_path(path: str) -> str:
    """PATH for a process that runs DVC stages: the shims first, then this interpreter's folder."""
    folders = [str(Path(sys.executable).parent), path]
    warm = shim_dir()
    if warm is not None:
        folders.insert(0, str(warm))
    return os.pathsep.join(folders)


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]))
