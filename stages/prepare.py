"""Stage prepare: dataset → resized uint8 arrays with a stratified, seeded split, and its analysis."""


from kd_pipeline.core import paths
from kd_pipeline.core.errors import exit_on_pipeline_error
from kd_pipeline.core.params import load_params
from kd_pipeline.core.stage_times import timed
from kd_pipeline.prepare.data_report import write_data_report
from kd_pipeline.prepare.preparation import prepare
from kd_pipeline.prepare.tracking import untracked_note


@timed("stages.prepare")
@exit_on_pipeline_error
def main() -> None:
    params = load_params()
    note = untracked_note(params.data)
    if note:
        print(f"warning: {note}")
    meta = prepare(params.data, paths.PREPARED)
    summary = write_data_report(meta, paths.PREPARED, paths.DATA_PLOTS, paths.DATA_METRICS)
    sizes = {split: summary[f"{split}_images"] for split in meta.counts}
    kind = "labels (multi-label)" if meta.task == "multilabel" else "classes"
    print(
        f"prepared {params.data.name}: {meta.num_classes} {kind}, {sizes}, {meta.image_size}px,"
        f" imbalance ratio {summary['imbalance_ratio']:.1f}, {summary['skipped_files']} files skipped"
    )


if __name__ == "__main__":
    main()
