"""Stage evaluate: every variant on validation (decides) and test (reports) → metrics, plots,
reports/summary.md."""

from kd_pipeline.core import paths
from kd_pipeline.core.data import load_meta, load_split
from kd_pipeline.core.errors import exit_on_pipeline_error
from kd_pipeline.core.params import load_params
from kd_pipeline.core.ranking import decision_metric
from kd_pipeline.core.stage_times import timed
from kd_pipeline.evaluate.comparison import compare, default_loaders
from kd_pipeline.evaluate.report import write_outputs
from kd_pipeline.train.teachers import compressed_from, teacher_warnings


@timed("stages.evaluate")
@exit_on_pipeline_error
def main() -> None:
    params = load_params()
    meta = load_meta(paths.PREPARED)
    train, val, test = (load_split(paths.PREPARED, split) for split in ("train", "val", "test"))
    metric = decision_metric(params.train.monitor, train.labels)
    loaders = default_loaders(paths.MODELS, meta, params.evaluate.num_threads, qat=params.quantize.method == "qat")
    result = compare(loaders, val, test, meta, params, metric)
    result["evaluation"]["teacher_warnings"] = teacher_warnings(paths.MODELS)
    result["evaluation"]["compressed_from"] = compressed_from(paths.MODELS)
    write_outputs(
        result, params, meta.class_names, test.labels.tolist(),
        paths.EVALUATION, paths.PLOTS, paths.SUMMARY, paths.EVALUATED_FILES,
    )
    evaluation = result["evaluation"]
    for line in evaluation["teacher_warnings"] or []:
        print(f"warning: {line}")
    print(f"deployed: {evaluation['deployed']} ({evaluation['deployed_reason']}); targets passed:"
          f" {evaluation['targets_passed']}")


if __name__ == "__main__":
    main()
