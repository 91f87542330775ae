"""Shared fixtures: small data made on the fly, tiny timm models, never the network."""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from kd_pipeline.core.params import DataParams, Params, parse_params
from kd_pipeline.prepare.preparation import prepare

ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = "test_resnet"  # timm's own 0.4M-parameter test network
# Every `dvc` command would otherwise start a daemon that tries to send usage analytics (about 45
# per suite run; each a process on CI's two cores, and never the network in tests)
os.environ["DVC_NO_ANALYTICS"] = "1"
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def tiny_params(**overrides: dict) -> Params:
    """Default params with tiny models, small images and few epochs, plus group overrides."""
    raw: dict = {
        "data": {"image_size": 16},
        "teacher": {"model": TINY_MODEL},
        "assistant": {"model": TINY_MODEL},
        "student": {"model": TINY_MODEL},
        "train": {"epochs": 2, "batch_size": 64, "device": "cpu", "num_threads": 1},
    }
    for group, values in overrides.items():
        raw.setdefault(group, {}).update(values)
    return parse_params(raw)


@pytest.fixture(scope="session")
def prepared_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("prepared") / "prepared"
    prepare(DataParams(image_size=16), out)
    return out


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on loopback: an S3-compatible DVC remote without the network."""
    from moto.server import ThreadedMotoServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seeded() -> None:
    """Every test starts from the same random state: under pytest-xdist the tests a worker ran before
    one depend on scheduling, and an unseeded model's init with them (an int8 test failed that way)."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


# Long files first (their tests' seconds, summed, in one run of the whole suite alone on a 2-core
# AVX2-only EPYC, 2026-12-07, pytest 428.6 s, in brackets): pytest-xdist hands out whole files
# (--dist loadfile, --no-loadscope-reorder) in collection order, so a long file collected last would
# run alone at the end on CI's two workers. The torchrun file comes after chest and small students:
# handed out second, its two gloo processes ran beside the pipeline's first repro, three busy
# processes on two cores (81 s and 133 s, against 58 s and 77 s in this order, when its workers
# still started cold).
LONGEST_FIRST = (
    "test_pipeline_e2e.py",  # (212: the messy folder through every stage, resume, queue, bundle, browser)
    "test_chest_e2e.py",  # (62)
    "test_small_students_e2e.py",  # (54)
    "test_distributed_e2e.py",  # (25)
    "test_gate.py",  # (62)
    "test_remote.py",  # (35)
    "test_team_e2e.py",  # (26)
    "test_compression.py",  # (29)
    "test_folder_e2e.py",  # (12)
    "test_training.py",  # (45)
    "test_train_throughput.py",  # (16)
    "test_distributed.py",  # (18)
)


def pytest_collection_finish(session: pytest.Session) -> None:
    """The test modules are loaded: settle this process as the stage server settles its own."""
    from tests.forkserver import settle

    settle()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: k for k, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
