"""Errors a user can act on, and the one place that turns them into a one-line exit."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class PipelineError(Exception):
    """A problem with the user's input (params, data, checkpoints): shown as one line, exit 2."""


class ParamsError(PipelineError):
    """params.yaml names an unknown key or holds a value out of range."""


class DataError(PipelineError):
    """Input data is missing, corrupt or does not fit the params."""


class CheckpointError(PipelineError):
    """A checkpoint is missing or does not match the model it should load into."""


class CompressionError(PipelineError):
    """A model or setting the compressor cannot handle."""


def exit_on_pipeline_error(main: Callable[..., T]) -> Callable[..., T]:
    """Wrap a stage entry point so user errors print `error: ...` and exit 2, no traceback."""

    @functools.wraps(main)
    def wrapper(*args: object, **kwargs: object) -> T:
        try:
            return main(*args, **kwargs)
        except PipelineError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper
