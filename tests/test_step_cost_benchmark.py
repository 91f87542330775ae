"""benchmarks/step_cost.py: every mode (fp32, bf16 autocast, channels_last) times a real step."""

from __future__ import annotations

import sys

import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
from step_cost import MODES, step_ms_per_image  # noqa: E402


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_times_a_training_step(mode: str) -> None:
    assert step_ms_per_image("cifar_plain2", 16, 8, 1, mode=mode) > 0
