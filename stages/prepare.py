"""Stage prepare: dataset → resized uint8 arrays with a stratified, seeded split, and its analysis."""

from pathlib import Path

from kd_pipeline.data import prepare
from kd_pipeline.errors import exit_on_pipeline_error
from kd_pipeline.params import load_params
from kd_pipeline.report import write_data_report


@exit_on_pipeline_error
def main() -> None:
    params = load_params()
    meta = prepare(params.data, "data/prepared")
    summary = write_data_report(meta, Path("data/prepared"), Path("plots/data"), Path("metrics/data.json"))
    sizes = {split: summary[f"{split}_images"] for split in meta.counts}
    kind = "labels (multi-label)" if meta.task == "multilabel" else "classes"
    print(
        f"prepared {params.data.name}: {meta.num_classes} {kind}, {sizes}, {meta.image_size}px,"
        f" imbalance ratio {summary['imbalance_ratio']:.1f}, {summary['skipped_files']} files skipped"
    )


if __name__ == "__main__":
    main()
