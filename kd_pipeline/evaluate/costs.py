"""What a model costs on this CPU: batch-1 latency, throughput, peak memory, bytes on disk.

Only evaluate (and the benchmarks) measure these, so they live apart from the metrics every
training stage uses: an edit here re-runs evaluate and what follows it, nothing before.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil


@dataclass(frozen=True)
class Timing:
    latency_ms: float  # batch 1, median
    throughput: float  # images per second at the throughput batch size, median


def _median_seconds(run: Callable[[], Any], warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def release_freed_memory() -> None:
    """Hand freed heap back to the OS, so the next PeakRSS block starts from a true baseline."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class PeakRSS:
    """Samples this process's RSS in a thread: peak memory of a block, as growth over its start.

    Also tracks anonymous memory (RSS minus file-backed pages): pages of a memory-mapped
    dataset count in RSS while cached but the kernel can drop them, so anonymous memory is
    what a job really needs.
    """

    def __init__(self, interval_s: float = 0.002):
        self.interval_s = interval_s
        self.process = psutil.Process()
        self.start = self.peak = self.start_anon = self.peak_anon = 0
        self._stop = threading.Event()

    def _read(self) -> tuple[int, int]:
        info = self.process.memory_info()
        return info.rss, info.rss - getattr(info, "shared", 0)

    def __enter__(self) -> PeakRSS:
        self.start, self.start_anon = self._read()
        self.peak, self.peak_anon = self.start, self.start_anon
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _update(self) -> None:
        rss, anon = self._read()
        self.peak, self.peak_anon = max(self.peak, rss), max(self.peak_anon, anon)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._update()
            self._stop.wait(self.interval_s)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._update()

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.start) / 2**20

    @property
    def anon_growth_mb(self) -> float:
        return (self.peak_anon - self.start_anon) / 2**20


def time_model(
    run_batch: Callable[[np.ndarray], Any],
    sample: np.ndarray,
    batch_size: int,
    warmup: int,
    repeats: int,
) -> Timing:
    """Batch-1 latency and batch-N throughput of `run_batch` (uint8 NHWC in), medians of repeats."""
    one = np.array(sample[:1])  # writable copies: memory-mapped splits are read-only
    many = np.resize(np.array(sample), (batch_size, *sample.shape[1:]))
    latency = _median_seconds(lambda: run_batch(one), warmup, repeats)
    batch_time = _median_seconds(lambda: run_batch(many), max(1, warmup // 5), max(3, repeats // 5))
    return Timing(latency_ms=latency * 1000.0, throughput=batch_size / batch_time)


def file_size_mb(path: str | Path) -> float:
    return Path(path).stat().st_size / 2**20
