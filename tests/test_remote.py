"""DVC remotes end to end: the default local remote, and S3 against moto's server on loopback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, S3_ENV


def _run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **S3_ENV, "DVC_NO_ANALYTICS": "1"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    _run(["git", "init", "-q"], repo)
    _run(["dvc", "init", "-q"], repo)
    (repo / "weights.bin").write_bytes(os.urandom(4096))
    _run(["dvc", "add", "-q", "weights.bin"], repo)
    return repo


def _empty_cache(repo: Path) -> None:
    shutil.rmtree(repo / ".dvc" / "cache")
    (repo / "weights.bin").unlink()


def test_project_default_remote_is_a_local_directory() -> None:
    config = (ROOT / ".dvc" / "config").read_text()
    assert "remote = local" in config and "url = ../../kd-pipeline-storage" in config
    assert "verify = true" in config


def test_local_remote_push_pull(repo: Path, tmp_path: Path) -> None:
    _run(["dvc", "remote", "add", "-d", "local", str(tmp_path / "storage")], repo)
    _run(["dvc", "push"], repo)
    original = (repo / "weights.bin").read_bytes()
    _empty_cache(repo)
    _run(["dvc", "pull"], repo)
    assert (repo / "weights.bin").read_bytes() == original


def test_s3_push_pull_status_and_tampering(repo: Path, s3_endpoint: str) -> None:
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint, **{
        "aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"})
    s3.create_bucket(Bucket="kd-cache")
    _run(["dvc", "remote", "add", "-d", "s3", "s3://kd-cache/store"], repo)
    _run(["dvc", "remote", "modify", "s3", "endpointurl", s3_endpoint], repo)
    _run(["dvc", "remote", "modify", "s3", "verify", "true"], repo)
    original = (repo / "weights.bin").read_bytes()
    _run(["dvc", "push"], repo)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="kd-cache")["Contents"]]
    assert keys, "nothing reached the S3 server"

    _empty_cache(repo)
    _run(["dvc", "pull"], repo)
    assert (repo / "weights.bin").read_bytes() == original
    assert "up to date" in _run(["dvc", "status"], repo).stdout

    for key in keys:
        s3.put_object(Bucket="kd-cache", Key=key, Body=b"tampered")
    _empty_cache(repo)
    proc = _run(["dvc", "pull"], repo, check=False)
    assert proc.returncode != 0
    assert not (repo / "weights.bin").exists() or (repo / "weights.bin").read_bytes() == original


def test_misconfigured_remote_fails_with_dvc_message_and_keeps_cache(repo: Path) -> None:
    cached = sorted(p.name for p in (repo / ".dvc" / "cache").rglob("*") if p.is_file())
    _run(["dvc", "remote", "add", "-d", "broken", "s3://kd-missing/store"], repo)
    _run(["dvc", "remote", "modify", "broken", "endpointurl", "http://127.0.0.1:9"], repo)
    _run(["dvc", "remote", "modify", "broken", "connect_timeout", "2"], repo)
    proc = _run(["dvc", "push"], repo, check=False)
    assert proc.returncode != 0 and "ERROR" in proc.stderr
    assert sorted(p.name for p in (repo / ".dvc" / "cache").rglob("*") if p.is_file()) == cached
