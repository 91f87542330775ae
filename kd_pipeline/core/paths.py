"""Every path the pipeline reads or writes, relative to the project root, in one place.

`dvc.yaml` names the same paths for DVC; tests point the library elsewhere through `Layout`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kd_pipeline.core.roles import QAT

RAW = Path("data/raw")  # datasets versioned with `dvc add` / `dvc import-url`, a dependency of prepare
PREPARED = Path("data/prepared")
MODELS = Path("models")
METRICS = Path("metrics")
PLOTS = Path("plots")
REPORTS = Path("reports")
RESUME = Path(".resume")  # training state between epochs, outside DVC's outputs
EXPORT = Path("export")
RESULTS = Path("results")  # committed records of finished runs

DATA_METRICS = METRICS / "data.json"
DATA_PLOTS = PLOTS / "data"
EVALUATION = METRICS / "evaluate.json"
EXPORT_METRICS = METRICS / "export.json"
SEEDS_METRICS = METRICS / "seeds.json"
SUMMARY = REPORTS / "summary.md"
SEEDS_REPORT = REPORTS / "seeds.md"
PARETO_PLOTS = PLOTS / "pareto"  # across experiments: python -m kd_pipeline.records.pareto
PARETO_REPORT = REPORTS / "pareto.md"
CONFUSION_PLOTS = PLOTS / "confusion"  # evaluate's confusion matrices, per variant
VISUALIZE_PLOTS = PLOTS / "visualize"  # maps, feature maps and gradient flow as image plots
VISUALIZE_METRICS = METRICS / "visualize.json"
EVALUATED_FILES = REPORTS / "evaluated_files.json"
QUANTIZATION_REPORT = REPORTS / "quantization.md"  # where int8 loses, and the layers kept in float
QUANTIZATION_PLOT = PLOTS / "quantization.png"  # the files evaluate measured, for export's proof


def checkpoint_dir(models: Path, name: str) -> Path:
    """A float checkpoint's folder: models/<name>, except the QAT student, which the quantize stage
    writes inside its own output, models/quantized/."""
    return models / "quantized" / name if name == QAT else models / name


@dataclass(frozen=True)
class Layout:
    """Where the stages read and write, relative to the project root (tests point it elsewhere)."""

    prepared: Path = PREPARED
    models: Path = MODELS
    metrics: Path = METRICS
    resume: Path = RESUME
    evaluation: Path = EVALUATION
    confusion: Path = CONFUSION_PLOTS
    visualize_plots: Path = VISUALIZE_PLOTS
    visualize_metrics: Path = VISUALIZE_METRICS

    def model_dir(self, role: str) -> Path:
        return checkpoint_dir(self.models, role)


DEFAULT_LAYOUT = Layout()
