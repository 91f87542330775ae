"""Stage prepare's report: class counts per split, imbalance ratio, a class-distribution chart
and sample images (metrics/data.json, plots/data/). Apart from evaluate's report so that an edit
to one re-runs only its own stage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kd_pipeline.core.data import SPLITS, Meta, load_split
from kd_pipeline.core.files import atomic_dir, atomic_file, write_json


def write_data_report(meta: Meta, prepared_dir: Path, plots_dir: Path, metrics_path: Path) -> dict[str, Any]:
    """Class counts per split, imbalance ratio, a class-distribution chart and sample images."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    train_counts = [n for n in meta.counts["train"].values()]
    summary = {
        "task": meta.task,
        "num_classes": meta.num_classes,
        **{f"{split}_images": len(load_split(prepared_dir, split)) for split in SPLITS},
        "imbalance_ratio": max(train_counts) / max(min(train_counts), 1),
        "skipped_files": len(meta.source.get("skipped_files", [])),
    }
    write_json(metrics_path, summary)
    with atomic_dir(plots_dir / "counts") as tmp:
        for split in SPLITS:
            write_json(tmp / f"{split}.json", [{"class": c, "count": n} for c, n in meta.counts[split].items()])

    shown = meta.class_names[:30]
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(shown) + 1.5), constrained_layout=True)
    y = np.arange(len(shown))
    for offset, split in zip((-0.27, 0, 0.27), SPLITS, strict=True):
        ax.barh(y + offset, [meta.counts[split][c] for c in shown], height=0.27, label=split)
    ax.set_yticks(y, shown)
    ax.invert_yaxis()
    ax.set_xlabel("images with the label" if meta.task == "multilabel" else "images")
    ax.set_title(f"Class distribution (train imbalance ratio {summary['imbalance_ratio']:.1f})")
    ax.legend()
    with atomic_file(plots_dir / "class_distribution.png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)

    train = load_split(prepared_dir, "train")
    per_class = 8
    fig, axes = plt.subplots(len(shown), per_class, figsize=(per_class, len(shown) + 0.5), squeeze=False)
    for row, name in enumerate(shown):
        has_label = train.labels[:, row] == 1 if train.multilabel else train.labels == row
        picks = np.flatnonzero(has_label)[:per_class]
        for col in range(per_class):
            ax = axes[row][col]
            ax.axis("off")
            if col < len(picks):
                ax.imshow(train.images[picks[col]])
        axes[row][0].set_title(name, fontsize=8, loc="left")
    with atomic_file(plots_dir / "samples.png") as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
    return summary
