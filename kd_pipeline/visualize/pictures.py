"""The visualize stage's drawings: maps over their images, feature maps, gradient flow.

Each function writes one PNG atomically; the data comes from kd_pipeline.visualize.visualization.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kd_pipeline.core.files import atomic_file


@dataclass(frozen=True)
class Panel:
    """One model's map of one image, and what the model answered."""

    model: str
    heat: np.ndarray  # H × W in [0, 1]
    predicted: str
    correct: bool


@dataclass(frozen=True)
class Row:
    """One test image and every shown model's panel."""

    index: int  # in the test split
    image: np.ndarray  # uint8 H × W × 3
    truth: str
    panels: list[Panel]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:  # noqa: ANN001 (a matplotlib figure)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    _pyplot().close(fig)


def _draw_row(axes, row: Row) -> None:  # noqa: ANN001 (matplotlib axes)
    axes[0].imshow(row.image)
    axes[0].set_title(f"test #{row.index}\ntrue: {row.truth}", fontsize=8)
    for ax, panel in zip(axes[1:], row.panels, strict=True):
        ax.imshow(row.image)
        ax.imshow(panel.heat, cmap="jet", alpha=0.45, vmin=0, vmax=1)
        ax.set_title(f"{panel.model}\npred: {panel.predicted}", fontsize=8, color="green" if panel.correct else "red")
    for ax in axes:
        ax.axis("off")


def image_png(row: Row, method: str, path: Path) -> None:
    """One test image: the input, then each model's map over it (green title: right, red: wrong)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(row.panels) + 1, figsize=(2.0 * (len(row.panels) + 1), 2.5), squeeze=False)
    _draw_row(axes[0], row)
    fig.suptitle(method, fontsize=9)
    fig.tight_layout()
    _save(fig, path)


def overview_png(rows: list[Row], method: str, path: Path) -> None:
    """Every selected image as a row, the models as columns."""
    plt = _pyplot()
    columns = len(rows[0].panels) + 1
    fig, axes = plt.subplots(len(rows), columns, figsize=(1.9 * columns, 2.1 * len(rows) + 0.4), squeeze=False)
    for ax_row, row in zip(axes, rows, strict=True):
        _draw_row(ax_row, row)
    fig.suptitle(f"{method}: where each model looks (green: right, red: wrong)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / (2.1 * len(rows) + 0.4)))
    _save(fig, path)


def feature_maps_png(image: np.ndarray, features: dict[str, list[tuple[str, np.ndarray]]], path: Path) -> None:
    """For each model, one row per feature stage: its first channels, each on its own colour scale."""
    plt = _pyplot()
    rows = [(model, stage, maps) for model, stages in features.items() for stage, maps in stages]
    columns = max(len(maps) for _, _, maps in rows) + 1
    fig, axes = plt.subplots(len(rows), columns, figsize=(1.5 * columns, 1.5 * len(rows)), squeeze=False)
    for ax_row, (model, stage, maps) in zip(axes, rows, strict=True):
        ax_row[0].imshow(image)
        ax_row[0].set_title(f"{model}\n{stage}", fontsize=7)
        for channel, ax in enumerate(ax_row[1:]):
            if channel < len(maps):
                ax.imshow(maps[channel], cmap="viridis")
                ax.set_title(f"ch {channel} · {maps[channel].shape[0]}×{maps[channel].shape[1]}", fontsize=7)
        for ax in ax_row:
            ax.axis("off")
    fig.tight_layout()
    _save(fig, path)


def gradient_flow_png(flows: dict[str, dict[str, list[float]]], path: Path) -> None:
    """Per role, log10 of each layer group's mean gradient norm per epoch: a vanishing (dark) or
    exploding (bright) group stands out against its neighbours."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(flows), figsize=(3.2 * len(flows), 3.4), squeeze=False)
    for ax, (role, groups) in zip(axes[0], flows.items(), strict=True):
        values = np.log10(np.maximum(np.array(list(groups.values()), dtype=float), 1e-12))
        image = ax.imshow(values, aspect="auto", cmap="magma", interpolation="nearest")
        ax.set_yticks(range(len(groups)), list(groups), fontsize=7)
        ax.set_xticks(range(values.shape[1]), [str(e + 1) for e in range(values.shape[1])], fontsize=6)
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_title(role, fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.05, label="log10 grad norm")
    fig.tight_layout()
    _save(fig, path)
