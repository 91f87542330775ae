"""The commands a person types (`[project.scripts]`): each names a real `main` that takes argv,
is installed by `make setup`, and answers --help."""

from __future__ import annotations

import importlib
import inspect
import shutil
import subprocess
import tomllib

import pytest

from tests.conftest import ROOT

SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def test_every_script_points_at_a_main_that_takes_argv() -> None:
    assert {"kd-predict", "kd-record", "kd-sweep"} <= set(SCRIPTS)
    for name, target in SCRIPTS.items():
        module, func = target.split(":")
        main = getattr(importlib.import_module(module), func)
        assert "argv" in inspect.signature(main).parameters, name


@pytest.mark.parametrize("name", ["kd-record", "kd-sweep", "kd-predict"])
def test_installed_scripts_answer_help(name: str) -> None:
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed here (make setup installs it)")
    done = subprocess.run([found, "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "usage" in done.stdout.lower(), done.stderr
